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


class WordAverage(nn.Module):
    """The tutorials' WordAVGModel: embed, average over the tokens, one linear layer.

    ``lengths`` (when given) excludes padding from the average; calls counts forward passes.
    """

    calls = 0

    def __init__(self, vocab_size: int = 6, embedding_size: int = 2, output_size: int = 3) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        self.fc = nn.Linear(embedding_size, output_size)

    def forward(self, text: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        type(self).calls += 1
        embedded = self.embedding(text)
        if lengths is None:
            return self.fc(embedded.mean(dim=1))
        mask = torch.arange(text.shape[1])[None, :] < lengths[:, None]
        summed = (embedded * mask[..., None]).sum(dim=1)
        return self.fc(summed / lengths[:, None])


class Masked(nn.Module):
    """forward(x, mask): the masked sum of each row, and of its doubles."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        total = (x * mask).sum(dim=1, keepdim=True)
        return torch.cat([total, total * self.scale], dim=1)


class Generator(nn.Module):
    """No forward: answers through ``generate``, as language models do."""

    def __init__(self) -> None:
        super().__init__()
        self.step = nn.Parameter(torch.tensor(1.0))

    def generate(self, x: torch.Tensor, max_new_tokens: int = 1) -> torch.Tensor:
        steps = torch.arange(1, max_new_tokens + 1, dtype=x.dtype)
        return x[:, -1:] + steps[None, :] * self.step


class DictClassifier(nn.Module):
    """Returns a dict: the logits to rank and an embedding beside them."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.linear(x.flatten(1)), "embedding": x.flatten(1) * 2}


class WarmStart(nn.Module):
    """A trained body and a new head, as in the tutorials' warm start (strict=False)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.body(x)))
