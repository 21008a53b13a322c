"""The plugin as a host service, outside Docker's plugin manager: a systemd
socket and service unit, and a spec file, made from the same project.

The daemon finds such a (legacy) plugin by its socket in
``/run/docker/plugins/NAME.sock`` or by a spec file in ``/etc/docker/plugins``
(``NAME.spec``: one URL; ``NAME.json``: ``{"Addr": URL, "TLSConfig": ...}``),
and activates it on first use. systemd owns the socket (``NAME.socket``) and
starts the service on the first connection, which the plugin answers
(socket activation, ``LISTEN_FDS``). A host service has no mounts: the unit
points each declared mount (``PLUGIN_MOUNT_<NAME>``) and the propagated mount
(``PLUGIN_PROPAGATED_MOUNT``) at host directories, which ``Mount.path()``
and ``propagated_mount_path()`` return to the driver, and sets the declared
environment's defaults. It runs as root, as a managed plugin does.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from .._listen import Listener, parse_address
from .._requirements import Requirements
from ..manifest import PROPAGATED_MOUNT_ENV
from ._errors import BundleError
from ._project import Project

__all__ = ["ServiceTLS", "service_files"]

SPEC_DIR = "/etc/docker/plugins"
SOCKET_DIR = "/run/docker/plugins"


@dataclass(frozen=True)
class ServiceTLS:
    """TLS for an ``https://`` service: the plugin's certificate and key,
    the CA that signed it (which the daemon trusts), and optionally the
    daemon's own certificate and key, which the plugin then requires."""

    cert: str
    key: str
    ca: str
    daemon_cert: str | None = None
    daemon_key: str | None = None


def _service_name(project: Project) -> str:
    """The legacy plugin's name (the driver name users give): the plugin
    name without registry, path or tag."""
    return project.name.rsplit("/", 1)[-1].split(":", 1)[0]


def _assignment(key: str, value: str) -> str:
    """One ``Environment=`` assignment, quoted whole when it needs to be."""
    text = f"{key}={value}"
    if all(c.isalnum() or c in "/._-:,=+@" for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def service_files(
    project: Project,
    reqs: Requirements,
    *,
    listen: str | None = None,
    tls: ServiceTLS | None = None,
    python: str | None = None,
) -> dict[str, str]:
    """The files that run ``project`` as a host service, by file name:
    ``NAME.socket`` and ``NAME.service`` (systemd), and for a TCP address
    (``listen``) the spec file ``NAME.spec`` or, with TLS, ``NAME.json``.
    Without ``listen`` the socket is ``/run/docker/plugins/NAME.sock``,
    which the daemon finds by itself."""
    name = _service_name(project)
    try:
        listener = parse_address(listen, "--listen") if listen else None
    except ValueError as exc:
        raise BundleError(str(exc)) from None
    if listener is not None and listener.scheme == "unix":
        raise BundleError(
            f"--listen {listen}: a unix socket is {SOCKET_DIR}/{name}.sock, found by the daemon "
            "without a spec file; --listen is for tcp:// or https://"
        )
    if listener is not None and listener.tls and tls is None:
        raise BundleError(
            f"--listen {listen} asks for TLS: give --tls-cert, --tls-key and --tls-ca"
        )
    if tls is not None and not (listener is not None and listener.tls):
        raise BundleError("--tls-cert and the like need --listen https://HOST:PORT")
    if tls is not None and bool(tls.daemon_cert) != bool(tls.daemon_key):
        raise BundleError("--daemon-cert and --daemon-key go together")
    files: dict[str, str] = {}
    description = project.description or f"{name} Docker plugin"
    spec = None
    if listener is not None:
        spec = _spec(name, listener, tls)
        files[Path(spec[0]).name] = spec[1]
    files[f"{name}.socket"] = _socket_unit(name, description, listener)
    files[f"{name}.service"] = _service_unit(
        project, reqs, name, description, spec[0] if spec else None, tls, python
    )
    return files


def _spec(name: str, listener: Listener, tls: ServiceTLS | None) -> tuple[str, str]:
    if tls is None:
        return f"{SPEC_DIR}/{name}.spec", f"{listener}\n"
    config: dict[str, str] = {"CAFile": tls.ca}
    if tls.daemon_cert and tls.daemon_key:
        config.update(CertFile=tls.daemon_cert, KeyFile=tls.daemon_key)
    text = json.dumps({"Addr": str(listener), "TLSConfig": config}, indent=2) + "\n"
    return f"{SPEC_DIR}/{name}.json", text


def _socket_unit(name: str, description: str, listener: Listener | None) -> str:
    if listener is None:
        where = f"{SOCKET_DIR}/{name}.sock"
        extra = "SocketMode=0660\n"
    else:
        host = f"[{listener.host}]" if ":" in listener.host else listener.host
        where = f"{host}:{listener.port}"
        extra = ""
    return (
        f"# The socket the daemon dials; systemd starts {name}.service on the first\n"
        f"# connection, and the plugin answers it. Made by docker-plugin-kit service.\n"
        f"[Unit]\nDescription={description} (socket)\nPartOf={name}.service\n\n"
        f"[Socket]\nListenStream={where}\n{extra}\n"
        "[Install]\nWantedBy=sockets.target\n"
    )


def _service_unit(
    project: Project,
    reqs: Requirements,
    name: str,
    description: str,
    spec: str | None,
    tls: ServiceTLS | None,
    python: str | None,
) -> str:
    # The project's packages, and the kit this command runs when it is not
    # an installed one (a checkout): the same runtime as a bundle gets.
    paths = [str(project.root)]
    kit = Path(__file__).resolve().parents[2]
    if kit.name not in ("site-packages", "dist-packages"):
        paths.append(str(kit))
    env: list[tuple[str, str]] = [
        ("PYTHONPATH", os.pathsep.join(paths)),
        ("PYTHONUNBUFFERED", "1"),
    ]
    dirs = []
    for mount in reqs.mounts:
        if mount.source:
            env.append((mount.host_env, mount.source))
            dirs.append(mount.source)
    if reqs.propagated_mount:
        propagated = f"/var/lib/docker-plugin-{name}/propagated-mount"
        env.append((PROPAGATED_MOUNT_ENV, propagated))
        dirs.append(propagated)
    for item in reqs.env:
        if item.value is not None:
            env.append((item.name, item.value))
    command = [python or sys.executable, "-m", "plugin"]
    if spec is not None:
        command += ["--spec", spec]
    if tls is not None:
        command += ["--tls-cert", tls.cert, "--tls-key", tls.key]
        if tls.daemon_cert:
            command += ["--tls-client-ca", tls.ca]
    command += list(project.drivers)
    lines = [
        "# The plugin as a host service, started by its socket. Made by",
        "# docker-plugin-kit service from the project's plugin.toml and drivers:",
        "# edit the Environment= lines for this host (what docker plugin set",
        "# would change for a managed plugin).",
        "[Unit]",
        f"Description={description}",
    ]
    if project.documentation:
        lines.append(f"Documentation={project.documentation}")
    lines += [
        f"Requires={name}.socket",
        f"After={name}.socket",
        "Before=docker.service",
        "",
        "[Service]",
        *(f"Environment={_assignment(key, value)}" for key, value in env),
    ]
    if dirs:
        lines.append("ExecStartPre=/bin/mkdir -p " + " ".join(shlex.quote(d) for d in dirs))
    lines += [
        "ExecStart=" + " ".join(shlex.quote(part) for part in command),
        # SIGTERM: in-flight calls get 8 s.
        "TimeoutStopSec=10",
        "Restart=on-failure",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return "\n".join(lines)
