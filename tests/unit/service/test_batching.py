"""Batching in the gateway, in front of a fake TorchServe that holds answers on demand.

The fake is for what the real TorchServe can't be made to do at a chosen moment: hold a
request until told, fail one batch, or change handler between two requests. The real
stack's batching is tested in tests/integration/service/test_batching.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from handlers import envelope
from service.batching import ACCEPTS_HEADER, PredictionBatcher
from service.errors import UpstreamTimeout
from service.metrics import GatewayMetrics
from service.settings import GatewaySettings
from service.upstream import UpstreamResponse
from tests.unit.service.test_app import INF, MGMT, FakeTorchServe, gateway, settings

pytestmark = pytest.mark.anyio
REQUESTS = 6


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class EnvelopeTorchServe(FakeTorchServe):
    """Answers `echo:<body>` per item, as a handler reading envelopes would; the first
    request waits for `release`."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.reads_envelopes = True
        self.handler = self.answer

    async def answer(self, request: httpx.Request) -> httpx.Response:
        if len(self.requests) == 2:  # the first after the one that taught the gateway
            await self.release.wait()
        headers = {envelope.ACCEPTS_HEADER: "1"} if self.reads_envelopes else {}
        if request.headers.get("content-type") == envelope.CONTENT_TYPE and self.reads_envelopes:
            answers = [
                envelope.Answer(200, "text/plain", b"echo:" + item.body)
                for item in envelope.unpack_request(request.content)
            ]
            headers["content-type"] = envelope.CONTENT_TYPE
            return httpx.Response(200, headers=headers, content=envelope.pack_answers(answers))
        return httpx.Response(200, headers=headers, content=b"echo:" + request.content)


def one_slot(tmp_path: Path, **overrides: object) -> GatewaySettings:
    """Settings with one upstream request per model at a time: the rest queue."""
    return settings(tmp_path, gateway_batch_in_flight=1, **overrides)


async def queue_behind_a_held_request(
    client: httpx.AsyncClient, count: int = REQUESTS
) -> list[asyncio.Task[httpx.Response]]:
    """Teach the gateway that model `m` reads envelopes, then send `count` predictions while
    the first of them is held upstream; returns once all are in the gateway."""
    assert (await client.post("/predictions/m", content=b"hello", headers=INF)).status_code == 200
    tasks = [
        asyncio.create_task(client.post("/predictions/m", content=f"{i}".encode(), headers=INF))
        for i in range(count)
    ]
    while f"gateway_requests_in_flight {count}.0" not in (await client.get("/metrics")).text:
        await asyncio.sleep(0.005)
    return tasks


async def test_requests_queued_behind_a_busy_model_go_as_one_envelope(tmp_path: Path) -> None:
    fake = EnvelopeTorchServe()
    async with gateway(one_slot(tmp_path), httpx.MockTransport(fake)) as c:
        tasks = await queue_behind_a_held_request(c)
        fake.release.set()
        answers = await asyncio.gather(*tasks)
    assert [a.content for a in answers] == [f"echo:{i}".encode() for i in range(REQUESTS)]
    assert [a.headers.get("content-type") for a in answers[1:]] == ["text/plain"] * (REQUESTS - 1)
    assert envelope.ACCEPTS_HEADER not in answers[0].headers
    sent = fake.requests[2]  # after the teaching request and the held one
    assert sent.headers["content-type"] == envelope.CONTENT_TYPE
    items = envelope.unpack_request(sent.content)
    assert [item.body for item in items] == [f"{i}".encode() for i in range(1, REQUESTS)]
    assert len(fake.requests) == 3


async def test_an_envelope_holds_at_most_max_items(tmp_path: Path) -> None:
    fake = EnvelopeTorchServe()
    async with gateway(
        one_slot(tmp_path, gateway_batch_max_items=2), httpx.MockTransport(fake)
    ) as c:
        tasks = await queue_behind_a_held_request(c)
        fake.release.set()
        answers = await asyncio.gather(*tasks)
    assert [a.content for a in answers] == [f"echo:{i}".encode() for i in range(REQUESTS)]
    first, second, last = fake.requests[2:]
    assert [item.body for item in envelope.unpack_request(first.content)] == [b"1", b"2"]
    assert [item.body for item in envelope.unpack_request(second.content)] == [b"3", b"4"]
    assert last.content == b"5"  # one left: sent as a plain request


