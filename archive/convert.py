"""``python -m archive convert --trust-pickle``: a whole pickled model to a plain state_dict file.

``torch.save(model)`` pickles the model object; loading it runs whatever code the pickle names,
which is why the handler refuses such files (``weights_only=True``). This converts the user's
own files, once, on a machine they trust; the output loads with ``weights_only=True``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pickle
import sys
import tempfile
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from archive.errors import ConvertError
from handlers.checkpoint import read_state_dict, strip_prefixes

logger = logging.getLogger(__name__)

WARNING = (
    "unpickling {path} runs any code it names: only convert files you made yourself or fully trust"
)


@dataclass(frozen=True)
class Converted:
    """What ``convert_pickled_model`` wrote: the model's class and the weights' totals."""

    model_class: str
    model_module: str
    tensors: int
    values: int


def convert_pickled_model(source: Path, output: Path, model_file: Path | None = None) -> Converted:
    """Unpickle the model in ``source`` (UNSAFE: runs code) and save its state_dict to ``output``.

    ``model_file`` is imported first, under its file name, so the pickle finds its class; a
    class pickled from a script (``__main__.Net``) is looked up in it too. Raises ConvertError
    when the file can't be unpickled or holds no model.
    """
    logger.warning(WARNING.format(path=source))
    fallback = _import_file(model_file) if model_file is not None else None
    try:
        obj = torch.load(
            source,
            map_location="cpu",
            weights_only=False,  # the point of this command; the caller passed --trust-pickle
            pickle_module=_pickle_module(fallback),
        )
    except (ModuleNotFoundError, AttributeError) as exc:
        raise ConvertError(
            f"{Path(source).name} refers to a class that can't be imported ({exc}); "
            "pass the file that defines it with --model-file, or add its package to PYTHONPATH"
        ) from None
    except (OSError, RuntimeError, pickle.UnpicklingError, EOFError) as exc:
        raise ConvertError(f"{Path(source).name} can't be unpickled: {exc}") from None
    model = _find_model(obj, Path(source).name)
    cls = type(_unwrap(model))
    state_dict = {
        key: value.detach().to("cpu").contiguous().clone()
        for key, value in strip_prefixes(model.state_dict()).items()
        if isinstance(value, torch.Tensor)
    }
    _save_atomically(state_dict, Path(output))
    read_state_dict(Path(output))  # proves the output loads with weights_only=True
    return Converted(
        model_class=cls.__qualname__,
        model_module=cls.__module__,
        tensors=len(state_dict),
        values=sum(value.numel() for value in state_dict.values()),
    )


def _find_model(obj: Any, source: str) -> nn.Module:
    if isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, Mapping):
        modules = [value for value in obj.values() if isinstance(value, nn.Module)]
        if len(modules) == 1:
            return modules[0]
    raise ConvertError(
        f"{source} holds a {type(obj).__name__}, not a pickled nn.Module; if it is already a "
        "state_dict or a training checkpoint, point the spec at it directly"
    )


def _unwrap(model: nn.Module) -> nn.Module:
    # DataParallel/DDP keep the model in .module, torch.compile in ._orig_mod.
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def _import_file(path: Path) -> types.ModuleType:
    path = Path(path).resolve()
    if not path.is_file():
        raise ConvertError(f"model file not found: {path}")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ConvertError(f"can't import {path.name}")
    module = importlib.util.module_from_spec(spec)
    # Under its own name, as the pickle refers to it (``model.Net``), with its siblings importable.
    sys.modules[path.stem] = module
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[path.stem]
        raise ConvertError(f"importing {path.name} failed: {type(exc).__name__}: {exc}") from exc
    return module


def _pickle_module(fallback: types.ModuleType | None) -> types.ModuleType:
    """A ``pickle`` stand-in whose Unpickler also finds ``__main__`` classes in ``fallback``."""

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if module == "__main__" and fallback is not None and hasattr(fallback, name):
                return getattr(fallback, name)
            return super().find_class(module, name)

    stand_in = types.ModuleType("archive_convert_pickle")
    vars(stand_in).update(vars(pickle))
    stand_in.Unpickler = Unpickler  # type: ignore[attr-defined]
    return stand_in


def _save_atomically(state_dict: dict[str, torch.Tensor], output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    # Saved under its final name (torch.save names its records after the file), then moved.
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.name}.") as staging:
        staged = Path(staging) / output.name
        torch.save(state_dict, staged)
        os.replace(staged, output)
