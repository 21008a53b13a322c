# mypy: ignore-errors
# The slim step's probe: runs INSIDE the plugin's image, under the image's own
# Python (`python3 [entrypoint options] -c <this file> '<json>'`), never on the
# build host and never imported by the kit. It serves the plugin as its
# entrypoint would, drives every call plus the error paths through the socket
# from a forked client, stops it with SIGTERM, and prints one report line:
#
#   mode "trace" (the built image): the modules loaded, and every file the
#     plugin needs (modules, shared libraries with their DT_NEEDED closure,
#     files it opened, the symlinks on the way), written as a tar (the slim
#     rootfs) at ARGS["tar"] for the builder to fetch;
#   mode "check" (the slim rootfs): the modules loaded and the answers, for
#     the builder to compare with the trace.
#
# Only modules the plugin itself loads are imported before the snapshot
# (sys, os, json, signal; the client runs in a child process), so the
# snapshot is the plugin's own. Keep it runnable on Python 3.8+.
import json
import os
import signal
import sys

MARK = "@@dpk-slim-report@@"
ARGS = {}  # from the command line, by main()
opened = set()


def _audit(event, args):
    if event in ("open", "ctypes.dlopen") and isinstance(args[0], (str, bytes)):
        opened.add(os.fsdecode(args[0]))


# --- the client (a forked child: its imports stay out of the snapshot) -------------


