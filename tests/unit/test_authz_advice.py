"""The builder tells the operator that an enabled authorization plugin does
nothing until the daemon lists it in authorization-plugins, and how to make it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from plugin.bundle import _engine
from plugin.bundle.__main__ import authz_advice
from plugin.bundle._engine import AuthzConfig, Engine, daemon_config_file

SNIPPET_TAIL = [
    "and reload the daemon: sudo kill -HUP $(pidof dockerd) (or sudo systemctl reload docker).",
    "Reload only with names `docker plugin ls` shows enabled: the daemon exits on a name",
    "it cannot find. If the plugin then stops answering, every docker command fails: the",
    "way back is in the kit's README, under Lockout and recovery.",
]


class Daemon:
    def __init__(self, at_start: Any, path: str | None = None, in_file: Any = None) -> None:
        self.state = AuthzConfig(at_start, Path(path) if path else None, in_file)

    def authorization_plugins(self) -> AuthzConfig:
        return self.state


def test_a_plugin_the_daemon_does_not_ask_yet_gets_the_daemon_json_snippet() -> None:
    assert authz_advice("acme/authz:latest", Daemon([])) == [
        "The daemon does not ask acme/authz:latest yet: an authorization plugin acts only once",
        "the daemon lists it in authorization-plugins. When its policy is in place, add to",
        "/etc/docker/daemon.json",
        '    {"authorization-plugins": ["acme/authz:latest"]}',
        *SNIPPET_TAIL,
    ]


def test_the_snippet_names_the_daemons_file_and_keeps_its_plugins() -> None:
    lines = authz_advice("acme/authz:2", Daemon(["opa"], "/srv/daemon.json", ["opa", "acme/a"]))
    assert lines[2:4] == [
        "/srv/daemon.json",
        '    {"authorization-plugins": ["opa", "acme/a", "acme/authz:2"]}',
    ]
    # Without the file, the daemon's own list.
    lines = authz_advice("acme/authz:2", Daemon(["opa:latest"]))
    assert lines[3] == '    {"authorization-plugins": ["opa:latest", "acme/authz:2"]}'


def test_a_plugin_the_daemon_started_with_is_in_use_whatever_the_spelling() -> None:
    for listed in (["acme/authz"], ["acme/authz:latest"], ["other", "acme/authz"]):
        assert authz_advice("acme/authz:latest", Daemon(listed)) == [
            f"The daemon asks it about every request (authorization-plugins: {', '.join(listed)})."
        ]


def test_a_plugin_only_in_the_file_waits_for_a_reload() -> None:
    # dockerd 20.10's info keeps the list it started with: a reload is not seen there.
    assert authz_advice("acme/authz", Daemon([], "/etc/docker/daemon.json", ["acme/authz"])) == [
        "/etc/docker/daemon.json lists it in authorization-plugins: the daemon asks it once "
        "reloaded",
        "(sudo kill -HUP $(pidof dockerd)); `docker info` shows the list the daemon",
        "started with.",
    ]


def fake_proc(root: Path, *processes: tuple[str, list[str]]) -> Path:
    for pid, (comm, argv) in enumerate(processes, start=100):
        entry = root / str(pid)
        entry.mkdir(parents=True)
        (entry / "comm").write_text(comm + "\n")
        (entry / "cmdline").write_bytes("\0".join(argv).encode() + b"\0")
    (root / "self").mkdir()
    return root


def test_the_daemon_json_of_the_daemon_behind_docker_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = fake_proc(
        tmp_path,
        ("bash", ["bash"]),
        ("dockerd", ["dockerd", "--pidfile", "/run/d.pid"]),
        ("dockerd", ["dockerd", "-H", "unix:///run/p/docker.sock", "--config-file=/p/d.json"]),
        ("dockerd", ["dockerd", "--host=unix:///run/q.sock", "--host", "tcp://0.0.0.0:2376"]),
    )
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    assert daemon_config_file(proc) == Path("/etc/docker/daemon.json")
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/p/docker.sock")
    assert daemon_config_file(proc) == Path("/p/d.json")
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/q.sock")
    assert daemon_config_file(proc) == Path("/etc/docker/daemon.json")
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/nobody.sock")
    assert daemon_config_file(proc) is None
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.0.0.1:2376")
    assert daemon_config_file(proc) is None


class Client:
    class api:  # docker-py names it so
        base_url = "http+docker://localhost"

    def __init__(self, info: Any) -> None:
        self._info = info

    def info(self) -> Any:
        if isinstance(self._info, Exception):
            raise self._info
        return self._info


def test_the_engine_reads_the_daemon_info_and_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "daemon.json"
    monkeypatch.setattr(_engine, "daemon_config_file", lambda: config)
    info = {"Plugins": {"Authorization": None}}
    assert Engine(Client(info)).authorization_plugins() == AuthzConfig([], config, [])
    config.write_text(json.dumps({"debug": True, "authorization-plugins": ["acme/authz"]}))
    info = {"Plugins": {"Authorization": ["opa"]}}
    assert Engine(Client(info)).authorization_plugins() == AuthzConfig(
        ["opa"], config, ["acme/authz"]
    )
    config.write_text("{not json")
    assert Engine(Client(ConnectionError("gone"))).authorization_plugins() == AuthzConfig(
        None, config, None
    )
    monkeypatch.setattr(_engine, "daemon_config_file", lambda: None)
    assert Engine(Client(info)).authorization_plugins() == AuthzConfig(["opa"], None, None)
