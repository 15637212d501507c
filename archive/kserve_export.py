"""Export a model store as the layout KServe's TorchServe runtime reads from a `storageUri`.

    DIR/config/config.properties   TorchServe's configuration, with a `model_snapshot` that
                                   registers every exported archive at start
    DIR/model-store/<name>.mar     the archives, copied unchanged

KServe's runtime starts `torchserve --model-store=/mnt/models/model-store
--ts-config=/mnt/models/config/config.properties` and its wrapper reads the same file for the
model names and TorchServe's addresses (pytorch/serve, kubernetes/kserve/kserve_wrapper). The
snapshot carries each archive's own serving settings from its model-config.yaml (batch size,
batch delay, workers, response timeout): TorchServe reads `maxBatchDelay: 0` in an archive's
model-config.yaml as "the default, 100 ms", but takes the snapshot's value as given.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from archive.errors import ArchiveError

MAR_MANIFEST = "MAR-INF/MANIFEST.json"
CONFIG_FILE = Path("config") / "config.properties"
MODEL_STORE_DIR = "model-store"
# Where KServe's storage initializer puts the storageUri's contents in the predictor pod.
KSERVE_MODEL_STORE = "/mnt/models/model-store"
# KServe's wrapper listens on 8080 and forwards to TorchServe here (both APIs on one port).
KSERVE_TORCHSERVE_ADDRESS = "http://0.0.0.0:8085"
KSERVE_METRICS_ADDRESS = "http://0.0.0.0:8082"

# TorchServe's own defaults, for an archive whose model-config.yaml names no value.
DEFAULTS = {
    "batchSize": 1,
    "maxBatchDelay": 100,
    "minWorkers": 1,
    "maxWorkers": 1,
    "responseTimeout": 120,
}


class ExportError(ArchiveError):
    """The store cannot be exported: a named archive is missing or an archive is unreadable."""


@dataclass(frozen=True)
class ExportedModel:
    """One archive as the snapshot registers it."""

    name: str
    version: str
    mar_name: str
    batch_size: int
    max_batch_delay_ms: int
    min_workers: int
    max_workers: int
    response_timeout_s: int

    def snapshot_entry(self) -> dict[str, Any]:
        return {
            "defaultVersion": True,
            "marName": self.mar_name,
            "minWorkers": self.min_workers,
            "maxWorkers": self.max_workers,
            "batchSize": self.batch_size,
            "maxBatchDelay": self.max_batch_delay_ms,
            "responseTimeout": self.response_timeout_s,
        }


def read_exported_model(archive: Path) -> ExportedModel:
    """The name, version and serving settings an archive declares.

    Raises:
        ExportError: the file is not a readable model archive, or a setting has a bad value.
    """
    try:
        with zipfile.ZipFile(archive) as mar:
            manifest = json.loads(mar.read(MAR_MANIFEST))
            model = manifest["model"]
            config_name = model.get("configFile")
            config = yaml.safe_load(mar.read(config_name)) if config_name else {}
    except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile, yaml.YAMLError) as exc:
        raise ExportError(f"{archive}: not a readable model archive ({exc})") from None
    if not isinstance(config, dict):
        config = {}
    values: dict[str, int] = {}
    for key, default in DEFAULTS.items():
        value = config.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ExportError(f"{archive}: model-config.yaml {key} must be an integer >= 0")
        values[key] = value
    return ExportedModel(
        name=str(model["modelName"]),
        version=str(model.get("modelVersion") or "1.0"),
        mar_name=archive.name,
        batch_size=max(values["batchSize"], 1),
        max_batch_delay_ms=values["maxBatchDelay"],
        min_workers=values["minWorkers"],
        max_workers=max(values["maxWorkers"], values["minWorkers"]),
        response_timeout_s=values["responseTimeout"],
    )


def select_archives(store: Path, names: Sequence[str]) -> list[Path]:
    """`<store>/<name>.mar` for each name, or every archive in the store when none is named.

    Raises:
        ExportError: the store has no archive, or a named one is missing.
    """
    available = sorted(store.glob("*.mar")) if store.is_dir() else []
    if not names:
        if not available:
            raise ExportError(f"no archive in {store}: run `python -m archive build` first")
        return available
    by_name = {path.stem: path for path in available}
    missing = [name for name in names if name not in by_name]
    if missing:
        known = ", ".join(by_name) or "none"
        raise ExportError(
            f"no archive {', '.join(m + '.mar' for m in missing)} in {store} (there: {known})"
        )
    return [by_name[name] for name in dict.fromkeys(names)]


def render_config(models: Sequence[ExportedModel]) -> str:
    """config.properties for KServe's TorchServe runtime, registering `models` at start."""
    snapshot = {
        "name": "startup.cfg",
        "modelCount": len(models),
        "models": {m.name: {m.version: m.snapshot_entry()} for m in models},
    }
    lines = [
        "# TorchServe under KServe's TorchServe runtime (python -m archive export-kserve).",
        "# KServe's wrapper serves the predictor on 8080 and forwards to TorchServe on 8085.",
        f"inference_address={KSERVE_TORCHSERVE_ADDRESS}",
        f"management_address={KSERVE_TORCHSERVE_ADDRESS}",
        f"metrics_address={KSERVE_METRICS_ADDRESS}",
        "grpc_inference_port=7070",
        "grpc_management_port=7071",
        "# KServe configures TorchServe through TS_* variables (TS_SERVICE_ENVELOPE).",
        "enable_envvars_config=true",
        "# The archives carry everything they import: no pip install at load time.",
        "install_py_dep_per_model=false",
        "# KServe's wrapper and ingress sit in front; TorchServe's own tokens would lock the",
        "# wrapper out. The management API cannot register other models (enable_model_api",
        "# stays off): the snapshot below is what this server runs.",
        "disable_token_authorization=true",
        "enable_metrics_api=true",
        "metrics_mode=prometheus",
        "number_of_netty_threads=4",
        "job_queue_size=100",
        f"model_store={KSERVE_MODEL_STORE}",
        "model_snapshot=" + json.dumps(snapshot, separators=(",", ":"), sort_keys=True),
    ]
    return "\n".join(lines) + "\n"


