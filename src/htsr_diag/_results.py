"""One base for every result dataclass: ``to_dict`` / ``from_dict`` / ``to_json`` / ``from_json``.

A result is a frozen dataclass that also derives from :class:`Result`. Its fields are
serialised by their type annotations, so a new result type needs no code of its own:

=====================================  ==========================  ===============================
field annotation                       ``to_dict`` writes           ``from_dict`` reads back
=====================================  ==========================  ===============================
``float`` (and ``int | float``)        the number, NaN kept         ``None`` or NaN -> NaN; a whole
                                                                    float -> int for ``int | float``
``int``, ``str``, ``bool``             the value                    the value, coerced to the type
``X | None``                           ``None`` or ``X``'s form     ``None`` or ``X``
``tuple[...]``, ``list[...]``          a list                       a tuple / list of the items
``dict[str, X]``                       a dict of ``X``'s form       a dict of ``X``
``np.ndarray``                         a (nested) list              an array (``None`` -> NaN; the
                                                                    field's ``metadata["dtype"]``
                                                                    if set, so an empty int array
                                                                    stays int)
``Path``                               ``str``                      ``Path``
another :class:`Result`                its ``to_dict()``            its ``from_dict()``
=====================================  ==========================  ===============================

The NaN policy, one for every result: in memory and in ``to_dict`` a value that could not be
computed is ``float('nan')``; ``to_json`` writes strict JSON (RFC 8259), where NaN and
+-infinity are ``null``; ``from_dict`` / ``from_json`` read ``null`` back as NaN for a float
field (and keep ``None`` for a field whose annotation allows ``None``). Infinities therefore come
back as NaN. Files written before this policy (bare ``NaN`` tokens) still load: Python's
:func:`json.loads` accepts them.

An empty array reads back with shape ``(0,)``: a JSON list cannot hold the shape
``(0, 2)``.

A class may set ``_format`` (written as the ``"format"`` key and checked on reading) and
``_header`` (more constant keys written first, ignored on reading). Unknown keys are ignored
on reading and missing keys take the field's default, so older files load.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ._json import jsonable

__all__ = ["Result", "strict_json", "result_types"]

_REGISTRY: dict[str, type] = {}
_OWN_INDENT: Any = object()  # to_json's default: the type's own indent


def result_types() -> list[type]:
    """Every :class:`Result` subclass defined so far (imported modules only), by name."""
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def _encode(value: Any) -> Any:
    """Plain Python values (NaN kept): results -> dicts, arrays -> lists, paths -> str."""
    if isinstance(value, Result):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return jsonable(value)


def _nan_to_null(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _nan_to_null(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_null(v) for v in value]
    return value


def strict_json(value: Any, *, indent: int | None = None) -> str:
    """``value`` as strict JSON text: NaN and +-infinity as ``null``, arrays as lists.

    Examples
    --------
    >>> strict_json({"alpha": float("nan"), "steps": np.arange(3)})
    '{"alpha": null, "steps": [0, 1, 2]}'
    """
    return json.dumps(_nan_to_null(_encode(value)), indent=indent, allow_nan=False)


# ----------------------------------------------------------------------------- decoding
def _array(value: Any) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == object:  # nulls (NaN written by to_json) among numbers
        arr = np.asarray(_nulls_to_nan(value), dtype=np.float64)
    return arr


def _nulls_to_nan(value: Any) -> Any:
    if value is None:
        return math.nan
    if isinstance(value, (list, tuple)):
        return [_nulls_to_nan(v) for v in value]
    return value


def _decode(value: Any, tp: Any) -> Any:
    """``value`` as read from JSON, converted to the annotation ``tp``."""
    if tp is Any or tp is object:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        if value is None:
            if type(None) in args:
                return None
            return math.nan if float in args else None
        arms = [a for a in args if a is not type(None)]
        if set(arms) == {int, float}:  # a count that may be NaN
            if isinstance(value, float) and value.is_integer():
                return int(value)
            return value if isinstance(value, int) and not isinstance(value, bool) else float(value)
        return _decode(value, arms[0]) if len(arms) == 1 else value
    if tp is float:  # an int stays an int (JSON keeps 2 and 2.0 apart, so the round trip is exact)
        if value is None:
            return math.nan
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else float(value)
    if tp is int:
        return int(value)
    if tp is bool:
        return bool(value)
    if tp is str:
        return str(value)
    if tp is Path:
        return Path(value)
    if tp is np.ndarray:
        return value if isinstance(value, np.ndarray) else _array(value)
    if isinstance(tp, type) and issubclass(tp, Result):
        return value if isinstance(value, tp) else tp.from_dict(value)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(v, args[0]) for v in value)
        if args and len(args) == len(value):
            return tuple(_decode(v, a) for v, a in zip(value, args))
        return tuple(value)
    if origin is list:
        return [_decode(v, args[0]) for v in value] if args else list(value)
    if origin is dict:
        vt = args[1] if args else Any
        return {str(k): _decode(v, vt) for k, v in dict(value).items()}
    return value


def _hints(cls: type) -> dict[str, Any]:
    """The resolved field annotations of ``cls`` (result types resolved by name)."""
    cached = cls.__dict__.get("_hints_cache")
    if cached is None:
        cached = typing.get_type_hints(cls, localns=dict(_REGISTRY))
        cls._hints_cache = cached  # type: ignore[attr-defined]
    return cached


class Result:
    """Base of the result dataclasses: serialisation by field annotation, one NaN policy.

    Subclasses are frozen dataclasses; see the module docstring for how each annotation is
    written and read back.

    Examples
    --------
    >>> from htsr_diag import layer_alpha
    >>> fit = layer_alpha(np.random.default_rng(0).standard_t(3, size=(200, 100)))
    >>> type(fit).from_json(fit.to_json()).alpha == fit.alpha
    True
    >>> '"status": "ok"' in fit.to_json()
    True
    """

    _format: ClassVar[str | None] = None
    _header: ClassVar[dict[str, Any]] = {}
    _json_indent: ClassVar[int | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_"):
            _REGISTRY[cls.__name__] = cls

    # ------------------------------------------------------------------ writing
    def to_dict(self) -> dict[str, Any]:
        """Every field as plain Python values (NaN kept as ``float('nan')``; arrays and tuples
        as lists, nested results as dicts, paths as str)."""
        out: dict[str, Any] = {}
        if self._format is not None:
            out["format"] = self._format
        out.update(self._header)
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            out[f.name] = _encode(getattr(self, f.name))
        return out

    def to_json(self, path: str | os.PathLike | None = None, *, indent: Any = _OWN_INDENT) -> str:
        """The result as strict JSON text (NaN and infinities as ``null``); also written to
        ``path`` (UTF-8) when given. ``indent`` as in :func:`json.dumps` (default: the type's
        own, ``_json_indent``: 1 for a ModelReport, compact for the others)."""
        text = strict_json(self.to_dict(), indent=self._json_indent if indent is _OWN_INDENT else indent)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    # ------------------------------------------------------------------ reading
    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        """Inverse of :meth:`to_dict` (also reads a dict parsed from :meth:`to_json`: ``null`` in
        a float field is NaN). Unknown keys are ignored; missing keys take the field's default."""
        if not isinstance(d, Mapping):
            raise TypeError(f"{cls.__name__}.from_dict takes a mapping (a dict from to_dict or a parsed JSON "
                            f"object); got {type(d).__name__}.")
        if cls._format is not None and d.get("format", cls._format) != cls._format:
            raise ValueError(f"data is not a serialised {cls.__name__} (expected format {cls._format!r}); "
                             f"got format {d.get('format')!r}.")
        hints = _hints(cls)
        kw: dict[str, Any] = {}
        missing = []
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name in d:
                kw[f.name] = _decode(d[f.name], hints.get(f.name, Any))
                if "dtype" in f.metadata and isinstance(kw[f.name], np.ndarray):
                    kw[f.name] = kw[f.name].astype(f.metadata["dtype"], copy=False)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                missing.append(f.name)
        if missing:
            raise ValueError(f"{cls.__name__}.from_dict: missing required keys {missing}; a dict written by "
                             f"{cls.__name__}.to_dict has them.")
        return cls(**kw)

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike):
        """Read a result written by :meth:`to_json`: JSON text, or the path of a file holding it.
        Files with bare ``NaN`` tokens (written by older versions) load too."""
        if isinstance(text_or_path, str) and text_or_path.lstrip().startswith("{"):
            text = text_or_path
        else:
            p = Path(text_or_path)
            if not p.is_file():
                raise ValueError(f"text_or_path must be JSON text or an existing file; {str(p)!r} is neither.")
            text = p.read_text(encoding="utf-8")
        return cls.from_dict(json.loads(text))
