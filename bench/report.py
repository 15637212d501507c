"""Turn the rounds into figures: medians, ratios against issue 7's targets, table and chart.

Every figure is the median over rounds. Each ratio is computed within a round (its two sides
ran back to back, under the same neighbours' load) and the median of those is reported.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

MIB = 1024 * 1024
ROLES = ("gateway", "frontend", "worker", "client")


@dataclass(frozen=True)
class Measurement:
    """One window of one configuration in one round.

    `path` is "in-process", "torchserve", "torchserve-batched" or "gateway"; `load` is the
    batch size in-process, the concurrency otherwise. `per_second` counts samples in-process,
    answers otherwise. `cpu_ms` is CPU milliseconds per request (per sample in-process) for
    each role. `upstream_items`: through the gateway, predictions per request it sent
    TorchServe in this window (its batching); 0 elsewhere.
    """

    model: str
    path: str
    load: int
    round: int
    per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    cpu_ms: dict[str, float] = field(default_factory=dict)
    upstream_items: float = 0.0

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.model, self.path, self.load)


@dataclass(frozen=True)
class MemoryFigures:
    """Per model: registering to first answer, and its worker's RSS while loading vs steady."""

    model: str
    first_answer_s: float
    peak_rss_loading: int
    steady_rss: int
    serving: str  # e.g. "batch 8, 1 ms, 1 worker x 2 threads"

    @property
    def ratio(self) -> float:
        return self.peak_rss_loading / self.steady_rss if self.steady_rss else float("nan")


@dataclass(frozen=True)
class Target:
    """One of issue 7's targets, measured."""

    name: str
    model: str
    value: float
    limit: float
    unit: str
    at_least: bool
    applies: bool = True  # False: shown for comparison, not one of the targets

    @property
    def holds(self) -> bool:
        return self.value >= self.limit if self.at_least else self.value <= self.limit


@dataclass(frozen=True)
class Summary:
    """The medians per configuration, in first-seen order."""

    rows: list[Measurement]

    def get(self, model: str, path: str, load: int) -> Measurement | None:
        for row in self.rows:
            if row.key == (model, path, load):
                return row
        return None


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def summarize(measurements: Sequence[Measurement]) -> Summary:
    """One row per configuration: medians of every figure, errors and requests summed."""
    groups: dict[tuple[str, str, int], list[Measurement]] = {}
    for item in measurements:
        groups.setdefault(item.key, []).append(item)
    rows = []
    for (model, path, load), items in groups.items():
        roles = sorted({role for item in items for role in item.cpu_ms})
        rows.append(
            Measurement(
                model=model,
                path=path,
                load=load,
                round=len(items),
                per_second=_median([i.per_second for i in items]),
                p50_ms=_median([i.p50_ms for i in items]),
                p99_ms=_median([i.p99_ms for i in items]),
                errors=sum(i.errors for i in items),
                requests=sum(i.requests for i in items),
                cpu_ms={r: _median([i.cpu_ms.get(r, 0.0) for i in items]) for r in roles},
                upstream_items=_median([i.upstream_items for i in items]),
            )
        )
    return Summary(rows)


def _by_round(
    measurements: Sequence[Measurement],
) -> list[dict[tuple[str, str, int], Measurement]]:
    """Each round's measurements, by configuration."""
    by_round: dict[int, dict[tuple[str, str, int], Measurement]] = {}
    for item in measurements:
        by_round.setdefault(item.round, {})[item.key] = item
    return list(by_round.values())


def per_round_ratio(
    measurements: Sequence[Measurement],
    first: tuple[str, str, int],
    second: tuple[str, str, int],
    combine: Callable[[Measurement, Measurement], float],
) -> float | None:
    """The median over rounds of `combine(first, second)`; None when a side is missing."""
    values = [
        combine(found[first], found[second])
        for found in _by_round(measurements)
        if first in found and second in found
    ]
    return _median(values) if values else None


