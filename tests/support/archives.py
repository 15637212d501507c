"""A tiny archive for tests of the launcher and the gateway that need no real model.

`build_echo_archive` packs `echo_model/echo_handler.py` (no torch, no weights) with
torch-model-archiver's Python API: TorchServe loads it in about a second.
"""

from pathlib import Path

ECHO_HANDLER = Path(__file__).parent / "echo_model" / "echo_handler.py"


def build_echo_archive(store: Path, name: str = "echo") -> Path:
    """Write `<store>/<name>.mar` (overwriting it) and return its path.

    Its predictions answer `{"echo_bytes": <size of the request body>}`.
    """
    from model_archiver.model_archiver_config import ModelArchiverConfig
    from model_archiver.model_packaging import generate_model_archive

    store.mkdir(parents=True, exist_ok=True)
    config = ModelArchiverConfig(
        model_name=name,
        handler=str(ECHO_HANDLER),
        version="1.0",
        export_path=str(store),
        force=True,
    )
    generate_model_archive(config)
    return store / f"{name}.mar"
