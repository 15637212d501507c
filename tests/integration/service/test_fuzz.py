"""20,000 malformed requests (`fuzz_cases`) against the real stack: the project's digits
archives (built by `archive build`) in a real TorchServe, behind the real gateway.

Bounded: a fixed seed and count, 32 connections at once, a deadline for the whole run. After
it: no answer in 5xx other than 503/504 (load), no body with internals (a traceback, a Java
class, a file path, a key), no worker died (same worker pids), the model list unchanged, and
the control predictions answered byte for byte as before. The counts (by kind and status)
are printed and written to `fuzz.json` in the test's temp directory.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from archive.build import build_models
from archive.spec import DEFAULT_SPEC
from launcher.gateway import Gateway
from launcher.torchserve import TorchServe
from tests.integration.service.conftest import GATEWAY_ENV, INF, INF_KEY, MGMT, MGMT_KEY
from tests.integration.service.fuzz_cases import Bodies, Case, FuzzCases
from tests.support.servers import running_gateway, running_torchserve

pytestmark = pytest.mark.integration

COUNT = 20_000
SEED = 18
CONCURRENCY = 32
DEADLINE_S = 600.0
ANSWER_TIMEOUT_S = 60.0
SAMPLE_PNG = Path(__file__).resolve().parents[3] / "examples" / "digits" / "sample.png"
MODELS = ["digits.mar", "digits-tensor.mar"]
# What must never reach a client: tracebacks, Python and Java internals, file paths, keys.
INTERNALS = re.compile(
    rb"Traceback|File \"|\.py\b|site-packages|org\.pytorch|java\.|javax\.|Exception\b|"
    rb"(?<![\w.])/(?:usr|root|home|tmp|opt|srv|var|work)/|"
    + re.escape(INF_KEY.encode())
    + rb"|"
    + re.escape(MGMT_KEY.encode())
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TorchServe, Gateway]]:
    store = tmp_path_factory.mktemp("fuzz-store")
    build_models(DEFAULT_SPEC, store, [name.removesuffix(".mar") for name in MODELS])
    run = tmp_path_factory.mktemp("fuzz-run")
    env = {**GATEWAY_ENV, "GATEWAY_MAX_BODY_BYTES": str(10 * 1024 * 1024)}
    with (
        running_torchserve(store, run, MODELS, max_body_bytes=10 * 1024 * 1024) as ts,
        running_gateway(ts, env=env) as gw,
    ):
        yield ts, gw


def valid_bodies() -> Bodies:
    tensor = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 8, 8)
    npy = io.BytesIO()
    np.save(npy, tensor)
    return Bodies(SAMPLE_PNG.read_bytes(), json.dumps(tensor.tolist()).encode(), npy.getvalue())


async def read_answer(reader: asyncio.StreamReader) -> bytes:
    """One whole response (by its Content-Length, or until the server closes); b"" when
    the server closed without answering."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as partial:
        return partial.partial
    except ConnectionResetError:
        return b""
    length = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    try:
        if length is not None:
            return head + await reader.readexactly(int(length.group(1)))
        return head + await reader.read()
    except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
        return head + getattr(exc, "partial", b"")


async def send_case(host: str, port: int, case: Case) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(case.raw)
        await writer.drain()
        if not case.answerable:
            return b""  # the body never completes: leave, as such a client would
        async with asyncio.timeout(ANSWER_TIMEOUT_S):
            return await read_answer(reader)
    except (ConnectionResetError, BrokenPipeError):
        return b""
    finally:
        writer.close()


def status_of(answer: bytes) -> str:
    match = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
    return match.group(1).decode() if match else "closed"


async def fuzz(gateway: Gateway, cases: list[Case]) -> list[tuple[Case, bytes]]:
    host, port = gateway.settings.gateway_host, gateway.settings.gateway_port
    results: list[tuple[Case, bytes]] = []
    queue = iter(cases)

    async def worker() -> None:
        for case in queue:
            results.append((case, await send_case(host, port, case)))

    async with asyncio.timeout(DEADLINE_S):
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return results


def worker_pids(client: httpx.Client, torchserve: TorchServe) -> dict[str, list[int]]:
    pids = {}
    for name in (model.removesuffix(".mar") for model in MODELS):
        described = client.get(f"{torchserve.management_url}/models/{name}").json()
        pids[name] = sorted(w["pid"] for v in described for w in v["workers"])
    return pids


def control_answers(client: httpx.Client, gateway: Gateway, bodies: Bodies) -> list[bytes]:
    png = client.post(
        f"{gateway.url}/predictions/digits",
        content=bodies.png,
        headers={**INF, "content-type": "image/png"},
    )
    tensor = client.post(
        f"{gateway.url}/predictions/digits-tensor",
        content=bodies.tensor_json,
        headers={**INF, "content-type": "application/json"},
    )
    assert png.status_code == 200 and tensor.status_code == 200, (png.text, tensor.text)
    return [png.content, tensor.content]


def test_malformed_requests_get_clean_answers_and_hurt_nothing(
    stack: tuple[TorchServe, Gateway], tmp_path: Path
) -> None:
    torchserve, gateway = stack
    bodies = valid_bodies()
    with httpx.Client(trust_env=False, timeout=60) as client:
        control = control_answers(client, gateway, bodies)
        models = client.get(f"{gateway.url}/models", headers=MGMT).json()
        pids = worker_pids(client, torchserve)

        cases = list(FuzzCases(SEED, bodies, INF_KEY, MGMT_KEY).generate(COUNT))
        start = time.monotonic()
        results = asyncio.run(fuzz(gateway, cases))
        elapsed = time.monotonic() - start

        models_after = client.get(f"{gateway.url}/models", headers=MGMT).json()
        pids_after = worker_pids(client, torchserve)
        control_after = control_answers(client, gateway, bodies)

    by_kind: dict[str, Counter[str]] = {}
    for case, answer in results:
        by_kind.setdefault(case.kind, Counter())[status_of(answer)] += 1
    figures = {
        "requests": COUNT,
        "seconds": round(elapsed, 1),
        "statuses": dict(sum(by_kind.values(), Counter()).most_common()),
        "by_kind": {kind: dict(counts.most_common()) for kind, counts in by_kind.items()},
    }
    (tmp_path / "fuzz.json").write_text(json.dumps(figures, indent=2))
    print(f"\nfuzz: {json.dumps(figures)}")

    assert len(results) == COUNT
    problems = []
    if models_after != models:
        problems.append(f"the model list changed: {models} -> {models_after}")
    if pids_after != pids:
        problems.append(f"a worker died: pids {pids} -> {pids_after}")
    if control_after != control:
        problems.append(f"the control answers changed: {control} -> {control_after}")
    server_errors = [
        (case.kind, answer[:300])
        for case, answer in results
        if status_of(answer).startswith("5") and status_of(answer) not in ("503", "504")
    ]
    if server_errors:
        problems.append(f"{len(server_errors)} answers in 5xx: {server_errors[:5]}")
    leaks = [
        (case.kind, answer[:400])
        for case, answer in results
        if INTERNALS.search(answer.partition(b"\r\n\r\n")[2])
    ]
    if leaks:
        problems.append(f"{len(leaks)} bodies with internals: {leaks[:5]}")
    answered = [answer for case, answer in results if case.answerable]
    unanswered = sum(1 for a in answered if status_of(a) == "closed")
    if unanswered >= len(answered) // 100:
        problems.append(f"{unanswered} complete requests closed without an answer")
    assert problems == [], "\n".join(problems)
