"""`python -m bench.layouts`: a CNN's forward pass per sample in both memory formats.

The bench's 28x28 CNN and the `digits` example, random weights (speed does not depend on
them), one torch thread (what a worker gets on 2 cores), batches of 1, 8 and 16; each figure
the best of 7 windows, the two layouts interleaved in one process, and the largest difference
between their outputs. The README's "Memory format" table comes from this.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from handlers.batch import forward
from handlers.memory_format import DEFAULT_MEMORY_FORMAT, as_built, lay_out_model
from handlers.model_loading import import_model_class

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "mnist28": (ROOT / "bench" / "mnist_cnn.py", "MnistCnn", (1, 28, 28)),
    "digits": (ROOT / "examples" / "digits" / "model.py", "DigitsNet", (1, 8, 8)),
}
BATCHES = (1, 8, 16)
WINDOWS = 7
SAMPLES_PER_WINDOW = 400


def per_sample_us(model: nn.Module, batch: torch.Tensor, memory_format: str) -> float:
    """The best window's time per sample of `model` on `batch`, in microseconds."""
    calls = SAMPLES_PER_WINDOW // batch.shape[0] + 1
    for _ in range(5):
        forward(model, batch, memory_format)
    best = float("inf")
    for _ in range(WINDOWS):
        started = time.perf_counter()
        for _ in range(calls):
            forward(model, batch, memory_format)
        best = min(best, (time.perf_counter() - started) / calls / batch.shape[0])
    return best * 1e6


def main() -> None:
    torch.set_num_threads(1)
    print("| model | batch | contiguous us/sample | channels_last us/sample | largest difference |")
    print("|---|---:|---:|---:|---:|")
    for name, (model_file, model_class, shape) in MODELS.items():
        torch.manual_seed(0)
        built = import_model_class(model_file, model_class)().eval()
        channels_last = lay_out_model(as_built(built), "channels_last")
        for size in BATCHES:
            batch = torch.rand(size, *shape)
            plain = per_sample_us(built, batch, DEFAULT_MEMORY_FORMAT)
            fast = per_sample_us(channels_last, batch, "channels_last")
            difference = (
                (forward(built, batch) - forward(channels_last, batch, "channels_last"))
                .abs()
                .max()
                .item()
            )
            print(f"| {name} | {size} | {plain:.0f} | {fast:.0f} | {difference:.1e} |")


if __name__ == "__main__":
    main()
