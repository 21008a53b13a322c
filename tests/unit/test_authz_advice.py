"""The builder tells the operator that an enabled authorization plugin does
nothing until the daemon lists it in authorization-plugins, and how to make it."""

from __future__ import annotations

from typing import Any

from plugin.bundle.__main__ import authz_advice

SNIPPET_TAIL = [
    "and reload the daemon: sudo kill -HUP $(pidof dockerd) (or sudo systemctl reload docker).",
    "Reload only with names `docker plugin ls` shows enabled: the daemon exits on a name",
    "it cannot find. If the plugin then stops answering, every docker command fails: the",
    "way back is in the kit's README (Authorization plugins: lockout and recovery).",
]


class Daemon:
    def __init__(self, listed: Any) -> None:
        self.listed = listed

    def authorization_plugins(self) -> list[str] | None:
        return self.listed


def test_a_plugin_the_daemon_does_not_ask_yet_gets_the_daemon_json_snippet() -> None:
    assert authz_advice("acme/authz:latest", Daemon([])) == [
        "The daemon does not ask acme/authz:latest yet: an authorization plugin acts only once",
        "the daemon lists it in authorization-plugins. When its policy is in place, add to",
        "/etc/docker/daemon.json",
        '    {"authorization-plugins": ["acme/authz:latest"]}',
        *SNIPPET_TAIL,
    ]


def test_the_snippet_keeps_the_plugins_already_listed() -> None:
    lines = authz_advice("acme/authz:2", Daemon(["opa:latest", "acme/authz:1"]))
    assert (
        lines[3] == '    {"authorization-plugins": ["opa:latest", "acme/authz:1", "acme/authz:2"]}'
    )


def test_a_listed_plugin_is_said_to_be_in_use_whatever_the_spelling() -> None:
    for listed in (["acme/authz"], ["acme/authz:latest"], ["other", "acme/authz"]):
        assert authz_advice("acme/authz:latest", Daemon(listed)) == [
            f"The daemon asks it about every request (authorization-plugins: {', '.join(listed)})."
        ]


def test_a_daemon_that_cannot_be_asked() -> None:
    assert authz_advice("acme/authz:latest", Daemon(None)) == [
        "Could not ask the daemon whether it uses acme/authz:latest: an authorization plugin "
        "acts only once the daemon lists it in authorization-plugins (daemon.json)."
    ]


def test_the_engine_reads_the_daemon_info() -> None:
    from plugin.bundle._engine import Engine

    class Client:
        api = None

        def __init__(self, info: Any) -> None:
            self._info = info

        def info(self) -> Any:
            if isinstance(self._info, Exception):
                raise self._info
            return self._info

    assert Engine(Client({"Plugins": {"Authorization": None}})).authorization_plugins() == []
    assert Engine(Client({"Plugins": {"Authorization": ["a"]}})).authorization_plugins() == ["a"]
    assert Engine(Client(ConnectionError("gone"))).authorization_plugins() is None
