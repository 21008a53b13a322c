"""What bridgenet does to the host: iproute2 and iptables, run as programs.

Why programs and not a netlink library: measured on this kit's base image,
creating, attaching and deleting a veth pair takes about 20 ms either way
(the kernel's work dominates), while pyroute2 adds 150-200 ms of import at
start and 20 MiB of memory and is 5.3 MB installed; ``ip`` and its
libraries are about 1.6 MB, and iptables is needed in the rootfs anyway.

Every interface bridgenet makes carries an alias, ``bridgenet <instance>
<id>``: several bridgenet plugins (under different names) may share one
host, and each only ever touches what it made.

The firewall: Docker sets the FORWARD policy of iptables to DROP, and with
``br_netfilter`` loaded (``net.bridge.bridge-nf-call-iptables = 1``, which
Docker sets) frames bridged between two ports of one bridge go through that
chain too, so two containers on a bridgenet network could not reach each
other. bridgenet inserts ``-i BRIDGE -o BRIDGE -j ACCEPT`` in FORWARD (what
Docker's own bridge driver does for its bridges), in the iptables backend
that holds Docker's rules (nf_tables or legacy), and removes it with the
network. Docker never flushes FORWARD, so the rule survives daemon
restarts; bridgenet re-adds it at start if it is missing.
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from plugin import PluginError

__all__ = ["Host", "IpHost", "Link", "MemoryHost"]

log = logging.getLogger("bridgenet")


@dataclass(frozen=True)
class Link:
    name: str
    kind: str
    alias: str


class Host(Protocol):
    """The host operations bridgenet needs (IpHost; a fake in unit tests)."""

    def links(self) -> list[Link]: ...

    def add_bridge(
        self, name: str, alias: str, mtu: int | None, addresses: Sequence[str]
    ) -> None: ...

    def add_veth(
        self, name: str, peer: str, bridge: str, alias: str, mtu: int | None, mac: str | None
    ) -> None: ...

    def delete_link(self, name: str) -> None: ...

    def allow_forwarding(self, bridge: str) -> None: ...

    def forbid_forwarding(self, bridge: str) -> None: ...


class IpHost:
    """The real host: ``ip`` (iproute2) and ``iptables``.

    ``iptables``: the program to run (None: the backend that holds Docker's
    rules, found on first use); ``firewall=False`` leaves the firewall alone.
    """

    def __init__(self, ip: str = "ip", iptables: str | None = None, firewall: bool = True) -> None:
        self.ip = ip
        self._iptables = iptables
        self.firewall = firewall

    # --- links ------------------------------------------------------------------------

    def links(self) -> list[Link]:
        out = self._run([self.ip, "-j", "-d", "link", "show"], "list interfaces")
        found = []
        for item in json.loads(out or "[]"):
            kind = (item.get("linkinfo") or {}).get("info_kind", "")
            found.append(Link(item["ifname"], kind, item.get("ifalias", "")))
        return found

    def add_bridge(self, name: str, alias: str, mtu: int | None, addresses: Sequence[str]) -> None:
        lines = [f"link add name {name}{_mtu(mtu)} type bridge", f'link set {name} alias "{alias}"']
        for address in addresses:
            # The family follows from the address (no -6 inside a batch);
            # nodad: the gateway is usable at once, not after duplicate detection.
            lines.append(f"addr add {address} dev {name}" + (" nodad" if ":" in address else ""))
        lines.append(f"link set {name} up")
        try:
            self._batch(lines, f"create bridge {name}")
        except PluginError:
            self._quiet_delete(name)
            raise

    def add_veth(
        self, name: str, peer: str, bridge: str, alias: str, mtu: int | None, mac: str | None
    ) -> None:
        lines = [
            f"link add name {name}{_mtu(mtu)} type veth peer name {peer}{_mtu(mtu)}",
            f'link set {name} alias "{alias}"',
            f"link set {name} master {bridge} up",
        ]
        if mac:
            lines.append(f"link set {peer} address {mac}")
        try:
            self._batch(lines, f"create veth pair {name}/{peer}")
        except PluginError:
            self._quiet_delete(name)
            raise

    def delete_link(self, name: str) -> None:
        proc = subprocess.run([self.ip, "link", "del", name], capture_output=True, text=True)
        if proc.returncode != 0 and "Cannot find device" not in proc.stderr:
            raise PluginError(f"cannot delete interface {name}: {_first_line(proc.stderr)}")

    # --- the firewall ---------------------------------------------------------------------

    def allow_forwarding(self, bridge: str) -> None:
        if not self.firewall:
            return
        rule = ["FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"]
        if self._iptables_ok(["-C", *rule]):
            return
        self._run([self.iptables, "-w", "5", "-I", *rule], f"allow forwarding on {bridge}")

    def forbid_forwarding(self, bridge: str) -> None:
        if not self.firewall:
            return
        rule = ["FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"]
        while self._iptables_ok(["-C", *rule]):
            self._run([self.iptables, "-w", "5", "-D", *rule], f"remove the rule of {bridge}")

    @property
    def iptables(self) -> str:
        """The iptables of the backend that holds Docker's rules."""
        if self._iptables is None:
            self._iptables = _pick_iptables()
        return self._iptables

    def _iptables_ok(self, args: list[str]) -> bool:
        proc = subprocess.run([self.iptables, "-w", "5", *args], capture_output=True, text=True)
        return proc.returncode == 0

    # --- running ------------------------------------------------------------------------------

    def _batch(self, lines: list[str], what: str) -> None:
        self._run([self.ip, "-batch", "-"], what, "\n".join(lines) + "\n")

    def _run(self, argv: list[str], what: str, stdin: str | None = None) -> str:
        try:
            proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PluginError(f"cannot {what}: {argv[0]}: {exc}") from None
        if proc.returncode != 0:
            log.error("%s failed: %s", " ".join(argv), proc.stderr.strip())
            raise PluginError(f"cannot {what}: {_first_line(proc.stderr)}")
        return proc.stdout

    def _quiet_delete(self, name: str) -> None:
        subprocess.run([self.ip, "link", "del", name], capture_output=True)