def best_direct_ratio(
    measurements: Sequence[Measurement],
    gateway: tuple[str, str, int],
    direct: Sequence[tuple[str, str, int]],
) -> tuple[float, str] | None:
    """The median over rounds of the gateway's req/s over the fastest `direct` row that ran
    in the same round, and which path that was ("torchserve-batched", or "torchserve-batched
    in 2 of 3 rounds, torchserve in 1" when rounds differ). None when no round has the
    gateway row and a direct one.
    """
    ratios: list[float] = []
    wins: dict[str, int] = {}
    for found in _by_round(measurements):
        sides = [found[key] for key in direct if key in found]
        if gateway not in found or not sides:
            continue
        fastest = max(sides, key=lambda row: row.per_second)  # the first of equals
        ratios.append(found[gateway].per_second / fastest.per_second)
        wins[fastest.path] = wins.get(fastest.path, 0) + 1
    if not ratios:
        return None
    ranked = sorted(wins.items(), key=lambda win: -win[1])
    if len(ranked) == 1:
        return _median(ratios), ranked[0][0]
    counted = [f"{path} in {count}" for path, count in ranked]
    return _median(ratios), f"{counted[0]} of {len(ratios)} rounds, " + ", ".join(counted[1:])


def targets(
    measurements: Sequence[Measurement],
    memory: Sequence[MemoryFigures],
    models: Sequence[tuple[str, int]],
    low: int,
    high: int,
    batched_model: str,
) -> list[Target]:
    """Issue 7's targets for each (model, in-process batch size B) in `models`.

    `low` and `high` are the two concurrencies; the whole-stack vs in-process throughput
    target applies to `batched_model` (the 28x28 CNN), and is shown for the others too.
    """
    found: list[Target] = []

    def add(
        name: str,
        model: str,
        value: float | None,
        limit: float,
        unit: str,
        at_least: bool,
        applies: bool = True,
    ) -> None:
        if value is not None:
            found.append(Target(name, model, value, limit, unit, at_least, applies))

    for model, batch in models:
        ts_low, gw_low = (model, "torchserve", low), (model, "gateway", low)
        ts_high, gw_high = (model, "torchserve", high), (model, "gateway", high)
        batched_high = (model, "torchserve-batched", high)
        add(
            f"gateway p50 added at c{low}",
            model,
            per_round_ratio(measurements, gw_low, ts_low, lambda g, t: g.p50_ms - t.p50_ms),
            1.0,
            "ms",
            False,
        )
        # Against the better of TorchServe's two direct configurations in each round: the
        # archive's own (batch 1, what the gateway sends to) and TorchServe's batching.
        best = best_direct_ratio(measurements, gw_high, (ts_high, batched_high))
        if best is not None:
            add(
                f"gateway / best direct req/s at c{high} (best: {best[1]})",
                model,
                best[0],
                0.9,
                "x",
                True,
            )
        add(
            f"stack c{high} / in-process batch {batch}",
            model,
            per_round_ratio(
                measurements,
                gw_high,
                (model, "in-process", batch),
                lambda g, m: g.per_second / m.per_second,
            ),
            0.5,
            "x",
            True,
            applies=model == batched_model,
        )
        add(
            f"stack p50 c{low} - in-process batch-1 p50",
            model,
            per_round_ratio(
                measurements, gw_low, (model, "in-process", 1), lambda g, m: g.p50_ms - m.p50_ms
            ),
            3.0,
            "ms",
            False,
        )
    for figures in memory:
        add("worker peak RSS loading / steady", figures.model, figures.ratio, 1.3, "x", False)
    return found


def _verdict(check: Target) -> str:
    if not check.applies:
        return f"n/a ({'would hold' if check.holds else 'would not hold'}; not a target)"
    return "yes" if check.holds else "NO"


def _load_label(row: Measurement) -> str:
    return f"batch {row.load}" if row.path == "in-process" else f"c{row.load}"


