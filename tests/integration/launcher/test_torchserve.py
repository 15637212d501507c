"""A real TorchServe started by the launcher: where it listens, what it writes, how it stops."""

import os
import signal
import time
from pathlib import Path

import httpx
import psutil
import pytest

from launcher.config import BODY_LIMIT_HEADROOM_BYTES
from launcher.errors import LauncherError, ProcessExited
from launcher.torchserve import TorchServe
from tests.support.archives import GREEDY_CONFIG, build_echo_archive
from tests.support.ports import listening_addresses
from tests.support.servers import running_gateway, running_torchserve, torchserve_settings

pytestmark = pytest.mark.integration

FAILING_HANDLER = """
def handle(data, context):
    raise RuntimeError("this model cannot load: marker-7d1f")
"""


def process_tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def none_alive(processes: list[psutil.Process]) -> bool:
    return not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes)


@pytest.fixture
def client() -> httpx.Client:
    with httpx.Client(trust_env=False, timeout=30) as client:
        yield client


def test_predicts_listens_on_loopback_only_and_stops_cleanly(
    echo_store: Path, tmp_path: Path, client: httpx.Client
) -> None:
    with running_torchserve(echo_store, tmp_path / "run") as ts:
        answer = client.post(f"{ts.inference_url}/predictions/echo", content=b"12345")
        metrics = client.get(f"{ts.metrics_url}/metrics")
        assert ts.pid is not None
        tree = process_tree(ts.pid)
        listening = set().union(*(listening_addresses(p) for p in tree))
        s = ts.settings
        worker_sockets = list(ts.tmp_dir.glob(".ts.sock.*"))
        commands = [" ".join(p.cmdline()) for p in tree]

    assert answer.status_code == 200, answer.text
    assert answer.json() == {"echo_bytes": 5}
    assert metrics.status_code == 200 and "ts_inference_requests_total" in metrics.text
    assert listening == {
        ("127.0.0.1", s.torchserve_inference_port),
        ("127.0.0.1", s.torchserve_management_port),
        ("127.0.0.1", s.torchserve_metrics_port),
        ("127.0.0.1", s.torchserve_grpc_inference_port),
        ("127.0.0.1", s.torchserve_grpc_management_port),
    }
    assert [p.name for p in worker_sockets] == [f".ts.sock.{s.torchserve_worker_port}"]
    assert "org.pytorch.serve.ModelServer" in commands[0]
    assert any("model_service_worker" in command for command in commands[1:])
    assert none_alive(tree)
    assert (ts.log_dir / "access_log.log").is_file()
    assert (ts.log_dir / "ts_log.log").is_file()


def test_the_access_log_has_one_line_per_request(
    echo_store: Path, tmp_path: Path, client: httpx.Client
) -> None:
    count = 7
    with running_torchserve(echo_store, tmp_path / "run") as ts:
        access_log = ts.log_dir / "access_log.log"
        for index in range(count):
            answer = client.post(f"{ts.inference_url}/predictions/echo?n={index}", content=b"x")
            assert answer.status_code == 200, answer.text
        # The log is written off the request thread, in order: once the marker's line is
        # there, so are the lines of every request before it.
        marker = f"/ping?marker={tmp_path.name}"
        assert client.get(f"{ts.inference_url}{marker}").status_code == 200
        deadline = time.monotonic() + 60
        while marker not in access_log.read_text():
            assert time.monotonic() < deadline, "the marker never reached the access log"
            time.sleep(0.1)
        lines = access_log.read_text().splitlines()

    predictions = [line for line in lines if '"POST /predictions/echo?n=' in line]
    assert [line.split('"')[1] for line in predictions] == [
        f"POST /predictions/echo?n={index} HTTP/1.1" for index in range(count)
    ]
    assert all(line.split('"')[2].split()[0] == "200" for line in predictions)


