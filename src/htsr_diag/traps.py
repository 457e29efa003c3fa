"""Randomized spectra, correlation traps and the KS test of a shuffled spectrum against MP.

A *correlation trap* (Martin & Mahoney; Prakash & Martin 2025) is an eigenvalue of the
element-wise randomly permuted weight matrix that lies beyond the Marchenko-Pastur bulk.
Shuffling destroys the low-rank structure learned by a layer but keeps the distribution of
its entries, so what survives as an outlier is a few atypically large individual weights:
an entry with ``|W_pq| > sigma_e (sqrt(N) + sqrt(M))`` (``sigma_e`` the entry scale of the
bulk), i.e. ``|W_pq| / sqrt(N) > sigma_e (1 + sqrt(M/N))``, is on its own larger than the
bulk's largest singular value and makes an outlier after any shuffle (the BBP transition
happens even earlier, at ``sigma_e (N M)^(1/4)``).

Method
------
1. Shuffle: each 2-D slice of W (a matrix, or each spatial slice ``W[:, :, i, j]`` of a
   convolution kernel) is permuted element-wise with its own permutation drawn from the
   numpy Generator (so a CUDA tensor, shuffled on its device, gives the same matrix as on the
   CPU). ``n_shuffles`` independent shuffles; by default 5 when the layer has fewer than 100
   eigenvalues (as WeightWatcher does), else 1. The shuffled matrices are decomposed as one
   batch by :func:`htsr_diag.spectrum.esd_many`.
2. Rescale the pooled shuffled eigenvalues (all slices and shuffles) to mean 1 (the study's
   and WeightWatcher's convention; this cancels the scale of W, so results are scale
   invariant) and fit the MP ``sigma`` robustly (:func:`htsr_diag.mp.fit_mp_sigma`).
3. Threshold = MP bulk edge ``sigma^2 (1 + 1/sqrt(q))^2`` + ``z * s``, with ``s`` the
   Tracy-Widom scale of Johnstone (2001) in the same units and ``z`` the TW1 quantile that
   makes the probability of at least one eigenvalue of a shuffle (all its slices) above the
   threshold equal to ``false_alarm`` under the iid null (default 1e-3 per layer;
   Sidak-corrected over slices). A layer's trap count is the median over shuffles of the
   per-shuffle counts, so its false-alarm rate is at most ``false_alarm``.

   The false-alarm rate is measured by ``benchmarks/bench_false_alarm.py`` (results in
   ``benchmarks/results/false_alarm.md``) and checked in ``tests/test_traps.py``.

Differences from WeightWatcher 0.7.7 (``rand_num_spikes`` / ``num_traps``)
--------------------------------------------------------------------------
- Its margin is ``sqrt(TW)`` with ``TW = q^-1/2 lambda_+^(2/3) M^(-2/3)``, which is itself
  close to the Tracy-Widom scale; the square root makes the margin about 6-10x that scale,
  so eigenvalues a little beyond the edge (weak traps) are counted here and not there.
- Its sigma is the best of a 195-point grid against a kernel density estimate of the whole
  spectrum (about 1 s per small layer); here it is a robust quantile fit (about 1 ms).
- It counts the pooled eigenvalues of its 5 shuffles for small layers (so 5x the traps of
  one shuffle); here ``n_traps`` is per shuffle.
- It uses the global numpy RNG; here ``rng`` makes runs reproducible.

Convolution kernels
-------------------
Each spatial slice is shuffled on its own (entries never move between slices) and the
slices' spectra are pooled and rescaled together, as WeightWatcher does. If the slices have
very different scales (e.g. a dominant centre tap) the pool is a mixture of MP laws and the
largest-scale slice can produce traps; ``n_slices`` records how many were pooled.

Entries with a non-zero mean
----------------------------
A constant offset ``mu`` of all entries is a rank-one spike that shuffling keeps
(``mu sqrt(N M)`` against the bulk's ``sigma_e (sqrt(N) + sqrt(M))``), so it shows as a trap
when ``|mu| / sigma_e`` exceeds about ``1 / sqrt(M)``. ``center_traps=True`` (the default of
every function of htsr_diag) subtracts the mean of W before shuffling; WeightWatcher (and so
the study) does not centre, which ``center_traps=False`` reproduces.
"""

