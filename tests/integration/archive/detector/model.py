"""A detection-style model small enough for tests: 16 features in, 4 candidate boxes out, each
with its corners in [0, 1] and a probability for each of 3 classes."""

from __future__ import annotations

import torch
from torch import nn


class TinyDetector(nn.Module):
    def __init__(self, features: int = 16, anchors: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.anchors, self.classes = anchors, classes
        self.box = nn.Linear(features, anchors * 4)
        self.cls = nn.Linear(features, anchors * classes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        n = x.shape[0]
        boxes = torch.sigmoid(self.box(x)).view(n, self.anchors, 4)
        scores = torch.softmax(self.cls(x).view(n, self.anchors, self.classes), dim=-1)
        return {"boxes": boxes, "scores": scores}
