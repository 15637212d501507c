"""Change a built archive the way an attacker or a broken copy would, then re-make its
integrity manifest so that only the change under test (not the manifest) stops it."""

from __future__ import annotations

import json
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from handlers.integrity import MANIFEST_NAME, write_manifest


def rewrite_archive(mar: Path, change: Callable[[Path], None]) -> None:
    """Unpack ``mar``, let ``change`` edit the files in place, re-make ``integrity.json`` over
    the same files, and zip it back to ``mar``."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        with zipfile.ZipFile(mar) as archive:
            names = archive.namelist()
            archive.extractall(root)
        change(root)
        listed = json.loads((root / MANIFEST_NAME).read_text())["files"]
        write_manifest(root, list(listed))
        with zipfile.ZipFile(mar, "w", zipfile.ZIP_DEFLATED) as archive:
            for name in names:
                archive.write(root / name, name)


def edit_recorded_answers(mar: Path, change: Callable[[dict[str, object]], None]) -> None:
    """Apply ``change`` to each recorded example of ``mar``'s examples.json (in place)."""

    def edit(root: Path) -> None:
        path = root / "examples.json"
        recorded = json.loads(path.read_text())
        for example in recorded["examples"]:
            change(example)
        path.write_text(json.dumps(recorded, indent=2) + "\n")

    rewrite_archive(mar, edit)
