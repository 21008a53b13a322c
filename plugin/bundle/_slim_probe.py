# The slim step's probe: runs INSIDE the plugin's image, under the image's own
# Python (`python3 [entrypoint options] -c <this file> '<json>'`), never on the
# build host and never imported by the kit at run time (the unit tests load
# its functions). It serves the plugin as its entrypoint would, drives every
# call plus the error paths through the socket from a forked client, stops it
# with SIGTERM, then imports every module the plugin may import, and prints
# one report line:
#
#   mode "trace" (the built image): the modules loaded by the plugin, the
#     modules importable in the image (the standard library and the plugin's
#     declared distributions), and the slim rootfs, written as a tar at
#     ARGS["tar"] for the builder to fetch (see _write_tar for what is in it);
#   mode "check" (the slim rootfs): the modules loaded and the answers, and
#     which of the trace's importable modules import here, for the builder to
#     compare with the trace.
#
# Only modules the plugin itself loads are imported before the snapshot of
# what it loaded (sys, os, json, signal, __future__; the client runs in a
# child process), so the snapshot is the plugin's own. Keep it runnable on
# Python 3.8+.
from __future__ import annotations

import json
import os
import signal
import sys

TYPE_CHECKING = False  # typing is not imported at run time (see above)
if TYPE_CHECKING:
    import http.client
    import socket
    from collections.abc import Iterable
    from typing import Any

MARK = "@@dpk-slim-report@@"
ARGS: dict[str, Any] = {}  # from the command line, by main()
opened: set[str] = set()
#: The modules loaded when the plugin first binds a socket (before it listens).
at_bind: list[str] = []

#: Top-level names of the standard library that cannot matter to a plugin,
#: left out of the slim rootfs (also when the image has them). A plugin is a
#: process with no terminal and no display: the daemon gives it no stdin, and
#: its stdout and stderr are pipes to the daemon's log.
#:   test, and every subpackage named test or tests (unittest.test, ...), and
#:     the extension modules below: CPython's own test suites;
#:   idlelib, turtledemo: the IDLE editor and the turtle demos, programs for a
#:     person at a screen;
#:   curses (_curses, _curses_panel), readline: terminal user interfaces and
#:     line editing, for a terminal the plugin does not have (the standard
#:     library imports readline only when interactive: site, pdb, cmd);
#:     with their libraries (ncurses, tinfo, readline) about 1 MB;
#:   nis: the client of NIS/YP, a directory service out of use for decades
#:     (deprecated in 3.11, removed in 3.13); it alone links Kerberos and Sun
#:     RPC, 1.8 MB. Users and groups still resolve through pwd and grp;
#:   ensurepip: installs pip into an environment (with 3 MB of bundled
#:     wheels); a running plugin installs nothing;
#:   lib2to3: translates Python 2 source into Python 3 (deprecated since
#:     3.9, removed in 3.13; a separate package in Debian); a plugin runs
#:     Python 3 code. It reads its grammar by path, so it could not go into
#:     the zip: 0.4 MB.
#: A top-level module that the image itself cannot import (tkinter and turtle
#: without the Tk bindings) is left out too: it cannot matter either. To keep
#: any of these anyway, name its files in [build] keep.
EXCLUDED = (
    "test",
    "idlelib",
    "turtledemo",
    "curses",
    "_curses",
    "_curses_panel",
    "readline",
    "nis",
    "ensurepip",
    "lib2to3",
)
#: Extension modules that exist only for CPython's test suites.
EXCLUDED_EXTENSIONS = ("_test", "_ctypes_test", "_xxtestfuzz", "xxlimited", "xxsubtype")
#: Files in a package that no code reads by path: documentation, type
#: stubs, distutils' template for people writing a command, and the style
#: sheet of pydoc's web server (pydoc -p), which a plugin never runs. Any
#: other file beside a package's modules keeps the package out of the zip.
NOT_DATA = (
    "README",
    "LICENSE",
    ".rst",
    ".md",
    "py.typed",
    ".pyi",
    "command_template",
    "_pydoc.css",
)
#: Subpackages that are test suites (unittest.test, ctypes.test, ...).
TEST_DIRS = ("test", "tests", "idle_test")
#: Checked with find_spec, never imported: importing them runs a program.
SPEC_ONLY = ("antigravity",)


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event in ("open", "ctypes.dlopen") and isinstance(args[0], (str, bytes)):
        opened.add(os.fsdecode(args[0]))
    elif event == "socket.bind" and not at_bind:
        at_bind.extend(
            name for name, m in list(sys.modules.items()) if m is not None and not _not_run(m)
        )


def _not_run(module: Any) -> bool:
    """A Python module made but not run yet: loaded on first use, like the
    kit's deferred modules or importlib's LazyLoader's (running a module's
    code gives its namespace ``__builtins__``)."""
    origin = getattr(getattr(module, "__spec__", None), "origin", None) or ""
    namespace = getattr(module, "__dict__", {})
    return origin.endswith((".py", ".pyc")) and "__builtins__" not in namespace


# --- the client (a forked child: its imports stay out of the snapshot) -------------


