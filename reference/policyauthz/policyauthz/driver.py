"""policyauthz: an authorization plugin that enforces a policy file.

The policy lives in a host directory mounted read-only into the plugin
(``policy.source``, ``/etc/docker/policyauthz`` unless set otherwise), as
``policy.yaml``, ``policy.yml`` or ``policy.json`` (exactly one of them; the
format is in ``policy.py``). It is read again as soon as the file changes
(checked at each request, by its size, times and inode): editing it takes
effect at the next request, without restarting the plugin or the daemon.
Mount the directory, not the file: an editor that saves by renaming would
leave a mounted file pointing at the old version.

It fails closed: no policy file, an unreadable or invalid one (at start or
after an edit), a body it cannot read, or any error of its own deny the
request, with a message that says why. Each decision is logged (to the
daemon's log) as one JSON line with the rule that made it and the request's
user, method, URI and the evidence the rule looked at; bodies are never
logged (they hold environment variables, often secrets).
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass

from plugin import Mount
from plugin.authz import AuthzPlugin, AuthZReqRequest, AuthZResponse

from .policy import Decision, Policy, PolicyError, decide, load

__all__ = ["POLICY", "POLICY_FILES", "PolicyAuthz"]

log = logging.getLogger("policyauthz")

POLICY = Mount(
    "policy",
    destination="/etc/policyauthz",
    source="/etc/docker/policyauthz",
    description="host directory holding policy.yaml (or policy.json), mounted read-only "
    "(docker plugin set PLUGIN policy.source=/path)",
    options=("rbind", "ro"),
)
#: The names the policy file may have in the policy directory.
POLICY_FILES = ("policy.yaml", "policy.yml", "policy.json")

_MOUNTINFO = "/proc/self/mountinfo"
_PLUGIN_ID = re.compile(r"/([0-9a-f]{64})(?:/|$)")


@dataclass(frozen=True)
class _Loaded:
    """The policy (or why there is none) for one state of the directory."""

    stamp: tuple[object, ...]
    policy: Policy | None
    error: str | None


class PolicyAuthz(AuthzPlugin):
    """Allows or denies each Engine API request by the policy file.

    ``PolicyAuthz()`` reads the plugin's own policy directory; tests pass
    ``policy_dir`` and ``own_id`` (the plugin's ID, found in its mounts when
    it runs as a managed plugin).
    """

    mounts = (POLICY,)

    def __init__(self, policy_dir: str | None = None, own_id: str | None = None) -> None:
        self.policy_dir = os.fspath(policy_dir or POLICY.destination)
        self.own_id = own_id if own_id is not None else _own_plugin_id()
        self._loaded: _Loaded | None = None
        self._policy()  # logs what it found

    async def auth_z_req(self, req: AuthZReqRequest) -> AuthZResponse:
        # async: a decision is quick and never waits on anything but a stat,
        # so it runs on the event loop rather than through the thread pool.
        try:
            loaded = self._policy()
            if loaded.policy is None:
                decision = Decision(
                    False, "policy", f"no usable authorization policy: {loaded.error} (rule policy)"
                )
            else:
                decision = decide(loaded.policy, req, self.own_id)
        except Exception as exc:  # a bug must deny, and say so
            log.exception("error deciding on %s %s", req.method, req.uri)
            decision = Decision(
                False,
                "error",
                f"the policy plugin failed ({type(exc).__name__}); see its log (rule error)",
            )
        self._log(req, decision)
        return AuthZResponse(decision.allow, "" if decision.allow else decision.message)

    def _log(self, req: AuthZReqRequest, decision: Decision) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        entry = {
            "decision": "allow" if decision.allow else "deny",
            "rule": decision.rule,
            "user": req.user,
            "method": req.method,
            "uri": req.uri,
        }
        if decision.evidence:
            entry["evidence"] = decision.evidence
        if not decision.allow:
            entry["message"] = decision.message
        log.info("%s", json.dumps(entry, ensure_ascii=False))

    # --- the policy file -----------------------------------------------------------

    def _policy(self) -> _Loaded:
        stamp = self._stamp()
        loaded = self._loaded
        if loaded is not None and loaded.stamp == stamp:
            return loaded
        loaded = self._load(stamp)
        self._loaded = loaded
        if loaded.policy is not None:
            log.info("policy loaded from %s", loaded.policy.source)
        else:
            log.error("no usable policy, every request is denied: %s", loaded.error)
        return loaded

    def _stamp(self) -> tuple[object, ...]:
        """What changes when a policy file is created, edited, replaced or removed."""
        out: list[object] = []
        for name in POLICY_FILES:
            try:
                st = os.stat(os.path.join(self.policy_dir, name))
            except FileNotFoundError:
                out.append(None)
            except OSError as exc:
                out.append(exc.errno)
            else:
                out.append((st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        return tuple(out)

    def _load(self, stamp: tuple[object, ...]) -> _Loaded:
        present = [name for name, s in zip(POLICY_FILES, stamp, strict=True) if s is not None]
        where = self.policy_dir
        if not present:
            return _Loaded(
                stamp,
                None,
                f"no policy file in {where} (write {where}/policy.yaml on the host's "
                "policy.source directory)",
            )
        if len(present) > 1:
            return _Loaded(
                stamp, None, f"{' and '.join(present)} both exist in {where}: keep only one"
            )
        path = os.path.join(where, present[0])
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            return _Loaded(stamp, None, f"{path}: cannot read it: {reason}")
        try:
            return _Loaded(stamp, load(text, path), None)
        except PolicyError as exc:
            return _Loaded(stamp, None, str(exc))


def _own_plugin_id() -> str | None:
    """The plugin's ID: the daemon mounts /run/docker/plugins/<ID> of the
    host onto /run/docker/plugins in the plugin. None outside a plugin."""
    try:
        with open(_MOUNTINFO) as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4 and fields[4] == "/run/docker/plugins":
                    m = _PLUGIN_ID.search(fields[3])
                    if m:
                        return m.group(1)
    except OSError:
        pass
    return None
