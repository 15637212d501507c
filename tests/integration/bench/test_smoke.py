"""`python -m bench --smoke`: the benchmark still runs end to end (issue 7). Asserts no timing.

A few requests per configuration against a real TorchServe and gateway: the run must exit 0
(no failed request), write its table, chart and JSON, and leave no server behind.
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


def test_smoke_run_writes_the_report_and_stops_its_servers(tmp_path: Path) -> None:
    results = tmp_path / "results"
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--results", str(results)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    table = (results / "bench.md").read_text()
    assert table in run.stdout  # the table is printed too
    for path in ("in-process", "torchserve", "gateway"):
        for model in ("digits", "mnist28"):
            assert re.search(rf"\| {model} \| {path} \|", table), (model, path)
    for model in ("digits", "mnist28"):  # TorchServe's own batching: the high load only
        assert re.search(rf"\| {model} \| torchserve-batched \| c16 \|", table), model
        assert not re.search(rf"\| {model} \| torchserve-batched \| c1 \|", table), model
    assert "### Targets (issue 7)" in table
    assert "gateway / best direct req/s at c16 (best: " in table
    assert (results / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    report = json.loads((results / "bench.json").read_text())
    served = [m for m in report["measurements"] if m["path"] != "in-process"]
    assert served and all(m["requests"] > 0 and m["errors"] == 0 for m in served)
    # The gateway's own metric: every request it sent TorchServe carried at least one item,
    # and under concurrency it batched: more than one on average.
    assert all((m["upstream_items"] >= 1) == (m["path"] == "gateway") for m in served), served
    batched = [m for m in served if m["path"] == "gateway" and m["load"] == 16]
    assert {m["model"] for m in batched} == {"digits", "mnist28"}, served
    assert all(m["upstream_items"] > 1 for m in batched), batched
    assert {m["model"] for m in report["memory"]} == {"digits", "mnist28"}
    # The variable-length text row: in-process b1 and b16, through the gateway c1 and c16.
    assert "### Variable-length text: `sentiment` from raw text" in table
    rows = {(row["path"], row["load"]): row for row in report["text"]}
    assert set(rows) == {
        ("in-process", "b1"),
        ("in-process", "b16"),
        ("gateway", "c1"),
        ("gateway", "c16"),
    }
    assert all(row["tokens_per_s"] > 0 and row["errors"] == 0 for row in rows.values()), rows

    # The two-backend row (bench/pool.py): one model through one TorchServe and two.
    assert "### The gateway over one TorchServe and over two" in table
    pool_rows = report["pool"]
    assert sorted(row["backends"] for row in pool_rows) == ["1 backend", "2 backends"]
    assert len({row["model"] for row in pool_rows}) == 1
    assert all(row["requests_per_s"] > 0 and row["errors"] == 0 for row in pool_rows), pool_rows

    # The peers (bench/peers/): each served mnist28 at c1, c16 and c64 next to the project,
    # after answering the model's own numbers (the run stops otherwise), and the ratios;
    # the reference row (the project's archive on TorchServe's batching) beside them.
    assert "### Peers: the same model and body served by other stacks" in table
    peer_rows = report["peers"]["rows"]
    servers = {row["server"] for row in peer_rows}
    roles = {row["server"]: row["role"] for row in peer_rows}
    peers = {server for server, role in roles.items() if role == "peer"}
    assert len(peers) == 3 and any("FastAPI" in s for s in peers), roles
    assert any("LitServe" in s for s in peers) and any("stock TorchServe" in s for s in peers)
    assert list(roles.values()).count("project") == 1, roles
    (reference,) = [server for server, role in roles.items() if role == "reference"]
    assert "this project's archive" in reference
    assert all(r["best_peer"] in peers for r in report["peers"]["ratios"]), report["peers"]
    assert {(row["server"], row["concurrency"]) for row in peer_rows} == {
        (server, c) for server in servers for c in (1, 16, 64)
    }
    assert all(row["requests_per_s"] > 0 and row["errors"] == 0 for row in peer_rows), peer_rows
    assert [r["concurrency"] for r in report["peers"]["ratios"]] == [1, 16, 64]
    for server in servers:
        assert f"| {server} | c64 |" in table

    # Every server the run started (the launcher logs their pids) is gone: TorchServe and
    # the gateway, and the second of each for the two-backend row.
    pids = [int(pid) for pid in re.findall(r"starting \(pid (\d+)\)", run.stderr)]
    assert len(pids) == 4, run.stderr[-3000:]
    assert not [pid for pid in pids if psutil.pid_exists(pid)]
    # And every process of every peer (bench.peers logs them once it is ready): the stock
    # TorchServe's `torchserve` command, JVM and worker among them.
    started = re.findall(r"peer '([^']+)' ready on port \d+, pids \[([\d, ]+)\]", run.stderr)
    assert {name for name, _ in started} == peers, run.stderr[-3000:]
    peer_pids = [int(pid) for _, listed in started for pid in listed.split(", ")]
    assert not [pid for pid in peer_pids if psutil.pid_exists(pid)]