def markdown(
    summary: Summary,
    memory: Sequence[MemoryFigures],
    checks: Sequence[Target],
    notes: Sequence[str] = (),
) -> str:
    """The three tables (throughput and latency, memory and start-up, targets) as markdown."""
    lines = [
        "### Throughput, latency, CPU per request (medians over rounds)",
        "",
        "| model | path | load | req/s | p50 ms | p99 ms | errors | CPU ms/req: "
        + " | ".join(ROLES)
        + " | items per upstream req |",
        "|---|---|---|---:|---:|---:|---:|" + "---:|" * (len(ROLES) + 1),
    ]
    for row in summary.rows:
        cpu = " | ".join(f"{row.cpu_ms[role]:.3f}" if role in row.cpu_ms else "" for role in ROLES)
        items = f"{row.upstream_items:.1f}" if row.upstream_items else ""
        lines.append(
            f"| {row.model} | {row.path} | {_load_label(row)} | {row.per_second:,.0f} | "
            f"{row.p50_ms:.2f} | {row.p99_ms:.2f} | {row.errors} | {cpu} | {items} |"
        )
    lines += [
        "",
        "### Loading and memory",
        "",
        "| model | serving | register -> first answer s | worker peak RSS loading MiB | "
        "worker steady RSS MiB | ratio |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for fig in memory:
        lines.append(
            f"| {fig.model} | {fig.serving} | {fig.first_answer_s:.2f} | "
            f"{fig.peak_rss_loading / MIB:.0f} | {fig.steady_rss / MIB:.0f} | {fig.ratio:.2f} |"
        )
    lines += ["", "### Targets (issue 7)", "", "| target | model | measured | limit | holds |"]
    lines.append("|---|---|---:|---:|---|")
    for check in checks:
        sign = ">=" if check.at_least else "<="
        lines.append(
            f"| {check.name} | {check.model} | {check.value:.2f} {check.unit} | "
            f"{sign} {check.limit:g} {check.unit} | {_verdict(check)} |"
        )
    if notes:
        lines += ["", *[f"- {note}" for note in notes]]
    return "\n".join(lines) + "\n"


def chart(summary: Summary, path: Path) -> None:
    """A PNG: throughput (left) and p50 latency with p99 whiskers (right) per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r.model}\n{r.path} {_load_label(r)}" for r in summary.rows]
    colours = {
        "in-process": "#4c72b0",
        "torchserve": "#dd8452",
        "torchserve-batched": "#c44e52",
        "gateway": "#55a868",
    }
    colour = [colours.get(r.path, "grey") for r in summary.rows]
    positions = list(range(len(labels)))
    figure, (left, right) = plt.subplots(1, 2, figsize=(14, 0.45 * len(labels) + 2))
    rates = [max(r.per_second, 1.0) for r in summary.rows]
    left.barh(positions, rates, color=colour)
    for position, rate in zip(positions, rates, strict=True):
        left.annotate(f" {rate:,.0f}", (rate, position), va="center", fontsize=7)
    # Log scale: in-process batches run tens of times faster than anything served.
    left.set_xscale("log")
    left.set_xlabel("requests/s (samples/s in-process), log scale")
    left.set_yticks(positions, labels, fontsize=7)
    left.invert_yaxis()
    p50 = [r.p50_ms for r in summary.rows]
    whisker = [max(0.0, r.p99_ms - r.p50_ms) for r in summary.rows]
    right.barh(positions, p50, xerr=[[0.0] * len(p50), whisker], color=colour, capsize=3)
    right.set_xlabel("latency ms (bar: p50, whisker: p99)")
    right.set_yticks(positions, [""] * len(labels))
    right.invert_yaxis()
    figure.suptitle(
        "bench: in-process vs TorchServe (batch 1, and its own batching) vs gateway "
        "(medians over rounds)"
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
