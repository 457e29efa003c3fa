"""Modular arithmetic ``a op b mod p`` and the one-layer transformer of Nanda et al. 2023."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

__all__ = ["modular_pairs", "ModularTransformer"]


def modular_pairs(p: int, operation: str = "add") -> tuple[np.ndarray, np.ndarray]:
    """Every table cell of ``a op b mod p`` as token sequences ``[a, b, =]`` (``=`` is token ``p``).

    Parameters
    ----------
    p : int
        The modulus (a prime for "div").
    operation : {"add", "sub", "mul", "div"}
        "div" is ``a * b^(p-2) mod p`` (Fermat's inverse), over ``b != 0``.

    Returns
    -------
    x : ndarray of int64, shape (n, 3)
    y : ndarray of int64, shape (n,)

    Examples
    --------
    >>> x, y = modular_pairs(5, "sub")
    >>> x[7].tolist(), int(y[7])
    ([1, 2, 5], 4)
    """
    a, b = (g.reshape(-1) for g in np.meshgrid(np.arange(p), np.arange(p), indexing="ij"))
    if operation == "div":
        keep = b != 0
        a, b = a[keep], b[keep]
        inv = np.array([pow(int(v), p - 2, p) for v in b], dtype=np.int64)
        y = (a * inv) % p
    elif operation == "add":
        y = (a + b) % p
    elif operation == "sub":
        y = (a - b) % p
    elif operation == "mul":
        y = (a * b) % p
    else:
        raise ValueError(f"operation must be one of ('add', 'sub', 'mul', 'div'); got {operation!r}.")
    x = np.stack([a, b, np.full_like(a, p)], axis=1).astype(np.int64)
    return x, y.astype(np.int64)


class ModularTransformer(nn.Module):
    """One-layer transformer without LayerNorm (Nanda et al. 2023): token and position
    embeddings, multi-head attention (causal; read at the last position), a ReLU MLP, an unembedding; the logits at the
    last position (the ``=`` token) classify ``a op b mod p``.

    Weight matrices (what HTSR analyses): ``embed.weight`` (p+1, d), ``attn.W_Q/W_K/W_V/W_O``
    (d, d), ``mlp.fc_in`` (d_mlp, d), ``mlp.fc_out`` (d, d_mlp), ``unembed.weight`` (p, d).
    Embeddings start N(0, 1/d); the linear maps use PyTorch's default init.

    Examples
    --------
    >>> m = ModularTransformer(7, d_model=16, n_heads=2, d_mlp=32)
    >>> m(torch.tensor([[1, 2, 7]])).shape
    torch.Size([1, 7])
    """

    def __init__(self, p: int, *, d_model: int = 128, n_heads: int = 4, d_mlp: int = 512, n_ctx: int = 3,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model must be divisible by n_heads; got {d_model} and {n_heads}.")
        self.p, self.d_model, self.n_heads = p, d_model, n_heads
        self.embed = nn.Embedding(p + 1, d_model, dtype=dtype)
        self.pos = nn.Parameter(torch.empty(n_ctx, d_model, dtype=dtype))
        with torch.no_grad():
            self.embed.weight.normal_(0.0, 1.0 / math.sqrt(d_model))
            self.pos.normal_(0.0, 1.0 / math.sqrt(d_model))
        self.attn = nn.Module()
        for name in ("W_Q", "W_K", "W_V", "W_O"):
            setattr(self.attn, name, nn.Linear(d_model, d_model, bias=False, dtype=dtype))
        self.mlp = nn.Module()
        self.mlp.fc_in = nn.Linear(d_model, d_mlp, dtype=dtype)
        self.mlp.fc_out = nn.Linear(d_mlp, d_model, dtype=dtype)
        self.unembed = nn.Linear(d_model, p, bias=False, dtype=dtype)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (batch, T) int64 -> logits (batch, p) at the last position.

        One layer and a readout at the last position: only that position's query, attention
        output and MLP are needed (the same logits as computing every position).
        """
        B, T = tokens.shape
        h = self.embed(tokens) + self.pos[:T]
        H, dh = self.n_heads, self.d_model // self.n_heads
        last = h[:, -1]
        q = self.attn.W_Q(last).view(B, H, 1, dh)
        k = self.attn.W_K(h).view(B, T, H, dh).transpose(1, 2)
        v = self.attn.W_V(h).view(B, T, H, dh).transpose(1, 2)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(dh)          # (B, H, 1, T): the last row is unmasked
        z = (scores.softmax(-1) @ v).reshape(B, self.d_model)
        last = last + self.attn.W_O(z)
        last = last + self.mlp.fc_out(torch.relu(self.mlp.fc_in(last)))
        return self.unembed(last)
