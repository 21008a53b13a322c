"""policyauthz through the SDK, as the daemon calls it: decisions, the policy
file's life (missing, invalid, edited), and the decision log."""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from policyauthz.driver import PolicyAuthz

from plugin.testing import PluginClient

OWN_ID = "c0ffee" + "0" * 58
POLICY = """\
version: 1
default: allow
rules:
  plugins: deny
  privileged: deny
  host_mounts: deny
  exec: deny
  read_only: allow
host_mount_allow: [/srv/shared]
self: [acme/policyauthz]
users:
  alice:
    rules: {privileged: off, exec: allow, host_mounts: off}
  ci:
    default: deny
"""


def body_of(data: Any) -> dict[str, str]:
    raw = json.dumps(data).encode() if not isinstance(data, bytes) else data
    return {"RequestBody": base64.b64encode(raw).decode()}


def ask(
    client: PluginClient,
    method: str,
    uri: str,
    body: Any = None,
    *,
    user: str = "",
    headers: dict[str, str] | None = None,
) -> tuple[bool, str]:
    """The decision on one request, as (allowed, message)."""
    request: dict[str, Any] = {"RequestMethod": method, "RequestUri": uri}
    if body is not None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        request.update(body_of(raw))
        request["RequestHeaders"] = {
            "Content-Type": "application/json",
            "Content-Length": str(len(raw)),
        }
    if headers is not None:
        request["RequestHeaders"] = headers
    if user:
        request.update(User=user, UserAuthNMethod="TLS")
    answer = client.call("AuthZPlugin.AuthZReq", request)
    assert set(answer) == {"Allow", "Msg"}
    return answer["Allow"], answer["Msg"]


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    (tmp_path / "policy.yaml").write_text(POLICY)
    return tmp_path


@pytest.fixture
def client(policy_dir: Path) -> Any:
    with PluginClient(PolicyAuthz(str(policy_dir), own_id=OWN_ID)) as c:
        yield c


CREATE = "/v1.41/containers/create"
PRIVILEGED = "privileged containers are denied (rule privileged)"


# --- the rules -------------------------------------------------------------------------------


def test_an_ordinary_container_is_allowed(client: PluginClient) -> None:
    body = {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"Binds": ["data:/data"]}}
    assert ask(client, "POST", CREATE, body) == (True, "")


def test_privileged_containers_are_denied(client: PluginClient) -> None:
    assert ask(client, "POST", CREATE, {"Image": "x", "HostConfig": {"Privileged": True}}) == (
        False,
        PRIVILEGED,
    )


@pytest.mark.parametrize(
    "body",
    [
        b'{"Image": "x", "HostConfig": {"Privileged": false, "privileged": true}}',
        b'{"Image": "x", "HostConfig": {"PRIVILEGED": true}}',
        b'{"Image": "x", "hostconfig": {"Privileged": true}}',
        '{"Image": "x", "Ho\u017ftConfig": {"Privileged": true}}'.encode(),
        b'{"Image": "x", "HostConfig": {"Privileged": true, "privileged": null}}',
        b'{"Image": "x", "Privileged": true}',
        b'{"Image": "x", "Privileged": true, "HostConfig": null}',
        b'{"Image": "x", "HostConfig": {"Privil\\u0065ged": true}}',
        b'{"Image": "x", "HostConfig": {"Privileged": true}} {"HostConfig": {}}',
    ],
)
def test_spellings_the_daemon_reads_as_privileged_are_denied(
    client: PluginClient, body: bytes
) -> None:
    assert ask(client, "POST", CREATE, body) == (False, PRIVILEGED)


def test_privileged_with_an_inner_host_config_is_what_the_daemon_ignores(
    client: PluginClient,
) -> None:
    # The daemon uses the HostConfig member when there is one: the top-level
    # Privileged is then ignored, and so is it here.
    body = b'{"Image": "x", "Privileged": true, "HostConfig": {}}'
    assert ask(client, "POST", CREATE, body) == (True, "")


