"""What an archive's model-config.yaml asks of TorchServe's batching, read from the .mar.

TorchServe reads `maxBatchDelay: 0` in model-config.yaml as "use the default, 100 ms"
(ModelManager: a value <= 0 falls back), so a model built to take only what is already
queued (`max_batch_delay_ms = 0`: issue 7) must be registered with `batch_size` and
`max_batch_delay` given explicitly. The launcher (start-up) and the gateway's `POST /models`
both take them from here. The gateway's Open Inference Protocol metadata reads the archive's
`handler:` section from here too (`handler_section`).
"""

from __future__ import annotations

import functools
import json
import zipfile
from pathlib import Path
from typing import Any

import yaml

MANIFEST = "MAR-INF/MANIFEST.json"


class ArchiveUnreadable(ValueError):
    """The file is not a model archive whose config can be read."""


def archive_config(archive: Path) -> dict[str, Any]:
    """The archive's model-config.yaml as a mapping ({} when it has none)."""
    try:
        with zipfile.ZipFile(archive) as mar:
            manifest = json.loads(mar.read(MANIFEST))
            config_name = manifest.get("model", {}).get("configFile")
            if not config_name:
                return {}
            config = yaml.safe_load(mar.read(config_name))
    except (
        OSError,
        KeyError,
        ValueError,
        AttributeError,
        zipfile.BadZipFile,
        yaml.YAMLError,
    ) as exc:
        raise ArchiveUnreadable(f"{archive.name} is not a readable model archive: {exc}") from None
    return config if isinstance(config, dict) else {}


def model_identity(archive: Path) -> tuple[str, str]:
    """`(modelName, modelVersion)` from the archive's manifest: what TorchServe registers it as.

    Raises:
        ArchiveUnreadable: no readable manifest naming the model.
    """
    try:
        with zipfile.ZipFile(archive) as mar:
            model = json.loads(mar.read(MANIFEST)).get("model", {})
        name, version = model["modelName"], str(model.get("modelVersion", "1.0"))
    except (OSError, KeyError, ValueError, AttributeError, TypeError, zipfile.BadZipFile) as exc:
        raise ArchiveUnreadable(f"{archive.name} is not a readable model archive: {exc}") from None
    if not isinstance(name, str):
        raise ArchiveUnreadable(f"{archive.name}'s manifest names no model")
    return name, version


def batching_query(archive: Path) -> dict[str, str]:
    """`batch_size` and `max_batch_delay` for `POST /models`, as far as the config names them."""
    config = archive_config(archive)
    query: dict[str, str] = {}
    batch_size = config.get("batchSize")
    if isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size > 0:
        query["batch_size"] = str(batch_size)
    delay = config.get("maxBatchDelay")
    if isinstance(delay, int) and not isinstance(delay, bool) and delay >= 0:
        query["max_batch_delay"] = str(delay)
    return query


def handler_section(archive: Path) -> dict[str, Any]:
    """The `handler:` section of the archive's model-config.yaml ({} when it has none).

    Cached per archive file (its path, size and modification time), so a gateway answering
    the Open Inference Protocol's metadata reads each archive once, and again only once it
    is replaced. Raises `ArchiveUnreadable` like `archive_config`.
    """
    try:
        stat = archive.stat()
    except OSError as exc:
        raise ArchiveUnreadable(f"{archive.name} is not a readable model archive: {exc}") from None
    return _cached_handler_section(archive, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _cached_handler_section(archive: Path, size: int, mtime_ns: int) -> dict[str, Any]:
    # `size` and `mtime_ns` are part of the key only: a replaced archive is read anew.
    section = archive_config(archive).get("handler")
    return section if isinstance(section, dict) else {}
