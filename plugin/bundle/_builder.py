"""Putting the bundle together: rootfs-build/ = rendered config.json + rootfs/."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._driver import Driver
from .._requirements import Requirements, requirements
from .._socket import PLUGIN_DIR
from . import _slim
from ._config import (
    ImageFacts,
    check_config,
    read_config,
    render_config,
    template_context,
    write_json,
)
from ._describe import describe_in_image, stand_ins
from ._errors import BuildError, BundleError, ConfigError
from ._foreign import ensure_emulation, foreign_base_image
from ._platform import (
    check_platform,
    daemon_arch,
    record_platform,
    recorded_platform,
    rootfs_arch,
    target_arch,
)
from ._project import Project
from ._rootfs import (
    DRIVERS_FILE,
    MissingOnHost,
    build_image,
    docker_errors,
    ensure_base_image,
    export_rootfs,
    load_drivers,
    make_dirs,
    remove_replaced_images,
    tree_size,
    unpack,
    wheelhouse,
)

__all__ = [
    "BuildResult",
    "BuiltImage",
    "Step",
    "build_bundle",
    "build_image_of",
    "render_bundle",
    "render_bundle_config",
    "validate_bundle",
]

Report = Callable[[str], None]
Step = Callable[[str], Any]  # a context manager factory: with step("build image"): ...


@dataclass(frozen=True)
class BuildResult:
    bundle: Path
    config: dict[str, Any]
    warnings: list[str]
    rootfs_bytes: int


def _requirements(drivers: list[type[Driver]]) -> Requirements:
    try:
        return requirements(drivers)
    except ValueError as exc:  # conflicting declarations of two drivers
        raise ConfigError(f"plugin.drivers: {exc}") from None


def render_bundle_config(
    project: Project,
    image_attrs: dict[str, Any],
    rootfs: Path | None,
    drivers: list[type[Driver]] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Render config.json for ``project`` and validate it (with the drivers'
    declarations, so capabilities they do not declare are warned about);
    returns the config and its warnings, or raises ConfigError naming every
    bad field."""
    if drivers is None:
        drivers = load_drivers(project, rootfs.parent if rootfs is not None else None)
    reqs = _requirements(drivers)
    context = template_context(project, reqs, ImageFacts.from_inspect(image_attrs), rootfs)
    config = render_config(project.template_path, context)
    record_platform(config, rootfs, image_attrs)
    # With what the drivers declare: the undeclared-capability check too,
    # here, once per build.
    warnings = check_config(config, rootfs, declared=reqs)
    return config, warnings


@dataclass(frozen=True)
class BuiltImage:
    """The project's image and its drivers (imported here, or read in it)."""

    drivers: list[type[Driver]]
    image_id: str
    attrs: dict[str, Any]
    #: The architecture it is built for (amd64, arm64).
    arch: str
    #: The wheelhouse it was built from: the plugin's distributions.
    wheels: Path | None = None


def build_image_of(project: Project, client: Any, step: Step, report: Report) -> BuiltImage:
    """The steps every bundle starts with: load the drivers, base image,
    wheelhouse, docker build (and read the drivers in the image when this
    host cannot import them)."""
    bundle = project.bundle_dir
    found: list[type[Driver]] | None = None
    with step("load the drivers"):
        try:
            found = load_drivers(project)
            (bundle / DRIVERS_FILE).unlink(missing_ok=True)
            report(", ".join(f"{d.__name__} ({d.capability})" for d in found))
        except MissingOnHost as exc:
            report(f"{exc.module} is not installed here: the drivers are read in the built image")
    arch = target_arch(client, project)
    with step("base image"), docker_errors("base image"):
        if arch.name != daemon_arch(client):
            report(ensure_emulation(arch, report))
            base = foreign_base_image(
                client, project.base_image, project.fallback_base_image, arch, report
            )
        else:
            base = ensure_base_image(client, project, report)
        report(f"{base} ({arch.platform})")
    with step("wheelhouse"), docker_errors("wheelhouse"):
        wheels = wheelhouse(client, project, base, report)
    with step("docker build"), docker_errors("docker build"):
        image_id = build_image(client, project, base, wheels, report)
        report(f"{project.image_tag} ({image_id[7:19]})")
        for old in remove_replaced_images(client, project.bundle_dir, image_id):
            report(f"removed the image it replaces ({old[7:19]})")
    bundle.mkdir(parents=True, exist_ok=True)
    if found is None:
        with step("read the drivers in the image"), docker_errors("read the drivers"):
            described = describe_in_image(client, image_id, project.python, list(project.drivers))
            if "error" in described:
                raise BuildError(
                    f"plugin.drivers: cannot load {described['error']}, in the built image "
                    "either (list the package that provides it in plugin.toml's [build] "
                    "requirements)"
                )
            found = stand_ins(described)
            write_json(bundle / DRIVERS_FILE, described)
            report(", ".join(f"{d.__name__} ({d.capability})" for d in found))
    with docker_errors(f"inspect {image_id}"):
        attrs = client.images.get(image_id).attrs
    return BuiltImage(found, image_id, attrs, arch.name, wheels)


