"""The one loading path: settings + files in a folder -> a model ready to answer batches.

The build step (``archive/``) calls ``load_predictor`` on the source files to prove a
checkpoint before packing it; the TorchServe handler calls it on the unpacked archive.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from handlers.batch import Outcome, run_batch
from handlers.checkpoint import read_state_dict
from handlers.errors import SettingsError
from handlers.model_loading import KeyReport, build_model, import_model_class
from handlers.settings import HandlerSettings
from handlers.tasks import Task, make_task

logger = logging.getLogger(__name__)


@dataclass
class Predictor:
    """A loaded model, its task, and where it runs."""

    model: nn.Module
    task: Task
    device: torch.device
    settings: HandlerSettings
    report: KeyReport

    def predict(self, payloads: Sequence[Any]) -> list[Outcome]:
        """One outcome (answer or Failure) per request body."""
        return run_batch(self.model, self.task, payloads, self.device)


def load_predictor(
    settings: HandlerSettings, base_dir: Path, device: torch.device | str = "cpu"
) -> Predictor:
    """Import the class, read the checkpoint onto ``device``, build and load the model.

    File names in ``settings`` are relative to ``base_dir``. Raises the HandlerError
    subclasses of the steps (CheckpointError, ModelBuildError, KeyMismatchError, SettingsError).
    """
    device = torch.device(device)
    model_class = import_model_class(base_dir / settings.model_file, settings.model_class)
    state_dict = read_state_dict(
        base_dir / settings.checkpoint, map_location=device, key=settings.checkpoint_key
    )
    model, report = build_model(
        model_class,
        state_dict,
        kwargs=settings.model_kwargs,
        strict=settings.strict,
        device=device,
    )
    labels = load_labels(base_dir / settings.labels) if settings.labels else None
    logger.info("Loaded %s on %s (%s)", settings.model_class, device, report.format())
    return Predictor(model, make_task(settings, labels), device, settings, report)


def load_labels(path: Path) -> list[str]:
    """Class names by index from a JSON list or an index-to-name object (``{"0": "cat"}``)."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SettingsError(f"labels file {path.name} can't be read: {exc}") from None
    if isinstance(raw, list) and all(isinstance(v, str) for v in raw):
        return raw
    if isinstance(raw, dict):
        try:
            by_index = {int(k): str(v) for k, v in raw.items()}
        except ValueError:
            by_index = {}
        if by_index and sorted(by_index) == list(range(len(by_index))):
            return [by_index[i] for i in range(len(by_index))]
    raise SettingsError(
        f"labels file {path.name} must be a JSON list of names or an object mapping "
        '"0".."N-1" to names'
    )
