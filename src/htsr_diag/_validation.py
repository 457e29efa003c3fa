"""Input validation shared by the public functions (validate once, at the boundary)."""

from __future__ import annotations

import math
import numbers
from typing import Any, Hashable, Mapping, Sequence

import numpy as np

try:  # torch is a core dependency, but keep numpy-only paths importable without it
    import torch
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]

__all__ = ["is_tensor", "all_finite", "check_weight", "check_rng", "check_positive_int", "check_eigenvalues", "check_bool",
           "check_scalar", "check_choice", "Interval", "Options", "validate_params"]


def is_tensor(x: Any) -> bool:
    return torch is not None and isinstance(x, torch.Tensor)


def _describe(x: Any) -> str:
    if is_tensor(x) or isinstance(x, np.ndarray):
        return f"{type(x).__name__} of shape {tuple(x.shape)} and dtype {x.dtype}"
    return repr(x) if len(repr(x)) < 80 else type(x).__name__


#: Entries per block when a CPU weight is checked for NaN/Inf (no full-size boolean temporary).
FINITE_BLOCK = 1 << 22


def all_finite(W: Any) -> bool:
    """Whether every entry of a numpy array or tensor is finite. A CPU weight is scanned in blocks
    of :data:`FINITE_BLOCK` entries (stopping at the first bad block), so a large layer costs no
    full-size temporary; a GPU tensor is checked in one call (one synchronisation)."""
    if is_tensor(W):
        if W.device.type != "cpu" or W.numel() <= FINITE_BLOCK:
            return bool(torch.isfinite(W).all())
        flat = W.reshape(-1)
        return all(bool(torch.isfinite(flat[k:k + FINITE_BLOCK]).all()) for k in range(0, flat.numel(), FINITE_BLOCK))
    W = np.asarray(W)
    if W.size <= FINITE_BLOCK:
        return bool(np.isfinite(W).all())
    flat = W.reshape(-1)
    return all(bool(np.isfinite(flat[k:k + FINITE_BLOCK]).all()) for k in range(0, flat.size, FINITE_BLOCK))


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
    if not all_finite(W):
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


def check_bool(value: Any, name: str, *, allow_none: bool = False) -> bool | None:
    """``value`` as a Python bool (numpy bools accepted); TypeError naming ``name`` otherwise.

    ``allow_none``: None is also accepted (and returned), e.g. for "default: decide for me".
    """
    if allow_none and value is None:
        return None
    if not isinstance(value, (bool, np.bool_)):
        allowed = "None, True or False" if allow_none else "True or False"
        raise TypeError(f"{name} must be {allowed}; got {value!r}.")
    return bool(value)


_TYPE_NAMES = {numbers.Real: "a real number", numbers.Integral: "an int", float: "a float", int: "an int",
               str: "a str"}


