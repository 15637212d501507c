import pytest
import torch

from handlers.device import (
    configure_threads,
    expected_workers,
    select_device,
    threads_per_worker,
)


def test_cpu_when_no_gpu_is_assigned() -> None:
    assert select_device(None) == torch.device("cpu")
    assert select_device("") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_cpu_when_cuda_is_unavailable() -> None:
    assert select_device(0) == torch.device("cpu")


@pytest.mark.parametrize(
    ("workers", "cores", "threads"),
    [(1, 2, 1), (2, 2, 1), (4, 2, 1), (1, 1, 1), (2, 17, 8), (0, 4, 3)],
)
def test_cores_less_one_are_split_between_workers(workers: int, cores: int, threads: int) -> None:
    assert threads_per_worker(workers, cores) == threads


def test_configure_threads_sets_torch() -> None:
    before = torch.get_num_threads()
    try:
        chosen = configure_threads(workers=10_000)
        assert chosen == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("min_workers", "environ", "workers"),
    [
        (3, {"TORCHSERVE_WORKERS_PER_MODEL": "2"}, 3),  # the archive names its workers
        (None, {"TORCHSERVE_WORKERS_PER_MODEL": "4"}, 4),  # the project's archives: the setting
        ("", {"TORCHSERVE_WORKERS_PER_MODEL": "4"}, 4),
        (None, {}, 1),
        (None, {"TORCHSERVE_WORKERS_PER_MODEL": "zero"}, 1),
        (0, {"TORCHSERVE_WORKERS_PER_MODEL": "0"}, 1),
    ],
)
def test_workers_sharing_the_cores(
    min_workers: object, environ: dict[str, str], workers: int
) -> None:
    assert expected_workers(min_workers, environ) == workers
