"""Golden answers: examples recorded when an archive is built, replayed when it loads.

The build sends each example body (the spec's ``examples``, or the gate's generated bodies)
through the handler's decode -> forward -> encode and stores body and answer in the archive's
``examples.json`` (covered by its integrity manifest). Before the handler declares itself
ready it replays every example the same way and refuses to load when an answer differs
beyond the recorded tolerance (absolute, on numbers; labels, strings and the shape of the
answer must match exactly), naming the example and the largest difference: a torch upgrade,
another CPU or a GPU that changes answers stops the load instead of serving them.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from handlers.answer_encoding import encode_answer
from handlers.batch import Failure
from handlers.decoding import loads_json
from handlers.errors import GoldenAnswerError
from handlers.hooks import request_payload
from handlers.predictor import Predictor

logger = logging.getLogger(__name__)

EXAMPLES_NAME = "examples.json"
FORMAT_VERSION = 1
DEFAULT_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Example:
    """One recorded request: its name, Content-Type, body bytes and the answer it got."""

    name: str
    content_type: str | None
    body: bytes
    answer: Any = None


@dataclass(frozen=True)
class Replay:
    """One example replayed: the largest numeric difference, and where the answers part."""

    example: Example
    largest: float
    where: str
    mismatch: str | None  # None when the answer is within tolerance

    @property
    def ok(self) -> bool:
        return self.mismatch is None


def torchserve_payload(body: bytes, content_type: str | None) -> Any:
    """A body as TorchServe hands it to a handler: JSON decoded, text as str, anything else
    (or what fails to decode) as bytes."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    try:
        if kind == "application/json":
            return loads_json(body)
        if kind.startswith("text"):
            return body.decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        pass
    return bytearray(body)


def answer(predictor: Predictor, body: bytes, content_type: str | None) -> Any:
    """The outcome (a JSON-ready answer or a Failure) the archive gives one request alone."""
    payload = request_payload(predictor.task, torchserve_payload(body, content_type), content_type)
    return predictor.predict([payload])[0]


def as_sent(outcome: Any) -> Any:
    """An answer as the client reads it: the JSON the handler sends, parsed back (tuples
    become lists, keys strings). ValueError/TypeError when JSON can't hold it."""
    return json.loads(encode_answer(outcome))


def record(
    predictor: Predictor,
    examples: Sequence[Example],
    tolerance: float = DEFAULT_TOLERANCE,
) -> dict[str, Any]:
    """The content of ``examples.json``: each example with the answer ``predictor`` gives it.

    Raises GoldenAnswerError naming the example when one fails or its answer isn't JSON.
    """
    recorded = []
    for example in examples:
        outcome = answer(predictor, example.body, example.content_type)
        if isinstance(outcome, Failure):
            raise GoldenAnswerError(
                f"example {example.name!r} failed ({outcome.code} {outcome.type}): "
                f"{outcome.message}"
            )
        try:
            sent = as_sent(outcome)
        except (TypeError, ValueError) as exc:
            raise GoldenAnswerError(
                f"example {example.name!r}: the answer is not JSON: {exc}"
            ) from None
        recorded.append(
            {
                "name": example.name,
                "content_type": example.content_type,
                "body_base64": base64.b64encode(example.body).decode("ascii"),
                "answer": sent,
            }
        )
    return {"format": FORMAT_VERSION, "tolerance": tolerance, "examples": recorded}


def dumps(recorded: Mapping[str, Any]) -> bytes:
    """``examples.json``'s bytes. Keys keep their order: a classifier's answer lists its
    labels most likely first, and that order is part of what is replayed."""
    return (json.dumps(recorded, indent=2) + "\n").encode()


