"""How the model's 4-D tensors are laid out in memory: as built, or channels-last (NHWC).

A convolution on the CPU runs through oneDNN, whose kernels want channels-last data: given
the default NCHW layout, every call reorders its input and weights first. With
``memory_format = "channels_last"`` the handler converts the model's 4-D weights once, at load,
and each batch's 4-D floating-point inputs before the call. On the benchmark's 28x28 CNN
(one torch thread, batches of 8) a forward pass took 251 us per sample instead of 574
(`python -m bench.layouts`).

It is a per-model choice, off by default: not every model gains (one without convolutions
gains nothing), and a model that calls ``.view()`` on a convolution's output fails on
channels-last tensors (``.reshape``/``torch.flatten`` work on both). The archive build
proves the choice: the model must answer its examples as it does in its own layout, within
the spec's tolerance (``archive.gate``).
"""

from __future__ import annotations

import copy
from typing import TypeVar

import torch
from torch import nn

MEMORY_FORMATS = {
    "contiguous": torch.contiguous_format,
    "channels_last": torch.channels_last,
}
DEFAULT_MEMORY_FORMAT = "contiguous"

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def lay_out_model(model: ModuleT, memory_format: str) -> ModuleT:
    """``model`` with its 4-D parameters and buffers in ``memory_format`` (in place)."""
    if memory_format != DEFAULT_MEMORY_FORMAT:
        _to(model, MEMORY_FORMATS[memory_format])
    return model


def as_built(model: ModuleT) -> ModuleT:
    """A copy of ``model`` in the default layout: what it answers without this module."""
    copied = copy.deepcopy(model)
    _to(copied, torch.contiguous_format)
    return copied


def lay_out_input(tensor: torch.Tensor, memory_format: str) -> torch.Tensor:
    """``tensor`` in ``memory_format`` when that applies to it (4-D, floating point), else
    unchanged: token ids, masks and lengths keep their layout."""
    if (
        memory_format == DEFAULT_MEMORY_FORMAT
        or tensor.dim() != 4
        or not tensor.is_floating_point()
    ):
        return tensor
    return tensor.contiguous(memory_format=MEMORY_FORMATS[memory_format])


def _to(model: nn.Module, memory_format: torch.memory_format) -> None:
    # Module.to accepts memory_format (it converts 4-D tensors only); torch's type overloads
    # leave it out.
    model.to(memory_format=memory_format)  # type: ignore[call-overload]