async def test_a_failed_envelope_fails_each_of_its_requests_in_the_one_format(
    tmp_path: Path,
) -> None:
    fake = EnvelopeTorchServe()
    async with gateway(one_slot(tmp_path), httpx.MockTransport(fake)) as c:
        tasks = await queue_behind_a_held_request(c)

        async def busy(request: httpx.Request) -> httpx.Response:
            body = b'{"code": 503, "type": "ServiceUnavailableException", '
            body += b'"message": "Model \\"m\\" has no worker to serve inference request."}'
            return httpx.Response(503, content=body)

        fake.handler = busy
        fake.release.set()
        answers = await asyncio.gather(*tasks)
    assert answers[0].status_code == 200  # held upstream before the failure began
    for answer in answers[1:]:
        assert answer.status_code == 503
        assert answer.json()["type"] == "ModelBusy"


async def test_a_client_that_leaves_the_queue_is_left_out_of_the_envelope(tmp_path: Path) -> None:
    fake = EnvelopeTorchServe()
    async with gateway(one_slot(tmp_path), httpx.MockTransport(fake)) as c:
        tasks = await queue_behind_a_held_request(c)
        tasks[3].cancel()
        while "gateway_requests_in_flight 5.0" not in (await c.get("/metrics")).text:
            await asyncio.sleep(0.005)
        fake.release.set()
        kept = await asyncio.gather(*(t for i, t in enumerate(tasks) if i != 3))
    assert [a.status_code for a in kept] == [200] * (REQUESTS - 1)
    items = envelope.unpack_request(fake.requests[2].content)
    assert [item.body for item in items] == [b"1", b"2", b"4", b"5"]


async def test_a_model_that_stops_reading_envelopes_gets_its_requests_one_by_one(
    tmp_path: Path,
) -> None:
    # A new default version with a foreign handler answers the envelope as one plain input.
    fake = EnvelopeTorchServe()
    async with gateway(one_slot(tmp_path), httpx.MockTransport(fake)) as c:
        tasks = await queue_behind_a_held_request(c)
        fake.reads_envelopes = False
        fake.release.set()
        answers = await asyncio.gather(*tasks)
        later = await asyncio.gather(
            *(c.post("/predictions/m", content=b"x", headers=INF) for _ in range(3))
        )
    assert [a.content for a in answers] == [f"echo:{i}".encode() for i in range(REQUESTS)]
    assert [a.content for a in later] == [b"echo:x"] * 3
    envelopes = [r for r in fake.requests if r.headers.get("content-type") == envelope.CONTENT_TYPE]
    assert len(envelopes) == 1  # the one it answered wrongly; never again


async def test_a_queued_prediction_times_out_on_its_own_deadline() -> None:
    """Its wait in the queue counts: a model stuck on an upstream request that never ends
    (a client without a deadline of its own) still answers the queue 504 on time."""

    class StuckAfterFirst:
        calls = 0

        async def send(self, *args: object, **kwargs: object) -> UpstreamResponse:
            self.calls += 1
            if self.calls > 1:
                await asyncio.Event().wait()
            return UpstreamResponse(200, [(ACCEPTS_HEADER, b"1")], b"ok")

    client = StuckAfterFirst()
    batcher = PredictionBatcher(
        client,  # type: ignore[arg-type]
        GatewayMetrics(),
        max_items=16,
        max_bytes=1000,
        slots=1,
        timeout_s=0.05,
    )
    path = "/predictions/m"
    assert (await batcher.predict("m", path, [], b"teach")).body == b"ok"
    stuck = asyncio.create_task(batcher.predict("m", path, [], b"stuck"))
    while client.calls < 2:
        await asyncio.sleep(0)
    async with asyncio.timeout(10):  # without its deadline it would wait forever
        with pytest.raises(UpstreamTimeout):
            await batcher.predict("m", path, [], b"queued")
    stuck.cancel()


