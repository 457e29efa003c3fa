"""Reference trainer of the anti-grokking study: MNIST data, the MLP, presets and the trainer.

Examples
--------
Skipped: trains for minutes on a CPU.

>>> from htsr_diag.train import PRESETS, train
>>> run = train(PRESETS["fast"], "runs/fast")  # doctest: +SKIP
"""

from .config import PRESETS, TrainConfig, get_preset
from .data import (
    MNIST,
    fetch_mnist,
    load_mnist,
    read_idx,
    stratified_indices,
    stratified_subset,
    training_pool,
)
from .model import MLP
from .tasks import build_model, task_data
from .environment import run_environment
from .trainer import (
    noisy_labels,
    CorruptMetricsWarning,
    RunLockedError,
    TrainingDivergedError,
    checkpoint_steps,
    list_checkpoints,
    load_checkpoint,
    read_metrics,
    resolve_device,
    train,
    train_ensemble,
    training_subset,
)

__all__ = [
    "CorruptMetricsWarning",
    "MLP",
    "MNIST",
    "PRESETS",
    "TrainConfig",
    "TrainingDivergedError",
    "checkpoint_steps",
    "fetch_mnist",
    "get_preset",
    "list_checkpoints",
    "load_checkpoint",
    "load_mnist",
    "read_idx",
    "read_metrics",
    "resolve_device",
    "run_environment",
    "RunLockedError",
    "stratified_indices",
    "stratified_subset",
    "train",
    "train_ensemble",
    "training_pool",
    "training_subset",
    "noisy_labels",
    "build_model",
    "task_data",
]