def check_scalar(value: Any, name: str, target_type: type | tuple[type, ...] = numbers.Real, *,
                 min_val: float | None = None, max_val: float | None = None,
                 include_boundaries: str = "both", allow_none: bool = False, fix: str = "") -> Any:
    """Check a scalar parameter's type and range, as scikit-learn's ``check_scalar`` does.

    Parameters
    ----------
    value : object
        The value to check. Booleans are never numbers here (``True`` is not ``1``).
    name : str
        The parameter's name, used in the messages.
    target_type : type or tuple of types, default numbers.Real
        Accepted types (``numbers.Integral`` for counts); NaN and infinities are rejected for
        real numbers.
    min_val, max_val : float, optional
        Bounds (None: unbounded on that side).
    include_boundaries : {"both", "left", "right", "neither"}, default "both"
        Which bounds are allowed values.
    allow_none : bool, default False
        Accept None (and return it).
    fix : str
        A hint appended to the messages (how to correct the value).

    Returns
    -------
    The value: an ``int`` for an integral ``target_type``, a ``float`` for a real one.

    Raises
    ------
    TypeError
        Wrong type. The message names the parameter and the accepted types.
    ValueError
        Out of range or not finite.

    Examples
    --------
    >>> check_scalar(0.5, "ratio", min_val=0.0, max_val=1.0, include_boundaries="right")
    0.5
    >>> check_scalar(0.0, "ratio", min_val=0.0, max_val=1.0, include_boundaries="right")
    Traceback (most recent call last):
    ...
    ValueError: ratio must be in (0, 1]; got 0.0.
    """
    if allow_none and value is None:
        return None
    types = target_type if isinstance(target_type, tuple) else (target_type,)
    if include_boundaries not in ("both", "left", "right", "neither"):
        raise ValueError(f"include_boundaries must be 'both', 'left', 'right' or 'neither'; got {include_boundaries!r}.")
    hint = f" {fix}" if fix else ""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, types):
        kinds = " or ".join(_TYPE_NAMES.get(t, f"a {t.__name__}") for t in types)
        none = " or None" if allow_none else ""
        raise TypeError(f"{name} must be {kinds}{none}; got {value!r} ({type(value).__name__}).{hint}")
    integral = all(issubclass(t, numbers.Integral) for t in types)
    v = int(value) if integral else float(value) if isinstance(value, numbers.Real) else value
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number; got {value!r}.{hint}")
    left_ok = include_boundaries in ("both", "left")
    right_ok = include_boundaries in ("both", "right")
    low_bad = min_val is not None and (v < min_val if left_ok else v <= min_val)
    high_bad = max_val is not None and (v > max_val if right_ok else v >= max_val)
    if low_bad or high_bad:
        if min_val is not None and max_val is not None:
            rule = f"in {'[' if left_ok else '('}{min_val:g}, {max_val:g}{']' if right_ok else ')'}"
        elif min_val is not None:
            rule = f"{'>=' if left_ok else '>'} {min_val:g}"
        else:
            rule = f"{'<=' if right_ok else '<'} {max_val:g}"
        raise ValueError(f"{name} must be {rule}; got {value!r}.{hint}")
    return v


def check_choice(value: Any, name: str, choices: Any, *, fix: str = "") -> Any:
    """``value`` if it is one of ``choices``; ValueError naming ``name`` and the choices otherwise.

    Examples
    --------
    >>> check_choice("auto", "precision", ("auto", "float64", "float32"))
    'auto'
    """
    choices = tuple(choices)
    try:
        ok = value in choices
    except TypeError:  # an unhashable value against a set-like
        ok = False
    if not ok or isinstance(value, (bool, np.bool_)) and not any(isinstance(c, bool) for c in choices):
        hint = f" {fix}" if fix else ""
        raise ValueError(f"{name} must be one of {choices}; got {value!r}.{hint}")
    return value


# ----------------------------------------------------------------------------- declared constraints
class Interval:
    """A numeric range constraint for :func:`validate_params` (scikit-learn's ``Interval``).

    ``Interval(numbers.Real, 0, 1, closed="right")`` is (0, 1]; ``None`` bounds are open ends.
    """

    def __init__(self, kind: type, left: float | None, right: float | None, *, closed: str = "both") -> None:
        self.kind, self.left, self.right, self.closed = kind, left, right, closed

    def check(self, value: Any, name: str) -> Any:
        return check_scalar(value, name, self.kind, min_val=self.left, max_val=self.right,
                            include_boundaries=self.closed)

    def accepts(self, value: Any) -> bool:
        try:
            self.check(value, "value")
        except (TypeError, ValueError):
            return False
        return True

    def type_ok(self, value: Any) -> bool:
        return isinstance(value, self.kind) and not isinstance(value, (bool, np.bool_))

    def __str__(self) -> str:
        kind = "an int" if issubclass(self.kind, numbers.Integral) else "a real number"
        lo = "" if self.left is None else f"{'[' if self.closed in ('both', 'left') else '('}{self.left:g}"
        hi = "" if self.right is None else f"{self.right:g}{']' if self.closed in ('both', 'right') else ')'}"
        if lo and hi:
            return f"{kind} in {lo}, {hi}"
        if lo:
            return f"{kind} {'>=' if lo[0] == '[' else '>'} {self.left:g}"
        if hi:
            return f"{kind} {'<=' if hi[-1] == ']' else '<'} {self.right:g}"
        return kind


class Options:
    """One of a fixed set of values, for :func:`validate_params` (scikit-learn's ``StrOptions``)."""

    def __init__(self, *values: Any) -> None:
        self.values = tuple(values)

    def accepts(self, value: Any) -> bool:
        return isinstance(value, Hashable) and not isinstance(value, (bool, np.bool_)) and value in self.values

    def type_ok(self, value: Any) -> bool:
        return any(type(value) is type(v) for v in self.values)

    def __str__(self) -> str:
        return repr(self.values[0]) if len(self.values) == 1 else f"one of {self.values!r}"