async def test_an_envelope_holds_at_most_max_body_bytes_of_items(tmp_path: Path) -> None:
    # Without the byte cap, 16 items of 1 MiB would make one envelope over TorchServe's
    # max_request_size, and all 16 clients would fail together.
    fake = EnvelopeTorchServe()
    limit = 1000  # GATEWAY_MAX_BODY_BYTES in these settings
    bodies = [bytes([65 + i]) * 400 for i in range(REQUESTS)]
    async with gateway(
        one_slot(tmp_path, gateway_max_body_bytes=limit), httpx.MockTransport(fake)
    ) as c:
        assert (await c.post("/predictions/m", content=b"hello", headers=INF)).status_code == 200
        tasks = [
            asyncio.create_task(c.post("/predictions/m", content=body, headers=INF))
            for body in bodies
        ]
        while f"gateway_requests_in_flight {REQUESTS}.0" not in (await c.get("/metrics")).text:
            await asyncio.sleep(0.005)
        fake.release.set()
        answers = await asyncio.gather(*tasks)
    assert [a.content for a in answers] == [b"echo:" + body for body in bodies]
    sent = fake.requests[2:]  # after the teaching request and the held one
    batches = [
        [item.body for item in envelope.unpack_request(r.content)]
        if r.headers.get("content-type") == envelope.CONTENT_TYPE
        else [r.content]
        for r in sent
    ]
    assert batches == [bodies[1:3], bodies[3:5], bodies[5:]]  # 2 x 400 fit in 1000, 3 do not


async def test_a_prediction_with_a_query_string_is_never_batched(tmp_path: Path) -> None:
    fake = EnvelopeTorchServe()
    async with gateway(one_slot(tmp_path), httpx.MockTransport(fake)) as c:
        tasks = await queue_behind_a_held_request(c)
        # The model is busy and others are queued: this one still goes at once, alone.
        with_query = await c.post("/predictions/m?topk=2", content=b"q", headers=INF)
        fake.release.set()
        answers = await asyncio.gather(*tasks)
    assert with_query.status_code == 200 and with_query.content == b"echo:q"
    assert [a.content for a in answers] == [f"echo:{i}".encode() for i in range(REQUESTS)]
    (plain,) = [r for r in fake.requests if r.url.query]
    assert plain.url.query == b"topk=2" and plain.content == b"q"
    for request in fake.requests:
        if request.headers.get("content-type") == envelope.CONTENT_TYPE:
            assert b"q" not in [item.body for item in envelope.unpack_request(request.content)]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/models?url=m.mar&batch_size=2&max_batch_delay=0"),
        ("PUT", "/models/m?min_worker=1"),
        ("PUT", "/models/m/1.0/set-default"),
        ("DELETE", "/models/m/1.0"),
    ],
)
async def test_a_management_call_makes_the_gateway_learn_each_handler_anew(
    tmp_path: Path, method: str, path: str
) -> None:
    release = asyncio.Event()
    predictions: list[httpx.Request] = []

    async def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/predictions/"):
            predictions.append(request)
            if len(predictions) > 1:  # every prediction after the teaching one waits
                await release.wait()
        headers = {envelope.ACCEPTS_HEADER: "1"}
        return httpx.Response(200, headers=headers, content=b"echo:" + request.content)

    fake = FakeTorchServe()
    fake.handler = answer
    (tmp_path / "m.mar").write_bytes(b"PK")
    async with gateway(one_slot(tmp_path), httpx.MockTransport(fake)) as c:
        assert (await c.post("/predictions/m", content=b"teach", headers=INF)).status_code == 200
        managed = await c.request(method, path, headers=MGMT)
        assert managed.status_code == 200, managed.text
        tasks = [
            asyncio.create_task(c.post("/predictions/m", content=f"{i}".encode(), headers=INF))
            for i in range(2)
        ]
        # The model is no longer known to read envelopes: neither prediction waits in the
        # gateway's queue behind the other (as a model known to be batchable's would).
        async with asyncio.timeout(10):
            while len(predictions) < 3:
                await asyncio.sleep(0.005)
        release.set()
        answers = await asyncio.gather(*tasks)
    assert sorted(a.content for a in answers) == [b"echo:0", b"echo:1"]


