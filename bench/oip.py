"""The Open Inference Protocol rows: the same models through the gateway's `/v2` infer route.

Binary requests as tritonclient sends them (JSON header, `Inference-Header-Content-Length`,
the inputs' raw bytes; outputs asked in binary): one instance per request at the low and the
high concurrency, each next to `/predictions` with the same instance measured back to back,
and 16 instances per request at the low concurrency (instances per second against what
`/predictions` reaches at the high one).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from bench.loadgen import Generator, Target, median_over_rounds
from bench.stack import BenchModel, Stack

MANY = 16  # instances per request in the batched row (the gateway's envelope limit)
PREDICTIONS = "/predictions"


@dataclass(frozen=True)
class OipRow:
    """One configuration: requests/s, instances/s and p50, median over rounds."""

    model: str
    route: str  # "/predictions", "v2 binary N=1", "v2 binary N=16"
    concurrency: int
    requests_per_s: float
    instances_per_s: float
    p50_ms: float
    errors: int


def v2_body(model: BenchModel, count: int) -> tuple[bytes, int]:
    """A binary v2 infer body of `count` copies of `model`'s instance; its JSON's length."""
    if model.entry.task == "image-classification":
        name, datatype, shape = "image", "BYTES", [count]
        raw = (struct.pack("<I", len(model.body)) + model.body) * count
    else:
        values = _flatten(json.loads(model.body))
        instance = list(_shape(json.loads(model.body)))
        name, datatype, shape = "input", "FP32", [count, *instance]
        raw = struct.pack(f"<{len(values)}f", *values) * count
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "shape": shape,
                    "datatype": datatype,
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    return header + raw, len(header)


def v2_target(stack: Stack, model: BenchModel, count: int) -> Target:
    body, header_length = v2_body(model, count)
    return Target(
        f"{stack.gateway.url}/v2/models/{model.name}/infer",
        body,
        "application/octet-stream",
        (("Inference-Header-Content-Length", str(header_length)),),
    )


def oip_round(
    stack: Stack,
    models: Sequence[BenchModel],
    generator: Generator,
    low: int,
    high: int,
    duration_s: float,
    max_requests: int,
) -> list[OipRow]:
    """One round: per model, /predictions and v2 N=1 at `low` and `high`, v2 N=16 at `low`."""
    rows = []
    for model in models:
        plans = [
            (PREDICTIONS, 1, low, stack.target(model, "gateway")),
            ("v2 binary N=1", 1, low, v2_target(stack, model, 1)),
            (PREDICTIONS, 1, high, stack.target(model, "gateway")),
            ("v2 binary N=1", 1, high, v2_target(stack, model, 1)),
            (f"v2 binary N={MANY}", MANY, low, v2_target(stack, model, MANY)),
        ]
        for route, count, concurrency, target in plans:
            result = generator(target, concurrency, duration_s, max_requests)
            rows.append(
                OipRow(
                    model.name,
                    route,
                    concurrency,
                    result.per_second,
                    result.per_second * count,
                    result.p50_ms,
                    result.errors,
                )
            )
    return rows


def warm_up(
    stack: Stack, models: Sequence[BenchModel], generator: Generator, seconds: float
) -> None:
    """A short load on every v2 target: the gateway learns each route and model first."""
    for model in models:
        for count in (1, MANY):
            generator(v2_target(stack, model, count), 4, seconds, 10_000)


def combine(rows: Sequence[OipRow]) -> list[OipRow]:
    """One row per configuration: the median over rounds (errors summed)."""
    return median_over_rounds(
        rows,
        lambda row: (row.model, row.route, row.concurrency),
        ("requests_per_s", "instances_per_s", "p50_ms"),
    )


def markdown(rows: Sequence[OipRow]) -> str:
    lines = [
        "### Open Inference Protocol (v2) through the gateway",
        "",
        "Binary requests as tritonclient sends them, outputs in binary; `/predictions` rows "
        "measured back to back with the same instance. Instances/s: requests/s x instances "
        "per request.",
        "",
        "| model | route | concurrency | req/s | instances/s | p50 | errors |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {row.model} | {row.route} | c{row.concurrency} | {row.requests_per_s:,.0f} "
        f"| {row.instances_per_s:,.0f} | {row.p50_ms:.2f} ms | {row.errors} |"
        for row in rows
    ]
    return "\n".join(lines) + "\n"


def _flatten(value: object) -> list[float]:
    if isinstance(value, list):
        return [item for inner in value for item in _flatten(inner)]
    assert isinstance(value, int | float)
    return [float(value)]


def _shape(value: object) -> tuple[int, ...]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0]
    return tuple(shape)
