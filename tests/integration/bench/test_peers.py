"""The benchmark's peers (bench/peers/) serve the model's own numbers and stop cleanly.

Each Python peer is started the way `python -m bench` starts it (its own session, a free
loopback port), sent the bench's 6 KB JSON body, and its answer compared with the same
weights run in this process (within 1e-5). TorchServe's batching peer is checked by the
bench's smoke run (bench.peers.rows.check_answers refuses to measure a server that answers
other numbers). Asserts no timing.
"""

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from archive.spec import load_spec
from bench.loadgen import run_asyncio
from bench.peers.compare import WEIGHTS_FILE, expected_answer
from bench.peers.rows import PROJECT, combine, markdown, peer_round, project_server, ratios
from bench.peers.servers import FASTAPI, LITSERVE, PeerServer, running_app
from bench.stack import BenchModel, request_body, write_bench_spec

pytestmark = [pytest.mark.integration, pytest.mark.bench]


@pytest.fixture(scope="module")
def mnist28(tmp_path_factory: pytest.TempPathFactory) -> tuple[BenchModel, Path]:
    work = tmp_path_factory.mktemp("peers")
    spec = load_spec(write_bench_spec(work))
    (entry,) = spec.select(["mnist28"])
    body, content_type = request_body(entry)
    return BenchModel(entry, spec.base_dir, body, content_type), work / WEIGHTS_FILE


@pytest.fixture(scope="module", params=[FASTAPI, LITSERVE])
def peer(
    request: pytest.FixtureRequest,
    mnist28: tuple[BenchModel, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PeerServer]:
    model, weights = mnist28
    logs = tmp_path_factory.mktemp("peer-logs")
    with running_app(request.param, model, weights, 1, logs) as server:
        yield server
    gone = psutil.wait_procs(
        [psutil.Process(pid) for pid in server.pids if psutil.pid_exists(pid)], timeout=10
    )
    assert not gone[1], f"{request.param} left {gone[1]} running"


def test_peer_answers_the_model_in_process(
    peer: PeerServer, mnist28: tuple[BenchModel, Path]
) -> None:
    model, weights = mnist28
    answer = httpx.post(
        peer.target.url,
        content=model.body,
        headers={"content-type": model.content_type},
        timeout=60.0,
        trust_env=False,
    )
    assert answer.status_code == 200, answer.text
    got = np.asarray(answer.json(), dtype=np.float64)
    assert got.shape == (10,)
    np.testing.assert_allclose(got, expected_answer(model, weights, 1), rtol=0, atol=1e-5)


def test_peer_rows_and_ratio_in_the_report(peer: PeerServer) -> None:
    # The peer measured as a row, and (standing in for the project's path) as the project:
    # the ratio table then has one line per concurrency, each near 1.
    stand_in = project_server(peer.target, peer.pids)
    rows = peer_round([stand_in, peer], 0, run_asyncio, 0.2, 20)
    assert all(row.requests_per_s > 0 and row.errors == 0 for row in rows), rows
    report = markdown(combine(rows), ratios(rows))
    for concurrency in (1, 16, 64):
        assert f"| {peer.name} | c{concurrency} |" in report
        assert f"| {PROJECT} | c{concurrency} |" in report
        assert f"| c{concurrency} | {peer.name} |" in report
