"""What an archive was built from, and whether a ``.mar`` in the store is still current.

The fingerprint is the sha256 of the build's inputs: the spec entry, the digests of its files
(model file, checkpoint, labels), of the ``handlers`` package and of this builder, and the torch
version. It is stored inside the archive (``MAR-INF/build.json``), so a store holds nothing but
``.mar`` files and an archive says where it came from. Paths are relative, so two clones of the
project build the same fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
import zlib
from pathlib import Path
from typing import Any

import torch

from archive.packing import BUILD_INFO, handlers_sources
from archive.spec import ModelSpec
from handlers.integrity import sha256_file

# Bump when the archive layout changes in a way the source digests below would not show.
BUILD_FORMAT = 1


def build_inputs(entry: ModelSpec, base_dir: Path) -> dict[str, Any]:
    """The inputs of ``entry``'s archive, as a JSON-ready mapping (file names -> sha256).

    Raises FileNotFoundError when one of the entry's files is missing.
    """
    files = {"model_file": entry.model_file, "checkpoint": entry.checkpoint}
    if entry.labels is not None:
        files["labels"] = entry.labels
    if entry.text is not None:
        files["vocab"] = entry.text.vocab
    if entry.hooks is not None:
        files["hooks"] = entry.hooks
    for index, extra in enumerate(entry.extra_files):
        files[f"extra_files[{index}]"] = extra
    for index, example in enumerate(entry.examples):
        files[f"examples[{index}]"] = example if isinstance(example, str) else example.file
    builder = Path(__file__).parent
    return {
        "format": BUILD_FORMAT,
        "spec": entry.model_dump(mode="json"),
        "files": {role: sha256_file(base_dir / name) for role, name in files.items()},
        "handlers": {name: sha256_file(path) for name, path in handlers_sources().items()},
        "builder": {path.name: sha256_file(path) for path in sorted(builder.glob("*.py"))},
        "torch": torch.__version__,
    }


def fingerprint(inputs: dict[str, Any]) -> str:
    """The sha256 of ``inputs`` in canonical JSON."""
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def build_info(inputs: dict[str, Any]) -> dict[str, Any]:
    """The content of ``MAR-INF/build.json``."""
    return {"fingerprint": fingerprint(inputs), "inputs": inputs}


def is_current(mar: Path, expected: str) -> bool:
    """True when ``mar`` exists, is an intact zip (every CRC checks) and was built from inputs
    with fingerprint ``expected``."""
    try:
        with zipfile.ZipFile(mar) as archive:
            recorded = json.loads(archive.read(BUILD_INFO)).get("fingerprint")
            return bool(recorded == expected and archive.testzip() is None)
    except (
        OSError,
        EOFError,
        KeyError,
        ValueError,
        AttributeError,
        zipfile.BadZipFile,
        zlib.error,
    ):
        return False
