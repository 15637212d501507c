"""Run one batch of requests through the model: decode -> collate -> call -> encode, failures
kept per request.

A body that can't be decoded fails alone (400); the others still get their answers. The task
collates the instances into calls (one per distinct shape, or one padded call); if a call
raises, each of its instances is retried alone so one poisonous input can't take the batch
down with it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from handlers.errors import RequestError
from handlers.inputs import Call, Instance
from handlers.memory_format import DEFAULT_MEMORY_FORMAT, lay_out_input
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
    model: nn.Module,
    task: Task,
    payloads: Sequence[Any],
    device: torch.device,
    method: str = "forward",
    method_kwargs: Mapping[str, Any] | None = None,
    memory_format: str = DEFAULT_MEMORY_FORMAT,
) -> list[Outcome]:
    """One outcome per payload, in order. The decoded instances run as the task collates
    them (one call per distinct shape, or padded), through ``model.<method>`` with
    ``method_kwargs``, their 4-D inputs in ``memory_format`` (``handlers.memory_format``).
    Raises MemoryError when the device runs out of memory (TorchServe answers that with 507)."""
    outcomes: list[Outcome] = [None] * len(payloads)
    instances: list[Instance] = []
    positions: list[int] = []
    for index, payload in enumerate(payloads):
        try:
            instances.append(task.decode(payload))
            positions.append(index)
        except RequestError as exc:
            outcomes[index] = Failure(exc.status, exc.kind, str(exc))
    if not instances:
        return outcomes
    invoke = ModelCall(model, method, method_kwargs or {}, memory_format)
    for call in task.collate(instances):
        answers = _run_call(invoke, task, instances, call, device)
        for row, answer in zip(call.rows, answers, strict=True):
            outcomes[positions[row]] = answer
    return outcomes


@dataclass(frozen=True)
class ModelCall:
    """The model's method the handler calls on a batch, with its constant keyword arguments
    and the memory layout its 4-D inputs are given in."""

    model: nn.Module
    method: str = "forward"
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    memory_format: str = DEFAULT_MEMORY_FORMAT

    def __call__(self, call: Call) -> Any:
        """The output for ``call``, without autograd; device OOM becomes MemoryError."""
        target = self.model if self.method == "forward" else getattr(self.model, self.method)
        layout = self.memory_format
        args = [lay_out_input(t, layout) for t in call.args]
        kwargs = {k: lay_out_input(t, layout) for k, t in call.kwargs.items()}
        try:
            with torch.inference_mode():
                return target(*args, **kwargs, **self.kwargs)
        except torch.OutOfMemoryError as exc:
            raise MemoryError(str(exc)) from exc


def _run_call(
    invoke: ModelCall, task: Task, instances: Sequence[Instance], call: Call, device: torch.device
) -> list[Outcome]:
    """The answers to one call's rows: at once, or, if the call fails, each row alone so one
    poisonous input fails alone."""
    count = len(call.rows)
    try:
        output = invoke(call.to(device))
        answers = _encode_rows(task, output, count)
        if answers is not None:
            return answers
        rows = split_rows(output, count)
    except MemoryError:
        raise
    except Exception as exc:
        if count == 1:
            return [_model_failure(exc)]
        logger.warning("Batched call failed (%s); retrying its %d inputs one by one", exc, count)
        rows = [
            _forward_one(invoke, task.collate([instances[row]])[0].to(device)) for row in call.rows
        ]
    outcomes: list[Outcome] = []
    for row in rows:
        if isinstance(row, Failure):
            outcomes.append(row)
            continue
        try:
            outcomes.append(task.encode(row))
        except Exception as exc:
            outcomes.append(_model_failure(exc))
    return outcomes


def _encode_rows(task: Task, output: Any, count: int) -> list[Outcome] | None:
    """The whole batch's answers from `task.encode_rows`, or None: then each row is encoded
    alone, so whatever fails there fails for its own request, as it would without this."""
    try:
        return task.encode_rows(output, count)
    except Exception:
        return None


def forward(
    model: nn.Module, batch: torch.Tensor | Call, memory_format: str = DEFAULT_MEMORY_FORMAT
) -> Any:
    """The model's output for ``batch`` (one positional tensor, or a collated call), its 4-D
    inputs in ``memory_format``, without autograd; device OOM becomes MemoryError."""
    call = Call([], (batch,)) if isinstance(batch, torch.Tensor) else batch
    return ModelCall(model, memory_format=memory_format)(call)


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


def _forward_one(invoke: ModelCall, single: Call) -> Any:
    try:
        return split_rows(invoke(single), 1)[0]
    except MemoryError:
        raise
    except Exception as exc:
        return _model_failure(exc)


def _model_failure(exc: Exception) -> Failure:
    logger.warning("Model failed on a request: %s: %s", type(exc).__name__, exc)
    return Failure(
        500, "ModelError", f"the model failed on this input: {type(exc).__name__}: {exc}"
    )
