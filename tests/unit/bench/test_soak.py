"""The soak's pure parts: the rate taken from a bench result, the intervals, the report."""

import json
from pathlib import Path

from bench.soak import interval_for, rate_from_bench
from bench.soak_report import MIB, Interval, SoakResult, markdown


def test_the_rate_is_the_median_gateway_throughput_at_the_highest_concurrency(
    tmp_path: Path,
) -> None:
    rows = [
        {"model": "digits", "path": "gateway", "load": 32, "per_second": r} for r in (900, 700, 800)
    ]
    rows += [
        {"model": "digits", "path": "gateway", "load": 1, "per_second": 300},
        {"model": "digits", "path": "torchserve", "load": 32, "per_second": 5000},
        {"model": "mnist28", "path": "gateway", "load": 32, "per_second": 9000},
    ]
    (tmp_path / "bench.json").write_text(json.dumps({"measurements": rows}))
    assert rate_from_bench(tmp_path) == 800


def test_no_or_unreadable_bench_result_gives_no_rate(tmp_path: Path) -> None:
    assert rate_from_bench(tmp_path) is None
    (tmp_path / "bench.json").write_text("{not json")
    assert rate_from_bench(tmp_path) is None
    (tmp_path / "bench.json").write_text(json.dumps({"measurements": []}))
    assert rate_from_bench(tmp_path) is None


def test_intervals_are_minutes_or_quarters_of_a_short_run() -> None:
    assert interval_for(600) == 60
    assert interval_for(240) == 60
    assert interval_for(20) == 5


def test_the_report_gives_errors_by_status_and_growth_per_process() -> None:
    first = Interval(
        0, 100, {"200": 99, "503": 1}, 2.0, 9.0, {"gateway": 100 * MIB}, {"gateway": 30}
    )
    last = Interval(60, 100, {"200": 100}, 2.5, 8.0, {"gateway": 110 * MIB}, {"gateway": 31})
    result = SoakResult("digits", 120, 1.7, "given", 60, 200, {"200": 199, "503": 1}, [first, last])
    assert result.failed == 1
    text = markdown(result)
    assert "Errors by status: {'503': 1}" in text
    assert "| min 1 | 100 | 1 | 2.00 | 9.00 | 100.0 | 30 |" in text
    assert "| gateway | 100.0 -> 110.0 | +10.0% | 30 -> 31 | +1 |" in text
