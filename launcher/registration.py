"""Register a store's archives through TorchServe's management API, as their configs say.

TorchServe's start-up loading (`load_models`) would read an archive's `maxBatchDelay: 0` as
100 ms (see `service.archive_config`); registering each archive with its batch size and delay
given explicitly serves exactly what the archive asks for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from launcher.errors import LauncherError
from service.archive_config import ArchiveUnreadable, batching_query, model_identity
from service.load_watch import LoadState, WorkerWatch


def registration_query(archive: Path, default_workers: int) -> dict[str, str]:
    """`POST /models` parameters serving `archive` as its config says.

    `default_workers` only counts when the config names no `minWorkers` (as with
    `load_models`, where TorchServe uses `default_workers_per_model`).

    Raises:
        LauncherError: the file is not a readable model archive.
    """
    try:
        batching = batching_query(archive)
    except ArchiveUnreadable as exc:
        raise LauncherError(str(exc)) from None
    return {"url": archive.name, "initial_workers": str(default_workers), **batching}


def register_archives(
    client: httpx.Client, management_url: str, archives: list[Path], default_workers: int
) -> dict[str, str]:
    """Register each archive without waiting for its workers (`synchronous=false`: TorchServe
    starts every model's workers at once, and the caller watches them: `LoadWatch`).

    Returns each registered model's name -> its archive's file name.

    Raises:
        LauncherError: an archive is unreadable or TorchServe refused it (its message).
    """
    registered: dict[str, str] = {}
    for archive in archives:
        query = {**registration_query(archive, default_workers), "synchronous": "false"}
        try:
            name, _ = model_identity(archive)
        except ArchiveUnreadable as exc:
            raise LauncherError(str(exc)) from None
        # Unpacking a large archive can take a while; workers start after the answer.
        response = client.post(f"{management_url}/models", params=query, timeout=120.0)
        if response.status_code not in (200, 202):
            raise LauncherError(
                f"TorchServe refused to register {archive.name} "
                f"({response.status_code}): {response.text.strip()}"
            )
        registered[name] = archive.name
    return registered


class ModelLoadError(LauncherError):
    """A model's worker died while loading it."""

    def __init__(self, message: str, model: str) -> None:
        super().__init__(message)
        self.model = model


class LoadWatch:
    """The start-up's view of the registered models: each one's workers READY, or one seen
    dying while it loads (`service.load_watch`), which stops the start at once rather than
    when the readiness wait runs out."""

    def __init__(self, archives: dict[str, str]) -> None:
        self.archives = archives
        self._watches = {name: WorkerWatch() for name in archives}

    def ready(self, name: str, description: Any) -> bool:
        """Whether model `name` is ready after `description` (`GET /models/{name}`).

        Raises:
            ModelLoadError: a worker of the model died while loading it.
        """
        watch = self._watches.setdefault(name, WorkerWatch())
        state = watch.observe(description)
        if state is LoadState.FAILED:
            archive = self.archives.get(name, "an archive")
            raise ModelLoadError(
                f"model {name} ({archive}) failed to load: its worker died while loading it "
                "(TorchServe would retry it forever)",
                name,
            )
        return state is LoadState.READY
