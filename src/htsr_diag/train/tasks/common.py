"""What the trainer needs of a non-MNIST task: its data split and a fresh model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["TaskData", "task_data", "build_model", "split_indices"]


@dataclass(frozen=True)
class TaskData:
    """Inputs (integer tokens) and class labels of one run's train and test split.

    Attributes
    ----------
    train_x, test_x : ndarray of int64, shape (n, n_tokens)
    train_y, test_y : ndarray of int64, shape (n,)
    n_classes : int
    """

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    n_classes: int


def split_indices(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of ``range(n)``: ``round(fraction * n)`` training indices, the rest test.

    Examples
    --------
    >>> tr, te = split_indices(10, 0.3, seed=0)
    >>> len(tr), len(te), sorted(np.concatenate([tr, te]).tolist()) == list(range(10))
    (3, 7, True)
    """
    perm = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5917])).permutation(n)
    k = int(round(fraction * n))
    if not 0 < k < n:
        raise ValueError(f"train_fraction must leave at least one training and one test example; got "
                         f"{fraction} of {n} examples ({k} for training). Change train_fraction or modulus.")
    return np.sort(perm[:k]), np.sort(perm[k:])


def task_data(config) -> TaskData:
    """The split a run with ``config`` (task "modular" or "liu_toy") trains and tests on.

    The split is seeded by ``config.data_seed``, else ``config.seed``.
    """
    from .liu_toy import liu_pairs
    from .modular import modular_pairs

    if config.task == "modular":
        x, y = modular_pairs(config.modulus, config.operation)
        n_classes = config.modulus
    elif config.task == "liu_toy":
        x, y = liu_pairs(config.modulus)
        n_classes = 2 * config.modulus - 1
    else:
        raise ValueError(f"task_data is for task 'modular' or 'liu_toy'; got {config.task!r} "
                         f"(MNIST data comes from htsr_diag.train.training_subset).")
    seed = config.seed if config.data_seed is None else config.data_seed
    tr, te = split_indices(len(y), config.train_fraction, seed)
    return TaskData(x[tr], y[tr], x[te], y[te], n_classes)


def build_model(config, *, seed: int | None = None, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """A freshly initialised model for ``config.task`` ("modular" or "liu_toy"), every
    parameter multiplied by ``config.init_scale``, in ``config``'s dtype on the CPU.

    ``seed`` (default ``config.seed``) seeds the initialisation inside ``torch.random.fork_rng``,
    so the global RNG is left as it was.
    """
    from .liu_toy import LiuToy
    from .modular import ModularTransformer

    dtype = config.torch_dtype if dtype is None else dtype
    seed = config.seed if seed is None else seed
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        if config.task == "modular":
            model = ModularTransformer(config.modulus, d_model=config.d_model, n_heads=config.n_heads,
                                       d_mlp=config.d_mlp, dtype=dtype)
        elif config.task == "liu_toy":
            model = LiuToy(config.modulus, d_embed=config.d_model, hidden=tuple(config.hidden), dtype=dtype)
        else:
            raise ValueError(f"build_model is for task 'modular' or 'liu_toy'; got {config.task!r} "
                             f"(the MNIST model is htsr_diag.train.MLP).")
    if config.init_scale != 1.0:
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(config.init_scale)
    return model
