"""The rootfs: base image, wheelhouse, ``docker build``, export into the bundle."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, suppress
from pathlib import Path
from typing import Any

from .._driver import Driver
from ._config import resolve_in_rootfs
from ._context import DOCKERFILE, build_context
from ._errors import BuildError, engine_errors
from ._project import Project

__all__ = [
    "DRIVERS_FILE",
    "ImageRemovedUnderBuild",
    "MissingOnHost",
    "build_image",
    "docker_errors",
    "ensure_base_image",
    "export_rootfs",
    "load_drivers",
    "make_dirs",
    "remove_replaced_images",
    "run_script",
    "runtime_requirements",
    "unpack",
    "wheelhouse",
]

Report = Callable[[str], None]
#: The kit's helper scripts (base image, local registry), shipped in the package.
SCRIPTS = Path(__file__).with_name("scripts")


def docker_errors(what: str) -> AbstractContextManager[None]:
    """The daemon's refusals (and a lost connection) as BuildError."""
    return engine_errors(what, BuildError)


#: The kit's own runtime packages; pinned to the versions the host has (the
#: ones the tests ran against). httptools is uvicorn's C HTTP parser, which
#: uvicorn picks when it is there: half the latency of its pure-Python h11
#: for 1.6 MB (bench/). uvloop, its other speed-up, is left out: 14 MB.
RUNTIME_PACKAGES = ("starlette", "uvicorn", "httptools")


class MissingOnHost(BuildError):
    """A driver imports a module this host does not have (a dependency that
    is only in the rootfs); ``module`` names it."""

    def __init__(self, message: str, module: str) -> None:
        super().__init__(message)
        self.module = module


#: In the bundle directory: the drivers' declarations as read in the built
#: image, for the commands that need them after the build (render, --strict).
DRIVERS_FILE = ".drivers.json"


def load_drivers(project: Project, bundle: Path | None = None) -> list[type[Driver]]:
    """Import the driver classes named in plugin.toml on the build host.

    When a driver needs a module this host does not have (not one of the
    project's own), the declarations a build read in the image stand in
    when ``bundle`` holds them (``.drivers.json``); else MissingOnHost says
    what is missing."""
    root = str(project.root)
    if root not in sys.path:
        sys.path.insert(0, root)
    from .._driver import load_driver_class

    drivers = []
    own = {"plugin", *project.own_packages}
    for spec in project.drivers:
        try:
            drivers.append(load_driver_class(spec))
        except ModuleNotFoundError as exc:
            missing = (exc.name or "").split(".")[0]
            if not missing or missing in own:
                raise BuildError(f"plugin.drivers: cannot load {spec}: {exc}") from None
            saved = bundle / DRIVERS_FILE if bundle is not None else None
            if saved is not None and saved.exists():
                from ._describe import stand_ins

                return stand_ins(json.loads(saved.read_text()))
            raise MissingOnHost(
                f"plugin.drivers: cannot load {spec} here: {exc} (a dependency of the driver, "
                "not installed on this host: `build` reads the drivers in the built image, "
                "where plugin.toml's [build] requirements are installed)",
                missing,
            ) from None
        except Exception as exc:
            raise BuildError(
                f"plugin.drivers: cannot load {spec}: {type(exc).__name__}: {exc}"
            ) from None
    return drivers


def _image(client: Any, name: str) -> Any | None:
    import docker.errors  # type: ignore[import-untyped,unused-ignore]

    try:
        return client.images.get(name)
    except docker.errors.ImageNotFound:
        return None


