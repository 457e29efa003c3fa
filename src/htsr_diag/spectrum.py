"""Empirical spectral densities: eigenvalues of W^T W.

Convention (the incumbent WeightWatcher's, so numbers are directly comparable): the ESD
of an N x M weight matrix (N = max(shape), M = min(shape), Q = N / M >= 1) is the M
eigenvalues of the smaller Gram matrix, i.e. the squared singular values of W, with
no 1/N normalisation.

Method and accuracy
-------------------
By default (``method="eigh"``) the smaller Gram matrix ``W^T W`` (or ``W W^T``) is
formed in float64 and handed to a symmetric eigensolver. This is 3-6x faster than an
SVD on a CPU. Its eigenvalues carry an absolute error of order ``M * eps * lambda_max``
(eps = 2.2e-16 in float64), so every eigenvalue above ~1e-12 lambda_max -- all the
eigenvalues a power-law tail or a Marchenko-Pastur edge depends on -- agrees with the
squared singular values of an SVD to many digits; eigenvalues below
:func:`rank_floor` are rounding noise (an SVD resolves them further). Use
``method="svd"`` when the smallest squared singular values matter.

A torch tensor is decomposed with torch on its own device (a CUDA tensor on its GPU),
in float64. Matrices of equal shape are decomposed as one batch by :func:`esd_many`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

import numpy as np

from ._validation import check_weight, is_tensor

__all__ = ["esd", "esd_many", "matrix_slices", "matrix_dims", "rank_floor"]

_METHODS = ("eigh", "svd")


def matrix_dims(shape: Sequence[int]) -> tuple[int, int, float]:
    """(N, M, Q) of one 2-D slice of a weight of this shape: N = max, M = min, Q = N/M."""
    r, c = int(shape[0]), int(shape[1])
    n, m = max(r, c), min(r, c)
    return n, m, n / m


def matrix_slices(W: Any):
    """The 2-D matrices whose spectra make up the ESD of ``W``, stacked as (k, rows, cols).

    A 2-D matrix gives k = 1. A convolution kernel of shape (out, in, *kernel) gives its
    prod(kernel) spatial slices ``W[:, :, i, j]`` (each out x in); their spectra are pooled,
    as WeightWatcher does for Conv2D (and, unlike it, also for Conv1d).
    """
    if W.ndim == 2:
        return W[None]
    out, inp = W.shape[0], W.shape[1]
    k = int(np.prod(W.shape[2:]))
    if is_tensor(W):
        return W.reshape(out, inp, k).permute(2, 0, 1)
    return np.moveaxis(W.reshape(out, inp, k), 2, 0)


def _finfo_eps(dtype: Any) -> float:
    """Machine epsilon of a floating-point numpy or torch dtype (or an array's / tensor's)."""
    if isinstance(dtype, np.ndarray) or is_tensor(dtype):
        dtype = dtype.dtype
    if type(dtype).__module__ == "torch" and type(dtype).__name__ == "dtype":
        import torch

        if dtype.is_floating_point:
            return float(torch.finfo(dtype).eps)
    else:
        try:
            dt = np.dtype(dtype)
        except TypeError:
            dt = None
        if dt is not None and np.issubdtype(dt, np.floating):
            return float(np.finfo(dt).eps)
    raise TypeError(f"dtype must be a floating-point numpy or torch dtype; got {dtype!r}. "
                    f"Pass e.g. np.float64 or torch.float32.")


def rank_floor(lambda_max: float, shape: Sequence[int], dtype: Any = np.float64) -> float:
    """Eigenvalues below this are numerical zeros: ``lambda_max * max(N, M) * eps(dtype)``.

    Relative to the largest eigenvalue (never an absolute cut, so the analysis is scale
    invariant), and set by the precision the Gram matrix was computed in (float64 by
    :func:`esd`, whatever the weight's dtype).

    Parameters
    ----------
    lambda_max : float
        Largest eigenvalue of the spectrum.
    shape : sequence of int
        (rows, cols, ...) of the matrix; only the first two are used.
    dtype : numpy or torch dtype
        Precision of the eigenvalue computation (default float64).

    Examples
    --------
    >>> bool(rank_floor(1.0, (200, 784)) == 784 * np.finfo(np.float64).eps)
    True
    """
    eps = _finfo_eps(dtype)
    n = max(int(shape[0]), int(shape[1]))
    return float(lambda_max) * n * eps


def _esd_stack_numpy(S: np.ndarray, method: str) -> np.ndarray:
    S = np.asarray(S, dtype=np.float64)
    if method == "svd":
        return np.linalg.svd(S, compute_uv=False) ** 2
    r, c = S.shape[-2:]
    St = np.swapaxes(S, -1, -2)
    G = St @ S if r >= c else S @ St
    return np.linalg.eigvalsh(G)


def _esd_stack_torch(S, method: str) -> np.ndarray:
    import torch

    S = S.to(torch.float64)
    if method == "svd":
        ev = torch.linalg.svdvals(S) ** 2
    else:
        r, c = S.shape[-2:]
        G = S.mT @ S if r >= c else S @ S.mT
        ev = torch.linalg.eigvalsh(G)
    return ev.cpu().numpy()


def _blocked_gram(W: Any, dtype: Any, block: int, shift: Any = None) -> Any:
    """The smaller Gram matrix of a 2-D CPU tensor (``W^T W`` for a tall W, ``W W^T`` for a wide
    one), summed over blocks of about ``block`` entries, each converted to ``dtype`` (and ``shift``
    subtracted from it) on its own: no full-size copy of W in ``dtype`` is made."""
    import torch

    A = W if W.shape[0] >= W.shape[1] else W.T  # sum over the longer side
    n, m = int(A.shape[0]), int(A.shape[1])
    step = max(1, block // max(m, 1))
    G = torch.zeros((m, m), dtype=dtype)
    for k in range(0, n, step):
        B = A[k:k + step].to(dtype, copy=shift is not None)  # never shift W itself
        if shift is not None:
            B -= shift
        G.addmm_(B.T, B)
        del B
    return G


def _finish(ev: np.ndarray) -> np.ndarray:
    ev = np.sort(ev.reshape(-1))
    np.maximum(ev, 0.0, out=ev)  # eigvalsh can return -1e-17 for a true zero
    return ev


def esd(W: Any, *, method: str = "eigh") -> np.ndarray:
    """Eigenvalues of W^T W (squared singular values of W), float64, ascending.

    Parameters
    ----------
    W : ndarray or torch.Tensor, shape (rows, cols) or (out, in, *kernel)
        A weight matrix, or a Conv1d/Conv2d kernel whose spatial slices are pooled.
        A CUDA tensor is decomposed on its GPU.
    method : {"eigh", "svd"}
        ``"eigh"`` (default): symmetric eigensolver on the smaller Gram matrix, fast,
        accurate above :func:`rank_floor`. ``"svd"``: singular values squared.

    Returns
    -------
    ndarray of shape (k * M,)
        k = number of spatial slices (1 for a matrix), M = min(rows, cols).

    Examples
    --------
    >>> import numpy as np
    >>> W = np.diag([3.0, 2.0, 1.0])
    >>> esd(W)
    array([1., 4., 9.])
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}; got {method!r}.")
    W = check_weight(W)
    S = matrix_slices(W)
    ev = _esd_stack_torch(S, method) if is_tensor(S) else _esd_stack_numpy(S, method)
    return _finish(ev)


