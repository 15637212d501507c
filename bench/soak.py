"""`make soak` (`python -m bench.soak`): the stack under steady load for minutes, then a report.

The digits example (built by the project's build step into a temp store) is served by a real
TorchServe behind the real gateway (`bench.stack`), and predictions are sent through the
gateway at a steady rate: by default 80% of the gateway's throughput the last `make bench`
measured (`bench/results/bench.json`: digits through the gateway at its highest
concurrency), or, without that file, of what a short closed-loop burst measures now.
The load is open-loop: request i is due at start + i / rate, over `CONNECTIONS` keep-alive
connections, whatever the previous answers' latency, as steady traffic would be.

Every interval (a minute; shorter for runs under four minutes) the run records answers by
status, p50 and p99 latency, and the RSS and open file descriptors of each server process
(the gateway, TorchServe's JVM, each worker). The report (`bench.soak_report`) gives their
growth from the first interval to the last. Exit status: 0, or 1 when any request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from bench.loadgen import Target, _read_response, percentile, run_asyncio
from bench.soak_report import Interval, SoakResult, chart, markdown
from bench.stack import GATEWAY, BenchModel, Stack, prepare_models, running_stack

logger = logging.getLogger(__name__)

RESULTS_DIR = Path(__file__).with_name("results")
DEFAULT_MINUTES = 10.0
LOAD_FRACTION = 0.8
CONNECTIONS = 16
PROBE_S = 5.0
PROBE_CONCURRENCY = 16
# Fallback when neither the bench's figures nor a probe give a rate.
MIN_RATE = 5.0


def rate_from_bench(results: Path, model: str = "digits") -> float | None:
    """The gateway's measured throughput for `model` at its highest concurrency (median over
    rounds) in `results/bench.json`, or None when absent or unreadable."""
    try:
        measurements = json.loads((results / "bench.json").read_text())["measurements"]
        rows = [m for m in measurements if m["model"] == model and m["path"] == GATEWAY]
        top = max(int(m["load"]) for m in rows)
        rates = sorted(float(m["per_second"]) for m in rows if int(m["load"]) == top)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return rates[len(rates) // 2] if rates else None


@dataclass
class Sent:
    """One request: when it left (seconds from the start), its latency and status (0: the
    connection failed)."""

    at_s: float
    latency_s: float
    status: int


@dataclass
class Load:
    target: Target
    rate: float
    duration_s: float
    sent: list[Sent] = field(default_factory=list)
    # Set once the last sample is taken: the connections stay open until then, so the last
    # interval's file descriptors are counted under load like the others.
    release: asyncio.Event = field(default_factory=asyncio.Event)


async def steady_load(load: Load) -> None:
    """Send `load.rate` requests per second for `load.duration_s` over CONNECTIONS
    connections; request i is due at i / rate (a late connection catches up at once)."""
    parts = urlsplit(load.target.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: {load.target.content_type}\r\n"
        f"Content-Length: {len(load.target.body)}\r\n\r\n"
    ).encode() + load.target.body
    total = int(load.rate * load.duration_s)
    start = time.perf_counter()

    async def connection(first: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for index in range(first, total, CONNECTIONS):
                due = start + index / load.rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent = time.perf_counter()
                try:
                    writer.write(request)
                    status = await _read_response(reader)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    status = 0
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                load.sent.append(Sent(sent - start, time.perf_counter() - sent, status))
            await load.release.wait()
        finally:
            writer.close()

    await asyncio.gather(*(connection(i) for i in range(CONNECTIONS)))


def process_roles(stack: Stack) -> dict[str, int]:
    """Each server process by name: gateway, frontend (the JVM), worker[-N]."""
    roles: dict[str, int] = {}
    if stack.gateway.pid:
        roles["gateway"] = stack.gateway.pid
    java = stack.torchserve.pid
    if java:
        roles["frontend"] = java
        workers = [p for p in stack.all_pids() if p not in (java, stack.gateway.pid)]
        for index, pid in enumerate(sorted(workers)):
            roles["worker" if len(workers) == 1 else f"worker-{index}"] = pid
    return roles


def sample(roles: dict[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """(RSS bytes, open file descriptors) of each role now; a gone process reads 0."""
    rss: dict[str, int] = {}
    fds: dict[str, int] = {}
    for role, pid in roles.items():
        try:
            process = psutil.Process(pid)
            rss[role] = process.memory_info().rss
            fds[role] = process.num_fds()
        except psutil.Error:
            rss[role] = fds[role] = 0
    return rss, fds


async def soak(
    stack: Stack, target: Target, rate: float, duration_s: float, interval_s: float
) -> tuple[list[Interval], list[Sent]]:
    """Run the load while sampling the processes every `interval_s`."""
    roles = process_roles(stack)
    load = Load(target, rate, duration_s)
    samples: list[tuple[dict[str, int], dict[str, int]]] = []
    running = asyncio.ensure_future(steady_load(load))
    start = time.perf_counter()
    count = max(1, round(duration_s / interval_s))
    for index in range(1, count + 1):
        await asyncio.sleep(max(0.0, start + index * interval_s - time.perf_counter()))
        samples.append(await asyncio.to_thread(sample, roles))
    load.release.set()
    await running
    intervals = []
    for index, (rss, fds) in enumerate(samples):
        low, high = index * interval_s, (index + 1) * interval_s
        inside = [
            s for s in load.sent if low <= s.at_s < high or (index == count - 1 and s.at_s >= high)
        ]
        latencies = [s.latency_s for s in inside if s.status == 200]
        intervals.append(
            Interval(
                start_s=low,
                requests=len(inside),
                statuses=dict(Counter(str(s.status) for s in inside)),
                p50_ms=percentile(latencies, 50) * 1e3,
                p99_ms=percentile(latencies, 99) * 1e3,
                rss=rss,
                fds=fds,
            )
        )
    return intervals, load.sent


def interval_for(duration_s: float) -> float:
    """A minute, or a quarter of a run shorter than four minutes."""
    return 60.0 if duration_s >= 240 else duration_s / 4


def choose_rate(
    stack: Stack, target: Target, results: Path, rate: float | None
) -> tuple[float, str]:
    if rate is not None:
        return rate, "given (--rate)"
    measured = rate_from_bench(results)
    if measured is not None:
        return LOAD_FRACTION * measured, f"80% of {measured:,.0f}/s (bench/results/bench.json)"
    probe = run_asyncio(target, PROBE_CONCURRENCY, PROBE_S, 1_000_000)
    measured = probe.per_second
    return max(MIN_RATE, LOAD_FRACTION * measured), (
        f"80% of {measured:,.0f}/s (a {PROBE_S:.0f} s probe at concurrency "
        f"{PROBE_CONCURRENCY}; no bench/results/bench.json)"
    )


def run(duration_s: float, rate: float | None, results: Path, out: Path) -> SoakResult:
    with tempfile.TemporaryDirectory(prefix="soak-") as work:
        work_dir = Path(work)
        store = work_dir / "store"
        store.mkdir()
        models: list[BenchModel] = prepare_models(work_dir / "spec", store)
        digits = next(m for m in models if m.name == "digits")
        with running_stack(store, work_dir / "run") as stack:
            stack.register(digits)
            target = stack.target(digits, GATEWAY)
            chosen, why = choose_rate(stack, target, results, rate)
            logger.info("soak: %.0f s at %.1f requests/s (%s)", duration_s, chosen, why)
            interval_s = interval_for(duration_s)
            intervals, sent = asyncio.run(soak(stack, target, chosen, duration_s, interval_s))
    result = SoakResult(
        model="digits",
        duration_s=duration_s,
        rate=chosen,
        rate_source=why,
        interval_s=interval_s,
        requests=len(sent),
        statuses=dict(Counter(str(s.status) for s in sent)),
        intervals=intervals,
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.md").write_text(markdown(result))
    chart(result, out / "soak.png")
    (out / "soak.json").write_text(json.dumps(asdict(result), indent=1))
    return result


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n")[0]
    )
    default_minutes = float(os.environ.get("SOAK_MINUTES", DEFAULT_MINUTES))
    parser.add_argument(
        "--minutes",
        type=float,
        default=default_minutes,
        help="how long (default: SOAK_MINUTES, else 10)",
    )
    parser.add_argument("--seconds", type=float, help="how long, in seconds (overrides --minutes)")
    parser.add_argument("--rate", type=float, help="requests per second (default: 80%% of bench)")
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS_DIR,
        help="where bench.json is read from (default: bench/results)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS_DIR,
        help="where soak.md, soak.png, soak.json go (default: bench/results)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    duration_s = args.seconds if args.seconds is not None else args.minutes * 60
    result = run(duration_s, args.rate, args.results, args.out)
    print(markdown(result))
    print(f"Written to {args.out}/soak.md, soak.png, soak.json")
    return 0 if result.failed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
