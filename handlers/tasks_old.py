"""What a request means for each task: decode one body, encode one output, check an answer.

Each task is its own small class with the same three methods, so the batch runner never
branches on the task's name.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from handlers.decoding import decode_array, decode_image
from handlers.settings import HandlerSettings, ImageSpec, InputSpec


class Task(Protocol):
    """The per-request contract of a task."""

    def decode(self, payload: Any) -> torch.Tensor:
        """One request body to one input instance; RequestError when it can't be."""

    def encode(self, output: Any) -> Any:
        """The model's output for one instance to a JSON-ready answer."""

    def encode_rows(self, output: Any, count: int) -> list[Any] | None:
        """The answers for all ``count`` rows of a batched output at once (the same answers
        ``encode`` gives row by row, a few tensor operations per batch instead of per row),
        or None when ``output`` is not a ``[count, ...]`` tensor: then ``encode`` runs per row.
        """

    def example_payloads(self, generator: np.random.Generator) -> list[Any]:
        """Bodies as TorchServe hands them to the handler, one per accepted format."""

    def check_answer(self, answer: Any) -> None:
        """Raise ValueError unless ``answer`` has this task's form (finite values, right size)."""


class TensorTask:
    """A tensor in (JSON nested list or ``.npy``), the model's output out as a nested list."""

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec

    def decode(self, payload: Any) -> torch.Tensor:
        return decode_array(payload, self.spec)

    def encode(self, output: Any) -> Any:
        return to_plain(output)

    def encode_rows(self, output: Any, count: int) -> list[Any] | None:
        if not _is_batch_tensor(output, count):
            return None
        rows: list[Any] = to_plain(output)
        return rows

    def example_payloads(self, generator: np.random.Generator) -> list[Any]:
        array = generator.standard_normal(self.spec.shape).astype("float32")
        if self.spec.dtype in ("int64", "int32", "uint8"):
            array = generator.integers(0, 2, self.spec.shape)
        elif self.spec.dtype == "bool":
            array = generator.integers(0, 2, self.spec.shape).astype(bool)
        npy = io.BytesIO()
        np.save(npy, array.astype("float32" if self.spec.dtype == "bfloat16" else self.spec.dtype))
        # TorchServe JSON-decodes application/json bodies; other bodies arrive as bytes.
        return [array.tolist(), bytearray(npy.getvalue())]

    def check_answer(self, answer: Any) -> None:
        _check_finite(answer)


class ImageClassificationTask:
    """A PNG/JPEG in, the top-k classes out as ``{label: probability}``, most likely first."""

    def __init__(
        self,
        spec: ImageSpec,
        labels: Sequence[str] | None = None,
        scores: str = "logits",
        top_k: int = 5,
    ) -> None:
        self.spec = spec
        self.labels = list(labels) if labels is not None else None
        self.scores = scores
        self.top_k = top_k

    def decode(self, payload: Any) -> torch.Tensor:
        return decode_image(payload, self.spec)

    def encode(self, output: Any) -> dict[str, float]:
        if not isinstance(output, torch.Tensor):
            raise TypeError(
                f"an image classifier must return a tensor, not {type(output).__name__}"
            )
        answer = self.encode_rows(output[None], 1)
        assert answer is not None  # one row of a tensor
        return answer[0]

    def encode_rows(self, output: Any, count: int) -> list[dict[str, float]] | None:
        if not _is_batch_tensor(output, count):
            return None
        scores = output.detach().float().reshape(count, -1)
        # softmax also turns log-probabilities (log_softmax outputs) into probabilities.
        probs = scores if self.scores == "probabilities" else torch.softmax(scores, dim=1)
        values, indices = torch.topk(probs, min(self.top_k, probs.shape[1]), dim=1)
        return [
            {self._label(i): p for p, i in zip(row_values, row_indices, strict=True)}
            for row_values, row_indices in zip(values.tolist(), indices.tolist(), strict=True)
        ]

    def example_payloads(self, generator: np.random.Generator) -> list[Any]:
        from PIL import Image

        height, width = self.spec.size
        shape = (height, width) if self.spec.mode == "L" else (height, width, 3)
        pixels = generator.integers(0, 256, shape, dtype=np.uint8)
        bodies = []
        for fmt in ("PNG", "JPEG"):
            buffer = io.BytesIO()
            Image.fromarray(pixels, mode=self.spec.mode).save(buffer, format=fmt)
            bodies.append(bytearray(buffer.getvalue()))
        return bodies

    def check_answer(self, answer: Any) -> None:
        if not isinstance(answer, Mapping) or not answer:
            raise ValueError(f"expected a non-empty {{label: probability}} mapping, got {answer!r}")
        expected = self.top_k if self.labels is None else min(self.top_k, len(self.labels))
        if self.labels is not None and len(answer) != expected:
            raise ValueError(f"expected {expected} classes, got {len(answer)}")
        _check_finite(list(answer.values()))
        if self.labels is not None and not set(answer) <= set(self.labels):
            raise ValueError(
                f"labels {sorted(set(answer) - set(self.labels))} are not in the labels file"
            )

    def _label(self, index: int) -> str:
        if self.labels is not None and index < len(self.labels):
            return self.labels[index]
        return str(index)


def make_task(settings: HandlerSettings, labels: Sequence[str] | None = None) -> Task:
    """The task object for ``settings.task``."""
    if settings.task == "image-classification":
        assert settings.image is not None
        return ImageClassificationTask(settings.image, labels, settings.scores, settings.top_k)
    assert settings.input is not None
    return TensorTask(settings.input)


def _is_batch_tensor(output: Any, count: int) -> bool:
    return isinstance(output, torch.Tensor) and output.dim() > 0 and output.shape[0] == count


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


def _check_finite(value: Any) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"the answer holds a non-finite value ({value})")
        return
    if isinstance(value, Mapping):
        for item in value.values():
            _check_finite(item)
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check_finite(item)
        return
    raise ValueError(f"the answer holds a {type(value).__name__}, not numbers")
