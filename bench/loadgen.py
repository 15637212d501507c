"""HTTP load on loopback: wrk (C, with `post.lua`) or, where wrk is absent, a small asyncio one.

Both are closed-loop: `concurrency` connections, each sending its next request when the last
answer arrived, for `duration_s` seconds or `max_requests` answers, whichever comes first.
wrk is the one the figures come from: a Python client at concurrency 32 spends more CPU per
request than the gateway it measures, on the same two cores. The asyncio client is good
enough for `--smoke` (it checks that everything answers, not how fast).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    RowT = TypeVar("RowT", bound=DataclassInstance)
else:
    RowT = TypeVar("RowT")

LUA_SCRIPT = Path(__file__).with_name("post.lua")
_MARKER = "BENCH_JSON "


@dataclass(frozen=True)
class Target:
    """What to POST, where."""

    url: str
    body: bytes
    content_type: str
    # More request headers (the Open Inference Protocol's Inference-Header-Content-Length).
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class LoadResult:
    """One window of load: answers, failures, latency, and the client's own CPU time."""

    requests: int
    errors: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    client_cpu_s: float

    @property
    def per_second(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0


Generator = Callable[[Target, int, float, int], LoadResult]


def wrk_path() -> str | None:
    """wrk's path, or None when it is not installed."""
    return shutil.which("wrk")


def run_wrk(target: Target, concurrency: int, duration_s: float, max_requests: int) -> LoadResult:
    """Run wrk once (one thread: a second would only take a core from the servers).

    Raises RuntimeError when wrk fails or prints no result.
    """
    wrk = wrk_path()
    if wrk is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk), or use --generator python")
    with tempfile.NamedTemporaryFile(prefix="bench-body-", delete=False) as body_file:
        body_file.write(target.body)
    env = {
        **os.environ,
        "BENCH_BODY_FILE": body_file.name,
        "BENCH_CONTENT_TYPE": target.content_type,
        "BENCH_MAX_REQUESTS": str(max_requests),
        "BENCH_HEADERS": "\n".join(f"{name}: {value}" for name, value in target.headers),
    }
    command = [
        wrk,
        "-t1",
        f"-c{concurrency}",
        f"-d{max(1, round(duration_s))}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA_SCRIPT),
        target.url,
    ]
    # wrk's CPU time: a reaped child's times land in our RUSAGE_CHILDREN counters (the
    # servers are children too, but they are not reaped until the end of the run).
    before = _children_cpu_s()
    try:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = proc.communicate(timeout=duration_s + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        cpu = _children_cpu_s() - before
    finally:
        Path(body_file.name).unlink(missing_ok=True)
    return parse_wrk_output(out.decode(), err.decode(), proc.returncode, cpu)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def parse_wrk_output(stdout: str, stderr: str, returncode: int, client_cpu_s: float) -> LoadResult:
    """The LoadResult in the `BENCH_JSON` line that post.lua prints; RuntimeError if none."""
    for line in stdout.splitlines():
        if line.startswith(_MARKER):
            raw = json.loads(line[len(_MARKER) :])
            errors = sum(
                raw[key]
                for key in ("connect_errors", "read_errors", "write_errors", "status_errors")
            )
            return LoadResult(
                requests=int(raw["requests"]),
                errors=int(errors + raw["timeouts"]),
                duration_s=raw["duration_us"] / 1e6,
                p50_ms=raw["p50_us"] / 1e3,
                p99_ms=raw["p99_us"] / 1e3,
                client_cpu_s=client_cpu_s,
            )
    raise RuntimeError(f"wrk exited with {returncode} and no result:\n{stdout}\n{stderr}")


def run_asyncio(
    target: Target, concurrency: int, duration_s: float, max_requests: int
) -> LoadResult:
    """The fallback: raw HTTP/1.1 keep-alive requests from asyncio streams, in this process."""
    started_cpu = time.process_time()
    result = asyncio.run(_asyncio_load(target, concurrency, duration_s, max_requests))
    return LoadResult(
        requests=result.requests,
        errors=result.errors,
        duration_s=result.duration_s,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        client_cpu_s=time.process_time() - started_cpu,
    )


async def _asyncio_load(
    target: Target, concurrency: int, duration_s: float, max_requests: int
) -> LoadResult:
    parts = urlsplit(target.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = (
        f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: {target.content_type}\r\nContent-Length: {len(target.body)}\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in target.headers)
        + "\r\n"
    ).encode()
    request = head + target.body
    latencies: list[float] = []
    errors = 0
    started = time.perf_counter()
    deadline = started + duration_s

    async def connection() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.perf_counter() < deadline and len(latencies) < max_requests:
                sent = time.perf_counter()
                writer.write(request)
                status = await _read_response(reader)
                latencies.append(time.perf_counter() - sent)
                if not 200 <= status < 400:
                    errors += 1
        finally:
            writer.close()

    outcomes = await asyncio.gather(
        *(connection() for _ in range(concurrency)), return_exceptions=True
    )
    errors += sum(isinstance(outcome, BaseException) for outcome in outcomes)
    elapsed = time.perf_counter() - started
    return LoadResult(
        requests=len(latencies),
        errors=errors,
        duration_s=elapsed,
        p50_ms=percentile(latencies, 50) * 1e3,
        p99_ms=percentile(latencies, 99) * 1e3,
        client_cpu_s=0.0,
    )


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one whole response (Content-Length framed, as both servers send); its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank, like wrk's), 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


def median(values: list[float]) -> float:
    """The median, 0.0 for no values."""
    return statistics.median(values) if values else 0.0


def median_over_rounds(
    rows: Sequence[RowT],
    key: Callable[[RowT], Hashable],
    fields: Sequence[str],
    **fixed: object,
) -> list[RowT]:
    """One row per `key`, in the order first seen: each of `fields` the median over the rows
    sharing that key (one per round), `errors` summed, and `fixed` fields set as given."""
    groups: dict[Hashable, list[RowT]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    return [
        dataclasses.replace(
            same[0],
            **{name: median([getattr(row, name) for row in same]) for name in fields},
            errors=sum(getattr(row, "errors") for row in same),  # noqa: B009 (any row type)
            **fixed,
        )
        for same in groups.values()
    ]


def choose_generator(name: str) -> tuple[str, Generator]:
    """`wrk`, `python`, or `auto` (wrk when installed). Raises RuntimeError for wrk if absent."""
    if name == "python" or (name == "auto" and wrk_path() is None):
        return "python (asyncio)", run_asyncio
    if wrk_path() is None:
        raise RuntimeError("wrk is not installed: `apt-get install wrk`, or --generator python")
    return "wrk", run_wrk
