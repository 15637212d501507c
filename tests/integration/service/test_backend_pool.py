"""Two real TorchServes on loopback behind one gateway (TORCHSERVE_BACKENDS).

The tests run in order on one pair of backends, A and B: predictions spread over both; A is
SIGKILLed (its whole process group: the JVM and its workers) under load from 32 connections,
and only requests that were in flight on it may fail; a registration while A is down answers
502 naming A; A restarts with no model at all, gets both models back from the gateway, and
takes traffic again within 10 s of answering /ping.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from launcher.gateway import Gateway
from launcher.torchserve import TorchServe
from tests.integration.service.conftest import INF, INF_KEY, MGMT, MGMT_KEY
from tests.support.archives import build_echo_archive
from tests.support.servers import running_gateway, torchserve_settings

pytestmark = pytest.mark.integration

HEALTH_S = 0.5
CONNECTIONS = 32
READY_TIMEOUT_S = 180.0


@dataclass
class Backend:
    """One TorchServe that a test may kill and start again on the same ports."""

    torchserve: TorchServe
    log: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        s = self.torchserve.settings
        return f"127.0.0.1:{s.torchserve_inference_port}:{s.torchserve_management_port}"

    def kill(self) -> None:
        pid = self.torchserve.pid
        assert pid is not None
        os.killpg(pid, signal.SIGKILL)  # the frontend and every worker, no clean-up

    def restart_empty(self) -> None:
        """Reap what was killed, then start a fresh TorchServe with no model registered."""
        self.torchserve.stop()
        self.torchserve = TorchServe(self.torchserve.settings, models=[])
        self.torchserve.start()
        self.torchserve.wait_ready(READY_TIMEOUT_S)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("pool-store")
    build_echo_archive(store)
    build_echo_archive(store, "late")  # registered while a backend is down
    return store


@pytest.fixture(scope="module")
def backends(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Backend]]:
    started: list[Backend] = []
    try:
        for name in ("a", "b"):
            settings = torchserve_settings(store, tmp_path_factory.mktemp(f"pool-{name}"))
            torchserve = TorchServe(settings, models=["echo.mar"])
            started.append(Backend(torchserve))
            torchserve.start()
        for backend in started:
            backend.torchserve.wait_ready(READY_TIMEOUT_S)
        yield started
    finally:
        for backend in started:
            backend.torchserve.stop()


@pytest.fixture(scope="module")
def gateway(backends: list[Backend]) -> Iterator[Gateway]:
    env = {
        "TORCHSERVE_BACKENDS": ",".join(b.name for b in backends),
        "GATEWAY_HEALTH_S": str(HEALTH_S),
        "GATEWAY_INFERENCE_KEYS": INF_KEY,
        "GATEWAY_MANAGEMENT_KEYS": MGMT_KEY,
    }
    with running_gateway(backends[0].torchserve, env=env) as gw:
        wait_for(lambda: ready(gw.url), "the gateway ready over both backends")
        yield gw


def wait_for(condition: object, what: str, timeout: float = 60.0) -> float:
    """Poll `condition` (a callable) until true; returns the monotonic time it held."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():  # type: ignore[operator]
            return time.monotonic()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=5, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def answered_by_backend(url: str) -> dict[str, float]:
    """`gateway_backend_requests_total{outcome="answered"}` per backend, from /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10, trust_env=False).text
    counts = {}
    pattern = r'gateway_backend_requests_total\{backend="([^"]+)",outcome="answered"\} (\S+)'
    for backend, value in re.findall(pattern, text):
        counts[backend] = float(value)
    return counts


@dataclass
class Outcome:
    started: float
    ended: float
    status: int  # 0: no answer


async def load(url: str, seconds: float, connections: int = CONNECTIONS) -> list[Outcome]:
    """`connections` clients posting predictions back to back for `seconds`."""
    outcomes: list[Outcome] = []
    stop_at = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(trust_env=False, timeout=30, limits=limits) as client:

        async def one_client() -> None:
            while time.monotonic() < stop_at:
                started = time.monotonic()
                try:
                    answer = await client.post(
                        f"{url}/predictions/echo", content=b"x" * 64, headers=INF
                    )
                    status = answer.status_code
                except httpx.HTTPError:
                    status = 0
                outcomes.append(Outcome(started, time.monotonic(), status))

        await asyncio.gather(*(one_client() for _ in range(connections)))
    return outcomes


def test_predictions_spread_over_both_backends(gateway: Gateway, backends: list[Backend]) -> None:
    before = answered_by_backend(gateway.url)
    outcomes = asyncio.run(load(gateway.url, 3.0, connections=8))
    assert outcomes and all(o.status == 200 for o in outcomes)
    after = answered_by_backend(gateway.url)
    counts = {b.name: after.get(b.name, 0) - before.get(b.name, 0) for b in backends}
    print(f"\npredictions per backend: {counts} ({len(outcomes)} requests)")
    for name, count in counts.items():
        assert count >= 0.2 * len(outcomes), (name, counts)


def test_readyz_lists_every_backend_and_where_each_model_is_ready(
    gateway: Gateway, backends: list[Backend]
) -> None:
    answer = httpx.get(f"{gateway.url}/readyz", timeout=10, trust_env=False)
    assert answer.status_code == 200
    body = answer.json()
    assert {name: b["state"] for name, b in body["backends"].items()} == {
        b.name: "healthy" for b in backends
    }
    assert sorted(body["models"]["echo"]["readyOn"]) == sorted(b.name for b in backends)


def test_model_views_are_merged_with_workers_per_backend(
    gateway: Gateway, backends: list[Backend]
) -> None:
    with httpx.Client(trust_env=False, timeout=10, headers=MGMT) as client:
        listed = client.get(f"{gateway.url}/models").json()["models"]
        assert [m["modelName"] for m in listed] == ["echo"]
        [described] = client.get(f"{gateway.url}/models/echo").json()
    assert sorted(described["backends"]) == sorted(b.name for b in backends)
    assert sorted(w["backend"] for w in described["workers"]) == sorted(b.name for b in backends)


def failed_on(url: str, backend: str) -> float:
    """`gateway_backend_requests_total{outcome="failed"}` of one backend, from /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10, trust_env=False).text
    series = f'gateway_backend_requests_total{{backend="{backend}",outcome="failed"}}'
    found = re.findall(rf"^{re.escape(series)} (\S+)$", text, flags=re.MULTILINE)
    return float(found[0]) if found else 0.0


