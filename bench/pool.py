"""The two-backend row: the gateway over one TorchServe and over two, on this machine.

A second TorchServe (the same archive, registered the way the launcher registers it) and a
second gateway naming both (`TORCHSERVE_BACKENDS`) start after the main rounds; then each
round measures the model through the stack's own gateway (one backend) and through the
pooled one (two), back to back at the high concurrency. CPU per request is summed over every
server process of each path (gateway, JVMs, workers). On a machine with two cores the two
TorchServes share the same cores: the row shows what the extra processes cost, not a
speed-up; on separate machines (or pods) each backend brings its own cores.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.loadgen import Generator, Target, median_over_rounds
from bench.processes import CpuWindow, python_children
from bench.stack import GATEWAY, BenchModel, Stack
from launcher.gateway import Gateway
from launcher.torchserve import TorchServe
from tests.support.servers import running_gateway, running_torchserve

READY_TIMEOUT_S = 120.0
ONE, TWO = "1 backend", "2 backends"


@dataclass(frozen=True)
class PoolRow:
    """One configuration: median over rounds (errors summed)."""

    model: str
    backends: str  # ONE or TWO
    concurrency: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    server_cpu_ms: float  # per request, every server process of the path together
    errors: int


@dataclass
class Pooled:
    """The second TorchServe and the gateway over both."""

    second: TorchServe
    gateway: Gateway


def _backend(torchserve: TorchServe) -> str:
    s = torchserve.settings
    return f"127.0.0.1:{s.torchserve_inference_port}:{s.torchserve_management_port}"


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=5.0, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def running_pool(stack: Stack, model: BenchModel, run_dir: Path) -> Iterator[Pooled]:
    """A second TorchServe serving `model` and a gateway over both; stopped on exit."""
    store = stack.torchserve.settings.model_store
    with (
        running_torchserve(store, run_dir, models=[f"{model.name}.mar"]) as second,
        running_gateway(
            stack.torchserve,
            env={"TORCHSERVE_BACKENDS": f"{_backend(stack.torchserve)},{_backend(second)}"},
            run_dir=run_dir,
        ) as gateway,
    ):
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _ready(gateway.url):
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway over two backends never became ready")
            time.sleep(0.2)
        yield Pooled(second, gateway)


def _servers(*pids: int | None) -> list[int]:
    """The given gateway and JVM pids and every Python process below the JVMs."""
    found = [pid for pid in pids if pid]
    return found + [child for pid in found for child in python_children(pid)]


def pool_round(
    stack: Stack,
    pooled: Pooled,
    model: BenchModel,
    generator: Generator,
    concurrency: int,
    duration_s: float,
    max_requests: int,
) -> list[PoolRow]:
    """One window through one backend, then one through two, back to back."""
    single = stack.target(model, GATEWAY)
    paths = {
        ONE: (single, [stack.gateway.pid, stack.torchserve.pid]),
        TWO: (
            Target(
                f"{pooled.gateway.url}/predictions/{model.name}", model.body, model.content_type
            ),
            [pooled.gateway.pid, stack.torchserve.pid, pooled.second.pid],
        ),
    }
    rows = []
    for label, (target, roots) in paths.items():
        pids = _servers(*roots)  # found once: no process-table walk during the window
        window = CpuWindow(functools.partial(dict, servers=pids))
        window.start()
        result = generator(target, concurrency, duration_s, max_requests)
        spent = window.stop()
        answered = max(1, result.requests)
        rows.append(
            PoolRow(
                model.name,
                label,
                concurrency,
                result.per_second,
                result.p50_ms,
                result.p99_ms,
                spent["servers"] * 1e3 / answered,
                result.errors,
            )
        )
    return rows


def combine(rows: Sequence[PoolRow]) -> list[PoolRow]:
    """One row per configuration: the median over rounds (errors summed)."""
    return median_over_rounds(
        rows,
        lambda row: (row.model, row.backends, row.concurrency),
        ("requests_per_s", "p50_ms", "p99_ms", "server_cpu_ms"),
    )


def markdown(rows: Sequence[PoolRow], cores: int | None) -> str:
    lines = [
        "### The gateway over one TorchServe and over two (TORCHSERVE_BACKENDS)",
        "",
        f"Both TorchServes on this machine ({cores} cores): they share its cores, so this "
        "shows what the second backend's processes cost, not a speed-up. Server CPU: "
        "gateway, JVMs and workers of the path, per request.",
        "",
        "| model | backends | concurrency | req/s | p50 | p99 | server CPU/request | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {row.model} | {row.backends} | c{row.concurrency} | {row.requests_per_s:,.0f} "
        f"| {row.p50_ms:.2f} ms | {row.p99_ms:.2f} ms | {row.server_cpu_ms:.2f} ms "
        f"| {row.errors} |"
        for row in rows
    ]
    return "\n".join(lines) + "\n"


def measure(
    stack: Stack,
    model: BenchModel,
    run_dir: Path,
    generator: Generator,
    *,
    rounds: int,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    max_requests: int,
) -> list[PoolRow]:
    """Start the second backend and the pooled gateway, warm both paths up, run `rounds`
    rounds, stop them; the rows of every round."""
    rows: list[PoolRow] = []
    with running_pool(stack, model, run_dir) as pooled:
        if warmup_s > 0:
            pool_round(stack, pooled, model, generator, concurrency, warmup_s, max_requests)
        for _ in range(rounds):
            rows += pool_round(
                stack, pooled, model, generator, concurrency, duration_s, max_requests
            )
    return rows