from __future__ import annotations

import logging
import math
import numbers
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._results import Result
from ._validation import (UNSET, check_bool, check_choice, check_positive_int, check_rng, check_scalar, check_weight,
                          is_tensor, renamed)
from .exceptions import DegenerateSpectrumWarning
from .mp import _fit_sigma, _tw1_upper_quantile, mp_edges, tracy_widom_scale
from .spectrum import _blocked_gram, esd_many, matrix_dims, matrix_slices

__all__ = [
    "TrapReport",
    "KSTrapResult",
    "randomized_esd",
    "correlation_traps",
    "ks_trap_test",
    "randomized_analysis",
]

logger = logging.getLogger(__name__)

DEFAULT_FALSE_ALARM = 1e-3
"""Default probability that a layer of iid entries shows at least one trap."""

SMALL_LAYER = 100
"""Layers with fewer eigenvalues than this pool 5 shuffles by default (as WeightWatcher)."""


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class TrapReport(Result):
    """Correlation traps of one layer: outliers of its shuffled spectrum beyond MP + TW.

    Eigenvalues (``trap_eigenvalues``, ``threshold``, ``bulk_edge``, ``max_eigenvalue``) are
    in the :func:`htsr_diag.spectrum.esd` convention (squared singular values of W), so
    they are comparable with WeightWatcher's eigenvalues; divide by ``scale`` for the
    mean-1 units of the study and of WeightWatcher's ``rand_bulk_max``.

    Attributes
    ----------
    n_traps : int
        Median over shuffles of the number of shuffled eigenvalues above ``threshold``
        (NaN when degenerate).
    trap_eigenvalues : ndarray, shape (n_shuffles * ~n_traps,)
        Every pooled shuffled eigenvalue above ``threshold``, ascending.
    threshold : float
        ``bulk_edge + tw_margin * tw_scale``.
    bulk_edge : float
        Upper MP edge for the fitted ``sigma``.
    tw_scale : float
        Johnstone's Tracy-Widom scale for the fitted ``sigma`` (same units).
    tw_margin : float
        The TW1 quantile ``z`` used (depends on ``false_alarm`` and ``n_slices``).
    max_eigenvalue : float
        Largest shuffled eigenvalue.
    sigma : float
        Fitted MP scale of the mean-1 rescaled shuffled spectrum (near 1 for a random matrix).
    scale : float
        Mean of the pooled shuffled eigenvalues (the rescaling divisor).
    q : float
        Aspect ratio N / M of one slice.
    n, m : int
        N = max and M = min of one slice's shape.
    n_slices : int
        2-D slices pooled (1 for a matrix, prod(kernel) for a convolution).
    n_shuffles : int
        Independent shuffles pooled.
    counts : ndarray of int, shape (n_shuffles,)
        Eigenvalues above ``threshold`` in each shuffle.
    false_alarm : float
        Designed probability of ``n_traps >= 1`` for a layer of iid entries.
    entry_threshold : float
        ``sigma_e (sqrt(N) + sqrt(M))`` with ``sigma_e = sigma * sqrt(scale / N)`` the
        bulk's entry scale: entries of W larger in magnitude make traps on their own.
    n_large_entries : int
        Number of entries of W (after centring, if asked) above ``entry_threshold``.
    large_entry_index : ndarray of int, shape (k, W.ndim)
        Positions in W (row, col[, kernel indices]) of the ``k <= max_entries`` largest of
        them, by decreasing magnitude.
    large_entry_values : ndarray, shape (k,)
        Their values in W.
    centered : bool
        Whether the mean of W was subtracted before shuffling.
    status : str
        "ok" or why the fields are NaN.
    shuffled_eigenvalues : ndarray, shape (n_shuffles * n_slices * M,)
        Every pooled shuffled eigenvalue, ascending, in the same units: what
        :func:`randomized_esd` returns for the same ``rng``, so a plot of the shuffled
        spectrum reuses the shuffle the traps were counted on instead of drawing another.
    """

    n_traps: int | float
    trap_eigenvalues: np.ndarray
    threshold: float
    bulk_edge: float
    tw_scale: float
    tw_margin: float
    max_eigenvalue: float
    sigma: float
    scale: float
    q: float
    n: int
    m: int
    n_slices: int
    n_shuffles: int
    counts: np.ndarray = field(metadata={"dtype": np.int64})
    false_alarm: float
    entry_threshold: float
    n_large_entries: int | float
    large_entry_index: np.ndarray = field(metadata={"dtype": np.int64})
    large_entry_values: np.ndarray
    centered: bool
    status: str
    shuffled_eigenvalues: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)


