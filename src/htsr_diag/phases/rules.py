"""The phase rules, as pure functions over a feature table and a rules dict.

A *feature table* is what :func:`~htsr_diag.phases.features.feature_table` (or
:meth:`PhaseClassifier.features`) returns: per-checkpoint arrays in step order. A *rules
dict* holds the rule parameters, as :meth:`PhaseClassifier.rules` returns them (the
constructor's values, with the fitted thresholds after :meth:`~PhaseClassifier.fit`):

``onset`` ("auto", "alpha" or "stable_rank"), ``grok_ratio`` (None: the onset's calibrated
ratio, :data:`GROK_RATIO`), ``alpha_grok``, ``shrink_ratio``, ``alpha_anti``, ``min_traps``,
``anti_rule`` (one of :data:`ANTI_RULES`), ``alpha_fit_min`` (None when absent),
``norm_ratio``, ``gate_base`` (one of
:data:`GATE_BASES`; "first" when absent), ``patience``, ``use_train_acc``,
``train_threshold`` and ``alpha_scale``; see :class:`PhaseClassifier` for their meaning.

The functions assume clean input (the classifier validates its parameters and builds the
table); they need no classifier instance, so research scripts can recombine them::

    clf = PhaseClassifier()
    table = clf.features(trajectory)
    grok, anti = evidence(table, clf.rules())
    rank = segment(grok, anti, patience=1, causal=True)

How the pieces fit: a checkpoint is *fitted* (:func:`fitted_mask`) once the training
accuracy reaches ``train_threshold``. The grokking rule holds on a fitted checkpoint whose
onset series (:func:`onset_series`) is at or below :func:`grok_limit`, or whose layers have
all shrunk (:func:`norm_onset`). The anti-grokking rule holds on a fitted checkpoint where
some layer shows the over-fitting signature (:func:`layer_signature`) and passes the norm
gate (:func:`norm_gate`). :func:`segment` turns the two evidence series into ranks 0, 1, 2,
monotone in time; :func:`confidence` scores each label by the margin of its rule.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from ._common import quiet_nanmean
from .features import has_feature

__all__ = [
    "ANTI_RULES", "ONSETS", "GROK_RATIO", "FITTED_RULES", "GATE_BASES", "gate_reference",
    "resolve_rules", "fitted_mask", "onset_series", "onset_base", "grok_limit", "norm_shrink", "norm_onset",
    "layer_signature", "norm_gate", "rule_parts", "evidence", "explain", "first_streak", "segment", "ranks",
    "confidence",
]

#: How a layer's alpha and trap signals combine into the over-fitting signature.
ANTI_RULES: tuple[str, ...] = ("both", "either", "traps", "alpha")
#: Onset series the grokking rule can read.
ONSETS: tuple[str, ...] = ("auto", "alpha", "stable_rank")
#: The calibrated ``grok_ratio`` of each onset series (docs/phases.md).
GROK_RATIO: dict[str, float] = {"alpha": 0.78, "stable_rank": 0.85}
#: The rule parameters :meth:`PhaseClassifier.fit` calibrates.
FITTED_RULES: tuple[str, ...] = ("grok_ratio", "alpha_grok", "alpha_anti", "min_traps", "anti_rule", "norm_ratio",
                                 "patience")


def resolve_rules(rules: Mapping[str, Any], table: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """``rules`` with ``onset="auto"`` and ``grok_ratio=None`` resolved for this feature table.

    "auto": the stable rank when the table has one for some layer (a Trajectory always does),
    else alpha; always alpha when an absolute ``alpha_grok`` is set. ``grok_ratio`` None: the
    calibrated ratio of the resolved onset (:data:`GROK_RATIO`). Resolving twice changes nothing.
    """
    out = dict(rules)
    if out["onset"] == "auto":
        has_sr = "layer_stable_rank" in table and np.isfinite(np.asarray(table["layer_stable_rank"], float)).any()
        out["onset"] = "stable_rank" if has_sr and out.get("alpha_grok") is None else "alpha"
    if out["grok_ratio"] is None:
        out["grok_ratio"] = GROK_RATIO[out["onset"]]
    return out


def fitted_mask(train_acc: np.ndarray, use_train_acc: bool, train_threshold: float) -> np.ndarray:
    """Per checkpoint: the training set counts as fitted (an unknown accuracy counts as fitted; all True without ``use_train_acc``)."""
    if not use_train_acc:
        return np.ones(train_acc.size, dtype=bool)
    with np.errstate(invalid="ignore"):
        return np.isnan(train_acc) | (train_acc >= train_threshold)


def onset_series(table: Mapping[str, np.ndarray], onset: str) -> np.ndarray:
    """The per-checkpoint series the grokking rule reads: the mean alpha, or the smallest layer stable rank.

    ``onset`` is "alpha" or "stable_rank" (resolved, see :func:`resolve_rules`); the
    stable-rank series needs a finite ``layer_stable_rank`` somewhere, else ValueError.
    """
    if onset == "alpha":
        return table["alpha"]
    sr = np.asarray(table["layer_stable_rank"], dtype=np.float64)
    if not np.isfinite(sr).any():
        raise ValueError("onset='stable_rank' needs each layer's stable rank, and the feature table has none. "
                         "Pass a Trajectory (analyze_checkpoints records it), include 'layer_stable_rank' "
                         "(layers x checkpoints) or 'stable_rank' in the mapping, or use onset='alpha'.")
    with np.errstate(invalid="ignore"), quiet_nanmean():
        return np.nanmin(sr, axis=0)


def onset_base(series: np.ndarray, fitted: np.ndarray) -> float:
    """A series' value when the training set was first fitted: the median of that checkpoint and the two before it.

    NaN when no checkpoint is fitted, or none of the three is finite.
    """
    hit = np.flatnonzero(fitted)
    if hit.size == 0:
        return math.nan
    window = series[max(0, int(hit[0]) - 2): int(hit[0]) + 1]
    window = window[np.isfinite(window)]
    return float(np.median(window)) if window.size else math.nan


def grok_limit(series: np.ndarray, fitted: np.ndarray, rules: Mapping[str, Any]) -> float:
    """The onset value at or below which a fitted checkpoint is grokking.

    ``alpha_grok`` when set (absolute), else ``grok_ratio`` x :func:`onset_base` (``rules``
    resolved, see :func:`resolve_rules`).
    """
    if rules.get("alpha_grok") is not None:
        return float(rules["alpha_grok"])
    return float(rules["grok_ratio"]) * onset_base(series, fitted)


def norm_shrink(norm: np.ndarray, fitted: np.ndarray) -> np.ndarray:
    """Each layer's norm over its norm when the training set was first fitted (:func:`onset_base`), (L, n); NaN where unknown."""
    norm = np.asarray(norm, dtype=np.float64)
    base = np.array([onset_base(row, fitted) for row in norm])
    with np.errstate(invalid="ignore", divide="ignore"):
        return norm / base[:, None]


