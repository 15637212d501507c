"""``custom``: a model whose every step is a hook (``handlers.hooks``).

The archive's hooks file decodes each body and encodes each answer; this task only collates:
the decoded instances (a tensor, or tensors by keyword) run as one call per distinct set of
shapes and dtypes, so each answer is what the request would get alone. It makes no example
bodies of its own: the spec's ``examples`` are the gate's and the load's requests.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from handlers.errors import RequestError, SettingsError
from handlers.inputs import POSITIONAL, Call, Instance
from handlers.tasks.base import TaskKind, to_plain

if TYPE_CHECKING:
    from handlers.settings import HandlerSettings


class CustomTask:
    """Collation only; decode and encode come from the hooks that wrap it."""

    def decode(self, payload: Any) -> Instance:
        # Reached only without a decode hook, which loading the hooks refuses for this task.
        raise RequestError("task 'custom' decodes with the archive's decode hook, and it has none")

    def collate(self, instances: Sequence[Instance]) -> list[Call]:
        return collate_by_shape(instances)

    def encode(self, output: Any) -> Any:
        return to_plain(output)

    def encode_rows(self, output: Any, count: int) -> list[Any] | None:
        return None

    def example_payloads(self, generator: np.random.Generator) -> list[Any]:
        return []

    def check_answer(self, answer: Any) -> None:
        """Any JSON value: its form is the encode hook's to choose."""


def collate_by_shape(instances: Sequence[Instance]) -> list[Call]:
    """One call per distinct signature (each input's name, shape and dtype), in order of first
    appearance: the instances of a call are stacked along a new batch dimension."""
    groups: dict[tuple[tuple[str, tuple[int, ...], torch.dtype], ...], list[int]] = {}
    for index, instance in enumerate(instances):
        signature = tuple(
            (key, tuple(tensor.shape), tensor.dtype) for key, tensor in sorted(instance.items())
        )
        groups.setdefault(signature, []).append(index)
    calls = []
    for rows in groups.values():
        call = Call(rows)
        for key in instances[rows[0]]:
            batch = torch.stack([instances[row][key] for row in rows])
            if key == POSITIONAL:
                call.args = (batch,)
            else:
                call.kwargs[key] = batch
        calls.append(call)
    return calls


def _build(settings: HandlerSettings, base_dir: Path) -> CustomTask:
    return CustomTask()


def _validate(settings: HandlerSettings) -> None:
    if settings.hooks is None:
        raise SettingsError("task 'custom' needs 'hooks': a file defining decode and encode")


KIND = TaskKind(
    name="custom",
    uses=frozenset(),
    needs=(),
    build=_build,
    validate=_validate,
)
