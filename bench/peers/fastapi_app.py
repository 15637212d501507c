"""A plain FastAPI endpoint with the model in-process: the peer a user writes in ten lines.

`python -m bench.peers.fastapi_app --port P --weights mnist_cnn.pt --threads N` serves
`POST /predictions/mnist28` (a JSON `[1, 28, 28]` list -> the 10 log-probabilities) and
`GET /ping`. The endpoint is `async def` and runs the model inline: one request at a time,
no thread hop (a sync endpoint would add a thread pool's hand-off and its contention).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import uvicorn
from fastapi import FastAPI, Request

from bench.peers.model import load_mnist, predict_rows

ROUTE = "/predictions/mnist28"


def create_app(weights: Path, threads: int) -> FastAPI:
    """The app: the model loaded once, one prediction route and a health route."""
    model = load_mnist(weights, threads)
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"status": "Healthy"}

    @app.post(ROUTE)
    async def predict(request: Request) -> list[float]:
        instance = torch.tensor(await request.json(), dtype=torch.float32)
        return predict_rows(model, instance.unsqueeze(0))[0]

    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.fastapi_app")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    app = create_app(args.weights, args.threads)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