def test_a_backend_killed_under_load_fails_only_what_was_in_flight_on_it(
    gateway: Gateway, backends: list[Backend]
) -> None:
    victim = backends[0]
    failed_before = failed_on(gateway.url, victim.name)

    async def scenario() -> tuple[list[Outcome], float]:
        running = asyncio.ensure_future(load(gateway.url, 6.0))
        await asyncio.sleep(2.0)
        victim.kill()
        killed_at = time.monotonic()
        return await running, killed_at

    outcomes, killed_at = asyncio.run(scenario())
    failed = sorted((o for o in outcomes if o.status != 200), key=lambda o: o.ended)
    sent_to_victim = failed_on(gateway.url, victim.name) - failed_before
    seen_at = failed[0].ended if failed else killed_at
    after = [o for o in outcomes if o.started > seen_at]
    print(
        f"\n{len(outcomes)} requests under load from {CONNECTIONS} connections; {len(failed)} "
        f"failed (statuses {sorted({o.status for o in failed})}), each one the gateway had "
        f"already sent to the killed backend ({sent_to_victim:.0f} counted there); "
        f"{len(after)} sent after the gateway saw it fail, answered by the other backend: "
        f"{sum(o.status == 200 for o in after)}"
    )
    # Only requests already on the killed backend fail: as many as the gateway counts as
    # sent to it without an answer (a request that could not even connect is retried on the
    # other backend, and counts as answered there), at most one per connection, all of them
    # sent before the gateway saw the first failure. Everything after that is answered.
    assert len(failed) == sent_to_victim
    assert len(failed) <= CONNECTIONS
    assert all(o.started < seen_at for o in failed)
    assert len(after) > 0 and all(o.status == 200 for o in after)
    readyz = httpx.get(f"{gateway.url}/readyz", timeout=10, trust_env=False).json()
    assert readyz["backends"][victim.name]["state"] == "down"
    assert readyz["ready"] is True, "every model is still ready on the other backend"


