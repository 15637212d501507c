"""Run the gateway (`service.app:create_app` under uvicorn) as a child process."""

import logging
import sys
from collections.abc import Mapping
from pathlib import Path

import httpx

from launcher.process import ChildProcess, ManagedServer, child_env
from launcher.settings import LauncherSettings
from launcher.torchserve import check_port_free, torchserve_log_dir

logger = logging.getLogger(__name__)

APP_FACTORY = "service.app:create_app"
HTTP_PROTOCOL = "service.http_protocol:GatewayHttpProtocol"
# Seconds uvicorn lets in-flight requests finish after SIGTERM before it closes them.
GRACEFUL_SHUTDOWN_S = 5


class Gateway(ManagedServer):
    """The gateway: uvicorn serving `service.app:create_app()` on GATEWAY_HOST:GATEWAY_PORT.

    The app reads its own settings from the environment; the child gets the launcher's
    environment with `env` on top (TorchServe's address, keys...).

    Args:
        settings: the gateway's host and port (and the run dir for its output).
        env: extra environment variables for the gateway.
        console: send its output to ours instead of `<run_dir>/gateway/console.log`.
    """

    def __init__(
        self,
        settings: LauncherSettings,
        *,
        env: Mapping[str, str] | None = None,
        console: bool = False,
    ) -> None:
        self.settings = settings
        self.env = dict(env or {})
        self.log_dir = (settings.run_dir / "gateway").resolve()
        self._console = console
        self._process: ChildProcess | None = None

    @property
    def url(self) -> str:
        host = self.settings.gateway_host
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104 - a comparison
        return f"http://{host}:{self.settings.gateway_port}"

    @property
    def pid(self) -> int | None:
        """uvicorn's pid, None before `start()`."""
        return self._process.pid if self._process else None

    def command(self) -> list[str]:
        """uvicorn with its fastest event loop and HTTP parser, and no per-request work we
        don't need (access log line, proxy-header rewriting, Server header)."""
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            APP_FACTORY,
            "--host",
            self.settings.gateway_host,
            "--port",
            str(self.settings.gateway_port),
            "--loop",
            "uvloop",
            # uvicorn's httptools protocol plus the gateway's client time limits and
            # connection bound (uvicorn has no setting for them): GATEWAY_HEADER_TIMEOUT_S...
            "--http",
            HTTP_PROTOCOL,
            "--no-access-log",
            # The gateway is the front door: X-Forwarded-* from a client is not to be trusted,
            # and rewriting the scope from it is work on every request.
            "--no-proxy-headers",
            "--no-server-header",
            "--timeout-graceful-shutdown",
            str(GRACEFUL_SHUTDOWN_S),
        ]

    def check_port(self) -> None:
        """Raise PortInUseError if GATEWAY_PORT is taken."""
        check_port_free("GATEWAY_PORT", self.settings.gateway_host, self.settings.gateway_port)

    def start(self) -> None:
        """Check the port and start uvicorn; returns at once (see `wait_ready`).

        Raises:
            PortInUseError: GATEWAY_PORT is taken; nothing was started.
        """
        self.check_port()
        output: Path | None = None if self._console else self.log_dir / "console.log"
        self._process = ChildProcess(
            "gateway", self.command(), env=child_env(self.env), output=output
        )
        self._process.start()
        logger.info("gateway starting (pid %s) on %s", self._process.pid, self.url)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until GET /healthz answers 200.

        Raises:
            ProcessExited: the gateway exited first (the message holds its output's tail).
            ReadyTimeout: not ready within `timeout` seconds.
        """
        if self._process is None:
            raise RuntimeError("the gateway was not started")
        with httpx.Client(trust_env=False, timeout=5.0) as client:

            def healthy() -> bool:
                try:
                    return client.get(f"{self.url}/healthz").status_code == 200
                except httpx.HTTPError:
                    return False

            self._process.wait_until(healthy, timeout=timeout, what="GET /healthz answered 200")
        logger.info("gateway ready on %s", self.url)

    def returncode(self) -> int | None:
        """uvicorn's exit status, or None while it runs."""
        return self._process.returncode() if self._process else None

    def stop(self, grace: float = GRACEFUL_SHUTDOWN_S + 5.0) -> None:
        """Stop uvicorn (SIGTERM, then SIGKILL after `grace` s)."""
        if self._process is not None:
            code = self._process.stop(grace)
            logger.info("gateway stopped (status %s)", code)


def gateway_env_for(
    settings: LauncherSettings, torchserve_host: str = "127.0.0.1"
) -> dict[str, str]:
    """The variables that point the gateway at the TorchServe described by `settings`."""
    return {
        "TORCHSERVE_HOST": torchserve_host,
        "TORCHSERVE_INFERENCE_PORT": str(settings.torchserve_inference_port),
        "TORCHSERVE_MANAGEMENT_PORT": str(settings.torchserve_management_port),
        "MODEL_STORE": str(settings.model_store.resolve()),
        "GATEWAY_HOST": settings.gateway_host,
        "GATEWAY_PORT": str(settings.gateway_port),
        # Same machine: the gateway can read the model log TorchServe writes (launcher.torchserve).
        "GATEWAY_TORCHSERVE_LOG_DIR": str(torchserve_log_dir(settings)),
    }
