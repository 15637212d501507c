"""The model alone, in this process: the ceiling the served figures are compared with.

The model is loaded by the worker's own loading path (`handlers.predictor.load_predictor`)
from the same files the archive is built from, and fed a ready tensor: no decoding, no HTTP.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.loadgen import percentile
from handlers.batch import forward
from handlers.predictor import Predictor, load_predictor
from handlers.settings import HandlerSettings


@dataclass(frozen=True)
class InProcessResult:
    """Forward passes of one batch size: samples per second and latency per pass."""

    batch: int
    passes: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    cpu_s: float

    @property
    def per_second(self) -> float:
        return self.batch * self.passes / self.duration_s if self.duration_s > 0 else 0.0


def load_model(settings: HandlerSettings, base_dir: Path, threads: int) -> Predictor:
    """The model on CPU, built exactly as the worker builds it, run on `threads` threads.

    The benchmark passes the worker's own thread count (`handlers.device.threads_per_worker`),
    so both sides run the same kernels on the same pool size.
    """
    torch.set_num_threads(threads)
    return load_predictor(settings, base_dir, "cpu")


def measure(
    predictor: Predictor, batch: int, duration_s: float, max_passes: int, seed: int = 0
) -> InProcessResult:
    """Run forward passes on a `batch` of random inputs for `duration_s` (or `max_passes`)."""
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, *predictor.settings.instance_shape)
    inputs = torch.rand(shape, generator=generator)
    for _ in range(3):  # warm the allocator and the kernels' caches
        forward(predictor.model, inputs, predictor.settings.memory_format)
    latencies: list[float] = []
    cpu_started = time.process_time()
    started = time.perf_counter()
    deadline = started + duration_s
    while len(latencies) < max_passes:
        begun = time.perf_counter()
        forward(predictor.model, inputs, predictor.settings.memory_format)
        finished = time.perf_counter()
        latencies.append(finished - begun)
        if finished >= deadline:
            break
    duration = time.perf_counter() - started
    return InProcessResult(
        batch=batch,
        passes=len(latencies),
        duration_s=duration,
        p50_ms=percentile(latencies, 50) * 1e3,
        p99_ms=percentile(latencies, 99) * 1e3,
        cpu_s=time.process_time() - cpu_started,
    )
