"""Build archives from a spec: prepare -> fingerprint -> gate -> stage -> write atomically.

Nothing reaches the store unless the gate passed, and then only a complete ``.mar`` moved into
place in one step. An archive whose inputs have not changed is skipped.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from archive.errors import PrepareError
from archive.examples import model_examples, record_examples
from archive.fingerprint import build_info, build_inputs, fingerprint, is_current
from archive.gate import prove_model
from archive.packing import stage_archive, write_mar
from archive.spec import DEFAULT_SPEC, ModelSpec, load_spec

logger = logging.getLogger(__name__)

DEFAULT_STORE = Path("model_store")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class BuildResult:
    """One model's outcome: where its archive is, and whether it was built or already current."""

    name: str
    path: Path
    status: Literal["built", "skipped"]
    size: int
    seconds: float


def build_models(
    spec_path: Path = DEFAULT_SPEC,
    store: Path = DEFAULT_STORE,
    names: Sequence[str] = (),
    *,
    force: bool = False,
    progress: Progress | None = None,
) -> list[BuildResult]:
    """Build the models ``names`` (all when empty) of the spec at ``spec_path`` into ``store``.

    Stops at the first failure, raising its ArchiveError (SpecError, PrepareError, GateError);
    archives built before it stay, and the failing model's archive is left as it was.
    """
    spec = load_spec(spec_path)
    return [
        build_model(entry, spec.base_dir, store, force=force, progress=progress)
        for entry in spec.select(names)
    ]


def build_model(
    entry: ModelSpec,
    base_dir: Path,
    store: Path,
    *,
    force: bool = False,
    progress: Progress | None = None,
) -> BuildResult:
    """Build one archive, ``store/<name>.mar``; files in ``entry`` are relative to ``base_dir``.

    Skipped (unless ``force``) when the archive there is intact and was built from the same
    inputs. Raises PrepareError or GateError; the store is then unchanged.
    """
    say = progress or logger.info
    destination = Path(store) / f"{entry.name}.mar"
    prepare_checkpoint(entry, base_dir, say)
    started = time.perf_counter()  # the build's own time, not the training's
    try:
        inputs = build_inputs(entry, base_dir)
    except FileNotFoundError:
        inputs = None  # the gate below names the missing file in the handler's words
    if inputs is not None and not force and is_current(destination, fingerprint(inputs)):
        size = destination.stat().st_size
        say(f"{entry.name}: skipped, up to date ({destination}, {_size(size)})")
        return BuildResult(entry.name, destination, "skipped", size, time.perf_counter() - started)
    say(f"{entry.name}: building")
    predictor = prove_model(entry, base_dir)
    report = predictor.report
    initialised = [*report.missing, *(key for key, _, _ in report.mismatched)]
    if initialised:
        say(
            f"{entry.name}: initialised, not loaded (strict = false, init_seed = "
            f"{entry.init_seed}; packed into the archive): {', '.join(initialised)}"
        )
    # The answers the archive must still give when it loads (handlers.golden).
    recorded = record_examples(entry, predictor, model_examples(entry, base_dir, predictor))
    if inputs is None:
        inputs = build_inputs(entry, base_dir)
    with tempfile.TemporaryDirectory(prefix=f"archive-{entry.name}-") as staging:
        files = stage_archive(
            entry, predictor, base_dir, Path(staging), build_info(inputs), recorded
        )
        size = write_mar(files, destination)
    seconds = time.perf_counter() - started
    say(f"{entry.name}: built {destination} ({_size(size)}) in {seconds:.2f} s")
    return BuildResult(entry.name, destination, "built", size, seconds)


def prepare_checkpoint(entry: ModelSpec, base_dir: Path, say: Progress) -> None:
    """Run the entry's ``prepare`` script when its checkpoint is missing.

    The script runs with the interpreter running the build, in the script's own folder, and
    must create the checkpoint. Raises PrepareError when it fails or doesn't.
    """
    checkpoint = base_dir / entry.checkpoint
    if entry.prepare is None or checkpoint.exists():
        return
    script = (base_dir / entry.prepare).resolve()
    if not script.is_file():
        raise PrepareError(f"model {entry.name!r}: prepare script not found: {entry.prepare}")
    say(f"{entry.name}: {entry.checkpoint} is missing; running {entry.prepare}")
    completed = subprocess.run([sys.executable, str(script)], cwd=script.parent, check=False)
    if completed.returncode != 0:
        raise PrepareError(
            f"model {entry.name!r}: {entry.prepare} failed with exit status {completed.returncode}"
        )
    if not checkpoint.exists():
        raise PrepareError(
            f"model {entry.name!r}: {entry.prepare} ran but did not create {entry.checkpoint}"
        )


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
