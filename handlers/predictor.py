"""The one loading path: settings + files in a folder -> a model ready to answer batches.

The build step (``archive/``) calls ``load_predictor`` on the source files to prove a
checkpoint before packing it; the TorchServe handler calls it on the unpacked archive.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from handlers.batch import Outcome, run_batch
from handlers.checkpoint import read_state_dict
from handlers.hooks import attach_hooks
from handlers.memory_format import lay_out_model
from handlers.model_loading import KeyReport, build_model, import_model_class, resolve_method
from handlers.settings import HandlerSettings
from handlers.tasks import Task, make_task
from handlers.tasks.base import load_labels

__all__ = ["Predictor", "load_labels", "load_predictor"]

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
        return run_batch(
            self.model,
            self.task,
            payloads,
            self.device,
            self.settings.method,
            self.settings.method_kwargs,
            self.settings.memory_format,
        )


def load_predictor(
    settings: HandlerSettings, base_dir: Path, device: torch.device | str = "cpu"
) -> Predictor:
    """Import the class, read the checkpoint onto ``device``, build and load the model.

    File names in ``settings`` are relative to ``base_dir``. Raises the HandlerError
    subclasses of the steps (CheckpointError, ModelBuildError, KeyMismatchError, SettingsError;
    ModelBuildError too when the model has no ``settings.method``, or its hooks file can't be
    loaded or its setup hook fails).
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
        init_seed=settings.init_seed,
    )
    resolve_method(model, settings.method)
    # Before the hooks: a setup hook sees the model as it will run.
    lay_out_model(model, settings.memory_format)
    # The user's hooks (handlers.hooks), if any, in place of the task's own steps.
    task = attach_hooks(make_task(settings, base_dir), model, settings, base_dir, device)
    logger.info(
        "Loaded %s on %s, %s (%s)",
        settings.model_class,
        device,
        settings.memory_format,
        report.format(),
    )
    return Predictor(model, task, device, settings, report)