@dataclass(frozen=True)
class KSTrapResult(Result):
    """One-sample Kolmogorov-Smirnov test of a shuffled spectrum against the fitted MP law.

    The shuffled eigenvalues are rescaled to mean 1 and compared with MP(q, sigma), sigma
    fitted robustly on the same eigenvalues (or given). Caveats: (i) fitting sigma on the
    data being tested makes the p-value conservative (Lilliefors-type bias; here small,
    one parameter); (ii) eigenvalues of one matrix are not independent -- they repel, so
    under the null the statistic is far smaller than for iid samples and p-values sit
    near 1 -- and pooled shuffles of one matrix are not independent of each other. Read
    the p-value as a monotone score of departure from MP, not as an exact false-positive rate.
    With the robust sigma, k outliers alone add about k / n_eigenvalues to the statistic;
    the test's extra power is against a deformed bulk (heavy-tailed entries).

    Attributes
    ----------
    statistic : float
        KS distance sup |F_emp - F_MP|.
    pvalue : float
        scipy.stats.kstest p-value (see the caveats).
    sigma : float
        MP scale of the mean-1 rescaled spectrum used in the test.
    n_traps : int
        Trap count of the same shuffled spectrum (see :class:`TrapReport`).
    n_eigenvalues : int
        Pooled eigenvalues tested.
    q : float
        Aspect ratio N / M.
    status : str
        "ok" or why the fields are NaN.
    """

    statistic: float
    pvalue: float
    sigma: float
    n_traps: int | float
    n_eigenvalues: int
    q: float
    status: str


# --------------------------------------------------------------------------- validation
def _check_false_alarm(value: Any) -> float:
    return check_scalar(value, "false_alarm", numbers.Real, min_val=1e-10, max_val=0.5,
                        fix=f"It is the designed probability that a random layer shows a trap; the default is "
                            f"{DEFAULT_FALSE_ALARM}.")


def _check_n_shuffles(value: Any) -> int | None:
    return None if value is None else check_positive_int(value, "n_shuffles")


def _check_max_entries(value: Any) -> int:
    return check_positive_int(value, "max_entries", minimum=0)


# --------------------------------------------------------------------------- shuffling
def _default_shuffles(W: Any) -> int:
    n_slices = len(matrix_slices(W))
    m = min(int(W.shape[0]), int(W.shape[1]))
    return 5 if n_slices * m < SMALL_LAYER else 1


def _shuffle(W: Any, rng: np.random.Generator, mu: Any = None) -> Any:
    """One element-wise shuffle of each 2-D slice of ``W - mu`` (``W`` when ``mu`` is None),
    same layout as W.

    A numpy array is shuffled in place (on a copy) by ``rng.shuffle``; a tensor is gathered
    on its device with ``rng.permutation`` indices. Both make the same Fisher-Yates swaps
    from the same draws (``Generator.permutation(n)`` is ``shuffle(arange(n))``), so a
    matrix gives the same shuffled matrix as a numpy array, a CPU tensor or a CUDA tensor.
    ``mu`` is subtracted from the shuffled copy in place: the same numbers as shuffling a
    centred copy, without a second copy of the layer.
    """
    S = matrix_slices(W)  # (k, out, in)
    k, r, c = S.shape
    if is_tensor(W):
        import torch

        perms = np.stack([rng.permutation(r * c) for _ in range(k)])
        idx = torch.from_numpy(perms).to(W.device)
        flat = torch.gather(S.reshape(k, r * c), 1, idx).reshape(k, r, c)
        if mu is not None:
            flat -= mu
        if W.ndim == 2:
            return flat[0]
        return flat.permute(1, 2, 0).reshape(W.shape)
    flat = np.array(S, order="C").reshape(k, r * c)  # a copy
    for i in range(k):
        rng.shuffle(flat[i])
    if mu is not None:
        flat -= mu
    flat = flat.reshape(k, r, c)
    if W.ndim == 2:
        return flat[0]
    return np.moveaxis(flat, 0, 2).reshape(W.shape)


