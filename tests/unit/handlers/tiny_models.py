"""Tiny models for the handler tests. Several classes in one file, as users write them."""

import torch
from torch import nn


class Affine(nn.Module):
    """y = W x + b, with weights the tests set exactly."""

    def __init__(self, in_features: int = 4, out_features: int = 2) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class TwoLayer(nn.Module):
    def __init__(self, hidden: int = 3) -> None:
        super().__init__()
        self.first = nn.Linear(4, hidden)
        self.second = nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(torch.relu(self.first(x)))


class WithScale(nn.Module):
    """A non-persistent buffer: computed in __init__, never in a state_dict."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)
        self.register_buffer("scale", torch.full((2,), 10.0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * self.scale


class PixelClassifier(nn.Module):
    """Classifies a 1x2x2 image by a fixed linear map of its pixels into 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


class RefusesNegative(nn.Module):
    """Fails on any input with a negative value: a poisonous request inside a batch."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x < 0).any():
            raise ValueError("negative input")
        return self.linear(x)


class WrongBatch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)[:1].repeat(x.shape[0] + 1, 1)


class Broken(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        raise RuntimeError("cannot build")


def not_a_model() -> None:
    """A function beside the classes: must not be picked up."""