def test_state_stays_in_the_run_dir(echo_store: Path, tmp_path: Path) -> None:
    cwd = Path.cwd()
    before = set(cwd.iterdir())

    with running_torchserve(echo_store, tmp_path / "run") as ts:
        assert ts.run_dir.is_relative_to(tmp_path)

    assert set(cwd.iterdir()) == before
    assert not (cwd / "logs").exists()


def test_two_torchserves_run_side_by_side(
    echo_store: Path, tmp_path: Path, client: httpx.Client
) -> None:
    with (
        running_torchserve(echo_store, tmp_path / "one") as one,
        running_torchserve(echo_store, tmp_path / "two") as two,
    ):
        for ts in (one, two):
            answer = client.post(f"{ts.inference_url}/predictions/echo", content=b"abc")
            assert answer.json() == {"echo_bytes": 3}


def test_limits_workers_and_model_list_are_applied(tmp_path: Path, client: httpx.Client) -> None:
    store = tmp_path / "store"
    build_echo_archive(store, name="echo")
    build_echo_archive(store, name="unlisted")
    limit = 1000 + BODY_LIMIT_HEADROOM_BYTES

    with running_torchserve(
        store,
        tmp_path / "run",
        models=["echo.mar"],
        max_body_bytes=1000,
        settings={"torchserve_workers_per_model": 2},
    ) as ts:
        models = client.get(f"{ts.management_url}/models").json()["models"]
        detail = client.get(f"{ts.management_url}/models/echo").json()[0]
        at_limit = client.post(f"{ts.inference_url}/predictions/echo", content=b"x" * limit)
        over_limit = client.post(f"{ts.inference_url}/predictions/echo", content=b"x" * (limit + 1))

    assert [m["modelName"] for m in models] == ["echo"]
    assert len(detail["workers"]) == 2
    assert at_limit.status_code == 200, at_limit.text
    assert at_limit.json() == {"echo_bytes": limit}
    assert over_limit.status_code == 413


def test_archives_are_served_with_their_own_batch_size_and_zero_delay(
    tmp_path: Path, client: httpx.Client
) -> None:
    store = tmp_path / "store"
    build_echo_archive(store, "greedy", GREEDY_CONFIG)
    build_echo_archive(store, "echo")

    with running_torchserve(store, tmp_path / "run") as ts:
        (greedy,) = client.get(f"{ts.management_url}/models/greedy").json()
        (echo,) = client.get(f"{ts.management_url}/models/echo").json()
        # What TorchServe makes of the same archive on its own (as `load_models` would).
        plain = client.post(
            f"{ts.management_url}/models",
            params={"url": "greedy.mar", "model_name": "plain", "synchronous": "true"},
        )
        (described_plain,) = client.get(f"{ts.management_url}/models/plain").json()
        answer = client.post(f"{ts.inference_url}/predictions/greedy", content=b"ab")

    assert (greedy["batchSize"], greedy["maxBatchDelay"]) == (2, 0)
    assert len(greedy["workers"]) == 1
    assert len(echo["workers"]) == 1 and echo["batchSize"] == 1
    assert plain.status_code == 200, plain.text
    assert described_plain["maxBatchDelay"] == 100
    assert answer.json() == {"echo_bytes": 2}


def test_an_unreadable_archive_stops_the_start_with_its_name(tmp_path: Path) -> None:
    store = tmp_path / "store"
    build_echo_archive(store, "echo")
    (store / "junk.mar").write_bytes(b"not an archive")

    with (
        pytest.raises(LauncherError, match=r"junk\.mar"),
        running_torchserve(store, tmp_path / "run"),
    ):
        pass


