"""A user's own steps: the functions of an archive's hooks file, around the model's task.

The hooks file (``hooks = "my_hooks.py"`` in the spec; torch, numpy and the standard library)
may define any of::

    decode(body, content_type) -> tensor | dict[str, tensor]   one request body to one instance
    encode(row) -> JSON value                                  one row of the output to an answer
    setup(model, settings)                                     once, after the model is loaded

``HookedTask`` puts them in place of the task's own steps; what the file leaves undefined is
the task's (``task = "custom"`` needs decode and encode). Collation stays the task's. A hook
that raises fails that request alone: ``ValueError``/``TypeError`` in decode is the body's
fault (400, the hook's message), anything else a 500 with the hook's message; never a
traceback. State a hook keeps between calls (a vocabulary read by ``setup``) lives in the
hooks file's module, which is loaded anew for each model load.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from handlers.batch import Failure
from handlers.errors import HookError, ModelBuildError, RequestError, SettingsError
from handlers.inputs import POSITIONAL, Call, Instance
from handlers.tasks import Task

if TYPE_CHECKING:
    from handlers.settings import HandlerSettings

logger = logging.getLogger(__name__)

HOOK_NAMES = ("decode", "encode", "setup")


@dataclass(frozen=True)
class Hooks:
    """The hooks a file defines (None for those it leaves to the task)."""

    source: str
    decode: Callable[[Any, str | None], Any] | None = None
    encode: Callable[[Any], Any] | None = None
    setup: Callable[[nn.Module, HookSettings], Any] | None = None


@dataclass(frozen=True)
class HookSettings:
    """What ``setup(model, settings)`` gets: where the archive's files are and how it runs.

    ``extra_files`` maps each extra file's name (as listed in the spec, without its folder) to
    its path; ``model_dir`` is the folder holding the archive's files; ``handler`` the
    archive's handler settings.
    """

    model_dir: Path
    device: torch.device
    extra_files: Mapping[str, Path]
    handler: HandlerSettings


@dataclass(frozen=True)
class RequestBody:
    """A request body with the Content-Type it came with: what a decode hook is called with.

    ``body`` is as TorchServe hands it to a handler: JSON already decoded, text as str,
    anything else as bytes.
    """

    body: Any
    content_type: str | None


def load_hooks(path: Path) -> Hooks:
    """Import the hooks file at ``path`` (as a fresh module) and pick its hooks.

    Raises ModelBuildError when it can't be imported, defines none of the hooks, or defines
    one that is not callable.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise ModelBuildError(f"hooks file not found: {path.name}")
    module = _import_fresh(path)
    found: dict[str, Any] = {}
    for name in HOOK_NAMES:
        value = getattr(module, name, None)
        if value is None:
            continue
        if not callable(value):
            raise ModelBuildError(f"{path.name}: '{name}' must be a function")
        found[name] = value
    if not found:
        raise ModelBuildError(f"{path.name} defines none of the hooks: {', '.join(HOOK_NAMES)}")
    return Hooks(path.name, **found)


def _import_fresh(path: Path) -> ModuleType:
    # A name unique to the file; loaded anew each time, so a load starts with fresh hook state.
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    module_name = f"served_hooks_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ModelBuildError(f"can't import {path.name}")
    module = importlib.util.module_from_spec(spec)
    # Sibling files (the model file, helpers) are importable, as they are inside an archive.
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise ModelBuildError(f"importing {path.name} failed: {type(exc).__name__}: {exc}") from exc
    return module


def attach_hooks(
    task: Task,
    model: nn.Module,
    settings: HandlerSettings,
    base_dir: Path,
    device: torch.device,
) -> Task:
    """``task`` with the hooks of ``settings.hooks`` in place of its steps (``task`` itself
    when there are none), after running ``setup``.

    Raises ModelBuildError when the hooks can't be loaded or ``setup`` fails, SettingsError
    when task 'custom' lacks decode or encode, or an extra file is missing.
    """
    if settings.hooks is None:
        return task
    hooks = load_hooks(base_dir / settings.hooks)
    if settings.task == "custom":
        missing = [name for name in ("decode", "encode") if getattr(hooks, name) is None]
        if missing:
            raise SettingsError(
                f"task 'custom' takes every step from its hooks; {hooks.source} does not "
                f"define {' or '.join(missing)}"
            )
    extra = {Path(name).name: base_dir / name for name in settings.extra_files or ()}
    absent = sorted(name for name, path in extra.items() if not path.is_file())
    if absent:
        raise SettingsError(f"extra file(s) not found: {', '.join(absent)}")
    if hooks.setup is not None:
        try:
            hooks.setup(model, HookSettings(base_dir, device, extra, settings))
        except Exception as exc:
            raise ModelBuildError(
                f"the setup hook of {hooks.source} failed: {type(exc).__name__}: {exc}"
            ) from exc
    logger.info(
        "Hooks from %s: %s",
        hooks.source,
        ", ".join(n for n in HOOK_NAMES if getattr(hooks, n) is not None),
    )
    return HookedTask(task, hooks)


