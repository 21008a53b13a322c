"""The slim step's pure parts: the walk-through, the entrypoint, the comparison,
and the probe's ELF reader (run on this host's own interpreter)."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from localvol.driver import LocalVolumes

from plugin.bundle._errors import BuildError
from plugin.bundle._slim import PROBE, _interpreter, compare, probe_args, probe_calls
from plugin.volume import VolumeDriver


def test_the_walk_through_calls_everything_twice_creating_first_removing_last() -> None:
    calls, target = probe_calls([LocalVolumes])
    assert calls[0] == ["POST", "/Plugin.Activate", ""]
    volume = [c for c in calls if c[0] == "POST" and c[2].endswith("\n")][:16]
    paths = [c[1] for c in volume]
    assert paths[:8] == paths[8:]  # two passes
    assert paths[0] == "/VolumeDriver.Create" and paths[7] == "/VolumeDriver.Remove"
    assert sorted(paths[:8]) == sorted(f"/VolumeDriver.{e.name}" for e in VolumeDriver.endpoints)
    bodies = {c[1]: json.loads(c[2]) for c in volume}
    assert bodies["/VolumeDriver.Create"] == {"Name": "dpk-probe", "Opts": {}}
    assert bodies["/VolumeDriver.Mount"] == {"Name": "dpk-probe", "ID": "dpk-probe"}
    assert bodies["/VolumeDriver.List"] == {}
    # The SDK's error paths: bad JSON, wrong types, invalid UTF-8, a trailing
    # slash (404), another method (405), an unknown call.
    assert target == "/VolumeDriver.Create"
    errors = calls[17:]
    assert ["POST", target, "{not json"] in errors
    assert ["POST", target, '"\xff\xfe"'] in errors
    assert ["POST", target + "/", "{}"] in errors
    assert ["GET", "/VolumeDriver.Create", ""] in errors
    assert calls[-1] == ["POST", "/NoSuch.Call", "{}"]


@pytest.mark.parametrize(
    ("entrypoint", "expected"),
    [
        (["/usr/bin/python3", "-u", "-m", "plugin", "--socket", "s"], (["-u"], True, "plugin")),
        (
            ["python3", "-X", "importtime", "-I", "app.py", "x"],
            (["-X", "importtime", "-I"], False, "app.py"),
        ),
    ],
)
def test_the_entrypoint_is_split_like_the_interpreter_does(
    entrypoint: list[str], expected: tuple[Any, ...]
) -> None:
    assert _interpreter(entrypoint)[:3] == expected


def test_only_python_entrypoints_can_be_slimmed() -> None:
    with pytest.raises(BuildError, match="not a Python interpreter"):
        _interpreter(["/docker-volume-sshfs"])
    with pytest.raises(BuildError, match="cannot tell what"):
        _interpreter(["python3", "-c", "print()"])


def test_probe_args_follow_the_config() -> None:
    config = {
        "entrypoint": ["/usr/bin/python3", "-u", "-m", "plugin", "--socket", "lv.sock", "r:D"],
        "interface": {"socket": "lv.sock", "types": ["docker.volumedriver/1.0"]},
        "mounts": [{"name": "data", "destination": "/data"}],
        "propagatedMount": "/mnt/volumes",
        "args": {"value": ["--log-level", "debug"]},
    }
    args = probe_args(config, [LocalVolumes], ["plugin", "reference"], "trace")
    assert args["module"] is True and args["run"] == "plugin"
    assert args["args"] == ["--socket", "lv.sock", "r:D", "--log-level", "debug"]
    assert args["socket"] == "/run/docker/plugins/lv.sock"
    assert args["dirs"] == ["/run/docker/plugins", "/data", "/mnt/volumes"]
    assert {"/data", "/mnt/volumes", "/proc", "/tmp"} <= set(args["skip"])
    assert (args["distributions"], args["keep"], args["stdlib_zip"]) == ([], [], True)
    more = probe_args(config, [LocalVolumes], ["plugin"], "trace", ["uvicorn", "anyio"], ["/x/*"])
    assert (more["distributions"], more["keep"]) == (["anyio", "uvicorn"], ["/x/*"])


def _report(modules: list[str], answers: list[Any], stderr: str = "") -> dict[str, Any]:
    return {"modules": modules, "answers": answers, "stderr": stderr}


def test_compare_names_what_the_slim_rootfs_does_differently() -> None:
    ok = [["POST", "/VolumeDriver.Get", [200, '{"Volume": {"CreatedAt": "1"}}']]]
    same = [["POST", "/VolumeDriver.Get", [200, '{"Volume": {"CreatedAt": "2"}}']]]
    compare(_report(["a", "b"], ok), _report(["b", "a"], same))  # times may differ
    with pytest.raises(BuildError, match="modules not loaded: b"):
        compare(_report(["a", "b"], ok), _report(["a"], ok))
    failed = [["POST", "/VolumeDriver.Get", [500, '{"Err": "unexpected ImportError"}']]]
    with pytest.raises(BuildError, match="different answers"):
        compare(_report(["a"], ok), _report(["a"], failed))
    with pytest.raises(BuildError, match="ModuleNotFoundError: No module named 'x'"):
        compare(_report(["a"], ok), _report(["a"], ok, "ModuleNotFoundError: No module named 'x'"))


def test_compare_names_the_modules_that_import_in_the_image_but_not_in_the_slim_rootfs() -> None:
    ok = [["POST", "/VolumeDriver.Get", [200, "{}"]]]
    traced = {**_report(["a"], ok), "importable": ["decimal", "json", "sqlite3"]}
    checked = {
        **_report(["a"], ok),
        "importable": ["json"],
        "not_importable": {"sqlite3": "ImportError: libsqlite3.so.0: cannot open shared object"},
    }
    with pytest.raises(BuildError) as exc:
        compare(traced, checked)
    assert str(exc.value) == (
        "the slim rootfs does not run the plugin as the image does: 2 modules importable in "
        "the image do not import from it: decimal (not tried), sqlite3 (ImportError: "
        "libsqlite3.so.0: cannot open shared object)"
    )
    compare(traced, {**checked, "importable": ["decimal", "json", "sqlite3"]})


def test_the_probes_elf_reader_finds_what_the_interpreter_links(tmp_path: Path) -> None:
    # The probe is a script for the image's Python; load its functions here
    # without running it (it installs its audit hook only when run).
    probe = runpy.run_path(str(PROBE), run_name="dpk_probe_under_test")
    import struct

    needed, _, interp = probe["_elf_needs"](sys.executable, struct)
    # The dynamic loader's own account of the same file: every library the
    # reader finds is one the loader loads, and libc is among them.
    ldd = subprocess.run(["ldd", sys.executable], capture_output=True, text=True, check=True)
    loaded = {line.split()[0] for line in ldd.stdout.splitlines() if line.strip()}
    assert "libc.so.6" in needed
    assert set(needed) <= loaded, (needed, ldd.stdout)
    assert interp is not None and interp.startswith("/")
    assert os.path.basename(interp) in {os.path.basename(name) for name in loaded}
    with pytest.raises(ValueError, match="not ELF"):
        probe["_elf_needs"](str(PROBE), struct)


def test_the_rootfs_is_exported_again_only_when_what_it_came_from_changes() -> None:
    import dataclasses

    from plugin.bundle._builder import _export_stamp
    from plugin.bundle._project import load_project

    project = load_project(Path(__file__).resolve().parents[2] / "reference" / "localvol")
    config = {"entrypoint": ["python3", "-m", "plugin"], "env": []}
    stamp = _export_stamp(project, "sha256:1", config)
    assert stamp == _export_stamp(project, "sha256:1", dict(config))
    assert stamp != _export_stamp(project, "sha256:2", config)
    assert stamp != _export_stamp(project, "sha256:1", {**config, "env": [{"name": "X"}]})
    other = dataclasses.replace(project, drivers=("other.mod:Driver",))
    assert stamp != _export_stamp(other, "sha256:1", config)
    unslimmed = dataclasses.replace(project, slim=False)
    assert _export_stamp(unslimmed, "sha256:1", None) == {"image": "sha256:1", "slim": False}


def _probe() -> dict[str, Any]:
    return runpy.run_path(str(PROBE), run_name="dpk_probe_under_test")


def _sections(data: bytes) -> list[str]:
    """Section names of a 64-bit little-endian ELF file."""
    import struct

    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    strtab = headers[shstrndx][4]
    return [data[strtab + h[0] : data.index(b"\0", strtab + h[0])].decode() for h in headers]


def test_debug_sections_are_stripped_and_the_module_still_loads(tmp_path: Path) -> None:
    """httptools' wheel ships its parser with DWARF (1 MB of 1.1 MB)."""
    import shutil
    import struct
    import subprocess

    import httptools

    copy = tmp_path / "httptools"
    shutil.copytree(Path(httptools.__file__).parent, copy)
    (parser,) = copy.glob("parser/parser.cpython-*.so")
    data = parser.read_bytes()
    assert ".debug_info" in _sections(data)  # what this test relies on
    smaller = _probe()["_strip_debug"](data, struct)
    assert smaller is not None and len(smaller) < len(data) // 3
    names = _sections(smaller)
    assert [n for n in _sections(data) if not n.startswith(".debug")] == names
    assert ".symtab" in names  # symbols stay
    assert smaller[64:160_000] == data[64:160_000]  # what is loaded stays, byte for byte
    assert _probe()["_strip_debug"](smaller, struct) is None  # nothing left to strip
    assert _probe()["_strip_debug"](b"#!/bin/sh\n", struct) is None
    parser.write_bytes(smaller)
    code = (
        "import httptools\n"
        "class P:\n"
        "    def on_url(self, url): print(url.decode())\n"
        "httptools.HttpRequestParser(P()).feed_data(b'GET /x HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n')\n"
        "print(httptools.__file__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    assert out == f"/x\n{copy / '__init__.py'}\n"


PROBE_ON_THIS_HOST = """
import json, sys, runpy
probe = runpy.run_path(sys.argv[1], run_name="dpk_probe_under_test")
args = json.loads(sys.argv[2])
probe["ARGS"].update(args)
import email.utils  # what "the plugin" loaded: a part of a package
loaded = {}
for name, m in list(sys.modules.items()):
    spec = getattr(m, "__spec__", None)
    origin = getattr(spec, "origin", None) or getattr(m, "__file__", None)
    loaded[name] = [origin, getattr(spec, "cached", None), list(getattr(m, "__path__", None) or [])]
installed, _ = probe["_distributions"]()
sources = [probe["_stdlib"]()] + [f for files in installed.values() for f in files]
candidates = probe["_candidates"]()
everything = probe["_importable"](candidates, sources)
needs = probe["_needs"](loaded, probe["_maps"](), [], everything)
report = {"importable": everything["importable"]}
report.update(needs)
# What it imported before it listened: email.utils, stored in the zip.
probe["_write_tar"](report, {}, needs, [loaded["email.utils"][0]])
out = {"candidates": candidates, "everything": everything, "needs": needs, "report": report}
out.update(zip=probe["_stdlib_zip_path"](), stdlib=probe["_stdlib"]())
print(json.dumps(out))
"""


def test_the_probe_selects_every_importable_module_with_its_libraries(tmp_path: Path) -> None:
    """The trace's selection, run on this host's interpreter: every module of
    the standard library and of a declared distribution, zipped or as files;
    the exclusions left out; extension modules with their libraries; keep."""
    import subprocess
    import tarfile
    import zipfile

    kept = tmp_path / "kept" / "data.txt"
    kept.parent.mkdir()
    kept.write_text("kept\n")
    args = {
        "tar": str(tmp_path / "slim.tar"),
        "distributions": ["starlette", "no-such-distribution"],
        "keep": [str(tmp_path / "kept" / "*.txt"), str(tmp_path / "nothing-*")],
        "stdlib_zip": True,
        "skip": ["/proc", "/sys", "/dev", "/run", "/tmp"],
        "programs": [],
        "extra": [],
        "keep_dirs": [],
    }
    proc = subprocess.run(
        [sys.executable, "-c", PROBE_ON_THIS_HOST, str(PROBE), json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    candidates, needs = out["candidates"], out["needs"]
    importable = set(out["everything"]["importable"])
    stdlib, zip_path = out["stdlib"], out["zip"]
    # Every module, but for the test suites and what cannot matter.
    assert {
        "sqlite3",
        "decimal",
        "ctypes",
        "zoneinfo",
        "email.mime.text",
        "json.tool",
    } <= importable
    assert {"starlette", "starlette.routing"} <= importable
    assert not [c for c in candidates if c.split(".")[0] in ("test", "idlelib", "curses", "nis")]
    assert not [c for c in candidates if ".test." in f".{c}." or c.startswith("_test")]
    assert needs["missing_distributions"] == ["no-such-distribution"]
    assert needs["keep_missing"] == [str(tmp_path / "nothing-*")]
    # Pure Python into the zip, at the interpreter's own zip path.
    assert zip_path.endswith(".zip")
    zipped = {os.path.relpath(source, root) for root, source in needs["stdlib_zip"]}
    assert {"json/__init__.py", "email/utils.py", "decimal.py", "starlette/routing.py"} <= zipped
    with tarfile.open(args["tar"]) as tar:
        names = set(tar.getnames())
        member = tar.extractfile(zip_path.lstrip("/"))
        assert member is not None
        with zipfile.ZipFile(member) as z:
            kinds = {info.filename: info.compress_type for info in z.infolist()}
    inside = set(kinds)
    assert {"json/__init__.pyc", "email/utils.pyc", "starlette/routing.pyc"} <= inside
    # Stored what is read at every start, before the plugin listens; deflated the rest.
    assert [n for n, kind in kinds.items() if kind == zipfile.ZIP_STORED] == ["email/utils.pyc"]
    assert not [n for n in inside if n.endswith(".py")]  # no source was read at run time
    # Extension modules as files, with the libraries they link.
    dynload = os.path.join(stdlib, "lib-dynload").lstrip("/")
    assert [n for n in names if n.startswith(f"{dynload}/_sqlite3.")]
    assert [n for n in names if "/libsqlite3.so" in n]
    assert not [n for n in names if f"{dynload}/_curses" in n or f"{dynload}/_testcapi" in n]
    assert str(kept).lstrip("/") in names


def test_the_probe_notes_the_modules_loaded_when_the_plugin_binds_its_socket() -> None:
    """The first socket.bind the plugin makes: what it imported by then is
    imported at every start, before it listens (stored in the zip)."""
    probe = _probe()
    probe["_audit"]("socket.connect", (None, "/run/x.sock"))
    assert probe["at_bind"] == []
    probe["_audit"]("socket.bind", (None, "/run/docker/plugins/x.sock"))
    first = list(probe["at_bind"])
    assert {"sys", "os", "json"} <= set(first)
    probe["_audit"]("socket.bind", (None, "/run/docker/plugins/y.sock"))
    assert probe["at_bind"] == first  # the first bind only


def test_a_module_loaded_on_first_use_is_not_loaded_at_start() -> None:
    import importlib.util
    import types

    from plugin._defer import defer

    probe = _probe()
    assert not probe["_not_run"](json) and not probe["_not_run"](sys)
    spec = importlib.util.find_spec("textwrap")
    assert spec is not None and spec.loader is not None
    made = importlib.util.module_from_spec(spec)
    assert probe["_not_run"](made)
    spec.loader.exec_module(made)
    assert not probe["_not_run"](made)
    sys.modules.pop("colorsys", None)
    defer("colorsys")
    try:
        deferred = sys.modules["colorsys"]
        assert probe["_not_run"](deferred)
        assert deferred.rgb_to_hsv(1, 0, 0) == (0.0, 1.0, 1)  # used: loaded
        assert not probe["_not_run"](deferred) and type(deferred) is types.ModuleType
    finally:
        sys.modules.pop("colorsys", None)


DOCUMENTED = '''"""The module's docstring."""
import textwrap

__all__ = ["Documented", "shared", "checked", "gen", "coro"]


class Documented:
    """A class's docstring."""

    kind = "plain"

    def method(self):
        """A method's docstring."""
        return [x * 2 for x in (1, 2)], (lambda: "lambda")()


class Bare:
    kind = "bare"


def shared():
    """same text"""
    return "same text"


def checked(x):
    """Asserts stay."""
    assert x > 0, "x must be positive"
    return textwrap.dedent("  ok")


def gen():
    """A generator's docstring."""
    yield "a"


async def coro():
    """A coroutine's docstring."""
    return "c"
'''


def _pyc(source: str, name: str) -> bytes:
    import importlib.util
    import marshal

    code = compile(source, name, "exec", dont_inherit=True)
    return importlib.util.MAGIC_NUMBER + b"\0" * 12 + marshal.dumps(code)


def _run(pyc: bytes, name: str) -> dict[str, Any]:
    import marshal

    namespace: dict[str, Any] = {"__name__": name}
    exec(marshal.loads(pyc[16:]), namespace)
    return namespace


def test_the_standard_librarys_docstrings_are_left_out_and_nothing_else() -> None:
    import asyncio

    pyc = _pyc(DOCUMENTED, "documented.py")
    smaller = _probe()["_without_docstrings"](pyc)
    assert smaller[:16] == pyc[:16] and len(smaller) < len(pyc)
    before, after = _run(pyc, "documented"), _run(smaller, "documented")
    assert before["__doc__"] == "The module's docstring."
    assert after["__doc__"] is None
    docs = [after[n].__doc__ for n in ("Documented", "checked", "gen", "coro")]
    assert [*docs, after["Documented"].method.__doc__] == [None] * 5
    # What the code does, asserts included, is as before.
    for ns in (before, after):
        assert ns["Documented"]().method() == ([2, 4], "lambda")
        assert (ns["Documented"].kind, ns["Bare"].kind, ns["Bare"].__doc__) == (
            "plain",
            "bare",
            None,
        )
        assert ns["checked"](1) == "ok" and list(ns["gen"]()) == ["a"]
        assert asyncio.run(ns["coro"]()) == "c"
        with pytest.raises(AssertionError, match="x must be positive"):
            ns["checked"](0)
        assert ns["__all__"] == ["Documented", "shared", "checked", "gen", "coro"]
    # A docstring the code also uses as a value stays, and so the value.
    assert after["shared"]() == "same text" and after["shared"].__doc__ == "same text"
    assert _probe()["_without_docstrings"](smaller) == smaller  # nothing left


def test_a_standard_library_module_without_docstrings_works() -> None:
    import inspect
    import textwrap

    source = Path(textwrap.__file__).read_text()
    probe = _probe()
    smaller = probe["_without_docstrings"](_pyc(source, textwrap.__file__))
    ns = _run(smaller, "textwrap_without_docstrings")
    assert ns["__doc__"] is None and ns["dedent"].__doc__ is None
    assert ns["TextWrapper"].__doc__ is None and inspect.getdoc(ns["fill"]) is None
    text = "  one two three four five six seven eight nine ten\n"
    assert ns["dedent"](text) == textwrap.dedent(text)
    assert ns["fill"](text, width=12) == textwrap.fill(text, width=12)


def test_what_is_not_bytecode_is_left_as_it_is() -> None:
    import importlib.util
    import marshal

    strip = _probe()["_without_docstrings"]
    not_code = importlib.util.MAGIC_NUMBER + b"\0" * 12 + marshal.dumps(["a", "list"])
    for data in (b"", b"short", not_code, _pyc(DOCUMENTED, "x.py")[:40]):
        assert strip(data) == data


def test_only_the_standard_librarys_modules_count_as_its_own() -> None:
    import textwrap

    import uvicorn

    probe = _probe()
    assert probe["_stdlib_module"](textwrap.__file__)
    assert not probe["_stdlib_module"](uvicorn.__file__)  # site-packages, below the stdlib
    assert not probe["_stdlib_module"]("/opt/plugin/site/starlette/routing.py")
