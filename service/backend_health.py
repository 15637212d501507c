"""One backend's state in the pool, its health check, and how it joins.

A backend is `joining` until two checks in a row pass (TorchServe's `/ping`, and its model
list read whole) and it has been given the models its healthy peers serve; then `healthy`
(it takes traffic); `down` after its first failed request or check, and back through the
same two good checks and the same joining step. Joining registers each missing model from
the model store, with the batching, workers and timeout a peer runs it with.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from service.backends import BackendAddress
from service.batching import PredictionBatcher
from service.errors import Conflict, UpstreamError
from service.upstream import TorchServeClient
from service.upstream_errors import Api

logger = logging.getLogger(__name__)

_PAGE = 100
GOOD_CHECKS_TO_RETURN = 2


class BackendState(StrEnum):
    JOINING = "joining"
    HEALTHY = "healthy"
    DOWN = "down"


@dataclass(eq=False)
class Member:
    """One backend: its client and batcher, what it serves, and how it is doing."""

    address: BackendAddress
    client: TorchServeClient
    batcher: PredictionBatcher
    state: BackendState = BackendState.JOINING
    good_checks: int = 0
    in_flight: int = 0
    # Model name -> the archive (modelUrl) it was registered from, from the last check.
    urls: dict[str, str] = field(default_factory=dict)
    last_error: str = ""
    joining: bool = False

    @property
    def name(self) -> str:
        return self.address.name

    @property
    def models(self) -> set[str]:
        return set(self.urls)


async def list_models(client: TorchServeClient, timeout: float) -> dict[str, str]:
    """Every model a backend has registered, with the archive it came from (all pages)."""
    urls: dict[str, str] = {}
    token = "0"  # noqa: S105 (a page token, not a password)
    while True:
        page = await client.get_json(
            Api.MANAGEMENT, f"/models?limit={_PAGE}&next_page_token={token}", timeout=timeout
        )
        for entry in page.get("models", []):
            urls[str(entry["modelName"])] = str(entry.get("modelUrl", ""))
        next_token = page.get("nextPageToken")
        if next_token in (None, "", token):
            return urls
        token = str(next_token)


async def check_member(member: Member, *, timeout: float, count: bool = True) -> bool:
    """Ping the backend and read its model list; True when both answered.

    With `count`, a pass adds to `good_checks` (a failure is the caller's to act on, with
    the reason in `last_error`); without, only the model list is refreshed.
    """
    try:
        await member.client.send(Api.INFERENCE, "GET", "/ping", timeout=timeout)
        member.urls = await list_models(member.client, timeout)
    except UpstreamError as error:
        member.last_error = f"{error.type_name}: {error.message}"
        return False
    except (ValueError, KeyError, TypeError, AttributeError):
        member.last_error = "unexpected answer to GET /models"
        return False
    if count:
        member.good_checks += 1
    return True


def _store_archive(url: str, store: Path) -> str | None:
    """`url` when it names an archive file in the model store (the only source allowed)."""
    if not url or Path(url).name != url or not url.endswith(".mar"):
        return None
    return url if (store / url).is_file() else None


async def registration_query(peer: Member, model: str, archive: str, timeout: float) -> bytes:
    """How `peer` runs `model`'s default version, as `POST /models` parameters."""
    [described, *_] = await peer.client.get_json(
        Api.MANAGEMENT, f"/models/{quote(model, safe='')}", timeout=timeout
    )
    values: dict[str, Any] = {"url": archive, "synchronous": "true"}
    for key, parameter in (
        ("batchSize", "batch_size"),
        ("maxBatchDelay", "max_batch_delay"),
        ("minWorkers", "initial_workers"),
        ("responseTimeout", "response_timeout"),
    ):
        if isinstance(described.get(key), int):
            values[parameter] = described[key]
    return urlencode(values).encode()


async def join_member(
    member: Member, peers: Sequence[Member], store: Path, *, timeout: float
) -> bool:
    """Register on `member` every model its healthy `peers` serve and it lacks, from the
    model store; True when it serves them all (or they could not come from the store)."""
    wanted: dict[str, tuple[Member, str]] = {}
    for peer in peers:
        for model, url in peer.urls.items():
            if model not in member.urls and model not in wanted:
                wanted[model] = (peer, url)
    registrations = []
    for model, (peer, url) in sorted(wanted.items()):
        archive = _store_archive(url, store)
        if archive is None:
            logger.warning(
                "Backend %s: model %s (%s) is not an archive in the model store; not copied",
                member.name,
                model,
                url,
            )
            continue
        registrations.append(_register(member, peer, model, archive, timeout))
    # Together: each waits for its model's workers to start (synchronous registration).
    failures = [why for why in await asyncio.gather(*registrations) if why is not None]
    if failures:
        member.last_error = "joining: " + "; ".join(failures)
        logger.warning("Backend %s: %s", member.name, member.last_error)
        member.good_checks = 0
        return False
    return True


async def _register(
    member: Member, peer: Member, model: str, archive: str, timeout: float
) -> str | None:
    """Register `model` on `member` as `peer` runs it; None, or why it failed."""
    try:
        query = await registration_query(peer, model, archive, timeout)
        await member.client.send(Api.MANAGEMENT, "POST", "/models", query=query, timeout=timeout)
    except Conflict:
        return None  # registered meanwhile: what was wanted
    except UpstreamError as error:
        return f"registering {model} failed: {error.message}"
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"registering {model} failed: unexpected answer describing it on {peer.name}"
    logger.info("Backend %s: registered %s from %s", member.name, model, archive)
    return None
