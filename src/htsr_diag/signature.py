"""Spectral signature of a training-loss curve (Hjorth parameters), after Notsawo et al. 2023.

:func:`loss_signature` detrends a loss curve (optionally a window of it, e.g. the first few
hundred steps) and returns Hjorth's activity, mobility and complexity computed from its
one-sided power spectral density. Notsawo et al. (2023, arXiv 2306.13253) correlate the
activity of the early loss with the final test accuracy. Conventions: docs/quantities.md,
"Loss signature and Liu phases".
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._results import Result
from .exceptions import DegenerateSpectrumWarning

__all__ = ["LossSignature", "loss_signature", "DETRENDS", "METHODS", "MIN_POINTS"]

#: Accepted values of ``detrend`` (None keeps the signal as it is).
DETRENDS: tuple[str, str, None] = ("linear", "constant", None)
#: Accepted values of ``method``.
METHODS: tuple[str, str] = ("periodogram", "welch")
#: Fewest points (after windowing) a signature is computed from.
MIN_POINTS = 8
#: Welch segment length (``min(WELCH_NPERSEG, n)`` points, Hann window, 50% overlap).
WELCH_NPERSEG = 256


@dataclass(frozen=True)
class LossSignature(Result):
    """Hjorth parameters of a detrended loss curve.

    Attributes
    ----------
    activity : float
        ``m0``, the integral of the one-sided power spectral density: the mean square of the
        detrended signal (its variance once a trend or the mean is removed). Units: loss**2.
    mobility : float
        ``sqrt(m2 / m0)``: the RMS angular frequency, in radians per unit of ``1 / fs``
        (radians per sample when ``fs=1``). NaN when ``activity`` is 0.
    complexity : float
        ``sqrt(m4 * m0) / m2``: 1 for a pure sine, larger for a broader spectrum.
        NaN when ``m2`` is 0.
    n : int
        Number of points used (after windowing).
    window : tuple of (float, float) or None
        The ``(start, stop)`` window of steps that was asked for.
    detrend : str or None
        ``"linear"``, ``"constant"`` or None.
    method : str
        ``"periodogram"`` or ``"welch"``.
    fs : float
        Sampling frequency (samples per unit of time) the frequencies are measured in.
    status : str
        ``"ok"``, or why mobility and complexity are NaN (``"flat signal"``).
    """

    activity: float
    mobility: float
    complexity: float
    n: int
    window: tuple[float, float] | None
    detrend: str | None
    method: str
    fs: float = 1.0
    status: str = "ok"


def loss_signature(losses: Any, *, steps: Any = None, window: Any = None, detrend: str | None = "linear",
                   method: str = "periodogram", fs: float = 1.0) -> LossSignature:
    """Hjorth activity, mobility and complexity of a (windowed, detrended) loss curve.

    Steps:

    1. keep the points whose step lies in ``[start, stop)`` (``window``, half-open like a
       Python slice; no window: all points);
    2. remove the least-squares line (``detrend="linear"``), the mean (``"constant"``) or
       nothing (None) with :func:`scipy.signal.detrend`;
    3. estimate the one-sided power spectral density ``S(f)`` (``scaling="density"``, no further
       detrending) with :func:`scipy.signal.periodogram` (boxcar window) or
       :func:`scipy.signal.welch` (Hann window, segments of ``min(256, n)`` points, 50% overlap);
    4. spectral moments ``m_k = sum_f (2 pi f)**k S(f) df`` (a rectangle sum over the frequency
       grid, ``df = f[1] - f[0]``; with the periodogram ``m0`` equals the mean square of the
       detrended signal exactly, by Parseval);
    5. ``activity = m0``, ``mobility = sqrt(m2 / m0)``, ``complexity = sqrt(m4 m0) / m2``.

    The time-domain definitions are equivalent: ``m0 = var(x)``, ``m2 = var(x')`` and
    ``m4 = var(x'')`` (derivatives with respect to time, in units of ``1 / fs``), so mobility is
    ``sqrt(var(x') / var(x))`` and complexity ``mobility(x') / mobility(x)``. They agree with
    the spectral values for a smooth signal (finite differences approximate the derivatives).

    Parameters
    ----------
    losses : array_like of shape (n,)
        Training loss at equally spaced steps; finite.
    steps : array_like of shape (n,), optional
        The steps of ``losses``: strictly increasing and equally spaced. Default
        ``0, 1, ..., n - 1``. Used for the window only: frequencies are per sample times
        ``fs`` (pass ``fs = 1 / spacing`` for radians per training step).
    window : (start, stop), optional
        Keep the points with ``start <= step < stop``; e.g. ``(0, 400)`` for the first 400
        steps. At least 8 points must remain.
    detrend : {"linear", "constant", None}, default "linear"
    method : {"periodogram", "welch"}, default "periodogram"
    fs : float, default 1.0
        Samples per unit of time; mobility is in radians per unit of ``1 / fs``.

    Returns
    -------
    LossSignature
        A flat (constant after detrending) signal gives ``activity = 0``, NaN mobility and
        complexity, ``status = "flat signal"`` and a
        :class:`~htsr_diag.exceptions.DegenerateSpectrumWarning`.

    Raises
    ------
    TypeError
        ``losses`` or ``steps`` not numbers, ``window`` not a pair, ``fs`` not a real number.
    ValueError
        not 1-D, fewer than 8 points, NaN or Inf, unequal spacing, unknown ``detrend`` or
        ``method``, empty window.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.arange(1024)
    >>> sig = loss_signature(2.0 * np.cos(2 * np.pi * 32 / 1024 * t) + 0.001 * t)
    >>> round(sig.activity, 3), round(sig.mobility / (2 * np.pi * 32 / 1024), 3), round(sig.complexity, 3)
    (2.0, 1.0, 1.0)
    """
    x, win, fs = _loss_signature_iv(losses, steps, window, detrend, method, fs)
    return _signature(x, win, detrend, method, fs)


def _loss_signature_iv(losses: Any, steps: Any, window: Any, detrend: Any, method: Any,
                       fs: Any) -> tuple[np.ndarray, tuple[float, float] | None, float]:
    """Validate the arguments of :func:`loss_signature`; return the windowed losses."""
    x = _as_curve(losses, "losses")
    n = x.size
    if steps is None:
        s = np.arange(n, dtype=np.float64)
    else:
        s = _as_curve(steps, "steps")
        if s.size != n:
            raise ValueError(f"steps must have one value per loss ({n}); got {s.size}. Align steps with losses.")
        if n > 1:
            d = np.diff(s)
            if not (d > 0).all():
                i = int(np.flatnonzero(d <= 0)[0])
                raise ValueError(f"steps must be strictly increasing; got steps[{i}]={s[i]:g} followed by "
                                 f"steps[{i + 1}]={s[i + 1]:g}. Sort the losses by step.")
            med = float(np.median(d))
            bad = np.flatnonzero(np.abs(d - med) > 1e-6 * med)
            if bad.size:
                i = int(bad[0])
                raise ValueError(f"steps must be equally spaced (the spectrum assumes it); the spacing is "
                                 f"{med:g} but steps[{i}]={s[i]:g} to steps[{i + 1}]={s[i + 1]:g} is {d[i]:g}. "
                                 f"Interpolate the losses onto an even grid (np.interp) first.")
    if detrend not in DETRENDS:
        raise ValueError(f"detrend must be one of 'linear', 'constant' or None; got {detrend!r}.")
    if method not in METHODS:
        raise ValueError(f"method must be 'periodogram' or 'welch'; got {method!r}.")
    if isinstance(fs, bool) or not isinstance(fs, numbers.Real):
        raise TypeError(f"fs must be a positive real number (samples per unit of time); got {fs!r}.")
    if not (math.isfinite(fs) and fs > 0):
        raise ValueError(f"fs must be positive and finite (samples per unit of time); got {fs!r}. "
                         f"Use fs=1.0 for radians per sample.")
    win = None
    if window is not None:
        if (isinstance(window, (str, bytes)) or not hasattr(window, "__len__") or len(window) != 2
                or not all(isinstance(w, numbers.Real) and not isinstance(w, bool) for w in window)):
            raise TypeError(f"window must be a (start, stop) pair of steps; got {window!r}. "
                            f"Pass e.g. window=(0, 400) for the first 400 steps.")
        start, stop = float(window[0]), float(window[1])
        if not (math.isfinite(start) and not math.isnan(stop) and start < stop):
            raise ValueError(f"window must be (start, stop) with finite start < stop; got {window!r}.")
        keep = (s >= start) & (s < stop)
        if keep.sum() < MIN_POINTS:
            raise ValueError(f"window must hold at least {MIN_POINTS} points; {window!r} holds {int(keep.sum())} "
                             f"of steps {s[0]:g} to {s[-1]:g}. Widen the window.")
        x = x[keep]
        win = (start, stop)
    if x.size < MIN_POINTS:
        raise ValueError(f"losses must hold at least {MIN_POINTS} points for a spectrum; got {x.size}. "
                         f"Log the loss more often or pass a longer curve.")
    return x, win, float(fs)


def _as_curve(a: Any, name: str) -> np.ndarray:
    try:
        x = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a 1-D sequence of numbers; got {type(a).__name__}.") from exc
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per step); got shape {x.shape}. "
                         f"Pass one curve at a time.")
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        raise ValueError(f"{name} must be finite; got {x[bad[0]]} at index {int(bad[0])}. "
                         f"Drop or interpolate those points (a diverged run has no signature).")
    return x


def _signature(x: np.ndarray, window: tuple[float, float] | None, detrend: str | None, method: str,
               fs: float) -> LossSignature:
    """The computation, on validated input."""
    from scipy import signal

    n = x.size
    y = x if detrend is None else signal.detrend(x, type=detrend)
    if method == "periodogram":
        f, p = signal.periodogram(y, fs=fs, window="boxcar", detrend=False, scaling="density",
                                  return_onesided=True)
    else:
        f, p = signal.welch(y, fs=fs, window="hann", nperseg=min(WELCH_NPERSEG, n), detrend=False,
                            scaling="density", return_onesided=True)
    df = f[1] - f[0]
    w = 2 * np.pi * f
    m0 = float(np.sum(p) * df)
    m2 = float(np.sum(w ** 2 * p) * df)
    m4 = float(np.sum(w ** 4 * p) * df)
    # Flat: the power left is rounding noise of the detrending, relative to the signal's scale.
    scale = float(np.mean(x ** 2)) + float(np.mean((x - x.mean()) ** 2))
    if m0 <= (64 * np.finfo(np.float64).eps) ** 2 * max(scale, np.finfo(np.float64).tiny) or m2 <= 0:
        warnings.warn(f"loss_signature: the signal is flat after detrend={detrend!r} (activity {m0:.3g}); "
                      f"mobility and complexity are NaN.", DegenerateSpectrumWarning, stacklevel=3)
        return LossSignature(max(m0, 0.0), math.nan, math.nan, n, window, detrend, method, fs, "flat signal")
    return LossSignature(m0, math.sqrt(m2 / m0), math.sqrt(m4 * m0) / m2, n, window, detrend, method, fs, "ok")
