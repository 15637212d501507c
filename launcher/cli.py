"""`python -m launcher serve | torchserve | gateway`: the stack's entry commands.

`serve` is `torchserve` and `gateway` together in one terminal; the docker images run
`torchserve` and `gateway` alone, so the three share the same two pieces.
Each command stops its children on SIGINT (Ctrl-C) or SIGTERM and exits 0, or exits 1 when
a child fails to start or dies.
"""

import argparse
import logging
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Protocol

import pydantic

from launcher.errors import LauncherError
from launcher.gateway import Gateway, gateway_env_for
from launcher.settings import LauncherSettings
from launcher.torchserve import TorchServe
from service.settings import GatewaySettings

logger = logging.getLogger(__name__)

EXAMPLES = Path("examples")
# How often the supervisor looks at its children between signals.
SUPERVISE_INTERVAL_S = 0.5


class Stopped(Exception):
    """A stop signal (SIGINT or SIGTERM) arrived."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Child(Protocol):
    def returncode(self) -> int | None: ...


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    # Ignore further signals: a second Ctrl-C must not interrupt the clean-up it started.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Stopped(signum)


def supervise(children: dict[str, Child]) -> None:
    """Block until a stop signal (raises Stopped) or until a child exits (raises LauncherError)."""
    idle = threading.Event()
    while True:
        for name, child in children.items():
            code = child.returncode()
            if code is not None:
                raise LauncherError(f"{name} exited unexpectedly with status {code}")
        idle.wait(SUPERVISE_INTERVAL_S)  # a signal interrupts the wait by raising Stopped


def curl_example(
    gateway_url: str, models: Sequence[str], *, needs_key: bool, examples: Path = EXAMPLES
) -> str:
    """A command a user can paste to get a first prediction through the gateway.

    It names the first model, and its `examples/<model>/sample.*` file when there is one.
    """
    model = models[0] if models else "<model>"
    samples = sorted(examples.glob(f"{model}/sample.*")) if models else []
    body = str(samples[0]) if samples else "<input file>"
    auth = ' -H "Authorization: Bearer <key>"' if needs_key else ""
    return f"curl -X POST{auth} {gateway_url}/predictions/{model} -T {body}"


def run_serve(settings: LauncherSettings, models: Sequence[str] | None) -> None:
    """TorchServe (output in RUN_DIR) then the gateway in front of it, until stopped."""
    torchserve = TorchServe(settings, models=models)
    gateway = Gateway(settings, env=gateway_env_for(settings), console=True)
    needs_key = bool(GatewaySettings().gateway_inference_keys)
    gateway.check_port()  # before TorchServe's start-up, not after it
    try:
        torchserve.start()
        loaded = torchserve.wait_ready()
        gateway.start()
        gateway.wait_ready()
        example = curl_example(gateway.url, loaded, needs_key=needs_key)
        print(
            f"\nThe gateway is ready on {gateway.url} (TorchServe: {torchserve.inference_url},"
            f" logs in {torchserve.log_dir}).\nTry:\n  {example}\nPress Ctrl-C to stop.\n",
            flush=True,
        )
        supervise({"TorchServe": torchserve, "gateway": gateway})
    finally:
        gateway.stop()
        torchserve.stop()


def run_torchserve(settings: LauncherSettings, models: Sequence[str] | None) -> None:
    """TorchServe alone, its output on ours (the TorchServe container's entry command)."""
    with TorchServe(settings, models=models, console=True) as torchserve:
        supervise({"TorchServe": torchserve})


def run_gateway(settings: LauncherSettings) -> None:
    """The gateway alone, configured by the environment (the gateway container's command)."""
    with Gateway(settings, console=True) as gateway:
        supervise({"gateway": gateway})


def configure_logging() -> None:
    """The launcher's log format, once, at process start."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per readiness poll


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m launcher",
        description="Start TorchServe and the gateway. Settings come from the environment.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    models_help = "archive file names in MODEL_STORE to load (default: all of them)"
    serve = commands.add_parser("serve", help="TorchServe and the gateway in front of it")
    serve.add_argument("--models", nargs="+", metavar="NAME.mar", help=models_help)
    torchserve = commands.add_parser("torchserve", help="TorchServe alone, in the foreground")
    torchserve.add_argument("--models", nargs="+", metavar="NAME.mar", help=models_help)
    commands.add_parser("gateway", help="the gateway alone, in the foreground")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit status."""
    args = parse_args(argv)
    configure_logging()
    signal.signal(signal.SIGINT, _raise_stopped)
    signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        settings = LauncherSettings()
        if args.command == "serve":
            run_serve(settings, args.models)
        elif args.command == "torchserve":
            run_torchserve(settings, args.models)
        else:
            run_gateway(settings)
    except Stopped as stop:
        logger.info("stopped by %s", stop)
        return 0
    except LauncherError as exc:
        logger.error("%s", exc)
        return 1
    except pydantic.ValidationError as exc:
        logger.error("invalid settings in the environment:\n%s", exc)
        return 2
    return 0
