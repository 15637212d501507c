import zipfile
from pathlib import Path

import pytest

from launcher.errors import LauncherError
from launcher.registration import registration_query
from service.archive_config import ArchiveUnreadable, archive_config, batching_query
from tests.support.archives import GREEDY_CONFIG, build_echo_archive


def test_batch_size_and_a_zero_delay_are_read_from_the_archive(tmp_path: Path) -> None:
    archive = build_echo_archive(tmp_path, "greedy", GREEDY_CONFIG)
    assert archive_config(archive)["maxBatchDelay"] == 0
    assert batching_query(archive) == {"batch_size": "2", "max_batch_delay": "0"}
    assert registration_query(archive, default_workers=3) == {
        "url": "greedy.mar",
        "initial_workers": "3",
        "batch_size": "2",
        "max_batch_delay": "0",
    }


def test_an_archive_without_config_asks_for_nothing(tmp_path: Path) -> None:
    archive = build_echo_archive(tmp_path, "plain")
    assert batching_query(archive) == {}
    assert registration_query(archive, 2) == {"url": "plain.mar", "initial_workers": "2"}


@pytest.mark.parametrize(
    "config",
    ["batchSize: true\nmaxBatchDelay: -1\n", "batchSize: 0\nmaxBatchDelay: '5'\n", "- a list\n"],
)
def test_values_torchserve_would_not_take_are_left_out(tmp_path: Path, config: str) -> None:
    assert batching_query(build_echo_archive(tmp_path, "odd", config)) == {}


def test_what_is_not_an_archive_is_unreadable(tmp_path: Path) -> None:
    not_zip = tmp_path / "x.mar"
    not_zip.write_bytes(b"not a zip")
    no_manifest = tmp_path / "y.mar"
    with zipfile.ZipFile(no_manifest, "w") as mar:
        mar.writestr("model-config.yaml", "batchSize: 2\n")
    bad_yaml = build_echo_archive(tmp_path, "bad", "batchSize: [2\n")
    for archive in (not_zip, no_manifest, bad_yaml, tmp_path / "missing.mar"):
        with pytest.raises(ArchiveUnreadable, match=archive.name):
            batching_query(archive)
    with pytest.raises(LauncherError, match="x.mar"):
        registration_query(not_zip, 1)


@pytest.mark.parametrize("name", ["../echo.mar", "sub/echo.mar", "echo", "echo.tar.gz", ""])
def test_the_launcher_takes_archive_file_names_only(tmp_path: Path, name: str) -> None:
    from launcher.torchserve import TorchServe
    from tests.support.servers import torchserve_settings

    with pytest.raises(LauncherError, match="file name"):
        TorchServe(torchserve_settings(tmp_path, tmp_path / "run"), models=[name])