def _client(path: str, out_fd: int, parent: int) -> None:
    """Every call of ARGS["calls"] on one keep-alive connection (http.client,
    the daemon's headers), then the malformed requests on raw sockets; the
    answers go to ``out_fd`` as JSON, and the plugin gets SIGTERM."""
    import http.client
    import socket
    import time

    def connect() -> socket.socket:
        deadline = time.monotonic() + 30
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(20)
            try:
                s.connect(path)
                return s
            except OSError:
                s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = connect()

    def read(response: http.client.HTTPResponse) -> list[Any]:
        return [response.status, response.read().decode("utf-8", "replace")]

    def request(conn: UnixConnection, method: str, target: str, body: bytes) -> list[Any]:
        # The daemon's request: these headers and no others (Go's client).
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", "plugin.moby.localhost")
        conn.putheader("User-Agent", "Go-http-client/1.1")
        conn.putheader("Accept", "application/vnd.docker.plugins.v1.2+json")
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        return read(conn.getresponse())

    def raw(data: bytes, half_close: bool = False) -> list[Any]:
        """A request http.client would not send, written as bytes; the answer
        parsed by http.client (it skips a 100 Continue)."""
        s = connect()
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
            response = http.client.HTTPResponse(s)
            response.begin()
            return read(response)
        except (OSError, http.client.HTTPException) as exc:
            return ["error", type(exc).__name__]
        finally:
            s.close()

    answers: list[list[Any]] = []
    try:
        conn = UnixConnection("plugin.moby.localhost", timeout=20)
        for method, target, body in ARGS["calls"]:
            answers.append([method, target, request(conn, method, target, body.encode("utf-8"))])
        first: str = ARGS["target"]
        # A chunked body is valid HTTP: http.client sends it.
        conn.request("POST", first, body=iter([b"{", b"}"]), encode_chunked=True)
        answers.append(["chunked", first, read(conn.getresponse())])
        conn.close()
        # The malformed and unusual requests, each on its own connection.
        post = b"POST " + first.encode() + b" HTTP/1.1\r\nHost: x\r\n"
        expect = b"Expect: 100-continue\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
        answers.append(["expect", first, raw(post + expect)])
        answers.append(
            ["huge", first, raw(post + b"Content-Length: 99999999\r\nConnection: close\r\n\r\n{}")]
        )
        answers.append(["garbage", "", raw(b"\x16\x03\x01 not http at all\r\n\r\n")])
        answers.append(["cut", first, raw(post + b"Content-Length: 10\r\n\r\n{", half_close=True)])
    except Exception as exc:  # reported, and the build fails on it
        answers.append(["client-error", "", ["error", f"{type(exc).__name__}: {exc}"]])
    finally:
        os.write(out_fd, json.dumps(answers).encode())
        os.close(out_fd)
        os.kill(parent, signal.SIGTERM)  # the shutdown path, as the daemon stops a plugin


# --- the plugin ---------------------------------------------------------------------