async def busy_model_with_queue(
    client: httpx.AsyncClient, fake: EnvelopeTorchServe, count: int
) -> list[asyncio.Task[httpx.Response]]:
    """Teach the gateway that `m` reads envelopes, hold one prediction upstream, then send
    `count` more; returns once all are in the gateway."""
    assert (await client.post("/predictions/m", content=b"hello", headers=INF)).status_code == 200
    held = asyncio.create_task(client.post("/predictions/m", content=b"held", headers=INF))
    while len(fake.requests) < 2:
        await asyncio.sleep(0.005)
    tasks = [
        asyncio.create_task(client.post("/predictions/m", content=f"{i}".encode(), headers=INF))
        for i in range(count)
    ]
    while f"gateway_requests_in_flight {count + 1}.0" not in (await client.get("/metrics")).text:
        await asyncio.sleep(0.005)
    return [held, *tasks]


async def test_a_busy_model_gets_its_queue_as_one_envelope_once_min_items_wait(
    tmp_path: Path,
) -> None:
    fake = EnvelopeTorchServe()
    free_slots = settings(tmp_path, gateway_batch_in_flight=3, gateway_batch_min_items=4)
    async with gateway(free_slots, httpx.MockTransport(fake)) as c:
        tasks = await busy_model_with_queue(c, fake, 3)
        # Two slots are free, but three predictions are fewer than GATEWAY_BATCH_MIN_ITEMS.
        assert len(fake.requests) == 2
        tasks.append(asyncio.create_task(c.post("/predictions/m", content=b"3", headers=INF)))
        while len(fake.requests) < 3:
            await asyncio.sleep(0.005)
        sent = fake.requests[2]  # while the held one is still upstream
        assert [item.body for item in envelope.unpack_request(sent.content)] == [
            b"0",
            b"1",
            b"2",
            b"3",
        ]
        fake.release.set()
        answers = await asyncio.gather(*tasks)
    assert [a.content for a in answers] == [b"echo:held"] + [f"echo:{i}".encode() for i in range(4)]
    assert len(fake.requests) == 3


async def test_a_slot_coming_back_sends_what_is_queued_whatever_its_size(tmp_path: Path) -> None:
    fake = EnvelopeTorchServe()
    free_slots = settings(tmp_path, gateway_batch_in_flight=3, gateway_batch_min_items=4)
    async with gateway(free_slots, httpx.MockTransport(fake)) as c:
        tasks = await busy_model_with_queue(c, fake, 2)
        assert len(fake.requests) == 2
        fake.release.set()  # the held request comes back: its slot frees
        answers = await asyncio.gather(*tasks)
    assert [a.content for a in answers] == [b"echo:held", b"echo:0", b"echo:1"]
    (sent,) = fake.requests[2:]
    assert [item.body for item in envelope.unpack_request(sent.content)] == [b"0", b"1"]


async def test_with_min_items_1_a_free_slot_takes_each_prediction_at_once(tmp_path: Path) -> None:
    fake = EnvelopeTorchServe()
    free_slots = settings(tmp_path, gateway_batch_in_flight=3, gateway_batch_min_items=1)
    async with gateway(free_slots, httpx.MockTransport(fake)) as c:
        assert (await c.post("/predictions/m", content=b"hello", headers=INF)).status_code == 200
        held = asyncio.create_task(c.post("/predictions/m", content=b"held", headers=INF))
        while len(fake.requests) < 2:
            await asyncio.sleep(0.005)
        # Each goes alone into a free slot, and is answered while the held one is upstream.
        others = [await c.post("/predictions/m", content=b, headers=INF) for b in (b"0", b"1")]
        assert not held.done()
        fake.release.set()
        assert (await held).content == b"echo:held"
    assert [a.content for a in others] == [b"echo:0", b"echo:1"]
    assert [r.content for r in fake.requests[2:]] == [b"0", b"1"]
