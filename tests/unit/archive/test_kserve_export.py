"""`python -m archive export-kserve`: the layout KServe's TorchServe runtime reads.

The archives here are tiny echo archives (tests/support/archives.py) with their own
model-config.yaml; what TorchServe makes of the export is tests/integration/archive/
test_kserve_export_served.py.
"""

import json
from pathlib import Path

import pytest

from archive import cli
from archive.kserve_export import ExportError, export_kserve
from tests.support.archives import GREEDY_CONFIG, build_echo_archive

TIMEOUT_CONFIG = (
    "minWorkers: 2\nmaxWorkers: 3\nbatchSize: 4\nmaxBatchDelay: 7\nresponseTimeout: 9\n"
)


def read_properties(path: Path) -> dict[str, str]:
    """config.properties as KServe's wrapper reads it: `key=value`, split at the first `=`."""
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("store")
    build_echo_archive(store, "greedy", GREEDY_CONFIG)
    build_echo_archive(store, "timed", TIMEOUT_CONFIG)
    build_echo_archive(store, "plain")  # no model-config.yaml: TorchServe's defaults
    return store


def test_every_archive_is_exported_with_its_own_serving_settings(
    store: Path, tmp_path: Path
) -> None:
    export_kserve(store, tmp_path)
    assert sorted(p.name for p in (tmp_path / "model-store").iterdir()) == [
        "greedy.mar",
        "plain.mar",
        "timed.mar",
    ]
    for archive in store.glob("*.mar"):
        assert (tmp_path / "model-store" / archive.name).read_bytes() == archive.read_bytes()
    properties = read_properties(tmp_path / "config" / "config.properties")
    snapshot = json.loads(properties["model_snapshot"])
    assert snapshot["modelCount"] == 3
    assert snapshot["models"]["greedy"]["1.0"] == {
        "defaultVersion": True,
        "marName": "greedy.mar",
        "minWorkers": 1,
        "maxWorkers": 1,
        "batchSize": 2,
        "maxBatchDelay": 0,  # the archive's 0 is kept: TorchServe honours it from a snapshot
        "responseTimeout": 120,
    }
    timed = snapshot["models"]["timed"]["1.0"]
    assert (timed["minWorkers"], timed["maxWorkers"], timed["batchSize"]) == (2, 3, 4)
    assert (timed["maxBatchDelay"], timed["responseTimeout"]) == (7, 9)
    plain = snapshot["models"]["plain"]["1.0"]
    assert (plain["batchSize"], plain["maxBatchDelay"], plain["minWorkers"]) == (1, 100, 1)


def test_the_config_is_what_kserves_runtime_expects(store: Path, tmp_path: Path) -> None:
    export_kserve(store, tmp_path, ["greedy"])
    properties = read_properties(tmp_path / "config" / "config.properties")
    assert properties["enable_envvars_config"] == "true"
    assert properties["model_store"] == "/mnt/models/model-store"
    # KServe's wrapper listens on 8080 and forwards to TorchServe on 8085.
    assert properties["inference_address"] == "http://0.0.0.0:8085"
    assert properties["management_address"] == "http://0.0.0.0:8085"
    assert properties["metrics_address"].startswith("http://0.0.0.0:")
    assert properties["disable_token_authorization"] == "true"
    assert properties["install_py_dep_per_model"] == "false"
    assert "enable_model_api" not in properties, "nothing but the snapshot may be loaded"
    assert "load_models" not in properties


def test_named_archives_only_and_stale_ones_removed(store: Path, tmp_path: Path) -> None:
    export_kserve(store, tmp_path)
    export_kserve(store, tmp_path, ["timed", "greedy"])
    assert sorted(p.name for p in (tmp_path / "model-store").iterdir()) == [
        "greedy.mar",
        "timed.mar",
    ]
    snapshot = json.loads(
        read_properties(tmp_path / "config" / "config.properties")["model_snapshot"]
    )
    assert sorted(snapshot["models"]) == ["greedy", "timed"]


def test_a_missing_archive_is_named_and_nothing_is_written(store: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"no archive nope\.mar in .* \(there: greedy, plain"):
        export_kserve(store, tmp_path / "out", ["greedy", "nope"])
    assert not (tmp_path / "out").exists()


def test_an_empty_store_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="no archive in"):
        export_kserve(tmp_path, tmp_path / "out")


def test_an_unreadable_archive_is_named(tmp_path: Path) -> None:
    (tmp_path / "broken.mar").write_bytes(b"not a zip")
    with pytest.raises(ExportError, match=r"broken\.mar: not a readable model archive"):
        export_kserve(tmp_path, tmp_path / "out")


class TestCommand:
    def test_exports_and_says_what(
        self, store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        status = cli.main(["export-kserve", str(tmp_path), "--store", str(store), "greedy"])
        assert status == 0
        out = capsys.readouterr().out
        assert "exported greedy 1.0 (greedy.mar)" in out
        assert (tmp_path / "model-store" / "greedy.mar").is_file()

    def test_a_missing_archive_exits_1_with_the_cause(
        self, store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        status = cli.main(["export-kserve", str(tmp_path), "--store", str(store), "nope"])
        assert status == 1
        assert "error: no archive nope.mar" in capsys.readouterr().err

    def test_the_directory_is_required(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exited:
            cli.main(["export-kserve"])
        assert exited.value.code == 2
        assert "DIR" in capsys.readouterr().err
