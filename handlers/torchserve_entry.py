"""TorchServe's entry point: wires TorchServe's context to the plain functions of ``handlers``.

TorchServe requires exactly one class in this file; all the work is in the helpers it calls.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from handlers import envelope
from handlers.answer_encoding import encode_answer
from handlers.batch import Failure
from handlers.device import configure_threads, expected_workers, select_device
from handlers.golden import torchserve_payload, verify_examples
from handlers.hooks import request_payload
from handlers.integrity import verify_manifest
from handlers.predictor import Predictor, load_predictor
from handlers.settings import HandlerSettings

logger = logging.getLogger(__name__)

# TorchServe's worker logs this on its root logger for every batch (ts/protocol); the
# frontend's log4j2.xml throws it away. Dropped at the source, it costs no pipe write in the
# worker and no log event in the JVM.
PER_BATCH_LOG_LINE = "Backend received inference at"


def drop_per_batch_log_line(record: logging.LogRecord) -> bool:
    """A root-logger filter: False for TorchServe's per-batch line, True for all else."""
    return not (isinstance(record.msg, str) and record.msg.startswith(PER_BATCH_LOG_LINE))


# TorchServe's worker reports each batch's `PredictionTime` as a `[METRICS]` line on stdout
# (ts/service.py, through ts/metrics/caching_metric.py's logger), which the frontend parses
# into its own metrics port. Dropped at the source: side by side (mnist28 through the gateway,
# 5 interleaved rounds) the JVM's CPU per request at c1 fell 765 -> 622 us and the stack's
# req/s rose 226 -> 245 (c1) and 717 -> 821 (c16). The gateway's per-model latency histograms
# replace it; any other metric line (a handler's own) is kept.
METRICS_LOGGER = "ts.metrics.caching_metric"
PREDICTION_METRIC_LINE = "[METRICS]PredictionTime."


def drop_prediction_time_metric(record: logging.LogRecord) -> bool:
    """A filter for TorchServe's metrics logger: False for the per-batch PredictionTime line."""
    return not (isinstance(record.msg, str) and record.msg.startswith(PREDICTION_METRIC_LINE))


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
        threads = configure_threads(expected_workers(config.get("minWorkers")))
        device = select_device(context.system_properties.get("gpu_id"))
        self.predictor = load_predictor(settings, model_dir, device)
        # Ready only once the archive still answers its recorded examples as it did when built.
        verify_examples(self.predictor, model_dir)
        root = logging.getLogger()
        if drop_per_batch_log_line not in root.filters:
            root.addFilter(drop_per_batch_log_line)
        metrics = logging.getLogger(METRICS_LOGGER)
        if drop_prediction_time_metric not in metrics.filters:
            metrics.addFilter(drop_prediction_time_metric)
        self.initialized = True
        logger.info("%s ready on %s with %d threads", context.model_name, device, threads)

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[Any]:
        assert self.predictor is not None, "handle() called before initialize()"
        # Envelopes from the gateway (handlers.envelope) join the batch item by item, so
        # one forward pass serves every request TorchServe and the gateway gathered.
        payloads: list[Any] = []
        spans: list[tuple[int, int] | Failure | None] = []
        task = self.predictor.task
        for index, row in enumerate(data):
            body = request_body(row)
            content_type = request_content_type(context, index)
            if content_type != envelope.CONTENT_TYPE:
                spans.append(None)
                payloads.append(request_payload(task, body, content_type))
                continue
            try:
                items = envelope.unpack_request(
                    body if isinstance(body, bytes | bytearray) else b""
                )
            except envelope.EnvelopeError as exc:
                spans.append(Failure(400, "InvalidInput", str(exc)))
                continue
            spans.append((len(payloads), len(items)))
            payloads += [
                request_payload(task, as_torchserve_decodes(item), item.content_type)
                for item in items
            ]
        outcomes = self.predictor.predict(payloads) if payloads else []
        answers: list[Any] = []
        position = 0
        for index, span in enumerate(spans):
            context.set_response_header(index, envelope.ACCEPTS_HEADER, "1")
            if span is None:
                outcome = outcomes[position]
                position += 1
            elif isinstance(span, Failure):
                outcome = span
            else:
                start, count = span
                position = start + count
                context.set_response_content_type(index, envelope.CONTENT_TYPE)
                answers.append(
                    envelope.pack_answers([as_answer(o) for o in outcomes[start:position]])
                )
                continue
            status, phrase, body = encoded(outcome)
            if status != 200:
                context.set_response_status(status, phrase, index)
            answers.append(body)
        return answers


def request_content_type(context: Any, index: int) -> str | None:
    """The Content-Type TorchServe received the body of request ``index`` with."""
    # TorchServe keeps it per input parameter: {"body": {"content-type": ...}}.
    parameter = context.get_request_header(index, "body")
    if isinstance(parameter, dict):
        return parameter.get("content-type")
    return None


def as_torchserve_decodes(item: envelope.Item) -> Any:
    """An envelope item's body as TorchServe would have handed it over on its own: JSON
    decoded, text as str, anything else (or what fails to decode) as bytes."""
    return torchserve_payload(item.body, item.content_type)


def as_answer(outcome: Any) -> envelope.Answer:
    """One outcome as TorchServe would have sent it alone (``ts/protocol``: JSON with indent 2)."""
    status, _, body = encoded(outcome)
    # No content type: TorchServe sends none unless a handler sets one, and ours doesn't.
    return envelope.Answer(status, "", body)


def encoded(outcome: Any) -> tuple[int, str, bytes]:
    """An outcome's status, reason phrase and body bytes, as TorchServe would send them.

    An answer JSON cannot hold fails alone with a 500 (TorchServe would fail the batch).
    """
    if isinstance(outcome, bytes | bytearray):
        return 200, "", bytes(outcome)
    if isinstance(outcome, str):
        return 200, "", outcome.encode()
    if not isinstance(outcome, Failure):
        try:
            return 200, "", encode_answer(outcome)
        except (TypeError, ValueError) as exc:
            outcome = Failure(500, "ModelError", f"the model's answer is not JSON: {exc}")
    return outcome.code, ascii_phrase(outcome.message), encode_answer(outcome.body())


def ascii_phrase(message: str) -> str:
    """`message` as an ASCII reason phrase (non-ASCII characters backslash-escaped).

    TorchServe's worker frames a reason phrase with its length in characters but sends its
    UTF-8 bytes (`ts/protocol/otf_message_handler.py`), so one non-ASCII character (say from
    a malformed `.npy` header quoted in the message) corrupts the frame and the frontend
    drops the worker. The body keeps the message as it is.
    """
    return message.encode("ascii", "backslashreplace").decode("ascii")


def request_body(row: dict[str, Any]) -> Any:
    """The body of one request as TorchServe hands it over (raw body, or a form field)."""
    for key in ("body", "data"):
        if row.get(key) is not None:
            return row[key]
    return next(iter(row.values()), None)
