"""Liu et al. 2022's toy model of grokking: integer embeddings, their sum, an MLP decoder."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

__all__ = ["liu_pairs", "LiuToy"]


def liu_pairs(p: int) -> tuple[np.ndarray, np.ndarray]:
    """The unordered pairs ``a <= b`` of ``0..p-1`` and their sums (classes ``0..2p-2``).

    Unordered, because the model sees ``E_a + E_b``: the pair ``(b, a)`` is the same input.

    Returns
    -------
    x : ndarray of int64, shape (p (p + 1) / 2, 2)
    y : ndarray of int64, shape (p (p + 1) / 2,)

    Examples
    --------
    >>> x, y = liu_pairs(3)
    >>> x.tolist(), y.tolist()
    ([[0, 0], [0, 1], [0, 2], [1, 1], [1, 2], [2, 2]], [0, 1, 2, 2, 3, 4])
    """
    a, b = np.triu_indices(p)
    return np.stack([a, b], axis=1).astype(np.int64), (a + b).astype(np.int64)


class LiuToy(nn.Module):
    """Embeddings ``E_a`` in R^d for each integer; ``E_a + E_b`` through an MLP decoder
    ``d -> hidden[0] -> hidden[1] -> 2p-1`` (ReLU) to the class of ``a + b``.

    Parameters named ``embed.*`` are the representation; ``decoder.*`` the decoder, whose
    learning rate and weight decay the trainer sets apart (``decoder_lr``,
    ``decoder_weight_decay``). Embeddings start N(0, 1/d); the decoder uses PyTorch's default.

    Examples
    --------
    >>> m = LiuToy(5, d_embed=8, hidden=(16, 16))
    >>> m(torch.tensor([[1, 2], [0, 4]])).shape
    torch.Size([2, 9])
    """

    def __init__(self, p: int, *, d_embed: int = 64, hidden: tuple[int, int] = (200, 200),
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.embed = nn.Embedding(p, d_embed, dtype=dtype)
        with torch.no_grad():
            self.embed.weight.normal_(0.0, 1.0 / math.sqrt(d_embed))
        self.decoder = nn.Sequential(nn.Linear(d_embed, hidden[0], dtype=dtype), nn.ReLU(),
                                     nn.Linear(hidden[0], hidden[1], dtype=dtype), nn.ReLU(),
                                     nn.Linear(hidden[1], 2 * p - 1, dtype=dtype))

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        """pairs (batch, 2) int64 -> logits (batch, 2p-1)."""
        e = self.embed(pairs)
        return self.decoder(e[:, 0] + e[:, 1])
