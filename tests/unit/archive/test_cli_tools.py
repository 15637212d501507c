"""``python -m archive inspect`` and ``convert --trust-pickle``."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from archive.build import build_models
from archive.cli import main
from tests.unit.archive.helpers import tensor_entry, tiny_state_dict, write_project

NET_SOURCE = textwrap.dedent(
    """
    import torch
    from torch import nn


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 3)

        def forward(self, x):
            return self.linear(x)
    """
)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_inspect_a_training_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.Adam(model.parameters())
    path = tmp_path / "ckpt.pt"
    torch.save(
        {
            "epoch": 12,
            "model_state_dict": tiny_state_dict(),
            "optimizer_state_dict": optimizer.state_dict(),
            "loss": 0.25,
        },
        path,
    )
    status, out, _ = run(capsys, "inspect", str(path))
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == "ckpt.pt: a checkpoint dict with 4 entries, 1 of them state_dicts"
    assert "  epoch: 12" in lines
    assert "  loss: 0.25" in lines
    assert "  optimizer_state_dict: optimizer state (1 param group(s))" in lines
    assert "state_dict 'model_state_dict':" in lines
    assert lines[lines.index("state_dict 'model_state_dict':") + 1].split() == [
        "linear.weight",
        "[3,",
        "4]",
        "float32",
    ]
    assert "  2 tensors, 15 parameters, 60 bytes" in lines
    assert lines[-1] == "the build would use: entry 'model_state_dict'"


def test_inspect_a_bare_state_dict_with_prefixes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "dp.pt"
    torch.save({"module." + k: v.half() for k, v in tiny_state_dict().items()}, path)
    status, out, _ = run(capsys, "inspect", str(path))
    assert status == 0
    assert out.splitlines()[0] == "dp.pt: a bare state_dict"
    assert "float16" in out and "15 parameters, 30 bytes" in out
    assert "the whole file, with the prefix 'module.' stripped from every key" in out


def test_inspect_a_multi_model_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gan.pt"
    torch.save({"generator": tiny_state_dict(), "discriminator": tiny_state_dict()}, path)
    status, out, _ = run(capsys, "inspect", str(path))
    assert status == 0
    assert "state_dict 'generator':" in out and "state_dict 'discriminator':" in out
    assert "none without checkpoint_key" in out


def test_inspect_a_safetensors_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors.torch import save_file

    save_file(tiny_state_dict(), str(tmp_path / "w.safetensors"))
    status, out, _ = run(capsys, "inspect", str(tmp_path / "w.safetensors"))
    assert status == 0 and "w.safetensors: a bare state_dict" in out


def test_inspect_refuses_a_pickled_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.save(torch.nn.Linear(4, 3), tmp_path / "whole.pt")
    status, out, err = run(capsys, "inspect", str(tmp_path / "whole.pt"))
    assert (status, out) == (1, "")
    assert "python -m archive convert --trust-pickle whole.pt" in err


@pytest.fixture
def netdef(tmp_path: Path) -> Iterator[Path]:
    """A model file whose class a pickle refers to as ``netdef.Net``; forgotten afterwards."""
    path = tmp_path / "netdef.py"
    path.write_text(NET_SOURCE)
    yield path
    sys.modules.pop("netdef", None)
    if str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


def pickle_from_module(netdef: Path, output: Path) -> torch.nn.Module:
    spec = importlib.util.spec_from_file_location("netdef", netdef)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["netdef"] = module
    spec.loader.exec_module(module)
    model: torch.nn.Module = module.Net()
    model.load_state_dict(tiny_state_dict())
    torch.save(model, output)
    del sys.modules["netdef"]  # as on the user's machine: only --model-file makes it importable
    return model


def test_convert_needs_trust_pickle(
    netdef: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pickle_from_module(netdef, tmp_path / "whole.pt")
    out_file = tmp_path / "weights.pt"
    status, _, err = run(capsys, "convert", str(tmp_path / "whole.pt"), str(out_file))
    assert status == 2
    assert "without --trust-pickle" in err and "runs any code" in err
    assert not out_file.exists()


def test_convert_a_pickled_model_then_build_it(
    netdef: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    pickle_from_module(netdef, tmp_path / "whole.pt")
    project = tmp_path / "project"
    out_file = project / "weights.pt"
    status, out, _ = run(
        capsys,
        "convert",
        "--trust-pickle",
        "--model-file",
        str(netdef),
        str(tmp_path / "whole.pt"),
        str(out_file),
    )
    assert status == 0
    assert "runs any code" in caplog.text
    assert "2 tensors, 15 parameters of netdef.Net" in out
    assert 'model_class = "Net"' in out
    converted = torch.load(out_file, weights_only=True)
    assert list(converted) == ["linear.weight", "linear.bias"]
    assert all(torch.equal(converted[k], v) for k, v in tiny_state_dict().items())
    spec = write_project(project, [tensor_entry()])
    assert build_models(spec, tmp_path / "store")[0].status == "built"


def test_convert_without_the_class_says_how_to_fix_it(
    netdef: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pickle_from_module(netdef, tmp_path / "whole.pt")
    status, _, err = run(
        capsys, "convert", "--trust-pickle", str(tmp_path / "whole.pt"), str(tmp_path / "o.pt")
    )
    assert status == 1
    assert "--model-file" in err and "PYTHONPATH" in err
    assert not (tmp_path / "o.pt").exists()


def test_convert_a_class_pickled_from_a_script(netdef: Path, tmp_path: Path) -> None:
    """A training script's own class pickles as ``__main__.Net``: --model-file resolves it."""
    script = NET_SOURCE + textwrap.dedent(
        f"""
        model = Net()
        torch.save(model, {str(tmp_path / "whole.pt")!r})
        torch.save(model.state_dict(), {str(tmp_path / "expected.pt")!r})
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    completed = subprocess.run(
        [
            sys.executable, "-m", "archive", "convert", "--trust-pickle",
            "--model-file", str(netdef), str(tmp_path / "whole.pt"), str(tmp_path / "out.pt"),
        ],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert "WARNING: unpickling" in completed.stderr
    converted = torch.load(tmp_path / "out.pt", weights_only=True)
    expected = torch.load(tmp_path / "expected.pt", weights_only=True)
    assert converted.keys() == expected.keys()
    assert all(torch.equal(converted[k], expected[k]) for k in expected)


def test_convert_refuses_what_is_not_a_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.save(tiny_state_dict(), tmp_path / "plain.pt")
    status, _, err = run(
        capsys, "convert", "--trust-pickle", str(tmp_path / "plain.pt"), str(tmp_path / "o.pt")
    )
    assert status == 1
    assert "not a pickled nn.Module" in err
