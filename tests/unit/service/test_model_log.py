"""The model's own error, read from TorchServe's model log when a worker dies while loading."""

from pathlib import Path

from service.model_log import last_model_error

LOG = """\
T40 [INFO] W-9000-other_1.0-stdout MODEL_LOG - ValueError: not this model
T43 [INFO] W-9001-init-error_1.0-stdout MODEL_LOG -     raise RuntimeError("x")
T43 [INFO] W-9001-init-error_1.0-stdout MODEL_LOG - RuntimeError: marker-5c2e
T45 [INFO] W-9001-init-error_1.0-stdout MODEL_LOG - RuntimeError: 500 - Unknown exception
T46 [INFO] W-9001-init-error_1.0-stdout MODEL_LOG - Backend worker process died.
T47 [INFO] W-9002-other_1.0-stdout MODEL_LOG - KeyError: 'still not this model'
"""


def test_the_last_exception_of_the_models_workers_not_torchserves_wrapper(tmp_path: Path) -> None:
    log = tmp_path / "model_log.log"
    log.write_text(LOG)
    assert last_model_error(log, "init-error") == "RuntimeError: marker-5c2e"
    assert last_model_error(log, "other") == "KeyError: 'still not this model'"
    assert last_model_error(log, "absent") is None
    assert last_model_error(tmp_path / "missing.log", "init-error") is None
