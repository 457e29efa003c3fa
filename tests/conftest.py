"""Fixtures and model builders shared by the test modules.

The builders are plain functions (``from conftest import seeded_mlp``), so tests can call them
with their own shapes and seeds; the trainer runs are session fixtures, trained once per test
session and shared: read them, never write into them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


def seeded_mlp(*widths: int, seed: int = 0) -> torch.nn.Sequential:
    """``Linear`` layers of the given widths with a ``ReLU`` between each two, in PyTorch's
    default initialisation after ``torch.manual_seed(seed)``: ``seeded_mlp(64, 60, 10)`` is
    ``Sequential(Linear(64, 60), ReLU(), Linear(60, 10))``, layers named "0", "2", ..."""
    if len(widths) < 2:
        raise ValueError(f"seeded_mlp needs at least two widths (in, out); got {widths}.")
    torch.manual_seed(seed)
    modules: list[torch.nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        if i:
            modules.append(torch.nn.ReLU())
        modules.append(torch.nn.Linear(n_in, n_out))
    return torch.nn.Sequential(*modules)


def _fast_run(tmp_path_factory, name: str, **config) -> Path:
    from htsr_diag.train import PRESETS, train

    cfg = PRESETS["fast"].replace(seed=0, **config)
    return Path(train(cfg, tmp_path_factory.mktemp("run") / name))


@pytest.fixture(scope="session")
def fast_run_300(tmp_path_factory) -> Path:
    """A real 300-step run of the reference MLP ("fast" preset, seed 0, 3 checkpoints per decade;
    a few seconds on CPU)."""
    return _fast_run(tmp_path_factory, "fast300", steps=300, checkpoints_per_decade=3)


@pytest.fixture(scope="session")
def fast_run_30(tmp_path_factory) -> Path:
    """A real 30-step run of the reference MLP on the bundled data: checkpoints 0, 1, 3, 10, 30."""
    return _fast_run(tmp_path_factory, "fast300", steps=30, checkpoints_per_decade=2, data_dir="bundled")


@pytest.fixture
def one_thread():
    """One torch thread for the duration of a test: the test models are tiny, and OpenMP
    threads spin-wait on a shared 2-core machine. Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
