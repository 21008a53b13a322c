"""The Docker build context of a project, made by the builder.

The context is a tar of:

* the project's files, minus its ``.dockerignore`` and minus what never
  belongs in an image even when the project has no ``.dockerignore``: the
  bundle directory, ``.build/``, ``.git``, virtual environments (any
  directory holding a ``pyvenv.cfg``) and caches;
* ``.dpk/wheels/``: the wheelhouse (the runtime packages and the drivers'
  own dependencies), for an offline ``pip install --no-index``;
* ``.dpk/runtime/plugin/``: the kit's runtime, the very copy the builder
  runs with (the ``plugin`` package without ``plugin/bundle``);
* ``.dpk/app/``: the project's own packages (``build.packages``);
* ``.dpk/Dockerfile``: the project's Dockerfile or the kit's.

So a project needs nothing but its driver and ``plugin.toml``, and builds the
same from any directory.
"""

from __future__ import annotations

import os
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from ._errors import BuildError
from ._project import Project

__all__ = ["ALWAYS_EXCLUDED", "DOCKERFILE", "build_context", "context_files", "runtime_files"]

#: Never in the context, whatever the project's .dockerignore says.
ALWAYS_EXCLUDED = (
    ".build",
    ".dpk",
    ".git",
    ".venv",
    "venv",
    "**/__pycache__",
    "**/*.pyc",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".hypothesis",
    ".tox",
    ".nox",
    "*.egg-info",
)
DOCKERFILE = ".dpk/Dockerfile"
_SKIP_DIRS = {"__pycache__"}


def _venvs(root: Path) -> list[str]:
    """Virtual environments in the project (two levels deep), by any name."""
    found = []
    for first in root.iterdir():
        if not first.is_dir() or first.is_symlink():
            continue
        if (first / "pyvenv.cfg").exists():
            found.append(first.name)
            continue
        try:
            for second in first.iterdir():
                if second.is_dir() and (second / "pyvenv.cfg").exists():
                    found.append(f"{first.name}/{second.name}")
        except OSError:
            continue
    return found


def _dockerignore(root: Path) -> list[str]:
    path = root / ".dockerignore"
    if not path.exists():
        return []
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def context_files(project: Project) -> list[str]:
    """The project's files that go into the context (relative, sorted;
    directories come with them)."""
    from docker.utils.build import exclude_paths  # type: ignore[import-untyped,unused-ignore]

    root = project.root
    patterns = _dockerignore(root)
    # After the project's own patterns: a "!" line there cannot bring these back.
    patterns += [*ALWAYS_EXCLUDED, *_venvs(root)]
    output = os.path.relpath(project.bundle_dir, root)
    if not output.startswith(".."):
        patterns.append(output)
    paths = exclude_paths(str(root), patterns)
    return sorted(p for p in paths if os.path.islink(root / p) or not os.path.isdir(root / p))


def _tree(top: Path) -> Iterator[Path]:
    """Files under ``top`` (sorted), without bytecode caches."""
    for dirpath, dirs, files in os.walk(top):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        for name in sorted(files):
            if not name.endswith(".pyc"):
                yield Path(dirpath) / name


def runtime_files() -> Iterator[tuple[Path, str]]:
    """The kit's runtime, from the ``plugin`` package the builder runs:
    (file, path in the context)."""
    kit = Path(__file__).resolve().parent.parent
    for path in _tree(kit):
        rel = path.relative_to(kit)
        if rel.parts[0] == "bundle":
            continue
        yield path, f".dpk/runtime/plugin/{rel.as_posix()}"


def app_files(project: Project) -> Iterator[tuple[Path, str]]:
    """The project's own packages (or modules): (file, path in the context)."""
    for package in project.own_packages:
        directory = project.root / package
        module = project.root / f"{package}.py"
        if directory.is_dir():
            for path in _tree(directory):
                yield path, f".dpk/app/{path.relative_to(project.root).as_posix()}"
        elif module.is_file():
            yield module, f".dpk/app/{package}.py"
        else:
            raise BuildError(
                f"build.packages: no package {package}/ nor module {package}.py in {project.root}"
            )


def _add(tar: tarfile.TarFile, path: Path, arcname: str) -> None:
    info = tar.gettarinfo(str(path), arcname=arcname)
    if info is None:  # a socket
        return
    # No owners of the build host (times stay: bytecode checks them; the
    # daemon's build cache does not).
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if info.isfile():
        with path.open("rb") as f:
            tar.addfile(info, f)
    else:
        tar.addfile(info)


def build_context(
    project: Project, wheels: Path, extra: Iterable[tuple[Path, str]] = ()
) -> IO[bytes]:
    """The context as a tar in a temporary file (rewound), Dockerfile at
    ``DOCKERFILE``."""
    dockerfile = project.dockerfile_path
    if not dockerfile.is_file():
        raise BuildError(f"build.dockerfile: {dockerfile}: not found")
    out = tempfile.TemporaryFile()  # noqa: SIM115 (the caller closes it)
    with tarfile.open(fileobj=out, mode="w") as tar:
        for rel in context_files(project):
            _add(tar, project.root / rel, rel)
        for path in sorted(wheels.glob("*.whl")):
            _add(tar, path, f".dpk/wheels/{path.name}")
        for path, arcname in [*runtime_files(), *app_files(project), *extra]:
            _add(tar, path, arcname)
        _add(tar, dockerfile, DOCKERFILE)
    out.seek(0)
    return out
