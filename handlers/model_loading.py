"""Build the model class named in the config and load a state_dict into it.

The model is built on the ``meta`` device and the weights are assigned, not copied
(``load_state_dict(assign=True)``), so only one copy of the weights is ever in memory. Models
that can't be built that way (non-persistent buffers computed in ``__init__``, missing keys
under ``strict=False``) are built normally instead.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from handlers.errors import KeyMismatchError, ModelBuildError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyReport:
    """How a state_dict's keys and shapes compare with a model's."""

    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = field(default=())

    @property
    def clean(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def format(self, limit: int = 20) -> str:
        """A readable, bounded listing of the differences."""
        if self.clean:
            return "all keys and shapes match"
        parts = []
        if self.missing:
            parts.append(
                f"missing from the checkpoint ({len(self.missing)}): {_cap(self.missing, limit)}"
            )
        if self.unexpected:
            parts.append(
                f"unexpected in the checkpoint ({len(self.unexpected)}): "
                f"{_cap(self.unexpected, limit)}"
            )
        if self.mismatched:
            shapes = [
                f"{k}: checkpoint {list(c)} vs model {list(m)}" for k, c, m in self.mismatched
            ]
            parts.append(f"shape mismatches ({len(shapes)}): {_cap(shapes, limit)}")
        return "; ".join(parts)


def compare_keys(
    model_shapes: Mapping[str, torch.Size], state_dict: Mapping[str, torch.Tensor]
) -> KeyReport:
    """Compare the model's expected keys/shapes with those of a state_dict."""
    missing = tuple(k for k in model_shapes if k not in state_dict)
    unexpected = tuple(k for k in state_dict if k not in model_shapes)
    mismatched = tuple(
        (k, tuple(state_dict[k].shape), tuple(shape))
        for k, shape in model_shapes.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(shape)
    )
    return KeyReport(missing, unexpected, mismatched)


def import_model_class(model_file: Path, class_name: str) -> type[nn.Module]:
    """Import ``class_name`` from the Python file ``model_file``.

    The file may define any number of classes. Raises ModelBuildError naming the classes it
    does define when ``class_name`` isn't one of them, or isn't an ``nn.Module``.
    """
    model_file = Path(model_file).resolve()
    if not model_file.is_file():
        raise ModelBuildError(f"model file not found: {model_file.name}")
    # A name unique to the file, so two models with the same file name don't share a module.
    digest = hashlib.sha256(str(model_file).encode()).hexdigest()[:12]
    module_name = f"served_model_{model_file.stem}_{digest}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, model_file)
        if spec is None or spec.loader is None:
            raise ModelBuildError(f"can't import {model_file.name}")
        module = importlib.util.module_from_spec(spec)
        # Sibling modules of the model file are importable, as they are inside an archive.
        parent = str(model_file.parent)
        if parent not in sys.path:
            sys.path.append(parent)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[module_name]
            raise ModelBuildError(
                f"importing {model_file.name} failed: {type(exc).__name__}: {exc}"
            ) from exc
    cls = getattr(module, class_name, None)
    if not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
        defined = sorted(
            name
            for name, obj in vars(module).items()
            if inspect.isclass(obj) and issubclass(obj, nn.Module) and obj.__module__ == module_name
        )
        raise ModelBuildError(
            f"{model_file.name} has no nn.Module class {class_name!r}; "
            f"nn.Module classes it defines: {', '.join(defined) or '(none)'}"
        )
    return cls


def build_model(
    model_class: type[nn.Module],
    state_dict: Mapping[str, torch.Tensor],
    *,
    kwargs: Mapping[str, Any] | None = None,
    strict: bool = True,
    device: torch.device | str = "cpu",
    init_seed: int = 0,
) -> tuple[nn.Module, KeyReport]:
    """Construct ``model_class(**kwargs)``, load ``state_dict``, move to ``device``, ``eval()``.

    With ``strict`` any difference in keys or shapes raises KeyMismatchError carrying the report.
    Without it, matching weights are loaded, and the rest keep the values the class's own
    initialisation gives them with torch's generator seeded by ``init_seed`` (the same values
    on every call: the build packs them, so every worker answers alike); the report is
    logged and returned.
    """
    kwargs = dict(kwargs or {})
    device = torch.device(device)
    meta_model = _construct(model_class, kwargs, torch.device("meta"))
    expected = meta_model.state_dict()
    report = compare_keys({k: v.shape for k, v in expected.items()}, state_dict)
    name = model_class.__name__
    if strict and not report.clean:
        raise KeyMismatchError(
            f"the checkpoint does not fit {name}: {report.format()}. "
            "Fix the checkpoint or model_kwargs, or set strict = false to load what matches",
            report,
        )
    if not report.clean:
        logger.warning("Loading %s with strict=False: %s", name, report.format())
    loadable = {
        k: v
        for k, v in state_dict.items()
        if k in expected and tuple(v.shape) == tuple(expected[k].shape)
    }
    if not (report.missing or report.mismatched) and not _has_unsaved_state(meta_model, expected):
        meta_model.load_state_dict(loadable, strict=False, assign=True)
        model = meta_model.to(device)
        _check_materialised(model, name)
    else:
        # Weights the checkpoint lacks or can't fill keep real initial values: build for real,
        # seeded, without disturbing the caller's random state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            model = _construct(model_class, kwargs, device)
        model.load_state_dict(loadable, strict=False)
    model.eval()
    return model, report


def resolve_method(model: nn.Module, method: str) -> None:
    """ModelBuildError unless ``model`` has a callable ``method`` (``forward``: one of its own,
    not nn.Module's placeholder), naming the methods it does have."""
    own = getattr(type(model), method, None)
    if callable(own) and not (method == "forward" and own is nn.Module.forward):
        return
    candidates = sorted(
        name
        for klass in type(model).__mro__
        if klass not in (nn.Module, object)
        for name, value in vars(klass).items()
        if callable(value) and not name.startswith("_")
    )
    name = type(model).__name__
    what = "forward method" if method == "forward" else f"method {method!r}"
    raise ModelBuildError(
        f"{name} has no {what} to call on a batch; set `method` to one of its methods: "
        f"{', '.join(dict.fromkeys(candidates)) or '(none)'}"
    )


def _construct(
    model_class: type[nn.Module], kwargs: dict[str, Any], device: torch.device
) -> nn.Module:
    try:
        with device:
            model = model_class(**kwargs)
    except Exception as exc:
        raise ModelBuildError(
            f"constructing {model_class.__name__}(**{kwargs!r}) failed: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(model, nn.Module):
        raise ModelBuildError(f"{model_class.__name__}(...) did not return an nn.Module")
    return model


def _has_unsaved_state(model: nn.Module, saved: Mapping[str, torch.Tensor]) -> bool:
    """True when the model has tensors a state_dict doesn't restore (non-persistent buffers)."""
    names = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    return bool(names - set(saved))


def _check_materialised(model: nn.Module, name: str) -> None:
    for tensor_name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_meta:
            raise ModelBuildError(f"{name}.{tensor_name} was left without a value")


def _cap(items: tuple[str, ...] | list[str], limit: int) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