def parse(raw: Any) -> tuple[float, list[Example]]:
    """The tolerance and examples of a parsed ``examples.json``; GoldenAnswerError when it
    isn't one."""
    try:
        tolerance = float(raw["tolerance"])
        examples = [
            Example(
                str(item["name"]),
                item.get("content_type"),
                base64.b64decode(item["body_base64"], validate=True),
                item["answer"],
            )
            for item in raw["examples"]
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise GoldenAnswerError(f"{EXAMPLES_NAME} is unreadable: {exc}") from None
    return tolerance, examples


def load(model_dir: Path) -> tuple[float, list[Example]] | None:
    """The recorded examples of the archive unpacked in ``model_dir`` (None without any)."""
    path = Path(model_dir) / EXAMPLES_NAME
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise GoldenAnswerError(f"{EXAMPLES_NAME} is unreadable: {exc}") from None
    return parse(raw)


def replay(predictor: Predictor, tolerance: float, examples: Sequence[Example]) -> list[Replay]:
    """Each example answered again, as it was recorded (alone), and compared."""
    results = []
    for example in examples:
        outcome = answer(predictor, example.body, example.content_type)
        if isinstance(outcome, Failure):
            results.append(
                Replay(example, math.inf, "$", f"it failed now ({outcome.code}): {outcome.message}")
            )
            continue
        try:
            sent = as_sent(outcome)
        except (TypeError, ValueError) as exc:
            results.append(Replay(example, math.inf, "$", f"the answer is not JSON now: {exc}"))
            continue
        results.append(compare(example, example.answer, sent, tolerance))
    return results


def verify_examples(predictor: Predictor, model_dir: Path) -> list[Replay]:
    """Replay the archive's recorded examples; returns the replays (none without
    ``examples.json``).

    Raises GoldenAnswerError naming each example whose answer differs beyond the tolerance,
    with the largest difference and where it is.
    """
    loaded = load(model_dir)
    if loaded is None:
        return []
    tolerance, examples = loaded
    started = time.perf_counter()
    results = replay(predictor, tolerance, examples)
    failed = [result for result in results if not result.ok]
    if failed:
        raise GoldenAnswerError(
            f"the archive no longer answers {len(failed)} of its {len(results)} recorded "
            f"example(s) as it did when it was built (tolerance {tolerance:g}): "
            + "; ".join(f"example {r.example.name!r}: {r.mismatch}" for r in failed)
        )
    logger.info(
        "Replayed %d recorded example(s) in %.1f ms; largest difference %g",
        len(results),
        (time.perf_counter() - started) * 1000,
        max((r.largest for r in results), default=0.0),
    )
    return results


def compare(example: Example, recorded: Any, now: Any, tolerance: float) -> Replay:
    """Recorded and fresh answers side by side: numbers within ``tolerance``, everything else
    (labels, strings, keys, lengths) equal."""
    differences: list[tuple[float, str, Any, Any]] = []
    structural = _walk(recorded, now, "$", differences)
    largest, where, then, later = max(differences, default=(0.0, "$", None, None))
    if structural is not None:
        return Replay(example, math.inf, structural[0], structural[1])
    if largest > tolerance:
        return Replay(
            example,
            largest,
            where,
            f"largest difference {largest:.3g} at {where} (recorded {then!r}, now {later!r})",
        )
    return Replay(example, largest, where, None)


def _walk(
    recorded: Any, now: Any, where: str, differences: list[tuple[float, str, Any, Any]]
) -> tuple[str, str] | None:
    """Collect numeric differences; the first structural difference (where, what), if any."""
    if _is_number(recorded) and _is_number(now):
        gap = abs(float(recorded) - float(now))
        differences.append((gap if math.isfinite(gap) else math.inf, where, recorded, now))
        return None
    if isinstance(recorded, Mapping) and isinstance(now, Mapping):
        if list(recorded) != list(now):
            return where, f"keys {list(recorded)} were recorded at {where}, now {list(now)}"
        for key in recorded:
            found = _walk(recorded[key], now[key], f"{where}[{key!r}]", differences)
            if found is not None:
                return found
        return None
    if isinstance(recorded, list) and isinstance(now, list):
        if len(recorded) != len(now):
            return where, f"{len(recorded)} values were recorded at {where}, now {len(now)}"
        for index, (a, b) in enumerate(zip(recorded, now, strict=True)):
            found = _walk(a, b, f"{where}[{index}]", differences)
            if found is not None:
                return found
        return None
    if recorded != now or type(recorded) is not type(now):
        return where, f"{recorded!r} was recorded at {where}, now {now!r}"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def describe(tolerance: float, examples: Sequence[Example], width: int = 200) -> list[str]:
    """What ``python -m archive inspect`` shows: each example, its body and recorded answer."""
    lines = [
        f"{EXAMPLES_NAME}: {len(examples)} example(s), replayed at load, tolerance {tolerance:g}"
    ]
    for example in examples:
        lines.append(
            f"  {example.name} ({example.content_type or 'no content type'}, "
            f"{len(example.body):,} bytes): {_shorten(_show_body(example), width)}"
        )
        lines.append(f"    answer: {_shorten(json.dumps(example.answer), width)}")
    return lines


def _show_body(example: Example) -> str:
    kind = (example.content_type or "").split(";", 1)[0].strip().lower()
    if kind == "application/json" or kind.startswith("text"):
        try:
            return example.body.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return "(binary)"


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."