def _shuffled_spectra(W: Any, rng: np.random.Generator, n_shuffles: int, single: bool,
                      mu: Any = None) -> list[np.ndarray]:
    """Spectra (float64, ascending, slices pooled) of ``n_shuffles`` shuffles of ``W - mu``.

    float64: decomposed as one batch by :func:`htsr_diag.spectrum.esd_many` (on the CPU
    through torch, whose LAPACK, MKL on x86, is faster than numpy's for ``eigvalsh``).
    float32 (``single``): the same batch, Gram matrix and ``eigvalsh`` in float32.
    """
    if is_tensor(W) and _half_as_stored(W, single):
        return [_half_spectrum(W, rng, mu) for _ in range(n_shuffles)]
    shuffled = [_shuffle(W, rng, mu) for _ in range(n_shuffles)]
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        return esd_many(shuffled)
    if not is_tensor(W):
        shuffled = [torch.from_numpy(S) for S in shuffled]
    if not single:
        return esd_many(shuffled)
    k = len(matrix_slices(shuffled[0]))
    if n_shuffles == 1:  # a large layer: no concatenated copy
        S = matrix_slices(shuffled[0]).to(torch.float32)
    else:
        S = torch.cat([matrix_slices(x).to(torch.float32) for x in shuffled], dim=0)
    del shuffled
    r, c = S.shape[-2:]
    G = S.mT @ S if r >= c else S @ S.mT
    del S
    ev = torch.linalg.eigvalsh(G).to(torch.float64).cpu().numpy()
    return [np.maximum(np.sort(ev[i * k:(i + 1) * k].reshape(-1)), 0.0) for i in range(n_shuffles)]


_PRECISIONS = ("auto", "float64", "float32")


def _half_as_stored(W: Any, single: bool) -> bool:
    """A 2-D float16/bfloat16 CPU tensor whose shuffled spectrum is float32: analysed as stored,
    never converted whole (see :func:`_half_spectrum`)."""
    import torch

    return (single and W.ndim == 2 and W.device.type == "cpu"
            and W.dtype in (torch.float16, torch.bfloat16))


def _blocked_mean(W: Any) -> np.float32:
    """The mean of a half-precision tensor, summed in float64 over blocks of ``_CHUNK`` entries."""
    flat = W.reshape(-1)
    total = sum(float(flat[i:i + _CHUNK].double().sum()) for i in range(0, int(flat.shape[0]), _CHUNK))
    return np.float32(total / max(int(flat.shape[0]), 1))


def _half_spectrum(W: Any, rng: np.random.Generator, mu: Any) -> np.ndarray:
    """Float32 spectrum of one shuffle of ``W - mu`` for a 2-D half-precision CPU tensor, in
    about twice the layer's stored size: the entries' bits are shuffled as stored (the same
    ``rng.shuffle`` swaps as :func:`_shuffle`, so the same permutation), then the Gram matrix
    is summed over blocks of ``_CHUNK`` entries converted to float32 one block at a time
    (:func:`htsr_diag.spectrum._blocked_gram`, as the streamed float64 spectrum)."""
    import torch

    bits = np.array(W.contiguous().view(torch.int16).numpy(), order="C")  # one copy, as stored
    rng.shuffle(bits.reshape(-1))
    S = torch.from_numpy(bits).view(W.dtype)
    shift = None if mu is None else torch.tensor(float(mu), dtype=torch.float32)
    G = _blocked_gram(S, torch.float32, _CHUNK, shift)
    del S, bits
    ev = torch.linalg.eigvalsh(G).to(torch.float64).numpy()
    return np.maximum(np.sort(ev), 0.0)