@pytest.mark.parametrize(
    "uri",
    [
        "/containers/create",
        "/v1.24/containers/create?name=x",
        "/v1.41/containers/%63reate",
        "/v1.41//containers/create",
        "http://docker:2375/v1.41/containers/create",
    ],
)
def test_every_way_of_naming_the_call_is_checked(client: PluginClient, uri: str) -> None:
    assert ask(client, "POST", uri, {"HostConfig": {"Privileged": True}}) == (False, PRIVILEGED)


def test_a_privileged_exec_is_denied_even_where_exec_is_allowed(policy_dir: Path) -> None:
    uri = "/v1.41/containers/web/exec"
    # alice may exec; with privileged off (the fixture's policy) even privileged.
    with PluginClient(PolicyAuthz(str(policy_dir), own_id=OWN_ID)) as client:
        assert ask(client, "POST", uri, {"Cmd": ["sh"], "privileged": True}, user="alice") == (
            True,
            "",
        )
        (policy_dir / "policy.yaml").write_text(POLICY.replace("privileged: off, ", ""))
        assert ask(client, "POST", uri, {"Cmd": ["sh"], "Privileged": True}, user="alice") == (
            False,
            "privileged exec is denied (rule privileged)",
        )
        assert ask(client, "POST", uri, {"Cmd": ["sh"]}, user="alice") == (True, "")


def test_exec_is_denied(client: PluginClient) -> None:
    assert ask(client, "POST", "/v1.41/containers/web/exec", {"Cmd": ["sh"]}) == (
        False,
        "docker exec is denied (rule exec)",
    )
    assert ask(client, "POST", "/v1.41/exec/0123abcd/start", {"Detach": False}) == (
        False,
        "docker exec is denied (rule exec)",
    )


def test_read_only_calls_are_allowed_even_when_the_default_denies(client: PluginClient) -> None:
    for uri in ("/v1.41/containers/json?all=1", "/_ping", "/v1.41/images/json", "/v1.41/info"):
        assert ask(client, "GET", uri, user="ci") == (True, ""), uri
    assert ask(client, "HEAD", "/_ping", user="ci") == (True, "")
    denied = (False, "the policy denies what no rule decides (rule default)")
    assert ask(client, "POST", "/v1.41/containers/web/start", user="ci") == denied
    # A websocket attach is a GET that types into the container.
    assert ask(client, "GET", "/v1.41/containers/web/attach/ws?stdin=1", user="ci") == denied


HOST_MOUNT = "mounting the host path {} is denied (rule host_mounts; allowed: /srv/shared)"


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"HostConfig": {"Binds": ["/etc:/host/etc:ro"]}}, "/etc"),
        ({"HostConfig": {"Binds": ["/srv/shared/../../etc:/x"]}}, "/etc"),
        ({"HostConfig": {"Binds": ["/srv/sharedx:/x"]}}, "/srv/sharedx"),
        ({"Binds": ["/:/host"]}, "/"),
        ({"HostConfig": {"Mounts": [{"Type": "bind", "Source": "/var/run/docker.sock"}]}},
         "/var/run/docker.sock"),
        ({"HostConfig": {"Mounts": [{"type": "BIND", "source": "/root"}]}}, "/root"),
        ({"HostConfig": {"Mounts": [{"Type": "volume", "VolumeOptions": {"DriverConfig": {
            "Name": "local", "Options": {"type": "none", "o": "bind", "device": "/etc"}}}}]}},
         "/etc"),
        ({"HostConfig": {"Devices": [{"PathOnHost": "/dev/sda", "PathInContainer": "/dev/x"}]}},
         "/dev/sda"),
    ],
)  # fmt: skip
def test_host_mounts_outside_the_allow_list_are_denied(
    client: PluginClient, body: dict[str, Any], path: str
) -> None:
    assert ask(client, "POST", CREATE, body) == (False, HOST_MOUNT.format(path))


def test_host_mounts_inside_the_allow_list_are_allowed(client: PluginClient) -> None:
    body = {
        "HostConfig": {
            "Binds": ["/srv/shared:/a", "/srv/shared/x/y:/b:ro", "named:/c", "/anonymous"],
            "Mounts": [
                {"Type": "bind", "Source": "/srv/shared/z", "Target": "/d"},
                {"Type": "volume", "Source": "v", "Target": "/e"},
                {"Type": "tmpfs", "Target": "/f"},
            ],
        }
    }
    assert ask(client, "POST", CREATE, body) == (True, "")
    # A user for whom the rule is off may mount anything.
    assert ask(client, "POST", CREATE, {"HostConfig": {"Binds": ["/:/h"]}}, user="alice") == (
        True,
        "",
    )


