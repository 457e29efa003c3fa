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


# Tiny trainer configurations (tests only), one per task family; a test module sets its own
# steps, widths or schedule with keyword overrides.
_TINY = {
    "mnist": ("paper", dict(hidden=(16, 16), n_train_per_class=20, batch_size=50, steps=60, lr=5e-3,
                            init_scale=2.0, checkpoints_per_decade=3, data_dir="bundled")),
    "modular": ("modular", dict(modulus=11, d_model=16, n_heads=2, d_mlp=24, steps=30, checkpoints_per_decade=3,
                                dtype="float64", train_fraction=0.5)),
    "liu-toy": ("liu-toy", dict(modulus=9, d_model=8, hidden=(16, 12), steps=30, checkpoints_per_decade=3,
                                dtype="float64", lr=3e-3, weight_decay=0.05, decoder_lr=1e-3,
                                decoder_weight_decay=0.5)),
}


def tiny_config(task: str, **overrides):
    """A seconds-long ``TrainConfig`` of one task family on the CPU: MNIST (the reference MLP at
    hidden (16, 16), 20 images per class, batch 50, init x2, bundled data), modular addition mod 11
    or Liu et al.'s toy model mod 9, with ``overrides`` applied last."""
    from htsr_diag.train import PRESETS

    preset, fields = _TINY[task]
    return PRESETS[preset].replace(preset="test", device="cpu", **{**fields, **overrides})


class Kill(Exception):
    """Raised by :func:`killer`'s callback: a training process killed at a chosen step."""


def killer(at: int):
    """A trainer step callback that raises :class:`Kill` at step ``at``."""
    def cb(step: int) -> None:
        if step == at:
            raise Kill(step)
    return cb


def final_checkpoint(run):
    """The last checkpoint of a run folder, loaded."""
    from htsr_diag.train import list_checkpoints, load_checkpoint

    return load_checkpoint(list_checkpoints(run)[-1][1])


def weightwatcher_or_skip():
    """The ``weightwatcher`` module, imported with its side effects undone, or a skip when it is
    not installed. Importing it adds a global ignore-every-warning filter and root logging
    handlers; ``pytest.importorskip`` would leave those for the rest of the session."""
    from htsr_diag.interop import _contained

    try:
        with _contained():
            import weightwatcher
    except ImportError as exc:
        pytest.skip(f"needs weightwatcher (the [compare] extra): {exc}", allow_module_level=True)
    return weightwatcher


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