def ensure_base_image(client: Any, project: Project, report: Report) -> str:
    """The image to build FROM: the configured base if present or pullable,
    else the fallback made from Debian's packages (``make-base-image``)."""
    import docker.errors  # type: ignore[import-untyped,unused-ignore]

    base = project.base_image
    if _image(client, base) is not None:
        return base
    if _image(client, project.fallback_base_image) is not None:
        report(
            f"{base} is not here; using {project.fallback_base_image} (made from Debian's packages)"
        )
        return project.fallback_base_image
    report(f"pulling {base}")
    try:
        client.images.pull(base)
        return base
    except docker.errors.APIError as exc:
        reason = str(getattr(exc, "explanation", None) or exc).splitlines()[0][:200]
    report(f"{base} cannot be pulled ({reason})")
    report(
        f"making {project.fallback_base_image} from Debian's packages instead "
        "(docker-plugin-kit base-image, about a minute)"
    )
    proc = subprocess.run(
        ["bash", str(SCRIPTS / "make-base-image"), project.fallback_base_image],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise BuildError("making the base image failed: " + " | ".join(tail))
    return project.fallback_base_image


def run_script(name: str, args: list[str]) -> None:
    """Run one of the kit's helper scripts, its output going to ours;
    BuildError when it fails (it has said why on stderr)."""
    code = subprocess.run(["bash", str(SCRIPTS / name), *args]).returncode
    if code != 0:
        raise BuildError(f"{name} {' '.join(args)} failed (exit status {code}, see above)")


def runtime_requirements(project: Project) -> list[str]:
    pins = []
    for package in RUNTIME_PACKAGES:
        try:
            pins.append(f"{package}=={importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(package)
    return pins + project.requirement_args()


def wheelhouse(client: Any, project: Project, base: str, report: Report) -> Path:
    """Download the plugin's runtime packages as wheels on the host, for an
    offline ``pip install --no-index`` in the build (no TLS or index access
    needed inside it, which is what air-gapped hosts need too)."""
    dest = project.root / ".build" / "wheels"
    image = client.images.get(base)
    requirements = runtime_requirements(project)
    stamp = {"image": image.id, "requirements": requirements}
    stamp_file = dest / ".stamp.json"
    if stamp_file.exists():
        try:
            if json.loads(stamp_file.read_text()) == stamp:
                report(f"wheelhouse up to date ({len(list(dest.glob('*.whl')))} wheels)")
                return dest
        except ValueError:
            pass
    version = (
        client.containers.run(
            base,
            ["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            remove=True,
            entrypoint=[],
        )
        .decode()
        .strip()
    )
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(image.attrs.get("Architecture"), "x86_64")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    platforms = [f"manylinux_2_{minor}_{arch}" for minor in (36, 34, 31, 28, 17)]
    platforms += [f"manylinux2014_{arch}", f"linux_{arch}"]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--dest",
        str(dest),
        "--only-binary=:all:",
        "--python-version",
        version,
        "--implementation",
        "cp",
    ]
    for platform in platforms:
        cmd += ["--platform", platform]
    report(f"downloading wheels for Python {version}: {' '.join(requirements)}")
    proc = subprocess.run(cmd + requirements, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if "ERROR" in ln] or proc.stderr.splitlines()
        raise BuildError(f"pip download failed: {' | '.join(lines[-3:])}")
    stamp_file.write_text(json.dumps(stamp))
    return dest


#: What dockerd 20.10's classic builder answers when an image one of its
#: steps started from was removed before the step was committed (reading
#: its config: "failed to get digest"; or, at the last step, recording it as
#: the new image's parent: "failed to set parent"). Builds reuse
#: another project's layers as cache (every project's wheelhouse step makes
#: the same layer), and removing an image also removes its untagged parents:
#: a ``docker rmi``, an ``image prune`` or another project's rebuild (which
#: removes the image it replaces) can take such a layer from under a build
#: that just picked it. The daemon checks for containers using a parent
#: before it removes it, but not atomically with a build creating one.
_REMOVED_UNDER_BUILD = re.compile(
    r"failed to get digest (?P<image>sha256:[0-9a-f]{64}): open \S+: no such file or directory"
    r"|failed to set parent (?P<parent>sha256:[0-9a-f]{64}): unknown parent image ID (?P=parent)"
)


class ImageRemovedUnderBuild(BuildError):
    """An image the build was using (as cache) was removed meanwhile; ``image`` is its ID."""

    def __init__(self, message: str, image: str) -> None:
        super().__init__(message)
        self.image = image


def build_image(client: Any, project: Project, base: str, wheels: Path, report: Report) -> str:
    """``docker build`` the project (the context made by ``build_context``);
    returns the image ID.

    When an image the build reused as cache is removed under it (see
    ``_REMOVED_UNDER_BUILD``), it builds once more, saying so: the removed
    image is no longer there to be picked. Any other failure, or that one
    twice, is the build's error."""
    try:
        return _build_once(client, project, base, wheels, report)
    except ImageRemovedUnderBuild as exc:
        report(
            f"an image this build was reusing as cache ({exc.image[7:19]}) was removed "
            "meanwhile (an image removal or another build on this daemon): building again"
        )
    return _build_once(client, project, base, wheels, report)


def _build_once(client: Any, project: Project, base: str, wheels: Path, report: Report) -> str:
    context = build_context(project, wheels)
    try:
        stream = client.api.build(
            fileobj=context,
            custom_context=True,
            dockerfile=DOCKERFILE,
            tag=project.image_tag,
            labels={BUNDLE_LABEL: str(project.bundle_dir)},
            buildargs={"BASE_IMAGE": base},
            decode=True,
            rm=True,
            forcerm=True,
        )
        image_id = None
        for item in _items(stream):
            if "error" in item:
                detail = ((item.get("errorDetail") or {}).get("message") or item["error"]).strip()
                message = f"docker build failed: {detail}"
                removed = _REMOVED_UNDER_BUILD.search(detail)
                if removed:
                    gone = removed.group("image") or removed.group("parent")
                    raise ImageRemovedUnderBuild(message, gone)
                raise BuildError(message)
            text = item.get("stream", "")
            if text.startswith("Step "):
                report(text.strip())
            if "aux" in item and "ID" in item["aux"]:
                image_id = item["aux"]["ID"]
    finally:
        context.close()
    if image_id is None:
        image_id = client.images.get(project.image_tag).id
    return str(image_id)


#: On every image the builder makes: the bundle directory it was built for.
BUNDLE_LABEL = "io.docker-plugin-kit.bundle"


def remove_replaced_images(client: Any, bundle: Path, keep: str) -> list[str]:
    """Remove the images earlier builds for ``bundle`` made that have lost
    their tag to a newer build (so that no ``<none>`` image is left per
    rebuild); returns their IDs. Images of other bundles (another checkout
    may be building at the same time), images a container still uses, and
    any image without the builder's label stay."""
    import docker.errors  # type: ignore[import-untyped,unused-ignore]

    filters = {"dangling": True, "label": f"{BUNDLE_LABEL}={bundle}"}
    removed = []
    for image in client.images.list(filters=filters):
        if image.id == keep:
            continue
        try:
            client.images.remove(image.id)
        except docker.errors.APIError:
            continue  # in use (a container of a build running now), or gone meanwhile
        removed.append(str(image.id))
    return removed


def _items(stream: Iterable[Any]) -> Iterable[dict[str, Any]]:
    for item in stream:
        if isinstance(item, dict):
            yield item


def unpack(
    stream: Any, dest: Path, chunks: Iterable[bytes] | None = None, exclude: Iterable[str] = ()
) -> int:
    """Unpack a tar (a binary file, or ``chunks``) into ``dest`` (replaced)
    with owners, modes and special files as they are, leaving out the members
    matching the tar patterns ``exclude``; returns bytes read."""
    tar = shutil.which("tar")
    if tar is None:
        raise BuildError("tar is needed to unpack the rootfs")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    if chunks is None:
        chunks = iter(lambda: stream.read(1 << 20), b"")
    total = 0
    # tar's messages go to a file, not a pipe: a pipe nobody reads until tar
    # ends would stop tar (and this build) once it holds 64 KiB of warnings.
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            [tar, "-x", "-p", "--numeric-owner", "-C", str(dest)]
            + [f"--exclude={e}" for e in exclude],
            stdin=subprocess.PIPE,
            stderr=errors,
        )
        assert proc.stdin is not None
        try:
            for chunk in chunks:
                total += len(chunk)
                proc.stdin.write(chunk)
        except BrokenPipeError:
            pass  # tar stopped: its status and messages say why
        finally:
            with suppress(BrokenPipeError):
                proc.stdin.close()
            code = proc.wait()
        errors.seek(0)
        err = errors.read().decode(errors="replace")
    if code != 0:
        raise BuildError(f"unpacking the rootfs failed: {err.strip()[:300]}")
    return total


def export_rootfs(
    client: Any, image: str, dest: Path, report: Report, exclude: Iterable[str] = ()
) -> int:
    """Export the image's filesystem into ``dest`` (replaced), without what
    matches ``exclude`` (tar patterns); returns bytes read."""
    # Never started: a command is only needed because create refuses an image
    # without one.
    container = client.containers.create(image, command=["/nonexistent-never-run"])
    try:
        return unpack(None, dest, container.export(chunk_size=1 << 20), exclude)
    finally:
        container.remove(force=True)


def make_dirs(rootfs: Path, paths: Iterable[str], report: Report) -> None:
    """Create the directories the daemon mounts onto (socket dir, mounts,
    propagated mount), so the Dockerfile need not know them.

    Symlinks are followed inside the rootfs: Debian's ``/var/run -> /run``
    must not lead to the build host's ``/run``."""
    for path in paths:
        target = resolve_in_rootfs(rootfs, path)
        if target is None:
            raise BuildError(f"{path}: too many levels of symbolic links in the rootfs")
        if not os.path.lexists(target):
            target.mkdir(parents=True, exist_ok=True)
            report(f"created {path} in the rootfs")


def tree_size(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total
