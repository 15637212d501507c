"""Errors raised while starting or stopping the stack's processes.

LauncherError
├── PortInUseError    a port we must listen on is taken; raised before anything starts
├── SocketPathTooLong the worker socket would not fit in a Unix socket path
├── ProcessExited     a child exited before it became ready (carries its log tail)
└── ReadyTimeout      a child is alive but did not become ready in time (carries its log tail)
"""


class LauncherError(Exception):
    """Base class of every error the launcher raises."""


class PortInUseError(LauncherError):
    """A port that a server must listen on is already taken on the bind host."""

    def __init__(self, name: str, host: str, port: int) -> None:
        super().__init__(
            f"{name} port {port} on {host} is already in use: stop what listens there "
            f"or choose another port (see the README's settings table)"
        )
        self.name = name
        self.host = host
        self.port = port


class SocketPathTooLong(LauncherError):
    """The worker's Unix socket path would exceed the kernel's limit (108 bytes)."""


class ProcessExited(LauncherError):
    """A child process exited before it was ready."""


class ReadyTimeout(LauncherError):
    """A child process did not become ready before the deadline."""
