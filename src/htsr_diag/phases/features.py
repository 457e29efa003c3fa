"""The feature table the phase rules read: built from a Trajectory or mappings, validated, in step order.

A feature table is a dict of float64 arrays, one value per checkpoint in increasing step
order: ``"alpha"`` (mean over the analysed layers), ``"n_traps"`` (total), ``"train_acc"``
(NaN where unknown) and ``"step"`` of shape (n,), and the per-layer ``"layer_alpha"``,
``"layer_n_traps"``, ``"layer_norm"`` (Frobenius norm) and ``"layer_stable_rank"`` of
shape (n_layers, n). :func:`feature_table` builds one; the functions of
:mod:`htsr_diag.phases.rules` read it.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

import numpy as np

from ._common import check_train_acc, curve, quiet_nanmean

__all__ = ["FEATURES", "LAYER_FEATURES", "select_layers", "feature_table", "has_feature", "unsort", "FeatureRows"]

#: Per-checkpoint features the classifier reads (keys of a feature table).
FEATURES: tuple[str, ...] = ("alpha", "n_traps", "train_acc")
#: Per-layer feature keys of a feature table, each of shape (n_layers, n_checkpoints).
LAYER_FEATURES: tuple[str, ...] = ("layer_alpha", "layer_n_traps", "layer_norm", "layer_stable_rank")


def select_layers(trajectory: Any, layers: str | Sequence[str], min_layer_dim: int) -> list[str]:
    """The analysed layers of a Trajectory: ``layers``, or with "auto" every layer whose smaller dimension is >= ``min_layer_dim``."""
    names = list(trajectory.layer_names)
    if layers != "auto":
        missing = [x for x in layers if x not in names]
        if missing:
            raise ValueError(f"layers names {missing} not found in the trajectory; its layers are "
                             f"{names}.")
        return list(layers)
    dims = {name: trajectory.feature("min_dim", name) for name in names}
    keep = [name for name in names if np.nanmax(dims[name]) >= min_layer_dim]
    if not keep:
        raise ValueError(f"no layer has a smaller dimension >= min_layer_dim={min_layer_dim}; "
                         f"layers: {names}. Lower min_layer_dim or pass layers=[...].")
    return keep


def feature_table(data: Any, *, train_acc: Any = None, layers: str | Sequence[str], min_layer_dim: int,
                  train_threshold: float, norm_gate: bool) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The feature table of ``data`` in step order, and the permutation that sorted it.

    Parameters
    ----------
    data : Trajectory, mapping or sequence of mappings
        A :class:`~htsr_diag.trajectory.Trajectory` (features of the layers
        :func:`select_layers` picks); or a mapping with equal-length 1-D ``"alpha"`` (mean
        over layers) and ``"n_traps"`` (total), optionally ``"train_acc"``, ``"step"`` and
        the per-layer arrays of :data:`LAYER_FEATURES` (without ``"layer_alpha"`` the table
        has one layer: ``alpha`` and ``n_traps``, with ``"norm"`` and ``"stable_rank"`` if
        given); or a sequence of per-checkpoint mappings with those keys (per-layer values
        as lists). With a ``"step"`` column the rows may come in any order; steps must be
        finite and must not repeat. Without it the rows are steps 0, 1, ..., n-1.
    train_acc : array_like of shape (n,), optional
        Replaces the table's own training accuracy (one value per row of ``data``, in its
        order; fractions in [0, 1], NaN where unknown).
    layers, min_layer_dim
        The layer selection for a Trajectory (see :func:`select_layers`).
    train_threshold : float
        Training accuracy counted as fitted; a later fall of more than 0.25 below it warns
        (the run diverged).
    norm_gate : bool
        Whether the norm gate is on: a Trajectory that does not start at step 0 then warns.

    Returns
    -------
    (table, order)
        ``order`` is the permutation that sorted the rows by step, None when they were in
        order already (:func:`unsort` maps results back).
    """
    if hasattr(data, "feature") and hasattr(data, "layer_names"):
        return _trajectory_table(data, train_acc, layers, min_layer_dim, train_threshold, norm_gate)
    if isinstance(data, Mapping):
        table = dict(data)
    elif isinstance(data, Sequence) and not isinstance(data, str) and all(isinstance(r, Mapping) for r in data):
        keys = set().union(*(r.keys() for r in data)) if data else set()
        table = {k: [r.get(k, np.nan) for r in data] for k in keys}
        for k in LAYER_FEATURES:
            if k in table:
                try:
                    table[k] = np.asarray(table[k], dtype=np.float64).T
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"{k!r} must hold one list of per-layer values per checkpoint, all of "
                                     f"the same length.") from exc
    else:
        raise TypeError(f"data must be a Trajectory, a mapping of feature arrays or a sequence of "
                        f"per-checkpoint feature mappings; got {type(data).__name__}.")
    for key in ("alpha", "n_traps"):
        if key not in table:
            raise ValueError(f"the feature table has no {key!r} column; got columns {sorted(table)}. "
                             f"Pass a Trajectory or include 'alpha' and 'n_traps'.")
    alpha = curve(table["alpha"], "alpha", allow_nan=True)
    n = alpha.size
    if n == 0:
        raise ValueError("the feature table is empty; got 0 checkpoints.")
    out = {"alpha": alpha, "n_traps": curve(table["n_traps"], "n_traps", n, allow_nan=True)}
    if train_acc is not None:
        out["train_acc"] = check_train_acc(train_acc, "train_acc", n)
    elif "train_acc" in table:
        out["train_acc"] = check_train_acc(table["train_acc"], "the feature table's 'train_acc'", n)
    else:
        out["train_acc"] = np.full(n, np.nan)
    out["step"] = (curve(table["step"], "step", n) if "step" in table
                   else np.arange(n, dtype=np.float64))
    if "layer_alpha" in table:
        out["layer_alpha"] = _layer_table(table["layer_alpha"], "layer_alpha", n)
        n_layers = out["layer_alpha"].shape[0]
        for key in ("layer_n_traps", "layer_norm", "layer_stable_rank"):
            out[key] = (_layer_table(table[key], key, n, n_layers) if key in table
                        else np.full((n_layers, n), np.nan))
    else:
        out["layer_alpha"] = out["alpha"][None, :]
        out["layer_n_traps"] = out["n_traps"][None, :]
        out["layer_norm"] = (curve(table["norm"], "norm", n, allow_nan=True)[None, :] if "norm" in table
                             else np.full((1, n), np.nan))
        out["layer_stable_rank"] = (curve(table["stable_rank"], "stable_rank", n, allow_nan=True)[None, :]
                                    if "stable_rank" in table else np.full((1, n), np.nan))
    order = _step_order(out["step"])
    if order is not None:
        out = _take(out, order)
    _warn_if_diverged(out, train_threshold)
    return out, order


