"""Marchenko-Pastur and Tracy-Widom laws, and a robust fit of the MP scale.

Conventions
-----------
For an N x M matrix (N = max(shape), M = min(shape), ``q = N / M >= 1``) with iid entries
of variance ``sigma**2``, the eigenvalues of ``X / N`` (``X = W^T W``, the smaller Gram
matrix) follow, as N, M grow, the Marchenko-Pastur law with support

    [sigma^2 (1 - 1/sqrt(q))^2, sigma^2 (1 + 1/sqrt(q))^2]

and density ``q / (2 pi sigma^2 x) sqrt((lambda_+ - x)(x - lambda_-))``. Its mean is
``sigma**2``, so an ESD rescaled to mean 1 (as WeightWatcher and the anti-grokking study
do) has ``sigma`` near 1 under the iid null. ``q = 1`` is allowed (the lower edge is 0 and
the density diverges there like ``x**-1/2``, integrably).

The largest eigenvalue of ``W^T W`` fluctuates on the Tracy-Widom scale (Johnstone 2001):
``(lambda_max - mu) / s`` tends to the TW1 law, with ``mu`` and ``s`` from
:func:`tracy_widom_scale`. The TW1 distribution function is computed here as a Fredholm
determinant (Ferrari & Spohn 2005; Bornemann 2010, Math. Comp. 79, 871-915), with
Gauss-Legendre quadrature, accurate to about 1e-14.
"""

from __future__ import annotations

import math
import numbers
import warnings
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import optimize, special

from .exceptions import DegenerateSpectrumWarning

__all__ = [
    "mp_edges",
    "mp_pdf",
    "mp_cdf",
    "mp_ppf",
    "tracy_widom_scale",
    "tracy_widom_cdf",
    "tracy_widom_quantile",
    "fit_mp_sigma",
]


