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


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_real(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


@dataclass(frozen=True)
class TrainConfig:
    """Every hyperparameter of one training run of the reference MLP on MNIST.

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

    def __post_init__(self) -> None:
        # normalise sequences and numbers (e.g. from JSON or the command line)
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        for name in ("steps", "batch_size", "n_train_per_class", "checkpoints_per_decade", "seed"):
            value = getattr(self, name)
            if _is_real(value) and not _is_int(value) and float(value).is_integer():
                object.__setattr__(self, name, int(value))  # 1e7 from a JSON float
        self._validate()

    def _validate(self) -> None:
        def bad(name: str, rule: str, fix: str) -> ValueError:
            return ValueError(f"{name} must be {rule}; got {getattr(self, name)!r}. {fix}")

        for name, minimum in (("seed", 0), ("batch_size", 1), ("steps", 1),
                              ("n_train_per_class", 1), ("checkpoints_per_decade", 1)):
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


#: Named recipes. ``paper`` is the study's Table 3; ``paper-wd`` its weight-decay control;
#: ``omnigrok`` the Omnigrok MNIST setup (lr 1e-3, wd 0.01, 1e5 steps); ``fast`` a CPU-sized
#: recipe showing the three phases (docs/training.md).
PRESETS: dict[str, TrainConfig] = {
    "paper": TrainConfig(preset="paper"),
    "paper-wd": TrainConfig(preset="paper-wd", weight_decay=0.01),
    "omnigrok": TrainConfig(preset="omnigrok", lr=1e-3, weight_decay=0.01, steps=100_000),
    "fast": TrainConfig(preset="fast", lr=5e-3, dtype="float32", steps=100_000),
}


def get_preset(name: str, **changes: Any) -> TrainConfig:
    """``PRESETS[name].replace(**changes)`` with a clear error for an unknown name."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}; got {name!r}.")
    return PRESETS[name].replace(**changes) if changes else PRESETS[name]
