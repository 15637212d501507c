"""What `make serve` answers: the real stack outside containers, on free loopback ports.

The launcher's own TorchServe and Gateway classes (tests/support/servers.py), serving the
archives copied out of the TorchServe image, so both sides run the same `.mar` files and
any difference is the deployment's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.deployment.requests_used import INFERENCE_KEY, Prediction, answers
from tests.support.servers import running_gateway, running_torchserve


def reference_answers(
    model_store: Path, run_dir: Path, bodies: list[Prediction]
) -> list[tuple[int, Any]]:
    """(status, JSON answer) of `make serve`'s two processes for each of `bodies`."""
    with (
        running_torchserve(model_store, run_dir) as torchserve,
        running_gateway(torchserve, env={"GATEWAY_INFERENCE_KEYS": INFERENCE_KEY}) as gateway,
    ):
        return answers(gateway.url, bodies)
