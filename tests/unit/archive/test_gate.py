"""The gate: a model that can't load or answer fails the build, names the cause, and leaves the
store exactly as it was."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from archive.cli import main
from archive.gate import GATEWAY_BATCH
from tests.unit.archive.helpers import tensor_entry, tiny_state_dict, write_project


def snapshot(store: Path) -> dict[str, bytes]:
    if not store.exists():
        return {}
    return {name: (store / name).read_bytes() for name in sorted(os.listdir(store))}


def build(tmp_path: Path, *names: str) -> int:
    return main(
        ["build", "--spec", str(tmp_path / "project" / "models.toml"),
         "--store", str(tmp_path / "store"), *names]
    )  # fmt: skip


def project(tmp_path: Path, weights: Any, **entry: Any) -> Path:
    spec = write_project(tmp_path / "project", [tensor_entry(**entry)])
    torch.save(weights, spec.parent / "weights.pt")
    return spec


def failing_build(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    store = tmp_path / "store"
    before = snapshot(store)
    assert build(tmp_path) == 1
    assert snapshot(store) == before  # no .mar, no temporary file, nothing changed
    err = capsys.readouterr().err
    assert err.startswith("error: model 'tiny'")
    return err


def test_wrong_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    renamed = {key.replace("linear", "fc"): value for key, value in tiny_state_dict().items()}
    project(tmp_path, renamed)
    err = failing_build(tmp_path, capsys)
    assert "missing from the checkpoint (2): linear.weight, linear.bias" in err
    assert "unexpected in the checkpoint (2): fc.weight, fc.bias" in err


def test_wrong_shapes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project(tmp_path, tiny_state_dict(), model_kwargs={"out_features": 2})
    err = failing_build(tmp_path, capsys)
    assert "shape mismatches (2)" in err
    assert "linear.weight: checkpoint [3, 4] vs model [2, 4]" in err


def test_class_that_raises_in_init(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project(tmp_path, tiny_state_dict(), model_class="Raises")
    assert "RuntimeError: boom in __init__" in failing_build(tmp_path, capsys)


def test_unknown_class(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project(tmp_path, tiny_state_dict(), model_class="Absent")
    assert "no nn.Module class 'Absent'" in failing_build(tmp_path, capsys)


def test_output_with_the_wrong_batch_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project(tmp_path, tiny_state_dict(), model_class="WrongBatch")
    err = failing_build(tmp_path, capsys)
    assert "can't answer a batch of 4 in one forward pass" in err
    assert "the model returned shape [1, 3] for a batch of 4" in err


def test_batch_size_1_skips_the_batched_forward(tmp_path: Path) -> None:
    project(tmp_path, tiny_state_dict(), model_class="WrongBatch", serving={"batch_size": 1})
    assert build(tmp_path) == 0


def test_the_gateways_batches_are_checked_even_at_batch_size_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # TorchServe would send it one request at a time; the gateway sends up to 16 at once.
    serving = {"batch_size": 1}
    project(tmp_path, tiny_state_dict(), model_class="NotFiniteInBatches", serving=serving)
    err = failing_build(tmp_path, capsys)
    assert f"of a batch of {GATEWAY_BATCH}" in err and "non-finite" in err


def test_non_finite_answers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project(tmp_path, tiny_state_dict(), model_class="NotFinite")
    err = failing_build(tmp_path, capsys)
    assert "malformed answer to request 0 of a batch of 1" in err
    assert "non-finite" in err


def test_missing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = project(tmp_path, tiny_state_dict())
    (spec.parent / "weights.pt").unlink()
    assert "checkpoint not found" in failing_build(tmp_path, capsys)


def test_pickled_whole_model_is_refused_with_the_convert_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project(tmp_path, torch.nn.Linear(4, 3))
    err = failing_build(tmp_path, capsys)
    assert "needs arbitrary unpickling" in err
    assert "python -m archive convert --trust-pickle" in err


def test_a_failed_rebuild_keeps_the_previous_archive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = project(tmp_path, tiny_state_dict())
    assert build(tmp_path) == 0
    built = snapshot(tmp_path / "store")
    assert list(built) == ["tiny.mar"]
    torch.save({"fc.weight": torch.ones(3, 4)}, spec.parent / "weights.pt")
    assert "does not load" in failing_build(tmp_path, capsys)
    assert snapshot(tmp_path / "store") == built


def test_the_first_failure_stops_the_build(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_project(
        tmp_path / "project",
        [tensor_entry("good"), tensor_entry("bad", model_class="Raises"), tensor_entry("later")],
    )
    torch.save(tiny_state_dict(), spec.parent / "weights.pt")
    assert build(tmp_path) == 1
    assert sorted(os.listdir(tmp_path / "store")) == ["good.mar"]
    out, err = capsys.readouterr()
    assert "good: built" in out and "later" not in out
    assert "model 'bad'" in err


def test_unknown_model_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project(tmp_path, tiny_state_dict())
    assert build(tmp_path, "nope") == 1
    assert "no model named 'nope'; models it defines: tiny" in capsys.readouterr().err
    assert not (tmp_path / "store").exists()


def test_spec_errors_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_project(tmp_path / "project", [tensor_entry(colour="red")])
    assert build(tmp_path) == 1
    assert "model 'tiny': unknown key 'colour'" in capsys.readouterr().err
