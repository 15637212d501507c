"""Where the model runs, and how many threads torch may use there."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping

import torch

logger = logging.getLogger(__name__)


def select_device(gpu_id: int | str | None) -> torch.device:
    """``cuda:{gpu_id}`` when TorchServe assigned a GPU and CUDA is available, else CPU."""
    if gpu_id is not None and str(gpu_id) != "" and torch.cuda.is_available():
        index = int(gpu_id)
        if 0 <= index < torch.cuda.device_count():
            return torch.device(f"cuda:{index}")
        logger.warning(
            "TorchServe assigned GPU %s but only %d exist; using CPU",
            gpu_id,
            torch.cuda.device_count(),
        )
    return torch.device("cpu")


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# Cores left to the rest of the stack (TorchServe's JVM, the gateway) when torch sizes its pool.
# An OpenMP pool that spans every core stalls at each barrier as soon as another process takes
# one of them: on 2 cores, with one core busy, the 28x28 CNN ran 20x slower on 2 threads than
# on 1 (issue 7, `python -m bench`).
RESERVED_CORES = 1


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """Split the cores, less RESERVED_CORES, evenly between a model's workers; at least 1 each."""
    cores = available_cores() if cores is None else cores
    return max(1, (cores - RESERVED_CORES) // max(1, workers))


# What the launcher tells TorchServe's workers (through TorchServe's environment) about how
# many workers each model runs when an archive's config names none.
WORKERS_ENV = "TORCHSERVE_WORKERS_PER_MODEL"


def expected_workers(min_workers: object, environ: Mapping[str, str] | None = None) -> int:
    """How many workers share this model's cores: the archive's `minWorkers` when it names
    one, else the launcher's TORCHSERVE_WORKERS_PER_MODEL, else 1.

    The project's archives name no workers (the setting decides), so without the variable a
    model served by 4 workers would give each of them nearly every core.
    """
    environ = os.environ if environ is None else environ
    for value in (min_workers, environ.get(WORKERS_ENV)):
        with contextlib.suppress(TypeError, ValueError):
            workers = int(str(value))
            if workers >= 1:
                return workers
    return 1


def configure_threads(workers: int) -> int:
    """Size torch's intra-op pool for this worker; returns the thread count chosen.

    TorchServe sets none, and every worker defaulting to all cores makes them fight.
    """
    threads = threads_per_worker(workers)
    torch.set_num_threads(threads)
    # One inter-op thread: a worker runs one forward at a time. It can only be set once,
    # before any parallel work, hence the suppress.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    return threads
