"""The slim rootfs (``[build] slim = true``): what the plugin uses, and every
module it may import.

The probe (``_slim_probe.py``) runs the plugin in the built image exactly as
its entrypoint would, drives every call of its endpoint tables and the error
paths (PluginError, 400, 404, 405, a traceback logged, a cut connection,
malformed HTTP) through the socket and stops it with SIGTERM. What it used
goes into the slim rootfs: modules, extension modules and shared libraries
with their DT_NEEDED closure, files it opened, the symlinks on the way.

A plugin may import more than the walk-through shows (a module imported in
one branch of ``create``, for an option the probe never sends). So the probe
then imports every module of the standard library and of the plugin's
declared distributions (the wheelhouse), and the slim rootfs holds each one
that imports in the image, with the shared libraries it links: pure-Python
modules as bytecode in the zip the interpreter has on its path
(``/usr/lib/python311.zip`` in Debian; deflated: 40 % of their size, but for
the modules imported before the plugin listens, stored: zipimport would
inflate them at every start), a package that has other files beside its
modules (data read by path, extension modules) as files, sourceless
``.pyc`` but for sources read at run time. The standard library's bytecode
goes without its docstrings (only ``help()`` and the like read them): about
0.6 MB less memory for the reference plugin. The plugin's own
packages stay whole, with their sources, and its distributions keep their
docstrings (some read them, like parser generators). Debug sections of ELF
files (for debuggers, never loaded; httptools' wheel ships 1.3 MB of them)
are dropped. What of the standard library cannot matter to a plugin (test
suites, IDLE, terminal interfaces, NIS, ensurepip, lib2to3; see
``_slim_probe.EXCLUDED`` for why) is left out, and so is a module the image
itself cannot import.

What no import shows (data files read by path, libraries loaded by name with
ctypes, programs run with subprocess) is named in ``[build] keep``: glob
patterns of paths in the image, kept as they are (directories whole, ELF
files with the libraries they link); a pattern that matches nothing fails
the build.

Then the slim rootfs is checked the same way: imported as an image, the
probe runs the plugin in it and must load the same modules and get the same
answers, and every module that imported in the image must import in it, or
the build fails naming what is missing.
"""

from __future__ import annotations

import contextlib
import io
import json
import posixpath
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .._driver import Driver, Endpoint
from ._errors import BuildError

__all__ = ["SlimResult", "check_slim", "compare", "probe_args", "probe_calls", "trace"]