def _trajectory_table(data: Any, train_acc: Any, layers: str | Sequence[str], min_layer_dim: int,
                      train_threshold: float, norm_gate: bool) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    names = select_layers(data, layers, min_layer_dim)
    uncentred = [int(s) for s, r in zip(data.steps, data.reports)
                 if getattr(r, "randomize", True) and not getattr(r, "center_traps", False)]
    if uncentred:
        warnings.warn(f"the trajectory's trap counts are of uncentred shuffled weights (first at step "
                      f"{uncentred[0]}); the classifier is calibrated on centred counts, and a layer's "
                      f"non-zero mean adds a spurious trap. Re-run analyze_checkpoints(..., "
                      f"center_traps=True) (its default).", UserWarning, stacklevel=4)
    if len(data.steps) and int(data.steps[0]) > 0 and norm_gate:
        warnings.warn(f"the trajectory starts at step {int(data.steps[0])}, not at the initialisation "
                      f"(step 0); the norm gate compares each layer's norm with its norm at the first "
                      f"checkpoint, so anti-grokking may be missed or mistimed. Include the step-0 "
                      f"checkpoint (the trainer writes it), or pass norm_ratio=None to switch the "
                      f"gate off.", UserWarning, stacklevel=4)
    alpha = np.vstack([data.feature("alpha", name) for name in names])
    traps = np.vstack([data.feature("n_traps", name) for name in names])
    norm = np.vstack([_feature_or_nan(data, "frobenius_norm", name) for name in names])
    srank = np.vstack([_feature_or_nan(data, "stable_rank", name) for name in names])
    n = len(data.steps)
    with np.errstate(all="ignore"), quiet_nanmean():
        table = {"alpha": np.nanmean(alpha, axis=0), "n_traps": np.nansum(traps, axis=0),
                 "train_acc": check_train_acc(
                     train_acc if train_acc is not None else data.metrics.get("train_acc", np.full(n, np.nan)),
                     "train_acc" if train_acc is not None else "the trajectory's metrics['train_acc']", n),
                 "step": np.asarray(data.steps, dtype=np.float64),
                 "layer_alpha": alpha, "layer_n_traps": traps, "layer_norm": norm,
                 "layer_stable_rank": srank}
    order = _step_order(table["step"])  # a Trajectory sorts itself; kept for a duck-typed one
    if order is not None:
        table = _take(table, order)
    _warn_if_diverged(table, train_threshold, stacklevel=4)
    return table, order


