from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from handlers.checkpoint import read_state_dict, strip_prefixes
from handlers.errors import CheckpointError
from tests.unit.handlers.helpers import affine_state_dict


def assert_same(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert sorted(actual) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(actual[key], value), key


@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_bare_state_dict(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"weights{suffix}"
    torch.save(affine_state_dict(), path)
    assert_same(read_state_dict(path), affine_state_dict())


def test_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "weights.safetensors"
    save_file(affine_state_dict(), str(path))
    assert_same(read_state_dict(path), affine_state_dict())


@pytest.mark.parametrize("key", ["model_state_dict", "state_dict"])
def test_training_checkpoint_dict(tmp_path: Path, key: str) -> None:
    model = nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 4)).sum().backward()
    optimizer.step()
    path = tmp_path / "checkpoint.pt"
    torch.save(
        {
            "epoch": 3,
            key: {"linear." + k: v for k, v in model.state_dict().items()},
            "optimizer_state_dict": optimizer.state_dict(),
            "loss": 0.25,
        },
        path,
    )
    expected = {"linear." + k: v for k, v in model.state_dict().items()}
    assert_same(read_state_dict(path), expected)


def multi_model_file(tmp_path: Path) -> Path:
    path = tmp_path / "gan.pt"
    a, b = nn.Linear(4, 2), nn.Linear(2, 1)
    torch.save(
        {
            "modelA_state_dict": a.state_dict(),
            "modelB_state_dict": b.state_dict(),
            "optimizerA_state_dict": torch.optim.Adam(a.parameters()).state_dict(),
            "optimizerB_state_dict": torch.optim.Adam(b.parameters()).state_dict(),
        },
        path,
    )
    return path


def test_multi_model_file_needs_a_key_and_lists_the_choices(tmp_path: Path) -> None:
    path = multi_model_file(tmp_path)
    with pytest.raises(CheckpointError) as caught:
        read_state_dict(path)
    message = str(caught.value)
    assert "'modelA_state_dict'" in message and "'modelB_state_dict'" in message
    assert "optimizer" not in message
    assert "checkpoint_key" in message


def test_multi_model_file_picks_by_key(tmp_path: Path) -> None:
    path = multi_model_file(tmp_path)
    weights = read_state_dict(path, key="modelB_state_dict")
    assert weights["weight"].shape == (1, 2)
    with pytest.raises(CheckpointError, match="modelC_state_dict.*'modelA_state_dict'"):
        read_state_dict(path, key="modelC_state_dict")


def test_data_parallel_prefixes_are_stripped(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    wrapped = nn.DataParallel(model).state_dict()
    assert all(k.startswith("module.") for k in wrapped)
    path = tmp_path / "dp.pt"
    torch.save(wrapped, path)
    assert_same(read_state_dict(path), model.state_dict())


def test_torch_compile_and_nested_prefixes_are_stripped(tmp_path: Path) -> None:
    model = nn.Linear(4, 2)
    compiled = torch.compile(model).state_dict()
    assert all(k.startswith("_orig_mod.") for k in compiled)
    nested = {"module." + k: v for k, v in compiled.items()}
    path = tmp_path / "compiled.pt"
    torch.save({"model_state_dict": nested, "epoch": 1}, path)
    assert_same(read_state_dict(path), model.state_dict())


def test_a_prefix_not_shared_by_every_key_is_kept() -> None:
    weights = {"module.weight": torch.ones(1), "other.weight": torch.ones(1)}
    assert sorted(strip_prefixes(weights)) == ["module.weight", "other.weight"]


def test_checkpoint_saved_on_a_gpu_loads_on_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "gpu.pt"
    with monkeypatch.context() as patch:
        patch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(affine_state_dict(), path)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)
    weights = read_state_dict(path, map_location="cpu")
    assert all(t.device.type == "cpu" for t in weights.values())
    assert_same(weights, affine_state_dict())


class WholeModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)


def test_whole_pickled_model_is_refused_with_how_to_convert(tmp_path: Path) -> None:
    path = tmp_path / "whole.pt"
    torch.save(WholeModel(), path)
    with pytest.raises(CheckpointError) as caught:
        read_state_dict(path)
    message = str(caught.value)
    assert "torch.save(model)" in message
    assert "python -m archive convert --trust-pickle" in message
    assert "WholeModel" in message


class CreatesMarker:
    """Unpickling this runs code: it creates a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


def test_unpickling_that_would_run_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model_state_dict": affine_state_dict(), "extra": CreatesMarker(marker)}, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused"):
        read_state_dict(path)
    assert not marker.exists()
    # The payload is real: unprotected unpickling does run its code.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_garbage_and_missing_files(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00\x01 definitely not a checkpoint")
    with pytest.raises(CheckpointError, match="can't be read"):
        read_state_dict(garbage)
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "absent.pt")
    bad_safetensors = tmp_path / "bad.safetensors"
    bad_safetensors.write_bytes(b"nope")
    with pytest.raises(CheckpointError, match="safetensors"):
        read_state_dict(bad_safetensors)


def test_checkpoint_without_any_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "meta.pt"
    torch.save({"epoch": 3, "loss": 0.1}, path)
    with pytest.raises(CheckpointError, match="holds no state_dict.*'epoch'"):
        read_state_dict(path)
