"""What every task has: the per-request contract, and the pieces tasks share.

A task turns one request body into one instance (``decode``), a batch of instances into model
calls (``collate``), and the model's output into answers (``encode_rows``, ``encode``). It also
makes example bodies for the build's gate and checks an answer's form. ``TaskKind`` is what the
registry (``handlers.tasks``) knows of a task: its name, the settings it reads, and how to
build it, so adding a task is adding one module.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from handlers.errors import SettingsError
from handlers.inputs import Call, Instance

if TYPE_CHECKING:
    from handlers.settings import HandlerSettings

# The settings that belong to one task or another; a task refuses those it does not read.
TASK_KEYS = frozenset({"input", "inputs", "image", "text", "labels", "scores", "top_k"})
SCORES = ("logits", "probabilities")


class Task(Protocol):
    """The per-request contract of a task."""

    def decode(self, payload: Any) -> Instance:
        """One request body to one instance; RequestError when it can't be."""

    def collate(self, instances: Sequence[Instance]) -> list[Call]:
        """The model calls that answer ``instances`` (each call lists the rows it answers)."""

    def encode(self, output: Any) -> Any:
        """The model's output for one instance to a JSON-ready answer."""

    def encode_rows(self, output: Any, count: int) -> list[Any] | None:
        """The answers for all ``count`` rows of a batched output at once (the same answers
        ``encode`` gives row by row, a few tensor operations per batch instead of per row),
        or None when the output is not batch-first tensors: then ``encode`` runs per row.
        """

    def example_payloads(self, generator: np.random.Generator) -> list[Any]:
        """Bodies as TorchServe hands them to the handler: every accepted format, and for
        variable shapes, two sizes."""

    def check_answer(self, answer: Any) -> None:
        """Raise ValueError unless ``answer`` has this task's form (finite values, right size)."""


@dataclass(frozen=True)
class TaskKind:
    """A task as the registry sees it."""

    name: str
    # The settings of TASK_KEYS this task reads; the others are refused for it.
    uses: frozenset[str]
    # Settings it can't do without: each entry is a tuple of alternatives.
    needs: tuple[tuple[str, ...], ...]
    build: Callable[[HandlerSettings, Path], Task]
    # Checks across its settings (SettingsError); none by default.
    validate: Callable[[HandlerSettings], None] = lambda settings: None
    # The dtype of an 'input' that gives none.
    default_dtype: str = "float32"


def select_output(output: Any, key: str | int | None) -> Any:
    """The part of a structured output that ``key`` (the ``output`` setting) names.

    Raises ValueError saying what the output holds when ``key`` isn't in it.
    """
    if key is None:
        return output
    if isinstance(key, str) and isinstance(output, Mapping):
        if key in output:
            return output[key]
        raise ValueError(
            f"the model's output has no key {key!r} (output = {key!r}); "
            f"its keys: {', '.join(map(str, output))}"
        )
    if isinstance(key, int) and isinstance(output, list | tuple):
        if -len(output) <= key < len(output):
            return output[key]
        raise ValueError(f"output = {key} is past the {len(output)} values the model returns")
    raise ValueError(
        f"output = {key!r} does not fit the model's output, a {describe_output(output)}"
    )


def describe_output(output: Any) -> str:
    """``dict with keys logits, embedding``, ``tuple of 2``, ``tensor`` ..."""
    if isinstance(output, torch.Tensor):
        return "tensor"
    if isinstance(output, Mapping):
        return f"dict with keys {', '.join(map(str, output))}"
    if isinstance(output, list | tuple):
        return f"{type(output).__name__} of {len(output)}"
    return type(output).__name__


def is_batch_first(output: Any, count: int) -> bool:
    """True when every tensor in ``output`` (a tensor, or tensors nested in tuples, lists and
    dicts) has ``count`` rows."""
    if isinstance(output, torch.Tensor):
        return output.dim() > 0 and output.shape[0] == count
    if isinstance(output, Mapping):
        return bool(output) and all(is_batch_first(v, count) for v in output.values())
    if isinstance(output, list | tuple):
        return bool(output) and all(is_batch_first(v, count) for v in output)
    return False


def to_plain(output: Any) -> Any:
    """Tensors (possibly nested in tuples, lists, dicts) to JSON-ready Python values."""
    if isinstance(output, torch.Tensor):
        tensor = output.detach().cpu()
        if tensor.dtype in (torch.bfloat16, torch.float16):
            tensor = tensor.float()
        return tensor.tolist()
    if isinstance(output, Mapping):
        return {str(k): to_plain(v) for k, v in output.items()}
    if isinstance(output, list | tuple):
        return [to_plain(v) for v in output]
    return output


