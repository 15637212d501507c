"""The stock TorchServe peer's handler: what a TorchServe user writes from its docs.

A custom handler as TorchServe's "Custom handlers" page describes it: a subclass of
`BaseHandler`, whose own `initialize` loads the model in eager mode (the archive's model file
`mnist_cnn.py`, which defines exactly one class, and its state dict), and whose `inference`
runs it under `torch.inference_mode`. Only the two ends are written here:

- `preprocess`: each request's JSON body (`[1, 28, 28]`) as a tensor, the batch stacked;
- `postprocess`: one list of 10 log-probabilities per request.

It travels alone inside the archive (torch-model-archiver's `--handler`), so it imports
nothing from this project, and holds exactly one class (TorchServe looks for one).
"""

import json
import os
from typing import Any

import torch
from ts.torch_handler.base_handler import BaseHandler

# How many torch threads the worker runs on. An environment variable, not the model-config:
# TorchServe's frontend starts its workers with its own environment, so whoever starts
# TorchServe sets it, and the archive stays the same for any thread count. Unset: torch's
# own default. TorchServe's CPU performance notes tell users to size this pool.
THREADS_VARIABLE = "MNIST_TORCH_THREADS"


class MnistHandler(BaseHandler):  # type: ignore[misc]  # ts ships no type information
    """JSON `[1, 28, 28]` lists in, lists of 10 floats out, one per request of the batch."""

    def initialize(self, context: Any) -> None:
        threads = os.environ.get(THREADS_VARIABLE)
        if threads:
            torch.set_num_threads(int(threads))
        super().initialize(context)

    def preprocess(self, data: list[dict[str, Any]]) -> torch.Tensor:
        """One `[1, 28, 28]` float32 tensor per request, stacked: `[N, 1, 28, 28]`.

        TorchServe's worker hands over an `application/json` body already decoded (a list);
        anything else arrives as bytes, read here as JSON too.
        """
        instances = []
        for row in data:
            payload = row.get("data") or row.get("body")
            if isinstance(payload, bytes | bytearray | str):
                payload = json.loads(payload)
            instances.append(torch.tensor(payload, dtype=torch.float32))
        return torch.stack(instances)

    def postprocess(self, data: torch.Tensor) -> list[list[float]]:
        """The model's `[N, 10]` output as N lists, in the batch's order."""
        rows: list[list[float]] = data.tolist()
        return rows
