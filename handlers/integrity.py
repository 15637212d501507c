"""The sha256 manifest an archive carries, written at build time and verified at load time.

A tampered or half-copied archive refuses to load with a message naming the file, instead
of serving weights nobody built.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from handlers.errors import IntegrityError

logger = logging.getLogger(__name__)

MANIFEST_NAME = "integrity.json"
FORMAT_VERSION = 1


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_manifest(root: Path, files: Iterable[str]) -> dict[str, Any]:
    """The manifest for ``files`` (paths relative to ``root``, '/'-separated)."""
    return {
        "format": FORMAT_VERSION,
        "torch_version": torch.__version__,
        "files": {name: sha256_file(root / name) for name in sorted(set(files))},
    }


def write_manifest(root: Path, files: Iterable[str]) -> Path:
    """Write ``integrity.json`` in ``root`` covering ``files``; returns its path."""
    manifest = build_manifest(root, files)
    path = root / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path


def verify_manifest(root: Path) -> Mapping[str, Any]:
    """Check every file listed in ``root/integrity.json``; returns the manifest.

    Raises IntegrityError when the manifest is missing or unreadable, or a listed file is
    missing or differs.
    """
    path = root / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
    except FileNotFoundError:
        raise IntegrityError(
            f"the archive has no {MANIFEST_NAME}; build it with `python -m archive build`"
        ) from None
    except (ValueError, KeyError, TypeError):
        raise IntegrityError(f"the archive's {MANIFEST_NAME} is unreadable") from None
    for name, expected in files.items():
        target = (root / name).resolve()
        if root.resolve() not in target.parents:
            raise IntegrityError(f"{MANIFEST_NAME} lists a path outside the archive: {name}")
        if not target.is_file():
            raise IntegrityError(f"the archive is incomplete: {name} is missing")
        if sha256_file(target) != expected:
            raise IntegrityError(
                f"the archive was modified after it was built: {name} does not match its "
                "sha256 in the manifest; rebuild it with `python -m archive build`"
            )
    built_with = manifest.get("torch_version")
    if built_with and built_with.split("+")[0] != torch.__version__.split("+")[0]:
        logger.warning(
            "Archive built with torch %s, running torch %s", built_with, torch.__version__
        )
    checked: Mapping[str, Any] = manifest
    return checked
