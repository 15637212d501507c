"""A tiny archive for tests of the launcher and the gateway that need no real model.

`build_echo_archive` packs `echo_model/echo_handler.py` (no torch, no weights) with
torch-model-archiver's Python API: TorchServe loads it in about a second.
"""

import tempfile
from pathlib import Path

ECHO_HANDLER = Path(__file__).parent / "echo_model" / "echo_handler.py"
# The project's serving setting (archive/spec.py): what is queued, never waiting.
GREEDY_CONFIG = "minWorkers: 1\nmaxWorkers: 1\nbatchSize: 2\nmaxBatchDelay: 0\n"


def build_echo_archive(store: Path, name: str = "echo", model_config: str | None = None) -> Path:
    """Write `<store>/<name>.mar` (overwriting it) and return its path.

    Its predictions answer `{"echo_bytes": <size of the request body>}`. `model_config`: the
    text of its model-config.yaml (none by default).
    """
    from model_archiver.model_archiver_config import ModelArchiverConfig
    from model_archiver.model_packaging import generate_model_archive

    store.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as staging:
        config_file = None
        if model_config is not None:
            config_file = Path(staging) / "model-config.yaml"
            config_file.write_text(model_config)
        config = ModelArchiverConfig(
            model_name=name,
            handler=str(ECHO_HANDLER),
            version="1.0",
            export_path=str(store),
            config_file=str(config_file) if config_file else None,
            force=True,
        )
        generate_model_archive(config)
    return store / f"{name}.mar"
