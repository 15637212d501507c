"""Run one batch of requests through the model: one forward pass, failures kept per request.

A body that can't be decoded fails alone (400); the others still get their answers. If the
batched forward pass raises, each instance is retried alone so one poisonous input can't
take the batch down with it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from handlers.errors import RequestError
from handlers.tasks import Task

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Failure:
    """One request's error, in TorchServe's JSON error shape."""

    code: int
    type: str
    message: str

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "type": self.type, "message": self.message}


Outcome = Any  # an answer (JSON-ready) or a Failure


def run_batch(
    model: nn.Module, task: Task, payloads: Sequence[Any], device: torch.device
) -> list[Outcome]:
    """One outcome per payload, in order. Raises MemoryError when the device runs out of memory
    (TorchServe answers that with 507)."""
    outcomes: list[Outcome] = [None] * len(payloads)
    inputs: list[torch.Tensor] = []
    positions: list[int] = []
    for index, payload in enumerate(payloads):
        try:
            inputs.append(task.decode(payload))
            positions.append(index)
        except RequestError as exc:
            outcomes[index] = Failure(400, "InvalidInput", str(exc))
    if not inputs:
        return outcomes
    batch = torch.stack(inputs).to(device, non_blocking=True)
    try:
        output = forward(model, batch)
        answers = _encode_rows(task, output, len(inputs))
        if answers is not None:
            for index, answer in zip(positions, answers, strict=True):
                outcomes[index] = answer
            return outcomes
        rows = split_rows(output, len(inputs))
    except MemoryError:
        raise
    except Exception as exc:
        if len(inputs) == 1:
            outcomes[positions[0]] = _model_failure(exc)
            return outcomes
        logger.warning(
            "Batched forward failed (%s); retrying its %d inputs one by one", exc, len(inputs)
        )
        rows = [_forward_one(model, batch[i : i + 1]) for i in range(len(inputs))]
    for index, row in zip(positions, rows, strict=True):
        if isinstance(row, Failure):
            outcomes[index] = row
            continue
        try:
            outcomes[index] = task.encode(row)
        except Exception as exc:
            outcomes[index] = _model_failure(exc)
    return outcomes


def _encode_rows(task: Task, output: Any, count: int) -> list[Outcome] | None:
    """The whole batch's answers from `task.encode_rows`, or None: then each row is encoded
    alone, so whatever fails there fails for its own request, as it would without this."""
    try:
        return task.encode_rows(output, count)
    except Exception:
        return None


def forward(model: nn.Module, batch: torch.Tensor) -> Any:
    """The model's output for ``batch``, without autograd; device OOM becomes MemoryError."""
    try:
        with torch.inference_mode():
            return model(batch)
    except torch.OutOfMemoryError as exc:
        raise MemoryError(str(exc)) from exc


def split_rows(output: Any, count: int) -> list[Any]:
    """Split a batched output (a tensor, or tensors nested in tuples/lists/dicts) into rows.

    Raises ValueError when the output's batch dimension isn't ``count``.
    """
    if isinstance(output, torch.Tensor):
        if output.dim() == 0 or output.shape[0] != count:
            shape = list(output.shape)
            raise ValueError(f"the model returned shape {shape} for a batch of {count}")
        return list(output.unbind(0))
    if isinstance(output, Mapping):
        columns = {k: split_rows(v, count) for k, v in output.items()}
        return [{k: col[i] for k, col in columns.items()} for i in range(count)]
    if isinstance(output, list | tuple):
        parts = [split_rows(v, count) for v in output]
        return [[part[i] for part in parts] for i in range(count)]
    raise ValueError(f"the model returned a {type(output).__name__}, not tensors")


def _forward_one(model: nn.Module, single: torch.Tensor) -> Any:
    try:
        return split_rows(forward(model, single), 1)[0]
    except MemoryError:
        raise
    except Exception as exc:
        return _model_failure(exc)


def _model_failure(exc: Exception) -> Failure:
    logger.warning("Model failed on a request: %s: %s", type(exc).__name__, exc)
    return Failure(
        500, "ModelError", f"the model failed on this input: {type(exc).__name__}: {exc}"
    )
