"""``docker-plugin-kit init``: a project that works as is, for every type."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from plugin import __version__
from plugin._requirements import requirements
from plugin.bundle import ProjectError, load_project
from plugin.bundle.__main__ import main
from plugin.bundle._init import TYPES, init_project, project_names
from plugin.bundle._project import KEYS
from plugin.bundle._rootfs import load_drivers

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = {
    "volume": [
        ".dockerignore",
        ".github/workflows/ci.yml",
        ".github/workflows/publish.yml",
        ".gitignore",
        "Makefile",
        "README.md",
        "conftest.py",
        "plugin.toml",
        "tests/test_myvol.py",
        "myvol/__init__.py",
        "myvol/driver.py",
    ],
    "network": [
        ".dockerignore",
        ".github/workflows/ci.yml",
        ".github/workflows/publish.yml",
        ".gitignore",
        "Dockerfile",
        "Makefile",
        "README.md",
        "conftest.py",
        "plugin.toml",
        "tests/test_myvol.py",
        "myvol/__init__.py",
        "myvol/driver.py",
        "myvol/host.py",
    ],
}
EXPECTED["ipam"] = EXPECTED["volume"]
EXPECTED["logging"] = EXPECTED["volume"]
EXPECTED["metrics"] = EXPECTED["volume"]
# The same files as a volume project: only the driver and its tests differ.
EXPECTED["authz"] = EXPECTED["secrets"] = EXPECTED["volume"]


def error(directory: Path, kind: str = "volume", **kwargs: object) -> str:
    with pytest.raises(ProjectError) as exc:
        init_project(directory, kind, **kwargs)  # type: ignore[arg-type]
    return str(exc.value)


def test_every_type_has_its_expected_files() -> None:
    assert set(TYPES) == set(EXPECTED)


@pytest.fixture
def fresh_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each project's package is imported anew (every type's is ``myvol``)."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in [m for m in sys.modules if m == "myvol" or m.startswith("myvol.")]:
        monkeypatch.delitem(sys.modules, name)


@pytest.mark.parametrize("kind", sorted(TYPES))
def test_a_new_project_loads_and_its_tests_pass(
    tmp_path: Path, kind: str, fresh_imports: None
) -> None:
    root = tmp_path / "myvol"
    result = init_project(root, kind)
    assert sorted(result.written) == sorted(EXPECTED[kind])
    assert (result.name, result.package, result.kept) == ("myvol", "myvol", [])
    project = load_project(root)
    assert project.name == "myvol:latest"
    assert project.socket == "myvol.sock"
    assert project.slim is True
    assert project.keep == TYPES[kind].keep
    # The drivers load and declare what the daemon needs of their type.
    drivers = load_drivers(project)
    assert requirements(drivers).interface_types == (drivers[0].capability,)
    # Its own tests pass, run from elsewhere as `make test` runs them.
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"^\d+ passed", proc.stdout.splitlines()[-1])


@pytest.mark.parametrize("kind", sorted(TYPES))
def test_the_project_reads_as_its_authors_own(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "myvol"
    init_project(root, kind)
    for path in root.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert "[[" not in text and "[%" not in text, path
            for leak in ("reference/", "plugin/bundle", "/work/", "localvol", str(ROOT)):
                assert leak not in text, f"{path} mentions {leak}"


def test_the_scaffold_shows_every_key_of_plugin_toml(tmp_path: Path) -> None:
    init_project(tmp_path / "myvol", "volume")
    text = (tmp_path / "myvol" / "plugin.toml").read_text()
    tables = re.findall(r"^\[(\w+)\]$", text, re.M)
    assert tables == ["plugin", "build", "init"]
    for key in KEYS:
        assert re.search(rf"^(# )?{key.name} = ", text, re.M), key.dotted


def test_the_choices_and_the_kit_version_are_recorded(tmp_path: Path) -> None:
    init_project(tmp_path / "d", "volume", name="acme/tmp-vol")
    text = (tmp_path / "d" / "plugin.toml").read_text()
    assert f'kit_version = "{__version__}"' in text
    assert 'type = "volume"\nname = "acme/tmp-vol"\n' in text
    project = load_project(tmp_path / "d")
    assert project.name == "acme/tmp-vol:latest"
    assert project.drivers == ("tmp_vol.driver:TmpVolVolumes",)
    assert project.socket == "tmp_vol.sock"
    assert "NAME ?= acme/tmp-vol\nTAG ?= latest\n" in (tmp_path / "d" / "Makefile").read_text()
    workflow = (tmp_path / "d" / ".github" / "workflows" / "ci.yml").read_text()
    assert f'"docker-plugin-kit[bundle]=={__version__}"' in workflow
    assert "run: make test" in workflow


def test_readme_license_and_git_may_be_there(tmp_path: Path) -> None:
    root = tmp_path / "myvol"
    (root / ".git").mkdir(parents=True)
    (root / ".github").mkdir()
    (root / "README.md").write_text("mine\n")
    (root / "LICENSE").write_text("MIT\n")
    result = init_project(root, "volume")
    assert result.kept == ["README.md"]
    assert "README.md" not in result.written
    assert (root / "README.md").read_text() == "mine\n"
    assert (root / "LICENSE").read_text() == "MIT\n"
    assert (root / ".github" / "workflows" / "ci.yml").exists()


def test_a_non_empty_directory_is_refused_unless_forced(tmp_path: Path) -> None:
    root = tmp_path / "myvol"
    (root / "notes").mkdir(parents=True)
    (root / "data.txt").write_text("x")
    assert error(root) == (
        f"init: {root} is not empty: data.txt, notes/ (init writes a new project next to a "
        "README, a LICENSE, .git and .github only; --force writes it anyway)"
    )
    assert not (root / "plugin.toml").exists()
    init_project(root, "volume", force=True)
    assert (root / "data.txt").read_text() == "x"
    assert (root / "plugin.toml").exists()


def test_collisions_are_listed_and_never_overwritten(tmp_path: Path) -> None:
    root = tmp_path / "myvol"
    (root / ".github" / "workflows").mkdir(parents=True)
    (root / ".github" / "workflows" / "ci.yml").write_text("mine\n")
    assert error(root) == (
        f"init: {root} already has .github/workflows/ci.yml (init never overwrites a file; "
        "--force does)"
    )
    init_project(tmp_path / "again", "volume", name="myvol")
    assert error(tmp_path / "again", name="myvol") == (
        f"init: {tmp_path / 'again'} already has .dockerignore, .github/workflows/ci.yml, "
        ".github/workflows/publish.yml, .gitignore, Makefile, conftest.py, myvol/__init__.py, "
        "myvol/driver.py, plugin.toml, tests/test_myvol.py (init never overwrites a file; "
        "--force does)"
    )
    init_project(root, "volume", force=True, name="myvol")
    assert (root / ".github" / "workflows" / "ci.yml").read_text() != "mine\n"


def test_bad_names_and_types(tmp_path: Path) -> None:
    assert error(tmp_path / "x", "storage") == (
        "init: unknown plugin type 'storage' (known: authz, ipam, logging, metrics, network, "
        "secrets, volume)"
    )
    assert error(tmp_path / "x", name="Acme") == (
        "init: invalid plugin name 'Acme': use an image-style reference in lower case, e.g. "
        "acme/myplugin:1.0 or localhost:5000/acme/myplugin"
    )
    assert error(tmp_path / "x", name="acme/1vol") == (
        "init: '1vol' does not make a Python package name; give --name (letters, digits, - and "
        "_, starting with a letter)"
    )
    assert error(tmp_path / "x", name="a" * 19) == (
        "init: the socket aaaaaaaaaaaaaaaaaaa.sock would be 24 characters; the daemon's limit "
        "is 23: give a shorter --name (at most 18 characters)"
    )
    assert error(tmp_path / "--bad--") == (
        "init: invalid plugin name '--bad--': use an image-style reference in lower case, e.g. "
        "acme/myplugin:1.0 or localhost:5000/acme/myplugin (from the directory's name; give "
        "--name)"
    )
    (tmp_path / "file").write_text("")
    assert error(tmp_path / "file") == f"init: {tmp_path / 'file'} exists and is not a directory"


def test_names_from_the_directory(tmp_path: Path) -> None:
    assert project_names(tmp_path / "My Vol", None) == ("my-vol", "my_vol")
    assert project_names(tmp_path / "x", "registry:5000/acme/fast-vol:2") == (
        "registry:5000/acme/fast-vol:2",
        "fast_vol",
    )


def test_the_command(tmp_path: Path) -> None:
    out = io.StringIO()
    assert main(["init", str(tmp_path / "myvol"), "--type", "volume"], out=out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == "    wrote Makefile"
    assert lines[-3:] == [
        f"A myvol plugin project is in {tmp_path / 'myvol'}. Next:",
        f"  cd {tmp_path / 'myvol'} && make plugin   # build it and enable it on the local "
        "Docker daemon",
        "  make test     # its tests, in-process",
    ]
    out = io.StringIO()
    assert main(["init", str(tmp_path / "myvol"), "--type", "volume"], out=out) == 1
    assert out.getvalue().startswith(f"error: init: {tmp_path / 'myvol'} already has ")


def test_the_template_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["template", "Dockerfile"], out=io.StringIO()) == 0
    assert capsys.readouterr().out == (ROOT / "Dockerfile").read_text()


def test_the_makefile_has_the_targets_authors_know(tmp_path: Path) -> None:
    init_project(tmp_path / "myvol", "volume")
    makefile = (tmp_path / "myvol" / "Makefile").read_text()
    targets = re.findall(r"^([a-z]+):", makefile, re.M)
    assert targets == ["plugin", "build", "enable", "disable", "dev", "test", "push", "clean"]
    dry = subprocess.run(
        ["make", "-n", "plugin", "push", "NAME=registry.example.com/acme/myvol", "TAG=1.0-amd64"],
        cwd=tmp_path / "myvol",
        capture_output=True,
        text=True,
        check=True,
    )
    assert dry.stdout.splitlines() == [
        "docker-plugin-kit --name registry.example.com/acme/myvol:1.0-amd64 plugin",
        "docker-plugin-kit --name registry.example.com/acme/myvol:1.0-amd64 push",
    ]
    dry = subprocess.run(
        ["make", "-n", "dev", "SET=data.source=/srv/v LOG_LEVEL=debug"],
        cwd=tmp_path / "myvol",
        capture_output=True,
        text=True,
        check=True,
    )
    assert dry.stdout.splitlines() == [
        "docker-plugin-kit --name myvol:latest dev data.source=/srv/v LOG_LEVEL=debug"
    ]
