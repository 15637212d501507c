"""Two builds of the same inputs are byte-identical; unchanged archives are skipped."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch

from archive.build import build_models
from tests.unit.archive.helpers import image_entry, tensor_entry, tiny_state_dict, write_project


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = write_project(tmp_path / "project", [tensor_entry(), image_entry()])
    # A training checkpoint: what is archived is rebuilt from the loaded model each time.
    torch.save({"epoch": 1, "model_state_dict": tiny_state_dict()}, path.parent / "weights.pt")
    return path


def statuses(spec: Path, store: Path, *, force: bool = False) -> list[str]:
    return [result.status for result in build_models(spec, store, force=force)]


def test_two_builds_are_byte_identical(spec: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    assert statuses(spec, first) == ["built", "built"]
    assert statuses(spec, second) == ["built", "built"]
    for name in ("tiny.mar", "tiny-image.mar"):
        assert (first / name).read_bytes() == (second / name).read_bytes()


def test_source_date_epoch_sets_the_timestamps(
    spec: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # 2023-11-14 22:13:20 UTC
    build_models(spec, tmp_path / "store", ["tiny"])
    with zipfile.ZipFile(tmp_path / "store" / "tiny.mar") as archive:
        assert {info.date_time for info in archive.infolist()} == {(2023, 11, 14, 22, 13, 20)}
        manifest = archive.read("MAR-INF/MANIFEST.json").decode()
    assert '"createdOn": "14/11/2023 22:13:20"' in manifest


def test_unchanged_inputs_are_skipped(spec: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    assert statuses(spec, store) == ["built", "built"]
    before = (store / "tiny.mar").stat().st_mtime_ns
    assert statuses(spec, store) == ["skipped", "skipped"]
    assert (store / "tiny.mar").stat().st_mtime_ns == before
    assert statuses(spec, store, force=True) == ["built", "built"]


def test_a_changed_checkpoint_rebuilds(spec: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    build_models(spec, store)
    old = (store / "tiny.mar").read_bytes()
    changed = {key: value + 1 for key, value in tiny_state_dict().items()}
    torch.save(changed, spec.parent / "weights.pt")
    assert statuses(spec, store) == ["built", "built"]
    assert (store / "tiny.mar").read_bytes() != old


def test_a_changed_spec_entry_rebuilds_only_that_model(spec: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    build_models(spec, store)
    write_project(spec.parent, [tensor_entry(version="1.1"), image_entry()])
    assert statuses(spec, store) == ["built", "skipped"]


def test_a_missing_archive_rebuilds(spec: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    build_models(spec, store)
    (store / "tiny-image.mar").unlink()
    assert statuses(spec, store) == ["skipped", "built"]


# weights.pt is stored as is, the others deflated: a flipped byte fails a CRC or inflation.
@pytest.mark.parametrize("member", ["weights.pt", "model-config.yaml", "handlers/batch.py"])
def test_a_damaged_archive_rebuilds(spec: Path, tmp_path: Path, member: str) -> None:
    store = tmp_path / "store"
    build_models(spec, store)
    mar = store / "tiny.mar"
    good = mar.read_bytes()
    with zipfile.ZipFile(mar) as archive:
        info = archive.getinfo(member)
    # The member's data follows its 30-byte local header, file name and extra field.
    middle = info.header_offset + 30 + len(info.filename) + len(info.extra)
    middle += info.compress_size // 2
    damaged = bytearray(good)
    damaged[middle] ^= 0xFF
    mar.write_bytes(bytes(damaged))
    assert statuses(spec, store) == ["built", "skipped"]
    assert mar.read_bytes() == good


def test_a_missing_checkpoint_runs_prepare(tmp_path: Path) -> None:
    spec = write_project(tmp_path / "project", [tensor_entry(prepare="make_weights.py")])
    (spec.parent / "make_weights.py").write_text(
        "import torch\n"
        "torch.save({'linear.weight': torch.ones(3, 4), 'linear.bias': torch.zeros(3)},"
        " 'weights.pt')\n"
    )
    assert statuses(spec, tmp_path / "store") == ["built"]
    assert (spec.parent / "weights.pt").is_file()


def test_a_failing_prepare_stops_the_build(tmp_path: Path) -> None:
    from archive.errors import PrepareError

    spec = write_project(tmp_path / "project", [tensor_entry(prepare="make_weights.py")])
    (spec.parent / "make_weights.py").write_text("raise SystemExit(3)\n")
    with pytest.raises(PrepareError, match="failed with exit status 3"):
        build_models(spec, tmp_path / "store")
    (spec.parent / "make_weights.py").write_text("pass\n")
    with pytest.raises(PrepareError, match="did not create weights.pt"):
        build_models(spec, tmp_path / "store")
    assert not (tmp_path / "store").exists()
