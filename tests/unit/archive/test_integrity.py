"""An archive carries its own code and digests: tampering is refused, nothing else is needed."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from archive.build import build_models
from handlers.errors import IntegrityError
from handlers.torchserve_entry import CheckpointHandler
from tests.unit.archive.helpers import (
    MockContext,
    tensor_entry,
    tiny_expected,
    tiny_state_dict,
    unpack,
    write_project,
)


@pytest.fixture
def mar(tmp_path: Path) -> Path:
    spec = write_project(tmp_path / "project", [tensor_entry()])
    torch.save(tiny_state_dict(), spec.parent / "weights.pt")
    (result,) = build_models(spec, tmp_path / "store")
    return result.path


def rewrite_member(mar: Path, name: str, flip_at: int) -> None:
    """Flip one byte of ``name`` inside ``mar``, keeping the zip itself valid."""
    with zipfile.ZipFile(mar) as archive:
        members = [(info, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(mar, "w") as archive:
        for info, data in members:
            if info.filename == name:
                flipped = bytearray(data)
                flipped[flip_at] ^= 0x01
                data = bytes(flipped)
            archive.writestr(info, data)


def test_untouched_archive_initialises(mar: Path, tmp_path: Path) -> None:
    handler = CheckpointHandler()
    handler.initialize(MockContext(unpack(mar, tmp_path / "model")))
    assert handler.initialized


@pytest.mark.parametrize("member", ["weights.pt", "model.py", "handlers/batch.py"])
def test_a_flipped_byte_refuses_to_load(mar: Path, tmp_path: Path, member: str) -> None:
    rewrite_member(mar, member, flip_at=-20)
    handler = CheckpointHandler()
    with pytest.raises(IntegrityError, match=f"{member} does not match its sha256"):
        handler.initialize(MockContext(unpack(mar, tmp_path / "model")))
    assert not handler.initialized


def test_the_archive_runs_on_its_own_copy_of_handlers(mar: Path, tmp_path: Path) -> None:
    """What a stock TorchServe does: the model dir first on sys.path, the entry file imported."""
    model_dir = unpack(mar, tmp_path / "model")
    script = f"""
import json, sys
sys.path.insert(0, {str(model_dir)!r})
import torchserve_entry, handlers
sys.path.insert(0, {str(Path(__file__).resolve().parents[3])!r})
from tests.unit.archive.helpers import MockContext
from pathlib import Path
assert Path(handlers.__file__).parent == Path({str(model_dir)!r}) / "handlers", handlers.__file__
classes = [v for v in vars(torchserve_entry).values()
           if isinstance(v, type) and v.__module__ == "torchserve_entry"]
assert len(classes) == 1, classes  # TorchServe needs exactly one class in the handler file
handler = classes[0]()
context = MockContext(Path({str(model_dir)!r}))
handler.initialize(context)
answers = handler.handle([{{"body": [1.0, 2.0, 3.0, 4.0]}}], context)
print(json.dumps([json.loads(a) for a in answers]))
"""
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert completed.returncode == 0, completed.stderr
    (answer,) = json.loads(completed.stdout.strip().splitlines()[-1])
    assert answer == pytest.approx(tiny_expected([1.0, 2.0, 3.0, 4.0]))
