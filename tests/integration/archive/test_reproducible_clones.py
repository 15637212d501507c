"""Two checkouts of the project build byte-identical archives (README, "The archive").

Each copy of the sources sits at its own path (and depth), and `python -m archive build`
runs in each, from its own directory, with its own PYTHONHASHSEED: what would break it is a
path, a set or dict order, or a time stamp finding its way into the bytes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from archive.spec import DEFAULT_SPEC

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
MODELS = ["digits", "digits-tensor"]
CHECKPOINT = Path("examples") / "digits" / "digits.pt"


def checkout(target: Path, checkpoint: Path) -> Path:
    """The sources the build reads, copied to `target`, with the same trained checkpoint."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "digits.pt")
    for part in ("archive", "handlers", "examples"):
        shutil.copytree(REPO / part, target / part, ignore=ignore)
    shutil.copy(checkpoint, target / CHECKPOINT)
    return target


def build(clone: Path, hash_seed: str) -> dict[str, bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("SOURCE_DATE_EPOCH", "PYTHONPATH")}
    env["PYTHONHASHSEED"] = hash_seed
    store = clone / "model_store"
    run = subprocess.run(
        [sys.executable, "-m", "archive", "build", "--store", str(store), *MODELS],
        cwd=clone,  # `python -m` imports the clone's own archive/ and handlers/
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return {name: (store / f"{name}.mar").read_bytes() for name in MODELS}


def test_two_clones_build_the_same_bytes(tmp_path: Path) -> None:
    checkpoint = DEFAULT_SPEC.parent.parent / CHECKPOINT
    if not checkpoint.exists():  # a fresh clone: train it once, as `make archive` would
        from archive.build import build_models

        build_models(DEFAULT_SPEC, tmp_path / "warm-up", ["digits-tensor"])
    first = checkout(tmp_path / "a", checkpoint)
    second = checkout(tmp_path / "somewhere" / "much" / "deeper" / "b-clone", checkpoint)

    one, other = build(first, "0"), build(second, "4242")

    for name in MODELS:
        assert one[name] == other[name], f"{name}.mar differs between the two clones"
