"""LitServe with its own batching, the model in its inference worker.

`python -m bench.peers.litserve_app --port P --weights mnist_cnn.pt --threads N` serves
`POST /predictions/mnist28` (a JSON `[1, 28, 28]` list -> the 10 log-probabilities) and
LitServe's own `GET /health`. Batches of up to `MAX_BATCH_SIZE` requests gathered for at most
`BATCH_TIMEOUT_S`: LitServe's batching loop, as its documentation sets it up (a timeout of 0
would make that loop poll its queue without sleeping, taking a core from everything else).
"""

# No `from __future__ import annotations`: LitServe compares the annotation itself, not its
# string, with `Request` (see `MnistApi.decode_request`).
import argparse
from pathlib import Path
from typing import Any

import litserve as ls
import torch
from starlette.requests import Request

from bench.peers.model import load_mnist, predict_rows

MAX_BATCH_SIZE = 8
BATCH_TIMEOUT_S = 0.005
ROUTE = "/predictions/mnist28"


class MnistApi(ls.LitAPI):  # type: ignore[misc]  # litserve ships no type information
    """decode -> batch (torch.stack, LitServe's default) -> predict -> encode, per request."""

    def __init__(self, weights: Path, threads: int) -> None:
        super().__init__(
            max_batch_size=MAX_BATCH_SIZE, batch_timeout=BATCH_TIMEOUT_S, api_path=ROUTE
        )
        self.weights = weights
        self.threads = threads

    def setup(self, device: str) -> None:
        self.model = load_mnist(self.weights, self.threads)

    # LitServe chooses how to read the body from this annotation: starlette's `Request`
    # means "parse it as JSON and pass the result" (any other type is a pydantic model).
    def decode_request(self, request: Request, **kwargs: Any) -> torch.Tensor:
        payload: Any = request
        return torch.tensor(payload, dtype=torch.float32)

    def predict(self, x: torch.Tensor, **kwargs: Any) -> list[list[float]]:
        return predict_rows(self.model, x)

    def encode_response(self, output: list[float], **kwargs: Any) -> list[float]:
        return output


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.litserve_app")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    server = ls.LitServer(
        MnistApi(args.weights, args.threads), accelerator="cpu", workers_per_device=1
    )
    server.run(
        host="127.0.0.1",
        port=args.port,
        num_api_servers=1,
        log_level="warning",
        generate_client_file=False,
    )


if __name__ == "__main__":
    main()