def _prepare(W: Any, rng: Any, n_shuffles: Any, center: Any, precision: Any = "auto"):
    W = check_weight(W)
    rng = check_rng(rng)
    n_shuffles = _check_n_shuffles(n_shuffles)
    center = check_bool(center, "center_traps")
    precision = check_choice(precision, "precision", _PRECISIONS,
                             fix="\"auto\" computes the shuffled spectrum in float32 for float32 (or half-precision) "
                                 "weights, else float64.")
    if is_tensor(W):
        import torch

        stored_single = W.dtype != torch.float64
        single = precision == "float32" or (precision == "auto" and stored_single)
        if _half_as_stored(W, single):
            mu = _blocked_mean(W) if center else None
            if n_shuffles is None:
                n_shuffles = _default_shuffles(W)
            return W, rng, n_shuffles, center, single, mu
        if W.dtype not in (torch.float32, torch.float64):  # float16 / bfloat16 (numpy has no bfloat16)
            W = W.to(torch.float32)
        if W.device.type == "cpu":
            W = W.numpy()  # a view; CPU work is done by numpy (same numbers as the tensor path)
    else:
        stored_single = W.dtype != np.float64
    single = precision == "float32" or (precision == "auto" and stored_single)
    mu = W.mean() if center else None  # subtracted from each shuffled copy and entry, never from W
    if n_shuffles is None:
        n_shuffles = _default_shuffles(W)
    return W, rng, n_shuffles, center, single, mu


def randomized_esd(W: Any, *, rng: Any = 0, n_shuffles: int | None = None,
                   center_traps: bool = True, precision: str = "auto", center: Any = UNSET) -> np.ndarray:
    """Eigenvalues of the element-wise randomly permuted W (several shuffles pooled).

    Parameters
    ----------
    W : ndarray or torch.Tensor, shape (rows, cols) or (out, in, *kernel)
        A weight matrix or convolution kernel (each spatial slice shuffled on its own). A
        CUDA tensor is shuffled and decomposed on its GPU.
    rng : None, int or numpy.random.Generator, default 0
        Seed of the permutations (same seed, same numbers; CPU and GPU alike). None: fresh
        entropy (different numbers at each call).
    n_shuffles : int, optional
        Independent shuffles pooled; default 5 if the layer has fewer than 100 eigenvalues
        (WeightWatcher's rule), else 1.
    center_traps : bool, default True
        Subtract the mean of W first (see :func:`correlation_traps`). ``center=`` is the
        old name (FutureWarning).
    precision : {"auto", "float64", "float32"}
        Arithmetic of the shuffled spectrum. ``"auto"``: float32 when W is stored in
        float32 or half precision (model weights), float64 when W is float64. float32
        eigenvalues differ from float64 ones by < 0.3% of the Tracy-Widom scale
        (measured at 1024 and 2048), i.e. they never change a trap count in practice,
        and cost half as much.

    Returns
    -------
    ndarray, shape (n_shuffles * n_slices * M,)
        Ascending float64 eigenvalues in the :func:`htsr_diag.spectrum.esd` convention.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.random.default_rng(0).standard_normal((50, 20))
    >>> randomized_esd(W, rng=0).shape   # 20 eigenvalues < 100: 5 shuffles pooled
    (100,)
    """
    center_traps = renamed(center, "center", center_traps, "center_traps", True, "randomized_esd")
    W, rng, n_shuffles, _, single, mu = _prepare(W, rng, n_shuffles, center_traps, precision)
    return np.sort(np.concatenate(_shuffled_spectra(W, rng, n_shuffles, single, mu)))