def norm_onset(norm: np.ndarray, fitted: np.ndarray, ratio: float | None) -> np.ndarray:
    """Per checkpoint: every layer with a known norm is at most ``ratio`` x its norm when first fitted.

    The norm onset (``shrink_ratio``): weight decay shrinking the weights after the training
    set is fitted. All False when ``ratio`` is None or no layer's norm is known.
    """
    worst = _largest(norm_shrink(norm, fitted))
    if ratio is None:
        return np.zeros(worst.size, dtype=bool)
    with np.errstate(invalid="ignore"):
        return np.isfinite(worst) & (worst <= ratio)


def layer_signature(layer_alpha: np.ndarray, layer_n_traps: np.ndarray, rules: Mapping[str, Any],
                    fitted: np.ndarray | None = None) -> np.ndarray:
    """Per layer and checkpoint, (L, n) bool: the over-fitting signature, whatever the layer's norm.

    ``alpha < alpha_anti`` and/or ``n_traps >= min_traps`` as ``anti_rule`` says ("both",
    "either", "traps" or "alpha"). With ``rules["alpha_fit_min"]`` set (and ``fitted``
    given), the alpha signal counts only in a layer whose alpha when the training set was
    first fitted (:func:`onset_base`) was at least that value: a layer that fell from a
    random-like spectrum to alpha < 2 after the fit, not one that was heavy-tailed all along
    (small square matrices and embeddings can sit below 2 and generalise). Its trap signal
    is unaffected.
    """
    with np.errstate(invalid="ignore"):
        low = layer_alpha < rules["alpha_anti"]
        trap = layer_n_traps >= rules["min_traps"]
        amin = rules.get("alpha_fit_min")
        if amin is not None:
            if fitted is None:
                raise ValueError("alpha_fit_min needs the fitted mask (fitted=...).")
            base = np.array([onset_base(np.asarray(row, dtype=np.float64), fitted) for row in layer_alpha])
            low = low & (base >= amin)[:, None]
    return {"both": low & trap, "either": low | trap, "traps": trap, "alpha": low}[rules["anti_rule"]]


