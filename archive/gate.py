"""The gate: prove that a spec entry loads and answers before anything is packed.

It runs the handler's own code, not a copy: ``handlers.predictor.load_predictor`` loads the
checkpoint into the class on CPU (strict as the spec says), then ``Predictor.predict``
(decode -> forward -> encode) answers the task's example bodies, alone and in a full batch.

``predict`` falls back to one forward pass per request when a batched pass fails, so that one
bad request can't sink its batch; a model that can never take a batch would pass it while
serving one request at a time. So the gate also runs the batch through the handler's
``ModelCall`` (the model's ``method``) and ``split_rows`` directly and requires one row per
request. The task's example bodies cover every form it takes: each body format, two sizes of
a variable shape, named inputs, text and token ids.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from archive.errors import GateError
from archive.examples import gate_payloads, model_examples
from archive.spec import ModelSpec
from handlers.batch import Failure, ModelCall, split_rows
from handlers.errors import HandlerError
from handlers.predictor import Predictor, load_predictor

logger = logging.getLogger(__name__)

# The most predictions the gateway sends a model at once (GATEWAY_BATCH_MAX_ITEMS's default,
# service/settings.py; archive/ doesn't import the gateway).
GATEWAY_BATCH = 16


def prove_model(entry: ModelSpec, base_dir: Path) -> Predictor:
    """Load ``entry`` from files relative to ``base_dir`` and check it answers; returns it loaded.

    Raises GateError naming the model and the cause: the checkpoint or class can't be loaded
    (with the key report for a key or shape mismatch), or a request got no answer of the task's
    form at batch size 1, or in a batch of the serving batch size or the gateway's.
    """
    try:
        predictor = load_predictor(entry.handler_settings(), base_dir, "cpu")
    except HandlerError as exc:
        raise GateError(f"model {entry.name!r} does not load: {exc}") from exc
    except Exception as exc:  # the user's class or checkpoint, anything can happen in there
        raise GateError(f"model {entry.name!r} does not load: {type(exc).__name__}: {exc}") from exc
    if not predictor.report.clean:
        logger.warning("%s: loaded with strict = false: %s", entry.name, predictor.report.format())
    # The spec's examples, or the task's generated bodies (random but fixed, so a build is
    # reproducible and a failure repeatable): what the archive records and replays at load.
    examples = gate_payloads(predictor, model_examples(entry, base_dir, predictor))
    for example in examples:
        check_batch(entry.name, predictor, [example])
    batch_size = entry.serving.batch_size
    if batch_size > 1:
        batch = [examples[i % len(examples)] for i in range(batch_size)]
        check_batched_forward(entry.name, predictor, batch)
    # The gateway batches too, whatever TorchServe's batch size: its batches must be answered
    # right (in one forward pass, or one by one where the model can't batch).
    size = max(batch_size, GATEWAY_BATCH)
    check_batch(entry.name, predictor, [examples[i % len(examples)] for i in range(size)])
    return predictor


def check_batched_forward(name: str, predictor: Predictor, payloads: Sequence[Any]) -> None:
    """GateError unless each call the task collates ``payloads`` into (one per distinct shape,
    or one padded call) gives one output row per request."""
    size = len(payloads)
    settings = predictor.settings
    invoke = ModelCall(predictor.model, settings.method, settings.method_kwargs)
    try:
        instances = [predictor.task.decode(payload) for payload in payloads]
        for call in predictor.task.collate(instances):
            split_rows(invoke(call.to(predictor.device)), len(call.rows))
    except Exception as exc:
        raise GateError(
            f"model {name!r} can't answer a batch of {size} in one forward pass "
            f"({type(exc).__name__}: {exc}); fix its forward, or set "
            "[model.serving] batch_size = 1"
        ) from exc


def check_batch(name: str, predictor: Predictor, payloads: Sequence[Any]) -> None:
    """Run one batch through ``predictor``; GateError unless every request got a good answer."""
    size = len(payloads)
    try:
        outcomes = predictor.predict(payloads)
    except Exception as exc:
        raise GateError(
            f"model {name!r} failed a batch of {size}: {type(exc).__name__}: {exc}"
        ) from exc
    if len(outcomes) != size:
        raise GateError(f"model {name!r} gave {len(outcomes)} answers to a batch of {size}")
    for index, outcome in enumerate(outcomes):
        if isinstance(outcome, Failure):
            raise GateError(
                f"model {name!r} failed request {index} of a batch of {size} "
                f"({outcome.type}): {outcome.message}"
            )
        try:
            predictor.task.check_answer(outcome)
        except ValueError as exc:
            raise GateError(
                f"model {name!r} gave a malformed answer to request {index} of a batch of "
                f"{size}: {exc}"
            ) from exc