def _serve() -> None:
    import runpy

    sys.argv = [ARGS["run"], *ARGS["args"]]
    try:
        if ARGS["module"]:
            runpy.run_module(ARGS["run"], run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(ARGS["run"], run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (None, 0):
            raise


def _log_a_traceback() -> None:
    # What the SDK does for an exception a driver did not expect: the
    # traceback formatting machinery (traceback, linecache, tokenize) loads
    # lazily, so exercise it the same way.
    import logging

    try:
        raise RuntimeError("slim probe: an unexpected exception")
    except RuntimeError:
        logging.getLogger("plugin").exception("slim probe: logging a traceback")


def main() -> None:
    ARGS.update(json.loads(sys.argv[1]))
    sys.addaudithook(_audit)
    for d in ARGS["dirs"]:
        os.makedirs(d, exist_ok=True)
    if os.path.lexists(ARGS["socket"]):
        os.unlink(ARGS["socket"])
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_fd)
        try:
            _client(ARGS["socket"], write_fd, os.getppid())
        finally:
            os._exit(0)
    os.close(write_fd)
    _serve()
    _log_a_traceback()
    os.waitpid(child, 0)
    chunks = []
    while True:
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    answers = json.loads(b"".join(chunks) or b"[]")
    # The snapshot: before the probe imports anything for itself.
    modules = sorted(name for name, m in list(sys.modules.items()) if m is not None)
    loaded: dict[str, list[Any]] = {}
    for name in modules:
        m = sys.modules[name]
        spec = getattr(m, "__spec__", None)
        origin = getattr(spec, "origin", None) or getattr(m, "__file__", None)
        cached = getattr(spec, "cached", None)
        path = list(getattr(m, "__path__", None) or [])
        loaded[name] = [origin, cached, path]
    used = sorted(opened)
    # What the plugin imported before it listens: read at every start.
    at_start = sorted({loaded[n][0] for n in at_bind if n in loaded and loaded[n][0]})
    maps = _maps()
    origins = {}
    for name in ARGS["own"]:
        info = loaded.get(name)
        if info and info[0] and info[0].startswith("/"):
            origins[name] = os.path.dirname(info[0]) if info[2] else info[0]
    report: dict[str, Any] = {"modules": modules, "answers": answers, "origins": origins}
    import time

    seconds: dict[str, float] = {}
    start = time.monotonic()
    if ARGS["mode"] == "trace":
        installed, _ = _distributions()
        sources = [_stdlib()] + [f for files in installed.values() for f in files]
        everything = _importable(_candidates(), sources)
        seconds["import every module"] = time.monotonic() - start
        report["importable"] = everything["importable"]
        report["not_importable"] = everything["failed"]
        report["shadowed"] = everything["shadowed"]
        needs = _needs(loaded, maps, used, everything)
        seconds["select"] = time.monotonic() - start - sum(seconds.values())
        report.update(needs)
        report["own_loaded"] = sorted(
            info[0]
            for info in loaded.values()
            if isinstance(info[0], str) and info[0].endswith(".py")
        )
        report["tar"] = _write_tar(report, origins, needs, at_start)
        seconds["write the rootfs"] = time.monotonic() - start - sum(seconds.values())
    else:
        everything = _importable(ARGS["importable"])
        seconds["import every module"] = time.monotonic() - start
        report["importable"] = everything["importable"]
        report["not_importable"] = everything["failed"]
    report["seconds"] = seconds
    sys.stdout.flush()
    sys.stdout.write("\n" + MARK + json.dumps(report) + "\n")
    sys.stdout.flush()


def _maps() -> list[str]:
    """The files mapped into this process (shared libraries, extensions)."""
    with open("/proc/self/maps") as f:
        return sorted({line.split(None, 5)[5].strip() for line in f if len(line.split()) > 5})


# --- every module the plugin may import ----------------------------------------------


def _stdlib() -> str:
    return os.path.dirname(os.__file__)


def _excluded_extension(name: str) -> bool:
    """An extension module's file name (or module name) that is left out."""
    module = name.split(".")[0]
    return module in EXCLUDED or module.startswith(EXCLUDED_EXTENSIONS)


def _walk(path: str, prefix: str, out: list[str]) -> None:
    import pkgutil

    for m in pkgutil.iter_modules([path], prefix):
        leaf = m.name.rsplit(".", 1)[-1]
        if leaf in TEST_DIRS or (not prefix and leaf in EXCLUDED):
            continue
        if not prefix and _excluded_extension(leaf):
            continue
        out.append(m.name)
        if m.ispkg:
            _walk(os.path.join(path, leaf), m.name + ".", out)


def _distributions() -> tuple[dict[str, list[str]], list[str]]:
    """The files of each declared distribution (absolute paths in the
    image), and the declared names not installed in it."""
    import importlib.metadata

    files: dict[str, list[str]] = {}
    missing = []
    for name in ARGS["distributions"]:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
            continue
        paths = []
        for f in dist.files or []:
            located = os.path.normpath(str(dist.locate_file(f)))
            if os.path.lexists(located):
                paths.append(located)
        files[name] = sorted(paths)
    return files, missing


def _path_entry(path: str) -> str:
    """The sys.path entry ``path`` is in (the longest one: site-packages may
    be below the standard library's directory), or ""."""
    found = ""
    for entry in sys.path:
        entry = entry.rstrip("/")
        if entry.startswith("/") and path.startswith(entry + "/") and len(entry) > len(found):
            found = entry
    return found


def _candidates() -> list[str]:
    """Every module of the standard library (its directory and lib-dynload)
    and of the declared distributions, but for the exclusions above."""
    names: list[str] = []
    stdlib = _stdlib()
    _walk(stdlib, "", names)
    dynload = os.path.join(stdlib, "lib-dynload")
    if os.path.isdir(dynload):
        _walk(dynload, "", names)
    files, _ = _distributions()
    roots = set()
    for paths in files.values():
        for p in paths:
            entry = _path_entry(p)
            if not entry or entry == stdlib:
                continue
            top = p[len(entry) + 1 :].split("/")[0]
            if top.endswith(".py"):
                names.append(top[:-3])
            elif "." not in top and os.path.isdir(os.path.join(entry, top)):
                roots.add((entry, top))
            elif top.endswith(".so"):
                names.append(top.split(".")[0])
    for entry, top in sorted(roots):
        if os.path.exists(os.path.join(entry, top, "__init__.py")):
            names.append(top)
        _walk(os.path.join(entry, top), top + ".", names)  # a namespace package too
    return sorted(set(names))


def _importable(names: Iterable[str], sources: Iterable[str] = ()) -> dict[str, Any]:
    """Import each of ``names`` (find_spec only for SPEC_ONLY and __main__
    modules), output silenced: which import, and why the others do not.

    With ``sources`` (directories and files), a module whose code comes from
    elsewhere is ``shadowed``, not importable: Debian's setuptools, for one,
    serves ``distutils`` from its own copy through a .pth file, which the
    slim rootfs (without setuptools, which the plugin does not declare) does
    not have."""
    import contextlib
    import importlib
    import importlib.util
    import io

    ok: list[str] = []
    failed: dict[str, str] = {}
    shadowed: dict[str, str] = {}
    prefixes = tuple(x.rstrip("/") + "/" for x in sources)
    exact = set(sources)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            for name in names:
                try:
                    if name in SPEC_ONLY or name.endswith(".__main__"):
                        if importlib.util.find_spec(name) is None:
                            raise ModuleNotFoundError(f"No module named {name!r}")
                    else:
                        importlib.import_module(name)
                except BaseException as exc:  # SystemExit, KeyboardInterrupt of a module too
                    failed[name] = f"{type(exc).__name__}: {exc}"[:300]
                    continue
                module = sys.modules.get(name)
                origin = getattr(getattr(module, "__spec__", None), "origin", None)
                if (
                    prefixes
                    and isinstance(origin, str)
                    and origin.startswith("/")
                    and not (origin.startswith(prefixes) or origin in exact)
                ):
                    shadowed[name] = origin
                else:
                    ok.append(name)
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)
    return {"importable": ok, "failed": failed, "shadowed": shadowed}


# --- what the slim rootfs holds (trace mode, after the snapshot) ---------------------


