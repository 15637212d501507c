"""What an archive's model-config.yaml asks of TorchServe's batching, read from the .mar.

TorchServe reads `maxBatchDelay: 0` in model-config.yaml as "use the default, 100 ms"
(ModelManager: a value <= 0 falls back), so a model built to take only what is already
queued (`max_batch_delay_ms = 0`: issue 7) must be registered with `batch_size` and
`max_batch_delay` given explicitly. The launcher (start-up) and the gateway's `POST /models`
both take them from here.
"""

from __future__ import annotations

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
