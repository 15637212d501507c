"""`make serve`'s start-up with a model whose handler raises in `initialize` (like
TorchServe's own `init-error.mar`): TorchServe would retry its worker forever; the launcher
sees the worker die and stops with the model's error, not when its readiness wait runs out."""

import shutil
from pathlib import Path

import pytest

from launcher.errors import LauncherError, ReadyTimeout
from tests.support.servers import running_torchserve

pytestmark = pytest.mark.integration

INIT_ERROR_HANDLER = """
from ts.torch_handler.base_handler import BaseHandler


class InitError(BaseHandler):
    def initialize(self, context):
        raise RuntimeError("init-error: marker-5c2e")
"""


def test_a_model_whose_workers_keep_dying_stops_the_start_with_its_error(
    echo_store: Path, tmp_path: Path
) -> None:
    from model_archiver.model_archiver_config import ModelArchiverConfig
    from model_archiver.model_packaging import generate_model_archive

    handler = tmp_path / "init_error_handler.py"
    handler.write_text(INIT_ERROR_HANDLER)
    store = tmp_path / "store"
    shutil.copytree(echo_store, store)
    generate_model_archive(
        ModelArchiverConfig(
            model_name="init-error", handler=str(handler), version="1.0", export_path=str(store)
        )
    )

    # The default readiness wait: the start must stop on the worker's death, not on that.
    with (
        pytest.raises(LauncherError) as stopped,
        running_torchserve(store, tmp_path / "run", timeout=180),
    ):
        pass
    assert not isinstance(stopped.value, ReadyTimeout), stopped.value
    first_line = str(stopped.value).split("\n", 1)[0]
    assert first_line.startswith("model init-error (init-error.mar) failed to load")
    # The model's own error, found in TorchServe's model log, is named first.
    assert first_line.endswith("RuntimeError: init-error: marker-5c2e"), first_line