def test_a_merged_mount_is_seen_as_the_daemon_sees_it(client: PluginClient) -> None:
    # The second array's element is decoded into the first one's: a bind of /etc.
    body = (
        b'{"HostConfig": {"Mounts": [{"Type": "bind", "Source": "/etc", "Target": "/x"}],'
        b' "mounts": [{"Target": "/y"}]}}'
    )
    assert ask(client, "POST", CREATE, body) == (False, HOST_MOUNT.format("/etc"))


def test_volumes_and_services_that_mount_the_host(client: PluginClient) -> None:
    volume = {"Name": "v", "Driver": "local", "DriverOpts": {"o": "bind", "device": "/etc"}}
    assert ask(client, "POST", "/v1.41/volumes/create", volume) == (
        False,
        HOST_MOUNT.format("/etc"),
    )
    ok = {"Name": "v", "DriverOpts": {"type": "nfs", "device": ":/export", "o": "addr=1.2.3.4"}}
    assert ask(client, "POST", "/v1.41/volumes/create", ok) == (True, "")
    other_driver = {"Name": "v", "Driver": "acme/vol", "DriverOpts": {"device": "/etc"}}
    assert ask(client, "POST", "/v1.41/volumes/create", other_driver) == (True, "")
    spec = {
        "Name": "s",
        "TaskTemplate": {"ContainerSpec": {"Mounts": [{"Type": "bind", "Source": "/etc"}]}},
    }
    assert ask(client, "POST", "/v1.41/services/create", spec) == (
        False,
        HOST_MOUNT.format("/etc"),
    )
    assert ask(client, "POST", "/v1.41/services/abc/update?version=3", spec) == (
        False,
        HOST_MOUNT.format("/etc"),
    )


# --- bodies the daemon does not forward ---------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        (
            {"Content-Type": "application/json"},
            "the request has no Content-Length: the daemon does not forward a body sent in chunks",
        ),
        (
            {"Content-Type": "application/json", "Content-Length": "2000000"},
            "the body is 2000000 bytes: the daemon forwards bodies under 1048576 bytes only",
        ),
        (
            {"Content-Type": "text/plain", "Content-Length": "40"},
            "the body is not JSON (Content-Type 'text/plain'): the daemon forwards JSON only",
        ),
        ({"Content-Length": "0"}, "the request has no body"),
    ],
)
def test_a_body_the_policy_needs_but_cannot_see_is_denied(
    client: PluginClient, headers: dict[str, str], why: str
) -> None:
    assert ask(client, "POST", CREATE, headers=headers) == (
        False,
        f"the request body cannot be checked: {why} (rule body)",
    )


def test_a_body_the_daemon_would_refuse_is_denied(client: PluginClient) -> None:
    assert ask(client, "POST", CREATE, b'{"HostConfig": {"Privileged": "true"}}') == (
        False,
        "the request body cannot be checked: HostConfig.Privileged: string where the daemon "
        "expects bool (rule body)",
    )
    assert ask(client, "POST", CREATE, b'{"Image": ') == (
        False,
        "the request body cannot be checked: invalid JSON: Expecting value: line 1 column 11 "
        "(char 10) (rule body)",
    )


def test_calls_without_a_body_need_none(client: PluginClient) -> None:
    # docker login: the daemon never forwards the body of /auth.
    assert ask(client, "POST", "/v1.41/auth", headers={"Content-Length": "80"}) == (True, "")
    assert ask(client, "POST", "/v1.41/containers/web/start") == (True, "")
    assert ask(client, "POST", "/v1.41/containers/web/stop?t=1") == (True, "")
    assert ask(client, "DELETE", "/v1.41/containers/web?force=1") == (True, "")


# --- protecting itself -----------------------------------------------------------------------

PLUGIN_CALLS = [
    ("POST", "/v1.41/plugins/{}/disable", "disable"),
    ("DELETE", "/v1.41/plugins/{}?force=1", "rm"),
    ("POST", "/v1.41/plugins/{}/set", "set"),
    ("POST", "/v1.41/plugins/{}/upgrade?remote=acme/policyauthz:2", "upgrade"),
]


