"""Free TCP ports on 127.0.0.1, for servers that tests start."""

import contextlib
import socket

import psutil


def free_ports(n: int) -> list[int]:
    """`n` distinct ports on 127.0.0.1 that were free a moment ago.

    All `n` sockets are held open together before any is released, so the ports differ.
    """
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(n):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


def free_port() -> int:
    """One port on 127.0.0.1 that was free a moment ago."""
    return free_ports(1)[0]


def listening_addresses(process: psutil.Process) -> set[tuple[str, int]]:
    """The (ip, port) pairs `process` listens on over TCP (IPv4-mapped IPv6 shown as IPv4).

    psutil renamed `connections` to `net_connections` in 6.0; kserve's client (a dev
    dependency) pins psutil below 6, so both names are met.
    """
    connections = getattr(process, "net_connections", None) or process.connections
    return {
        (c.laddr.ip.removeprefix("::ffff:"), c.laddr.port)
        for c in connections("tcp")
        if c.status == psutil.CONN_LISTEN
    }
