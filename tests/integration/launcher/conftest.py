"""A model store with the echo archive, shared by the launcher's integration tests."""

from pathlib import Path

import pytest

from tests.support.archives import build_echo_archive


@pytest.fixture(scope="session")
def echo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("echo-store")
    build_echo_archive(store)
    return store
