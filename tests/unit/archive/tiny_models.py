"""Tiny models for the archive tests; copied next to each test's spec as ``model.py``."""

from __future__ import annotations

import torch
from torch import nn


class Tiny(nn.Module):
    """[N, 4] -> [N, 3]: one linear layer, so outputs are exact with fixed weights."""

    def __init__(self, out_features: int = 3) -> None:
        super().__init__()
        self.linear = nn.Linear(4, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(x)
        return out


class TinyImage(nn.Module):
    """[N, 1, 2, 2] grayscale images -> [N, 3] logits."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(x.flatten(1))
        return out


class Raises(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        raise RuntimeError("boom in __init__")


class WrongBatch(Tiny):
    """Answers one row whatever the batch size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows: torch.Tensor = self.linear(x)
        return rows[:1]


class NotFinite(Tiny):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows: torch.Tensor = self.linear(x)
        return rows * float("nan")


class NotFiniteInBatches(Tiny):
    """Right alone, NaN as soon as a batch holds more than one input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows: torch.Tensor = self.linear(x)
        return rows if rows.shape[0] == 1 else rows * float("nan")