@pytest.mark.parametrize(("method", "uri", "verb"), PLUGIN_CALLS)
@pytest.mark.parametrize(
    "name",
    [
        "acme/policyauthz",
        "acme/policyauthz:latest",
        "docker.io/acme/policyauthz:latest",
        "c0ffee",
        "c",
        OWN_ID,
    ],
)
def test_changing_this_plugin_is_denied(
    client: PluginClient, method: str, uri: str, verb: str, name: str
) -> None:
    assert ask(client, method, uri.format(name)) == (
        False,
        f"{verb} of the authorization plugin {name} is denied (rule plugins)",
    )


def test_other_plugins_may_be_changed(client: PluginClient) -> None:
    for method, uri, _ in PLUGIN_CALLS:
        for name in ("acme/other", "acme/policyauthz:2", "beef", "localvol:latest"):
            assert ask(client, method, uri.format(name)) == (True, ""), (uri, name)
    assert ask(client, "POST", "/v1.41/plugins/acme/policyauthz/enable") == (True, "")


def test_without_its_names_every_plugin_may_be_this_one(policy_dir: Path) -> None:
    (policy_dir / "policy.yaml").write_text(POLICY.replace("self: [acme/policyauthz]\n", ""))
    with PluginClient(PolicyAuthz(str(policy_dir), own_id=OWN_ID)) as client:
        assert ask(client, "POST", "/v1.41/plugins/anything:1/disable") == (
            False,
            "disable of the authorization plugin anything:1 is denied (rule plugins)",
        )


# --- the policy file ---------------------------------------------------------------------------


def test_no_policy_denies_everything(tmp_path: Path) -> None:
    with PluginClient(PolicyAuthz(str(tmp_path), own_id=OWN_ID)) as client:
        assert ask(client, "GET", "/_ping") == (
            False,
            f"no usable authorization policy: no policy file in {tmp_path} (write "
            f"{tmp_path}/policy.yaml on the host's policy.source directory) (rule policy)",
        )


INVALID = {
    "version: 2\n": "version: 2 is not a version this plugin reads (1)",
    "rules: {}\n": "version: missing (write version: 1)",
    "version: 1\nrule: {privileged: deny}\n": (
        "rule: unknown key (known: default, host_mount_allow, rules, self, users, version)"
    ),
    "version: 1\nrules: {privileged: maybe}\n": (
        "rules.privileged: must be deny or off, not 'maybe'"
    ),
    "version: 1\nrules: {exec: yes}\n": "rules.exec: must be deny or allow or off, not True",
    "version: 1\nrules: {privilegd: deny}\n": (
        "rules.privilegd: unknown rule (known: plugins, privileged, host_mounts, exec, read_only)"
    ),
    "version: 1\ndefault: maybe\n": "default: must be allow or deny, not 'maybe'",
    "version: 1\ndefault: allow\ndefault: deny\n": "line 3: the key 'default' is given twice",
    "version: 1\nhost_mount_allow: [srv]\n": "host_mount_allow: 'srv' is not an absolute path",
    "version: 1\nusers: {bob: {self: x}}\n": (
        "users.bob.self: unknown key (known: default, host_mount_allow, rules)"
    ),
    "version: 1\nself: ['Not A Name']\n": "self: 'Not A Name' is not a plugin name",
    "version: 1\nrules: [privileged]\n": "rules: must be a mapping (privileged: deny, ...)",
    "- 1\n": "the policy must be a mapping (version: 1, rules: ...)",
    "version: 1\nrules: {exec: deny\n": (
        "not valid YAML: line 3: expected ',' or '}', but got '<stream end>'"
    ),
}


@pytest.mark.parametrize("text", sorted(INVALID))
def test_an_invalid_policy_denies_everything_and_says_why(policy_dir: Path, text: str) -> None:
    (policy_dir / "policy.yaml").write_text(text)
    with PluginClient(PolicyAuthz(str(policy_dir), own_id=OWN_ID)) as client:
        assert ask(client, "GET", "/_ping") == (
            False,
            f"no usable authorization policy: {policy_dir}/policy.yaml: {INVALID[text]} "
            "(rule policy)",
        )


