"""Training configuration (one frozen dataclass) and the named presets."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["TrainConfig", "PRESETS", "get_preset"]

_DTYPES = ("float64", "float32")
_DEVICES = ("auto", "cpu", "cuda")
#: Task families of the bundled trainer (docs/training.md).
TASKS = ("mnist", "modular", "liu_toy")
#: Binary operations of the modular-arithmetic task, ``a op b mod p``.
OPERATIONS = ("add", "sub", "mul", "div")


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_real(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


@dataclass(frozen=True)
class TrainConfig:
    """Every hyperparameter of one training run of the bundled trainer.

    Three task families share this one config (docs/training.md): ``task="mnist"`` (the
    study's MLP on MNIST, optionally with ``label_noise``), ``task="modular"`` (``a op b mod
    p`` on a one-layer transformer, Nanda et al. 2023) and ``task="liu_toy"`` (Liu et al.
    2022: learned integer embeddings, their sum fed to an MLP decoder). Fields that a task
    does not read keep their defaults.

    Defaults are the study's Table 3 (the ``"paper"`` preset): MLP 784-200-200-10 with ReLU,
    PyTorch default init then every parameter x8, MSE on one-hot targets, AdamW(lr 5e-4,
    betas (0.9, 0.999), eps 1e-8, weight decay 0), batch 200, float64, 10^7 steps, seed 0,
    100 training images per class.

    Attributes
    ----------
    preset : str
        Name of the preset this config came from (informational; ``"custom"`` otherwise).
    seed : int
        Seeds the initialisation (``torch.manual_seed``) and the batch order; also the
        training subset unless ``data_seed`` is set.
    lr, weight_decay : float
        AdamW learning rate and decoupled weight decay (``torch.optim.AdamW`` semantics).
    betas : (float, float)
    eps : float
    batch_size : int
        Mini-batches are drawn without replacement, a fresh seeded permutation per epoch.
    steps : int
        Number of optimisation steps.
    dtype : {"float64", "float32"}
    init_scale : float
        Every parameter is multiplied by this after PyTorch's default init.
    hidden : (int, int)
        Hidden widths.
    n_train_per_class : int
        Training images per class (stratified, seeded sample of the pool of the first 1,000
        images of each class; above 1,000 the whole training file is the pool).
    checkpoints_per_decade : int
        Checkpoints and evaluations are log-spaced with this many per decade, plus step 0 and
        the last step.
    data_dir : str or None
        Folder of the IDX files; None = ``$HTSR_DIAG_MNIST_DIR``, the cache, else the bundled
        subset; ``"bundled"`` forces the bundled subset.
    device : {"auto", "cpu", "cuda"}
        "auto" picks CUDA when available.
    data_seed : int or None
        Seed of the training subset (None = ``seed``).
    task : {"mnist", "modular", "liu_toy"}
        The task family. "mnist" trains with MSE on one-hot targets (the study); the
        other two with cross-entropy.
    label_noise : float in [0, 1]
        MNIST only: this fraction of the training labels is shuffled among themselves
        (seeded by the data seed). 1.0 is a pure memorisation control (Zhang et al. 2017):
        the labels carry no information about the images, so nothing can generalise.
    modulus : int
        ``p``. Modular task: ``a op b mod p`` with ``a, b`` in ``0..p-1`` (97 as Power et
        al.). Liu toy: the integers ``0..p-1``, whose sums ``0..2p-2`` are the classes.
    operation : {"add", "sub", "mul", "div"}
        Modular task only; "div" is ``a * b^-1 mod p`` over ``b != 0`` (``p`` prime).
    train_fraction : float in (0, 1)
        Modular and Liu toy: the seeded fraction of all pairs used for training; the rest
        is the test set.
    d_model, n_heads, d_mlp : int
        Modular task: the transformer width, heads (``d_model`` divisible by it) and MLP
        width. Liu toy: ``d_model`` is the embedding dimension; ``hidden`` the decoder's
        two widths.
    decoder_lr, decoder_weight_decay : float or None
        Liu toy only: learning rate and weight decay of the decoder (Liu et al. set them
        apart from the embeddings'); None = ``lr`` / ``weight_decay``.

    Examples
    --------
    >>> cfg = PRESETS["fast"].replace(seed=3)
    >>> TrainConfig.from_dict(cfg.to_dict()) == cfg
    True
    """

    preset: str = "paper"
    seed: int = 0
    lr: float = 5e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    batch_size: int = 200
    steps: int = 10_000_000
    dtype: str = "float64"
    init_scale: float = 8.0
    hidden: tuple[int, int] = (200, 200)
    n_train_per_class: int = 100
    checkpoints_per_decade: int = 20
    data_dir: str | None = None
    device: str = "auto"
    data_seed: int | None = None
    task: str = "mnist"
    label_noise: float = 0.0
    modulus: int = 97
    operation: str = "add"
    train_fraction: float = 0.3
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int = 512
    decoder_lr: float | None = None
    decoder_weight_decay: float | None = None

    def __post_init__(self) -> None:
        # normalise sequences and numbers (e.g. from JSON or the command line)
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        for name in ("steps", "batch_size", "n_train_per_class", "checkpoints_per_decade", "seed",
                     "modulus", "d_model", "n_heads", "d_mlp"):
            value = getattr(self, name)
            if _is_real(value) and not _is_int(value) and float(value).is_integer():
                object.__setattr__(self, name, int(value))  # 1e7 from a JSON float
        self._validate()

    def _validate(self) -> None:
        def bad(name: str, rule: str, fix: str) -> ValueError:
            return ValueError(f"{name} must be {rule}; got {getattr(self, name)!r}. {fix}")

        for name, minimum in (("seed", 0), ("batch_size", 1), ("steps", 1),
                              ("n_train_per_class", 1), ("checkpoints_per_decade", 1),
                              ("modulus", 2), ("d_model", 1), ("n_heads", 1), ("d_mlp", 1)):
            value = getattr(self, name)
            if not _is_int(value):
                raise TypeError(f"{name} must be an integer; got {value!r} ({type(value).__name__}).")
            if value < minimum:
                raise bad(name, f"an integer >= {minimum}", "")
        if self.data_seed is not None and (not _is_int(self.data_seed) or self.data_seed < 0):
            raise bad("data_seed", "None or an integer >= 0", "")
        for name in ("lr", "eps", "init_scale"):
            value = getattr(self, name)
            if not _is_real(value) or not math.isfinite(value) or value <= 0:
                raise bad(name, "a finite number > 0", "")
        if not _is_real(self.weight_decay) or not math.isfinite(self.weight_decay) or self.weight_decay < 0:
            raise bad("weight_decay", "a finite number >= 0", "Use 0 for none.")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise bad("betas", "two numbers in [0, 1)", "The default is (0.9, 0.999).")
        if len(self.hidden) != 2 or min(self.hidden) < 1:
            raise bad("hidden", "two positive layer widths", "The study uses (200, 200).")
        if self.dtype not in _DTYPES:
            raise bad("dtype", f"one of {_DTYPES}", "")
        if self.device not in _DEVICES and not str(self.device).startswith("cuda:"):
            raise bad("device", f"one of {_DEVICES} or 'cuda:N'", "")
        if self.data_dir is not None and not isinstance(self.data_dir, str):
            object.__setattr__(self, "data_dir", str(self.data_dir))
        if self.task not in TASKS:
            raise bad("task", f"one of {TASKS}", "")
        if self.operation not in OPERATIONS:
            raise bad("operation", f"one of {OPERATIONS}", "")
        if not _is_real(self.label_noise) or not 0.0 <= self.label_noise <= 1.0:
            raise bad("label_noise", "a fraction in [0, 1]", "Use 1.0 for fully shuffled labels.")
        if self.label_noise and self.task != "mnist":
            raise bad("label_noise", "0 unless task='mnist'", "Label noise is an MNIST control.")
        if not _is_real(self.train_fraction) or not 0.0 < self.train_fraction < 1.0:
            raise bad("train_fraction", "a fraction in (0, 1)", "Power et al. use 0.3-0.5.")
        if self.task == "modular" and self.d_model % self.n_heads:
            raise bad("d_model", f"divisible by n_heads={self.n_heads}", "E.g. d_model 128 with 4 heads.")
        if self.task == "modular" and self.operation == "div" and any(
                self.modulus % k == 0 for k in range(2, int(self.modulus ** 0.5) + 1)):
            raise bad("modulus", "a prime for operation='div'", "Use 97 or 113.")
        if self.decoder_lr is not None and (not _is_real(self.decoder_lr) or not math.isfinite(self.decoder_lr)
                                            or self.decoder_lr <= 0):
            raise bad("decoder_lr", "None or a finite number > 0", "")
        if self.decoder_weight_decay is not None and (
                not _is_real(self.decoder_weight_decay) or not math.isfinite(self.decoder_weight_decay)
                or self.decoder_weight_decay < 0):
            raise bad("decoder_weight_decay", "None or a finite number >= 0", "")

    # ------------------------------------------------------------------ conversions
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every field (tuples as lists)."""
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        out["hidden"] = list(self.hidden)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        """Inverse of :meth:`to_dict`. Keys starting with ``htsr_diag`` (metadata such as
        ``htsr_diag_version``) are ignored; any other unknown key raises ``ValueError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = [k for k in d if k not in names and not str(k).startswith("htsr_diag")]
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; valid fields: {sorted(names)}.")
        return cls(**{k: v for k, v in d.items() if k in names})

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some fields changed (validated); unknown names raise ``ValueError``."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = [k for k in changes if k not in names]
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; valid fields: {sorted(names)}.")
        return dataclasses.replace(self, **changes)

    @property
    def torch_dtype(self):
        import torch
        return torch.float64 if self.dtype == "float64" else torch.float32


_FAST = TrainConfig(preset="fast", lr=5e-3, dtype="float32", steps=100_000)

#: Named recipes. ``paper`` is the study's Table 3; ``paper-wd`` its weight-decay control;
#: ``omnigrok`` the Omnigrok MNIST setup (lr 1e-3, wd 0.01, 1e5 steps); ``fast`` a CPU-sized
#: recipe showing the three phases; ``mnist-noise`` the fast recipe on fully shuffled labels
#: (a memorisation control); ``modular`` / ``modular-nowd`` modular addition mod 97 on a
#: one-layer transformer with / without weight decay; ``liu-toy`` / ``liu-toy-mem`` Liu et
#: al.'s toy model in its grokking and memorisation regimes. Measured curves: docs/training.md.
PRESETS: dict[str, TrainConfig] = {
    "paper": TrainConfig(preset="paper"),
    "paper-wd": TrainConfig(preset="paper-wd", weight_decay=0.01),
    "omnigrok": TrainConfig(preset="omnigrok", lr=1e-3, weight_decay=0.01, steps=100_000),
    "fast": _FAST,
    "mnist-noise": _FAST.replace(preset="mnist-noise", label_noise=1.0),
    # Nanda et al.'s recipe (full batch, AdamW betas (0.9, 0.98), weight decay 1) on p = 97 with a
    # 30% training split; lr 2e-3 instead of 1e-3 halves the time to grok (seed 0: train
    # accuracy 1.0 at step 126, test 0.1-0.3 until ~2,000, 0.99 at 2,512; docs/training.md).
    "modular": TrainConfig(preset="modular", task="modular", modulus=97, operation="add", train_fraction=0.3,
                           d_model=128, n_heads=4, d_mlp=512, lr=2e-3, weight_decay=1.0, betas=(0.9, 0.98),
                           batch_size=100_000, steps=6_000, dtype="float32", init_scale=1.0),
    # Liu et al.'s toy: 59 integers, 64-d embeddings, decoder 200-200, 60% of the 1,770 pairs;
    # weight decay 1 on embeddings and decoder (seed 0: train fitted at ~400 steps, test near
    # chance until ~3,000, 0.98 at 12,589). Without weight decay it memorises (liu-toy-mem).
    "liu-toy": TrainConfig(preset="liu-toy", task="liu_toy", modulus=59, train_fraction=0.6, d_model=64,
                           hidden=(200, 200), lr=1e-3, weight_decay=1.0, decoder_lr=1e-3,
                           decoder_weight_decay=1.0, batch_size=100_000, steps=15_000, dtype="float32",
                           init_scale=1.0),
}
PRESETS["modular-nowd"] = PRESETS["modular"].replace(preset="modular-nowd", weight_decay=0.0)
PRESETS["liu-toy-mem"] = PRESETS["liu-toy"].replace(preset="liu-toy-mem", weight_decay=0.0,
                                                    decoder_weight_decay=0.0)


def get_preset(name: str, **changes: Any) -> TrainConfig:
    """``PRESETS[name].replace(**changes)`` with a clear error for an unknown name."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}; got {name!r}.")
    return PRESETS[name].replace(**changes) if changes else PRESETS[name]
