"""The PyTorch tutorials' ``WordAVGModel``: embed each token, average, one linear layer.

Self-contained (torch only): this file travels inside the archive and is imported there.
``lengths`` (optional) leaves padding out of the average, so a padded batch answers each
review exactly as it would be answered alone.
"""

from __future__ import annotations

import torch
from torch import nn


class WordAVGModel(nn.Module):
    """[N, tokens] int64 ids (and optionally their true lengths, [N]) -> [N, output_size]."""

    def __init__(
        self, vocab_size: int, embedding_size: int = 16, output_size: int = 2, pad_idx: int = 1
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_size, padding_idx=pad_idx)
        self.fc = nn.Linear(embedding_size, output_size)

    def forward(self, text: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        embedded = self.embedding(text)  # [N, tokens, embedding_size]
        if lengths is None:
            return self.fc(embedded.mean(dim=1))
        mask = torch.arange(text.shape[1], device=text.device)[None, :] < lengths[:, None]
        summed = (embedded * mask[..., None]).sum(dim=1)
        return self.fc(summed / lengths[:, None].to(summed.dtype))
