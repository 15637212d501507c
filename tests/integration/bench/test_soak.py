"""`python -m bench.soak` for 20 seconds (what `make soak` runs for 10 minutes): steady load
through the real gateway to the real TorchServe, then the report. Asserts no timing.

The rate is given (a few requests per second: this checks that the soak runs, answers and
reports, not how fast), so the run does not depend on a `make bench` result being present.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.bench]

ROOT = Path(__file__).resolve().parents[3]
SECONDS = 20
RATE = 20.0


def test_a_short_soak_answers_everything_and_reports_each_process(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.soak",
            "--seconds",
            str(SECONDS),
            "--rate",
            str(RATE),
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    report = json.loads((tmp_path / "soak.json").read_text())
    assert report["requests"] == int(SECONDS * RATE)
    assert report["statuses"] == {"200": report["requests"]}
    intervals = report["intervals"]
    assert len(intervals) == 4
    assert sum(i["requests"] for i in intervals) == report["requests"]
    for interval in intervals:
        assert interval["requests"] > 0 and 0 < interval["p50_ms"] <= interval["p99_ms"]
        assert set(interval["rss"]) == {"gateway", "frontend", "worker"}, interval["rss"]
        assert all(v > 0 for v in interval["rss"].values())
        assert all(v > 0 for v in interval["fds"].values())

    table = (tmp_path / "soak.md").read_text()
    assert table in run.stdout
    assert "Errors by status: none" in table
    for role in ("gateway", "frontend", "worker"):
        assert re.search(rf"\| {role} \| [\d.]+ -> [\d.]+ \| [+-][\d.]+% \| \d+ -> \d+ \|", table)
    assert (tmp_path / "soak.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Every server the run started (the launcher logs their pids) is gone.
    pids = [int(pid) for pid in re.findall(r"starting \(pid (\d+)\)", run.stderr)]
    assert len(pids) == 2, run.stderr[-3000:]
    assert not [pid for pid in pids if psutil.pid_exists(pid)]