# --------------------------------------------------------------------------- analysis
def _nan_report(W: Any, n_shuffles: int, false_alarm: float, center: bool, status: str,
                pooled: np.ndarray) -> TrapReport:
    n, m, q = matrix_dims(W.shape[:2])
    warnings.warn(f"correlation traps: {status}; fields are NaN.", DegenerateSpectrumWarning, stacklevel=4)
    nan = float("nan")
    return TrapReport(
        n_traps=nan, trap_eigenvalues=np.empty(0), threshold=nan, bulk_edge=nan, tw_scale=nan,
        tw_margin=nan, max_eigenvalue=nan, sigma=nan, scale=nan, q=q, n=n, m=m,
        n_slices=len(matrix_slices(W)), n_shuffles=n_shuffles, counts=np.empty(0, dtype=np.int64),
        false_alarm=false_alarm, entry_threshold=nan, n_large_entries=nan,
        large_entry_index=np.empty((0, W.ndim), dtype=np.int64), large_entry_values=np.empty(0),
        centered=center, status=status, shuffled_eigenvalues=pooled)


_CHUNK = 1 << 22  # entries per block when scanning a layer for large entries (16 MiB in float32)


def _large_entries(W: Any, threshold: float, max_entries: int, mu: Any = None) -> tuple[int, np.ndarray, np.ndarray]:
    """Count of |W - mu| > threshold and the positions / values (of ``W - mu``) of the largest
    max_entries; ``mu`` None is 0.

    Ordered by decreasing magnitude, ties by position (row-major), on every device. The layer
    is scanned in blocks of ``_CHUNK`` entries, so the temporaries stay small.
    """
    flat = W.reshape(-1)
    idx_parts, value_parts = [], []
    for start in range(0, int(flat.shape[0]), _CHUNK):
        block = flat[start:start + _CHUNK]
        if is_tensor(W):
            import torch

            if block.dtype in (torch.float16, torch.bfloat16):  # as stored (_half_as_stored)
                block = block.to(torch.float32)
            if mu is not None:
                block = block - mu
            hit = torch.nonzero(block.abs() > threshold).reshape(-1)
            value_parts.append(block[hit].double().cpu().numpy())
            idx_parts.append(hit.cpu().numpy() + start)
        else:
            if mu is not None:
                block = block - mu
            hit = np.flatnonzero(np.abs(block) > threshold)
            value_parts.append(block[hit].astype(np.float64))
            idx_parts.append(hit + start)
    flat_idx = np.concatenate(idx_parts).astype(np.int64) if idx_parts else np.zeros(0, np.int64)
    values = np.concatenate(value_parts) if value_parts else np.zeros(0)
    count = int(flat_idx.size)
    order = np.lexsort((flat_idx, -np.abs(values)))[:max_entries]
    flat_idx, values = flat_idx[order], values[order]
    index = np.stack(np.unravel_index(flat_idx, tuple(W.shape)), axis=1).astype(np.int64)
    return count, index.reshape(-1, W.ndim), values


def _analyze(W: Any, spectra: list[np.ndarray], n_shuffles: int, false_alarm: float,
             max_entries: int, center: bool, mu: Any = None) -> tuple[TrapReport, np.ndarray | None]:
    """Traps from per-shuffle spectra; also returns the rescaled pooled spectrum (or None)."""
    n, m, q = matrix_dims(W.shape[:2])
    n_slices = len(matrix_slices(W))
    pooled = np.sort(np.concatenate(spectra))
    scale = float(pooled.mean())
    if not scale > 0.0:
        return _nan_report(W, n_shuffles, false_alarm, center, "all-zero matrix", pooled), None
    x = pooled / scale
    sigma, _, status = _fit_sigma(x, q, m)
    if status != "ok":
        return _nan_report(W, n_shuffles, false_alarm, center, status, pooled), None
    bulk_edge = mp_edges(q, sigma)[1]
    tw_scale = tracy_widom_scale(n, m, sigma)[1] / n  # same units as x
    tail = -math.expm1(math.log1p(-false_alarm) / n_slices)  # Sidak over the slices of a shuffle
    z = _tw1_upper_quantile(float(tail))
    threshold = bulk_edge + z * tw_scale
    counts = np.array([int(np.count_nonzero(sp / scale > threshold)) for sp in spectra], dtype=np.int64)
    n_traps = int(math.floor(float(np.median(counts)) + 0.5))
    sigma_e = sigma * math.sqrt(scale / n)
    entry_threshold = sigma_e * (math.sqrt(n) + math.sqrt(m))
    n_large, index, values = _large_entries(W, entry_threshold, max_entries, mu)
    logger.debug("traps: shape=%s sigma=%.4f threshold=%.4f counts=%s large entries=%d",
                 tuple(W.shape), sigma, threshold, counts.tolist(), n_large)
    report = TrapReport(
        n_traps=n_traps, trap_eigenvalues=pooled[x > threshold], threshold=threshold * scale,
        bulk_edge=bulk_edge * scale, tw_scale=tw_scale * scale, tw_margin=z,
        max_eigenvalue=float(pooled[-1]), sigma=sigma, scale=scale, q=q, n=n, m=m,
        n_slices=n_slices, n_shuffles=n_shuffles, counts=counts, false_alarm=false_alarm,
        entry_threshold=entry_threshold, n_large_entries=n_large, large_entry_index=index,
        large_entry_values=values, centered=center, status="ok", shuffled_eigenvalues=pooled)
    return report, x