def _needs(
    loaded: dict[str, list[Any]], maps: list[str], used: list[str], everything: dict[str, Any]
) -> dict[str, Any]:
    """The files of the slim rootfs: what the plugin used, and every module it
    may import with the shared libraries they link.

    ``files``: absolute paths (files and symlinks) kept as they are, but for
    modules: ``pyc`` maps a module's source to its bytecode, written in the
    source's place as sourceless ``.pyc``; ``stdlib_zip``: sources whose
    bytecode goes into the standard library's zip instead.
    ``dirs``: directories kept even when empty."""
    import glob
    import stat
    import struct

    keep: set[str] = set()
    dirs: set[str] = set()
    pyc: dict[str, str] = {}  # source .py -> its bytecode (a valid cached .pyc, or "")
    elves: list[str] = []
    used_set = set(used)

    def add(path: str) -> str | None:
        """``path`` and every symlink met on the way to it."""
        seen = 0
        parts = [p for p in path.split("/") if p]
        current = ""
        while parts:
            part = parts.pop(0)
            if part == ".":
                continue
            if part == "..":
                current = current.rsplit("/", 1)[0]
                continue
            candidate = current + "/" + part
            try:
                st = os.lstat(candidate)
            except OSError:
                return None
            if stat.S_ISLNK(st.st_mode):
                seen += 1
                if seen > 40:
                    return None
                keep.add(candidate)
                target = os.readlink(candidate)
                if target.startswith("/"):
                    current = ""
                parts = [p for p in target.split("/") if p] + parts
                continue
            current = candidate
        if not current:
            return None
        st = os.stat(current)
        if stat.S_ISDIR(st.st_mode):
            dirs.add(current)
        elif stat.S_ISREG(st.st_mode):
            keep.add(current)
        return current

    def add_elf(path: str) -> None:
        real = add(path)
        if real and real not in elves:
            elves.append(real)

    def add_module(source: str, cached: str | None) -> None:
        """A module's source: as bytecode, unless the plugin read the source
        at run time (anyio reads its own with inspect.getsource; tracebacks
        read theirs), which keeps it as well."""
        real = add(source)
        if real is None:
            return
        if source in used_set:
            if cached and os.path.exists(cached):
                add(cached)
            return
        pyc[source] = cached if cached and _valid_pyc(source, cached) else ""

    def add_file(path: str) -> None:
        """A file of a module tree: modules as bytecode, the rest as is."""
        import importlib.util

        if path.endswith(".py"):
            add_module(path, importlib.util.cache_from_source(path))
        elif path.endswith(".so") or ".so." in path:
            add_elf(path)
        elif not path.endswith(".pyc"):
            add(path)

    def add_tree(root: str) -> None:
        for d, subdirs, names in os.walk(root):
            subdirs[:] = sorted(s for s in subdirs if s != "__pycache__" and s not in TEST_DIRS)
            add(d)
            for n in sorted(names):
                add_file(os.path.join(d, n))

    # What the plugin used.
    for _name, (origin, cached, path) in sorted(loaded.items()):
        for d in path:
            if os.path.isdir(d):
                add(d)
        if not origin or not origin.startswith("/"):
            continue  # built-in or frozen
        if origin.endswith(".py"):
            add_module(origin, cached)
        elif not origin.endswith(".pyc"):
            add_elf(origin)  # an extension module
        else:
            add(origin)
    for path in maps:
        if path.startswith("/") and not path.endswith(" (deleted)"):
            add_elf(path)
    skip = tuple(d.rstrip("/") + "/" for d in ARGS["skip"])
    for path in used:
        if not path.startswith("/") or path.startswith(skip):
            continue
        if os.path.exists(path) and not os.path.isdir(path):
            if path.endswith(".so") or ".so." in path:
                add_elf(path)
            elif not path.endswith((".py", ".pyc")):
                add(path)
    for program in [sys.executable, *ARGS["programs"]]:
        if not program.startswith("/"):
            for d in os.environ.get("PATH", "").split(":"):
                if d.startswith("/") and os.path.exists(os.path.join(d, program)):
                    program = os.path.join(d, program)
                    break
        add_elf(program)
    # site reads *.pth files before the probe's audit hook is installed.
    for entry in sys.path:
        if entry.startswith("/") and os.path.isdir(entry):
            for path in glob.glob(os.path.join(glob.escape(entry), "*.pth")):
                add(path)
    for extra in ARGS["extra"]:
        for path in glob.glob(extra):
            add(path)

    # Every module it may import, by top-level name (a module, or a package
    # with all its modules): the standard library's and the declared
    # distributions'. Into the zip, unless it has files beside its modules
    # (data read by path, extension modules) or there is no zip.
    import importlib.util

    stdlib = _stdlib()
    failed = everything["failed"]
    zip_ok = bool(ARGS["stdlib_zip"] and _stdlib_zip_path())
    zipped: list[list[str]] = []  # [the sys.path entry it is in, its path]
    left_out: list[str] = []

    def unit(root: str, entry: str) -> None:
        full = os.path.join(root, entry)
        is_pkg = os.path.isdir(full)
        sources = [] if is_pkg else [full]
        as_files = not zip_ok or (is_pkg and not os.path.isfile(os.path.join(full, "__init__.py")))
        if is_pkg:
            for d, subdirs, names in os.walk(full):
                subdirs[:] = [x for x in subdirs if x != "__pycache__" and x not in TEST_DIRS]
                for n in names:
                    if n.endswith(".py"):
                        sources.append(os.path.join(d, n))
                    elif not n.endswith(".pyc") and not _not_data(n):
                        as_files = True  # read by path beside the modules, or an extension
        if as_files:
            if is_pkg:
                add_tree(full)
            else:
                add_file(full)
            return
        zipped.extend([root, source] for source in sources)
        for source in sources:
            pyc.pop(source, None)
            keep.discard(source)
            keep.discard(importlib.util.cache_from_source(source))
        if is_pkg:  # nothing of it beside the zip, not even an empty directory
            for d in [x for x in dirs if x == full or x.startswith(full + "/")]:
                dirs.discard(d)
            for f in [x for x in keep if x.startswith(full + "/")]:
                keep.discard(f)

    for entry in sorted(os.listdir(stdlib)):
        if entry.endswith(".py"):
            top = entry[:-3]
        elif os.path.isfile(os.path.join(stdlib, entry, "__init__.py")):
            top = entry
        else:
            continue  # lib-dynload (below), config-3.x (for building extensions)
        if top in EXCLUDED or top in failed:
            left_out.append(top)
        else:
            unit(stdlib, entry)
    dynload = os.path.join(stdlib, "lib-dynload")
    if os.path.isdir(dynload):
        add(dynload)
        for entry in sorted(os.listdir(dynload)):
            if _excluded_extension(entry):
                left_out.append(entry.split(".")[0])
            else:
                add_elf(os.path.join(dynload, entry))
    installed, missing = _distributions()
    tops: set[tuple[str, str]] = set()
    for paths in installed.values():
        for path in paths:
            if "/__pycache__/" in path:
                continue  # bytecode is made from the sources
            root = _path_entry(path)
            top = path[len(root) + 1 :].split("/")[0] if root else ""
            if not root or root == stdlib or ".dist-info" in top or ".egg-info" in top:
                add_file(path)  # metadata, scripts: as they are
            elif top.endswith(".py") or os.path.isdir(os.path.join(root, top)):
                tops.add((root, top))
            else:
                add_file(path)  # an extension module at the top, a .pth
    for root, top in sorted(tops):
        unit(root, top)
    # The landmark the interpreter looks for to find its prefix: os.py, kept
    # as a source beside its bytecode (and out of the zip); without its
    # bytecode when the interpreter has os frozen in (3.11+) and never reads it.
    landmark = os.path.join(stdlib, "os.py")
    if os.path.exists(landmark):
        zipped[:] = [z for z in zipped if z[1] != landmark]
        pyc.pop(landmark, None)
        add(landmark)
        cached = importlib.util.cache_from_source(landmark)
        if os.path.exists(cached) and getattr(os.__spec__, "origin", None) != "frozen":
            add(cached)
    # The keep setting: files and directories kept as they are.
    keep_missing = []
    for pattern in ARGS["keep"]:
        matches = sorted(glob.glob(pattern, recursive=True))
        if not matches:
            keep_missing.append(pattern)
        for path in matches:
            if os.path.isdir(path) and not os.path.islink(path):
                for d, _subdirs, names in os.walk(path):
                    add(d)
                    for n in names:
                        p = os.path.join(d, n)
                        add_elf(p) if _is_elf(p) else add(p)
            elif _is_elf(path):
                add_elf(path)
            else:
                add(path)

    # The shared libraries all of that links (DT_NEEDED, transitively).
    search = _library_dirs(glob)
    done: set[str] = set()
    while elves:
        path = elves.pop()
        if path in done:
            continue
        done.add(path)
        try:
            needed, runpath, interp = _elf_needs(path, struct)
        except (OSError, ValueError):
            continue
        if interp:
            add_elf(interp)
        origin_dir = os.path.dirname(path)
        dirs_for = [p.replace("$ORIGIN", origin_dir) for p in runpath] + search
        for soname in needed:
            for d in dirs_for:
                candidate = os.path.join(d, soname)
                if os.path.exists(candidate):
                    add_elf(candidate)
                    break
            else:
                raise SystemExit(f"slim probe: {path} needs {soname}, not found")
    return {
        "files": sorted(keep),
        "dirs": sorted(dirs),
        "pyc": pyc,
        "stdlib_zip": sorted(zipped),
        "used": used,
        "left_out": left_out,
        "missing_distributions": missing,
        "keep_missing": keep_missing,
    }


