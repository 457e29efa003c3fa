"""The reference MLP of the anti-grokking study (784-200-200-10, ReLU, scaled init)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MLP", "init_mlp_params", "PARAM_NAMES"]

#: Parameter names of the state dict, in the order used by the flat parameter vector.
PARAM_NAMES: tuple[str, ...] = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias",
                                "fc3.weight", "fc3.bias")


class MLP(nn.Module):
    """Three-layer perceptron ``fc1 -> ReLU -> fc2 -> ReLU -> fc3`` (linear output).

    Parameters are created with PyTorch's default ``nn.Linear`` initialisation (uniform in
    ``+-1/sqrt(fan_in)`` for weights and biases), sampled directly in ``dtype``, then every
    parameter is multiplied by ``init_scale`` (8.0 in the study: initial l2 norm ~93.7).

    Parameters
    ----------
    hidden : tuple of int, default (200, 200)
        Widths of the two hidden layers.
    in_features, out_features : int
        784 and 10 for MNIST.
    init_scale : float, default 8.0
    dtype : torch.dtype, default torch.float64
    seed : int or None
        If given, the initialisation uses ``torch.manual_seed(seed)`` inside
        ``torch.random.fork_rng`` (the global RNG state is left unchanged).

    Examples
    --------
    >>> import torch
    >>> model = MLP(seed=0)
    >>> model(torch.zeros(5, 784, dtype=torch.float64)).shape
    torch.Size([5, 10])
    """

    def __init__(self, hidden: tuple[int, int] = (200, 200), *, in_features: int = 784,
                 out_features: int = 10, init_scale: float = 8.0,
                 dtype: torch.dtype = torch.float64, seed: int | None = None,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        if len(hidden) != 2:
            raise ValueError(f"hidden must hold two layer widths; got {hidden!r}.")
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(int(seed))
            self.fc1 = nn.Linear(in_features, hidden[0], dtype=dtype)
            self.fc2 = nn.Linear(hidden[0], hidden[1], dtype=dtype)
            self.fc3 = nn.Linear(hidden[1], out_features, dtype=dtype)
        with torch.no_grad():
            for p in self.parameters():
                p.mul_(init_scale)
        if device is not None:
            self.to(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, 784) -> logits (batch, 10)."""
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


def init_mlp_params(hidden: tuple[int, int], init_scale: float, dtype: torch.dtype,
                    seed: int) -> dict[str, torch.Tensor]:
    """The initial state dict of ``MLP(hidden, init_scale=..., dtype=..., seed=seed)`` on CPU."""
    model = MLP(tuple(hidden), init_scale=init_scale, dtype=dtype, seed=seed)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