def _ks(x: np.ndarray | None, report: TrapReport, sigma: float | None) -> KSTrapResult:
    from scipy import stats

    from .mp import _mp_cdf_unit

    nan = float("nan")
    if x is None:
        return KSTrapResult(statistic=nan, pvalue=nan, sigma=nan, n_traps=nan,
                            n_eigenvalues=0, q=report.q, status=report.status)
    s = report.sigma if sigma is None else sigma
    y = 1.0 / report.q
    res = stats.kstest(x, lambda v: _mp_cdf_unit(np.asarray(v) / s**2, y))
    return KSTrapResult(statistic=float(res.statistic), pvalue=float(res.pvalue), sigma=float(s),
                        n_traps=report.n_traps, n_eigenvalues=int(x.size), q=report.q, status="ok")


def _check_ks_sigma(sigma: Any) -> float | None:
    if sigma is None:
        return None
    from .mp import _check_sigma

    return _check_sigma(sigma)


def correlation_traps(W: Any, *, rng: Any = 0, n_shuffles: int | None = None,
                      false_alarm: float = DEFAULT_FALSE_ALARM, max_entries: int = 100,
                      center_traps: bool = True, precision: str = "auto", center: Any = UNSET) -> TrapReport:
    """Correlation traps of a layer: shuffled eigenvalues beyond the MP edge + a TW margin.

    Parameters
    ----------
    W : ndarray or torch.Tensor, shape (rows, cols) or (out, in, *kernel)
        A weight matrix or convolution kernel (any device).
    rng : None, int or numpy.random.Generator, default 0
        Seed of the shuffles (None: fresh entropy).
    n_shuffles : int, optional
        Default 5 for layers with fewer than 100 eigenvalues, else 1.
    false_alarm : float, default 1e-3
        Designed probability that a layer of iid entries shows at least one trap (sets the
        Tracy-Widom margin). Measured: see ``benchmarks/results/false_alarm.md``.
    max_entries : int, default 100
        How many of the large entries of W to report (all are counted).
    center_traps : bool, default True
        Subtract the mean of W before shuffling. A non-zero mean survives any shuffle as a
        rank-one spike and would otherwise count as a trap; False gives the uncentred count
        of WeightWatcher and the study (docs/quantities.md says why centred is the
        default). ``center=`` is the old name (FutureWarning).
    precision : {"auto", "float64", "float32"}
        Arithmetic of the shuffled spectrum; see :func:`randomized_esd`.

    Returns
    -------
    TrapReport

    Examples
    --------
    >>> import numpy as np
    >>> W = np.random.default_rng(0).standard_normal((200, 784))
    >>> W[3, 5] = 100.0                      # one entry far above sqrt(784) + sqrt(200) = 42
    >>> r = correlation_traps(W, rng=0)
    >>> r.n_traps, r.large_entry_index.tolist()
    (1, [[3, 5]])
    """
    center_traps = renamed(center, "center", center_traps, "center_traps", True, "correlation_traps")
    false_alarm = _check_false_alarm(false_alarm)
    max_entries = _check_max_entries(max_entries)
    W, rng, n_shuffles, center_traps, single, mu = _prepare(W, rng, n_shuffles, center_traps, precision)
    spectra = _shuffled_spectra(W, rng, n_shuffles, single, mu)
    return _analyze(W, spectra, n_shuffles, false_alarm, max_entries, center_traps, mu)[0]


