"""Register a store's archives through TorchServe's management API, as their configs say.

TorchServe's start-up loading (`load_models`) would read an archive's `maxBatchDelay: 0` as
100 ms (see `service.archive_config`); registering each archive with its batch size and delay
given explicitly serves exactly what the archive asks for.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from launcher.errors import LauncherError
from service.archive_config import ArchiveUnreadable, batching_query


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
) -> None:
    """Register each archive (without waiting for its workers: TorchServe starts them).

    Raises:
        LauncherError: an archive is unreadable or TorchServe refused it (its message).
    """
    for archive in archives:
        query = registration_query(archive, default_workers)
        # Unpacking a large archive can take a while; workers start after the answer.
        response = client.post(f"{management_url}/models", params=query, timeout=120.0)
        if response.status_code not in (200, 202):
            raise LauncherError(
                f"TorchServe refused to register {archive.name} "
                f"({response.status_code}): {response.text.strip()}"
            )
