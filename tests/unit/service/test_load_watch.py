"""`WorkerWatch`: a worker whose process is replaced died while loading; READY needs at
least one READY worker per version. Descriptions are TorchServe's `GET /models/{name}` shape."""

from __future__ import annotations

from typing import Any

from service.load_watch import LoadState, WorkerWatch, version_ready


def described(*workers: tuple[str, int], min_workers: int = 1) -> list[dict[str, Any]]:
    return [
        {
            "modelName": "m",
            "modelVersion": "1.0",
            "minWorkers": min_workers,
            "workers": [
                {"id": str(9000 + i), "status": status, "pid": pid}
                for i, (status, pid) in enumerate(workers)
            ],
        }
    ]


def test_a_worker_that_starts_keeps_its_pid_and_becomes_ready() -> None:
    watch = WorkerWatch()
    assert watch.observe(described(("UNLOADING", -1))) is LoadState.STARTING
    assert watch.observe(described(("UNLOADING", 41))) is LoadState.STARTING
    assert watch.observe(described(("UNLOADING", 41))) is LoadState.STARTING
    assert watch.observe(described(("READY", 41))) is LoadState.READY


def test_a_new_pid_for_the_same_worker_is_a_death() -> None:
    watch = WorkerWatch()
    assert watch.observe(described(("UNLOADING", 41))) is LoadState.STARTING
    assert watch.observe(described(("UNLOADING", -1))) is LoadState.STARTING
    assert watch.observe(described(("UNLOADING", 57))) is LoadState.FAILED
    assert watch.deaths == 1
    # Once seen dying, it stays failed even if a later retry came up.
    assert watch.observe(described(("READY", 57))) is LoadState.FAILED


def test_workers_are_told_apart_by_id() -> None:
    watch = WorkerWatch()
    assert watch.observe(described(("UNLOADING", 41), ("UNLOADING", 42))) is LoadState.STARTING
    state = watch.observe(described(("READY", 41), ("READY", 42), min_workers=2))
    assert state is LoadState.READY


def test_unreadable_descriptions_are_starting() -> None:
    watch = WorkerWatch()
    for answer in (None, {}, [], ["x"], [{"workers": [{"pid": "7"}]}]):
        assert watch.observe(answer) is LoadState.STARTING


def test_a_version_needs_one_ready_worker_even_with_min_workers_zero() -> None:
    assert not version_ready(described(min_workers=0)[0])
    assert version_ready(described(("READY", 3), min_workers=0)[0])
    assert not version_ready(described(("READY", 3), ("UNLOADING", 4), min_workers=2)[0])
