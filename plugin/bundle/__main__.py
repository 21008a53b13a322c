"""``docker-plugin-kit COMMAND`` (or ``python -m plugin.bundle COMMAND``):
write a plugin project, build its bundle and drive the engine.

Progress goes to stderr, one ``==> step`` line per step with its duration;
a failure is an ``error:`` line (an enable failure adds the plugin's last
output) and exit status 1. ``inspect`` prints its JSON on stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from ._errors import BundleError, ConfigError
from ._platform import DEFAULT_TAG_ARCH, arch_output, get_arch, tag_arch
from ._project import Project, load_project, normalize_name

PROG = "docker-plugin-kit"
USAGE = """\
commands:
  init       write a new plugin project: init DIR --type TYPE [--name NAME]
  template   print one of the kit's default files (Dockerfile, config.json.j2)
  plugin     build the bundle, create the plugin (replacing it, keeping this host's
             settings on it unless --reset-settings) and enable it
  build      build rootfs-build/ (docker build, export, render config.json)
  render     re-render config.json for the last built image
  validate   check a bundle's config.json against its rootfs
  create     docker plugin create from the bundle (--replace removes the old one,
             keeping this host's settings on it unless --reset-settings)
  enable     docker plugin enable (creates missing bind-mount sources first)
  disable    docker plugin disable
  set        docker plugin set KEY=VALUE ... (the plugin must be disabled)
  rm         docker plugin rm
  inspect    print docker plugin inspect as JSON
  push       docker plugin push to the registry the name points at; with TAGs,
             publish each tag from the bundle of its architecture (create,
             push, remove): push 1.0-amd64 1.0-arm64 1.0 latest
  install    docker plugin install REF [KEY=VALUE ...] (pull, set, enable)
  upgrade    docker plugin upgrade to REF, keeping this host's mount sources
  dev        dev mode: the plugin runs the project's source from this host and
             reloads on every save; Ctrl-C leaves it (see README)
  service    systemd units and a spec file to run the plugin as a host service
             (outside Docker's plugin manager): socket activation, TCP, TLS
  base-image make the fallback base image from Debian's packages (debootstrap)
  registry   a local registry on 127.0.0.1:5000 for tests: start, stop, url

The project is plugin.toml in the current directory, or --project PATH (the
file or its directory); paths in it are relative to it.

build, plugin, validate and create take --strict: a warning fails them, such as
a privilege broader than the plugin needs (all devices, the host's network for
a volume, IPAM or authorization plugin, a propagated mount for an authorization plugin
or secret provider, the host's PID or IPC namespace, a mount of / or of the
Docker socket, a capability its drivers do not declare).
"""


class Console:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    def line(self, text: str) -> None:
        print(f"    {text}", file=self.out, flush=True)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        print(f"==> {name}", file=self.out, flush=True)
        start = time.monotonic()
        yield
        print(f"    done in {time.monotonic() - start:.1f} s", file=self.out, flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Write, build and ship Docker managed plugins in Python.",
        epilog=USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--project", default="plugin.toml", help="the project's plugin.toml, or its directory"
    )
    parser.add_argument("--name", help="plugin name[:tag] (default: plugin.name of the project)")
    parser.add_argument("--bundle", help="bundle directory (default: the project's output)")
    parser.add_argument(
        "--arch",
        help="build for this architecture (amd64, arm64) into the project's output-ARCH "
        "directory (default: the daemon's, into output); push: the architecture of tags "
        "that name none",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("plugin", help="build, create --replace and enable")
    p.add_argument("--timeout", type=int, default=30)
    p.add_argument("settings", nargs="*", metavar="KEY=VALUE", help="settings before enable")
    _strict_flag(p)
    _reset_flag(p)
    _strict_flag(sub.add_parser("build", help="build the bundle"))
    sub.add_parser("render", help="re-render config.json")
    _strict_flag(sub.add_parser("validate", help="validate the bundle"))
    p = sub.add_parser("create", help="create the plugin from the bundle")
    p.add_argument("--replace", action="store_true", help="remove an existing plugin first")
    _strict_flag(p)
    _reset_flag(p)
    p = sub.add_parser("enable", help="enable the plugin")
    p.add_argument("--timeout", type=int, default=30)
    p = sub.add_parser("disable", help="disable the plugin")
    p.add_argument("--force", action="store_true")
    p = sub.add_parser("set", help="change settings (plugin disabled)")
    p.add_argument("settings", nargs="+", metavar="KEY=VALUE")
    p = sub.add_parser("rm", help="remove the plugin")
    p.add_argument("--force", action="store_true")
    sub.add_parser("inspect", help="show the plugin")
    p = sub.add_parser("push", help="push the plugin, or publish TAGs from the bundles")
    p.add_argument(
        "tags",
        nargs="*",
        metavar="TAG",
        help="publish the bundles under these tags of the repository (--name without a tag)",
    )
    p.add_argument(
        "--bundle",
        action="append",
        dest="bundles",
        metavar="DIR",
        help="a bundle to publish from (repeat; default: the project's output and output-ARCH)",
    )
    p = sub.add_parser("install", help="install a plugin from a registry")
    p.add_argument("remote", metavar="REF")
    p.add_argument("settings", nargs="*", metavar="KEY=VALUE")
    p.add_argument("--alias", help="local name (default: REF)")
    p.add_argument("--grant-all-permissions", action="store_true", dest="grant")
    p.add_argument("--disable", action="store_true", help="do not enable it")
    p = sub.add_parser("dev", help="run the source from this host, reload on save")
    p.add_argument("--timeout", type=int, default=30)
    p.add_argument("settings", nargs="*", metavar="KEY=VALUE", help="settings before enable")
    p = sub.add_parser(
        "service", help="systemd units and a spec file: the plugin as a host service"
    )
    p.add_argument("--out", metavar="DIR", help="where to write them (default: PROJECT/service)")
    p.add_argument(
        "--listen",
        metavar="URL",
        help="tcp://HOST:PORT or https://HOST:PORT (default: the unix socket "
        "/run/docker/plugins/NAME.sock)",
    )
    p.add_argument("--tls-cert", metavar="PEM", help="https: the plugin's certificate")
    p.add_argument("--tls-key", metavar="PEM", help="https: its key")
    p.add_argument("--tls-ca", metavar="PEM", help="https: the CA that signed it")
    p.add_argument(
        "--daemon-cert", metavar="PEM", help="https: the daemon's client certificate (required)"
    )
    p.add_argument("--daemon-key", metavar="PEM", help="https: its key")
    p.add_argument("--python", help="the interpreter that runs it (default: this one)")
    p = sub.add_parser("upgrade", help="upgrade the plugin to another reference")
    p.add_argument("remote", metavar="REF")
    p.add_argument("--grant-all-permissions", action="store_true", dest="grant")
    from ._init import TYPES

    p = sub.add_parser("init", help="write a new plugin project")
    p.add_argument("directory", metavar="DIR")
    p.add_argument(
        "--type",
        required=True,
        choices=sorted(TYPES),
        help="; ".join(f"{t.name}: {t.summary}" for t in TYPES.values()),
    )
    p.add_argument("--name", help="plugin name (default: the directory's name)")
    p.add_argument("--force", action="store_true", help="write into a non-empty directory")
    p = sub.add_parser("template", help="print a default file of the kit")
    p.add_argument("file", choices=("Dockerfile", "config.json.j2"))
    p = sub.add_parser("base-image", help="make the fallback base image from Debian's packages")
    p.add_argument("tag", nargs="?", default=Project.fallback_base_image, metavar="TAG")
    p = sub.add_parser("registry", help="a local registry on 127.0.0.1:5000 (for tests)")
    p.add_argument("action", choices=("start", "stop", "url"))
    return parser


def _strict_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--strict",
        action="store_true",
        help="fail on warnings, such as privileges broader than the plugin needs",
    )


def _reset_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--reset-settings",
        action="store_true",
        help="give the replacing plugin its config's defaults, not the settings this host "
        "made on the plugin it replaces (kept by default, and printed)",
    )


def _privilege_warnings(project: Callable[[], Project], config: Any) -> list[str]:
    """Capabilities in ``config`` that the project's drivers do not declare
    (nothing when the drivers cannot be loaded here)."""
    from .._requirements import requirements
    from ._config import undeclared_capabilities
    from ._rootfs import load_drivers

    try:
        declared = requirements(load_drivers(project(), project().bundle_dir))
    except (BundleError, ValueError):
        return []
    return undeclared_capabilities(config, declared)


def _check_strict(args: argparse.Namespace, where: Path, warnings: list[str]) -> None:
    if getattr(args, "strict", False) and warnings:
        head = (
            warnings[0]
            if len(warnings) == 1
            else f"{len(warnings)} warnings: " + "; ".join(warnings)
        )
        raise ConfigError(f"{where}: --strict: {head}", warnings)


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console(out or sys.stderr)
    try:
        return _run(args, console)
    except BundleError as exc:
        print(f"error: {exc}", file=console.out, flush=True)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=console.out, flush=True)
        return 130


def _engine(console: Console, client: Any = None) -> Any:
    from ._engine import Engine

    return Engine(client, report=console.line)


def _run(args: argparse.Namespace, console: Console) -> int:
    project: Project | None = None

    def get_project() -> Project:
        nonlocal project
        if project is None:
            project = load_project(args.project)
            if args.arch:  # its own image tag, and output-ARCH unless --bundle
                arch = get_arch(args.arch).name
                project = dataclasses.replace(
                    project, arch=arch, output=arch_output(project.output, arch)
                )
            if args.bundle:  # build into (and create from) the given directory
                project = dataclasses.replace(project, output=str(Path(args.bundle).resolve()))
        return project

    name = normalize_name(args.name) if args.name else None
    if args.arch:
        get_arch(args.arch)  # a misspelt one is reported before anything is done

    def plugin_name() -> str:
        return name or get_project().name

    def bundle_dir() -> Path:
        return Path(args.bundle) if args.bundle else get_project().bundle_dir

    cmd = args.command
    if cmd == "init":
        from ._init import init_project

        made = init_project(args.directory, args.type, name=args.name, force=args.force)
        _report_init(made, args.directory, console)
        return 0
    if cmd == "template":
        from ._project import TEMPLATES

        print((TEMPLATES / args.file).read_text(), end="", flush=True)
        return 0
    if cmd in ("base-image", "registry"):
        from ._rootfs import run_script

        if cmd == "base-image":
            run_script("make-base-image", [args.tag])
        else:
            run_script("registry", [args.action])
        return 0
    if cmd in ("build", "plugin"):
        from ._builder import build_bundle
        from ._engine import docker_client

        client = docker_client()
        if cmd == "plugin" and args.arch:
            from ._platform import daemon_arch

            here = daemon_arch(client)
            if get_arch(args.arch).name != here:
                raise BundleError(
                    f"plugin --arch {args.arch}: this daemon runs linux/{here}, so the plugin "
                    f"could not be enabled here; build it (--arch {args.arch} build) and "
                    "publish it (push TAG...)"
                )
        start = time.monotonic()
        result = build_bundle(get_project(), client, console.step, console.line)
        console.line(
            f"bundle {result.bundle}: rootfs {result.rootfs_bytes / 1e6:.1f} MB, built in "
            f"{time.monotonic() - start:.1f} s"
        )
        # The build checked the capabilities against the drivers already.
        _check_strict(args, result.bundle / "config.json", result.warnings)
        if cmd == "build":
            return 0
        engine = _engine(console, client)
        with console.step(f"create {plugin_name()}"):
            plugin_id = engine.create(
                plugin_name(),
                result.bundle,
                replace=True,
                keep_settings=not args.reset_settings,
            )
            console.line(f"id {plugin_id[:12]}")
        if args.settings:
            with console.step("set " + " ".join(args.settings)):
                engine.set(plugin_name(), args.settings)
        with console.step(f"enable {plugin_name()}"):
            engine.enable(plugin_name(), timeout=args.timeout)
        _usage(plugin_name(), result.config, console, engine)
        return 0
    if cmd == "render":
        from ._builder import render_bundle
        from ._engine import docker_client

        with console.step("render config.json"):
            _, warnings = render_bundle(get_project(), docker_client(), bundle_dir())
            for warning in warnings:
                console.line(f"warning: {warning}")
        return 0
    if cmd == "validate":
        from ._builder import validate_bundle

        with console.step(f"validate {bundle_dir()}"):
            warnings = _bundle_warnings(validate_bundle(bundle_dir()), get_project, bundle_dir())
            for warning in warnings:
                console.line(f"warning: {warning}")
            _check_strict(args, bundle_dir() / "config.json", warnings)
            console.line(f"{bundle_dir() / 'config.json'}: valid")
        return 0
    if cmd == "dev":
        return _dev(args, get_project, plugin_name(), console)
    if cmd == "install":
        from ._registry import install

        engine = _engine(console)
        with console.step(f"install {args.remote}"):
            local = install(
                engine,
                args.remote,
                alias=args.alias,
                settings=args.settings,
                grant=args.grant,
                enable=not args.disable,
            )
            console.line(f"{local} installed{'' if args.disable else ' and enabled'}")
        return 0
    if cmd == "service":
        service_project = get_project()
        if name:  # --name: the service's (the driver's) name
            service_project = dataclasses.replace(service_project, name=name)
        return _service(args, service_project, console)
    if cmd == "push" and args.tags:
        return _publish(args, get_project, console)
    target = plugin_name()  # a bad plugin.toml is reported before the daemon is reached
    engine = _engine(console)
    if cmd in ("push", "upgrade"):
        from ._registry import push, upgrade

        with console.step(f"{cmd} {target}"):
            if cmd == "push":
                platform = f"linux/{tag_arch(target.rsplit(':', 1)[1]) or plain_arch(args)}"
                digest, size = push(engine, target, platform=platform)
                console.line(f"{target} ({platform}): {digest}, {size / 1e6:.1f} MB of layers")
            else:
                upgrade(engine, target, args.remote, grant=args.grant)
        return 0
    if cmd == "create":
        from ._builder import validate_bundle

        with console.step(f"create {target}"):
            warnings = _bundle_warnings(validate_bundle(bundle_dir()), get_project, bundle_dir())
            for warning in warnings:
                console.line(f"warning: {warning}")
            _check_strict(args, bundle_dir() / "config.json", warnings)
            plugin_id = engine.create(
                target,
                bundle_dir(),
                replace=args.replace,
                keep_settings=not args.reset_settings,
            )
            console.line(f"id {plugin_id[:12]}")
    elif cmd == "enable":
        with console.step(f"enable {target}"):
            info = engine.enable(target, timeout=args.timeout)
        types = (((info.get("Config") or {}).get("Interface") or {}).get("Types")) or []
        if AUTHZ in types:
            print("\n" + "\n".join(authz_advice(target, engine)), file=console.out, flush=True)
    elif cmd == "disable":
        with console.step(f"disable {target}"):
            engine.disable(target, force=args.force)
    elif cmd == "set":
        with console.step(f"set {target}"):
            engine.set(target, args.settings)
    elif cmd == "rm":
        with console.step(f"remove {target}"):
            if not engine.remove(target, force=args.force):
                console.line(f"{target}: no such plugin (nothing to do)")
    elif cmd == "inspect":
        # The document goes to stdout (for jq and the like), progress to `out`.
        info = engine.inspect(target)
        if info is None:
            raise BundleError(f"inspect {target}: no such plugin")
        print(json.dumps(info, indent=2), flush=True)
    return 0


def _dev(
    args: argparse.Namespace, project: Callable[[], Project], name: str, console: Console
) -> int:
    from ._dev import DevMode, leave_on_signals
    from ._engine import docker_client

    project()  # a bad plugin.toml is reported before anything else
    if args.arch:
        raise BundleError(
            "dev: --arch is not for dev mode: the dev plugin runs on this daemon, built for "
            "its architecture"
        )
    engine = _engine(console, docker_client())
    dev = DevMode(
        Path(args.project),
        name,
        engine,
        console.out,
        console.step,
        console.line,
        settings=args.settings,
        timeout=args.timeout,
    )
    with leave_on_signals():
        try:
            dev.start()
            dev.follow()
        except KeyboardInterrupt:
            pass
        finally:
            dev.leave()
    print("dev mode left", file=console.out, flush=True)
    return 0


def plain_arch(args: argparse.Namespace) -> str:
    """The architecture of a tag that names none: --arch, else amd64."""
    return get_arch(args.arch).name if args.arch else DEFAULT_TAG_ARCH


def _publish(args: argparse.Namespace, project: Callable[[], Project], console: Console) -> int:
    """``push TAG...``: each tag from the bundle of its architecture."""
    from ._registry import default_bundles, publish

    repository = args.name or project().name.rsplit(":", 1)[0]
    if args.bundles:
        bundles = [Path(b) for b in args.bundles]
    elif args.bundle:
        bundles = [Path(args.bundle)]
    else:
        bundles = default_bundles(load_project(args.project).bundle_dir)
    engine = _engine(console)
    with console.step(f"push {repository}: {' '.join(args.tags)}"):
        pushed = publish(engine, repository, args.tags, bundles, plain_arch(args))
    for item in pushed:
        print(
            f"{item.name}\t{item.platform}\t{item.digest}\t{item.size / 1e6:.1f} MB",
            file=console.out,
            flush=True,
        )
    return 0


def _service(args: argparse.Namespace, project: Project, console: Console) -> int:
    """``service``: the files that run the plugin as a host service."""
    from .._requirements import requirements
    from ._rootfs import load_drivers
    from ._service import ServiceTLS, service_files

    tls = None
    if args.tls_cert or args.tls_key or args.tls_ca:
        if not (args.tls_cert and args.tls_key and args.tls_ca):
            raise BundleError("--tls-cert, --tls-key and --tls-ca go together")
        tls = ServiceTLS(
            str(Path(args.tls_cert).resolve()),
            str(Path(args.tls_key).resolve()),
            str(Path(args.tls_ca).resolve()),
            str(Path(args.daemon_cert).resolve()) if args.daemon_cert else None,
            str(Path(args.daemon_key).resolve()) if args.daemon_key else None,
        )
    try:
        reqs = requirements(load_drivers(project))
    except ValueError as exc:
        raise BundleError(f"plugin.drivers: {exc}") from None
    files = service_files(project, reqs, listen=args.listen, tls=tls, python=args.python)
    out = Path(args.out) if args.out else project.root / "service"
    out.mkdir(parents=True, exist_ok=True)
    with console.step(f"host service files in {out}"):
        for name, text in files.items():
            (out / name).write_text(text)
            console.line(str(out / name))
    units = " ".join(n for n in files if n.endswith((".socket", ".service")))
    spec = [n for n in files if n.endswith((".spec", ".json"))]
    steps = [f"cp {units} /etc/systemd/system/"]
    if spec:
        steps.append(f"cp {spec[0]} /etc/docker/plugins/")
    name = next(n for n in files if n.endswith(".socket"))
    steps += ["systemctl daemon-reload", f"systemctl enable --now {name}"]
    print(f"\nTo install (as root, in {out}):\n  " + "\n  ".join(steps), file=console.out)
    return 0


def _bundle_warnings(
    warnings: list[str], project: Callable[[], Project], bundle: Path
) -> list[str]:
    from ._config import read_config

    return [*warnings, *_privilege_warnings(project, read_config(bundle / "config.json"))]


_TRY = {
    "docker.volumedriver/1.0": "docker volume create -d {short} myvol",
    "docker.networkdriver/1.0": "docker network create -d {name} mynet",
    "docker.ipamdriver/1.0": "docker network create --ipam-driver {name} mynet",
    "docker.logdriver/1.0": "docker run --log-driver {short} IMAGE",
    "docker.secretprovider/1.0": (
        "docker secret create --driver {name} mysecret (on a Swarm manager: docker swarm init)"
    ),
}
AUTHZ = "docker.authz/1.0"
#: Types the daemon looks up by the plugin's exact name, tag included.
_BY_FULL_NAME = {"docker.networkdriver/1.0", "docker.ipamdriver/1.0"}


def authz_advice(name: str, engine: Any) -> list[str]:
    """Whether the daemon asks the authorization plugin ``name`` about its
    requests, and if not, how to make it: enabling one is not enough."""
    state = engine.authorization_plugins()
    mine = normalize_name(name)
    if state.at_start is not None and _listed(state.at_start, mine):
        return [
            "The daemon asks it about every request "
            f"(authorization-plugins: {', '.join(state.at_start)})."
        ]
    path = state.config_file or "/etc/docker/daemon.json"
    if state.in_file is not None and _listed(state.in_file, mine):
        return [
            f"{path} lists it in authorization-plugins: the daemon asks it once reloaded",
            "(sudo kill -HUP $(pidof dockerd)); `docker info` shows the list the daemon",
            "started with.",
        ]
    current = state.in_file if state.in_file is not None else state.at_start or []
    wanted = json.dumps({"authorization-plugins": [*current, name]})
    return [
        f"The daemon does not ask {name} yet: an authorization plugin acts only once",
        "the daemon lists it in authorization-plugins. When its policy is in place, add to",
        f"{path}",
        f"    {wanted}",
        "and reload the daemon: sudo kill -HUP $(pidof dockerd) (or sudo systemctl reload docker).",
        "Reload only with names `docker plugin ls` shows enabled: the daemon exits on a name",
        "it cannot find. If the plugin then stops answering, every docker command fails: the",
        "way back is in the kit's README, under Lockout and recovery.",
    ]


def _listed(names: list[str], normalized: str) -> bool:
    return any(_same_plugin(entry, normalized) for entry in names)


def _same_plugin(entry: str, normalized: str) -> bool:
    try:
        return normalize_name(entry) == normalized
    except BundleError:
        return False


def _usage(name: str, config: dict[str, Any], console: Console, engine: Any = None) -> None:
    """What to try next, from the plugin's own config."""
    short = name.removesuffix(":latest")
    lines = [f"plugin {name} is enabled."]
    types = (config.get("interface") or {}).get("types") or []
    for kind in types:
        if kind in _TRY:
            lines.append("Try: " + _TRY[kind].format(name=name, short=short))
    if set(types) & _BY_FULL_NAME:
        lines.append(
            "  (the daemon finds network and IPAM drivers by their full name, tag included: "
            f'{name}; without the tag it answers "could not resolve driver" or "invalid ipam '
            'driver")'
        )
    if AUTHZ in types and engine is not None:
        lines += authz_advice(name, engine)
    settable = [
        f"{m['name']}.source=/path"
        for m in config.get("mounts") or []
        if "source" in (m.get("settable") or [])
    ]
    settable += [
        f"{e['name']}=VALUE"
        for e in config.get("env") or []
        if "value" in (e.get("settable") or [])
    ]
    if settable:
        lines.append(
            f"Per-host settings (plugin disabled): docker plugin set {name} " + " ".join(settable)
        )
    print("\n" + "\n".join(lines), file=console.out, flush=True)


def _report_init(result: Any, given: str, console: Console) -> None:
    for path in result.written:
        console.line(f"wrote {path}")
    for path in result.kept:
        console.line(f"kept your {path}")
    cd = "" if Path(given).resolve() == Path.cwd() else f"cd {given} && "
    print(
        f"\nA {result.name} plugin project is in {result.root}. Next:\n"
        f"  {cd}make plugin   # build it and enable it on the local Docker daemon\n"
        "  make test     # its tests, in-process",
        file=console.out,
        flush=True,
    )


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
