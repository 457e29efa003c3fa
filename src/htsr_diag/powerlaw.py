"""Power-law fit of the tail of an empirical spectral density: the HTSR layer exponent alpha.

The model is the continuous power law ``p(lambda) ~ lambda^(-alpha)`` for
``lambda >= xmin``. For a given ``xmin`` the maximum-likelihood exponent is
(Clauset, Shalizi & Newman 2009, eq. 3.1)

    alpha = 1 + n / sum_j ln(lambda_j / xmin),        lambda_j >= xmin, n = tail size,

and ``xmin`` is the candidate that minimises a Kolmogorov-Smirnov distance between the
tail and the fitted law.

Agreement with the incumbents
-----------------------------
By default (``selection="ww"``) the candidates and the distance are exactly those of
WeightWatcher 0.7.7 (``weightwatcher.WW_powerlaw.WWFit``) and of ``powerlaw.Fit`` 2.0
(called as ``powerlaw.Fit(x, xmin=None, parameter_ranges={"alpha": [1, None]})``; its
default alpha range ``[0, 3]`` rejects every candidate with alpha > 3):

* candidates: every distinct eigenvalue except the largest;
* distance: ``D_ww = max_j |F(lambda_j) - j / n|`` over the tail, ``j = 0..n-1``,
  with ``F(x) = 1 - (x / xmin)^(1 - alpha)``. It compares the fitted CDF with the
  empirical CDF just *below* each eigenvalue only, so it can understate the
  two-sided KS statistic by up to ``1/n``;
* ties: the first (smallest) ``xmin`` with the minimal distance wins.

On the same eigenvalues (>= 20 of them) alpha and xmin agree with both to ~1e-12.
The result also reports the true two-sided KS distance at the chosen ``xmin``,
``ks_distance = max_j max(F_j - j/n, (j+1)/n - F_j)``; ``selection="two-sided"``
picks ``xmin`` by that distance instead.

Small spectra
-------------
With fewer than :data:`SMALL_N` (20) eigenvalues above the rank cut a
:class:`~htsr_diag.exceptions.SmallSpectrumWarning` is emitted and, by default
(``small_n="bias-corrected"``), the small-n rule of WeightWatcher 0.7.7 is applied as
it actually runs: the bias-corrected MLE ``alpha = 1 + (n - 1) / sum ln(lambda_j / xmin)``
(``(n - 1) / sum`` is unbiased for ``alpha - 1``, ``n / sum`` overestimates it by a
factor ``n / (n - 1)``), over tails of at least :data:`SMALL_N_MIN_TAIL` (8)
eigenvalues (the whole spectrum when there are fewer), with ``xmin`` chosen by the
same distance as for large spectra. (``WWFit.fit_powerlaw_smallN`` computes an
objective ``D - 0.868 / sqrt(n)`` to choose ``xmin``, but ``WWFit.__init__`` then
re-selects by the smallest ``D``, so that objective has no effect; htsr_diag follows
the effective behaviour, which keeps the two in agreement.) ``small_n="standard"``
applies the large-spectrum rule unchanged. Fewer than :data:`MIN_EIGENVALUES` (3)
eigenvalues above the rank cut cannot be fitted.

Numerical zeros
---------------
Eigenvalues below :func:`htsr_diag.spectrum.rank_floor` (``lambda_max * max(N, M) *
eps``, relative to the largest eigenvalue) are dropped before the fit, so that
multiplying ``W`` by any factor ``c`` leaves alpha unchanged and multiplies ``xmin``
by ``c**2``. (WeightWatcher drops eigenvalues below an absolute ``1e-5`` instead.)

Cost
----
Vectorised with numpy; no Python loop over candidates. For every candidate the
distance is a maximum over its tail, O(n^2) in all for n eigenvalues; it is computed
in blocks of candidates so that at most :data:`BLOCK_ELEMENTS` (2^20, 8 MiB) entries
exist per temporary array, whatever n (20,000 eigenvalues: ~25 MiB peak). Most of
that work is skipped, exactly: the distance on a subset of eigenvalues is a lower
bound of the full one, so after a pass on 32, then 256, then 2048 columns, only the
candidates whose bound is not above the best exact distance found are evaluated on
every eigenvalue. The result is the one full evaluation gives (tested). 4096
eigenvalues: ~10-40 ms, 10-30x faster than WWFit (benchmarks/bench_powerlaw.py).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from ._results import Result
from ._validation import check_choice, check_eigenvalues, check_scalar, check_weight, is_tensor
from .exceptions import DegenerateSpectrumWarning, SmallSpectrumWarning
from .spectrum import esd, rank_floor

__all__ = [
    "PowerLawFit",
    "layer_alpha",
    "SMALL_N",
    "SMALL_N_MIN_TAIL",
    "MIN_EIGENVALUES",
    "OVER_TRAINED_ALPHA",
    "UNDER_TRAINED_ALPHA",
]

#: Spectra with fewer eigenvalues (above the rank cut) get the small-n rule and a
#: SmallSpectrumWarning (WeightWatcher 0.7.7's ``SMALL_N_CUTOFF``).
SMALL_N = 20
#: Shortest tail the small-n rule considers (WeightWatcher 0.7.7's ``k_min``).
SMALL_N_MIN_TAIL = 8
#: Fewer eigenvalues than this above the rank cut: no fit (degenerate).
MIN_EIGENVALUES = 3
#: HTSR readings of alpha (Martin & Mahoney): below 2 "over-trained", above 6 "under-trained".
OVER_TRAINED_ALPHA = 2.0
UNDER_TRAINED_ALPHA = 6.0
#: Largest number of (candidate, eigenvalue) pairs held in memory at once per array.
BLOCK_ELEMENTS = 1 << 20
_PRUNE_MIN_CANDIDATES = 64
_PRUNE_LEVELS = (32, 256, 2048)

_SELECTIONS = ("ww", "two-sided")
_SMALL_N_RULES = ("bias-corrected", "standard")


@dataclass(frozen=True)
class PowerLawFit(Result):
    """Result of :func:`layer_alpha`.

    Attributes
    ----------
    alpha : float
        Power-law exponent of the tail, ``p(lambda) ~ lambda^(-alpha)``. NaN if no fit.
    xmin : float
        Start of the fitted tail (an eigenvalue, or the ``xmin`` given).
    xmax : float
        Largest eigenvalue (the end of the fitted tail; the law itself is unbounded).
    ks_distance : float
        Two-sided Kolmogorov-Smirnov distance between the tail's empirical CDF and the
        fitted law, ``max_j max(F_j - j/n, (j+1)/n - F_j)``.
    ks_distance_ww : float
        The distance WeightWatcher 0.7.7 and powerlaw 2.0 report and minimise,
        ``max_j |F_j - j/n|``; ``ks_distance - 1/n_tail <= ks_distance_ww <= ks_distance``.
    n_tail : int
        Eigenvalues in the tail (``lambda >= xmin``). 0 if no fit.
    n_eigenvalues : int
        Eigenvalues in the spectrum, numerical zeros included.
    n_fitted : int
        Eigenvalues above the rank cut (those the fit could use).
    rank_cut : float
        Eigenvalues below this were dropped as numerical zeros.
    alpha_std : float
        Standard error of alpha, ``(alpha - 1) / sqrt(n_tail)`` (asymptotic MLE error;
        it ignores the uncertainty of xmin).
    status : str
        ``"ok"``, or why there is no fit.
    warning : str
        HTSR reading of alpha: ``"over-trained"`` (alpha < 2), ``"under-trained"``
        (alpha > 6), else ``""``. These are the incumbent's labels for empirical
        regularities of trained layers, not verdicts about one model.
    method : str
        ``"mle"``, ``"mle-bias-corrected"`` (small-n rule), with ``"+fixed-xmin"``
        when ``xmin`` was given; ``""`` if no fit.
    selection : str
        The ``selection`` used (``"ww"``, ``"two-sided"``; ``"fixed"`` for a given xmin).
    """

    alpha: float
    xmin: float
    xmax: float
    ks_distance: float
    ks_distance_ww: float
    n_tail: int
    n_eigenvalues: int
    n_fitted: int
    rank_cut: float
    alpha_std: float
    status: str
    warning: str
    method: str
    selection: str

    @property
    def ok(self) -> bool:
        """True when the fit succeeded (``status == "ok"``)."""
        return self.status == "ok"


# --------------------------------------------------------------------------- validation


def _check_positive_float(value: Any, name: str) -> float:
    return check_scalar(value, name, numbers.Real, min_val=0.0, include_boundaries="neither", allow_none=True,
                        fix=f"It is an eigenvalue of W^T W: pass a positive value such as {name}=1.5, or None to "
                            f"choose it from the data.")


def _spectrum(x: Any, shape: Sequence[int] | None, method: str) -> tuple[np.ndarray, tuple[int, int]]:
    """Sorted eigenvalues and the (rows, cols) used for the rank cut."""
    name = "W_or_eigenvalues"
    ndim = x.ndim if (is_tensor(x) or isinstance(x, np.ndarray)) else np.ndim(x)
    if ndim == 1:
        ev = check_eigenvalues(x, name)
        if shape is None:
            shape = (ev.size, ev.size)
        else:
            if (not isinstance(shape, (tuple, list)) or len(shape) < 2
                    or not all(isinstance(s, (numbers.Integral, np.integer)) and s >= 1 for s in shape)):
                raise ValueError(f"shape must be the (rows, cols) of the matrix the eigenvalues came from, "
                                 f"two positive ints; got {shape!r}. Pass e.g. shape=W.shape.")
            shape = (int(shape[0]), int(shape[1]))
        return ev, shape
    if ndim in (2, 3, 4):
        if shape is not None:
            raise ValueError(f"shape is only for eigenvalue (1-D) input; got shape={shape!r} with a "
                             f"{ndim}-D {name}. Drop the shape argument: it is read from the matrix.")
        xs = tuple(x.shape) if hasattr(x, "shape") else np.shape(x)
        if ndim == 2 and min(xs) == 1:
            raise ValueError(f"{name} has shape {xs}: a 2-D input is a weight matrix and needs at least "
                             f"2 rows and 2 columns. To pass eigenvalues, flatten them to 1-D first "
                             f"(np.ravel).")
        W = check_weight(x, name)
        return esd(W, method=method), (int(W.shape[0]), int(W.shape[1]))
    raise ValueError(f"{name} must be 1-D (eigenvalues) or 2-D/3-D/4-D (a weight matrix or a conv kernel "
                     f"(out, in, *kernel)); got {ndim}-D"
                     + (f" with shape {tuple(np.shape(x))}" if ndim else f" ({x!r})") + ".")


# --------------------------------------------------------------------------- the fit


def _distances(L: np.ndarray, first: np.ndarray, right: np.ndarray, cand: np.ndarray,
               log_xmin: np.ndarray, alpha: np.ndarray, n_total: int, *,
               want_two_sided: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """KS distances of the law with exponent ``alpha[k]`` and log-xmin ``log_xmin[k]``.

    Columns: ``L[c]`` log eigenvalues (ascending; all of them, or a subset for a lower
    bound), ``first[c]`` / ``right[c]`` the number of eigenvalues strictly below / at
    most that eigenvalue. ``cand[k]``: index (in the full spectrum of ``n_total``) of the
    first eigenvalue of tail k. Columns below a tail are clipped so that they add 0.
    Returns (D_ww, D_two_sided or None); blocked over candidates so that at most
    ``BLOCK_ELEMENTS`` entries are held per array.
    """
    K = cand.size
    d_ww = np.empty(K)
    d_two = np.empty(K) if want_two_sided else None
    inv_n = 1.0 / (n_total - cand).astype(np.float64)
    count_ge = (n_total - first).astype(np.float64)  # eigenvalues >= x_j
    count_gt = (n_total - right).astype(np.float64)  # eigenvalues > x_j
    col0 = np.searchsorted(first, cand, side="left")  # first column inside each tail
    start = 0
    while start < K:
        c0 = int(col0[start])
        width = max(1, L.size - c0)
        stop = min(K, start + max(1, BLOCK_ELEMENTS // width))
        a = (1.0 - alpha[start:stop])[:, None]
        w = inv_n[start:stop, None]
        # P = (x_j / xmin)^(1 - alpha) = 1 - F_j (F the fitted CDF); log(x_j / xmin) is
        # clipped at 0 below the tail, where P = 1 and the empirical CDF is 0 too.
        P = L[None, c0:] - log_xmin[start:stop, None]
        np.maximum(P, 0.0, out=P)
        P *= a
        np.exp(P, out=P)
        # 1 - (empirical CDF of the tail just below x_j) = min(#{x >= x_j} / n, 1)
        G = count_ge[None, c0:] * w
        np.minimum(G, 1.0, out=G)
        G -= P  # = F_j - j/n
        d_ww[start:stop] = np.maximum(G.max(axis=1), -G.min(axis=1))
        if d_two is not None:
            # (j+1)/n - F_j = P - #{x > x_j}/n  (clipped below the tail, where it is <= 0 anyway)
            H = count_gt[None, c0:] * w
            np.minimum(H, 1.0, out=H)
            np.subtract(P, H, out=H)
            d_two[start:stop] = np.maximum(G.max(axis=1), H.max(axis=1))
        start = stop
    return d_ww, d_two


def _argmin_distance(L: np.ndarray, first: np.ndarray, right: np.ndarray, cand: np.ndarray,
                     alpha: np.ndarray, two_sided: bool) -> int:
    """Index k of the first minimum of the distance ``D_k`` over the candidates.

    Exact, but avoids most of the O(n^2) work: distances on a subset of columns are
    lower bounds of the full ones (the same numbers at fewer points), so only the
    candidates whose bound is below the exact objective of the most promising
    candidate need the full computation. The first minimum (smallest xmin) is kept.
    """
    N = L.size
    pick = 1 if two_sided else 0

    def objective(rows: np.ndarray, cols: np.ndarray | None) -> np.ndarray:
        if cols is None:
            Lc, fc, rc = L, first, right
        else:
            Lc, fc, rc = L[cols], first[cols], right[cols]
        return _distances(Lc, fc, rc, cand[rows], L[cand[rows]], alpha[rows], N, want_two_sided=two_sided)[pick]

    rows = np.arange(cand.size)
    best_k, best = -1, np.inf
    for m in _PRUNE_LEVELS:
        if rows.size <= _PRUNE_MIN_CANDIDATES or 2 * m >= N:
            break
        stride = max(1, N // m)
        cols = np.union1d(np.arange(0, N, stride), np.arange(N - m, N))
        lower = objective(rows, cols)
        k0 = int(rows[np.argmin(lower)])
        if k0 != best_k:
            exact0 = objective(np.array([k0]), None)[0]
            if exact0 < best or (exact0 == best and k0 < best_k):
                best_k, best = k0, exact0
        # every other candidate is provably worse (the slack covers a last-ulp difference
        # between numpy's vectorised and scalar exp at the same point)
        rows = rows[lower <= best + 1e-12 * (1.0 + best)]
    exact = objective(rows, None)
    return int(rows[np.argmin(exact)])


#: Where :func:`layer_alpha` puts its small-spectrum note instead of warning, while a caller
#: collects them (:func:`collect_small_notes`); None: warn. A context variable, so threads
#: (each with its own context) do not see each other's collector.
_SMALL_NOTES: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("htsr_small_notes", default=None)


@contextlib.contextmanager
def collect_small_notes() -> Iterator[list[str]]:
    """Collect :func:`layer_alpha`'s small-spectrum notes in a list instead of warning (internal).

    :func:`htsr_diag.analyze.analyze` uses it to warn once per layer, naming the layer, and
    :func:`~htsr_diag.trajectory.analyze_checkpoints` and the Monitor to warn once per layer
    over many checkpoints.
    """
    notes: list[str] = []
    token = _SMALL_NOTES.set(notes)
    try:
        yield notes
    finally:
        _SMALL_NOTES.reset(token)


def _nan_fit(status: str, n_eigenvalues: int, n_fitted: int, rank_cut: float, xmax: float,
             selection: str) -> PowerLawFit:
    warnings.warn(f"layer_alpha: no power-law fit: {status}.", DegenerateSpectrumWarning, stacklevel=3)
    nan = float("nan")
    return PowerLawFit(alpha=nan, xmin=nan, xmax=xmax, ks_distance=nan, ks_distance_ww=nan, n_tail=0,
                       n_eigenvalues=n_eigenvalues, n_fitted=n_fitted, rank_cut=rank_cut, alpha_std=nan,
                       status=status, warning="", method="", selection=selection)


def _reading(alpha: float) -> str:
    if alpha < OVER_TRAINED_ALPHA:
        return "over-trained"
    if alpha > UNDER_TRAINED_ALPHA:
        return "under-trained"
    return ""


def layer_alpha(
    W_or_eigenvalues: Any,
    *,
    xmin: float | None = None,
    xmin_max: float | None = None,
    selection: str = "ww",
    small_n: str = "bias-corrected",
    shape: Sequence[int] | None = None,
    method: str = "eigh",
) -> PowerLawFit:
    """Fit a power law to the tail of a layer's spectrum: the HTSR exponent alpha.

    Parameters
    ----------
    W_or_eigenvalues : array_like or torch.Tensor
        Shape (n,): eigenvalues of W^T W (squared singular values; order irrelevant).
        Shape (rows, cols) or (out, in, *kernel): a weight matrix or conv kernel, whose
        spectrum :func:`htsr_diag.spectrum.esd` computes (on the tensor's device).
    xmin : float, optional
        Fix the start of the tail instead of choosing it (the tail is every eigenvalue
        ``>= xmin``; alpha is the MLE for that xmin, bias-corrected for a small
        spectrum as ``small_n`` says). Must be > 0 and not above the largest eigenvalue.
    xmin_max : float, optional
        Only consider candidate xmin values ``<= xmin_max`` (forces a longer tail, e.g.
        against a few outliers). Must not be below the smallest eigenvalue above the
        rank cut.
    selection : {"ww", "two-sided"}
        Distance minimised to choose xmin: ``"ww"`` (default) the one WeightWatcher
        0.7.7 and powerlaw 2.0 use, ``max_j |F_j - j/n|``, for identical results;
        ``"two-sided"`` the Kolmogorov-Smirnov statistic.
    small_n : {"bias-corrected", "standard"}
        Rule for spectra with fewer than ``SMALL_N`` (20) eigenvalues above the rank
        cut (see the module docstring). A :class:`SmallSpectrumWarning` is emitted either way.
    shape : (int, int), optional
        For eigenvalue input only: the (rows, cols) of the matrix they came from, which
        sets the rank cut ``rank_floor(lambda_max, shape)``; default ``(n, n)``. Pass
        it to get exactly the result of passing the matrix.
    method : {"eigh", "svd"}
        Passed to :func:`htsr_diag.spectrum.esd` for matrix input.

    Returns
    -------
    PowerLawFit
        ``alpha``, ``xmin``, ``xmax``, ``ks_distance`` (two-sided), ``ks_distance_ww``
        (the incumbents'), ``n_tail``, ``alpha_std``, ``status``, ``warning``, ...
        Degenerate spectra (all zero, all eigenvalues equal, fewer than 3 above the
        rank cut) give NaN fields, a ``status`` saying why and a
        :class:`DegenerateSpectrumWarning`.

    Raises
    ------
    TypeError
        ``W_or_eigenvalues`` not real floating point / numeric; ``xmin`` or ``xmin_max``
        not a number.
    ValueError
        Wrong number of dimensions, NaN/Inf, negative eigenvalues, ``xmin <= 0``,
        ``xmin`` above the largest eigenvalue, ``xmin_max`` below every candidate, an
        unknown ``selection`` / ``small_n`` / ``method``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> lam = rng.pareto(2.5, size=2000) + 1.0     # density ~ x^-3.5 for x >= 1
    >>> fit = layer_alpha(lam)
    >>> round(fit.alpha, 1), fit.status
    (3.5, 'ok')
    >>> layer_alpha(lam, xmin=1.0).n_tail
    2000
    """
    selection = check_choice(selection, "selection", _SELECTIONS)
    small_n = check_choice(small_n, "small_n", _SMALL_N_RULES)
    xmin_v = None if xmin is None else _check_positive_float(xmin, "xmin")
    xmin_max_v = None if xmin_max is None else _check_positive_float(xmin_max, "xmin_max")
    if xmin_v is not None and xmin_max_v is not None:
        raise ValueError(f"xmin and xmin_max exclude each other: xmin fixes the tail, xmin_max bounds the "
                         f"search for it; got xmin={xmin!r}, xmin_max={xmin_max!r}. Pass only one.")
    sel_name = "fixed" if xmin_v is not None else selection

    ev, mshape = _spectrum(W_or_eigenvalues, shape, method)
    n_eigs = int(ev.size)
    lam_max = float(ev[-1])
    if lam_max <= 0.0:
        return _nan_fit("all eigenvalues are zero (a zero matrix)", n_eigs, 0, 0.0, lam_max, sel_name)
    cut = rank_floor(lam_max, mshape)
    x = ev[ev > cut]
    N = int(x.size)
    if N < MIN_EIGENVALUES:
        return _nan_fit(f"only {N} eigenvalue(s) above the numerical rank cut {cut:.3g} "
                        f"(at least {MIN_EIGENVALUES} needed)", n_eigs, N, cut, lam_max, sel_name)
    if x[-1] - x[0] <= cut:
        return _nan_fit(f"all {N} eigenvalues above the rank cut are equal ({lam_max:.6g}): no tail to fit",
                        n_eigs, N, cut, lam_max, sel_name)

    small = N < SMALL_N
    bias_corr = small and small_n == "bias-corrected"
    if small:
        note = (f"only {N} eigenvalues (fewer than {SMALL_N}); alpha is unreliable"
                + (" (bias-corrected small-n fit)." if bias_corr else "."))
        sink = _SMALL_NOTES.get()
        if sink is None:
            warnings.warn(f"layer_alpha: {note}", SmallSpectrumWarning, stacklevel=2)
        else:  # a caller that names the layer (analyze) warns instead, once per layer
            sink.append(note)

    L = np.log(x / x[-1])  # relative to lambda_max: scale-free and well conditioned
    first = np.searchsorted(x, x, side="left")
    right = np.searchsorted(x, x, side="right")
    suffix = np.cumsum(L[::-1])[::-1]  # sum_{j >= i} L_j

    if xmin_v is not None:
        if xmin_v > lam_max:
            raise ValueError(f"xmin must not exceed the largest eigenvalue {lam_max:.6g}; got xmin={xmin_v:.6g}. "
                             f"Pass a smaller xmin (e.g. a quantile of the spectrum), or None to choose it.")
        i = int(np.searchsorted(x, xmin_v, side="left"))
        n_tail = N - i
        s = float(np.sum(L[i:]) - n_tail * math.log(xmin_v / x[-1])) if n_tail else 0.0
        if n_tail < 2 or s <= 0.0:
            return _nan_fit(f"xmin={xmin_v:.6g} leaves {n_tail} eigenvalue(s) (need 2 or more distinct)",
                            n_eigs, N, cut, lam_max, sel_name)
        alpha = 1.0 + (n_tail - (1.0 if bias_corr else 0.0)) / s
        d_ww, d_two = _distances(L, first, right, np.array([i]), np.array([math.log(xmin_v / x[-1])]),
                                 np.array([alpha]), N, want_two_sided=True)
        xmin_out, ks_ww, ks_two = xmin_v, float(d_ww[0]), float(d_two[0])
    else:
        # candidates: first index of every distinct eigenvalue except the largest
        cand = np.flatnonzero(np.r_[True, x[1:] != x[:-1]])
        cand = cand[x[cand] < x[-1]]
        if xmin_max_v is not None:
            cand = cand[x[cand] <= xmin_max_v]
            if cand.size == 0:
                raise ValueError(f"xmin_max must be at least the smallest eigenvalue above the rank cut, "
                                 f"{x[0]:.6g}; got xmin_max={xmin_max_v:.6g}. Pass a larger xmin_max or None.")
        if bias_corr:
            keep = (N - cand) >= min(SMALL_N_MIN_TAIL, N)
            cand = cand[keep]
        n = (N - cand).astype(np.float64)
        s = suffix[cand] - n * L[cand]  # sum_{j >= i} ln(x_j / x_i) > 0
        alphas = 1.0 + (n - (1.0 if bias_corr else 0.0)) / s
        k = _argmin_distance(L, first, right, cand, alphas, selection == "two-sided")
        i = int(cand[k])
        alpha = float(alphas[k])
        n_tail = N - i
        xmin_out = float(x[i])
        ks_ww, ks_two = _distances(L, first, right, cand[k:k + 1], L[cand[k:k + 1]], alphas[k:k + 1], N,
                                   want_two_sided=True)
        ks_ww, ks_two = float(ks_ww[0]), float(ks_two[0])

    return PowerLawFit(
        alpha=float(alpha), xmin=float(xmin_out), xmax=lam_max,
        ks_distance=float(ks_two), ks_distance_ww=float(ks_ww),
        n_tail=int(n_tail), n_eigenvalues=n_eigs, n_fitted=N, rank_cut=float(cut),
        alpha_std=float((alpha - 1.0) / math.sqrt(n_tail)), status="ok", warning=_reading(alpha),
        method=("mle-bias-corrected" if bias_corr else "mle") + ("+fixed-xmin" if xmin_v is not None else ""),
        selection=sel_name,
    )