#: What the norm gate compares a layer's norm with (``gate_base``).
GATE_BASES: tuple[str, ...] = ("first", "fit")


def gate_reference(norm: np.ndarray, fitted: np.ndarray | None = None, base: str = "first") -> np.ndarray:
    """Each layer's reference norm for the norm gate, shape (L,).

    ``base="first"``: its first finite norm (the initialisation, when the sequence starts at
    step 0). ``base="fit"``: its norm when the training set was first fitted
    (:func:`onset_base` with ``fitted``), so the gate asks whether the layer kept growing
    after the fit; NaN before any checkpoint is fitted.
    """
    norm = np.asarray(norm, dtype=np.float64)
    if base == "first":
        return _first_finite(norm)
    if fitted is None:
        raise ValueError("gate_base='fit' needs the fitted mask (fitted=...).")
    return np.array([onset_base(row, fitted) for row in norm])


def norm_gate(norm: np.ndarray, ratio: float | None, fitted: np.ndarray | None = None,
              base: str = "first") -> np.ndarray:
    """Per layer and checkpoint, (L, n) bool: the layer's norm is at least ``ratio`` x its reference norm.

    The reference is :func:`gate_reference` (``base`` "first" or "fit"). Unknown norms (NaN)
    and unknown references pass, and so does everything when ``ratio`` is None (gate off).
    Causal: the reference is known at the first checkpoint ("first") or at the first fitted
    one ("fit"), and the anti-grokking rule needs a fitted checkpoint anyway.
    """
    norm = np.asarray(norm, dtype=np.float64)
    if ratio is None:
        return np.ones(norm.shape, dtype=bool)
    ref = gate_reference(norm, fitted, base)
    with np.errstate(invalid="ignore"):
        gate = norm >= ratio * ref[:, None]
    return gate | ~np.isfinite(norm) | ~np.isfinite(ref)[:, None]


