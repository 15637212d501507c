"""Is the stack ready to serve? TorchServe answers, and every model has its workers.

Ready means: TorchServe's management API answers, and every version of every registered
model has at least `minWorkers` workers with status READY, and at least one. The check
lists the models (`GET /models`, every page) and describes each (`GET /models/{name}/all`), at most
`concurrency` at a time, each call within `timeout` seconds, so `/readyz` stays cheap and
quick even with many models or a stuck TorchServe.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from service.errors import UpstreamError
from service.upstream import TorchServeClient
from service.upstream_errors import Api

_PAGE = 100


@dataclass
class VersionReadiness:
    min_workers: int
    ready_workers: int

    @property
    def ready(self) -> bool:
        # At least one READY worker too: a registered model that no worker can serve (its
        # load failed, or it was scaled to 0) is not ready, whatever minWorkers says.
        return self.ready_workers >= max(self.min_workers, 1)


@dataclass
class ModelReadiness:
    versions: dict[str, VersionReadiness] = field(default_factory=dict)
    error: str | None = None

    @property
    def ready(self) -> bool:
        return self.error is None and all(v.ready for v in self.versions.values())


@dataclass
class Readiness:
    """The outcome; `as_json` is `/readyz`'s body."""

    torchserve: str  # "up", or why not
    models: dict[str, ModelReadiness] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.torchserve == "up" and all(m.ready for m in self.models.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "torchserve": self.torchserve,
            "models": {
                name: {
                    "ready": model.ready,
                    **({"error": model.error} if model.error else {}),
                    "versions": {
                        version: {
                            "ready": v.ready,
                            "minWorkers": v.min_workers,
                            "readyWorkers": v.ready_workers,
                        }
                        for version, v in model.versions.items()
                    },
                }
                for name, model in self.models.items()
            },
        }


def versions_from_description(description: Any) -> dict[str, VersionReadiness]:
    """Per-version worker counts from TorchServe's `GET /models/{name}/all` answer."""
    versions: dict[str, VersionReadiness] = {}
    if not isinstance(description, list):
        raise ValueError("a model description is a list of versions")
    for entry in description:
        workers = entry.get("workers") or []
        versions[str(entry.get("modelVersion", ""))] = VersionReadiness(
            min_workers=int(entry.get("minWorkers", 0)),
            ready_workers=sum(1 for w in workers if w.get("status") == "READY"),
        )
    return versions


async def _list_models(client: TorchServeClient, timeout: float) -> list[str]:
    names: list[str] = []
    token: str | None = "0"  # noqa: S105 (a page token, not a password)
    while token is not None:
        page = await client.get_json(
            Api.MANAGEMENT, f"/models?limit={_PAGE}&next_page_token={token}", timeout=timeout
        )
        names.extend(str(item["modelName"]) for item in page.get("models", []))
        next_token = page.get("nextPageToken")
        token = str(next_token) if next_token not in (None, "", token) else None
    return names


async def check_readiness(
    client: TorchServeClient, *, concurrency: int, timeout: float
) -> Readiness:
    """Ask TorchServe about every model; never raises for TorchServe's failures."""
    try:
        names = await _list_models(client, timeout)
    except UpstreamError as error:
        return Readiness(torchserve=f"unavailable: {error.message}")
    except (ValueError, KeyError, TypeError, AttributeError):
        return Readiness(torchserve="unavailable: unexpected answer to GET /models")

    limit = asyncio.Semaphore(concurrency)

    async def describe(name: str) -> ModelReadiness:
        async with limit:
            try:
                answer = await client.get_json(
                    Api.MANAGEMENT, f"/models/{quote(name, safe='')}/all", timeout=timeout
                )
                return ModelReadiness(versions=versions_from_description(answer))
            except UpstreamError as error:
                return ModelReadiness(error=error.message)
            except (ValueError, KeyError, TypeError, AttributeError):
                return ModelReadiness(error="unexpected answer to the model description")

    results = await asyncio.gather(*(describe(name) for name in names))
    return Readiness(torchserve="up", models=dict(zip(names, results, strict=True)))
