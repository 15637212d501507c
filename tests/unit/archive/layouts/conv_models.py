"""Small convolutional models for the memory-format tests (copied next to each spec as
model.py): one that gains nothing but works either way, one that insists on channels-last
inputs, one that ``.view``s a convolution's output, one whose answer follows memory order."""

import torch
import torch.nn.functional as F
from torch import nn


class SmallCnn(nn.Module):
    """[N, 2, 4, 4] -> [N, 3]: a 3x3 convolution, ReLU, flatten, a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(F.relu(self.conv(x)), 1))


class NeedsChannelsLast(SmallCnn):
    """SmallCnn that refuses any input not laid out channels-last: it answers only when the
    handler really converted the batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_contiguous(memory_format=torch.channels_last):
            raise ValueError(f"input strides {x.stride()} are not channels-last")
        return super().forward(x)


class ViewsCnn(SmallCnn):
    """SmallCnn written as the PyTorch tutorials often do: ``.view`` after the convolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = F.relu(self.conv(x))
        return self.head(hidden.view(hidden.shape[0], -1))


class MemoryOrder(SmallCnn):
    """Its answer is its input in memory order: it changes with the layout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = [torch.from_numpy(row.numpy().ravel(order="K").copy()) for row in x]
        return torch.stack(rows)[:, :3] + 0.0 * self.head.bias
