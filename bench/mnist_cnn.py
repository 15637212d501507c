"""A 28x28 CNN the size of TorchServe's MNIST example, for the benchmark (issue 7).

Layer for layer the network of TorchServe's `examples/image_classifier/mnist`: two 3x3
convolutions (1->32->64), a 2x2 max-pool, dropout, 9216->128->10 and log-softmax. The
benchmark saves it with random weights (a fixed seed): speed does not depend on the values.
This file is imported on its own by the handler (it travels inside the archive), so it
imports nothing from `bench`.
"""

import torch
import torch.nn.functional as F
from torch import nn


class MnistCnn(nn.Module):
    """[N, 1, 28, 28] float32 -> [N, 10] log-probabilities."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(self.conv2(x), 2)
        x = torch.flatten(self.dropout1(x), 1)
        x = self.dropout2(F.relu(self.fc1(x)))
        return F.log_softmax(self.fc2(x), dim=1)