def ks_trap_test(W: Any, *, rng: Any = 0, n_shuffles: int | None = None,
                 sigma: float | None = None, false_alarm: float = DEFAULT_FALSE_ALARM,
                 center_traps: bool = True, precision: str = "auto", center: Any = UNSET) -> KSTrapResult:
    """KS test of W's shuffled, mean-1 rescaled spectrum against the fitted MP law.

    The anti-grokking study's Table 4 test: ``scipy.stats.kstest`` of the shuffled
    eigenvalues against MP(q, sigma). See :class:`KSTrapResult` for how to read the p-value.

    Parameters
    ----------
    W : ndarray or torch.Tensor, shape (rows, cols) or (out, in, *kernel)
    rng : None, int or numpy.random.Generator, default 0
    n_shuffles : int, optional
        Default 5 for layers with fewer than 100 eigenvalues, else 1.
    sigma : float, optional
        MP scale to test against, in mean-1 units. Default: the robust fit
        (:func:`htsr_diag.mp.fit_mp_sigma`). ``sigma=1.0`` tests against the moment fit
        (the mean-1 rescaling alone), which also reacts to a few large entries because they
        inflate the mean.
    false_alarm : float, default 1e-3
        For the ``n_traps`` reported alongside.
    center_traps : bool, default True
        Subtract the mean of W before shuffling (see :func:`correlation_traps`; ``center=``
        is the old name).
    precision : {"auto", "float64", "float32"}
        See :func:`randomized_esd`.

    Returns
    -------
    KSTrapResult

    Examples
    --------
    >>> import numpy as np
    >>> W = np.random.default_rng(0).standard_normal((200, 784))
    >>> res = ks_trap_test(W, rng=0)
    >>> res.pvalue > 0.05
    True
    """
    center_traps = renamed(center, "center", center_traps, "center_traps", True, "ks_trap_test")
    false_alarm = _check_false_alarm(false_alarm)
    sigma = _check_ks_sigma(sigma)
    W, rng, n_shuffles, center_traps, single, mu = _prepare(W, rng, n_shuffles, center_traps, precision)
    spectra = _shuffled_spectra(W, rng, n_shuffles, single, mu)
    report, x = _analyze(W, spectra, n_shuffles, false_alarm, 0, center_traps, mu)
    return _ks(x, report, sigma)


def randomized_analysis(W: Any, *, rng: Any = 0, n_shuffles: int | None = None,
                        false_alarm: float = DEFAULT_FALSE_ALARM, max_entries: int = 100,
                        ks_sigma: float | None = None, center_traps: bool = True,
                        precision: str = "auto", center: Any = UNSET) -> tuple[TrapReport, KSTrapResult]:
    """Traps and the KS test from ONE shuffled spectrum (one decomposition per shuffle).

    Same parameters as :func:`correlation_traps`, plus ``ks_sigma`` (the ``sigma`` of
    :func:`ks_trap_test`). With the same ``rng``, the results equal those of the two
    functions called separately.

    Returns
    -------
    (TrapReport, KSTrapResult)

    Examples
    --------
    >>> import numpy as np
    >>> W = np.random.default_rng(0).standard_normal((200, 784))
    >>> traps, ks = randomized_analysis(W, rng=0)
    >>> traps.n_traps, ks.n_traps
    (0, 0)
    """
    center_traps = renamed(center, "center", center_traps, "center_traps", True, "randomized_analysis")
    false_alarm = _check_false_alarm(false_alarm)
    max_entries = _check_max_entries(max_entries)
    ks_sigma = _check_ks_sigma(ks_sigma)
    W, rng, n_shuffles, center_traps, single, mu = _prepare(W, rng, n_shuffles, center_traps, precision)
    spectra = _shuffled_spectra(W, rng, n_shuffles, single, mu)
    report, x = _analyze(W, spectra, n_shuffles, false_alarm, max_entries, center_traps, mu)
    return report, _ks(x, report, ks_sigma)
