"""The Python peers' model: `bench.mnist_cnn.MnistCnn` with the bench's saved weights, as a user
would load it (no project code): `torch.load`, `load_state_dict`, `eval`, a fixed thread count.
The stock TorchServe peer loads the same files with TorchServe's own `BaseHandler`; the bench
computes the expected answer here (`compare.expected_answer`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from bench.mnist_cnn import MnistCnn


def load_mnist(weights: Path, threads: int) -> MnistCnn:
    """The CNN on CPU with `weights` (a state dict), run on `threads` torch threads."""
    torch.set_num_threads(threads)
    model = MnistCnn()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


def predict_rows(model: MnistCnn, batch: torch.Tensor) -> list[list[float]]:
    """`model` on `batch` ([N, 1, 28, 28]): one list of 10 log-probabilities per row."""
    with torch.inference_mode():
        rows: list[list[float]] = model(batch).tolist()
    return rows
