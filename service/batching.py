"""Batching in the gateway: concurrent predictions for one model go to TorchServe together.

Why here: every request TorchServe handles costs its frontend and its Python worker a fixed
amount of work (netty, the worker protocol, decoding) besides the model, and on a small
machine that fixed cost, not the model, caps throughput (issue 7: the worker spent 0.70 ms
per 28x28 sample, the model alone 0.37 ms). TorchServe's own batching pays it per request
and waits up to `max_batch_delay` for a batch to fill, which a lone request always pays.

A prediction to an idle model goes upstream at once. While the model has requests upstream,
predictions queue; what is queued goes as one envelope (`handlers.envelope`, up to
GATEWAY_BATCH_MAX_ITEMS items and GATEWAY_MAX_BODY_BYTES) that the handler runs as one
forward pass and answers item by item, as soon as either
- one of the model's upstream requests comes back and frees its slot, or
- `min_items` are queued (GATEWAY_BATCH_MIN_ITEMS) and the model has fewer than `slots`
  requests upstream (GATEWAY_BATCH_IN_FLIGHT).
Light load: no added latency. Moderate load: a burst of clients answered together comes back
together; without `min_items` its first arrivals would take the free slots one by one, as
envelopes of one item that cost the frontend and the worker a whole request each while the
rest of the burst waits behind them (mnist28 at c16, 4 interleaved rounds: 1,637 -> 1,720
req/s with 4). Heavy load: batches as large as the queue.

Only models whose handler reads envelopes (it says so on every answer, `ACCEPTS_HEADER`)
are batched; any other model is proxied one request at a time, as without this module.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field

from handlers import envelope
from service.errors import (
    GatewayError,
    ModelNotFound,
    UpstreamProtocolError,
    UpstreamRejected,
    UpstreamTimeout,
)
from service.headers import REQUEST_ID_HEADER
from service.metrics import GatewayMetrics
from service.upstream import TorchServeClient, UpstreamResponse
from service.upstream_errors import Api, map_error_response

logger = logging.getLogger(__name__)

ENVELOPE_TYPE = envelope.CONTENT_TYPE.encode()
ACCEPTS_HEADER = envelope.ACCEPTS_HEADER.encode()
_CONTENT_TYPE = b"content-type"


@dataclass(slots=True)
class _Waiting:
    """A queued prediction: what to send, and where its answer goes."""

    model: str
    headers: list[tuple[bytes, bytes]]
    body: bytes
    answer: asyncio.Future[UpstreamResponse]


@dataclass(slots=True)
class _Lane:
    """One prediction path's upstream requests in flight and predictions waiting."""

    in_flight: int = 0
    queue: deque[_Waiting] = field(default_factory=deque)


