"""Stage an archive's files and write them as a reproducible ``.mar``.

Layout (every entry at a fixed path)::

    torchserve_entry.py      the handler TorchServe loads (handlers/torchserve_entry.py)
    handlers/*.py            the whole loading package, so a stock TorchServe needs nothing of ours
    <model file>.py          the user's model class, under its own name
    weights.pt               the whole state_dict the gate loaded (torch.save, no optimizer state;
                             under strict = false, with what the build initialised)
    labels.json              index-to-name labels, when the spec has them
    vocab.json               a text model's vocabulary (token -> id, or a list of tokens)
    <hooks file>.py          the user's decode/encode/setup hooks, under its own name
    <extra file>             each file the hooks read, under its own name
    examples.json            example requests and the answers recorded for them (replayed at load)
    model-config.yaml        TorchServe's worker/batch keys + ``handler:`` (HandlerSettings)
    integrity.json           sha256 of every file above, verified by the handler at load
    MAR-INF/MANIFEST.json    torch-model-archiver's manifest
    MAR-INF/build.json       the build's inputs and their fingerprint (see ``archive.fingerprint``)

Why the zip is written here and not by ``model_archiver``: its ``package_model`` stamps the
manifest with the current time, zips files in ``os.walk`` order with their mtimes and modes, and
stages in ``$TMPDIR/<model name>`` (two concurrent builds of one name collide). So its typed
``ModelArchiverConfig`` and ``ModelExportUtils.generate_manifest_json`` make the manifest (the
exact MANIFEST.json TorchServe reads), and this module writes the zip in the same layout with
sorted entries, a fixed timestamp and fixed permissions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from model_archiver.model_archiver_config import ModelArchiverConfig
from model_archiver.model_packaging_utils import ModelExportUtils

import handlers
from archive.errors import ArchiveError
from archive.spec import ModelSpec
from handlers.golden import EXAMPLES_NAME
from handlers.integrity import MANIFEST_NAME, write_manifest
from handlers.predictor import Predictor

HANDLER_ENTRY = "torchserve_entry.py"
HANDLERS_PACKAGE = "handlers"
WEIGHTS_NAME = "weights.pt"
LABELS_NAME = "labels.json"
VOCAB_NAME = "vocab.json"
CONFIG_NAME = "model-config.yaml"
MAR_MANIFEST = "MAR-INF/MANIFEST.json"
BUILD_INFO = "MAR-INF/build.json"
RESERVED = {
    HANDLER_ENTRY,
    HANDLERS_PACKAGE + ".py",
    WEIGHTS_NAME,
    LABELS_NAME,
    VOCAB_NAME,
    CONFIG_NAME,
    EXAMPLES_NAME,
    MANIFEST_NAME,
}

# 1980-01-01, the earliest time a zip can hold; SOURCE_DATE_EPOCH overrides it
# (https://reproducible-builds.org/specs/source-date-epoch/).
DEFAULT_EPOCH = 315532800
FILE_MODE = 0o100644
# Weights are already a zip of raw tensors: deflating them costs time for a few percent.
STORED_SUFFIXES = (".pt",)


def handlers_sources() -> dict[str, Path]:
    """The ``handlers`` package's Python files by their path inside the archive."""
    root = Path(handlers.__file__).parent
    return {
        f"{HANDLERS_PACKAGE}/{path.relative_to(root).as_posix()}": path
        for path in sorted(root.rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def build_epoch() -> int:
    """The timestamp written into the archive: ``SOURCE_DATE_EPOCH`` or 1980-01-01."""
    raw = os.environ.get("SOURCE_DATE_EPOCH", "")
    try:
        epoch = int(raw) if raw else DEFAULT_EPOCH
    except ValueError:
        raise ArchiveError(f"SOURCE_DATE_EPOCH must be an integer, not {raw!r}") from None
    return max(epoch, DEFAULT_EPOCH)


def archived_weights(predictor: Predictor) -> dict[str, torch.Tensor]:
    """The weights the gate loaded, as plain contiguous CPU tensors with their own storage.

    Taken from the loaded model, so the archive holds exactly what was proven: clean keys, no
    optimizer state. Under ``strict = false`` that includes what the checkpoint lacked (or had
    with another shape), initialised once by the class under ``init_seed``: every worker,
    restart and machine then loads the same values instead of drawing its own.
    """
    return {
        key: plain_tensor(value)
        for key, value in predictor.model.state_dict().items()
        if isinstance(value, torch.Tensor)
    }


def plain_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` detached on the CPU, contiguous, and alone in its storage.

    torch.save writes a tensor's whole storage: a slice of a larger tensor would carry all of
    it. Such tensors are copied; the others are not, so big models aren't held twice.
    """
    tensor = tensor.detach().to("cpu")
    whole = tensor.numel() * tensor.element_size()
    if (
        tensor.is_contiguous()
        and tensor.storage_offset() == 0
        and tensor.untyped_storage().nbytes() == whole
    ):
        return tensor
    return tensor.clone(memory_format=torch.contiguous_format)


def stage_archive(
    entry: ModelSpec,
    predictor: Predictor,
    base_dir: Path,
    staging: Path,
    build_info: Mapping[str, Any],
    examples_json: bytes | None = None,
) -> dict[str, Path]:
    """Write every file of ``entry``'s archive under ``staging``; returns them by archive path.

    ``examples_json``: the recorded examples (``handlers.golden``), covered by the integrity
    manifest like every other file the handler reads.
    """
    model_file = base_dir / entry.model_file
    model_name = model_file.name
    if model_name in RESERVED:
        raise ArchiveError(
            f"model {entry.name!r}: the model file can't be called {model_name}, "
            "the archive uses that name; rename it"
        )
    user_files = user_file_names(entry)
    files: dict[str, Path] = {}

    def put(name: str, data: bytes) -> None:
        target = staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        files[name] = target

    for name, source in handlers_sources().items():
        put(name, source.read_bytes())
    put(HANDLER_ENTRY, (Path(handlers.__file__).parent / HANDLER_ENTRY).read_bytes())
    put(model_name, model_file.read_bytes())
    for name, spec_path in user_files.items():
        put(name, (base_dir / spec_path).read_bytes())
    if examples_json is not None:
        put(EXAMPLES_NAME, examples_json)
    if entry.labels is not None:
        put(LABELS_NAME, (base_dir / entry.labels).read_bytes())
    if entry.text is not None:
        put(VOCAB_NAME, (base_dir / entry.text.vocab).read_bytes())
    # Saved under its final name: torch.save names the records inside after the file.
    torch.save(archived_weights(predictor), staging / WEIGHTS_NAME)
    files[WEIGHTS_NAME] = staging / WEIGHTS_NAME
    put(CONFIG_NAME, model_config_yaml(entry, model_name).encode())
    files[MANIFEST_NAME] = write_manifest(staging, list(files))
    put(MAR_MANIFEST, mar_manifest(entry, model_name).encode())
    put(BUILD_INFO, (json.dumps(build_info, indent=2, sort_keys=True) + "\n").encode())
    return files


def user_file_names(entry: ModelSpec) -> dict[str, str]:
    """The hooks file and extra files by their name in the archive (their own file name),
    to their path in the spec. ArchiveError when a name is taken by the archive or twice."""
    names: dict[str, str] = {}
    # labels.json and vocab.json are free when the task writes none (the hooks may read theirs).
    unused = {LABELS_NAME} if entry.labels is None else set()
    unused |= {VOCAB_NAME} if entry.text is None else set()
    taken = (RESERVED - unused) | {Path(entry.model_file).name}
    for source in [*([entry.hooks] if entry.hooks else []), *entry.extra_files]:
        name = Path(source).name
        if name in taken or name in names:
            raise ArchiveError(
                f"model {entry.name!r}: {source} would be packed as {name}, a name the archive "
                "already uses; rename the file"
            )
        names[name] = source
    return names


def model_config_yaml(entry: ModelSpec, model_file_name: str) -> str:
    """The archive's model-config.yaml: TorchServe's keys, then the handler's settings."""
    settings = entry.handler_settings()
    settings = dataclasses.replace(
        settings,
        model_file=model_file_name,
        checkpoint=WEIGHTS_NAME,
        checkpoint_key=None,
        labels=LABELS_NAME if entry.labels is not None else None,
        text=dataclasses.replace(settings.text, vocab=VOCAB_NAME) if settings.text else None,
        hooks=Path(entry.hooks).name if entry.hooks else None,
        extra_files=tuple(Path(f).name for f in entry.extra_files) or None,
    )
    serving = entry.serving
    config: dict[str, Any] = {}
    if serving.workers is not None:
        # Only when the spec sets them: TorchServe keeps a model-config's minWorkers over
        # the initial_workers a registration asks for (TORCHSERVE_WORKERS_PER_MODEL).
        config["minWorkers"] = config["maxWorkers"] = serving.workers
    config |= {
        "batchSize": serving.batch_size,
        "maxBatchDelay": serving.max_batch_delay_ms,
        "responseTimeout": serving.response_timeout_s,
        "handler": settings.to_dict(),
    }
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def mar_manifest(entry: ModelSpec, model_file_name: str) -> str:
    """MANIFEST.json as torch-model-archiver writes it, with a fixed ``createdOn``."""
    config = ModelArchiverConfig(
        model_name=entry.name,
        handler=HANDLER_ENTRY,
        version=entry.version,
        serialized_file=WEIGHTS_NAME,
        model_file=model_file_name,
        config_file=CONFIG_NAME,
        export_path=".",
    )
    manifest = json.loads(ModelExportUtils.generate_manifest_json(config))
    manifest["createdOn"] = time.strftime("%d/%m/%Y %H:%M:%S", time.gmtime(build_epoch()))
    return json.dumps(manifest, indent=2)


def write_mar(files: Mapping[str, Path], destination: Path) -> int:
    """Zip ``files`` (archive path -> file) into ``destination`` atomically; returns its size.

    The zip is written to a hidden temporary file beside ``destination`` and moved into place
    with ``os.replace``, so the store never holds a partial ``.mar``.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    date_time = time.gmtime(build_epoch())[:6]
    handle, temporary = tempfile.mkstemp(
        dir=destination.parent, prefix=f".{destination.stem}.", suffix=".mar.tmp"
    )
    try:
        with os.fdopen(handle, "wb") as raw, zipfile.ZipFile(raw, "w") as mar:
            for name in sorted(files):
                _add(mar, name, files[name], date_time)
        os.chmod(temporary, 0o644)
        os.replace(temporary, destination)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return destination.stat().st_size


def _add(mar: zipfile.ZipFile, name: str, source: Path, date_time: tuple[int, ...]) -> None:
    info = zipfile.ZipInfo(name, date_time=(*date_time[:6],))  # type: ignore[arg-type]
    info.create_system = 3  # unix, whatever the build machine: the mode below is unix
    info.external_attr = FILE_MODE << 16
    info.compress_type = (
        zipfile.ZIP_STORED if name.endswith(STORED_SUFFIXES) else zipfile.ZIP_DEFLATED
    )
    info.file_size = source.stat().st_size  # lets zipfile choose ZIP64 up front for huge weights
    with source.open("rb") as reader, mar.open(info, "w") as writer:
        shutil.copyfileobj(reader, writer, 1 << 20)
