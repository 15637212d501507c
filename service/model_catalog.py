"""Which archive serves a model version, which versions exist, and whether one is ready.

Asked of TorchServe's management API (`GET /models/{name}[/{version}|/all]`), so it is always
TorchServe's truth: the default version, versions registered or removed by anyone. Answers
used on the prediction path (which archive, hence which signature) are kept `ttl_s` seconds,
so a burst of requests costs TorchServe one description; readiness is asked fresh each time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.errors import ModelNotFound, UpstreamProtocolError
from service.proxy import GatewayState
from service.readiness import versions_from_description
from service.upstream_errors import Api
from service.validation import ARCHIVE_SUFFIX

_MAX_CACHED = 1024


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """One registered version: its name, version, archive in the model store (None when
    TorchServe loaded it from elsewhere) and whether its minimum workers are READY."""

    name: str
    version: str
    archive: Path | None
    ready: bool


class ModelCatalog:
    """TorchServe's registered models, as the protocols need them; raises `UpstreamError`s
    (`ModelNotFound` for an unknown model or version)."""

    def __init__(self, state: GatewayState, *, ttl_s: float = 1.0) -> None:
        self._state = state
        self._ttl_s = ttl_s
        self._cache: dict[tuple[str, str | None], tuple[float, ModelVersion]] = {}

    async def version(self, name: str, version: str | None, *, fresh: bool = False) -> ModelVersion:
        """The version `version` of model `name` (its default version for None).

        `name` and `version` must be validated (`service.validation`) by the caller.
        """
        key = (name, version)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and not fresh and cached[0] > now:
            return cached[1]
        path = f"/models/{name}" if version is None else f"/models/{name}/{version}"
        entries = await self._describe(path)
        found = self._entry(name, entries[0])
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        self._cache[key] = (now + self._ttl_s, found)
        return found

    async def versions(self, name: str) -> list[str]:
        """Every registered version of model `name`."""
        entries = await self._describe(f"/models/{name}/all")
        return [str(entry.get("modelVersion", "")) for entry in entries]

    async def _describe(self, path: str) -> list[dict[str, Any]]:
        upstream = self._state.upstream
        assert upstream is not None, "the lifespan opens the upstream client"
        answer = await upstream.get_json(Api.MANAGEMENT, path)
        if not isinstance(answer, list) or not answer or not isinstance(answer[0], dict):
            if isinstance(answer, list) and not answer:
                raise ModelNotFound()
            raise UpstreamProtocolError("TorchServe's model description was not understood.")
        return answer

    def _entry(self, name: str, entry: dict[str, Any]) -> ModelVersion:
        version = str(entry.get("modelVersion", ""))
        try:
            readiness = versions_from_description([entry])[version]
        except (ValueError, TypeError, AttributeError) as exc:
            raise UpstreamProtocolError(
                "TorchServe's model description was not understood."
            ) from exc
        return ModelVersion(name, version, self._archive(entry.get("modelUrl")), readiness.ready)

    def _archive(self, url: Any) -> Path | None:
        # TorchServe keeps the url it registered the model from; the gateway registers only
        # bare archive names from the model store (`resolve_archive`), the launcher too.
        if not isinstance(url, str) or not url.endswith(ARCHIVE_SUFFIX):
            return None
        if "/" in url or "\\" in url or url.startswith("."):
            return None
        candidate = self._state.settings.model_store / url
        return candidate if candidate.is_file() else None
