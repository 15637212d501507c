"""Read a checkpoint file, whatever shape the tutorials saved it in, into a clean state_dict.

Accepted: a bare state_dict (``.pt``/``.pth``), a ``.safetensors`` file, a training checkpoint
dict (``model_state_dict`` or ``state_dict`` beside ``optimizer_state_dict``, ``epoch``, ...),
several models in one file (chosen by key), and weights saved by ``DataParallel``/DDP
(``module.``) or ``torch.compile`` (``_orig_mod.``).

Always ``weights_only=True``: a whole pickled model needs arbitrary unpickling, which runs
code, so it is refused with a message that says how to convert it. There is no fallback.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from handlers.errors import CheckpointError

StateDict = dict[str, torch.Tensor]

# Keys under which the PyTorch tutorials (and Lightning) store the model in a training dict.
CONVENTIONAL_KEYS = ("model_state_dict", "state_dict", "model")
# Prefixes added by nn.DataParallel / DistributedDataParallel and by torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
SAFETENSORS_SUFFIX = ".safetensors"

CONVERT_HINT = (
    "If this is your own file, convert it once on a machine you trust with "
    "`python -m archive convert --trust-pickle {path} OUT.pt` and point the spec at OUT.pt."
)


def load_checkpoint_object(path: Path, map_location: torch.device | str = "cpu") -> Any:
    """Load the raw object stored in ``path`` without running any pickled code.

    Raises CheckpointError for a missing file, a pickled Python object (e.g. ``torch.save(model)``)
    or anything else ``torch.load(weights_only=True)`` refuses.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == SAFETENSORS_SUFFIX:
        return _load_safetensors(path, map_location)
    # mmap avoids a second copy of the weights in memory; only the zip format supports it.
    mmap = zipfile.is_zipfile(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" not in str(exc):
            raise CheckpointError(
                f"{path.name} can't be read as a PyTorch checkpoint: {_unpickling_detail(exc)}"
            ) from None
        raise CheckpointError(
            f"{path.name} is not a plain checkpoint: loading it needs arbitrary unpickling "
            f"(a whole model saved with torch.save(model), or custom Python objects), which can "
            f"run code, so it is refused. {CONVERT_HINT.format(path=path.name)} "
            f"Detail: {_unpickling_detail(exc)}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path.name} can't be read as a PyTorch checkpoint: {_first_line(exc)}"
        ) from None


def read_state_dict(
    path: Path, map_location: torch.device | str = "cpu", key: str | None = None
) -> StateDict:
    """Return the clean state_dict stored in ``path``, tensors on ``map_location``.

    ``key`` picks one state_dict out of a file that holds several. Raises CheckpointError
    when the file holds no state_dict, or several and ``key`` doesn't name one of them.
    """
    obj = load_checkpoint_object(path, map_location)
    return strip_prefixes(select_state_dict(obj, key, source=Path(path).name))


def select_state_dict(obj: Any, key: str | None = None, source: str = "checkpoint") -> StateDict:
    """Pick the model weights out of what a checkpoint file held."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{source} holds a {type(obj).__name__}, not a state_dict or a checkpoint dict"
        )
    candidates = state_dict_entries(obj)
    if key is not None:
        if is_state_dict(obj) and key not in obj:
            raise CheckpointError(
                f"checkpoint_key {key!r} was given but {source} is a bare state_dict; "
                "remove checkpoint_key"
            )
        if key not in candidates:
            raise CheckpointError(
                f"{source} has no state_dict under {key!r}; "
                f"state_dicts it holds: {_listing(candidates)}"
            )
        return dict(candidates[key])
    if is_state_dict(obj):
        return dict(obj)
    if len(candidates) == 1:
        return dict(next(iter(candidates.values())))
    conventional = [k for k in CONVENTIONAL_KEYS if k in candidates]
    if len(candidates) > 1 and not conventional:
        raise CheckpointError(
            f"{source} holds several state_dicts: {_listing(candidates)}; "
            "choose one with checkpoint_key"
        )
    if conventional:
        return dict(candidates[conventional[0]])
    raise CheckpointError(
        f"{source} holds no state_dict; its entries: {_listing(obj)}. Expected a mapping of "
        "parameter names to tensors, or a dict with one under 'model_state_dict'"
    )


def is_state_dict(obj: Any) -> bool:
    """True for a non-empty mapping of str keys to tensors (a model's weights)."""
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def state_dict_entries(obj: Mapping[Any, Any]) -> dict[str, Mapping[str, torch.Tensor]]:
    """The entries of a checkpoint dict that are state_dicts, by key."""
    return {k: v for k, v in obj.items() if isinstance(k, str) and is_state_dict(v)}


def strip_prefixes(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Remove ``module.`` / ``_orig_mod.`` prefixes, however nested, when every key has one.

    Only a prefix shared by every key is stripped, so a model with a submodule that happens
    to be called ``module`` among others keeps its names.
    """
    clean = dict(state_dict)
    changed = True
    while changed and clean:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in clean):
                clean = {k[len(prefix) :]: v for k, v in clean.items()}
                changed = True
    return clean


def _load_safetensors(path: Path, map_location: torch.device | str) -> StateDict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    device = str(map_location)
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path.name} can't be read as safetensors: {_first_line(exc)}"
        ) from None


def _listing(keys: Mapping[Any, Any]) -> str:
    return ", ".join(repr(k) for k in keys) or "(none)"


def _unpickling_detail(exc: BaseException) -> str:
    # torch's message is a page of advice; the line naming the refused global is the useful one.
    lines = [line.strip() for line in str(exc).splitlines()]
    named = [line for line in lines if "GLOBAL" in line or "Unsupported" in line]
    detail = named[0] if named else _first_line(exc)
    return detail.split(" was not an allowed global")[0].strip(" .")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