def esd_many(weights: Sequence[Any], *, method: str = "eigh") -> list[np.ndarray]:
    """:func:`esd` of many matrices; those of equal shape and device form one batch.

    Parameters
    ----------
    weights : sequence of ndarray or torch.Tensor
        Matrices (rows, cols) or conv kernels (out, in, *kernel), any mix of shapes,
        dtypes and devices. Each group of equal shape and device is decomposed by one
        batched call (in float64).
    method : {"eigh", "svd"}
        As in :func:`esd`.

    Returns
    -------
    list of ndarray
        The spectra in the order given; ``out[i]`` equals ``esd(weights[i])``.

    Examples
    --------
    >>> import numpy as np
    >>> [ev.tolist() for ev in esd_many([np.diag([2.0, 1.0]), np.eye(3)])]
    [[1.0, 4.0], [1.0, 1.0, 1.0]]
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}; got {method!r}.")
    checked = [check_weight(W, name=f"weights[{i}]") for i, W in enumerate(weights)]
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, W in enumerate(checked):
        dev = str(W.device) if is_tensor(W) else "numpy"
        groups[(tuple(W.shape), dev)].append(i)
    out: list[np.ndarray | None] = [None] * len(checked)
    for (shape, dev), idx in groups.items():
        stacks = [matrix_slices(checked[i]) for i in idx]
        k = stacks[0].shape[0]
        if dev == "numpy":
            ev = _esd_stack_numpy(np.concatenate(stacks, axis=0), method)
        else:
            import torch

            ev = _esd_stack_torch(torch.cat([s.to(torch.float64) for s in stacks], dim=0), method)
        for j, i in enumerate(idx):
            out[i] = _finish(ev[j * k:(j + 1) * k])
    return out  # type: ignore[return-value]
