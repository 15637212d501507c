"""``python -m archive inspect``: say what a checkpoint file holds, without running its code.

The file is read by the handler's own ``load_checkpoint_object`` (``weights_only=True``), so what
``inspect`` can read is what the build can read.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from handlers.checkpoint import (
    is_state_dict,
    load_checkpoint_object,
    select_state_dict,
    state_dict_entries,
    strip_prefixes,
)
from handlers.errors import CheckpointError

MAX_VALUE_CHARS = 60


def describe_checkpoint(path: Path) -> str:
    """A readable report: each state_dict's tensors (key, shape, dtype), their counts and bytes,
    the file's other entries, and which state_dict the build would use.

    Raises CheckpointError when the file can't be read as weights.
    """
    obj = load_checkpoint_object(Path(path), "cpu")
    name = Path(path).name
    lines: list[str] = []
    if is_state_dict(obj):
        lines.append(f"{name}: a bare state_dict")
        lines.extend(describe_state_dict(obj))
    elif isinstance(obj, Mapping):
        state_dicts = state_dict_entries(obj)
        lines.append(
            f"{name}: a checkpoint dict with {len(obj)} entries, "
            f"{len(state_dicts)} of them state_dicts"
        )
        for key, value in obj.items():
            if key not in state_dicts:
                lines.append(f"  {key}: {describe_value(value)}")
        for key, state_dict in state_dicts.items():
            lines.append(f"state_dict {key!r}:")
            lines.extend(describe_state_dict(state_dict))
    else:
        lines.append(f"{name}: a {type(obj).__name__}")
    lines.append(f"the build would use: {_selection(obj, name)}")
    return "\n".join(lines)


def describe_state_dict(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """One line per tensor, then the totals."""
    width = max((len(key) for key in state_dict), default=0)
    lines = [
        f"  {key:<{width}}  {list(tensor.shape)!s:<18} {_dtype(tensor)}"
        for key, tensor in state_dict.items()
    ]
    count = sum(tensor.numel() for tensor in state_dict.values())
    size = sum(tensor.numel() * tensor.element_size() for tensor in state_dict.values())
    lines.append(f"  {len(state_dict)} tensors, {count:,} parameters, {size:,} bytes")
    return lines


def describe_value(value: Any) -> str:
    """A short description of a non-state_dict entry (epoch, loss, optimizer state, ...)."""
    if isinstance(value, torch.Tensor):
        if value.numel() == 1:
            return f"{value.item()!r} (tensor, {_dtype(value)})"
        return f"tensor {list(value.shape)} {_dtype(value)}"
    if isinstance(value, Mapping):
        if {"state", "param_groups"} <= set(value):
            return f"optimizer state ({len(value['param_groups'])} param group(s))"
        return f"dict with {len(value)} entries"
    if isinstance(value, list | tuple):
        return f"{type(value).__name__} of {len(value)}"
    text = repr(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 3] + "..."


def _selection(obj: Any, name: str) -> str:
    try:
        chosen = select_state_dict(obj, None, source=name)
    except CheckpointError as exc:
        return f"none without checkpoint_key ({exc})"
    entries = state_dict_entries(obj) if isinstance(obj, Mapping) else {}
    where = "the whole file"
    for key, value in entries.items():
        if not is_state_dict(obj) and _same_tensors(value, chosen):
            where = f"entry {key!r}"
            break
    clean = strip_prefixes(chosen)
    if set(clean) != set(chosen):
        prefix = next(iter(chosen))[: -len(next(iter(clean)))] if clean else ""
        return f"{where}, with the prefix {prefix!r} stripped from every key"
    return where


def _same_tensors(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(a[key] is b[key] for key in a)


def _dtype(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")
