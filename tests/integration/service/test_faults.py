"""Faults, each ending with the stack serving again without restarting the gateway.

A TorchServe of their own (these tests stop it and kill its workers), with the gateway in
front: a slow handler (504 on time), a worker killed with SIGKILL during requests, and
TorchServe stopped and started again.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from launcher.gateway import Gateway
from launcher.torchserve import TorchServe
from tests.integration.service.conftest import BODY_LIMIT, GATEWAY_ENV, INF, MGMT, TIMEOUT_S
from tests.support.servers import running_gateway, running_torchserve

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(
    model_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TorchServe, Gateway]]:
    run = tmp_path_factory.mktemp("faults")
    models = ["echo.mar", "sleepy.mar"]
    with (
        running_torchserve(model_store, run, models, max_body_bytes=BODY_LIMIT) as ts,
        running_gateway(ts, env=GATEWAY_ENV) as gw,
    ):
        yield ts, gw


def poll(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def echo_ok(client: httpx.Client, gateway: Gateway) -> bool:
    try:
        answer = client.post(f"{gateway.url}/predictions/echo", content=b"abc", headers=INF)
    except httpx.HTTPError:
        return False
    return answer.status_code == 200


def is_error_format(answer: httpx.Response) -> bool:
    body = answer.json()
    return set(body) == {"code", "type", "message"} and body["code"] == answer.status_code


def test_a_handler_slower_than_the_timeout_gets_504_on_time(
    stack: tuple[TorchServe, Gateway], client: httpx.Client
) -> None:
    _, gateway = stack
    start = time.monotonic()
    answer = client.post(f"{gateway.url}/predictions/sleepy", content=b"6", headers=INF)
    elapsed = time.monotonic() - start
    assert answer.status_code == 504 and answer.json()["type"] == "UpstreamTimeout"
    assert TIMEOUT_S <= elapsed < TIMEOUT_S + 1.0
    assert echo_ok(client, gateway)


def test_a_worker_killed_during_requests(
    stack: tuple[TorchServe, Gateway], client: httpx.Client
) -> None:
    _, gateway = stack

    def sleepy_worker_pid() -> int | None:
        (described,) = client.get(f"{gateway.url}/models/sleepy", headers=MGMT).json()
        pids = [w["pid"] for w in described["workers"] if w["status"] == "READY" and w["pid"] > 0]
        return pids[0] if pids else None

    # The previous test left the worker asleep: wait until it is free again.
    poll(
        lambda: (
            client.post(f"{gateway.url}/predictions/sleepy", content=b"0", headers=INF).status_code
            == 200
        ),
        timeout=30,
        what="the sleepy worker to be free",
    )
    pid = sleepy_worker_pid()
    assert pid is not None

    def predict() -> httpx.Response:
        with httpx.Client(trust_env=False, timeout=30) as own:
            return own.post(f"{gateway.url}/predictions/sleepy", content=b"1.5", headers=INF)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(predict) for _ in range(4)]

        def in_flight() -> bool:
            text = client.get(f"{gateway.url}/metrics").text
            return "gateway_requests_in_flight 0.0" not in text

        poll(in_flight, timeout=10, what="requests in flight")
        os.kill(pid, signal.SIGKILL)
        answers = [f.result(timeout=TIMEOUT_S + 10) for f in futures]  # none hangs

    statuses = [a.status_code for a in answers]
    assert any(s >= 500 for s in statuses), statuses
    for answer in answers:
        if answer.status_code != 200:
            assert is_error_format(answer), answer.text
            assert answer.json()["type"] in {
                "WorkerDied",
                "ModelBusy",
                "UpstreamTimeout",
                "ModelError",
            }
            assert "java" not in answer.text and "org.pytorch" not in answer.text

    poll(
        lambda: (
            client.post(f"{gateway.url}/predictions/sleepy", content=b"0", headers=INF).status_code
            == 200
        ),
        timeout=60,
        what="traffic to recover after TorchServe restarts the worker",
    )
    assert sleepy_worker_pid() not in (None, pid)


def test_torchserve_stopped_then_started_again(
    stack: tuple[TorchServe, Gateway], client: httpx.Client
) -> None:
    torchserve, gateway = stack
    torchserve.stop()
    start = time.monotonic()
    answer = client.post(f"{gateway.url}/predictions/echo", content=b"abc", headers=INF)
    elapsed = time.monotonic() - start
    assert answer.status_code == 503 and answer.json()["type"] == "UpstreamUnavailable"
    assert answer.headers["retry-after"] == "1"
    assert elapsed < 1.5
    not_ready = client.get(f"{gateway.url}/readyz")
    assert not_ready.status_code == 503 and not_ready.json()["torchserve"] != "up"
    assert client.get(f"{gateway.url}/healthz").status_code == 200

    torchserve.start()
    torchserve.wait_ready(120)
    assert echo_ok(client, gateway)
    assert client.get(f"{gateway.url}/readyz").status_code == 200
