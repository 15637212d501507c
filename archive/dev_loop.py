"""A built archive, run in this process as TorchServe's worker runs it: no Java, no restart.

``check_archive`` loads the archive (integrity, settings, weights, hooks) and replays its
recorded examples (``handlers.golden``), one line per example. ``try_request`` answers one
request through the handler's own entry point (``CheckpointHandler``: the same decode, batch,
forward and encode, and the same bytes and status TorchServe would send). Both run the
``handlers`` package of this checkout, which is what the archive carries when it was built
from it.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from archive.errors import ArchiveError
from archive.examples import CONTENT_TYPES
from handlers import golden
from handlers.device import configure_threads
from handlers.integrity import verify_manifest
from handlers.predictor import load_predictor
from handlers.settings import HandlerSettings
from handlers.torchserve_entry import CheckpointHandler

CONFIG_NAME = "model-config.yaml"


@contextlib.contextmanager
def unpacked(mar: Path) -> Iterator[Path]:
    """``mar`` extracted into a temporary folder, as TorchServe does before a worker starts.

    Raises ArchiveError when it is not a readable zip.
    """
    with tempfile.TemporaryDirectory(prefix="archive-dev-") as folder:
        try:
            with zipfile.ZipFile(mar) as archive:
                # zipfile drops absolute paths and '..' parts: nothing lands outside `folder`.
                archive.extractall(folder)
        except (OSError, zipfile.BadZipFile) as exc:
            raise ArchiveError(f"{mar} can't be read as an archive: {exc}") from None
        yield Path(folder)


def archive_config(model_dir: Path) -> dict[str, Any]:
    """The unpacked archive's model-config.yaml; ArchiveError when it has none."""
    try:
        config = yaml.safe_load((model_dir / CONFIG_NAME).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ArchiveError(f"the archive has no readable {CONFIG_NAME}: {exc}") from None
    if not isinstance(config, dict):
        raise ArchiveError(f"the archive's {CONFIG_NAME} is not a mapping")
    return config


@dataclass(frozen=True)
class CheckResult:
    """What ``check`` found: one replay per recorded example, and how long replaying took."""

    replays: list[golden.Replay]
    tolerance: float
    load_seconds: float
    replay_seconds: float

    @property
    def ok(self) -> bool:
        return bool(self.replays) and all(replay.ok for replay in self.replays)

    def lines(self) -> list[str]:
        out = [
            f"{'ok  ' if r.ok else 'FAIL'} {r.example.name}: "
            + (f"largest difference {r.largest:.3g}" if r.ok else str(r.mismatch))
            for r in self.replays
        ]
        passed = sum(r.ok for r in self.replays)
        out.append(
            f"{passed} of {len(self.replays)} example(s) answer as recorded (tolerance "
            f"{self.tolerance:g}); loaded in {self.load_seconds * 1000:.0f} ms, replayed in "
            f"{self.replay_seconds * 1000:.1f} ms"
        )
        return out


def check_archive(mar: Path) -> CheckResult:
    """Load ``mar`` on CPU and replay every recorded example.

    Raises ArchiveError when the archive records no examples, the handler's errors
    (IntegrityError, SettingsError, ModelBuildError...) when it does not load.
    """
    with unpacked(mar) as model_dir:
        started = time.perf_counter()
        verify_manifest(model_dir)
        config = archive_config(model_dir)
        settings = HandlerSettings.from_dict(config.get("handler"))
        # The worker's thread count: replay times are then what a worker's load spends.
        configure_threads(int(config.get("minWorkers") or 1))
        predictor = load_predictor(settings, model_dir, "cpu")
        loaded = golden.load(model_dir)
        if loaded is None:
            raise ArchiveError(
                f"{mar.name} records no examples ({golden.EXAMPLES_NAME}); rebuild it with "
                "`python -m archive build --force`"
            )
        load_seconds = time.perf_counter() - started
        tolerance, examples = loaded
        started = time.perf_counter()
        replays = golden.replay(predictor, tolerance, examples)
        return CheckResult(replays, tolerance, load_seconds, time.perf_counter() - started)


class LocalContext:
    """The parts of TorchServe's ``Context`` the handler uses, for one request at a time
    (after ``ts/context.py``)."""

    def __init__(self, model_dir: Path, config: dict[str, Any], model_name: str) -> None:
        self.model_name = model_name
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": None}
        self.model_yaml_config = config
        self.content_type: str | None = None
        self.status = (200, "")
        self.headers: dict[str, str] = {}

    def get_request_header(self, idx: int, key: str) -> Any:
        # TorchServe keeps the body's Content-Type as a header of its input parameter.
        return {"content-type": self.content_type} if key == "body" else None

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.status = (code, phrase)

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        self.headers[key] = value

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.headers["content-type"] = value


def try_request(mar: Path, body: bytes, content_type: str | None) -> tuple[int, bytes]:
    """The status and body bytes the served ``mar`` would answer ``body`` with.

    The handler loads as in TorchServe (so an archive that would refuse to load raises the
    same error here), then answers the body as TorchServe hands it over (JSON decoded, text
    as str, anything else as bytes).
    """
    with unpacked(mar) as model_dir:
        config = archive_config(model_dir)
        context = LocalContext(model_dir, config, Path(mar).stem)
        handler = CheckpointHandler()
        handler.initialize(context)
        context.content_type = content_type
        answers = handler.handle([{"body": golden.torchserve_payload(body, content_type)}], context)
        answer = answers[0]
        data = answer if isinstance(answer, bytes) else json.dumps(answer, indent=2).encode()
        return context.status[0], data


def read_body(body: str, content_type: str | None, stdin: Any) -> tuple[bytes, str | None]:
    """``try``'s BODY: a file (its type from its extension unless given), ``-`` for standard
    input, or else the text itself (JSON when it parses as JSON, text/plain otherwise)."""
    if body == "-":
        return stdin.read(), content_type
    path = Path(body)
    if path.is_file():
        return path.read_bytes(), content_type or CONTENT_TYPES.get(path.suffix.lower())
    data = body.encode()
    if content_type is None:
        try:
            json.loads(data)
            content_type = "application/json"
        except ValueError:
            content_type = "text/plain"
    return data, content_type
