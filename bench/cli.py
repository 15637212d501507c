"""`python -m bench [--smoke]`: one bounded run, interleaved rounds, a table and a chart.

Order of a run: build the archives (project build step) -> load each model in this process
-> start TorchServe with no model and the gateway -> register each model (time to first
answer, worker RSS while loading), then again as `<model>-tsbatch` with TorchServe's own
batching -> a short warm-up of every HTTP configuration -> `rounds` rounds, each going
through every configuration of every model back to back (in-process batch 1 and B;
TorchServe then gateway at the low concurrency; TorchServe, TorchServe batched, gateway at
the high one) -> stop everything -> medians, targets, `results/bench.md`,
`results/bench.png`, `results/bench.json`. Exit status: 0, or 1 when any request failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from bench import oip, pool, text
from bench.inprocess import load_model, measure
from bench.loadgen import Generator, Target, choose_generator
from bench.peers import compare as peers
from bench.peers.rows import PeerRow
from bench.processes import CpuWindow, RssSampler
from bench.report import MIB, Measurement, MemoryFigures, chart, markdown, summarize, targets
from bench.stack import (
    DIRECT_BATCH_DELAY_MS,
    DIRECT_BATCH_SIZE,
    GATEWAY,
    TORCHSERVE,
    TORCHSERVE_BATCHED,
    BenchModel,
    Stack,
    batched_name,
    prepare_models,
    running_stack,
    steady_rss,
)
from handlers.device import threads_per_worker
from handlers.predictor import Predictor
from service.settings import GatewaySettings

logger = logging.getLogger(__name__)

RESULTS_DIR = Path(__file__).with_name("results")
BATCHED_MODEL = "mnist28"
# The in-process batched baseline: the most the gateway sends the model in one request.
INPROCESS_BATCH: int = GatewaySettings.model_fields["gateway_batch_max_items"].default


@dataclass(frozen=True)
class Options:
    """How long and how hard: see `parse_args` for each."""

    rounds: int
    duration_s: float
    inprocess_s: float
    warmup_s: float
    max_requests: int
    low: int
    high: int
    generator: str
    results: Path
    smoke: bool


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the model in-process, TorchServe directly and the gateway.",
    )
    parser.add_argument("--smoke", action="store_true", help="seconds, few requests: CI check")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (medians); default 3")
    parser.add_argument("--duration", type=float, default=4.0, help="s per HTTP window")
    parser.add_argument("--inprocess", type=float, default=2.0, help="s per in-process window")
    # The JVM's JIT compilers are still busy for the first seconds under load (a C2 thread
    # alone took 0.7 ms of CPU per request): measure after they settled.
    parser.add_argument("--warmup", type=float, default=3.0, help="s of warm-up per config")
    parser.add_argument("--max-requests", type=int, default=50_000, help="cap per window")
    parser.add_argument(
        "--concurrency", type=int, nargs=2, default=(1, 32), metavar=("LOW", "HIGH")
    )
    parser.add_argument(
        "--generator",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load generator: wrk, the asyncio fallback, or auto (wrk when installed)",
    )
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="default: bench/results")
    args = parser.parse_args(argv)
    if args.smoke:
        # High concurrency 16: above GATEWAY_BATCH_IN_FLIGHT (3) by enough that predictions
        # queue and go upstream together, so the smoke run shows the gateway batching.
        return Options(1, 1.0, 0.2, 0.0, 80, 1, 16, args.generator, args.results, True)
    if args.rounds < 1 or args.duration <= 0 or args.max_requests < 1:
        parser.error("--rounds, --duration and --max-requests must be positive")
    low, high = args.concurrency
    return Options(
        rounds=args.rounds,
        duration_s=args.duration,
        inprocess_s=args.inprocess,
        warmup_s=args.warmup,
        max_requests=args.max_requests,
        low=low,
        high=high,
        generator=args.generator,
        results=args.results,
        smoke=False,
    )


def http_window(
    stack: Stack,
    model: BenchModel,
    path: str,
    concurrency: int,
    round_index: int,
    workers: dict[str, list[int]],
    generator: Generator,
    options: Options,
) -> Measurement:
    """One window of load on TorchServe directly or through the gateway, with CPU per role."""
    target: Target = stack.target(model, path)
    served_as = batched_name(model.name) if path == TORCHSERVE_BATCHED else model.name
    window = CpuWindow(lambda: stack.roles(served_as, workers))
    # The gateway's own count of what it sent upstream, read around its window only: the
    # difference is this window's batching (no warm-up, no other concurrency). A model with
    # no request yet, or a gateway without the metric, counts (0, 0).
    through_gateway = path == GATEWAY
    nothing = (0.0, 0.0)
    before = stack.upstream_totals().get(model.name, nothing) if through_gateway else nothing
    window.start()
    result = generator(target, concurrency, options.duration_s, options.max_requests)
    spent = window.stop()
    after = stack.upstream_totals().get(model.name, nothing) if through_gateway else nothing
    answered = max(1, result.requests)
    cpu_ms = {role: seconds * 1e3 / answered for role, seconds in spent.items()}
    cpu_ms["client"] = result.client_cpu_s * 1e3 / answered
    if path != GATEWAY:
        del cpu_ms["gateway"]  # idle: it is not on this path
    sent = after[1] - before[1]  # 0: not through the gateway, or its metric is absent
    upstream_items = (after[0] - before[0]) / sent if sent > 0 else 0.0
    return Measurement(
        model.name,
        path,
        concurrency,
        round_index,
        result.per_second,
        result.p50_ms,
        result.p99_ms,
        result.errors,
        result.requests,
        cpu_ms,
        upstream_items,
    )


def inprocess_window(
    model: BenchModel, predictor: Predictor, batch: int, round_index: int, options: Options
) -> Measurement:
    result = measure(predictor, batch, options.inprocess_s, options.max_requests)
    samples = max(1, result.batch * result.passes)
    return Measurement(
        model.name,
        "in-process",
        batch,
        round_index,
        result.per_second,
        result.p50_ms,
        result.p99_ms,
        0,
        samples,
        {"worker": result.cpu_s * 1e3 / samples},
    )


def serving_label(described: dict[str, object]) -> str:
    workers = int(str(described.get("minWorkers", 1)))
    return (
        f"batch {described.get('batchSize')}, {described.get('maxBatchDelay')} ms, "
        f"{workers} worker x {threads_per_worker(workers)} threads"
    )


def run(options: Options) -> tuple[str, int]:
    """The whole benchmark; returns the markdown report and the number of failed requests."""
    generator_name, generator = choose_generator(options.generator)
    measurements: list[Measurement] = []
    oip_rows: list[oip.OipRow] = []
    memory: list[MemoryFigures] = []
    text_rows: list[text.TextRow] = []
    pool_rows: list[pool.PoolRow] = []
    peer_rows: list[PeerRow] = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        root = Path(tmp)
        models = prepare_models(root / "work", root / "store")
        predictors = {
            m.name: load_model(
                m.entry.handler_settings(),
                m.base_dir,
                threads_per_worker(m.entry.serving.workers or 1),
            )
            for m in models
        }
        batches = {m.name: max(INPROCESS_BATCH, m.entry.serving.batch_size) for m in models}
        text_model, text_predictor = text.prepare_text_model(root / "store")
        reviews = text.reviews()
        # A short run dir: the workers' Unix socket paths must fit in 107 bytes.
        with running_stack(root / "store", root / "run") as stack:
            loads = {m.name: stack.register(m) for m in models}
            workers = {name: list(load.worker_pids) for name, load in loads.items()}
            for model in models:
                stack.register_batched(model)
                workers[batched_name(model.name)] = stack.worker_pids(batched_name(model.name))
            stack.register(text_model)
            # The servers' pids, found once: walking the process table at every sample
            # would take CPU from the servers being measured.
            server_pids = stack.all_pids()
            with RssSampler(lambda: server_pids, 0.1) as run_sampler:
                if options.warmup_s > 0:
                    for model in models:
                        for path in (TORCHSERVE, TORCHSERVE_BATCHED, GATEWAY):
                            target = stack.target(model, path)
                            generator(target, options.high, options.warmup_s, options.max_requests)
                    oip.warm_up(stack, models, generator, options.warmup_s)
                for round_index in range(options.rounds):
                    logger.info("round %d of %d", round_index + 1, options.rounds)
                    for model in models:
                        for batch in sorted({1, batches[model.name]}):
                            measurements.append(
                                inprocess_window(
                                    model, predictors[model.name], batch, round_index, options
                                )
                            )
                        for concurrency in (options.low, options.high):
                            # TorchServe's batching only at the high concurrency: at the
                            # low one a lone request just waits its delay.
                            paths: tuple[str, ...] = (TORCHSERVE, GATEWAY)
                            if concurrency == options.high:
                                paths = (TORCHSERVE, TORCHSERVE_BATCHED, GATEWAY)
                            for path in paths:
                                measurements.append(
                                    http_window(
                                        stack,
                                        model,
                                        path,
                                        concurrency,
                                        round_index,
                                        workers,
                                        generator,
                                        options,
                                    )
                                )
                    text_rows += text_round(stack, text_predictor, reviews, options)
                    oip_rows += oip.oip_round(
                        stack,
                        models,
                        generator,
                        options.low,
                        options.high,
                        options.duration_s,
                        options.max_requests,
                    )
            # The gateway over a second TorchServe too, after the main rounds (bench/pool.py).
            pool_rows = pool.measure(
                stack,
                models[0],
                root / "run2",
                generator,
                rounds=options.rounds,
                concurrency=options.high,
                duration_s=options.duration_s,
                warmup_s=options.warmup_s,
                max_requests=options.max_requests,
            )
            # The peers (FastAPI, LitServe, stock TorchServe) and the reference row (the
            # project's archive on TorchServe's batching) next to the project on mnist28,
            # after the main rounds too (bench/peers/).
            peer_rows = peers.measure(
                stack,
                next(m for m in models if m.name == BATCHED_MODEL),
                root / "work" / peers.WEIGHTS_FILE,
                threads_per_worker(1),
                root / "peers",
                generator,
                rounds=options.rounds,
                duration_s=options.duration_s,
                warmup_s=options.warmup_s,
                max_requests=options.max_requests,
            )
            peaks = run_sampler.peaks()
            for model in models:
                load = loads[model.name]
                memory.append(
                    MemoryFigures(
                        model.name,
                        load.first_answer_s,
                        load.peak_rss_loading,
                        steady_rss(load.worker_pids),
                        serving_label(stack.describe(model.name)),
                    )
                )
            gateway_peak = peaks.get(stack.gateway.pid or -1, 0)
            frontend_peak = peaks.get(stack.torchserve.pid or -1, 0)
            worker_peaks = {
                name: max((peaks.get(pid, 0) for pid in pids), default=0)
                for name, pids in workers.items()
            }
    summary = summarize(measurements)
    checks = targets(
        measurements,
        memory,
        [(m.name, batches[m.name]) for m in models],
        options.low,
        options.high,
        BATCHED_MODEL,
    )
    notes = [
        f"{options.rounds} round(s); HTTP windows of {options.duration_s:g} s "
        f"(at most {options.max_requests} requests) by {generator_name}, on loopback; "
        f"in-process windows of {options.inprocess_s:g} s, on as many torch threads as a "
        f"worker uses ({os.cpu_count()} cores here).",
        "In-process rows: req/s is samples/s, latency is one forward pass of the batch, "
        "and the worker column is this process's CPU per sample.",
        "Ratios are taken within each round (both sides back to back), then the median.",
        "Paths: torchserve = TorchServe directly with the archive's config, batch size and "
        "delay explicit as the launcher registers it; torchserve-batched = the same archive "
        "registered again with "
        f"TorchServe's own batching ({DIRECT_BATCH_SIZE}, {DIRECT_BATCH_DELAY_MS} ms) at "
        f"c{options.high} only, the best direct baseline; gateway = through the gateway, "
        "which batches what queues while the model is busy. The gateway throughput target "
        "divides by the faster direct path in each round.",
        f"Peak RSS over the run: gateway {gateway_peak / MIB:.0f} MiB, TorchServe frontend "
        f"{frontend_peak / MIB:.0f} MiB, workers "
        + ", ".join(f"{name} {peak / MIB:.0f} MiB" for name, peak in worker_peaks.items())
        + ".",
    ]
    text_summary = text.combine(text_rows)
    report = markdown(summary, memory, checks, notes) + "\n" + text.markdown(text_summary, reviews)
    report += "\n" + oip.markdown(oip.combine(oip_rows))
    report += "\n" + pool.markdown(pool.combine(pool_rows), os.cpu_count())
    report += "\n" + peers.markdown(peer_rows)
    options.results.mkdir(parents=True, exist_ok=True)
    (options.results / "bench.md").write_text(report)
    chart(summary, options.results / "bench.png")
    (options.results / "bench.json").write_text(
        json.dumps(
            {
                "measurements": [asdict(m) for m in measurements],
                "memory": [asdict(m) for m in memory],
                "targets": [{**asdict(c), "holds": c.holds} for c in checks],
                "oip": [asdict(row) for row in oip.combine(oip_rows)],
                "text": [asdict(row) for row in text_summary],
                "pool": [asdict(row) for row in pool.combine(pool_rows)],
                "peers": peers.as_json(peer_rows),
            },
            indent=1,
        )
    )
    errors = sum(m.errors for m in measurements) + sum(r.errors for r in text_summary)
    errors += sum(r.errors for r in pool_rows) + sum(r.errors for r in peer_rows)
    return report, errors + sum(r.errors for r in oip_rows)


def text_round(
    stack: Stack, predictor: Predictor, reviews: list[str], options: Options
) -> list[text.TextRow]:
    """One round of the variable-length text row: in-process b1 and b16, gateway low/high."""
    rows = [
        text.inprocess(predictor, reviews, batch, options.inprocess_s, options.max_requests)
        for batch in (1, INPROCESS_BATCH)
    ]
    rows += [
        text.through_gateway(stack, reviews, load, options.duration_s, options.max_requests)
        for load in (options.low, options.high)
    ]
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its table; the exit status is 1 if any request failed."""
    options = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    started = time.perf_counter()
    report, errors = run(options)
    print(report)
    print(
        f"Written to {options.results}/bench.md, bench.png, bench.json "
        f"in {time.perf_counter() - started:.0f} s.",
        flush=True,
    )
    if errors:
        print(f"{errors} request(s) failed", file=sys.stderr)
        return 1
    return 0