def _client(path, out_fd, parent):
    import socket
    import time

    def connect():
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

    def read_answer(s, buf):
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                return None, b""
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == "content-length":
                length = int(value.strip())
        if status < 200:  # 100 Continue: the real answer follows
            return read_answer(s, rest)
        while len(rest) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        return (status, rest[:length].decode("utf-8", "replace")), rest[length:]

    def request(s, method, target, body=b"", headers=b""):
        data = (
            method.encode() + b" " + target.encode() + b" HTTP/1.1\r\n"
            b"Host: plugin.moby.localhost\r\nUser-Agent: Go-http-client/1.1\r\n"
            b"Accept: application/vnd.docker.plugins.v1.2+json\r\n"
            + headers
            + b"Content-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        s.sendall(data)
        answer, _ = read_answer(s, b"")
        return answer

    def raw(data, half_close=False):
        s = connect()
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
            answer, _ = read_answer(s, b"")
        except OSError as exc:
            answer = ("error", type(exc).__name__)
        finally:
            s.close()
        return answer

    answers = []
    try:
        s = connect()
        for method, target, body in ARGS["calls"]:
            answers.append([method, target, request(s, method, target, body.encode("utf-8"))])
        first = ARGS["target"]
        # The error paths, each on its own connection.
        answers.append(
            [
                "expect",
                first,
                raw(
                    b"POST " + first.encode() + b" HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                    b"Content-Length: 2\r\nConnection: close\r\n\r\n{}"
                ),
            ]
        )
        answers.append(
            [
                "huge",
                first,
                raw(
                    b"POST " + first.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: 99999999\r\nConnection: close\r\n\r\n{}"
                ),
            ]
        )
        answers.append(
            [
                "chunked",
                first,
                raw(
                    b"POST "
                    + first.encode()
                    + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                    b"Connection: close\r\n\r\n1\r\n{\r\n1\r\n}\r\n0\r\n\r\n"
                ),
            ]
        )
        answers.append(["garbage", "", raw(b"\x16\x03\x01 not http at all\r\n\r\n")])
        answers.append(
            [
                "cut",
                first,
                raw(
                    b"POST "
                    + first.encode()
                    + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{",
                    half_close=True,
                ),
            ]
        )
        s.close()
    except Exception as exc:  # reported, and the build fails on it
        answers.append(["client-error", "", ["error", f"{type(exc).__name__}: {exc}"]])
    finally:
        os.write(out_fd, json.dumps(answers).encode())
        os.close(out_fd)
        os.kill(parent, signal.SIGTERM)  # the shutdown path, as the daemon stops a plugin


# --- the plugin ---------------------------------------------------------------------


def _serve():
    import runpy

    sys.argv = [ARGS["run"]] + ARGS["args"]
    try:
        if ARGS["module"]:
            runpy.run_module(ARGS["run"], run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(ARGS["run"], run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (None, 0):
            raise


def _log_a_traceback():
    # What the SDK does for an exception a driver did not expect: the
    # traceback formatting machinery (traceback, linecache, tokenize) loads
    # lazily, so exercise it the same way.
    import logging

    try:
        raise RuntimeError("slim probe: an unexpected exception")
    except RuntimeError:
        logging.getLogger("plugin").exception("slim probe: logging a traceback")


def main():
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
    loaded = {}
    for name in modules:
        m = sys.modules[name]
        spec = getattr(m, "__spec__", None)
        origin = getattr(spec, "origin", None) or getattr(m, "__file__", None)
        cached = getattr(spec, "cached", None)
        path = list(getattr(m, "__path__", None) or [])
        loaded[name] = [origin, cached, path]
    with open("/proc/self/maps") as f:
        maps = sorted({line.split(None, 5)[5].strip() for line in f if len(line.split()) > 5})
    origins = {}
    for name in ARGS["own"]:
        info = loaded.get(name)
        if info and info[0] and info[0].startswith("/"):
            origins[name] = os.path.dirname(info[0]) if info[2] else info[0]
    report = {"modules": modules, "answers": answers, "origins": origins}
    if ARGS["mode"] == "trace":
        report.update(_needs(loaded, maps, sorted(opened)))
        report["tar"] = _write_tar(report, origins)
    sys.stdout.flush()
    sys.stdout.write("\n" + MARK + json.dumps(report) + "\n")
    sys.stdout.flush()


# --- what the plugin needs (trace mode, after the snapshot) --------------------------


def _needs(loaded, maps, opened):
    import glob
    import importlib.util
    import stat
    import struct

    keep = set()  # files and symlinks, absolute
    dirs = set()  # directories kept even if empty
    pyc = {}  # source .py -> its valid cached .pyc (may go sourceless)
    elves = []
    opened_set = set(opened)

    def add(path):
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

    def add_elf(path):
        real = add(path)
        if real and real not in elves:
            elves.append(real)

    def valid_pyc(source, cached):
        try:
            with open(cached, "rb") as f:
                head = f.read(16)
            st = os.stat(source)
        except OSError:
            return False
        if head[:4] != importlib.util.MAGIC_NUMBER or len(head) < 16:
            return False
        flags, mtime, size = struct.unpack("<III", head[4:16])
        if flags & 1:  # hash-based: valid when unchecked, or checked below by the builder
            return not flags & 2
        return mtime == (int(st.st_mtime) & 0xFFFFFFFF) and size == (st.st_size & 0xFFFFFFFF)

    for _name, (origin, cached, path) in sorted(loaded.items()):
        for d in path:
            if os.path.isdir(d):
                add(d)
        if not origin or not origin.startswith("/"):
            continue  # built-in or frozen
        real = add(origin)
        if real is None:
            continue
        if origin.endswith(".py"):
            # A source read at run time (anyio reads its own with
            # inspect.getsource; tracebacks read theirs) stays a source.
            if cached and valid_pyc(origin, cached) and origin not in opened_set:
                pyc[origin] = cached
            if cached and os.path.exists(cached):
                add(cached)
        elif not origin.endswith(".pyc"):
            add_elf(origin)  # an extension module
    for path in maps:
        if path.startswith("/") and not path.endswith(" (deleted)"):
            add_elf(path)
    skip = tuple(d.rstrip("/") + "/" for d in ARGS["skip"])
    for path in opened:
        if not path.startswith("/") or path.startswith(skip):
            continue
        if os.path.exists(path) and not os.path.isdir(path):
            if path.endswith(".so") or ".so." in path:
                add_elf(path)
            else:
                add(path)
    for program in [sys.executable] + ARGS["programs"]:
        if not program.startswith("/"):
            for d in os.environ.get("PATH", "").split(":"):
                if d.startswith("/") and os.path.exists(os.path.join(d, program)):
                    program = os.path.join(d, program)
                    break
        add_elf(program)
    # The landmarks the interpreter looks for to find its prefix, and the
    # dynamic loader's own configuration.
    stdlib = os.path.dirname(os.__file__)
    for landmark in ("os.py",):
        source = os.path.join(stdlib, landmark)
        cached = importlib.util.cache_from_source(source)
        if os.path.exists(source):
            add(source)
            if valid_pyc(source, cached):
                pyc[source] = cached
                add(cached)
    # site reads *.pth files before the probe's audit hook is installed.
    for entry in sys.path:
        if entry.startswith("/") and os.path.isdir(entry):
            for path in glob.glob(os.path.join(glob.escape(entry), "*.pth")):
                add(path)
    dynload = os.path.join(stdlib, "lib-dynload")
    if os.path.isdir(dynload):
        add(dynload)
    for extra in ARGS["extra"]:
        for path in glob.glob(extra):
            add(path)

    search = _library_dirs(glob)
    done = set()
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
    return {"files": sorted(keep), "dirs": sorted(dirs), "pyc": pyc}


def _write_tar(report, origins):
    """The slim rootfs as a tar: the files needed, modules outside the
    plugin's own packages as sourceless bytecode (x.py -> x.pyc, from a
    cached .pyc that matches the source), the directories above them with
    their modes, and the plugin's own packages whole."""
    import compileall
    import tarfile

    own = sorted(origins.values())
    for root in own:
        # Bytecode for every module of the plugin's own packages, imported or
        # not (the Dockerfile need not compile them: a step less to rebuild).
        if os.path.isdir(root):
            compileall.compile_dir(root, quiet=2)

    def mine(path):
        return any(path == r or path.startswith(r + "/") for r in own)

    entries = {}  # arcname (no leading /) -> path in the image
    renames = {}
    for source, cached in report["pyc"].items():
        if not mine(source):
            renames[source] = cached
    for path in report["files"]:
        if mine(path):
            continue  # below, whole
        if path in renames:
            entries[path.lstrip("/") + "c"] = renames[path]
        elif path not in renames.values():
            entries[path.lstrip("/")] = path
    for path in report["dirs"] + ARGS["keep_dirs"]:
        if os.path.isdir(path) and not mine(path):
            entries[path.strip("/")] = path
    for name in list(entries) + [r.lstrip("/") for r in own]:
        parent = os.path.dirname(name)
        while parent and parent not in entries:
            entries[parent] = "/" + parent
            parent = os.path.dirname(parent)
    with tarfile.open(ARGS["tar"], "w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(entries):  # parents before children
            tar.add(entries[name], arcname=name, recursive=False)
        for root in own:
            tar.add(root, arcname=root.lstrip("/"), recursive=True)
    report["renames"] = len(renames)
    return ARGS["tar"]


def _library_dirs(glob):
    dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]

    def conf(path, depth=0):
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


def _elf_needs(path, struct):
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
    loads, dynamic, interp = [], None, None
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

    def string(at):
        return data[strtab + at : data.index(b"\0", strtab + at)].decode()

    needed = [string(v) for t, v in entries if t == 1]
    runpath = []
    for t, v in entries:
        if t in (15, 29):  # DT_RPATH, DT_RUNPATH
            runpath += [p for p in string(v).split(":") if p]
    return needed, runpath, interp


if __name__ == "__main__":
    main()
