"""TorchServe's entry point: wires TorchServe's context to the plain functions of ``handlers``.

TorchServe requires exactly one class in this file; all the work is in the helpers it calls.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from handlers.batch import Failure
from handlers.device import configure_threads, select_device
from handlers.integrity import verify_manifest
from handlers.predictor import Predictor, load_predictor
from handlers.settings import HandlerSettings

logger = logging.getLogger(__name__)


class CheckpointHandler:
    """Serves any model built by ``python -m archive build``, as its model-config.yaml says."""

    def __init__(self) -> None:
        self.predictor: Predictor | None = None
        self.initialized = False

    def initialize(self, context: Any) -> None:
        model_dir = Path(context.system_properties["model_dir"])
        config = context.model_yaml_config or {}
        verify_manifest(model_dir)
        settings = HandlerSettings.from_dict(config.get("handler"))
        threads = configure_threads(int(config.get("minWorkers") or 1))
        device = select_device(context.system_properties.get("gpu_id"))
        self.predictor = load_predictor(settings, model_dir, device)
        self.initialized = True
        logger.info("%s ready on %s with %d threads", context.model_name, device, threads)

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[Any]:
        assert self.predictor is not None, "handle() called before initialize()"
        outcomes = self.predictor.predict([request_body(row) for row in data])
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, Failure):
                context.set_response_status(outcome.code, outcome.message, index)
                outcomes[index] = outcome.body()
        return outcomes


def request_body(row: dict[str, Any]) -> Any:
    """The body of one request as TorchServe hands it over (raw body, or a form field)."""
    for key in ("body", "data"):
        if row.get(key) is not None:
            return row[key]
    return next(iter(row.values()), None)
