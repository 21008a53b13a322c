"""``docker-plugin-kit dev``: the plugin runs the project's source from this host.

Dev mode creates the plugin once, from a dev variant of the bundle: the
project's image exported whole (the runtime, the dependencies, the whole
standard library: code written meanwhile may import anything), with
``config.json`` as rendered for a normal build plus

* a read-only bind mount of the project directory at ``SOURCE_DIR``, the
  working directory, first on ``sys.path`` (the copy in the image is shadowed);
* the entrypoint ``python -m plugin._dev``: a supervisor that holds the
  socket and restarts the server on every save of a ``.py`` file, keeping the
  old code serving when the new one does not import (see ``plugin._dev``);
* a bind mount of ``.build/dev/status/`` where the supervisor appends its
  events, which this command prints;
* its mark: the ``DPK_DEV_SOURCE`` variable (the host's project directory)
  and a description that says so. ``push`` refuses a plugin so marked: it
  runs code that only this host has.

Then it follows: a save of the drivers is the supervisor's business (under a
second, no rebuild); a change of what ``config.json`` is made from (the
drivers' declarations, ``plugin.toml``, the Dockerfile, the template) needs a
new plugin, which this command then builds and creates by itself, saying why.
Leaving (Ctrl-C, SIGTERM) removes the dev plugin, or, when it had replaced a
normal build of the plugin, builds and enables a normal one again from the
current source, with this host's settings; then removes ``.build/dev/``.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .._dev import HOST_SOURCE_ENV, Watcher, declarations
from ._errors import BundleError, ConfigError, EngineError
from ._project import Project, load_project

__all__ = [
    "DEV_ENV",
    "DevMode",
    "dev_config",
    "dev_source",
]

#: Where the dev plugin sees the project directory (its working directory).
SOURCE_DIR = "/plugin-dev/src"
#: Where the supervisor writes its events (a host directory).
STATUS_DIR = "/plugin-dev/status"
EVENTS = "events.jsonl"
#: Where the dev plugin keeps bytecode: the source is read-only, and bytecode
#: the build host wrote next to it is never read (see plugin._dev).
PYCACHE = "/tmp/plugin-dev-pycache"
#: The dev plugin's mark: the host's project directory.
DEV_ENV = HOST_SOURCE_ENV
DESCRIPTION = "[dev mode: runs the source in {root} on the host that made it; never push] "

#: Left out of the dev rootfs: documentation nothing runs, about a quarter of
#: a Debian-based image (a quarter less to send to the daemon at each start).
NOT_NEEDED = ("usr/share/doc/*", "usr/share/man/*", "usr/share/info/*", "usr/share/locale/*")

Step = Callable[[str], Any]
Report = Callable[[str], None]


def dev_config(
    config: Mapping[str, Any], root: Path, status: Path, exclude: list[str]
) -> dict[str, Any]:
    """The dev variant of a rendered ``config.json``: ``root`` (the project
    directory) mounted read-only as the working directory, the supervisor as
    entrypoint writing its events into ``status``, and the dev mark.
    ``exclude``: directories of the project the supervisor does not watch."""
    out = copy.deepcopy(dict(config))
    entrypoint = list(out.get("entrypoint") or [])
    try:
        at = entrypoint.index("-m")
    except ValueError:
        at = -1
    if at < 0 or entrypoint[at + 1 : at + 2] != ["plugin"]:
        raise ConfigError(
            f"dev mode runs the kit's entrypoint (python -m plugin ...); this project's is "
            f"{entrypoint}: remove plugin.entrypoint from plugin.toml to use dev mode"
        )
    supervisor = ["plugin._dev", "--status", f"{STATUS_DIR}/{EVENTS}"]
    for path in exclude:
        supervisor += ["--exclude", path]
    out["entrypoint"] = entrypoint[: at + 1] + supervisor + entrypoint[at + 2 :]
    image_workdir = out.get("workdir") or "/"
    out["workdir"] = SOURCE_DIR
    env = [dict(e) for e in out.get("env") or []]
    # The image's working directory held its code (python -m put it on
    # sys.path): it stays importable, after the project's source.
    paths = [image_workdir]
    for entry in env:
        if entry.get("name") == "PYTHONPATH":
            paths += [p for p in str(entry.get("value") or "").split(":") if p]
    env = [e for e in env if e.get("name") not in ("PYTHONPATH", "PYTHONPYCACHEPREFIX")]
    env += [
        {
            "name": "PYTHONPATH",
            "description": "dev mode: the image's code after the mounted source",
            "value": ":".join(dict.fromkeys(paths)),
        },
        {
            "name": "PYTHONPYCACHEPREFIX",
            "description": "dev mode: bytecode in the plugin, never in the host's source",
            "value": PYCACHE,
        },
        {
            "name": DEV_ENV,
            "description": "dev mode: the project directory on the host this plugin runs from",
            "value": str(root),
        },
    ]
    out["env"] = env
    out["mounts"] = [
        *(dict(m) for m in out.get("mounts") or []),
        {
            "name": "dev-source",
            "description": "dev mode: the project's source, from the host",
            "settable": [],
            "source": str(root),
            "destination": SOURCE_DIR,
            "type": "bind",
            "options": ["rbind", "ro"],
        },
        {
            "name": "dev-status",
            "description": "dev mode: events for docker-plugin-kit dev",
            "settable": [],
            "source": str(status),
            "destination": STATUS_DIR,
            "type": "bind",
            "options": ["rbind"],
        },
    ]
    out["description"] = DESCRIPTION.format(root=root) + str(out.get("description") or "")
    return out


def dev_source(plugin: Mapping[str, Any] | None) -> str | None:
    """The host directory a dev plugin runs from, None for a normal plugin;
    ``plugin`` is an inspect document (or a config.json)."""
    if plugin is None:
        return None
    config = plugin.get("Config", plugin)
    for entry in config.get("Env") or config.get("env") or []:
        if (entry.get("Name") or entry.get("name")) == DEV_ENV:
            return str(entry.get("Value") or entry.get("value") or "") or None
    return None


def refuse_push(name: str, info: Mapping[str, Any] | None) -> None:
    """EngineError when ``name`` is a dev plugin."""
    source = dev_source(info)
    if source is not None:
        raise EngineError(
            f"push {name}: this is a dev plugin (docker-plugin-kit dev): it runs the source in "
            f"{source} on the host that made it, and would not work anywhere else; build a "
            "normal one first (make plugin, or docker-plugin-kit plugin), then push"
        )


# --- the bundle ---------------------------------------------------------------------


@dataclass
class DevBuild:
    bundle: Path
    config: dict[str, Any]
    #: What the drivers declared (plugin._dev.declarations) when it was built.
    declarations: dict[str, Any]


def build_dev_bundle(
    project: Project, client: Any, status: Path, step: Step, report: Report
) -> DevBuild:
    """The project's image (the normal build's steps up to docker build),
    exported whole into ``.build/dev/bundle/rootfs``, and the dev config."""
    from ._builder import _requirements, build_image_of
    from ._config import ImageFacts, check_config, render_config, template_context, write_json
    from ._rootfs import docker_errors, export_rootfs, make_dirs, tree_size

    forget_modules(project)
    built = build_image_of(project, client, step, report)
    image_id, attrs = built.image_id, built.attrs
    reqs = _requirements(built.drivers)
    bundle = dev_dir(project) / "bundle"
    rootfs = bundle / "rootfs"
    stamp_file = bundle / ".image"
    if rootfs.is_dir() and _read(stamp_file) == image_id:
        with step("export the whole rootfs"):
            report(f"{rootfs} is up to date")
    else:
        stamp_file.unlink(missing_ok=True)
        with step("export the whole rootfs"), docker_errors("export the rootfs"):
            export_rootfs(client, image_id, rootfs, report, exclude=NOT_NEEDED)
            report(f"{tree_size(rootfs) / 1e6:.1f} MB exported into {rootfs}")
        stamp_file.write_text(image_id)
    needed = ["/run/docker/plugins", SOURCE_DIR, STATUS_DIR, *(m.destination for m in reqs.mounts)]
    if reqs.propagated_mount:
        needed.append(reqs.propagated_mount)
    make_dirs(rootfs, needed, report)
    with step("render the dev config.json"):
        context = template_context(project, reqs, ImageFacts.from_inspect(attrs), rootfs)
        config = render_config(project.template_path, context)
        exclude = [project.output] if not project.output.startswith((".", "/")) else []
        config = dev_config(config, project.root, status, exclude)
        for warning in check_config(config, rootfs, str(bundle / "config.json")):
            report(f"warning: {warning}")
        write_json(bundle / "config.json", config)
    return DevBuild(bundle, config, declarations(built.drivers))


def forget_modules(project: Project) -> None:
    """Drop the drivers' packages from ``sys.modules``, so that the next
    import reads the source as it is now (the build host imports the drivers
    to read their declarations, and Python imports a module once)."""
    import importlib
    import sys

    packages = set(project.own_packages)
    packages.discard("plugin")  # the kit itself stays as it is
    for name in list(sys.modules):
        if name.split(".")[0] in packages:
            del sys.modules[name]
    importlib.invalidate_caches()


def dev_dir(project: Project) -> Path:
    return project.root / ".build" / "dev"


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


# --- the session --------------------------------------------------------------------


def _config_inputs(project: Project) -> list[Path]:
    """The files config.json and the image are made from, besides the drivers."""
    return [
        project.root / "plugin.toml",
        project.dockerfile_path,
        project.template_path,
        project.root / ".dockerignore",
        # Where the project's own file would replace the kit's.
        project.root / "Dockerfile",
        project.root / "config.json.j2",
    ]


def _stamps(paths: list[Path]) -> dict[str, tuple[int, int, int] | None]:
    out: dict[str, tuple[int, int, int] | None] = {}
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            out[str(path)] = None
        else:
            out[str(path)] = (st.st_mtime_ns, st.st_size, st.st_ino)
    return out


def _differences(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


@dataclass
class DevMode:
    """One ``docker-plugin-kit dev`` run: ``start()``, ``follow()``, ``leave()``."""

    project_path: Path
    name: str
    engine: Any
    out: TextIO
    step: Step
    report: Report
    settings: list[str] = field(default_factory=list)
    timeout: int = 30
    #: Seconds between two looks at the events and the config's inputs.
    poll: float = 0.2
    #: The plugin's ID while dev mode runs it.
    plugin_id: str | None = None
    #: A normal plugin of this name was there: put a normal build back at the end.
    restore: bool = False
    build: DevBuild | None = None
    project: Project | None = None
    _offset: int = 0
    _inputs: dict[str, Any] = field(default_factory=dict)
    _rebuilt_for: dict[str, Any] | None = None

    def say(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        lines = text.splitlines() or [""]
        print(f"{stamp} {lines[0]}", file=self.out, flush=True)
        for line in lines[1:]:
            print(f"         {line}", file=self.out, flush=True)

    @property
    def status(self) -> Path:
        assert self.project is not None
        return dev_dir(self.project) / "status"

    # -- starting -------------------------------------------------------------------

    def start(self) -> None:
        from ._engine import _local_daemon

        if not _local_daemon(self.engine.api):
            raise BundleError(
                "dev mode runs the project's source from this host: the Docker daemon must "
                f"run here too (DOCKER_HOST is {os.environ.get('DOCKER_HOST')})"
            )
        old = self.engine.inspect(self.name)
        if old is not None and dev_source(old) is None:
            self.restore = True
            self.report(
                f"{self.name} is a normal build: dev mode replaces it, and builds it again "
                "when you leave"
            )
        self._create()

    def _create(self) -> None:
        """Build the dev bundle and (re)create the plugin from it."""
        self.project = load_project(self.project_path)
        self._inputs = _stamps(_config_inputs(self.project))
        self.status.mkdir(parents=True, exist_ok=True)
        (self.status / EVENTS).unlink(missing_ok=True)
        self._offset = 0
        self.build = build_dev_bundle(
            self.project, self.engine.client, self.status, self.step, self.report
        )
        with self.step(f"create {self.name} (dev)"):
            self.plugin_id = self.engine.create(self.name, self.build.bundle, replace=True)
            self.report(f"id {self.plugin_id[:12]}")
        if self.settings:
            with self.step("set " + " ".join(self.settings)):
                self.engine.set(self.name, self.settings)
        with self.step(f"enable {self.name}"):
            self.engine.enable(self.name, timeout=self.timeout)

    # -- following ------------------------------------------------------------------

    def follow(self, until: Callable[[], bool] | None = None) -> None:
        """Print the plugin's events and rebuild when the config's inputs or
        the drivers' declarations change, until ``until()`` or Leave."""
        assert self.project is not None
        print(
            f"\ndev mode: {self.name} runs the source in {self.project.root} from this host; "
            "save a file and the plugin reloads. Ctrl-C leaves dev mode.",
            file=self.out,
            flush=True,
        )
        watcher: Watcher | None = None  # after a failed rebuild: retry on any save
        last_check = 0.0
        while until is None or not until():
            rebuild = None
            for event in self._events():
                rebuild = self._show(event) or rebuild
            changed = _differences(self._inputs, _stamps(_config_inputs(self.project)))
            if changed:
                names = ", ".join(Path(p).name for p in changed)
                rebuild = f"{names} changed"
            if watcher is not None and watcher.changes():
                rebuild = "the source changed"
            if rebuild:
                watcher = None if self._rebuild(rebuild) else Watcher(self.project.root)
            if time.monotonic() - last_check > 2:
                last_check = time.monotonic()
                if not self._still_ours():
                    return
            time.sleep(self.poll)

    def _events(self) -> Iterator[dict[str, Any]]:
        try:
            with open(self.status / EVENTS, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return
        end = data.rfind(b"\n") + 1
        self._offset += end
        for line in data[:end].splitlines():
            try:
                yield json.loads(line)
            except ValueError:
                continue

    def _show(self, event: dict[str, Any]) -> str | None:
        """Print one event; the reason to rebuild, if it gives one."""
        kind = event.get("event")
        changed = ", ".join(event.get("changed") or [])
        if kind == "listening":
            self.say(f"the plugin listens; watching {event.get('watching')} files")
        elif kind == "serving":
            self.say(
                f"serving (server {event.get('generation')}, ready in {event.get('seconds')} s)"
            )
        elif kind == "reloaded":
            self.say(f"{changed} changed: reloaded in {event.get('seconds')} s")
        elif kind == "failed":
            then = (
                "still serving the previous code until the next save"
                if event.get("serving") == "previous"
                else "every call answers with this error until the next save"
            )
            head = f"{changed} changed: error: " if changed else "error: "
            detail = str(event.get("detail") or "").rstrip()
            self.say(
                head + str(event.get("error")) + ("\n" + detail if detail else "") + "\n" + then
            )
        elif kind == "exited":
            self.say(f"{event.get('error')}: started again")
        elif kind == "stopped":
            self.say("the plugin stopped (disabled?)")
        decl = event.get("declarations")
        if decl is None or self.build is None or decl == self.build.declarations:
            return None
        fields = ", ".join(_differences(self.build.declarations, decl))
        if decl == self._rebuilt_for:
            # Built again for these, and this host still reads others: say so
            # once, never rebuild in a loop.
            self.say(
                f"warning: the drivers in the plugin declare other {fields} than this host "
                "imports them with; config.json follows this host's"
            )
            self._rebuilt_for = None
            return None
        self._rebuilt_for = decl
        return f"the drivers' declarations changed ({fields}): config.json changes"

    def _rebuild(self, why: str) -> bool:
        """Create the dev plugin again; False (and the error printed) if that
        fails: the next save tries again."""
        self.say(f"{why}: building the dev plugin again")
        if self.project is not None:  # a failure waits for the next change
            self._inputs = _stamps(_config_inputs(self.project))
        try:
            self._create()
        except BundleError as exc:
            self.say(f"error: {exc}\nfix it and save: dev mode tries again")
            return False
        return True

    def _still_ours(self) -> bool:
        info = self.engine.inspect(self.name)
        if info is None or info.get("Id") != self.plugin_id:
            self.say(f"{self.name} was removed or replaced (by make plugin?): leaving dev mode")
            self.plugin_id = None
            self.restore = False
            return False
        return True

    # -- leaving --------------------------------------------------------------------

    def leave(self) -> None:
        """Remove the dev plugin, or build a normal one in its place when it
        replaced one; then remove .build/dev."""
        try:
            info = self.engine.inspect(self.name)
            ours = info is not None and info.get("Id") == self.plugin_id
            if info is not None and not ours:
                pass  # someone else's now (make plugin): left alone
            elif self.restore:  # also when dev mode failed before its plugin was made
                self._restore()
            elif ours:
                with self.step(f"remove the dev plugin {self.name}"):
                    self.engine.remove(self.name, force=True)
        finally:
            if self.project is not None:
                shutil.rmtree(dev_dir(self.project), ignore_errors=True)

    def _restore(self) -> None:
        from ._builder import build_bundle

        assert self.project is not None
        print(
            f"\nleaving dev mode: a normal build of {self.name} takes the dev plugin's place",
            file=self.out,
            flush=True,
        )
        try:
            result = build_bundle(self.project, self.engine.client, self.step, self.report)
            with self.step(f"create {self.name}"):
                self.engine.create(self.name, result.bundle, replace=True)
            with self.step(f"enable {self.name}"):
                self.engine.enable(self.name, timeout=self.timeout)
        except (BundleError, KeyboardInterrupt) as exc:
            reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
            with self.step(f"remove the dev plugin {self.name}"):
                self.engine.remove(self.name, force=True)  # False if it is not there
            raise BundleError(
                f"the normal build failed ({reason}); the dev plugin is removed: "
                "make plugin builds the plugin again"
            ) from None


@contextmanager
def leave_on_signals() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # SIGINT too: a shell starts background jobs with SIGINT ignored.
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