class HookedTask:
    """A task whose decode and encode are the user's hooks where the hooks file defines them."""

    def __init__(self, task: Task, hooks: Hooks) -> None:
        self.task = task
        self.hooks = hooks

    @property
    def takes_content_type(self) -> bool:
        """True when requests should reach ``decode`` as ``RequestBody`` (with their type)."""
        return self.hooks.decode is not None

    def decode(self, payload: Any) -> Instance:
        if isinstance(payload, RequestBody):
            body, content_type = payload.body, payload.content_type
        else:
            body, content_type = payload, guess_content_type(payload)
        if self.hooks.decode is None:
            return self.task.decode(body)
        if isinstance(body, bytearray):
            body = bytes(body)
        try:
            value = self.hooks.decode(body, content_type)
        except (ValueError, TypeError) as exc:
            message = str(exc) or f"the decode hook refused the body ({type(exc).__name__})"
            raise RequestError(message) from None
        except Exception as exc:
            logger.warning("The decode hook failed: %s: %s", type(exc).__name__, exc)
            raise HookError(f"the decode hook failed: {type(exc).__name__}: {exc}") from None
        return as_instance(value)

    def collate(self, instances: Sequence[Instance]) -> list[Call]:
        return self.task.collate(instances)

    def encode(self, output: Any) -> Any:
        if self.hooks.encode is None:
            return self.task.encode(output)
        try:
            answer = self.hooks.encode(output)
        except Exception as exc:
            logger.warning("The encode hook failed: %s: %s", type(exc).__name__, exc)
            message = f"the encode hook failed: {type(exc).__name__}: {exc}"
            return Failure(500, "ModelError", message)
        try:
            # The answer leaves as JSON: NaN, tensors, sets and the like fail here, alone.
            json.dumps(answer, allow_nan=False)
        except (TypeError, ValueError) as exc:
            return Failure(500, "ModelError", f"the encode hook's answer is not JSON: {exc}")
        return answer

    def encode_rows(self, output: Any, count: int) -> list[Any] | None:
        if self.hooks.encode is not None:
            return None  # the hook answers row by row
        return self.task.encode_rows(output, count)

    def example_payloads(self, generator: np.random.Generator) -> list[Any]:
        return self.task.example_payloads(generator)

    def check_answer(self, answer: Any) -> None:
        if self.hooks.encode is None:
            self.task.check_answer(answer)
        # An encode hook's answer has the form its author chose; that it is JSON is checked
        # by encode itself.


def as_instance(value: Any) -> Instance:
    """A decode hook's value as an instance: a tensor (or numpy array) is the model's one
    positional input; a dict of them its keyword arguments. HookError (500) otherwise."""
    if isinstance(value, torch.Tensor | np.ndarray):
        return {POSITIONAL: torch.as_tensor(value)}
    if isinstance(value, Mapping) and value:
        instance: dict[str, torch.Tensor] = {}
        for key, item in value.items():
            if not isinstance(key, str) or not key.isidentifier():
                raise HookError(f"the decode hook returned the key {key!r}: keys must be names")
            if not isinstance(item, torch.Tensor | np.ndarray):
                raise HookError(
                    f"the decode hook returned a {type(item).__name__} for {key!r}, not a tensor"
                )
            instance[key] = torch.as_tensor(item)
        return instance
    raise HookError(
        f"the decode hook returned a {type(value).__name__}; it must return a tensor or a "
        "dict of tensors (one instance, without the batch dimension)"
    )


def guess_content_type(body: Any) -> str | None:
    """The Content-Type TorchServe's decoding implies when none is known: JSON for decoded
    JSON, text for str, None for bytes."""
    if isinstance(body, bytes | bytearray):
        return None
    if isinstance(body, str):
        return "text/plain"
    return "application/json"


def request_payload(task: Task, body: Any, content_type: str | None) -> Any:
    """What ``task.decode`` takes for a request: the body with its Content-Type for a decode
    hook, the body alone for a task's own decode."""
    if isinstance(task, HookedTask) and task.takes_content_type:
        return RequestBody(body, content_type)
    return body
