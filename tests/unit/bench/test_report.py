"""Medians, per-round ratios and targets of `bench.report`: plain functions on fixed numbers."""

import math

import pytest

from bench.report import (
    Measurement,
    MemoryFigures,
    best_direct_ratio,
    markdown,
    per_round_ratio,
    summarize,
    targets,
)


def row(path: str, load: int, rnd: int, per_second: float, p50: float, **kw: object) -> Measurement:
    return Measurement("m", path, load, rnd, per_second, p50, p50 * 2, 0, 100, **kw)  # type: ignore[arg-type]


def test_summary_takes_medians_and_sums_errors() -> None:
    rows = [
        Measurement("m", "gateway", 32, r, rps, p50, 9.0, err, 10, {"gateway": cpu})
        for r, (rps, p50, err, cpu) in enumerate(
            [(100, 3, 0, 0.5), (300, 1, 2, 0.1), (200, 2, 1, 0.2)]
        )
    ]
    (only,) = summarize(rows).rows
    assert (only.per_second, only.p50_ms, only.errors, only.requests) == (200, 2, 3, 30)
    assert only.cpu_ms == {"gateway": 0.2}


def test_ratios_pair_sides_within_a_round() -> None:
    # Round 1 is slow on both sides: per-round ratios are 0.5, 0.5, 0.9 -> median 0.5,
    # whereas the ratio of medians would be 450 / 900.
    rows = [
        row("torchserve", 32, 0, 1000, 1),
        row("gateway", 32, 0, 500, 1),
        row("torchserve", 32, 1, 100, 1),
        row("gateway", 32, 1, 50, 1),
        row("torchserve", 32, 2, 900, 1),
        row("gateway", 32, 2, 810, 1),
    ]
    ratio = per_round_ratio(
        rows,
        ("m", "gateway", 32),
        ("m", "torchserve", 32),
        lambda g, t: g.per_second / t.per_second,
    )
    assert ratio == 0.5
    assert (
        per_round_ratio(rows, ("m", "gateway", 1), ("m", "torchserve", 32), lambda g, t: 0) is None
    )


def test_targets_hold_or_not_against_issue_7_limits() -> None:
    rows = [
        row("in-process", 1, 0, 3000, 0.3),
        row("in-process", 8, 0, 1500, 5.0),
        row("torchserve", 1, 0, 500, 2.0),
        row("gateway", 1, 0, 400, 2.5),
        row("torchserve", 32, 0, 1000, 30),
        row("gateway", 32, 0, 950, 33),
    ]
    memory = [MemoryFigures("m", 2.0, 130, 100, "batch 8")]
    found = {t.name: t for t in targets(rows, memory, [("m", 8)], 1, 32, "m")}
    assert found["gateway p50 added at c1"].value == pytest.approx(0.5)
    assert found["gateway p50 added at c1"].holds
    # Only the archive's own registration ran: it is the best direct path.
    assert found["gateway / best direct req/s at c32 (best: torchserve)"].value == pytest.approx(
        0.95
    )
    assert found["stack c32 / in-process batch 8"].value == pytest.approx(950 / 1500)
    assert found["stack p50 c1 - in-process batch-1 p50"].value == pytest.approx(2.2)
    assert found["worker peak RSS loading / steady"].holds  # 1.3 is within the limit
    assert not targets(rows, [MemoryFigures("m", 2.0, 131, 100, "")], [], 1, 32, "m")[0].holds


def test_gateway_throughput_is_compared_with_the_better_direct_path_of_each_round() -> None:
    rows = [
        row("torchserve", 32, 0, 400, 30),
        row("torchserve-batched", 32, 0, 1000, 30),
        row("gateway", 32, 0, 900, 33),
        row("torchserve", 32, 1, 1200, 30),
        row("torchserve-batched", 32, 1, 1000, 30),
        row("gateway", 32, 1, 600, 33),
        row("torchserve", 32, 2, 500, 30),
        row("torchserve-batched", 32, 2, 1000, 30),
        row("gateway", 32, 2, 700, 33),
    ]
    (check,) = [t for t in targets(rows, [], [("m", 8)], 1, 32, "m") if "direct" in t.name]
    # Per round: 900 / 1000, 600 / 1200, 700 / 1000; the median of the three.
    assert check.value == pytest.approx(0.7)
    assert check.name == (
        "gateway / best direct req/s at c32 "
        "(best: torchserve-batched in 2 of 3 rounds, torchserve in 1)"
    )
    assert not check.holds


def test_best_direct_names_the_one_path_when_every_round_agrees() -> None:
    rows = [
        row("torchserve", 32, 0, 400, 30),
        row("torchserve-batched", 32, 0, 1000, 30),
        row("gateway", 32, 0, 950, 33),
    ]
    best = best_direct_ratio(
        rows, ("m", "gateway", 32), [("m", "torchserve", 32), ("m", "torchserve-batched", 32)]
    )
    assert best is not None
    assert best[0] == pytest.approx(0.95) and best[1] == "torchserve-batched"
    assert best_direct_ratio(rows, ("m", "gateway", 1), [("m", "torchserve", 32)]) is None


def test_items_per_upstream_request_are_shown_only_where_measured() -> None:
    rows = [
        row("torchserve-batched", 32, 0, 1000, 30),
        row("gateway", 32, 0, 950, 33, upstream_items=10.5),
        row("gateway", 32, 1, 950, 33, upstream_items=11.5),
        row("gateway", 32, 2, 950, 33, upstream_items=12.0),
    ]
    lines = markdown(summarize(rows), [], []).splitlines()
    assert "items per upstream req |" in lines[2]
    (batched,) = [line for line in lines if "| torchserve-batched | c32 |" in line]
    (gateway,) = [line for line in lines if "| gateway | c32 |" in line]
    assert batched.endswith("|  |") and gateway.endswith("| 11.5 |")


def test_markdown_has_every_table_and_no_nan_for_missing_steady_rss() -> None:
    rows = [
        row("in-process", 1, 0, 3000, 0.3),
        row("gateway", 32, 0, 950, 33, cpu_ms={"worker": 1.0}),
    ]
    text = markdown(summarize(rows), [MemoryFigures("m", 1.0, 0, 0, "b")], [], ["a note"])
    assert "| m | in-process | batch 1 | 3,000 |" in text
    assert "| m | gateway | c32 | 950 |" in text and "1.000" in text
    assert "### Loading and memory" in text and "- a note" in text
    assert math.isnan(MemoryFigures("m", 1.0, 0, 0, "").ratio)
