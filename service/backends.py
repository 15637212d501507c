"""Where the TorchServes behind the gateway are: a fixed list, or a DNS name re-resolved.

`TORCHSERVE_BACKENDS=host:inference_port:management_port,...` names each TorchServe;
`TORCHSERVE_BACKENDS_DNS=name:inference_port:management_port` names them all through one
DNS name that answers every address (a Kubernetes headless Service), looked up again every
`GATEWAY_RESOLVE_S` seconds. With neither, the one backend is `TORCHSERVE_HOST` and its ports.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from dataclasses import dataclass

# A DNS name or an IPv4 address; IPv6 literals in brackets: [::1]:8080:8081.
_HOST = r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?)"
_ENTRY = re.compile(rf"(?P<host>{_HOST}):(?P<inference>\d{{1,5}}):(?P<management>\d{{1,5}})")


@dataclass(frozen=True, order=True)
class BackendAddress:
    """One TorchServe: its host and the ports of its inference and management APIs."""

    host: str
    inference_port: int
    management_port: int

    @property
    def name(self) -> str:
        """How the gateway names it in answers, `/readyz` and metrics."""
        return f"{self.host}:{self.inference_port}:{self.management_port}"

    def url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host


def parse_backend(text: str) -> BackendAddress:
    """`host:inference_port:management_port` as an address.

    Raises:
        ValueError: not that form, or a port outside 1-65535 (the message says which).
    """
    match = _ENTRY.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text.strip()[:100]!r} is not host:inference_port:management_port")
    ports = int(match["inference"]), int(match["management"])
    if not all(1 <= port <= 65535 for port in ports):
        raise ValueError(f"{text.strip()!r}: ports must be 1-65535")
    return BackendAddress(match["host"].strip("[]"), *ports)


def parse_backends(text: str) -> tuple[BackendAddress, ...]:
    """A comma-separated list of backends, in order, each once.

    Raises:
        ValueError: an entry is malformed or named twice.
    """
    entries = [parse_backend(part) for part in text.split(",") if part.strip()]
    if len(set(entries)) != len(entries):
        raise ValueError("a backend is listed twice")
    return tuple(entries)


async def resolve(spec: BackendAddress) -> tuple[BackendAddress, ...]:
    """Every address `spec.host` resolves to now, with `spec`'s ports, sorted.

    Raises:
        OSError: the name does not resolve (socket.gaierror).
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(spec.host, spec.inference_port, type=socket.SOCK_STREAM)
    hosts = {str(ipaddress.ip_address(info[4][0])) for info in infos}
    return tuple(
        sorted(BackendAddress(host, spec.inference_port, spec.management_port) for host in hosts)
    )
