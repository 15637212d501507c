"""A small CNN for 8x8 grayscale digits (scikit-learn's ``load_digits``).

Self-contained (torch only): this file travels inside the archive and is imported there.
"""

from __future__ import annotations

import torch
from torch import nn


class DigitsNet(nn.Module):
    """[N, 1, 8, 8] normalised pixels -> [N, num_classes] logits."""

    def __init__(self, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * width * 4 * 4, 64),
            nn.ReLU(),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