class PredictionBatcher:
    """Sends predictions through `client`, batching those that arrive while a model is busy.

    Create it inside the running event loop; it raises what `TorchServeClient.send` raises.
    """

    def __init__(
        self,
        client: TorchServeClient,
        metrics: GatewayMetrics,
        *,
        max_items: int,
        max_bytes: int,
        slots: int,
        timeout_s: float,
        min_items: int = 1,
    ) -> None:
        self._client = client
        self._metrics = metrics
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._slots = slots
        self._min_items = min_items
        self._timeout_s = timeout_s
        self._lanes: dict[str, _Lane] = {}
        # Paths whose last answer said the handler reads envelopes. Only real models answer
        # with the header, so this and `_lanes` stay as small as the set of models.
        self._batchable: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def forget(self) -> None:
        """Models were registered, removed or given a new default: learn their handlers anew."""
        self._batchable.clear()

    async def predict(
        self, model: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> UpstreamResponse:
        """TorchServe's answer to one prediction on `path` (built from validated parts)."""
        if self._max_items < 2 or path not in self._batchable:
            return await self._alone(model, path, headers, body)
        lane = self._lanes.get(path) or self._lanes.setdefault(path, _Lane())
        if not lane.queue and (
            lane.in_flight == 0 or (lane.in_flight < self._slots and self._min_items < 2)
        ):
            lane.in_flight += 1
            try:
                return await self._alone(model, path, headers, body)
            finally:
                lane.in_flight -= 1
                self._dispatch(path, lane, freed=True)
        loop = asyncio.get_running_loop()
        waiting = _Waiting(model, headers, body, loop.create_future())
        lane.queue.append(waiting)
        self._dispatch(path, lane)
        # One timer on the future rather than `asyncio.timeout` (a context manager and a
        # rescheduled timer per queued prediction).
        timer = loop.call_later(self._timeout_s, _time_out, waiting)
        try:
            return await waiting.answer
        finally:
            timer.cancel()

    async def predict_many(
        self, model: str, path: str, requests: Sequence[tuple[list[tuple[bytes, bytes]], bytes]]
    ) -> list[UpstreamResponse | GatewayError]:
        """TorchServe's answers to several predictions on `path` (`(headers, body)` each), in
        order: each an answer or the error it got.

        Where the path's handler reads envelopes they queue together, so they go upstream in
        as few envelopes as the item and byte limits allow (one, when the model is idle and
        they fit); the first prediction to an unknown path goes alone to learn its handler.
        """
        if not requests:
            return []
        if len(requests) == 1:  # as `predict`, without a task for one prediction
            return [await self._settled(self.predict(model, path, *requests[0]))]
        first: list[UpstreamResponse | GatewayError] = []
        if len(requests) > 1 and self._max_items >= 2 and path not in self._batchable:
            first.append(await self._settled(self.predict(model, path, *requests[0])))
            requests = requests[1:]
        if len(requests) == 1 or self._max_items < 2 or path not in self._batchable:
            return first + list(
                await asyncio.gather(
                    *(self._settled(self.predict(model, path, h, b)) for h, b in requests)
                )
            )
        lane = self._lanes.get(path) or self._lanes.setdefault(path, _Lane())
        loop = asyncio.get_running_loop()
        waiting = [_Waiting(model, h, b, loop.create_future()) for h, b in requests]
        lane.queue.extend(waiting)
        self._dispatch(path, lane)
        timers = [loop.call_later(self._timeout_s, _time_out, w) for w in waiting]
        try:
            return first + list(await asyncio.gather(*(self._settled(w.answer) for w in waiting)))
        finally:
            for timer in timers:
                timer.cancel()

    @staticmethod
    async def _settled(
        answer: Awaitable[UpstreamResponse],
    ) -> UpstreamResponse | GatewayError:
        try:
            return await answer
        except GatewayError as error:
            return error

    async def _alone(
        self, model: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> UpstreamResponse:
        try:
            answer = await self._client.send(
                Api.INFERENCE, "POST", path, headers=headers, content=body
            )
        except UpstreamRejected as error:  # TorchServe answered, with an error
            if not isinstance(error, ModelNotFound):
                self._metrics.observe_upstream_batch(model, 1)
            raise
        if any(name.lower() == ACCEPTS_HEADER for name, _ in answer.headers):
            self._batchable.add(path)
        else:
            self._batchable.discard(path)
        if answer.status != 404:
            self._metrics.observe_upstream_batch(model, 1)
        return answer

    def _dispatch(self, path: str, lane: _Lane, freed: bool = False) -> None:
        """Send what is queued on `lane` while it has free slots: at once when the model is
        idle or a request of it just came back (`freed`), else once `min_items` are queued."""
        while lane.queue and lane.in_flight < self._slots:
            if not freed and lane.in_flight > 0 and len(lane.queue) < self._min_items:
                return
            freed = False
            batch = self._take(lane.queue)
            if not batch:
                return
            lane.in_flight += 1
            task = asyncio.get_running_loop().create_task(self._send(path, lane, batch))
            self._tasks.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self._tasks.discard)

    def _take(self, queue: deque[_Waiting]) -> list[_Waiting]:
        """The next batch: queue order, up to the item and byte limits, at least one item."""
        batch: list[_Waiting] = []
        size = 0
        while queue and len(batch) < self._max_items:
            waiting = queue[0]
            if waiting.answer.done():  # its client gave up (disconnected or timed out)
                queue.popleft()
                continue
            if batch and size + len(waiting.body) > self._max_bytes:
                break
            batch.append(queue.popleft())
            size += len(waiting.body)
        return batch

    async def _send(self, path: str, lane: _Lane, batch: list[_Waiting]) -> None:
        try:
            if len(batch) == 1:
                first = batch[0]
                _settle(first, await self._alone(first.model, path, first.headers, first.body))
            else:
                await self._send_envelope(path, batch)
        except GatewayError as error:
            for waiting in batch:
                _settle(waiting, error)
        except Exception:
            # No client may hang on a bug here: each gets the one-format 500.
            logger.exception("Sending a batch of %d predictions failed", len(batch))
            for waiting in batch:
                _settle(waiting, GatewayError())
        finally:
            lane.in_flight -= 1
            self._dispatch(path, lane, freed=True)

    async def _send_envelope(self, path: str, batch: list[_Waiting]) -> None:
        items = [envelope.Item(_content_type(w.headers), w.body) for w in batch]
        headers = [(_CONTENT_TYPE, ENVELOPE_TYPE)]
        headers += [(n, v) for n, v in batch[0].headers if n == REQUEST_ID_HEADER]
        answer = await self._client.send(
            Api.INFERENCE, "POST", path, headers=headers, content=envelope.pack_request(items)
        )
        if _content_type(answer.headers) != envelope.CONTENT_TYPE:
            # Not an envelope: this path now serves a handler that doesn't read them (a new
            # default version). It read ours as one plain input; send each request alone.
            self._batchable.discard(path)
            results = await asyncio.gather(
                *(self._alone(w.model, path, w.headers, w.body) for w in batch),
                return_exceptions=True,
            )
            for waiting, result in zip(batch, results, strict=True):
                _settle(waiting, result)
            return
        try:
            answers = envelope.unpack_answers(answer.body)
        except envelope.EnvelopeError as exc:
            raise UpstreamProtocolError(f"The model's batched answer is corrupt: {exc}") from exc
        if len(answers) != len(batch):
            raise UpstreamProtocolError("The model's batched answer has the wrong item count.")
        self._metrics.observe_upstream_batch(batch[0].model, len(batch))
        # Each answer gets the headers TorchServe gave the envelope (cache control...) and its
        # own content type, as if TorchServe had answered it alone.
        shared = [(n, v) for n, v in answer.headers if n.lower() != _CONTENT_TYPE]
        for waiting, item in zip(batch, answers, strict=True):
            error = map_error_response(item.status, item.body, Api.INFERENCE)
            headers = shared
            if item.content_type:
                headers = [*shared, (_CONTENT_TYPE, item.content_type.encode("latin-1"))]
            _settle(waiting, error or UpstreamResponse(item.status, headers, item.body))


def _settle(waiting: _Waiting, result: UpstreamResponse | BaseException) -> None:
    if waiting.answer.done():
        return
    if isinstance(result, UpstreamResponse):
        waiting.answer.set_result(result)
    elif isinstance(result, GatewayError):
        waiting.answer.set_exception(result)
    else:
        waiting.answer.set_exception(GatewayError())


def _time_out(waiting: _Waiting) -> None:
    _settle(waiting, UpstreamTimeout())


def _content_type(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name.lower() == _CONTENT_TYPE:
            return value.decode("latin-1").split(";", 1)[0].strip().lower()
    return ""
