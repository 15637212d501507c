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

A model served in a memory format of its own (``memory_format = "channels_last"``) must
answer every example as the same model in its own layout does, within the spec's tolerance:
the layout is a speed-up, never a change of answers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from archive.errors import GateError
from archive.examples import gate_payloads, model_examples
from archive.spec import ModelSpec
from handlers import golden
from handlers.batch import Failure, ModelCall, split_rows
from handlers.errors import HandlerError
from handlers.memory_format import DEFAULT_MEMORY_FORMAT, as_built
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
    recorded = model_examples(entry, base_dir, predictor)
    check_memory_format(entry, predictor, recorded)
    examples = gate_payloads(predictor, recorded)
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
    invoke = ModelCall(
        predictor.model, settings.method, settings.method_kwargs, settings.memory_format
    )
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


def check_memory_format(
    entry: ModelSpec, predictor: Predictor, examples: Sequence[golden.Example]
) -> None:
    """GateError unless ``predictor``, in the spec's ``memory_format``, answers each example
    as the same model in its default layout does (within ``entry.tolerance``)."""
    layout = predictor.settings.memory_format
    if layout == DEFAULT_MEMORY_FORMAT:
        return
    reference = replace(
        predictor,
        model=as_built(predictor.model),
        settings=replace(predictor.settings, memory_format=DEFAULT_MEMORY_FORMAT),
    )
    where = f"model {entry.name!r} with memory_format = {layout!r}"
    for example in examples:
        expected = golden.answer(reference, example.body, example.content_type)
        if isinstance(expected, Failure):
            continue  # fails in any layout: the checks that follow name it
        got = golden.answer(predictor, example.body, example.content_type)
        if isinstance(got, Failure):
            raise GateError(
                f"{where} fails example {example.name!r}, which it answers without: "
                f"{got.message}. A model that calls .view() on a convolution's output can't "
                "take channels-last tensors (.reshape() or torch.flatten() can); or leave "
                "memory_format unset"
            )
        replay = golden.compare(
            example, golden.as_sent(expected), golden.as_sent(got), entry.tolerance
        )
        if not replay.ok:
            raise GateError(
                f"{where} answers example {example.name!r} otherwise than without it: "
                f"{replay.mismatch}; leave memory_format unset"
            )


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
