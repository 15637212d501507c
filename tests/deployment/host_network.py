"""What dockerd changes on the host's network, recorded before and put back after.

dockerd sets `ip_forward=1`, turns the FORWARD policy to DROP, adds its iptables chains and
NAT rules, and creates the `docker0` bridge (compose's networks add `br-*` bridges and
`veth*` pairs). `HostNetwork.capture()` records all of it; `restore()` writes the sysctls
back, reloads the nftables ruleset as it was (iptables here is iptables-nft, whose tables
are nftables tables, so the ruleset is the whole truth) and deletes the links it added.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.deployment.host import run
from tests.deployment.report import CheckFailed

SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/forwarding",
    "net/ipv4/conf/default/forwarding",
    "net/ipv6/conf/all/forwarding",
    "net/ipv6/conf/default/forwarding",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
    "net/bridge/bridge-nf-call-arptables",
    "net/ipv4/conf/all/route_localnet",
)
# The links dockerd and compose create: the default bridge, a network's bridge, a veth end.
DOCKER_LINK = re.compile(r"docker0|br-[0-9a-f]{12}|veth[0-9a-f]{7}")


def require_nftables_backend() -> None:
    """iptables must be iptables-nft, so that the whole ruleset can be put back exactly."""
    if shutil.which("nft") is None or shutil.which("iptables") is None:
        raise CheckFailed("nft and iptables are needed (Debian packages nftables, iptables)")
    if "nf_tables" not in run(["iptables", "--version"]):
        raise CheckFailed(
            "iptables is the legacy backend: the test can only put back an nftables ruleset "
            "(update-alternatives --set iptables /usr/sbin/iptables-nft)"
        )


@dataclass(frozen=True)
class HostNetwork:
    sysctls: dict[str, str]
    ruleset: str
    links: frozenset[str]

    @classmethod
    def capture(cls) -> HostNetwork:
        sysctls = {}
        for name in SYSCTLS:
            path = Path("/proc/sys") / name
            if path.exists():
                sysctls[name] = path.read_text().strip()
        return cls(sysctls, run(["nft", "list", "ruleset"]), frozenset(_links()))

    def restore(self) -> None:
        """Put the host back as `self` recorded it (after the engine has stopped)."""
        for name, value in self.sysctls.items():
            path = Path("/proc/sys") / name
            if path.exists() and path.read_text().strip() != value:
                path.write_text(value + "\n")
        if not any(name.startswith("net/bridge/") for name in self.sysctls):
            # br_netfilter was not loaded before: dockerd loaded it (it brings net/bridge/*).
            subprocess.run(["modprobe", "-r", "br_netfilter"], capture_output=True, check=False)
        run(["nft", "flush", "ruleset"])
        if self.ruleset.strip():
            with tempfile.NamedTemporaryFile("w", suffix=".nft") as saved:
                saved.write(self.ruleset)
                saved.flush()
                run(["nft", "-f", saved.name])
        for link in sorted(_links() - self.links):
            if DOCKER_LINK.fullmatch(link):
                run(["ip", "link", "delete", link])

    def differences(self, other: HostNetwork) -> list[str]:
        """What differs between two captures, in words (empty: identical)."""
        found = []
        for name in sorted(set(self.sysctls) | set(other.sysctls)):
            if self.sysctls.get(name) != other.sysctls.get(name):
                found.append(f"{name}: {self.sysctls.get(name)} -> {other.sysctls.get(name)}")
        if _without_counters(self.ruleset) != _without_counters(other.ruleset):
            found.append(f"nftables ruleset differs:\n{other.ruleset[:1500]}")
        if self.links != other.links:
            added, removed = other.links - self.links, self.links - other.links
            found.append(f"links added {sorted(added)}, removed {sorted(removed)}")
        return found


def _without_counters(ruleset: str) -> str:
    # Packet counts move with any traffic; the rules are what must be the same.
    return re.sub(r"counter packets \d+ bytes \d+", "counter", ruleset)


def _links() -> set[str]:
    return {link["ifname"] for link in json.loads(run(["ip", "-j", "link", "show"]))}