def build_bundle(project: Project, client: Any, step: Step, report: Report) -> BuildResult:
    """Build the image, export its filesystem and render config.json into
    the project's bundle directory."""
    bundle = project.bundle_dir
    built = build_image_of(project, client, step, report)
    image_id, attrs = built.image_id, built.attrs
    rootfs = bundle / "rootfs"
    drivers = built.drivers
    reqs = _requirements(drivers)
    stale = bundle / "config.json"
    if stale.exists():
        stale.unlink()  # never leave a config that does not match the rootfs
    needed = [PLUGIN_DIR, *(m.destination for m in reqs.mounts)]
    if reqs.propagated_mount:
        needed.append(reqs.propagated_mount)
    # What the slim probe runs: config.json as rendered (entrypoint[0] still
    # as written, found on the image's PATH by the container).
    probe_config = (
        render_config(
            project.template_path,
            template_context(project, reqs, ImageFacts.from_inspect(attrs), None),
        )
        if project.slim
        else None
    )
    stamp = _export_stamp(project, image_id, probe_config)
    stamp_file = bundle / STAMP
    if rootfs.is_dir() and _read_json(stamp_file) == stamp:
        with step("export the rootfs"):
            report(f"{rootfs} is up to date (made from the same image, the same way)")
    else:
        stamp_file.unlink(missing_ok=True)
        if probe_config is not None:
            _export_slim(
                project,
                client,
                image_id,
                attrs,
                probe_config,
                drivers,
                _distributions(built.wheels),
                rootfs,
                step,
                report,
            )
        else:
            with step("export the rootfs"), docker_errors("export the rootfs"):
                exported = export_rootfs(client, image_id, rootfs, report)
                report(f"{exported / 1e6:.1f} MB exported into {rootfs}")
        make_dirs(rootfs, needed, report)
        write_json(stamp_file, stamp)
    with step("render config.json"):
        config, warnings = render_bundle_config(project, attrs, rootfs, drivers)
        check_platform(rootfs, config, built.arch)
        write_json(bundle / "config.json", config)
        for warning in warnings:
            report(f"warning: {warning}")
        report(f"{bundle / 'config.json'}: {len(json.dumps(config))} bytes, valid")
    size = tree_size(rootfs)
    if size == 0:
        raise BuildError(f"{rootfs} is empty")
    return BuildResult(bundle, config, warnings, size)


#: In the bundle directory, next to rootfs/: what the rootfs was exported
#: from. A rebuild whose image did not change keeps the rootfs as it is.
STAMP = ".rootfs-stamp.json"
#: Next to it: the slim step's trace (modules, files kept, answers).
TRACE = ".slim-trace.json"


def _export_stamp(
    project: Project, image_id: str, probe_config: dict[str, Any] | None
) -> dict[str, Any]:
    stamp: dict[str, Any] = {"image": image_id, "slim": project.slim}
    if probe_config is not None:
        # What the probe ran (entrypoint, environment, drivers) and the
        # selection code: a change of either selects again.
        here = Path(__file__).parent
        digest = hashlib.sha256(json.dumps([probe_config, project.drivers, project.keep]).encode())
        for name in ("_slim.py", "_slim_probe.py"):
            digest.update((here / name).read_bytes())
        stamp["slim"] = digest.hexdigest()[:16]
    return stamp