def has_feature(table: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per checkpoint: some analysed layer has a finite alpha, trap count, norm or stable rank."""
    known = np.isfinite(table["alpha"])
    for key in LAYER_FEATURES:
        known = known | np.isfinite(table[key]).any(axis=0)
    return known


def unsort(x: np.ndarray, order: np.ndarray | None) -> np.ndarray:
    """Per-checkpoint values (along the last axis) from step order back to the caller's row order."""
    return x if order is None else x[..., np.argsort(order)]


def _step_order(steps: np.ndarray) -> np.ndarray | None:
    """The permutation that sorts ``steps`` (None when they already increase); repeated steps raise."""
    if steps.size < 2 or (np.diff(steps) > 0).all():
        return None
    order = np.argsort(steps, kind="stable")
    s = steps[order]
    rep = np.flatnonzero(np.diff(s) == 0)
    if rep.size:
        dup = s[rep[0]]
        raise ValueError(f"step must not repeat: step {dup:g} appears {int(np.sum(steps == dup))} times. Each "
                         f"checkpoint needs its own step; drop the repeated rows (e.g. a checkpoint logged twice) "
                         f"or correct their steps.")
    return order


def _take(table: Mapping[str, np.ndarray], order: np.ndarray) -> dict[str, np.ndarray]:
    """Every per-checkpoint column of a feature table (1-D, or along the last axis) reordered."""
    return {k: np.asarray(v)[..., order] for k, v in table.items()}


def _warn_if_diverged(table: Mapping[str, np.ndarray], train_threshold: float, stacklevel: int = 3) -> None:
    """Warn when the training accuracy, once fitted, later falls far below the threshold."""
    tr, steps = table["train_acc"], table["step"]
    with np.errstate(invalid="ignore"):
        fitted = np.flatnonzero(tr >= train_threshold)
        if fitted.size == 0:
            return
        lost = np.flatnonzero(tr[fitted[0]:] < train_threshold - 0.25)
    if lost.size:
        i = int(fitted[0] + lost[0])
        warnings.warn(f"the training accuracy fell to {tr[i]:.3f} at step {int(steps[i])} after reaching "
                      f"{np.nanmax(tr[:i]):.3f}: the run diverged (a training failure, not anti-grokking). "
                      f"Phase labels from that checkpoint on describe a broken model; label the checkpoints "
                      f"before it, or lower the learning rate and retrain.", UserWarning, stacklevel=stacklevel)


def _feature_or_nan(trajectory: Any, name: str, layer: str) -> np.ndarray:
    try:
        return trajectory.feature(name, layer)
    except ValueError:  # reports without the field (e.g. hand-made): unknown, so the gate is skipped
        return np.full(len(trajectory.steps), np.nan)


def _layer_table(x: Any, name: str, n: int, n_layers: int | None = None) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a 2-D array of numbers (n_layers, n_checkpoints).") from exc
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] != n or (n_layers is not None and a.shape[0] != n_layers):
        want = f"({n_layers if n_layers is not None else 'n_layers'}, {n})"
        raise ValueError(f"{name} must have shape {want} (layers x checkpoints); got {a.shape}.")
    return a


