"""Task families of the bundled trainer beyond MNIST: data and models.

``modular``: ``a op b mod p`` on a one-layer transformer (Power et al. 2022; Nanda et al.
2023). ``liu_toy``: Liu et al. 2022's toy model (integer embeddings, their sum fed to an MLP
decoder). MNIST (with optional label noise) lives in :mod:`htsr_diag.train.data`; all three
go through the same :class:`~htsr_diag.train.TrainConfig` and trainer.
"""

from __future__ import annotations

from .modular import ModularTransformer, modular_pairs
from .liu_toy import LiuToy, liu_pairs
from .common import TaskData, build_model, task_data

__all__ = ["ModularTransformer", "LiuToy", "modular_pairs", "liu_pairs", "TaskData", "task_data", "build_model"]
