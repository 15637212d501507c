"""The benchmark's peers (bench/peers/) serve the model's own numbers and stop cleanly.

Each peer is started the way `python -m bench` starts it (its own session, free loopback
ports), sent the bench's 6 KB JSON body, and its answer compared with the same weights run
in this process (within 1e-5). The stock TorchServe is checked to be stock too: TorchServe's
own log4j2.xml and no JVM option of ours, only the config keys it needs, batching at 8 / 5 ms
as its management API describes it, no process left after it. The reference row (the
project's archive in the bench's TorchServe) is checked by the bench's smoke run
(bench.peers.rows.check_answers refuses to measure a server that answers other numbers).
Asserts no timing.
"""

import concurrent.futures
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
from bench.peers.running import PeerServer, wait_gone
from bench.peers.servers import FASTAPI, LITSERVE, STOCK_TORCHSERVE, running_app
from bench.peers.stock_torchserve import (
    THREADS_VARIABLE,
    StockTorchServe,
    running_stock_torchserve,
)
from bench.stack import BenchModel, request_body, write_bench_spec
from launcher.torchserve import JVM_OPTIONS

pytestmark = [pytest.mark.integration, pytest.mark.bench]


@pytest.fixture(scope="module")
def mnist28(tmp_path_factory: pytest.TempPathFactory) -> tuple[BenchModel, Path]:
    work = tmp_path_factory.mktemp("peers")
    spec = load_spec(write_bench_spec(work))
    (entry,) = spec.select(["mnist28"])
    body, content_type = request_body(entry)
    return BenchModel(entry, spec.base_dir, body, content_type), work / WEIGHTS_FILE


@pytest.fixture(scope="module")
def stock(
    mnist28: tuple[BenchModel, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StockTorchServe]:
    model, weights = mnist28
    with running_stock_torchserve(model, weights, 1, tmp_path_factory.mktemp("stock")) as server:
        pids = server.pids()
        yield server
    # The `torchserve` command, the JVM and the worker: all gone once it is stopped.
    assert len(pids) >= 3, pids
    alive = wait_gone(pids, 10)
    assert not alive, f"stock TorchServe left {alive} running"


def java_of(stock: StockTorchServe) -> list[str]:
    """The stock TorchServe JVM's command line."""
    for pid in stock.pids():
        command = psutil.Process(pid).cmdline()
        if "org.pytorch.serve.ModelServer" in command:
            return command
    raise AssertionError(f"no TorchServe JVM among {stock.pids()}")


@pytest.fixture(scope="module", params=[FASTAPI, LITSERVE, STOCK_TORCHSERVE])
def peer(
    request: pytest.FixtureRequest,
    mnist28: tuple[BenchModel, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PeerServer]:
    if request.param == STOCK_TORCHSERVE:  # its fixture checks that it stops cleanly
        yield request.getfixturevalue("stock").peer
        return
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


def test_stock_torchserve_answers_a_batch_with_the_model_s_numbers(
    stock: StockTorchServe, mnist28: tuple[BenchModel, Path]
) -> None:
    # 16 at once: TorchServe batches them (up to 8 per batch); each gets its own answer.
    model, weights = mnist28
    expected = expected_answer(model, weights, 1)
    target = stock.peer.target

    def post(_: int) -> httpx.Response:
        return httpx.post(
            target.url,
            content=target.body,
            headers={"content-type": target.content_type},
            timeout=60.0,
            trust_env=False,
        )

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(post, range(16)))
    assert [answer.status_code for answer in answers] == [200] * 16
    for answer in answers:
        np.testing.assert_allclose(np.asarray(answer.json()), expected, rtol=0, atol=1e-5)


def test_stock_torchserve_runs_as_it_ships(stock: StockTorchServe) -> None:
    java = java_of(stock)
    # The `torchserve` script's own JVM arguments only: no log4j2.xml, no JVM option of ours.
    jvm_arguments = java[1 : java.index("-cp")]
    assert [argument.split("=")[0] for argument in jvm_arguments] == [
        "-Dmodel_server_home",
        "-Djava.io.tmpdir",
    ], java
    assert not set(JVM_OPTIONS) & set(java)
    # TorchServe's own log4j2.xml logs org.pytorch.serve at DEBUG (the project's at INFO).
    assert "[DEBUG]" in (stock.logs / "ts_log.log").read_text()
    config = Path(java[java.index("-f") + 1]).read_text()
    keys = {line.split("=")[0] for line in config.splitlines() if line and line[0] != "#"}
    assert keys == {
        "inference_address",
        "management_address",
        "metrics_address",
        "grpc_inference_port",
        "grpc_management_port",
        "initial_worker_port",
        "disable_token_authorization",
        "model_store",
        "default_workers_per_model",
    }


def test_stock_torchserve_batches_8_in_5_ms_on_one_worker(stock: StockTorchServe) -> None:
    (described,) = httpx.get(
        f"{stock.management_url}/models/mnist28", trust_env=False, timeout=10.0
    ).json()
    assert (described["batchSize"], described["maxBatchDelay"]) == (8, 5)
    (worker,) = described["workers"]
    assert worker["status"] == "READY"
    # The worker gets the bench's thread count, which the handler gives torch.
    assert psutil.Process(worker["pid"]).environ()[THREADS_VARIABLE] == "1"