def plain_rows(output: Any, count: int) -> list[Any]:
    """A batch-first output as ``count`` JSON-ready rows of the same structure: one
    ``tolist()`` per tensor for the whole batch, then the rows picked out."""
    plain = to_plain(output)
    return [_row(plain, output, index) for index in range(count)]


def _row(plain: Any, output: Any, index: int) -> Any:
    if isinstance(output, torch.Tensor):
        return plain[index]
    if isinstance(output, Mapping):
        return {str(k): _row(plain[str(k)], v, index) for k, v in output.items()}
    return [_row(p, v, index) for p, v in zip(plain, output, strict=True)]


def check_finite(value: Any) -> None:
    """ValueError unless ``value`` holds only finite numbers (in lists and mappings)."""
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"the answer holds a non-finite value ({value})")
        return
    if isinstance(value, Mapping):
        for item in value.values():
            check_finite(item)
        return
    if isinstance(value, list | tuple):
        for item in value:
            check_finite(item)
        return
    raise ValueError(f"the answer holds a {type(value).__name__}, not numbers")


@dataclass(frozen=True)
class Ranking:
    """How a classifier answers: the top-k classes as ``{label: probability}``, most likely
    first, from the tensor ``output`` picks (the whole output when it is one tensor)."""

    labels: Sequence[str] | None = None
    scores: str = "logits"
    top_k: int = 5
    output: str | int | None = None
    task: str = "classifier"

    def encode(self, output: Any) -> dict[str, float]:
        answer = self.encode_rows(self.scores_of(output)[None], 1)
        assert answer is not None  # one row of a tensor
        return answer[0]

    def encode_rows(self, output: Any, count: int) -> list[dict[str, float]] | None:
        try:
            scores = self.scores_of(output)
        except TypeError:
            return None  # encode() says why, for each request
        if not is_batch_first(scores, count):
            return None
        scores = scores.detach().float().reshape(count, -1)
        # softmax also turns log-probabilities (log_softmax outputs) into probabilities.
        probs = scores if self.scores == "probabilities" else torch.softmax(scores, dim=1)
        values, indices = torch.topk(probs, min(self.top_k, probs.shape[1]), dim=1)
        return [
            {self._label(i): p for p, i in zip(row_values, row_indices, strict=True)}
            for row_values, row_indices in zip(values.tolist(), indices.tolist(), strict=True)
        ]

    def scores_of(self, output: Any) -> torch.Tensor:
        """The tensor to rank; TypeError (naming ``output``) when there is no such tensor."""
        if self.output is None and not isinstance(output, torch.Tensor):
            raise TypeError(
                f"{_article(self.task)} must return a tensor, or set `output` to the key or "
                f"index of the one to rank; this model returned a {describe_output(output)}"
            )
        try:
            scores = select_output(output, self.output)
        except ValueError as exc:
            raise TypeError(str(exc)) from None
        if not isinstance(scores, torch.Tensor):
            raise TypeError(
                f"output = {self.output!r} is a {describe_output(scores)}, not a tensor"
            )
        return scores

    def check_answer(self, answer: Any) -> None:
        if not isinstance(answer, Mapping) or not answer:
            raise ValueError(f"expected a non-empty {{label: probability}} mapping, got {answer!r}")
        expected = self.top_k if self.labels is None else min(self.top_k, len(self.labels))
        if self.labels is not None and len(answer) != expected:
            raise ValueError(f"expected {expected} classes, got {len(answer)}")
        check_finite(list(answer.values()))
        if self.labels is not None and not set(answer) <= set(self.labels):
            raise ValueError(
                f"labels {sorted(set(answer) - set(self.labels))} are not in the labels file"
            )

    def _label(self, index: int) -> str:
        if self.labels is not None and index < len(self.labels):
            return self.labels[index]
        return str(index)


def ranking_for(settings: HandlerSettings, base_dir: Path) -> Ranking:
    """The ``Ranking`` a classifier task's settings describe (labels read from ``base_dir``)."""
    labels = load_labels(base_dir / settings.labels) if settings.labels else None
    return Ranking(labels, settings.scores, settings.top_k, settings.output, settings.task)


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


def _article(task: str) -> str:
    name = {"image-classification": "image classifier", "text-classification": "text classifier"}
    return f"an {name[task]}" if task in name else f"a {task}"
