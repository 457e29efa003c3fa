"""Input checks and small numeric helpers shared by the modules of :mod:`htsr_diag.phases`."""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import numpy as np


def check_fraction(value: Any, name: str, *, low: float = 0.0, high: float = 1.0,
                   open_low: bool = True) -> float:
    """``value`` as a float in (low, high] (or [low, high] with ``open_low=False``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number in ({low}, {high}]; got {value!r}.")
    v = float(value)
    ok = (v > low if open_low else v >= low) and v <= high and math.isfinite(v)
    if not ok:
        bracket = "(" if open_low else "["
        raise ValueError(f"{name} must be in {bracket}{low}, {high}]; got {value!r}. "
                         f"Pass a fraction such as the default.")
    return v


def curve(x: Any, name: str, n: int | None = None, *, allow_nan: bool = False) -> np.ndarray:
    """``x`` as a float64 array of shape (n,) (finite unless ``allow_nan``)."""
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a 1-D sequence of numbers; got {type(x).__name__}.") from exc
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per checkpoint); got shape {a.shape}.")
    if n is not None and a.shape[0] != n:
        raise ValueError(f"{name} must have one value per checkpoint ({n}); got {a.shape[0]}. "
                         f"Align it with steps.")
    if not allow_nan and not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite; got NaN or Inf at index "
                         f"{int(np.flatnonzero(~np.isfinite(a))[0])}. Drop or fill those checkpoints.")
    return a


def check_steps(steps: Any) -> np.ndarray:
    """Training steps: finite, non-empty, strictly increasing."""
    s = curve(steps, "steps")
    if s.size == 0:
        raise ValueError("steps must not be empty; got 0 checkpoints.")
    if s.size > 1 and not (np.diff(s) > 0).all():
        i = int(np.flatnonzero(np.diff(s) <= 0)[0])
        raise ValueError(f"steps must be strictly increasing; got steps[{i}]={s[i]:g} followed by "
                         f"steps[{i + 1}]={s[i + 1]:g}. Sort the checkpoints by step.")
    return s


def check_train_acc(x: Any, name: str, n: int) -> np.ndarray:
    """Training accuracies, one per checkpoint: fractions in [0, 1], NaN where unknown."""
    a = curve(x, name, n, allow_nan=True)
    bad = np.flatnonzero(~np.isnan(a) & ~((a >= 0) & (a <= 1)))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{name} must hold fractions in [0, 1] (NaN where unknown); got {a[i]:g} at index {i}. "
                         f"Divide percentages by 100.")
    return a


def list_steps(steps: np.ndarray) -> str:
    """The first five steps, for a message."""
    shown = ", ".join(f"{s:g}" for s in steps[:5])
    return shown + (f", ... ({steps.size} in all)" if steps.size > 5 else "")


class quiet_nanmean:
    """Silence numpy's 'Mean of empty slice' for all-NaN columns (the NaN is the answer)."""

    def __enter__(self) -> None:
        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: Any) -> None:
        self._ctx.__exit__(*exc)
