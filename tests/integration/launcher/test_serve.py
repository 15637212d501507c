"""`python -m launcher serve` as a user runs it: it predicts, and a signal stops every process."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.ports import free_ports

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
SAMPLE = REPO / "examples" / "digits" / "sample.png"
READY_LINE = "The gateway is ready on"
START_TIMEOUT_S = 180


@pytest.fixture(scope="session")
def digits_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from archive.build import build_models

    store = tmp_path_factory.mktemp("digits-store")
    build_models(store=store, names=["digits"])
    return store


def readme_answer() -> dict[str, float]:
    """The answer README.md shows for `curl ... /predictions/digits -T .../sample.png`."""
    lines = (REPO / "README.md").read_text().splitlines()
    for index, line in enumerate(lines):
        if line.startswith("curl -X POST http://127.0.0.1:8000/predictions/digits -T"):
            shown = lines[index + 1]
            assert shown.startswith("# {"), shown
            answer: dict[str, float] = json.loads(shown.removeprefix("# "))
            return answer
    raise AssertionError("README.md shows no answer for sample.png")


def serve_env(store: Path, run_dir: Path, gateway_port: int) -> dict[str, str]:
    ports = free_ports(6)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "TORCHSERVE_"))}
    env.update(
        GATEWAY_HOST="127.0.0.1",
        GATEWAY_PORT=str(gateway_port),
        TORCHSERVE_INFERENCE_PORT=str(ports[0]),
        TORCHSERVE_MANAGEMENT_PORT=str(ports[1]),
        TORCHSERVE_METRICS_PORT=str(ports[2]),
        TORCHSERVE_GRPC_INFERENCE_PORT=str(ports[3]),
        TORCHSERVE_GRPC_MANAGEMENT_PORT=str(ports[4]),
        TORCHSERVE_WORKER_PORT=str(ports[5]),
        MODEL_STORE=str(store),
        RUN_DIR=str(run_dir),
    )
    return env


class Serve:
    """`python -m launcher serve` in a subprocess, its output in a file."""

    def __init__(self, env: dict[str, str], output: Path) -> None:
        self.output = output
        with output.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "launcher", "serve"],
                env=env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_for_line(self, line: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while line not in self.text():
            if self.proc.poll() is not None:
                pytest.fail(f"launcher exited with {self.proc.returncode}:\n{self.text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {line!r} within {timeout} s:\n{self.text()}")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(0.2)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[list[Serve]]:
    """Started launchers; any still running at the end is stopped (then killed)."""
    started: list[Serve] = []
    yield started
    for s in started:
        if s.proc.poll() is None:
            s.proc.send_signal(signal.SIGTERM)
            try:
                s.proc.wait(60)
            except subprocess.TimeoutExpired:
                s.proc.kill()
                s.proc.wait()


def processes_mentioning(text: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(text in part for part in proc.info["cmdline"] or []):
            found.append(proc)
    return found


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_serve_predicts_and_leaves_no_process(
    digits_store: Path, tmp_path: Path, serve: list[Serve], stop_signal: signal.Signals
) -> None:
    (gateway_port,) = free_ports(1)
    run_dir = tmp_path / "run"
    launcher = Serve(serve_env(digits_store, run_dir, gateway_port), tmp_path / "serve.out")
    serve.append(launcher)

    launcher.wait_for_line(READY_LINE, START_TIMEOUT_S)
    children = psutil.Process(launcher.proc.pid).children(recursive=True)
    commands = [" ".join(child.cmdline()) for child in children]
    with httpx.Client(trust_env=False, timeout=30) as client:
        answer = client.post(
            f"http://127.0.0.1:{gateway_port}/predictions/digits", content=SAMPLE.read_bytes()
        )
    launcher.proc.send_signal(stop_signal)
    code = launcher.proc.wait(60)

    assert answer.status_code == 200, answer.text
    # The README's answer for sample.png: the same labels in the same order, the same
    # probabilities (to float noise between CPUs).
    readme = readme_answer()
    assert list(answer.json()) == list(readme), answer.text
    assert answer.json() == pytest.approx(readme, rel=1e-4, abs=1e-9)
    assert f"http://127.0.0.1:{gateway_port}/predictions/digits -T" in launcher.text()
    assert any("org.pytorch.serve.ModelServer" in c for c in commands), commands
    assert any("model_service_worker" in c for c in commands), commands
    assert any("uvicorn" in c and "service.app:create_app" in c for c in commands), commands
    assert code == 0, launcher.text()
    survivors = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert survivors == []
    assert processes_mentioning(str(run_dir)) == []
    assert (run_dir / "torchserve" / "logs" / "ts_log.log").is_file()


def test_serve_refuses_a_taken_gateway_port_before_starting_anything(
    digits_store: Path, tmp_path: Path, serve: list[Serve]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run_dir = tmp_path / "run"
        launcher = Serve(serve_env(digits_store, run_dir, port), tmp_path / "serve.out")
        serve.append(launcher)
        code = launcher.proc.wait(60)

    assert code == 1
    assert f"GATEWAY_PORT port {port} on 127.0.0.1 is already in use" in launcher.text()
    assert not (run_dir / "torchserve").exists()
