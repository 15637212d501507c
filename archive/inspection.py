"""``python -m archive inspect``: say what a checkpoint file or a built ``.mar`` holds, without
running its code.

The file is read by the handler's own ``load_checkpoint_object`` (``weights_only=True``), so what
``inspect`` can read is what the build can read. For an archive, its ``handler:`` settings come
first (task, inputs with their shapes and bounds, method, output, text), as the handler reads
them, then its weights.
"""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml

from handlers import golden
from handlers.checkpoint import (
    is_state_dict,
    load_checkpoint_object,
    select_state_dict,
    state_dict_entries,
    strip_prefixes,
)
from handlers.errors import CheckpointError, HandlerError
from handlers.inputs import InputSpec
from handlers.settings import HandlerSettings
from handlers.tasks.base import Ranking
from handlers.tasks.text import TextClassificationTask

MAX_VALUE_CHARS = 60


def describe_checkpoint(path: Path) -> str:
    """A readable report: each state_dict's tensors (key, shape, dtype), their counts and bytes,
    the file's other entries, and which state_dict the build would use.

    Raises CheckpointError when the file can't be read as weights.
    """
    if Path(path).suffix == ".mar":
        return describe_archive(Path(path))
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


def describe_archive(path: Path) -> str:
    """What a ``.mar`` built by ``python -m archive build`` serves, and its weights.

    Raises CheckpointError when it is not such an archive.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            config = yaml.safe_load(archive.read("model-config.yaml"))
            weights = archive.read("weights.pt")
            settings = HandlerSettings.from_dict((config or {}).get("handler"))
            recorded = (
                golden.parse(json.loads(archive.read(golden.EXAMPLES_NAME)))
                if golden.EXAMPLES_NAME in archive.namelist()
                else None
            )
            if settings.text is not None:
                # What text becomes: token ids bounded by the vocabulary and max_tokens.
                vocab = json.loads(archive.read(settings.text.vocab))
                task = TextClassificationTask(settings.text, vocab, Ranking(), settings.input)
                settings = dataclasses.replace(settings, input=task.input)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, yaml.YAMLError, HandlerError) as exc:
        raise CheckpointError(f"{path.name} is not an archive this project built: {exc}") from None
    state_dict = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    lines = [f"{path.name}: an archive serving {settings.model_class} ({settings.task})"]
    lines += [f"  {line}" for line in describe_settings(settings)]
    if recorded is not None:
        lines += golden.describe(*recorded)
    else:
        lines.append(f"{golden.EXAMPLES_NAME}: none (built before examples were recorded)")
    lines.append("weights.pt:")
    lines.extend(describe_state_dict(state_dict))
    return "\n".join(lines)


def describe_settings(settings: HandlerSettings) -> list[str]:
    """One line per request-facing setting: inputs, image or text, method, output, labels."""
    lines = []
    if settings.input is not None:
        what = "input (token ids)" if settings.text is not None else "input"
        lines.append(f"{what}: {describe_input(settings.input)}")
    for spec in settings.inputs or ():
        lines.append(f"input {spec.name!r}: {describe_input(spec)}")
    if settings.image is not None:
        image = settings.image
        lines.append(
            f"image: {image.mode} {image.size[0]}x{image.size[1]}, "
            f"mean {list(image.mean)}, std {list(image.std)}"
        )
    if settings.text is not None:
        text = settings.text
        lines.append(
            f"text: vocabulary {text.vocab}, lowercase {text.lowercase}, unk_token "
            f"{text.unk_token!r}, pad_token {text.pad_token!r}, at most {text.max_tokens} tokens"
        )
    call = f"method: {settings.method}"
    if settings.method_kwargs:
        call += f" with {dict(settings.method_kwargs)}"
    lines.append(call)
    if settings.output is not None:
        lines.append(f"output: {settings.output!r} (the part answered or ranked)")
    if settings.task != "tensor":
        lines.append(f"answers: top {settings.top_k} of {settings.scores}")
    if not settings.strict:
        lines.append(f"strict = false, init_seed = {settings.init_seed}")
    if settings.hooks is not None:
        extra = ", ".join(settings.extra_files or ()) or "none"
        lines.append(f"hooks: {settings.hooks} (extra files: {extra})")
    return lines


def describe_input(spec: InputSpec) -> str:
    """``int64 [-1] (-1: any size), at most 512 elements, values in [0, 99], padded ...``"""
    text = f"{spec.dtype} {list(spec.shape)}"
    if spec.variable_dims:
        text += f" (-1: any size), at most {spec.element_limit:,} elements"
        if spec.padded:
            text += f", padded with {spec.pad_value:g}, lengths as {spec.lengths_arg!r}"
        else:
            text += ", one call per distinct shape"
    if spec.range is not None:
        text += f", values in [{spec.range[0]:g}, {spec.range[1]:g}]"
    return text


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
