"""The Docker build context the builder makes for a project in any directory."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

import plugin
from plugin.bundle import BuildError, load_project
from plugin.bundle._context import DOCKERFILE, build_context, context_files, runtime_files
from plugin.bundle._project import TEMPLATES

TOML = """\
[plugin]
name = "acme/vol"
drivers = ["acme.driver:Volumes"]
"""


def project_at(root: Path, toml: str = TOML) -> Path:
    (root / "acme").mkdir(parents=True)
    (root / "acme" / "__init__.py").write_text("")
    (root / "acme" / "driver.py").write_text("# the driver\n")
    (root / "plugin.toml").write_text(toml)
    return root


def clutter(root: Path) -> None:
    """What an author's directory holds besides the project."""
    for rel in (
        "rootfs-build/rootfs/usr/bin/python3",
        ".build/wheels/x.whl",
        ".git/HEAD",
        "acme/__pycache__/driver.cpython-311.pyc",
        ".pytest_cache/v",
        "env311/lib/python3.11/site-packages/big.py",
        "tools/venv-a/bin/python",
        ".venv/bin/python",
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    (root / "env311" / "pyvenv.cfg").write_text("home = /usr\n")
    (root / "tools" / "venv-a" / "pyvenv.cfg").write_text("home = /usr\n")
    (root / "tests").mkdir()
    (root / "tests" / "test_acme.py").write_text("")


def test_without_a_dockerignore_only_the_project_goes_in(tmp_path: Path) -> None:
    root = project_at(tmp_path / "p")
    clutter(root)
    assert context_files(load_project(root)) == [
        "acme/__init__.py",
        "acme/driver.py",
        "plugin.toml",
        "tests/test_acme.py",
    ]


def test_the_projects_dockerignore_is_applied_and_cannot_bring_back_the_bundle(
    tmp_path: Path,
) -> None:
    root = project_at(tmp_path / "p")
    clutter(root)
    (root / ".dockerignore").write_text("# ours\ntests\n!rootfs-build\n")
    assert context_files(load_project(root)) == [
        ".dockerignore",
        "acme/__init__.py",
        "acme/driver.py",
        "plugin.toml",
    ]


def test_another_output_directory_is_left_out_too(tmp_path: Path) -> None:
    root = project_at(tmp_path / "p", TOML + '[build]\noutput = "out/bundle"\n')
    (root / "out" / "bundle").mkdir(parents=True)
    (root / "out" / "bundle" / "config.json").write_text("{}")
    assert "out/bundle/config.json" not in context_files(load_project(root))


def test_the_runtime_is_the_kit_the_builder_runs_without_the_builder() -> None:
    files = dict(runtime_files())
    kit = Path(plugin.__file__).resolve().parent
    assert files[kit / "volume.py"] == ".dpk/runtime/plugin/volume.py"
    assert files[kit / "__main__.py"] == ".dpk/runtime/plugin/__main__.py"
    assert not [name for name in files.values() if "/bundle/" in name or name.endswith(".pyc")]


def members(root: Path, wheels: Path) -> dict[str, bytes]:
    with build_context(load_project(root), wheels) as f, tarfile.open(fileobj=f) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar
            if m.isfile()
        }


def test_the_context_holds_project_wheels_runtime_app_and_dockerfile(tmp_path: Path) -> None:
    root = project_at(tmp_path / "p")
    clutter(root)
    wheels = root / ".build" / "wheels"
    got = members(root, wheels)
    assert got[DOCKERFILE] == (TEMPLATES / "Dockerfile").read_bytes()
    assert got[".dpk/wheels/x.whl"] == b"x"
    assert got[".dpk/app/acme/driver.py"] == b"# the driver\n"
    assert ".dpk/app/acme/__pycache__/driver.cpython-311.pyc" not in got
    assert ".dpk/runtime/plugin/_app.py" in got
    assert "plugin.toml" in got
    assert not [n for n in got if n.startswith(("rootfs-build", ".build", ".git", "env311"))]


def test_the_projects_own_dockerfile_wins(tmp_path: Path) -> None:
    root = project_at(tmp_path / "p")
    (root / "Dockerfile").write_text("FROM scratch\n")
    assert members(root, tmp_path)[DOCKERFILE] == b"FROM scratch\n"


def test_a_missing_dockerfile_or_package(tmp_path: Path) -> None:
    root = project_at(tmp_path / "p", TOML + '[build]\ndockerfile = "no/Dockerfile"\n')
    with pytest.raises(BuildError) as exc:
        build_context(load_project(root), tmp_path)
    assert str(exc.value) == f"build.dockerfile: {root}/no/Dockerfile: not found"
    root = project_at(tmp_path / "q", TOML + '[build]\npackages = ["acme", "helpers"]\n')
    with pytest.raises(BuildError) as exc:
        build_context(load_project(root), tmp_path)
    assert str(exc.value) == f"build.packages: no package helpers/ nor module helpers.py in {root}"


def test_a_module_as_a_package(tmp_path: Path) -> None:
    root = project_at(tmp_path / "p", TOML + '[build]\npackages = ["acme", "helpers"]\n')
    (root / "helpers.py").write_text("X = 1\n")
    assert members(root, tmp_path)[".dpk/app/helpers.py"] == b"X = 1\n"