def test_models_can_be_registered_only_from_the_store(
    echo_store: Path, tmp_path: Path, client: httpx.Client
) -> None:
    outside = tmp_path / "outside"
    build_echo_archive(outside, name="stranger")

    with running_torchserve(echo_store, tmp_path / "run") as ts:
        refused = client.post(
            f"{ts.management_url}/models", params={"url": f"file://{outside}/stranger.mar"}
        )
        remote = client.post(
            f"{ts.management_url}/models", params={"url": "https://example.com/x.mar"}
        )

    # TorchServe's own refusal, before it opens anything: an offline machine would refuse a
    # download too, with another answer. TorchServe's status for it is 404.
    for answer, url in (
        (refused, f"file://{outside}/stranger.mar"),
        (remote, "https://example.com/x.mar"),
    ):
        assert answer.status_code == 404, answer.text
        assert answer.json()["message"] == f"Given URL {url} does not match any allowed URL(s)"


def test_a_model_that_cannot_load_stops_the_start_with_its_error(tmp_path: Path) -> None:
    handler = tmp_path / "failing_handler.py"
    handler.write_text(FAILING_HANDLER)
    from model_archiver.model_archiver_config import ModelArchiverConfig
    from model_archiver.model_packaging import generate_model_archive

    store = tmp_path / "store"
    store.mkdir()
    generate_model_archive(
        ModelArchiverConfig(
            model_name="failing", handler=str(handler), version="1.0", export_path=str(store)
        )
    )

    with (
        pytest.raises(LauncherError, match=r"(?s)failing\.mar.*marker-7d1f"),
        running_torchserve(store, tmp_path / "run", timeout=60),
    ):
        pass


def test_an_early_exit_is_reported_with_the_log_tail(echo_store: Path, tmp_path: Path) -> None:
    ts = TorchServe(torchserve_settings(echo_store, tmp_path / "run"))
    ts.start()
    try:
        assert ts.pid is not None
        os.kill(ts.pid, signal.SIGKILL)
        with pytest.raises(ProcessExited, match=r"(?s)exited with status -9.*console.log"):
            ts.wait_ready(timeout=60)
    finally:
        ts.stop()


PINNED_SPEC = """
[[model]]
name = "pinned"
model_file = "{examples}/model.py"
model_class = "DigitsNet"
checkpoint = "{examples}/digits.pt"
task = "tensor"

[model.input]
shape = [1, 8, 8]

[model.serving]
workers = 1
"""


def test_workers_come_from_the_launcher_or_the_registration_unless_the_archive_names_them(
    tmp_path: Path, client: httpx.Client
) -> None:
    # The project's own archives (archive/models.toml) name no worker count, so
    # TORCHSERVE_WORKERS_PER_MODEL and a registration's initial_workers decide; an archive
    # whose spec sets `[model.serving] workers` keeps it (TorchServe prefers model-config).
    from archive.build import build_models
    from archive.spec import DEFAULT_SPEC

    store = tmp_path / "store"
    build_models(DEFAULT_SPEC, store, ["digits-tensor", "digits"])
    examples = DEFAULT_SPEC.parent.parent / "examples" / "digits"
    pinned = tmp_path / "pinned.toml"
    pinned.write_text(PINNED_SPEC.format(examples=examples.resolve()))
    build_models(pinned, store, ["pinned"])

    with (
        running_torchserve(
            store,
            tmp_path / "run",
            models=["digits-tensor.mar", "pinned.mar"],
            settings={"torchserve_workers_per_model": 2},
        ) as ts,
        running_gateway(ts, env={"GATEWAY_MANAGEMENT_KEYS": "m" * 24}) as gateway,
    ):
        (project,) = client.get(f"{ts.management_url}/models/digits-tensor").json()
        (kept,) = client.get(f"{ts.management_url}/models/pinned").json()
        registered = client.post(
            f"{gateway.url}/models",
            params={"url": "digits.mar", "initial_workers": 3, "synchronous": "true"},
            headers={"authorization": f"Bearer {'m' * 24}"},
            timeout=180,
        )
        (asked,) = client.get(f"{ts.management_url}/models/digits").json()

    assert (project["minWorkers"], len(project["workers"])) == (2, 2)
    assert (kept["minWorkers"], len(kept["workers"])) == (1, 1)
    assert registered.status_code == 200, registered.text
    assert (asked["minWorkers"], len(asked["workers"])) == (3, 3)