PROBE = Path(__file__).with_name("_slim_probe.py")
MARK = "@@dpk-slim-report@@"
#: Directories kept even when empty: the daemon mounts onto or creates them.
KEEP_DIRS = ("dev", "proc", "sys", "tmp", "run", "etc")
#: Small configuration read by C code (the dynamic loader, NSS, OpenSSL),
#: which the probe's audit hook cannot see.
EXTRA = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d/*",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
    "/usr/lib/ssl/openssl.cnf",
)
#: Where the plugin's own files live at run time: never part of the rootfs.
RUNTIME_DIRS = ("/proc", "/sys", "/dev", "/run", "/tmp")
PROBE_NAME = "dpk-probe"
#: Where the probe writes the slim rootfs in the trace container.
TAR = "/tmp/dpk-slim-rootfs.tar"


# --- the walk-through -------------------------------------------------------------


def _sample(tp: Any, depth: int = 0) -> Any:
    """A plausible JSON value for a model field of type ``tp``."""
    import typing

    from .._wire import Model

    if isinstance(tp, type) and issubclass(tp, Model) and depth < 4:
        hints = typing.get_type_hints(tp)
        return {
            f.metadata["wire"]: _sample(hints[f.name], depth + 1)
            for f in fields(tp)  # type: ignore[arg-type]
        }
    origin = typing.get_origin(tp)
    if origin is dict:
        return {}
    if origin is list:
        return []
    if origin is not None and type(None) in typing.get_args(tp):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _sample(inner[0], depth) if inner else None
    return {str: PROBE_NAME, bool: False, int: 0, float: 0.0}.get(tp, PROBE_NAME)


def _order(endpoints: Iterable[Endpoint]) -> list[Endpoint]:
    """Creating calls first, removing ones last, so that every call in
    between finds something to act on."""

    def rank(e: Endpoint) -> int:
        if e.name.startswith(("Create", "Request", "Allocate", "Join")):
            return 0
        if e.name.startswith(("Remove", "Delete", "Release", "Leave", "Free")):
            return 2
        return 1

    return sorted(endpoints, key=rank)


def probe_calls(drivers: Iterable[Driver | type[Driver]]) -> tuple[list[list[str]], str]:
    """The requests of the walk-through, and the call the error probes use.

    Every call of every driver, twice (the second pass meets the "already
    exists" and "no such" paths), then the SDK's own error paths on the
    same keep-alive connection."""
    calls: list[list[str]] = [["POST", "/Plugin.Activate", ""]]
    target = ""
    for driver in drivers:
        ordered = _order(driver.endpoints)
        for _ in range(2):
            for e in ordered:
                body = json.dumps(_sample(e.request)) + "\n" if e.request else "{}\n"
                calls.append(["POST", f"/{driver.prefix}.{e.name}", body])
        with_body = [e for e in ordered if e.request is not None]
        if with_body and not target:
            target = f"/{driver.prefix}.{with_body[0].name}"
            calls += [
                ["POST", target, "{not json"],
                ["POST", target, "[]"],
                ["POST", target, '{"Name": 1}'],
                ["POST", target, '"\xff\xfe"'],
                ["POST", target + "/", "{}"],
            ]
        calls.append(["GET", f"/{driver.prefix}.{ordered[0].name}", ""])
    calls.append(["POST", "/NoSuch.Call", "{}"])
    return calls, target or calls[-1][1]


def _interpreter(entrypoint: list[str]) -> tuple[list[str], bool, str, list[str]]:
    """Split ``python [options] (-m module | script) args...``."""
    program = entrypoint[0]
    if not posixpath.basename(program).startswith("python"):
        raise BuildError(
            f"build.slim: the entrypoint {program!r} is not a Python interpreter; "
            "the slim step traces Python plugins (set slim = false)"
        )
    options: list[str] = []
    rest = entrypoint[1:]
    while rest and rest[0].startswith("-") and rest[0] not in ("-m", "-c"):
        option = rest.pop(0)
        options.append(option)
        if option in ("-X", "-W", "-Q") and rest:
            options.append(rest.pop(0))
    if len(rest) >= 2 and rest[0] == "-m":
        return options, True, rest[1], rest[2:]
    if rest and rest[0] != "-c":
        return options, False, rest[0], rest[1:]
    raise BuildError(f"build.slim: cannot tell what the entrypoint {entrypoint} runs")


def probe_args(
    config: dict[str, Any],
    drivers: Iterable[type[Driver]],
    own: list[str],
    mode: str,
    distributions: Iterable[str] = (),
    keep: Iterable[str] = (),
) -> dict[str, Any]:
    """The probe's arguments, from the rendered config.json; ``own`` names
    the plugin's own top-level packages (kept whole, with sources),
    ``distributions`` the plugin's declared distributions (every file of
    theirs is kept) and ``keep`` the glob patterns of ``[build] keep``."""
    entrypoint = list(config["entrypoint"])
    _, is_module, run, args = _interpreter(entrypoint)
    settings = config.get("args") or {}
    calls, target = probe_calls(drivers)
    mounts = [m["destination"] for m in config.get("mounts") or [] if m.get("destination")]
    if config.get("propagatedMount"):
        mounts.append(config["propagatedMount"])
    socket = posixpath.join("/run/docker/plugins", config["interface"]["socket"])
    return {
        "mode": mode,
        "module": is_module,
        "run": run,
        "args": args + list(settings.get("value") or []),
        "socket": socket,
        "calls": calls,
        "target": target,
        "dirs": ["/run/docker/plugins", *mounts],
        "skip": [*RUNTIME_DIRS, *mounts],
        "programs": [entrypoint[0]],
        "extra": list(EXTRA),
        "own": own,
        "keep_dirs": ["/" + d for d in KEEP_DIRS],
        "tar": TAR,
        "distributions": sorted(distributions),
        "keep": list(keep),
        "stdlib_zip": True,
        "importable": [],
    }


# --- running the probe ------------------------------------------------------------


def _environment(config: dict[str, Any]) -> list[str]:
    env = [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ]
    for item in config.get("env") or []:
        if item.get("value") is not None:
            env.append(f"{item['name']}={item['value']}")
    env.append("LOG_LEVEL=debug")  # the debug logging paths too
    return env


def run_probe(
    client: Any, image: str, config: dict[str, Any], args: dict[str, Any]
) -> tuple[dict[str, Any], bytes | None]:
    """Run the probe in ``image``: its report and (trace mode) the slim
    rootfs it wrote, or BuildError with its output."""
    entrypoint = list(config["entrypoint"])
    options, _, _, _ = _interpreter(entrypoint)
    linux = config.get("linux") or {}
    network = (config.get("network") or {}).get("type") or ""
    container = client.containers.create(
        image,
        entrypoint=[entrypoint[0], *options, "-c", PROBE.read_text(), json.dumps(args)],
        command=[],
        environment=_environment(config),
        working_dir=config.get("workdir") or "/",
        cap_add=list(linux.get("capabilities") or []) or None,
        network_mode="host" if network == "host" else "none",
    )
    tar = None
    try:
        container.start()
        result = container.wait(timeout=120)
        out = container.logs(stdout=True, stderr=False).decode(errors="replace")
        err = container.logs(stdout=False, stderr=True).decode(errors="replace")
        code = result.get("StatusCode")
        report = None
        for line in out.splitlines():
            if line.startswith(MARK):
                report = json.loads(line[len(MARK) :])
        if code != 0 or report is None:
            tail = [ln for ln in (err or out).strip().splitlines() if ln.strip()][-6:]
            raise BuildError(
                f"the slim probe ({args['mode']}) failed with status {code}:\n  "
                + "\n  ".join(tail)
            )
        if report.get("tar"):
            tar = _fetch(container, report["tar"])
    finally:
        container.remove(force=True)
    report["stderr"] = err
    return dict(report), tar


# --- the slim rootfs ----------------------------------------------------------------


@dataclass(frozen=True)
class SlimResult:
    tar: bytes  # the slim rootfs, as the probe wrote it
    slim_bytes: int  # regular files in it
    members: int
    bytecode_only: int  # modules kept as sourceless .pyc
    importable: list[str]  # modules importable in the image, and so in the slim rootfs
    zipped: int  # standard library modules in its zip
    zip_bytes: int
    docstring_bytes: int  # of the standard library's bytecode, left out


def slim_result(tar: bytes, report: dict[str, Any]) -> SlimResult:
    size = members = 0
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        for member in tf:
            members += 1
            if member.isreg():
                size += member.size
    return SlimResult(
        tar,
        size,
        members,
        int(report.get("renames", 0)),
        list(report.get("importable") or []),
        len(report.get("stdlib_zip") or []),
        int(report.get("stdlib_zip_bytes") or 0),
        int(report.get("docstring_bytes") or 0),
    )


def _fetch(container: Any, path: str) -> bytes:
    """One file out of a (stopped) container."""
    stream, _ = container.get_archive(path)
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tf:
        for member in tf:
            f = tf.extractfile(member) if member.isreg() else None
            if f is not None:
                return f.read()
    raise BuildError(f"the slim probe wrote no {path}")


# --- checking ---------------------------------------------------------------------


def _answers(report: dict[str, Any]) -> list[tuple[Any, ...]]:
    """What must match between the trace and the check: status and error
    message of every answer (bodies differ in times and free space)."""
    out: list[tuple[Any, ...]] = []
    for label, target, answer in report["answers"]:
        if not isinstance(answer, list):
            out.append((label, target, answer))
            continue
        status, body = answer
        err = None
        try:
            data = json.loads(body)
            if isinstance(data, dict):
                err = data.get("Err")
        except (TypeError, ValueError):
            pass
        out.append((label, target, status, err))
    return out


def compare(trace_report: dict[str, Any], check_report: dict[str, Any]) -> None:
    """BuildError naming the difference, if the slim rootfs behaved otherwise."""
    problems = []
    before, after = set(trace_report["modules"]), set(check_report["modules"])
    if before - after:
        problems.append("modules not loaded: " + ", ".join(sorted(before - after)[:20]))
    if after - before:
        problems.append("other modules loaded: " + ", ".join(sorted(after - before)[:20]))
    importable = set(check_report.get("importable") or [])
    lost = [name for name in trace_report.get("importable") or [] if name not in importable]
    if lost:
        why = check_report.get("not_importable") or {}
        problems.append(
            f"{len(lost)} modules importable in the image do not import from it: "
            + ", ".join(f"{name} ({why.get(name, 'not tried')})" for name in lost[:10])
        )
    a, b = _answers(trace_report), _answers(check_report)
    if a != b:
        diff = [f"{x} became {y}" for x, y in zip(a, b, strict=False) if x != y][:5]
        problems.append("different answers: " + "; ".join(diff or [f"{len(a)} vs {len(b)}"]))
    for line in check_report.get("stderr", "").splitlines():
        if any(s in line for s in ("ModuleNotFoundError", "ImportError", "Could not find")):
            problems.append(line.strip())
            break
    if problems:
        raise BuildError(
            "the slim rootfs does not run the plugin as the image does: " + "; ".join(problems)
        )


def check_slim(
    client: Any, result: SlimResult, config: dict[str, Any], args: dict[str, Any], tag: str
) -> dict[str, Any]:
    """Import the slim rootfs as an image, run the probe in it and compare."""
    import docker.errors  # type: ignore[import-untyped,unused-ignore]

    repository, _, version = tag.rpartition(":")
    client.api.import_image_from_data(result.tar, repository=repository, tag=version)
    check = {**args, "mode": "check", "tar": "", "importable": result.importable}
    try:
        report, _ = run_probe(client, tag, config, check)
        return report
    finally:
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(tag, force=True)


def trace(
    client: Any,
    image: str,
    config: dict[str, Any],
    drivers: Iterable[type[Driver]],
    own: list[str],
    distributions: Iterable[str] = (),
    keep: Iterable[str] = (),
) -> tuple[dict[str, Any], dict[str, Any], SlimResult]:
    """Run the probe in the built image: its args, its report, the slim rootfs."""
    args = probe_args(config, list(drivers), own, "trace", distributions, keep)
    report, tar = run_probe(client, image, config, args)
    if report.get("keep_missing"):
        raise BuildError(
            "build.keep: "
            + "; ".join(f"{p!r} matches nothing in the image" for p in report["keep_missing"])
        )
    if tar is None:
        raise BuildError("the slim probe wrote no rootfs")
    return args, report, slim_result(tar, report)