def _pick_iptables() -> str:
    """``iptables-nft`` or ``iptables-legacy``: the one whose FORWARD chain
    Docker uses (it holds a DOCKER-USER chain, or the DROP policy); else
    ``iptables-nft``, Debian's default (the rootfs keeps these two programs,
    not the ``iptables`` of Debian's alternatives)."""
    for candidate in ("iptables-nft", "iptables-legacy"):
        try:
            proc = subprocess.run(
                [candidate, "-w", "5", "-S"], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if proc.returncode == 0 and (
            "-N DOCKER-USER" in proc.stdout or "-P FORWARD DROP" in proc.stdout
        ):
            return candidate
    return "iptables-nft"


def _mtu(mtu: int | None) -> str:
    return f" mtu {mtu}" if mtu else ""


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else "failed"


def br_netfilter_on() -> bool:
    """True when bridged IPv4 frames go through iptables (br_netfilter)."""
    try:
        with open("/proc/sys/net/bridge/bridge-nf-call-iptables") as f:
            return f.read().strip() == "1"
    except OSError:
        return False


class MemoryHost:
    """A host in memory, for tests: the links and rules IpHost would make."""

    def __init__(self) -> None:
        self.bridges: dict[str, dict[str, object]] = {}
        self.veths: dict[str, dict[str, object]] = {}
        self.rules: list[str] = []
        self.others: list[Link] = []
        #: Set to an operation's name to make it fail once.
        self.fail: str = ""

    def _maybe_fail(self, op: str, name: str) -> None:
        if self.fail == op:
            self.fail = ""
            raise PluginError(f"cannot {op} {name}: Operation not permitted")

    def links(self) -> list[Link]:
        return [
            *(Link(n, "bridge", str(b["alias"])) for n, b in self.bridges.items()),
            *(Link(n, "veth", str(v["alias"])) for n, v in self.veths.items()),
            *self.others,
        ]

    def add_bridge(self, name: str, alias: str, mtu: int | None, addresses: Sequence[str]) -> None:
        self._maybe_fail("create bridge", name)
        self.bridges[name] = {"alias": alias, "mtu": mtu, "addresses": list(addresses)}

    def add_veth(
        self, name: str, peer: str, bridge: str, alias: str, mtu: int | None, mac: str | None
    ) -> None:
        self._maybe_fail("create veth pair", name)
        if bridge not in self.bridges:
            raise PluginError(f"cannot create veth pair {name}/{peer}: no bridge {bridge}")
        self.veths[name] = {"peer": peer, "bridge": bridge, "alias": alias, "mtu": mtu, "mac": mac}

    def delete_link(self, name: str) -> None:
        self._maybe_fail("delete interface", name)
        self.bridges.pop(name, None)
        self.veths.pop(name, None)
        self.veths = {k: v for k, v in self.veths.items() if v["bridge"] != name}

    def allow_forwarding(self, bridge: str) -> None:
        self._maybe_fail("allow forwarding on", bridge)
        if bridge not in self.rules:
            self.rules.append(bridge)

    def forbid_forwarding(self, bridge: str) -> None:
        while bridge in self.rules:
            self.rules.remove(bridge)