def _not_data(name: str) -> bool:
    return name.startswith(NOT_DATA) or name.endswith(NOT_DATA)


def _is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def _valid_pyc(source: str, cached: str) -> bool:
    """Whether ``cached`` is the bytecode of ``source`` as it is now."""
    import importlib.util
    import struct

    try:
        with open(cached, "rb") as f:
            head = f.read(16)
        st = os.stat(source)
    except OSError:
        return False
    if head[:4] != importlib.util.MAGIC_NUMBER or len(head) < 16:
        return False
    flags, mtime, size = (int(x) for x in struct.unpack("<III", head[4:16]))
    if flags & 1:  # hash-based: valid when unchecked
        return not flags & 2
    return mtime == (int(st.st_mtime) & 0xFFFFFFFF) and size == (st.st_size & 0xFFFFFFFF)


def _bytecode(source: str, cached: str) -> bytes:
    """The bytecode of ``source``: its valid cached ``.pyc``, or compiled now
    (as the interpreter would, with the source's path in tracebacks)."""
    import importlib.util
    import marshal
    import struct

    if cached:
        with open(cached, "rb") as f:
            return f.read()
    with open(source, "rb") as f:
        text = f.read()
    st = os.stat(source)
    code = compile(text, source, "exec", dont_inherit=True)
    head = struct.pack("<III", 0, int(st.st_mtime) & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF)
    return importlib.util.MAGIC_NUMBER + head + marshal.dumps(code)