def test_a_json_policy(policy_dir: Path) -> None:
    os.remove(policy_dir / "policy.yaml")
    policy = {"version": 1, "default": "deny", "rules": {"read_only": "allow"}}
    (policy_dir / "policy.json").write_text(json.dumps(policy))
    with PluginClient(PolicyAuthz(str(policy_dir), own_id=OWN_ID)) as client:
        assert ask(client, "GET", "/v1.41/info") == (True, "")
        assert ask(client, "POST", "/v1.41/containers/x/start")[0] is False
        (policy_dir / "policy.json").write_text('{"version": 1, "version": 1}')
        assert ask(client, "GET", "/v1.41/info") == (
            False,
            f"no usable authorization policy: {policy_dir}/policy.json: the key 'version' is "
            "given twice (rule policy)",
        )


def test_two_policy_files_deny_everything(policy_dir: Path) -> None:
    (policy_dir / "policy.json").write_text('{"version": 1}')
    with PluginClient(PolicyAuthz(str(policy_dir), own_id=OWN_ID)) as client:
        assert ask(client, "GET", "/_ping") == (
            False,
            f"no usable authorization policy: policy.yaml and policy.json both exist in "
            f"{policy_dir}: keep only one (rule policy)",
        )


def test_an_unreadable_policy_denies_everything(policy_dir: Path) -> None:
    os.remove(policy_dir / "policy.yaml")
    (policy_dir / "policy.yaml").mkdir()
    with PluginClient(PolicyAuthz(str(policy_dir), own_id=OWN_ID)) as client:
        assert ask(client, "GET", "/_ping") == (
            False,
            f"no usable authorization policy: {policy_dir}/policy.yaml: cannot read it: Is a "
            "directory (rule policy)",
        )


def test_an_edit_takes_effect_at_the_next_request(policy_dir: Path) -> None:
    privileged = {"HostConfig": {"Privileged": True}}
    with PluginClient(PolicyAuthz(str(policy_dir), own_id=OWN_ID)) as client:
        assert ask(client, "POST", CREATE, privileged) == (False, PRIVILEGED)
        # Saved the way editors do: a new file renamed over the old one.
        new = policy_dir / ".policy.yaml.new"
        new.write_text(POLICY.replace("  privileged: deny\n", "  privileged: off\n"))
        os.replace(new, policy_dir / "policy.yaml")
        assert ask(client, "POST", CREATE, privileged) == (True, "")
        # An edit that breaks the file closes everything; fixing it reopens.
        (policy_dir / "policy.yaml").write_text("version: 1\nrules: {privileged: sometimes}\n")
        assert ask(client, "POST", CREATE, privileged)[0] is False
        assert ask(client, "GET", "/_ping")[0] is False
        (policy_dir / "policy.yaml").write_text(POLICY)
        assert ask(client, "GET", "/_ping") == (True, "")
        assert ask(client, "POST", CREATE, privileged) == (False, PRIVILEGED)
        os.remove(policy_dir / "policy.yaml")
        assert ask(client, "GET", "/_ping")[0] is False


def test_yaml_reads_a_bare_off_as_off(policy_dir: Path) -> None:
    (policy_dir / "policy.yaml").write_text("version: 1\nrules:\n  exec: off\n  privileged: no\n")
    with PluginClient(PolicyAuthz(str(policy_dir), own_id=OWN_ID)) as client:
        assert ask(client, "POST", "/v1.41/containers/x/exec", {"Cmd": ["sh"]}) == (True, "")
        assert ask(client, "POST", CREATE, {"HostConfig": {"Privileged": True}}) == (True, "")


def test_per_user_rules_apply_to_tls_users_only(client: PluginClient) -> None:
    privileged = {"HostConfig": {"Privileged": True}}
    assert ask(client, "POST", CREATE, privileged, user="alice") == (True, "")
    assert ask(client, "POST", CREATE, privileged, user="bob") == (False, PRIVILEGED)
    # The same name without TLS (a future authentication method) is not alice.
    request = {
        "RequestMethod": "POST",
        "RequestUri": CREATE,
        "User": "alice",
        "UserAuthNMethod": "kerberos",
        "RequestHeaders": {"Content-Type": "application/json", "Content-Length": "40"},
        **body_of(privileged),
    }
    assert client.call("AuthZPlugin.AuthZReq", request) == {"Allow": False, "Msg": PRIVILEGED}


