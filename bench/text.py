"""The variable-length text row: tokens per second for the `sentiment` example (raw text).

Reviews of 1 to about 17 tokens (examples/text's held-out set), the same ones everywhere:
**in-process**, the handler's whole path (`Predictor.predict`: tokenise, pad to the longest
with the lengths passed, forward, rank) on batches of 1 and of 16; and **through the
gateway**, at concurrency 1 and 32, each connection sending the reviews in turn. Tokens per
second counts the tokens of the answered reviews. The gateway side is driven by a small
asyncio client (wrk sends one body), so its c32 figure includes a Python client's CPU on the
same cores.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from archive.build import build_models
from archive.spec import DEFAULT_SPEC, load_spec
from bench.loadgen import _read_response, median_over_rounds, percentile
from bench.stack import BenchModel, Stack
from handlers.predictor import Predictor, load_predictor
from handlers.tasks.text import tokenize

TEXT_MODEL = "sentiment"
REVIEWS = 64


@dataclass(frozen=True)
class TextRow:
    """One configuration of the text row: tokens/s and requests/s, median over rounds."""

    path: str  # "in-process" or "gateway"
    load: str  # "b1", "b16", "c1", "c32"
    tokens_per_s: float
    requests_per_s: float
    p50_ms: float
    errors: int


def reviews(count: int = REVIEWS) -> list[str]:
    """Held-out reviews of examples/text, of varied lengths."""
    import sys

    sys.path.insert(0, str(DEFAULT_SPEC.parent.parent / "examples" / "text"))
    try:
        from data import load_split  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    texts: list[str] = load_split().test_texts[:count]
    return texts


def prepare_text_model(store: Path) -> tuple[BenchModel, Predictor]:
    """Build the `sentiment` archive into `store` (training it first if need be); the model
    loaded in this process as the worker loads it."""
    build_models(DEFAULT_SPEC, store, [TEXT_MODEL], progress=lambda _: None)
    (entry,) = load_spec(DEFAULT_SPEC).select([TEXT_MODEL])
    sample = reviews(1)[0].encode()
    model = BenchModel(entry, DEFAULT_SPEC.parent, sample, "text/plain")
    return model, load_predictor(entry.handler_settings(), DEFAULT_SPEC.parent, "cpu")


def inprocess(
    predictor: Predictor, texts: Sequence[str], batch: int, duration_s: float, max_passes: int
) -> TextRow:
    """Batches of `batch` reviews in turn through the handler's whole path, for `duration_s`."""
    batches = itertools.cycle(
        [list(texts[i : i + batch]) for i in range(0, len(texts) - batch + 1, batch)]
    )
    predictor.predict(list(texts[:batch]))  # warm
    latencies: list[float] = []
    tokens = answered = 0
    started = time.perf_counter()
    while len(latencies) < max_passes and time.perf_counter() - started < duration_s:
        chunk = next(batches)
        begun = time.perf_counter()
        predictor.predict(chunk)
        latencies.append(time.perf_counter() - begun)
        tokens += sum(len(tokenize(text)) for text in chunk)
        answered += len(chunk)
    elapsed = time.perf_counter() - started
    return TextRow(
        "in-process",
        f"b{batch}",
        tokens / elapsed,
        answered / elapsed,
        percentile(latencies, 50) * 1e3,
        0,
    )


def through_gateway(
    stack: Stack, texts: Sequence[str], concurrency: int, duration_s: float, max_requests: int
) -> TextRow:
    """`concurrency` keep-alive connections sending the reviews in turn, for `duration_s`."""
    url = f"{stack.gateway.url}/predictions/{TEXT_MODEL}"
    return asyncio.run(_load(url, texts, concurrency, duration_s, max_requests))


async def _load(
    url: str, texts: Sequence[str], concurrency: int, duration_s: float, max_requests: int
) -> TextRow:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    requests = []
    for text in texts:
        body = text.encode()
        head = (
            f"POST {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        requests.append((head + body, len(tokenize(text))))
    latencies: list[float] = []
    tokens = errors = 0
    started = time.perf_counter()
    deadline = started + duration_s

    async def connection(offset: int) -> None:
        nonlocal tokens, errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for request, count in itertools.islice(
                itertools.cycle(requests), offset, None
            ):  # each connection starts at another review
                if time.perf_counter() >= deadline or len(latencies) >= max_requests:
                    break
                sent = time.perf_counter()
                writer.write(request)
                status = await _read_response(reader)
                latencies.append(time.perf_counter() - sent)
                if status == 200:
                    tokens += count
                else:
                    errors += 1
        finally:
            writer.close()

    outcomes = await asyncio.gather(
        *(connection(i) for i in range(concurrency)), return_exceptions=True
    )
    errors += sum(isinstance(outcome, BaseException) for outcome in outcomes)
    elapsed = time.perf_counter() - started
    return TextRow(
        "gateway",
        f"c{concurrency}",
        tokens / elapsed,
        len(latencies) / elapsed,
        percentile(latencies, 50) * 1e3,
        errors,
    )


def combine(rows: Sequence[TextRow]) -> list[TextRow]:
    """One row per configuration: the median over rounds (errors summed)."""
    return median_over_rounds(
        rows,
        lambda row: (row.path, row.load),
        ("tokens_per_s", "requests_per_s", "p50_ms"),
    )


def markdown(rows: Sequence[TextRow], texts: Sequence[str]) -> str:
    lengths = [len(tokenize(text)) for text in texts]
    lines = [
        f"### Variable-length text: `{TEXT_MODEL}` from raw text",
        "",
        f"{len(texts)} reviews of {min(lengths)}-{max(lengths)} tokens (mean "
        f"{sum(lengths) / len(lengths):.1f}), padded per call with their lengths passed. "
        "In-process: the handler's whole path (tokenise, pad, forward, rank) on batches of b "
        "reviews; gateway: c connections sending the reviews in turn (a Python client).",
        "",
        "| path | load | tokens/s | reviews/s | p50 | errors |",
        "|---|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {row.path} | {row.load} | {row.tokens_per_s:,.0f} | {row.requests_per_s:,.0f} "
        f"| {row.p50_ms:.2f} ms | {row.errors} |"
        for row in rows
    ]
    return "\n".join(lines) + "\n"
