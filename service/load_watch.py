"""Did a model's workers start, or do they keep dying? Told from TorchServe's descriptions.

TorchServe describes a worker that is starting and one whose model failed to load the same
way (`"status": "UNLOADING"`), and restarts a failed worker forever with a back-off. What
tells them apart is the worker's process: a starting worker keeps its pid (-1 until its
process connects), a failing one gets a new process, so a new pid, on every retry. The
gateway's `POST /models` and the launcher's start-up both watch a new model with
`WorkerWatch` and unregister it, or stop, when a worker is seen dying.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class LoadState(StrEnum):
    READY = "ready"  # every version has at least max(minWorkers, 1) workers READY
    STARTING = "starting"  # not yet, and no worker seen dying
    FAILED = "failed"  # a worker's process was replaced: it died while starting


def ready_workers(version: dict[str, Any]) -> int:
    """How many of a described version's workers are READY."""
    return sum(1 for w in version.get("workers") or [] if w.get("status") == "READY")


def version_ready(version: dict[str, Any]) -> bool:
    """At least `minWorkers` READY, and at least one: a model nobody can be served by is
    not ready, whatever its `minWorkers` says."""
    return ready_workers(version) >= max(int(version.get("minWorkers", 1)), 1)


@dataclass
class WorkerWatch:
    """Feed it successive `GET /models/{name}[/{version}]` answers (`observe`)."""

    # (version, worker id) -> the last positive pid seen for it.
    pids: dict[tuple[str, str], int] = field(default_factory=dict)
    deaths: int = 0

    def observe(self, description: Any) -> LoadState:
        """The model's state after this description; a list of versions, as TorchServe
        answers. Anything else is STARTING (the next answer may be readable)."""
        if not isinstance(description, list) or not description:
            return LoadState.STARTING
        for version in description:
            if not isinstance(version, dict):
                return LoadState.STARTING
            for worker in version.get("workers") or []:
                pid = worker.get("pid")
                if not isinstance(pid, int) or pid <= 0:
                    continue
                key = (str(version.get("modelVersion", "")), str(worker.get("id", "")))
                seen = self.pids.get(key)
                if seen is not None and seen != pid:
                    self.deaths += 1
                self.pids[key] = pid
        if self.deaths:
            return LoadState.FAILED
        if all(isinstance(v, dict) and version_ready(v) for v in description):
            return LoadState.READY
        return LoadState.STARTING