# --------------------------------------------------------------------------- validation
def _check_real(value: Any, name: str, *, minimum: float, strict: bool, fix: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number; got {value!r} ({type(value).__name__}). {fix}")
    v = float(value)
    bad = not math.isfinite(v) or (v <= minimum if strict else v < minimum)
    if bad:
        rule = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise ValueError(f"{name} must be a finite number {rule}; got {value!r}. {fix}")
    return v


def _check_q(q: Any) -> float:
    return _check_real(q, "q", minimum=1.0, strict=False,
                       fix="q is the aspect ratio N / M with N = max(shape), M = min(shape), so q >= 1.")


def _check_sigma(sigma: Any) -> float:
    return _check_real(sigma, "sigma", minimum=0.0, strict=True,
                       fix="sigma is the entry standard deviation of the MP law; pass a positive number.")


def _as_float_array(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
    if arr.dtype == object or np.iscomplexobj(arr) or not (
            np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"{name} must be real numbers (a float, or an array of floats); got dtype {arr.dtype}.")
    arr = arr.astype(np.float64)
    if np.isnan(arr).any():
        raise ValueError(f"{name} must not contain NaN; got {int(np.isnan(arr).sum())} NaN value(s).")
    return arr


def _ret(out: np.ndarray, like: np.ndarray):
    return float(out) if like.ndim == 0 else out


# --------------------------------------------------------------------------- MP law
def mp_edges(q: float, sigma: float = 1.0) -> tuple[float, float]:
    """Edges of the Marchenko-Pastur bulk: ``sigma^2 (1 -+ 1/sqrt(q))^2``.

    Parameters
    ----------
    q : float
        Aspect ratio ``N / M >= 1``.
    sigma : float, default 1.0
        Entry standard deviation (the eigenvalues are those of ``W^T W / N``).

    Returns
    -------
    (lo, hi) : tuple of float

    Examples
    --------
    >>> mp_edges(4.0)
    (0.25, 2.25)
    """
    q, sigma = _check_q(q), _check_sigma(sigma)
    r = 1.0 / math.sqrt(q)
    return sigma**2 * (1.0 - r) ** 2, sigma**2 * (1.0 + r) ** 2


def mp_pdf(x: Any, q: float, sigma: float = 1.0):
    """Marchenko-Pastur density ``q / (2 pi sigma^2 x) sqrt((hi - x)(x - lo))`` on (lo, hi), 0 elsewhere.

    Parameters
    ----------
    x : float or array_like, any shape
    q : float
        Aspect ratio ``N / M >= 1``.
    sigma : float, default 1.0

    Returns
    -------
    float or ndarray of the shape of ``x``

    Examples
    --------
    >>> round(mp_pdf(1.0, 4.0), 6)   # 4 / (2 pi) * sqrt(1.25 * 0.75)
    0.616404
    """
    lo, hi = mp_edges(q, sigma)
    x = _as_float_array(x, "x")
    inside = (x > lo) & (x < hi)
    xs = np.where(inside, x, 0.5 * (lo + hi))
    dens = q / (2.0 * np.pi * sigma**2 * xs) * np.sqrt(np.maximum((hi - xs) * (xs - lo), 0.0))
    return _ret(np.where(inside, dens, 0.0), x)


def _mp_cdf_unit(t: np.ndarray, y: float) -> np.ndarray:
    """CDF of the MP law with sigma = 1 and ratio y = 1/q <= 1 (closed form).

    Antiderivative of sqrt((b - t)(t - a)) / t, with R = sqrt((b - t)(t - a)),
    c = (a + b) / 2 = 1 + y, d = (b - a) / 2 = 2 sqrt(y), sqrt(ab) = 1 - y:
    R + c * arcsin((t - c) / d) - sqrt(ab) * arcsin(((a + b) t - 2ab) / ((b - a) t)),
    divided by 2 pi y; the constant (1/2) makes F(a) = 0 and then F(b) = 1.
    """
    a, b = (1.0 - math.sqrt(y)) ** 2, (1.0 + math.sqrt(y)) ** 2
    c, d, sab = 1.0 + y, 2.0 * math.sqrt(y), 1.0 - y
    inside = (t > a) & (t < b)
    ts = np.where(inside, t, 0.5 * (a + b))
    R = np.sqrt(np.maximum((b - ts) * (ts - a), 0.0))
    g1 = np.clip((ts - c) / d, -1.0, 1.0)
    g2 = np.clip(((a + b) * ts - 2.0 * a * b) / ((b - a) * ts), -1.0, 1.0)
    F = 0.5 + (R + c * np.arcsin(g1) - sab * np.arcsin(g2)) / (2.0 * np.pi * y)
    F = np.clip(F, 0.0, 1.0)
    return np.where(t <= a, 0.0, np.where(t >= b, 1.0, F))


def mp_cdf(x: Any, q: float, sigma: float = 1.0):
    """Marchenko-Pastur distribution function, in closed form.

    Parameters
    ----------
    x : float or array_like, any shape
    q : float
        Aspect ratio ``N / M >= 1``.
    sigma : float, default 1.0

    Returns
    -------
    float or ndarray of the shape of ``x``, values in [0, 1]

    Examples
    --------
    >>> mp_cdf([0.0, 2.25, 5.0], 4.0)
    array([0., 1., 1.])
    """
    q, sigma = _check_q(q), _check_sigma(sigma)
    x = _as_float_array(x, "x")
    return _ret(_mp_cdf_unit(x / sigma**2, 1.0 / q), x)


def mp_ppf(p: Any, q: float, sigma: float = 1.0):
    """Quantile function of the Marchenko-Pastur law (inverse of :func:`mp_cdf`).

    Solved by vectorised bisection on the closed-form CDF (60 halvings: machine precision).

    Parameters
    ----------
    p : float or array_like in [0, 1]
    q : float
        Aspect ratio ``N / M >= 1``.
    sigma : float, default 1.0

    Returns
    -------
    float or ndarray of the shape of ``p``

    Examples
    --------
    >>> round(mp_ppf(1.0, 4.0), 6)
    2.25
    """
    q, sigma = _check_q(q), _check_sigma(sigma)
    p = _as_float_array(p, "p")
    if ((p < 0) | (p > 1)).any():
        raise ValueError(f"p must be probabilities in [0, 1]; got values from {p.min():g} to {p.max():g}.")
    y = 1.0 / q
    lo = np.full(p.shape, (1.0 - math.sqrt(y)) ** 2)
    hi = np.full(p.shape, (1.0 + math.sqrt(y)) ** 2)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        below = _mp_cdf_unit(mid, y) < p
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return _ret(0.5 * (lo + hi) * sigma**2, p)


# --------------------------------------------------------------------------- Tracy-Widom
def tracy_widom_scale(n: int, m: int, sigma: float = 1.0) -> tuple[float, float]:
    """Johnstone (2001) centre and scale of the largest eigenvalue of ``W^T W``.

    ``mu = sigma^2 (sqrt(n) + sqrt(m))^2`` and
    ``s = sigma^2 (sqrt(n) + sqrt(m)) (1/sqrt(n) + 1/sqrt(m))^(1/3)``; for an n x m matrix of
    iid entries with variance ``sigma**2``, ``(lambda_max - mu) / s`` is approximately TW1.
    (Johnstone's Theorem 1.1 uses ``n - 1`` for the real Gaussian case; the difference moves
    the centre by about 0.1 s and is conservative for trap detection.) Divide both by ``n``
    for the units of :func:`mp_edges` (eigenvalues of ``W^T W / N``).

    Parameters
    ----------
    n, m : int
        The matrix dimensions (the formula is symmetric in them).
    sigma : float, default 1.0

    Returns
    -------
    (mu, s) : tuple of float, in the units of the eigenvalues of ``W^T W``

    Examples
    --------
    >>> tracy_widom_scale(4, 4)
    (16.0, 4.0)
    """
    for name, v in (("n", n), ("m", m)):
        if isinstance(v, bool) or not isinstance(v, (numbers.Integral, np.integer)) or int(v) < 1:
            raise ValueError(f"{name} must be a positive integer (a matrix dimension); got {v!r}.")
    sigma = _check_sigma(sigma)
    rn, rm = math.sqrt(int(n)), math.sqrt(int(m))
    return sigma**2 * (rn + rm) ** 2, sigma**2 * (rn + rm) * (1.0 / rn + 1.0 / rm) ** (1.0 / 3.0)


_GL_NODES = 64


@lru_cache(maxsize=1)
def _gauss_legendre() -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(_GL_NODES)


def _tw1_cdf_scalar(s: float) -> float:
    # F1(s) = det(I - K_s) on L2(0, inf), K_s(x, y) = Ai(x + y + s) (Ferrari & Spohn 2005;
    # Bornemann 2010, eq. for F1 after the change of variables x -> 2x). Ai(t) < 1e-40 for
    # t > 30, so (0, L) with L = max(16, 16 - s) holds all of the kernel's mass.
    if s > 40.0:
        return 1.0
    if s < -40.0:
        return 0.0
    L = max(16.0, 16.0 - s)
    x, w = _gauss_legendre()
    x = (x + 1.0) * (L / 2.0)
    sw = np.sqrt(w * (L / 2.0))
    K = special.airy(x[:, None] + x[None, :] + s)[0]
    det = np.linalg.det(np.eye(x.size) - sw[:, None] * K * sw[None, :])
    return float(min(max(det, 0.0), 1.0))


def tracy_widom_cdf(s: Any):
    """Distribution function F1 of the Tracy-Widom law for real matrices (beta = 1).

    Computed as a Fredholm determinant (Bornemann 2010) with 64-node Gauss-Legendre
    quadrature; mean -1.2065335746 and variance 1.6077810346 are reproduced to 1e-10.

    Parameters
    ----------
    s : float or array_like, any shape

    Returns
    -------
    float or ndarray of the shape of ``s``

    Examples
    --------
    >>> round(tracy_widom_cdf(0.4501), 3)   # Johnstone (2001), Table 1: 90th percentile 0.45
    0.9
    """
    s = _as_float_array(s, "s")
    out = np.vectorize(_tw1_cdf_scalar, otypes=[float])(s)
    return _ret(out, s)


@lru_cache(maxsize=256)
def _tw1_upper_quantile(tail: float) -> float:
    """s with 1 - F1(s) = tail, by Brent's method."""
    return float(optimize.brentq(lambda s: (1.0 - _tw1_cdf_scalar(s)) - tail, -12.0, 14.0, xtol=1e-12))


def tracy_widom_quantile(p: float) -> float:
    """Quantile of the TW1 law: ``s`` with ``F1(s) = p``.

    Parameters
    ----------
    p : float
        A probability with ``1e-12 <= p <= 1 - 1e-12``.

    Returns
    -------
    float

    Examples
    --------
    >>> round(tracy_widom_quantile(0.95), 2)   # Johnstone (2001), Table 1: 0.98
    0.98
    """
    p = _check_real(p, "p", minimum=0.0, strict=True, fix="Pass a probability strictly between 0 and 1.")
    if not 1e-12 <= p <= 1.0 - 1e-12:
        raise ValueError(f"p must lie in [1e-12, 1 - 1e-12] (the TW1 tails beyond are below "
                         f"double precision); got {p!r}.")
    return _tw1_upper_quantile(float(np.float64(1.0) - p))


# --------------------------------------------------------------------------- robust sigma fit
_FIT_PROBS = np.linspace(0.05, 0.75, 15)
_CUT_TW = 4.0  # outliers for the fit: beyond the MP edge + 4 Tracy-Widom scales (P ~ 2e-4 under the null)


@lru_cache(maxsize=64)
def _fit_reference_cached(q: float) -> np.ndarray:
    return np.asarray(mp_ppf(_FIT_PROBS, q, 1.0))


def _fit_reference(q: float) -> np.ndarray:
    return _fit_reference_cached(float(q))


def _fit_sigma(x: np.ndarray, q: float, m: int | None = None, max_iter: int = 20) -> tuple[float, int, str]:
    """Robust MP sigma of sorted eigenvalues ``x``; returns (sigma, n_excluded, status).

    Start: least-squares match of 15 bulk quantiles (p = 0.05 ... 0.75) to MP(q, 1)'s
    (robust to up to 25% outliers). Then, until the split is stable: outliers are the
    eigenvalues beyond ``edge + 4 s`` (``s`` the Tracy-Widom scale of an n x m matrix,
    n = q m) and ``sigma^2`` is the mean of the others (MP's mean is sigma^2). The mean step
    is far less noisy than quantiles (eigenvalue rigidity makes a spectrum's mean almost
    exact), and an outlier can only enter it when it is within 4 TW scales of the edge.
    """
    if x.size < 2 or x[-1] <= 0.0:
        return float("nan"), 0, "fewer than 2 eigenvalues" if x.size < 2 else "all eigenvalues are zero"
    m = x.size if m is None else m
    n = q * m
    edge1 = (1.0 + 1.0 / math.sqrt(q)) ** 2  # MP(q, 1) upper edge
    tw1 = (1.0 + 1.0 / math.sqrt(q)) * (1.0 / math.sqrt(n) + 1.0 / math.sqrt(m)) ** (1.0 / 3.0) / math.sqrt(n)
    ref = _fit_reference(q)  # MP(q, 1) quantiles; sigma^2 scales them
    sigma2 = float(np.dot(np.quantile(x, _FIT_PROBS), ref) / np.dot(ref, ref))
    bulk_floor = x[-1] * x.size * np.finfo(np.float64).eps
    if not (sigma2 > bulk_floor and math.isfinite(sigma2)) or np.quantile(x, 0.5) <= bulk_floor:
        return float("nan"), 0, "the bulk of the spectrum is zero (rank-deficient matrix)"
    csum = np.cumsum(x)
    keep = -1
    for _ in range(max_iter):
        cut = sigma2 * (edge1 + _CUT_TW * tw1)
        new_keep = max(int(np.searchsorted(x, cut, side="right")), (x.size + 1) // 2)
        if new_keep == keep:
            break
        keep = new_keep
        sigma2 = float(csum[keep - 1] / keep)
    return math.sqrt(sigma2), x.size - keep, "ok"


def fit_mp_sigma(eigs: Any, q: float, *, m: int | None = None) -> float:
    """Robust estimate of the Marchenko-Pastur scale ``sigma`` of a (shuffled) spectrum.

    Starts from a least-squares match of 15 bulk quantiles (probabilities 0.05 ... 0.75) to
    those of MP(q, 1) (MP quantiles scale as ``sigma**2``), then alternates: outliers are
    the eigenvalues beyond the fitted MP edge plus 4 Tracy-Widom scales; ``sigma**2`` is the
    mean of the rest (MP's mean is ``sigma**2``); until the split is stable. A handful of
    outliers (traps) therefore cannot drag ``sigma``: they are excluded, and an eigenvalue
    below the cut moves the mean by at most ``cut / M``. Without outliers the estimate is
    the spectrum's mean, the least noisy scale there is. Costs well under a millisecond.

    Parameters
    ----------
    eigs : array_like, shape (k * m,)
        Non-negative eigenvalues in the units of :func:`mp_edges` (e.g. an ESD rescaled to
        mean 1, as in the anti-grokking study, where ``sigma`` is near 1 for a random
        matrix); may pool k matrices of the same shape. The estimate is scale-equivariant:
        ``fit_mp_sigma(c * eigs, q) == sqrt(c) * fit_mp_sigma(eigs, q)``.
    q : float
        Aspect ratio ``N / M >= 1`` of the matrix.
    m : int, optional
        M = min(shape) of one matrix (sets the Tracy-Widom scale of the outlier cut);
        default ``len(eigs)`` (one matrix).

    Returns
    -------
    float
        ``sigma``; NaN with a :class:`DegenerateSpectrumWarning` when the bulk is zero
        (e.g. a rank-one or all-zero matrix) or fewer than 2 eigenvalues are given.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> W = rng.standard_normal((400, 100))
    >>> ev = np.linalg.eigvalsh(W.T @ W) / 400
    >>> round(fit_mp_sigma(ev, 4.0), 1)
    1.0
    """
    from ._validation import check_eigenvalues, check_positive_int

    x = check_eigenvalues(eigs, "eigs")
    q = _check_q(q)
    if m is not None:
        m = check_positive_int(m, "m")
    sigma, _, status = _fit_sigma(x, q, m)
    if status != "ok":
        warnings.warn(f"fit_mp_sigma: {status}; sigma is NaN.", DegenerateSpectrumWarning, stacklevel=2)
    return sigma