def test_a_registration_while_a_backend_is_down_answers_502_naming_it(
    gateway: Gateway, backends: list[Backend]
) -> None:
    down, up = backends
    answer = httpx.post(
        f"{gateway.url}/models",
        params={"url": "late.mar", "initial_workers": 1, "synchronous": "true"},
        headers=MGMT,
        timeout=120,
        trust_env=False,
    )
    assert answer.status_code == 502, answer.text
    body = answer.json()
    assert body["type"] == "BackendsDisagree"
    assert f"Succeeded on {up.name}" in body["message"]
    assert f"failed on {down.name}" in body["message"]
    registered = httpx.get(f"{up.torchserve.management_url}/models", timeout=10, trust_env=False)
    assert "late" in [m["modelName"] for m in registered.json()["models"]]


def test_a_restarted_backend_gets_the_models_and_traffic_within_10_s(
    gateway: Gateway, backends: list[Backend]
) -> None:
    victim = backends[0]
    victim.restart_empty()  # returns once /ping answers, with no model registered
    pinged_at = time.monotonic()
    before = answered_by_backend(gateway.url).get(victim.name, 0)
    management = victim.torchserve.management_url

    def serves_every_model() -> bool:
        """The gateway registered on it what the other backend serves, from the model
        store, the model registered while it was down included, and its workers are up."""
        try:
            with httpx.Client(trust_env=False, timeout=30) as client:
                listed = client.get(f"{management}/models").json()["models"]
                if sorted(m["modelName"] for m in listed) != ["echo", "late"]:
                    return False
                for name in ("echo", "late"):
                    [described] = client.get(f"{management}/models/{name}").json()
                    if [w["status"] for w in described["workers"]] != ["READY"]:
                        return False
        except httpx.TimeoutException:
            return False  # a loaded machine: ask again
        return True

    def takes_traffic() -> bool:
        with httpx.Client(trust_env=False, timeout=10, headers=INF) as client:
            for _ in range(8):
                answer = client.post(f"{gateway.url}/predictions/echo", content=b"x")
                assert answer.status_code == 200
        return answered_by_backend(gateway.url).get(victim.name, 0) > before

    healthy_at = wait_for(serves_every_model, "the restarted backend to get the models", 120)
    serving_at = wait_for(takes_traffic, "the restarted backend to take traffic", 30)
    print(
        f"\nrestarted backend: models registered and READY {healthy_at - pinged_at:.1f} s after "
        f"/ping answered; took traffic {serving_at - healthy_at:.1f} s after that "
        f"({serving_at - pinged_at:.1f} s after /ping)"
    )
    assert serving_at - healthy_at <= 10.0
    wait_for(lambda: ready(gateway.url), "the gateway ready again")


def test_backends_found_through_a_dns_name(backends: list[Backend]) -> None:
    """TORCHSERVE_BACKENDS_DNS: every address the name resolves to is a backend (here
    `localhost`, as a Kubernetes headless Service names every pod)."""
    other = backends[1]
    s = other.torchserve.settings
    name = f"localhost:{s.torchserve_inference_port}:{s.torchserve_management_port}"
    env = {
        "TORCHSERVE_BACKENDS_DNS": name,
        "GATEWAY_HEALTH_S": str(HEALTH_S),
        "GATEWAY_RESOLVE_S": "1",
        "GATEWAY_INFERENCE_KEYS": INF_KEY,
    }
    with running_gateway(other.torchserve, env=env) as gw:
        wait_for(lambda: ready(gw.url), "the gateway ready over the resolved backend")
        body = httpx.get(f"{gw.url}/readyz", timeout=10, trust_env=False).json()
        assert body["backends"][other.name]["state"] == "healthy"
        answer = httpx.post(
            f"{gw.url}/predictions/echo", content=b"abc", headers=INF, timeout=30, trust_env=False
        )
        assert answer.json() == {"echo_bytes": 3}