def _distributions(wheels: Path | None) -> list[str]:
    """The plugin's declared distributions with their dependencies: what the
    wheelhouse holds (``name-version-...whl``)."""
    if wheels is None:
        return []
    return sorted({whl.name.split("-")[0] for whl in wheels.glob("*.whl")})


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _export_slim(
    project: Project,
    client: Any,
    image_id: str,
    attrs: dict[str, Any],
    config: dict[str, Any],
    drivers: list[type[Driver]],
    distributions: list[str],
    rootfs: Path,
    step: Step,
    report: Report,
) -> None:
    """Trace the plugin in the image, export what it uses and every module it
    may import, check the result."""
    own = sorted({"plugin", *project.own_packages})
    with step("trace the plugin in the image"), docker_errors("trace the plugin"):
        args, traced, result = _slim.trace(
            client, image_id, config, drivers, own, distributions, project.keep
        )
        write_json(rootfs.parent / TRACE, traced)
        report(
            f"{len(traced['answers'])} requests answered; {len(traced['modules'])} modules "
            f"loaded; {len(result.importable)} modules importable (the standard library and "
            f"{len(distributions)} distributions)"
        )
        if traced.get("left_out"):
            report("left out: " + ", ".join(traced["left_out"]) + " (see _slim_probe.EXCLUDED)")
        for name in traced.get("missing_distributions") or []:
            report(f"warning: the distribution {name} of the wheelhouse is not in the image")
    with step("unpack the slim rootfs"):
        unpack(io.BytesIO(result.tar), rootfs)
        report(
            f"image {attrs.get('Size', 0) / 1e6:.1f} MB, slim rootfs "
            f"{result.slim_bytes / 1e6:.1f} MB ({result.members} entries, "
            f"{result.bytecode_only} modules as bytecode only, {result.zipped} in the "
            f"standard library's zip: {result.zip_bytes / 1e6:.1f} MB; its docstrings "
            f"left out: {result.docstring_bytes / 1e6:.1f} MB of bytecode)"
        )
    with step("check the slim rootfs"), docker_errors("check the slim rootfs"):
        tag = f"{project.image_tag.rsplit(':', 1)[0]}:slim-check-{uuid.uuid4().hex[:8]}"
        checked = _slim.check_slim(client, result, config, args, tag)
        _slim.compare(traced, checked)
        report(
            f"the plugin in it loads the same {len(checked['modules'])} modules and answers "
            f"alike; all {len(checked['importable'])} importable modules import"
        )


def render_bundle(project: Project, client: Any, bundle: Path) -> tuple[dict[str, Any], list[str]]:
    """Re-render ``bundle``/config.json from the last built image (after an
    edit of config.json.j2 or plugin.toml); returns the config and warnings."""
    import docker.errors  # type: ignore[import-untyped,unused-ignore]

    with docker_errors(f"inspect {project.image_tag}"):
        try:
            attrs = dict(client.images.get(project.image_tag).attrs)
        except docker.errors.ImageNotFound:
            raise BuildError(f"image {project.image_tag} not found (run the build first)") from None
    config, warnings = render_bundle_config(project, attrs, bundle / "rootfs")
    write_json(bundle / "config.json", config)
    return config, warnings


def validate_bundle(bundle: Path) -> list[str]:
    """Check ``bundle``/config.json against ``bundle``/rootfs; ConfigError
    naming every problem, else the warnings."""
    path = bundle / "config.json"
    config = read_config(path)
    warnings = check_config(config, bundle / "rootfs", str(path))
    recorded = recorded_platform(config)
    if recorded is not None:
        try:
            found = f"linux/{rootfs_arch(bundle / 'rootfs', config.get('entrypoint') or [])}"
        except BundleError:
            found = recorded  # no entrypoint to read: check_config has said so
        if found != recorded:
            raise ConfigError(
                f"{path}: env PLUGIN_PLATFORM says {recorded} but the rootfs is for {found} "
                "(rebuild the bundle)"
            )
    return warnings