class FeatureRows:
    """An append-only feature table: one checkpoint's features at a time, in step order.

    What a running classifier (the :class:`~htsr_diag.monitor.Monitor`) keeps instead of a
    list of per-checkpoint mappings: :meth:`append` adds a row in amortised constant time
    (columns grow by doubling), :meth:`table` returns the feature table of the rows so far
    (views, no copy), which :func:`feature_table` and the rules read as they read any mapping.

    Rows must come with increasing ``"step"`` and the same number of layers.

    Examples
    --------
    >>> rows = FeatureRows()
    >>> rows.append({"step": 0, "alpha": 5.0, "n_traps": 0, "layer_alpha": [5.0], "layer_n_traps": [0],
    ...              "layer_norm": [1.0], "layer_stable_rank": [40.0]})
    >>> rows.append({"step": 10, "alpha": 4.0, "n_traps": 1, "train_acc": 1.0, "layer_alpha": [4.0],
    ...              "layer_n_traps": [1], "layer_norm": [1.2], "layer_stable_rank": [30.0]})
    >>> t = rows.table()
    >>> t["alpha"].tolist(), t["train_acc"].tolist(), t["layer_norm"].shape
    ([5.0, 4.0], [nan, 1.0], (1, 2))
    """

    _COLUMNS = ("alpha", "n_traps", "train_acc", "step")

    def __init__(self) -> None:
        self._n = 0
        self._cols: dict[str, np.ndarray] = {k: np.empty(16) for k in self._COLUMNS}
        self._layers: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return self._n

    def append(self, row: Mapping[str, Any]) -> None:
        """Add one checkpoint: ``"alpha"``, ``"n_traps"``, ``"step"`` (increasing), optionally
        ``"train_acc"`` (NaN if absent) and the per-layer lists of :data:`LAYER_FEATURES`."""
        step = float(row["step"])
        if self._n and not step > self._cols["step"][self._n - 1]:
            raise ValueError(f"step must increase from row to row; got step {step:g} after "
                             f"{self._cols['step'][self._n - 1]:g}.")
        layer_vals = {k: np.asarray(row.get(k, ()), dtype=np.float64).reshape(-1) for k in LAYER_FEATURES}
        if "layer_alpha" not in row:  # one layer: the checkpoint's alpha and trap count
            layer_vals = {"layer_alpha": np.array([float(row["alpha"])]),
                          "layer_n_traps": np.array([float(row["n_traps"])]),
                          "layer_norm": np.array([float(row.get("norm", np.nan))]),
                          "layer_stable_rank": np.array([float(row.get("stable_rank", np.nan))])}
        n_layers = layer_vals["layer_alpha"].size
        for k, v in layer_vals.items():
            if v.size == 0:
                layer_vals[k] = np.full(n_layers, np.nan)
            elif v.size != n_layers:
                raise ValueError(f"{k!r} must hold one value per layer ({n_layers}, as 'layer_alpha'); got {v.size}.")
        if self._layers is None:
            self._layers = {k: np.empty((n_layers, self._cols["alpha"].size)) for k in LAYER_FEATURES}
        elif self._layers["layer_alpha"].shape[0] != n_layers:
            raise ValueError(f"every row must have the same number of layers; got {n_layers} after "
                             f"{self._layers['layer_alpha'].shape[0]}.")
        if self._n == self._cols["alpha"].size:  # grow by doubling
            self._cols = {k: np.concatenate([v, np.empty_like(v)]) for k, v in self._cols.items()}
            self._layers = {k: np.concatenate([v, np.empty_like(v)], axis=1) for k, v in self._layers.items()}
        i = self._n
        self._cols["alpha"][i] = float(row["alpha"])
        self._cols["n_traps"][i] = float(row["n_traps"])
        tr = row.get("train_acc")
        self._cols["train_acc"][i] = np.nan if tr is None else float(tr)
        self._cols["step"][i] = step
        for k, v in layer_vals.items():
            self._layers[k][:, i] = v
        self._n += 1

    def table(self) -> dict[str, np.ndarray]:
        """The feature table of the rows so far (views into the growing columns)."""
        n = self._n
        out = {k: v[:n] for k, v in self._cols.items()}
        if self._layers is not None:
            out.update({k: v[:, :n] for k, v in self._layers.items()})
        return out
