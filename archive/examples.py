"""The requests an archive records at build time and replays when it loads (``handlers.golden``).

With ``examples`` in the spec they are those files (the Content-Type from the extension, or
given in a ``{file, content_type}`` table); without, the task's own generated bodies, the
ones the gate sends, each written as the bytes a client would send with its Content-Type.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from archive.errors import GateError, SpecError
from archive.spec import ExampleTable, ModelSpec
from handlers import golden
from handlers.decoding import NPY_MAGIC
from handlers.errors import GoldenAnswerError
from handlers.hooks import HookedTask, request_payload
from handlers.predictor import Predictor

# The generated bodies are random but fixed (the gate's seed), so builds are reproducible.
EXAMPLE_SEED = 0
CONTENT_TYPES = {
    ".json": "application/json",
    ".txt": "text/plain",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".npy": "application/x-npy",
    ".npz": "application/x-npz",
    ".bin": "application/octet-stream",
}


def spec_examples(entry: ModelSpec, base_dir: Path) -> list[golden.Example]:
    """The spec's ``examples``, read from files relative to ``base_dir``.

    Raises SpecError naming the model and the file when one can't be read or its type isn't
    known from its extension.
    """
    examples: list[golden.Example] = []
    for item in entry.examples:
        file, content_type = (
            (item.file, item.content_type)
            if isinstance(item, ExampleTable)
            else (item, CONTENT_TYPES.get(Path(item).suffix.lower()))
        )
        if content_type is None:
            raise SpecError(
                f"model {entry.name!r}: example {file}: no content type for "
                f"{Path(file).suffix or 'a file without extension'}; write it as "
                f'{{ file = "{file}", content_type = "..." }} (known extensions: '
                f"{', '.join(CONTENT_TYPES)})"
            )
        try:
            body = (base_dir / file).read_bytes()
        except OSError as exc:
            raise SpecError(
                f"model {entry.name!r}: example {file} can't be read: {exc.strerror or exc}"
            ) from None
        examples.append(golden.Example(_unique(Path(file).name, examples), content_type, body))
    return examples


def generated_examples(predictor: Predictor) -> list[golden.Example]:
    """The task's generated bodies (what the gate sends without ``examples``), as requests."""
    payloads = predictor.task.example_payloads(np.random.default_rng(EXAMPLE_SEED))
    examples: list[golden.Example] = []
    for index, payload in enumerate(payloads, start=1):
        body, content_type, suffix = as_request(payload)
        examples.append(golden.Example(f"generated-{index}{suffix}", content_type, body))
    return examples


def model_examples(entry: ModelSpec, base_dir: Path, predictor: Predictor) -> list[golden.Example]:
    """The spec's examples, or the generated ones without any.

    Raises GateError when the model has a decode hook and no examples: the task's generated
    bodies are not what such a hook reads.
    """
    if entry.examples:
        return spec_examples(entry, base_dir)
    task = predictor.task
    if isinstance(task, HookedTask) and task.takes_content_type:
        raise GateError(
            f"model {entry.name!r}: its hooks define decode, so the build needs `examples` "
            "(request bodies that decode reads) to check and record it"
        )
    return generated_examples(predictor)


def gate_payloads(predictor: Predictor, examples: list[golden.Example]) -> list[Any]:
    """The examples as the handler's task receives them (what the gate sends)."""
    return [
        request_payload(
            predictor.task, golden.torchserve_payload(e.body, e.content_type), e.content_type
        )
        for e in examples
    ]


def record_examples(
    entry: ModelSpec, predictor: Predictor, examples: list[golden.Example]
) -> bytes:
    """``examples.json``: each example's answer from ``predictor``. GateError when one fails."""
    try:
        return golden.dumps(golden.record(predictor, examples, entry.tolerance))
    except GoldenAnswerError as exc:
        raise GateError(f"model {entry.name!r}: {exc}") from exc


def as_request(payload: Any) -> tuple[bytes, str, str]:
    """A payload as TorchServe hands it over, back to (body, Content-Type, file suffix)."""
    if isinstance(payload, str):
        return payload.encode(), "text/plain", ".txt"
    if not isinstance(payload, bytes | bytearray):
        return json.dumps(payload).encode(), "application/json", ".json"
    body = bytes(payload)
    if body.startswith(b"\x89PNG"):
        return body, "image/png", ".png"
    if body.startswith(b"\xff\xd8"):
        return body, "image/jpeg", ".jpg"
    if body.startswith(NPY_MAGIC):
        return body, "application/x-npy", ".npy"
    if zipfile.is_zipfile(io.BytesIO(body)):
        return body, "application/x-npz", ".npz"
    return body, "application/octet-stream", ".bin"


def _unique(name: str, taken: list[golden.Example]) -> str:
    names = {example.name for example in taken}
    candidate, count = name, 1
    while candidate in names:
        count += 1
        candidate = f"{name}#{count}"
    return candidate