def export_kserve(store: Path, target: Path, names: Sequence[str] = ()) -> list[ExportedModel]:
    """Write the KServe layout of the archives `names` (all when empty) of `store` to `target`.

    Archives already in `target/model-store` that are not exported are removed, so the
    snapshot and the store always agree. Each file is written to a temporary name and moved
    into place.

    Raises:
        ExportError: no archive, a named archive is missing, or one is unreadable.
    """
    archives = select_archives(store, names)
    models = [read_exported_model(archive) for archive in archives]
    seen: dict[str, str] = {}
    for model in models:
        if model.name in seen:
            raise ExportError(
                f"{model.mar_name} and {seen[model.name]} both hold model {model.name!r}"
            )
        seen[model.name] = model.mar_name
    model_store = target / MODEL_STORE_DIR
    model_store.mkdir(parents=True, exist_ok=True)
    (target / CONFIG_FILE).parent.mkdir(parents=True, exist_ok=True)
    for archive in archives:
        _write_atomically(model_store / archive.name, source=archive)
    exported = {archive.name for archive in archives}
    for stale in model_store.glob("*.mar"):
        if stale.name not in exported:
            stale.unlink()
    _write_atomically(target / CONFIG_FILE, data=render_config(models).encode())
    return models


def _write_atomically(path: Path, *, data: bytes = b"", source: Path | None = None) -> None:
    """`data` (or a copy of `source`) at `path`, never half-written."""
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
        if source is not None:
            with source.open("rb") as original:
                shutil.copyfileobj(original, f)
        else:
            f.write(data)
    try:
        os.chmod(f.name, 0o644)
        os.replace(f.name, path)
    except OSError:
        Path(f.name).unlink(missing_ok=True)
        raise