def _stdlib_module(source: str) -> bool:
    """Whether ``source`` is a module of the standard library (not of a
    distribution installed beside it)."""
    return source.startswith(_stdlib() + "/") and not any(
        d in source for d in ("/site-packages/", "/dist-packages/")
    )


def _without_docstrings(pyc: bytes) -> bytes:
    """``pyc`` (a ``.pyc`` file's bytes) with the docstrings of its module,
    classes and functions replaced by None, as ``python -OO`` compiles them
    but with its asserts kept: a docstring is read only by ``help()`` and
    the like, and the standard library works without them (it is tested
    under ``-OO``). In the reference plugin: 1.6 MB of bytecode, 0.48 MB of
    its zip, about 0.6 MB of its memory.

    Python 3.8 to 3.13 put a function's docstring, or None, first in its
    constants; a class or a module stores its docstring with ``__doc__ =``.
    A constant the code also loads elsewhere stays. Any other version, or
    anything unexpected, gets ``pyc`` back unchanged."""
    import marshal
    import opcode
    import types

    if not (3, 8) <= sys.version_info[:2] <= (3, 13) or len(pyc) < 16:
        return pyc
    has_const = set(opcode.hasconst)
    extended, store_name = opcode.opmap["EXTENDED_ARG"], opcode.opmap["STORE_NAME"]
    load_const = opcode.opmap["LOAD_CONST"]
    function = 0x0001 | 0x0002  # CO_OPTIMIZED | CO_NEWLOCALS: a def's code
    # What a class body stores before its docstring.
    prologue = ("__module__", "__qualname__", "__firstlineno__", "__type_params__")

    def strip(code: types.CodeType) -> types.CodeType:
        consts = [strip(c) if isinstance(c, types.CodeType) else c for c in code.co_consts]
        uses: dict[int, int] = {}
        doc = None  # the constant stored as __doc__
        stores_done = False  # past the stores a docstring may follow
        raw, ext, last_const = code.co_code, 0, None
        for i in range(0, len(raw), 2):
            op, arg = raw[i], raw[i + 1] | ext
            ext = arg << 8 if op == extended else 0
            if op == extended or op == 0:  # 0: CACHE (3.11+) or nothing
                continue
            if op in has_const:
                uses[arg] = uses.get(arg, 0) + 1
                last_const = arg if op == load_const else None
                continue
            if op == store_name and not stores_done:
                name = code.co_names[arg]
                if name == "__doc__":  # the docstring: stored before anything else
                    doc, stores_done = last_const, True
                elif name not in prologue:
                    stores_done = True
            last_const = None
        if code.co_flags & function == function and not code.co_name.startswith("<"):
            doc = 0 if 0 not in uses else None
        elif doc is not None and uses.get(doc) != 1:
            doc = None
        if doc is not None and doc < len(consts) and isinstance(consts[doc], str):
            consts[doc] = None
        return code.replace(co_consts=tuple(consts))

    try:
        code = marshal.loads(pyc[16:])
        if not isinstance(code, types.CodeType):
            return pyc
        return pyc[:16] + marshal.dumps(strip(code))
    except (ValueError, TypeError, EOFError, IndexError):
        return pyc


def _stdlib_zip_path() -> str:
    """Where the interpreter looks for its standard library as a zip (on
    sys.path, and absent from the image), or "" when it does not."""
    for entry in sys.path:
        if entry.endswith(".zip") and entry.startswith("/") and not os.path.exists(entry):
            return entry
    return ""