def rule_parts(table: Mapping[str, np.ndarray], rules: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The rules' parts: ``fitted``, ``shrunk`` and ``grokking`` per checkpoint (n,), ``layer_signature`` and ``layer_gate`` per layer (L, n)."""
    rules = resolve_rules(rules, table)
    a, tr = onset_series(table, rules["onset"]), table["train_acc"]
    with np.errstate(invalid="ignore"):
        fitted = fitted_mask(tr, rules["use_train_acc"], rules["train_threshold"])
        fitted = fitted_mask(tr, rules["use_train_acc"], rules["train_threshold"])
        signature = layer_signature(table["layer_alpha"], table["layer_n_traps"], rules, fitted)
        limit = grok_limit(a, fitted, rules)
        shrunk = norm_onset(table["layer_norm"], fitted, rules.get("shrink_ratio"))
        return {"fitted": fitted, "grokking": fitted & ((a <= limit) | shrunk), "shrunk": shrunk,
                "layer_signature": signature,
                "layer_gate": norm_gate(table["layer_norm"], rules["norm_ratio"], fitted,
                                        rules.get("gate_base", "first"))}


def evidence(table: Mapping[str, np.ndarray], rules: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Per checkpoint, two (n,) bool arrays: (the grokking rule holds, the anti-grokking rule holds).

    Anti-grokking: fitted, and some layer has both the signature and the norm gate.
    """
    parts = rule_parts(table, rules)
    anti = parts["fitted"] & (parts["layer_signature"] & parts["layer_gate"]).any(axis=0)
    return parts["grokking"], anti


def explain(table: Mapping[str, np.ndarray], rules: Mapping[str, Any],
            known: np.ndarray | None = None) -> dict[str, Any]:
    """What each rule reads, per checkpoint and layer, in the table's (step) order.

    The content of :meth:`PhaseClassifier.evidence` without ``"layers"``: the arrays
    ``step``, ``has_feature`` (``known``; default :func:`~htsr_diag.phases.features.has_feature`),
    ``fitted``, ``onset_ratio``, ``layer_shrink``, ``shrink``, ``shrunk``, ``grokking``,
    ``layer_signature``, ``layer_norm_ratio``, ``layer_gate``, ``anti_grokking``, then
    ``onset``, ``grok_ratio`` and ``shrink_ratio`` (resolved).
    """
    rules = resolve_rules(rules, table)
    parts = rule_parts(table, rules)
    norm = table["layer_norm"]
    onset = onset_series(table, rules["onset"])
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = norm / gate_reference(norm, parts["fitted"], rules.get("gate_base", "first"))[:, None]
        onset_ratio = onset / onset_base(onset, parts["fitted"])
    if rules.get("gate_base", "first") == "fit":   # the reference is not known before the first fitted checkpoint
        hit = np.flatnonzero(parts["fitted"])
        ratio[:, : (int(hit[0]) if hit.size else ratio.shape[1])] = np.nan
    anti = parts["fitted"] & (parts["layer_signature"] & parts["layer_gate"]).any(axis=0)
    shrink = rules["shrink_ratio"]
    layer_shrink = norm_shrink(norm, parts["fitted"])
    return {"step": table["step"], "has_feature": has_feature(table) if known is None else known,
            "fitted": parts["fitted"], "onset_ratio": onset_ratio, "layer_shrink": layer_shrink,
            "shrink": _largest(layer_shrink), "shrunk": parts["shrunk"], "grokking": parts["grokking"],
            "layer_signature": parts["layer_signature"], "layer_norm_ratio": ratio,
            "layer_gate": parts["layer_gate"], "anti_grokking": anti,
            "onset": rules["onset"], "grok_ratio": float(rules["grok_ratio"]),
            "shrink_ratio": None if shrink is None else float(shrink)}


def first_streak(evidence: np.ndarray, patience: int) -> int | None:
    """Index of the first checkpoint that ends a run of ``patience`` True values (None if none)."""
    if patience == 1:
        hits = np.flatnonzero(evidence)
    else:
        c = np.convolve(evidence.astype(np.int64), np.ones(patience, dtype=np.int64), "full")
        hits = np.flatnonzero(c[: evidence.size] >= patience)
    return int(hits[0]) if hits.size else None


def segment(grok: np.ndarray, anti: np.ndarray, patience: int, causal: bool) -> np.ndarray:
    """Rank (0, 1, 2) per checkpoint from the evidence, monotone in time.

    Grokking is entered when its rule has held ``patience`` checkpoints in a row, or when
    anti-grokking is entered (a run may skip the grokking label); anti-grokking when its
    rule has. Causal: at the checkpoint completing the streak; otherwise at its first
    checkpoint.

    Examples
    --------
    >>> segment(np.array([0, 1, 1, 0, 0], bool), np.array([0, 0, 0, 1, 1], bool), 2, False).tolist()
    [0, 1, 1, 2, 2]
    """
    n = grok.size
    lag = 0 if causal else patience - 1
    t_g = first_streak(grok, patience)
    t_a = first_streak(anti, patience)
    s_a = n if t_a is None else t_a - lag
    s_g = min(n if t_g is None else t_g - lag, s_a)
    rank = np.zeros(n, dtype=np.int64)
    rank[s_g:] = 1
    rank[s_a:] = 2
    return rank


def ranks(table: Mapping[str, np.ndarray], rules: Mapping[str, Any], known: np.ndarray | None = None, *,
          causal: bool) -> np.ndarray:
    """Rank (0, 1, 2) per checkpoint of a feature table; -1 where ``known`` is False.

    The rules read the whole table; the phases are then segmented (``rules["patience"]``)
    over the checkpoints with a feature only (``known``, default
    :func:`~htsr_diag.phases.features.has_feature`), so a featureless one neither starts
    nor breaks a streak.
    """
    known = has_feature(table) if known is None else known
    grok, anti = evidence(table, rules)
    rank = np.full(known.size, -1, dtype=np.int64)
    rank[known] = segment(grok[known], anti[known], rules["patience"], causal)
    return rank


def confidence(table: Mapping[str, np.ndarray], rank: np.ndarray, rules: Mapping[str, Any]) -> np.ndarray:
    """Per-checkpoint confidence in (0, 1) of the labels ``rank`` (from :func:`ranks`); NaN where rank is -1.

    The logistic of the margin by which the checkpoint's own features satisfy the rule of its
    label: alpha distances in units of ``alpha_scale``, stable-rank ones in units of 5% of
    the onset base, norm shrinkage in units of 5%, trap counts in traps beyond
    ``min_traps - 0.5``; for the anti rule the best layer, a layer failing the norm gate
    counting at most -1. A pre-grokking checkpoint whose training set is not fitted scores
    logistic(4).
    """
    rules = resolve_rules(rules, table)
    a, tr = onset_series(table, rules["onset"]), table["train_acc"]
    s = float(rules["alpha_scale"])
    use_train_acc, train_threshold = rules["use_train_acc"], rules["train_threshold"]
    with np.errstate(invalid="ignore"):
        fitted = fitted_mask(tr, use_train_acc, train_threshold)
        limit = grok_limit(a, fitted, rules)
        unit = s if rules["onset"] == "alpha" else 0.05 * onset_base(a, fitted)
        m_grok = (limit - a) / unit    # > 0: the onset series says "past pre-grokking"
        if rules["shrink_ratio"] is not None:  # or every layer's norm has shrunk far enough (units of 5%)
            worst = _largest(norm_shrink(table["layer_norm"], fitted))
            m_shrink = (rules["shrink_ratio"] - worst) / 0.05
            m_grok = np.where(np.isfinite(m_shrink), np.fmax(m_grok, m_shrink), m_grok)
        m_low = (rules["alpha_anti"] - table["layer_alpha"]) / s    # > 0: the layer's alpha says over-fit
        if rules.get("alpha_fit_min") is not None:                  # a layer heavy-tailed at the fit: no alpha signal
            base = np.array([onset_base(np.asarray(r, dtype=np.float64), fitted) for r in table["layer_alpha"]])
            m_low = np.where((base >= rules["alpha_fit_min"])[:, None], m_low, -np.inf)
        m_trap = table["layer_n_traps"] - (rules["min_traps"] - 0.5)  # > 0: traps present
        m_layer = {"both": np.minimum(m_low, m_trap), "either": np.maximum(m_low, m_trap),
                   "traps": m_trap, "alpha": m_low}[rules["anti_rule"]]
        gate = norm_gate(table["layer_norm"], rules["norm_ratio"], fitted, rules.get("gate_base", "first"))
        m_layer = np.where(gate, m_layer, np.minimum(m_layer, -1.0))
        m_anti = np.nanmax(np.where(np.isnan(m_layer), -np.inf, m_layer), axis=0)
        m_anti = np.where(np.isfinite(m_anti), m_anti, np.nan)
        unfitted = use_train_acc & (tr < train_threshold)
        margin = np.where(rank == 0, np.where(unfitted, 4.0, -np.maximum(m_grok, m_anti)),
                          np.where(rank == 1, np.minimum(m_grok if rules["anti_rule"] != "traps" else np.inf,
                                                         -m_anti), m_anti))
        margin = np.nan_to_num(margin, nan=0.0)
    return np.where(rank >= 0, 1.0 / (1.0 + np.exp(-margin)), np.nan)


def _first_finite(rows: np.ndarray) -> np.ndarray:
    """The first finite value of each row of an (L, n) array (NaN for a row with none)."""
    first = np.full(rows.shape[0], np.nan)
    for i, row in enumerate(rows):
        ok = np.flatnonzero(np.isfinite(row))
        if ok.size:
            first[i] = row[ok[0]]
    return first


def _largest(rows: np.ndarray) -> np.ndarray:
    """The largest finite value of each column of an (L, n) array (NaN for a column with none)."""
    with np.errstate(invalid="ignore"), quiet_nanmean():
        return np.nanmax(rows, axis=0)
