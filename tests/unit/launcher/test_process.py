"""ChildProcess: readiness errors carry the log tail; stop leaves no process behind."""

import sys
from pathlib import Path

import psutil
import pytest

from launcher.errors import ProcessExited, ReadyTimeout
from launcher.process import ChildProcess, child_env

# A parent that ignores SIGTERM and starts a child that ignores it too, both printing a line.
STUBBORN = """
import signal, subprocess, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)
code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
subprocess.Popen([sys.executable, "-c", code])
print("started", flush=True)
signal.pause()
"""


def test_stop_kills_a_tree_that_ignores_sigterm(tmp_path: Path) -> None:
    output = tmp_path / "out.log"
    child = ChildProcess(
        "stubborn", [sys.executable, "-c", STUBBORN], env=child_env(), output=output
    )
    child.start()
    assert child.pid is not None
    parent = psutil.Process(child.pid)
    child.wait_until(
        lambda: len(parent.children()) == 1 and "started" in output.read_text(),
        timeout=30,
        what="its child started",
    )
    tree = [parent, *parent.children(recursive=True)]

    code = child.stop(grace=0.5)

    assert code is not None and code < 0
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in tree)
    assert child.stop() == code  # a second stop is harmless


def test_wait_until_reports_an_early_exit_with_the_log_tail(tmp_path: Path) -> None:
    script = "import sys; print('the reason it failed'); sys.exit(3)"
    child = ChildProcess(
        "failing", [sys.executable, "-c", script], env=child_env(), output=tmp_path / "out.log"
    )
    child.start()

    with pytest.raises(ProcessExited, match=r"(?s)exited with status 3.*the reason it failed"):
        child.wait_until(lambda: False, timeout=30, what="never")
    child.stop()


def test_wait_until_times_out_with_the_log_tail(tmp_path: Path) -> None:
    script = "import time; print('still booting', flush=True); time.sleep(600)"
    output = tmp_path / "out.log"
    child = ChildProcess("slow", [sys.executable, "-c", script], env=child_env(), output=output)
    child.start()
    try:
        child.wait_until(
            lambda: output.exists() and "booting" in output.read_text(), timeout=30, what="printed"
        )
        with pytest.raises(ReadyTimeout, match=r"(?s)within 0 s.*still booting"):
            child.wait_until(lambda: False, timeout=0.3, what="ready")
    finally:
        child.stop(grace=5)
    assert child.returncode() is not None


def test_child_env_layers_extra_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAUNCHER_TEST_A", "from-parent")

    env = child_env({"LAUNCHER_TEST_B": "extra"})

    assert env["LAUNCHER_TEST_A"] == "from-parent"
    assert env["LAUNCHER_TEST_B"] == "extra"
