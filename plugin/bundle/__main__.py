"""``python -m plugin.bundle COMMAND``: build a plugin bundle and drive the engine.

Progress goes to stderr, one ``==> step`` line per step with its duration;
a failure is one ``error:`` line and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from ._errors import BundleError
from ._project import Project, load_project, normalize_name

USAGE = """\
commands:
  plugin     build the bundle, create the plugin (replacing it) and enable it
  build      build rootfs-build/ (docker build, export, render config.json)
  render     re-render config.json for the last built image
  validate   check a bundle's config.json against its rootfs
  create     docker plugin create from the bundle (--replace removes the old one)
  enable     docker plugin enable (creates missing bind-mount sources first)
  disable    docker plugin disable
  set        docker plugin set KEY=VALUE ... (the plugin must be disabled)
  rm         docker plugin rm
  inspect    print docker plugin inspect as JSON
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
        prog="python -m plugin.bundle",
        description="Build a Docker managed plugin from a Python driver and drive the engine.",
        epilog=USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--project", default="plugin.toml", help="project config (plugin.toml)")
    parser.add_argument("--name", help="plugin name[:tag] (default: plugin.name of the project)")
    parser.add_argument("--bundle", help="bundle directory (default: the project's output)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("plugin", help="build, create --replace and enable")
    p.add_argument("--timeout", type=int, default=30)
    p.add_argument("settings", nargs="*", metavar="KEY=VALUE", help="settings before enable")
    sub.add_parser("build", help="build the bundle")
    sub.add_parser("render", help="re-render config.json")
    sub.add_parser("validate", help="validate the bundle")
    p = sub.add_parser("create", help="create the plugin from the bundle")
    p.add_argument("--replace", action="store_true", help="remove an existing plugin first")
    p = sub.add_parser("enable", help="enable the plugin")
    p.add_argument("--timeout", type=int, default=30)
    p = sub.add_parser("disable", help="disable the plugin")
    p.add_argument("--force", action="store_true")
    p = sub.add_parser("set", help="change settings (plugin disabled)")
    p.add_argument("settings", nargs="+", metavar="KEY=VALUE")
    p = sub.add_parser("rm", help="remove the plugin")
    p.add_argument("--force", action="store_true")
    sub.add_parser("inspect", help="show the plugin")
    return parser


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


def _engine(console: Console) -> Any:
    from ._engine import Engine

    return Engine(report=console.line)


def _run(args: argparse.Namespace, console: Console) -> int:
    project: Project | None = None

    def get_project() -> Project:
        nonlocal project
        if project is None:
            project = load_project(args.project)
        return project

    name = normalize_name(args.name) if args.name else None

    def plugin_name() -> str:
        return name or get_project().name

    def bundle_dir() -> Path:
        return Path(args.bundle) if args.bundle else get_project().bundle_dir

    cmd = args.command
    if cmd in ("build", "plugin"):
        from ._builder import build_bundle
        from ._engine import docker_client

        start = time.monotonic()
        result = build_bundle(get_project(), docker_client(), console.step, console.line)
        console.line(
            f"bundle {result.bundle}: rootfs {result.rootfs_bytes / 1e6:.1f} MB, built in "
            f"{time.monotonic() - start:.1f} s"
        )
        if cmd == "build":
            return 0
        engine = _engine(console)
        with console.step(f"create {plugin_name()}"):
            plugin_id = engine.create(plugin_name(), bundle_dir(), replace=True)
            console.line(f"id {plugin_id[:12]}")
        if args.settings:
            with console.step("set " + " ".join(args.settings)):
                engine.set(plugin_name(), args.settings)
        with console.step(f"enable {plugin_name()}"):
            engine.enable(plugin_name(), timeout=args.timeout)
        _usage(plugin_name(), console)
        return 0
    if cmd == "render":
        from ._builder import render_bundle_config
        from ._config import write_json
        from ._engine import docker_client

        p = get_project()
        with console.step("render config.json"):
            attrs = docker_client().images.get(p.image_tag).attrs
            config, warnings = render_bundle_config(p, attrs, bundle_dir() / "rootfs")
            write_json(bundle_dir() / "config.json", config)
            for warning in warnings:
                console.line(f"warning: {warning}")
        return 0
    if cmd == "validate":
        from ._config import check_config

        path = bundle_dir() / "config.json"
        try:
            config = json.loads(path.read_text())
        except FileNotFoundError:
            raise BundleError(f"{path}: not found (run the build first)") from None
        except json.JSONDecodeError as exc:
            raise BundleError(f"{path}: not valid JSON: {exc}") from None
        for warning in check_config(config, bundle_dir() / "rootfs", str(path)):
            console.line(f"warning: {warning}")
        console.line(f"{path}: valid")
        return 0
    engine = _engine(console)
    target = plugin_name()
    if cmd == "create":
        from ._config import check_config

        path = bundle_dir() / "config.json"
        try:
            config = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError) as exc:
            raise BundleError(f"{path}: cannot read ({exc}); run the build first") from None
        check_config(config, bundle_dir() / "rootfs", str(path))
        with console.step(f"create {target}"):
            plugin_id = engine.create(target, bundle_dir(), replace=args.replace)
            console.line(f"id {plugin_id[:12]}")
    elif cmd == "enable":
        with console.step(f"enable {target}"):
            engine.enable(target, timeout=args.timeout)
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
        info = engine.inspect(target)
        if info is None:
            raise BundleError(f"inspect {target}: no such plugin")
        print(json.dumps(info, indent=2))
    return 0


def _usage(name: str, console: Console) -> None:
    short = name.removesuffix(":latest")
    print(
        f"\nplugin {name} is enabled. Try:\n"
        f"  docker volume create -d {short} -o mode=0750 myvol\n"
        f"  docker run --rm -v myvol:/data IMAGE sh -c 'echo hello > /data/hi'\n"
        f"  docker volume inspect myvol\n"
        f"Per-host settings (plugin disabled): docker plugin set {name} data.source=/srv/volumes",
        file=console.out,
        flush=True,
    )


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
