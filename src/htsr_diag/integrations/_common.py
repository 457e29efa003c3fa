"""What every framework hook logs: one flat dict of float scalars per :class:`MonitorRecord`."""

from __future__ import annotations

import math
import numbers
from typing import Any

from ..phases import ANTI, GROK, PRE

__all__ = ["PHASE_CODES", "record_metrics", "check_prefix", "check_train_acc_key", "check_monitor_kwargs",
           "as_fraction", "missing_extra"]

#: The phase as a number, for loggers that only take scalars (``"unknown"`` is NaN).
PHASE_CODES: dict[str, float] = {PRE: 0.0, GROK: 1.0, ANTI: 2.0}


def record_metrics(record: Any, *, prefix: str = "htsr", per_layer: bool = True) -> dict[str, float]:
    """The scalars the framework hooks log for one analysis.

    Parameters
    ----------
    record : MonitorRecord
        One analysis of a :class:`~htsr_diag.Monitor`.
    prefix : str, default "htsr"
        Start of every key (``"htsr/alpha"``).
    per_layer : bool, default True
        Also ``<prefix>/alpha/<layer>`` and ``<prefix>/traps/<layer>`` for every analysed layer.

    Returns
    -------
    dict of str -> float
        ``alpha`` (mean over the classifier's layers), ``n_traps`` (their sum), ``phase``
        (:data:`PHASE_CODES`; NaN when unknown), ``alarm`` (1.0 when the phase is
        anti-grokking, else 0.0), ``confidence``, and the per-layer values. NaN stays NaN.

    Examples
    --------
    >>> import torch
    >>> from htsr_diag import Monitor
    >>> mon = Monitor(torch.nn.Sequential(torch.nn.Linear(60, 50)), schedule=[0])
    >>> m = record_metrics(mon.step(0, train_acc=0.5))
    >>> sorted(m)
    ['htsr/alarm', 'htsr/alpha', 'htsr/alpha/0', 'htsr/confidence', 'htsr/n_traps', 'htsr/phase', 'htsr/traps/0']
    >>> m["htsr/phase"], m["htsr/alarm"]
    (0.0, 0.0)
    """
    p = prefix
    out = {f"{p}/alpha": float(record.alpha), f"{p}/n_traps": float(record.n_traps),
           f"{p}/phase": PHASE_CODES.get(record.phase, math.nan), f"{p}/alarm": float(record.phase == ANTI),
           f"{p}/confidence": float(record.confidence)}
    if per_layer:
        out.update({f"{p}/alpha/{k}": float(v) for k, v in record.layer_alpha.items()})
        out.update({f"{p}/traps/{k}": float(v) for k, v in record.layer_traps.items()})
    return out


def check_prefix(prefix: Any) -> str:
    if not isinstance(prefix, str) or not prefix or prefix.endswith("/"):
        raise ValueError(f"prefix must be a non-empty str without a trailing '/' (keys are '<prefix>/alpha', ...); "
                         f"got {prefix!r}.")
    return prefix


def check_monitor_kwargs(kwargs: dict[str, Any], where: str) -> dict[str, Any]:
    """The keyword arguments a hook passes on to :class:`~htsr_diag.Monitor`; TypeError naming unknown ones."""
    import inspect

    from ..monitor import Monitor

    allowed = [n for n, p in inspect.signature(Monitor.__init__).parameters.items()
               if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise TypeError(f"{where}: unknown keyword argument(s) {unknown}; it takes its own options and those of "
                        f"htsr_diag.Monitor: {allowed}.")
    return dict(kwargs)


def check_train_acc_key(key: Any) -> str | None:
    if key is not None and (not isinstance(key, str) or not key):
        raise TypeError(f"train_acc_key must be None or the name of a logged metric (e.g. 'train_acc'); got {key!r}.")
    return key


def as_fraction(value: Any, key: str, where: str) -> float | None:
    """A logged training accuracy as a float in [0, 1], None when NaN; ValueError naming the key otherwise."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where}: the metric {key!r} (train_acc_key) must be a number; got {value!r}.")
    value = float(value)
    if math.isnan(value):
        return None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{where}: the metric {key!r} (train_acc_key) must be a training accuracy in [0, 1]; got "
                         f"{value!r}. Log it as a fraction (divide percentages by 100), or pass train_acc_key=None.")
    return value


def missing_extra(module: str, package: str, extra: str, exc: ImportError) -> ImportError:
    """The ImportError raised when a framework hook's package is missing: it names the extra to install."""
    err = ImportError(f"{module} needs {package}, which is not installed ({exc}). Install it with: "
                      f'pip install "htsr-diag[{extra}]"')
    err.name = getattr(exc, "name", None)
    return err