# --- the decision log --------------------------------------------------------------------------


def test_each_decision_is_logged_with_its_rule_and_input(
    client: PluginClient, caplog: pytest.LogCaptureFixture
) -> None:
    secret = {"Image": "x", "Env": ["DB_PASSWORD=hunter2"], "HostConfig": {"Privileged": True}}
    with caplog.at_level(logging.INFO, logger="policyauthz"):
        ask(client, "POST", CREATE + "?name=web", secret, user="bob")
        ask(client, "GET", "/v1.41/containers/json")
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "policyauthz"]
    assert lines == [
        {
            "decision": "deny",
            "rule": "privileged",
            "user": "bob",
            "method": "POST",
            "uri": "/v1.41/containers/create?name=web",
            "evidence": "HostConfig.Privileged: true",
            "message": PRIVILEGED,
        },
        {
            "decision": "allow",
            "rule": "read_only",
            "user": "",
            "method": "GET",
            "uri": "/v1.41/containers/json",
            "evidence": "GET /containers/json",
        },
    ]
    assert "hunter2" not in caplog.text


def test_the_policy_s_life_is_logged(policy_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.INFO, logger="policyauthz"),
        PluginClient(PolicyAuthz(str(policy_dir), own_id=OWN_ID)) as client,
    ):
        (policy_dir / "policy.yaml").write_text("version: 3\n")
        ask(client, "GET", "/_ping")
    messages = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "policyauthz"]
    assert messages[0] == ("INFO", f"policy loaded from {policy_dir}/policy.yaml")
    assert messages[1] == (
        "ERROR",
        f"no usable policy, every request is denied: {policy_dir}/policy.yaml: version: 3 is "
        "not a version this plugin reads (1)",
    )


def test_an_internal_error_denies_and_is_logged(
    client: PluginClient, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import policyauthz.driver

    def broken(*args: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(policyauthz.driver, "decide", broken)
    with caplog.at_level(logging.INFO, logger="policyauthz"):
        assert ask(client, "GET", "/_ping") == (
            False,
            "the policy plugin failed (RuntimeError); see its log (rule error)",
        )
    assert "error deciding on GET /_ping" in caplog.text


def test_responses_are_allowed(client: PluginClient) -> None:
    request = {"RequestMethod": "GET", "RequestUri": "/v1.41/info", "ResponseStatusCode": 200}
    assert client.call("AuthZPlugin.AuthZRes", request) == {"Allow": True, "Msg": ""}


def test_the_plugin_id_comes_from_its_mounts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import policyauthz.driver

    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 0:21 / / rw - overlay overlay rw\n"
        f"30 22 0:24 /docker/plugins/{OWN_ID} /run/docker/plugins rw,nosuid - tmpfs tmpfs rw\n"
    )
    monkeypatch.setattr(policyauthz.driver, "_MOUNTINFO", str(mountinfo))
    assert policyauthz.driver._own_plugin_id() == OWN_ID
    mountinfo.write_text("22 1 0:21 / / rw - overlay overlay rw\n")
    assert policyauthz.driver._own_plugin_id() is None


def test_the_example_policy_is_valid_and_strict(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[1] / "policy.example.yaml"
    shutil.copy(example, tmp_path / "policy.yaml")
    with PluginClient(PolicyAuthz(str(tmp_path), own_id=OWN_ID)) as client:
        assert ask(client, "GET", "/v1.41/containers/json") == (True, "")
        assert ask(client, "POST", CREATE, {"HostConfig": {"Privileged": True}}) == (
            False,
            PRIVILEGED,
        )
        assert ask(client, "POST", CREATE, {"HostConfig": {"Binds": ["/srv:/srv"]}}) == (
            False,
            "mounting the host path /srv is denied (rule host_mounts; allowed: none)",
        )
        assert ask(client, "POST", "/v1.41/plugins/policyauthz/disable") == (
            False,
            "disable of the authorization plugin policyauthz is denied (rule plugins)",
        )
