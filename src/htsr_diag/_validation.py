"""Input validation shared by the public functions (validate once, at the boundary)."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

try:  # torch is a core dependency, but keep numpy-only paths importable without it
    import torch
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]

__all__ = ["is_tensor", "check_weight", "check_rng", "check_positive_int", "check_eigenvalues"]


def is_tensor(x: Any) -> bool:
    return torch is not None and isinstance(x, torch.Tensor)


def _describe(x: Any) -> str:
    if is_tensor(x) or isinstance(x, np.ndarray):
        return f"{type(x).__name__} of shape {tuple(x.shape)} and dtype {x.dtype}"
    return repr(x) if len(repr(x)) < 80 else type(x).__name__


def check_weight(W: Any, name: str = "W", *, ndims: tuple[int, ...] = (2, 3, 4)):
    """Check a weight matrix (or conv kernel) and return it as a float ndarray or tensor.

    Accepts a numpy array, a torch tensor (any device) or a nested sequence. Returns a
    numpy array (float32/float64 kept, other real floats -> float64) or a detached tensor.

    Raises
    ------
    TypeError
        not an array, or a complex, integer or boolean dtype.
    ValueError
        wrong number of dimensions, empty, fewer than 2 rows or columns, NaN or Inf.
    """
    if is_tensor(W):
        W = W.detach()
        if W.is_complex():
            raise TypeError(f"{name} must be a real floating-point matrix; got a complex tensor "
                            f"({_describe(W)}). Pass W.real or W.abs() explicitly.")
        if not W.is_floating_point():
            raise TypeError(f"{name} must be a floating-point matrix; got dtype {W.dtype}. "
                            f"Convert it first, e.g. W.double().")
        shape = tuple(W.shape)
    else:
        if not isinstance(W, np.ndarray):
            try:
                W = np.asarray(W)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"{name} must be a numpy array, a torch tensor or a rectangular nested "
                                f"sequence of numbers; got a {type(W).__name__} that numpy cannot turn into "
                                f"an array ({exc}). Pass np.asarray(...) of equal-length rows.") from exc
        if W.dtype == object:
            raise TypeError(f"{name} must be a numeric array; got an object array ({_describe(W)}).")
        if np.iscomplexobj(W):
            raise TypeError(f"{name} must be a real floating-point matrix; got complex dtype {W.dtype}. "
                            f"Pass W.real or np.abs(W) explicitly.")
        if not np.issubdtype(W.dtype, np.floating):
            raise TypeError(f"{name} must be a floating-point matrix; got dtype {W.dtype}. "
                            f"Convert it first, e.g. W.astype(np.float64).")
        if W.dtype not in (np.float32, np.float64):
            W = W.astype(np.float64)
        shape = W.shape
    if len(shape) not in ndims:
        allowed = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{name} must be {allowed} (a weight matrix{', or a conv kernel (out, in, *kernel)' if max(ndims) > 2 else ''}); "
                         f"got {len(shape)}-D with shape {shape}.")
    if 0 in shape:
        raise ValueError(f"{name} must not be empty; got shape {shape}.")
    if shape[0] < 2 or shape[1] < 2:
        raise ValueError(f"{name} must have at least 2 rows and 2 columns; got shape {shape}. "
                         f"A vector (bias, 1-row layer) has no spectrum to analyse.")
    finite = bool(torch.isfinite(W).all()) if is_tensor(W) else bool(np.isfinite(W).all())
    if not finite:
        raise ValueError(f"{name} must contain only finite values; got NaN or Inf in {_describe(W)}. "
                         f"Check the layer or checkpoint for a diverged run.")
    return W


def check_eigenvalues(x: Any, name: str = "eigenvalues") -> np.ndarray:
    """Validate a 1-D array of eigenvalues of W^T W; return it float64 and sorted ascending.

    Tiny negative values, down to ``-n * eps * max|x|`` (the round-off of a symmetric
    eigensolver, e.g. ``np.linalg.eigvalsh(W.T @ W)`` returns -1e-17 for a true zero),
    are set to 0; anything more negative is an error.
    """
    if is_tensor(x):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {x.shape}. Flatten it (np.ravel) if it holds eigenvalues.")
    if x.size == 0:
        raise ValueError(f"{name} must not be empty; got an array of shape {x.shape}.")
    if np.iscomplexobj(x) or not np.issubdtype(x.dtype, np.number) or x.dtype == bool:
        raise TypeError(f"{name} must be real numbers; got dtype {x.dtype}. "
                        f"Pass the eigenvalues of W^T W (or W.real / np.abs(W) explicitly).")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} must be finite; got {int(np.sum(~np.isfinite(x)))} NaN or Inf value(s). "
                         f"Check the layer or checkpoint for a diverged run.")
    lo = float(x.min())
    if lo < 0:
        tol = x.size * np.finfo(np.float64).eps * float(np.abs(x).max())
        if lo < -tol:
            raise ValueError(f"{name} must be non-negative (eigenvalues of W^T W); got minimum {lo:.3g}. "
                             f"Pass squared singular values, e.g. scipy.linalg.svdvals(W) ** 2.")
        x = np.maximum(x, 0.0)
    return np.sort(x)


def check_rng(rng: Any, name: str = "rng") -> np.random.Generator:
    """None, an int seed or a numpy Generator -> Generator (never the global RNG)."""
    if rng is None or isinstance(rng, (numbers.Integral, np.integer)):
        if rng is not None and int(rng) < 0:
            raise ValueError(f"{name} must be a non-negative seed; got {rng}.")
        return np.random.default_rng(None if rng is None else int(rng))
    if isinstance(rng, np.random.Generator):
        return rng
    raise TypeError(f"{name} must be None, an int seed or a numpy.random.Generator; "
                    f"got {type(rng).__name__}. Use np.random.default_rng(seed).")


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    if int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value}.")
    return int(value)