def _accepts(constraint: Any, value: Any) -> bool:
    if constraint is None:
        return value is None
    if constraint == "boolean":
        return isinstance(value, (bool, np.bool_))
    if isinstance(constraint, (Interval, Options)):
        return constraint.accepts(value)
    if isinstance(constraint, type):
        return isinstance(value, constraint) and not isinstance(value, (bool, np.bool_))
    if callable(constraint):
        return bool(constraint(value))
    raise TypeError(f"unknown constraint {constraint!r}")  # pragma: no cover - a programming error


def _type_ok(constraint: Any, value: Any) -> bool:
    """Whether ``value`` has a type the constraint is about (else the error is a TypeError)."""
    if constraint is None:
        return value is None
    if constraint == "boolean":
        return isinstance(value, (bool, np.bool_))
    if isinstance(constraint, (Interval, Options)):
        return constraint.type_ok(value)
    if isinstance(constraint, type):
        return isinstance(value, constraint)
    return getattr(constraint, "type_ok", lambda v: True)(value)


def _describe_constraint(constraint: Any) -> str:
    if constraint is None:
        return "None"
    if constraint == "boolean":
        return "True or False"
    if isinstance(constraint, type):
        return f"a {constraint.__name__}"
    return getattr(constraint, "description", None) or str(constraint)


def validate_params(params: Mapping[str, Any], constraints: Mapping[str, Sequence[Any]],
                    hints: Mapping[str, str] | None = None) -> None:
    """Check each parameter against its declared constraints (any one must accept it).

    The shape of scikit-learn's ``_parameter_constraints``: ``{"tol": [Interval(Real, 0, None,
    closed="left")], "mode": [Options("a", "b")], "flag": ["boolean"], "x": [None, Interval(...)]}``.
    A constraint is None (the value None), ``"boolean"``, a type, an :class:`Interval`, an
    :class:`Options`, or a predicate with ``description`` (and optionally ``type_ok``)
    attributes. Parameters without an entry are not checked. ``hints`` maps a parameter to
    a sentence appended to its message (what the value means, how to fix it).

    Raises
    ------
    TypeError
        The value's type fits none of the constraints (a str where a number is expected).
    ValueError
        The type fits, the value does not (out of range, not one of the options).

    Examples
    --------
    >>> validate_params({"patience": 0}, {"patience": [Interval(numbers.Integral, 1, None)]})
    Traceback (most recent call last):
    ...
    ValueError: patience must be an int >= 1; got 0.
    """
    hints = hints or {}
    for name, allowed in constraints.items():
        if name not in params:
            continue
        value = params[name]
        if any(_accepts(c, value) for c in allowed):
            continue
        wanted = " or ".join(_describe_constraint(c) for c in allowed)
        hint = f" {hints[name]}" if name in hints else ""
        message = f"{name} must be {wanted}; got {value!r}.{hint}"
        raise (ValueError if any(_type_ok(c, value) for c in allowed) else TypeError)(message)


# ----------------------------------------------------------------------------- renamed keywords
class _Unset:
    """The default of a renamed keyword: tells "not passed" from any value."""

    def __repr__(self) -> str:
        return "<unset>"


UNSET: Any = _Unset()


def renamed(old_value: Any, old: str, new_value: Any, new: str, default: Any, where: str,
            stacklevel: int = 3) -> Any:
    """The value of a keyword renamed from ``old`` to ``new``: ``old_value`` (with a FutureWarning) if it was passed.

    Raises TypeError when both spellings are passed with different values.
    """
    if old_value is UNSET:
        return new_value
    import warnings

    if new_value is not default and new_value != default and new_value != old_value:
        raise TypeError(f"{where}() got both {old}={old_value!r} and {new}={new_value!r}; {old} is the old name of "
                        f"{new}. Pass {new} only.")
    warnings.warn(f"{where}(): {old}= is renamed {new}= (one name in every function of htsr_diag); {old}= will be "
                  f"removed in a future version. Pass {new}={old_value!r}.", FutureWarning, stacklevel=stacklevel)
    return old_value