def _write_tar(
    report: dict[str, Any], origins: dict[str, str], needs: dict[str, Any], at_start: list[str]
) -> str:
    """The slim rootfs as a tar: the files needed as they are; modules outside
    the plugin's own packages as sourceless bytecode (x.py -> x.pyc), or in
    the standard library's zip; the directories above them with their modes;
    and the plugin's own packages whole, with their sources.

    In the zip, the modules of ``at_start`` (the sources of what the plugin
    imported before it bound its socket) are stored: zipimport inflates a
    deflated entry at every import, and those are imported at every start,
    before the daemon can connect (the reference plugin: 1.5 MB of bytecode,
    about 15 ms of its start on two loaded cores). The others are deflated
    at level 9, which with os's bytecode left out (see _needs) pays for most
    of the room the stored ones take (0.8 MB more in all): 0.05 MB less than
    level 6, for about a second more of the build."""
    import io
    import py_compile
    import tarfile
    import tempfile
    import zipfile

    own = sorted(origins.values())

    def mine(path: str) -> bool:
        return any(path == r or path.startswith(r + "/") for r in own)

    # Bytecode for the modules of the plugin's own packages it loaded (the
    # Dockerfile need not compile them: a step less to rebuild); one it did
    # not load is compiled when first imported.
    for source in report.get("own_loaded") or []:
        if mine(source):
            py_compile.compile(source, doraise=False, quiet=2)

    entries: dict[str, str] = {}  # arcname (no leading /) -> path in the image
    bytecode: dict[str, tuple[str, str]] = {}  # arcname -> (source, cached or "")
    cached_files = {c for c in needs["pyc"].values() if c}
    for path in needs["files"]:
        if mine(path) or path in cached_files:
            continue  # below, whole; or written as the module's .pyc
        if path in needs["pyc"]:
            bytecode[path.lstrip("/") + "c"] = (path, needs["pyc"][path])
        else:
            entries[path.lstrip("/")] = path
    for path in needs["dirs"] + ARGS["keep_dirs"]:
        if os.path.isdir(path) and not mine(path):
            entries[path.strip("/")] = path
    docstrings = 0  # bytes of the standard library's docstrings left out

    def module_bytecode(source: str, cached: str) -> bytes:
        """``_bytecode``, without docstrings for the standard library's."""
        nonlocal docstrings
        data = _bytecode(source, cached)
        if not _stdlib_module(source):
            return data
        lean = _without_docstrings(data)
        docstrings += len(data) - len(lean)
        return lean

    zip_path = _stdlib_zip_path()
    if needs["stdlib_zip"] and zip_path:
        import importlib.util

        used = set(needs["used"])
        stored = set(at_start)
        with tempfile.NamedTemporaryFile(suffix=".zip", delete=False) as tmp:
            zip_file = tmp.name
        with zipfile.ZipFile(zip_file, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
            for root, source in needs["stdlib_zip"]:
                arc = os.path.relpath(source, root)
                if source in used:  # read at run time (inspect.getsource): the source
                    with open(source, "rb") as f:
                        data = f.read()
                else:
                    cached = importlib.util.cache_from_source(source)
                    data = module_bytecode(source, cached if _valid_pyc(source, cached) else "")
                    arc += "c"
                kind = zipfile.ZIP_STORED if source in stored else zipfile.ZIP_DEFLATED
                z.writestr(
                    zipfile.ZipInfo(arc, (1980, 1, 1, 0, 0, 0)),
                    data,
                    compress_type=kind,
                    compresslevel=9,
                )
        entries[zip_path.lstrip("/")] = zip_file
        report["stdlib_zip_bytes"] = os.path.getsize(zip_file)
    for name in list(entries) + list(bytecode) + [r.lstrip("/") for r in own]:
        parent = os.path.dirname(name)
        while parent and parent not in entries:
            entries[parent] = "/" + parent
            parent = os.path.dirname(parent)
    import struct

    stripped = 0
    with tarfile.open(ARGS["tar"], "w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(entries):  # parents before children
            info = tar.gettarinfo(entries[name], arcname=name)
            if not info.isreg():
                tar.addfile(info)
                continue
            with open(entries[name], "rb") as f:
                data = f.read()
            smaller = _strip_debug(data, struct)
            if smaller is not None:
                stripped += len(data) - len(smaller)
                data = smaller
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, (source, cached) in sorted(bytecode.items()):
            data = module_bytecode(source, cached)
            st = os.stat(source)  # a module may be a link (sitecustomize.py -> /etc/...)
            info = tarfile.TarInfo(name)
            info.mode, info.mtime, info.size = st.st_mode & 0o7777, int(st.st_mtime), len(data)
            tar.addfile(info, io.BytesIO(data))
        for root in own:
            tar.add(root, arcname=root.lstrip("/"), recursive=True)
    report["renames"] = len(bytecode)
    report["debug_bytes_stripped"] = stripped
    report["docstring_bytes"] = docstrings
    return str(ARGS["tar"])


def _strip_debug(data: bytes, struct: Any) -> bytes | None:
    """``data`` (an ELF file) without its debug sections (``.debug_*``: for
    debuggers, never loaded), as ``strip --strip-debug`` would; None when it
    has none, or when their removal is not plainly safe (a debug section
    before a loaded one, or referred to by another section or a symbol).

    Only non-loaded sections move: everything the program headers map stays
    at its offset, byte for byte."""
    if data[:4] != b"\x7fELF":
        return None
    is64 = data[4] == 2
    end = "<" if data[5] == 1 else ">"
    if is64:
        (phoff, shoff) = struct.unpack_from(end + "QQ", data, 0x20)
        phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from(end + "HHHHH", data, 0x36)
        sh_fmt, ph_fmt = end + "IIQQQQIIQQ", end + "IIQQQQ"
    else:
        (phoff, shoff) = struct.unpack_from(end + "II", data, 0x1C)
        phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from(end + "HHHHH", data, 0x2A)
        sh_fmt, ph_fmt = end + "IIIIIIIIII", end + "IIIIII"
    if not shoff or not shnum or shstrndx >= shnum:
        return None
    sections = [list(struct.unpack_from(sh_fmt, data, shoff + i * shentsize)) for i in range(shnum)]
    # name, type, flags, addr, offset, size, link, info, addralign, entsize
    strtab = sections[shstrndx][4]

    def name(i: int) -> bytes:
        at = strtab + sections[i][0]
        return data[at : data.index(b"\0", at)]

    debug = [i for i in range(1, shnum) if name(i).startswith((b".debug", b".zdebug"))]
    if not debug:
        return None
    first = min(debug)
    alloc = [i for i in range(1, shnum) if sections[i][2] & 2]  # SHF_ALLOC
    if any(i > first for i in alloc) or any(i in debug for i in alloc):
        return None
    kept = [i for i in range(shnum) if i not in debug]
    new_index = {old: new for new, old in enumerate(kept)}
    for i in kept:
        sh_type, link, info = sections[i][1], sections[i][6], sections[i][7]
        if link in debug or (sh_type in (4, 9) and info in debug):  # REL, RELA
            return None
        if sh_type in (2, 11):  # SYMTAB, DYNSYM: no symbol may point at a moved section
            entsize = sections[i][9] or (24 if is64 else 16)
            at = 6 if is64 else 14
            for off in range(sections[i][4], sections[i][4] + sections[i][5], entsize):
                (shndx,) = struct.unpack_from(end + "H", data, off + at)
                if first <= shndx < 0xFF00:
                    return None
    # What stays where it is: the headers, every segment, every loaded section.
    keep_end = max(phoff + phnum * phentsize, 64 if is64 else 52)
    for j in range(phnum):
        fields = struct.unpack_from(ph_fmt, data, phoff + j * phentsize)
        offset, filesz = (fields[2], fields[5]) if is64 else (fields[1], fields[4])
        keep_end = max(keep_end, offset + filesz)
    for i in alloc:
        if sections[i][1] != 8:  # NOBITS
            keep_end = max(keep_end, sections[i][4] + sections[i][5])
    out = bytearray(data[:keep_end])
    headers = []
    for i in kept:
        header = list(sections[i])
        if i and not header[2] & 2 and header[1] != 8:
            align = max(int(header[8]), 1)
            out += b"\0" * (-len(out) % align)
            offset = len(out)
            out += data[header[4] : header[4] + header[5]]
            header[4] = offset
        header[6] = new_index.get(header[6], header[6])
        if header[1] in (4, 9):
            header[7] = new_index.get(header[7], header[7])
        headers.append(header)
    out += b"\0" * (-len(out) % 8)
    new_shoff = len(out)
    for header in headers:
        out += struct.pack(sh_fmt, *header)
        out += b"\0" * (shentsize - struct.calcsize(sh_fmt))
    if is64:
        struct.pack_into(end + "Q", out, 0x28, new_shoff)
        struct.pack_into(end + "HH", out, 0x3C, len(kept), new_index[shstrndx])
    else:
        struct.pack_into(end + "I", out, 0x20, new_shoff)
        struct.pack_into(end + "HH", out, 0x30, len(kept), new_index[shstrndx])
    return bytes(out) if len(out) < len(data) else None


def _library_dirs(glob: Any) -> list[str]:
    dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]

    def conf(path: str, depth: int = 0) -> None:
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except OSError:
            return
        for line in lines:
            line = line.split("#", 1)[0].strip()
            if line.startswith("include ") and depth < 5:
                for inc in sorted(glob.glob(line.split(None, 1)[1])):
                    conf(inc, depth + 1)
            elif line.startswith("/"):
                dirs.append(line)

    conf("/etc/ld.so.conf")
    machine = os.uname().machine
    for d in (
        f"/lib/{machine}-linux-gnu",
        f"/usr/lib/{machine}-linux-gnu",
        "/lib64",
        "/usr/lib64",
        "/lib",
        "/usr/lib",
    ):
        dirs.append(d)
    return dirs


def _elf_needs(path: str, struct: Any) -> tuple[list[str], list[str], str | None]:
    """DT_NEEDED, DT_RUNPATH/DT_RPATH and PT_INTERP of an ELF file."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF":
        raise ValueError("not ELF")
    is64 = data[4] == 2
    end = "<" if data[5] == 1 else ">"
    if is64:
        (phoff,) = struct.unpack_from(end + "Q", data, 0x20)
        phentsize, phnum = struct.unpack_from(end + "HH", data, 0x36)
    else:
        (phoff,) = struct.unpack_from(end + "I", data, 0x1C)
        phentsize, phnum = struct.unpack_from(end + "HH", data, 0x2A)
    loads: list[tuple[int, int, int]] = []
    dynamic: tuple[int, int] | None = None
    interp: str | None = None
    for i in range(phnum):
        off = phoff + i * phentsize
        if is64:
            p_type, _, p_offset, p_vaddr, _, p_filesz = struct.unpack_from(
                end + "IIQQQQ", data, off
            )
        else:
            p_type, p_offset, p_vaddr, _, p_filesz = struct.unpack_from(end + "IIIII", data, off)
        if p_type == 1:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == 2:
            dynamic = (p_offset, p_filesz)
        elif p_type == 3:
            interp = data[p_offset : p_offset + p_filesz].split(b"\0", 1)[0].decode()
    if dynamic is None:
        return [], [], interp
    entries = []
    size = 16 if is64 else 8
    fmt = end + ("qQ" if is64 else "iI")
    for off in range(dynamic[0], dynamic[0] + dynamic[1], size):
        tag, value = struct.unpack_from(fmt, data, off)
        if tag == 0:
            break
        entries.append((tag, value))
    strtab = next((v for t, v in entries if t == 5), None)
    if strtab is None:
        return [], [], interp
    for vaddr, offset, filesz in loads:
        if vaddr <= strtab < vaddr + filesz:
            strtab = strtab - vaddr + offset
            break
    base: int = strtab

    def string(at: int) -> str:
        return data[base + at : data.index(b"\0", base + at)].decode()

    needed = [string(v) for t, v in entries if t == 1]
    runpath: list[str] = []
    for t, v in entries:
        if t in (15, 29):  # DT_RPATH, DT_RUNPATH
            runpath += [p for p in string(v).split(":") if p]
    return needed, runpath, interp


if __name__ == "__main__":
    main()
