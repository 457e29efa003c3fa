"""Grokking phases: ground-truth labels from accuracy curves, and a weight-only classifier.

Three labels, in the order a long run goes through them (Prakash & Martin 2025,
arXiv 2506.04434, Figure 1):

``PRE`` = ``"pre-grokking"``
    training accuracy high or still rising, test accuracy not yet risen.
``GROK`` = ``"grokking"``
    test accuracy rising to, and holding, its peak.
``ANTI`` = ``"anti-grokking"``
    after the peak, test accuracy clearly below it while training accuracy stays ~1.

:func:`phases_from_accuracy` draws these labels from the accuracy curves (test data
needed): it is the reference used to evaluate and calibrate the classifier, never its
input. :class:`PhaseClassifier` labels checkpoints from weight-only features (per-layer
alpha, centred correlation-trap counts and norms; optionally the training accuracy, which
every user has); a checkpoint with no finite feature (e.g. NaN weights) it labels
``UNKNOWN`` = ``"unknown"``, which is not a phase.
See ``docs/phases.md`` for the rules, their defaults and the measured accuracy.
"""

from __future__ import annotations

import logging
import math
import numbers
import warnings
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .exceptions import MissingTrainAccWarning, NoFeatureWarning, NotFittedError

__all__ = [
    "PRE",
    "GROK",
    "ANTI",
    "PHASES",
    "UNKNOWN",
    "phases_from_accuracy",
    "PhaseClassifier",
    "phase_agreement",
]

logger = logging.getLogger(__name__)

PRE = "pre-grokking"
GROK = "grokking"
ANTI = "anti-grokking"
#: The three labels in the order a run goes through them.
PHASES: tuple[str, str, str] = (PRE, GROK, ANTI)
#: The label :meth:`PhaseClassifier.predict` gives a checkpoint with no finite feature in any
#: analysed layer (e.g. NaN weights). Not a phase: not in :data:`PHASES`.
UNKNOWN = "unknown"
_RANK = {PRE: 0, GROK: 1, ANTI: 2}

#: Per-checkpoint features the classifier reads (keys of a feature table).
FEATURES: tuple[str, ...] = ("alpha", "n_traps", "train_acc")


# ----------------------------------------------------------------------------- helpers
def _check_fraction(value: Any, name: str, *, low: float = 0.0, high: float = 1.0,
                    open_low: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number in ({low}, {high}]; got {value!r}.")
    v = float(value)
    ok = (v > low if open_low else v >= low) and v <= high and math.isfinite(v)
    if not ok:
        bracket = "(" if open_low else "["
        raise ValueError(f"{name} must be in {bracket}{low}, {high}]; got {value!r}. "
                         f"Pass a fraction such as the default.")
    return v


def _curve(x: Any, name: str, n: int | None = None, *, allow_nan: bool = False) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a 1-D sequence of numbers; got {type(x).__name__}.") from exc
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per checkpoint); got shape {a.shape}.")
    if n is not None and a.shape[0] != n:
        raise ValueError(f"{name} must have one value per checkpoint ({n}); got {a.shape[0]}. "
                         f"Align it with steps.")
    if not allow_nan and not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite; got NaN or Inf at index "
                         f"{int(np.flatnonzero(~np.isfinite(a))[0])}. Drop or fill those checkpoints.")
    return a


def _check_steps(steps: Any) -> np.ndarray:
    s = _curve(steps, "steps")
    if s.size == 0:
        raise ValueError("steps must not be empty; got 0 checkpoints.")
    if s.size > 1 and not (np.diff(s) > 0).all():
        i = int(np.flatnonzero(np.diff(s) <= 0)[0])
        raise ValueError(f"steps must be strictly increasing; got steps[{i}]={s[i]:g} followed by "
                         f"steps[{i + 1}]={s[i + 1]:g}. Sort the checkpoints by step.")
    return s


def _check_train_acc(x: Any, name: str, n: int) -> np.ndarray:
    """Training accuracies, one per checkpoint: fractions in [0, 1], NaN where unknown."""
    a = _curve(x, name, n, allow_nan=True)
    bad = np.flatnonzero(~np.isnan(a) & ~((a >= 0) & (a <= 1)))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{name} must hold fractions in [0, 1] (NaN where unknown); got {a[i]:g} at index {i}. "
                         f"Divide percentages by 100.")
    return a


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


def _unsort(x: np.ndarray, order: np.ndarray | None) -> np.ndarray:
    """Per-checkpoint values (along the last axis) from step order back to the caller's order."""
    return x if order is None else x[..., np.argsort(order)]


def _has_feature(table: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per checkpoint: some analysed layer has a finite alpha, trap count, norm or stable rank."""
    known = np.isfinite(table["alpha"])
    for key in LAYER_FEATURES:
        known = known | np.isfinite(table[key]).any(axis=0)
    return known


def _labels(rank: np.ndarray) -> np.ndarray:
    """Phase names of ranks 0, 1, 2; ``UNKNOWN`` for -1."""
    names = np.asarray(PHASES + (UNKNOWN,), dtype=str)
    return names[np.where(rank >= 0, rank, len(PHASES))]


def _list_steps(steps: np.ndarray) -> str:
    shown = ", ".join(f"{s:g}" for s in steps[:5])
    return shown + (f", ... ({steps.size} in all)" if steps.size > 5 else "")


# ----------------------------------------------------------------------------- ground truth
def phases_from_accuracy(steps: Any, train_acc: Any, test_acc: Any, *,
                         train_threshold: float = 0.99, rise_fraction: float = 0.2,
                         min_rise: float = 0.05, drop: float = 0.05) -> np.ndarray:
    """Label each checkpoint from its training and test accuracy, as a person reads Figure 1.

    The rules (all thresholds are parameters; accuracies are fractions in [0, 1]):

    1. ``i_fit``: the first checkpoint with ``train_acc >= train_threshold`` (the training
       set is fitted). Every checkpoint before it is pre-grokking. No such checkpoint: all
       pre-grokking.
    2. ``peak``: the highest test accuracy at or after ``i_fit`` (its first occurrence,
       ``i_peak``); ``base``: the lowest test accuracy between ``i_fit`` and ``i_peak``
       (the plateau before the rise, at ``i_base``); ``rise = peak - base``.
    3. If ``rise < min_rise`` the test accuracy never rose: every checkpoint up to the
       collapse rule below is pre-grokking. Otherwise grokking starts at the first
       checkpoint at or after ``i_base`` whose test accuracy reaches
       ``base + rise_fraction * rise``.
    4. Anti-grokking starts at the first checkpoint after ``i_peak`` whose test accuracy is
       at most ``peak - drop`` while ``train_acc >= train_threshold``. Labels never go
       back: a later recovery does not undo the collapse (phases are ordered).

    Parameters
    ----------
    steps : array_like of shape (n,)
        Training steps, strictly increasing.
    train_acc, test_acc : array_like of shape (n,)
        Accuracies in [0, 1] at those steps.
    train_threshold : float, default 0.99
        Training accuracy counted as "~1" (fitted).
    rise_fraction : float, default 0.2
        Fraction of the climb from plateau to peak at which grokking is said to start
        (where a person sees the test curve leave its plateau).
    min_rise : float, default 0.05
        A climb smaller than this (5 accuracy points) is not grokking.
    drop : float, default 0.05
        Fall below the peak (5 points) that counts as a collapse.

    Returns
    -------
    labels : ndarray of str, shape (n,)
        ``"pre-grokking"``, ``"grokking"`` or ``"anti-grokking"`` per checkpoint.

    Examples
    --------
    >>> phases_from_accuracy([1, 10, 100, 1000], [0.5, 1, 1, 1], [0.1, 0.2, 0.9, 0.6]).tolist()
    ['pre-grokking', 'pre-grokking', 'grokking', 'anti-grokking']
    """
    s = _check_steps(steps)
    n = s.size
    tr = _curve(train_acc, "train_acc", n)
    te = _curve(test_acc, "test_acc", n)
    for name, a in (("train_acc", tr), ("test_acc", te)):
        if a.min() < 0 or a.max() > 1:
            raise ValueError(f"{name} must be fractions in [0, 1]; got range [{a.min():g}, {a.max():g}]. "
                             f"Divide percentages by 100.")
    train_threshold = _check_fraction(train_threshold, "train_threshold")
    rise_fraction = _check_fraction(rise_fraction, "rise_fraction")
    min_rise = _check_fraction(min_rise, "min_rise", open_low=False)
    drop = _check_fraction(drop, "drop")

    labels = np.full(n, PRE, dtype=object)
    fitted = np.flatnonzero(tr >= train_threshold)
    if fitted.size == 0:
        return labels.astype(str)
    i_fit = int(fitted[0])
    i_peak = i_fit + int(np.argmax(te[i_fit:]))
    peak = te[i_peak]
    i_base = i_fit + int(np.argmin(te[i_fit:i_peak + 1]))
    base = te[i_base]
    if peak - base >= min_rise:
        level = base + rise_fraction * (peak - base)
        i_grok = i_base + int(np.flatnonzero(te[i_base:i_peak + 1] >= level)[0])
        labels[i_grok:] = GROK
    after = np.arange(i_peak + 1, n)
    collapsed = after[(te[after] <= peak - drop) & (tr[after] >= train_threshold)]
    if collapsed.size:
        labels[int(collapsed[0]):] = ANTI
    return labels.astype(str)


def phase_agreement(predicted: Any, reference: Any) -> float:
    """Fraction of checkpoints where two label sequences agree.

    A checkpoint the classifier labelled ``"unknown"`` (no finite feature, see
    :data:`UNKNOWN`) counts as a disagreement, whatever the reference says: the agreement
    is over every checkpoint, so a model with NaN weights cannot score well by being skipped.

    Parameters
    ----------
    predicted, reference : array_like of str, shape (n,)

    Returns
    -------
    float in [0, 1].

    Examples
    --------
    >>> phase_agreement(["pre-grokking", "grokking"], ["pre-grokking", "anti-grokking"])
    0.5
    """
    p, r = np.asarray(predicted, dtype=str), np.asarray(reference, dtype=str)
    if p.shape != r.shape or p.ndim != 1 or p.size == 0:
        raise ValueError(f"predicted and reference must be non-empty 1-D sequences of equal length; "
                         f"got shapes {p.shape} and {r.shape}.")
    return float(np.mean((p == r) & (p != UNKNOWN)))


# ----------------------------------------------------------------------------- classifier
_ANTI_RULES = ("both", "either", "traps", "alpha")
#: Onset series the grokking rule can read, and the calibrated ``grok_ratio`` of each (docs/phases.md).
_ONSETS = ("auto", "alpha", "stable_rank")
_GROK_RATIO = {"alpha": 0.78, "stable_rank": 0.85}
_PARAM_NAMES = ("causal", "onset", "grok_ratio", "shrink_ratio", "alpha_grok", "alpha_anti", "min_traps", "anti_rule",
                "norm_ratio", "patience", "use_train_acc", "train_threshold", "layers", "min_layer_dim", "alpha_scale")
_FITTED = ("grok_ratio", "alpha_grok", "alpha_anti", "min_traps", "anti_rule", "norm_ratio", "patience")
#: Per-layer feature keys of a feature table, each of shape (n_layers, n_checkpoints).
LAYER_FEATURES: tuple[str, ...] = ("layer_alpha", "layer_n_traps", "layer_norm", "layer_stable_rank")


def _first_streak(evidence: np.ndarray, patience: int) -> int | None:
    """Index of the first checkpoint that ends a run of ``patience`` True values."""
    if patience == 1:
        hits = np.flatnonzero(evidence)
    else:
        c = np.convolve(evidence.astype(np.int64), np.ones(patience, dtype=np.int64), "full")
        hits = np.flatnonzero(c[: evidence.size] >= patience)
    return int(hits[0]) if hits.size else None


def _first_finite(rows: np.ndarray) -> np.ndarray:
    """The first finite value of each row of an (L, n) array (NaN for a row with none)."""
    first = np.full(rows.shape[0], np.nan)
    for i, row in enumerate(rows):
        ok = np.flatnonzero(np.isfinite(row))
        if ok.size:
            first[i] = row[ok[0]]
    return first


def _norm_gate(norm: np.ndarray, ratio: float | None) -> np.ndarray:
    """Per layer and checkpoint: the layer's norm is at least ``ratio`` x its first finite norm.

    ``norm`` has shape (L, n). Unknown norms (NaN) pass, and so does everything when
    ``ratio`` is None (gate off). Causal: only the first checkpoint is compared with.
    """
    norm = np.asarray(norm, dtype=np.float64)
    if ratio is None:
        return np.ones(norm.shape, dtype=bool)
    first = _first_finite(norm)
    with np.errstate(invalid="ignore"):
        gate = norm >= ratio * first[:, None]
    return gate | ~np.isfinite(norm) | ~np.isfinite(first)[:, None]


class PhaseClassifier:
    """Label checkpoints pre-grokking / grokking / anti-grokking from weight-only features.

    Reads, per checkpoint and per analysed layer, the power-law exponent alpha, the
    correlation-trap count (of the centred shuffled weights, as :func:`analyze_checkpoints`
    computes it by default) and the Frobenius norm; optionally the training accuracy, which
    every user has. Never the test accuracy. The analysed layers are by default those whose
    smaller dimension is at least ``min_layer_dim`` (the study's FC1 and FC2, not the
    10-unit head, whose 10 eigenvalues give no reliable fit).

    Rules (HTSR theory, Prakash & Martin 2025 and Omnigrok; docs/phases.md). A run starts
    pre-grokking. It is *grokking* once the training set is fitted
    (``train_acc >= train_threshold``, when known) and the smaller stable rank
    ``||W||_F^2 / ||W||_2^2`` of the analysed layers has fallen to ``grok_ratio`` (0.85)
    times its value when the training set was first fitted (the median of that checkpoint
    and the two before it): learned directions have separated from the random-like bulk
    of memorisation. Features without stable ranks (a hand-made mapping) use the mean
    alpha instead (``onset="auto"``), at 0.78 times its value at fitting: the study's mean
    alpha falls from 4.0 (pre-grokking) to 2.9 (grokking), a ratio of 0.73. Before grokking
    the spectra are Marchenko-Pastur-like and the power-law fit returns large, jumpy alphas
    (9-24 in the fast preset), which made the alpha onset (v4) late or early by several
    checkpoints in some runs; the stable rank needs no fit. A relative rule does not depend
    on the absolute levels of a model or recipe; ``alpha_grok`` sets an absolute alpha
    threshold instead. It is also grokking once fitted and every analysed layer's Frobenius
    norm is at most ``shrink_ratio`` (0.85) times its norm at fitting (the same median of
    three): under weight decay the test accuracy can start rising as soon as the training
    set is fitted, while weight decay shrinks the weights (Omnigrok's mechanism) and before
    the stable rank moves; without weight decay the norms grow and this never fires. It is
    *anti-grokking* once the training set is fitted
    and some analysed layer shows the over-fitting signature at once:

    - its anti rule holds: ``"either"`` (default) ``alpha < alpha_anti`` or
      ``n_traps >= min_traps`` in that layer (the study: traps appear at the onset of the
      collapse, alpha < 2 a little later; either comes first in some runs);
      ``"both"`` both of them; ``"traps"`` or ``"alpha"`` that one alone;
    - and its Frobenius norm is at least ``norm_ratio`` (1.5) times its norm at the first
      checkpoint (which should be the initialisation). Without weight decay the norm keeps
      growing and the heavy tail and traps of over-fitting come with it (the study; the
      "large-norm" side of Omnigrok's LU mechanism). Under weight decay a layer shrunk
      below its initial norm also grows heavy tails and traps while the test accuracy
      falls by only a few points; and early in grokking, at 1.0-1.1 x its initial norm, a
      layer can show two traps long before any collapse. The gate keeps both from being
      called a collapse. ``norm_ratio=None`` switches it off.

    A phase is entered when its rule has held on ``patience`` consecutive checkpoints, and
    never left (phases are ordered). With ``causal=True`` the label at a checkpoint uses
    only checkpoints up to it (the switch is reported at the checkpoint that completes the
    streak), so it can run during training; otherwise the switch is dated back to the
    first checkpoint of the streak.

    The defaults work without fitting; :meth:`fit` calibrates the thresholds on labelled
    runs (labels from :func:`phases_from_accuracy`) by an exhaustive search.

    Parameters
    ----------
    causal : bool, default False
        Label each checkpoint from the checkpoints up to it only.
    onset : {"auto", "alpha", "stable_rank"}, default "auto"
        The series the grokking rule reads: the mean alpha of the analysed layers, or the
        smallest of their stable ranks (needs the per-layer ``stable_rank``, which
        :func:`analyze_checkpoints` records). "auto": the stable rank when the features
        have it (a Trajectory or a Monitor history always does), else alpha; alpha when
        ``alpha_grok`` is set. :meth:`evidence` reports the one used. The stable-rank
        onset was pre-registered as "v5" and adopted after scoring on fresh runs
        (docs/phases.md); ``onset="alpha"`` is the v4 rule.
    grok_ratio : float or None, default None
        Grokking starts when the onset series is at most this fraction of its value when
        the training set was first fitted. None: the onset's calibrated value, 0.78 for
        alpha (the best interval, about 0.77-0.79, on the three seed-0 ``fast``-preset
        tuning runs; the study's phase means give 2.9 / 4.0 = 0.73) and 0.85 for the stable
        rank (the middle of the flat range 0.80-0.88 on seeds 0-23; docs/phases.md).
    shrink_ratio : float or None, default 0.85
        The norm onset: grokking also starts when every analysed layer's Frobenius norm is
        at most this fraction of its norm when the training set was first fitted (read from
        ``layer_norm``; features without norms never fire it). None: off, the v5 rule.
        Inside the flat range 0.84-0.92 on seeds 0-33; pre-registered as "v6" and adopted
        after scoring on fresh runs (docs/phases.md).
    alpha_grok : float or None, default None
        An absolute mean alpha at or below which a fitted run is grokking, used instead of
        ``grok_ratio`` when set, with the alpha onset only (e.g. 3.45, the midpoint of the
        study's pre-grokking 4.0 and grokking 2.9).
    alpha_anti : float, default 2.0
        Layer alpha below which a layer is over-fit (HTSR: alpha < 2; the study's midpoint
        of grokking 2.9 and anti-grokking 1.1 is also 2.0).
    min_traps : int, default 2
        Correlation traps in a layer that count as a trap signal. Two, because the trap
        detector's false-alarm rate of 1e-3 per layer and checkpoint gives a run of 91
        checkpoints x 2 layers of iid weights one spurious single trap with probability
        ~17%, and two at once ~1e-6.
    anti_rule : {"either", "both", "traps", "alpha"}, default "either"
        How a layer's trap and alpha signals combine into the anti-grokking rule. The
        default was pre-registered as part of the "v3" candidate and adopted after scoring
        on fresh runs (docs/phases.md); ``anti_rule="both", min_traps=1`` is the v2 rule.
    norm_ratio : float or None, default 1.5
        A layer's anti-grokking signal counts only while its Frobenius norm is at least
        this multiple of its norm at the first checkpoint. None: no norm gate. 1.5 lies
        between the largest ratio of a signalling layer under weight decay (0.96) and the
        smallest at a weight-decay-0 collapse (1.73) on seeds 0-11; pre-registered as "v4"
        and adopted after scoring on fresh runs (docs/phases.md). 1.0 is the v3 rule.
    patience : int, default 1
        Consecutive checkpoints a rule must hold before its phase is entered.
    use_train_acc : bool, default True
        Require ``train_acc >= train_threshold`` (when the feature is known) to leave
        pre-grokking.
    train_threshold : float, default 0.99
    layers : "auto" or sequence of str, default "auto"
        Layers whose features are used; "auto": every layer whose smaller dimension is at
        least ``min_layer_dim``.
    min_layer_dim : int, default 50
    alpha_scale : float, default 0.25
        Alpha difference that counts as one unit of margin in :meth:`confidence`.

    Attributes
    ----------
    thresholds_ : dict
        The fitted ``alpha_grok``, ``alpha_anti``, ``min_traps``, ``anti_rule``,
        ``norm_ratio``, ``patience`` (after :meth:`fit`; before it the constructor's values
        are used).
    train_agreement_ : float
        Mean per-run agreement with the labels on the runs ``fit`` saw.
    n_runs_ : int
        Number of labelled runs ``fit`` saw.

    Examples
    --------
    >>> feats = {"alpha": [5.0, 4.2, 3.0, 2.6, 1.5], "n_traps": [0, 0, 0, 1, 4],
    ...          "train_acc": [0.6, 1.0, 1.0, 1.0, 1.0]}
    >>> PhaseClassifier().predict(feats).tolist()
    ['pre-grokking', 'pre-grokking', 'grokking', 'grokking', 'anti-grokking']
    """

    def __init__(self, *, causal: bool = False, onset: str = "auto", grok_ratio: float | None = None,
                 shrink_ratio: float | None = 0.85, alpha_grok: float | None = None,
                 alpha_anti: float = 2.0,
                 min_traps: int = 2, anti_rule: str = "either", norm_ratio: float | None = 1.5,
                 patience: int = 1, use_train_acc: bool = True, train_threshold: float = 0.99,
                 layers: str | Sequence[str] = "auto", min_layer_dim: int = 50,
                 alpha_scale: float = 0.25) -> None:
        self.causal = causal
        self.onset = onset
        self.grok_ratio = grok_ratio
        self.shrink_ratio = shrink_ratio
        self.alpha_grok = alpha_grok
        self.alpha_anti = alpha_anti
        self.min_traps = min_traps
        self.anti_rule = anti_rule
        self.norm_ratio = norm_ratio
        self.patience = patience
        self.use_train_acc = use_train_acc
        self.train_threshold = train_threshold
        self.layers = layers
        self.min_layer_dim = min_layer_dim
        self.alpha_scale = alpha_scale

    # -- scikit-learn estimator plumbing ------------------------------------------------
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor parameters as a dict (scikit-learn's contract)."""
        return {name: getattr(self, name) for name in _PARAM_NAMES}

    def set_params(self, **params: Any) -> "PhaseClassifier":
        """Set constructor parameters; returns self. Unknown names raise ValueError."""
        for name, value in params.items():
            if name not in _PARAM_NAMES:
                raise ValueError(f"Invalid parameter {name!r} for PhaseClassifier; valid parameters "
                                 f"are {', '.join(_PARAM_NAMES)}.")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = PhaseClassifier.__init__.__kwdefaults__ or {}
        changed = [f"{k}={v!r}" for k, v in self.get_params().items() if defaults.get(k) != v]
        return f"PhaseClassifier({', '.join(changed)})"

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: a fitted attribute asked for before fit().
        if name.endswith("_") and not name.startswith("__") and name in ("thresholds_", "train_agreement_", "n_runs_"):
            raise NotFittedError(f"This PhaseClassifier is not fitted yet, so it has no {name!r}. Call "
                                 f"fit(trajectories, labels) first, or use predict() with the default rules.")
        raise AttributeError(f"'PhaseClassifier' object has no attribute {name!r}")

    def _validated(self) -> dict[str, Any]:
        """Check the constructor parameters (at use, as scikit-learn does)."""
        p = self.get_params()
        for name in ("causal", "use_train_acc"):
            if not isinstance(p[name], (bool, np.bool_)):
                raise TypeError(f"{name} must be True or False; got {p[name]!r}.")
        for name in ("alpha_grok", "alpha_anti", "alpha_scale"):
            v = p[name]
            if name == "alpha_grok" and v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{name} must be a positive finite number; got {v!r}.")
        if p["onset"] not in _ONSETS:
            raise ValueError(f"onset must be one of {_ONSETS}; got {p['onset']!r}.")
        g = p["grok_ratio"]
        if g is not None and (isinstance(g, bool) or not isinstance(g, numbers.Real) or not (0 < g <= 1)):
            raise ValueError(f"grok_ratio must be None (the onset's calibrated default) or in (0, 1] (the onset "
                             f"series falls as a run groks); got {g!r}.")
        sr = p["shrink_ratio"]
        if sr is not None and (isinstance(sr, bool) or not isinstance(sr, numbers.Real) or not (0 < sr < 1)):
            raise ValueError(f"shrink_ratio must be None (no norm onset) or in (0, 1) (the fraction of its norm at "
                             f"fitting that every layer must have shrunk to); got {sr!r}.")
        if p["alpha_grok"] is not None and p["onset"] == "stable_rank":
            raise ValueError(f"alpha_grok is an absolute mean alpha, so it needs onset='alpha'; got "
                             f"onset={p['onset']!r}. Drop alpha_grok, or set onset='alpha'.")
        if p["alpha_grok"] is not None and p["alpha_anti"] > p["alpha_grok"]:
            raise ValueError(f"alpha_anti must not exceed alpha_grok (alpha falls through the phases); "
                             f"got alpha_anti={p['alpha_anti']!r} > alpha_grok={p['alpha_grok']!r}.")
        r = p["norm_ratio"]
        if r is not None and (isinstance(r, bool) or not isinstance(r, numbers.Real) or not math.isfinite(r)
                              or r <= 0):
            raise ValueError(f"norm_ratio must be None (no norm gate) or a positive finite number such as "
                             f"1.0; got {r!r}.")
        from ._validation import check_positive_int
        check_positive_int(p["min_traps"], "min_traps")
        check_positive_int(p["patience"], "patience")
        check_positive_int(p["min_layer_dim"], "min_layer_dim")
        if p["anti_rule"] not in _ANTI_RULES:
            raise ValueError(f"anti_rule must be one of {_ANTI_RULES}; got {p['anti_rule']!r}.")
        _check_fraction(p["train_threshold"], "train_threshold")
        layers = p["layers"]
        if not (layers == "auto" or (isinstance(layers, (list, tuple))
                                     and layers and all(isinstance(x, str) for x in layers))):
            raise ValueError(f"layers must be 'auto' or a non-empty list of layer names; got {layers!r}.")
        return p

    def _rules(self) -> dict[str, Any]:
        p = self._validated()
        rules = {k: p[k] for k in _FITTED}
        rules["onset"] = p["onset"]
        rules["shrink_ratio"] = p["shrink_ratio"]
        fitted = self.__dict__.get("thresholds_")
        if fitted is not None:
            rules.update(fitted)
        return rules

    # -- features -------------------------------------------------------------------------
    def _trajectory_layers(self, trajectory: Any) -> list[str]:
        names = list(trajectory.layer_names)
        if self.layers != "auto":
            missing = [x for x in self.layers if x not in names]
            if missing:
                raise ValueError(f"layers names {missing} not found in the trajectory; its layers are "
                                 f"{names}.")
            return list(self.layers)
        dims = {name: trajectory.feature("min_dim", name) for name in names}
        keep = [name for name in names if np.nanmax(dims[name]) >= self.min_layer_dim]
        if not keep:
            raise ValueError(f"no layer has a smaller dimension >= min_layer_dim={self.min_layer_dim}; "
                             f"layers: {names}. Lower min_layer_dim or pass layers=[...].")
        return keep

    def features(self, data: Any) -> dict[str, np.ndarray]:
        """The per-checkpoint feature table the rules read, in increasing step order.

        Parameters
        ----------
        data : Trajectory or mapping
            A :class:`~htsr_diag.trajectory.Trajectory`; or a mapping with equal-length 1-D
            ``"alpha"`` (mean over layers) and ``"n_traps"`` (total) sequences, optionally
            ``"train_acc"``, ``"step"`` and the per-layer arrays ``"layer_alpha"``,
            ``"layer_n_traps"``, ``"layer_norm"`` of shape (n_layers, n_checkpoints)
            (without them the anti rule reads ``alpha`` and ``n_traps`` as one layer, and
            the norm gate uses ``"norm"`` if given, else is skipped); or a sequence of
            per-checkpoint mappings with those keys (per-layer values as lists), such as
            :meth:`report_features` returns. With a ``"step"`` column the checkpoints may come
            in any order: every per-checkpoint column (and the layer tables along their
            checkpoint axis) is sorted by step. Steps must be finite and must not repeat.
            Without ``"step"`` the checkpoints are taken in the given order, as steps
            0, 1, ..., n-1. ``"train_acc"``, when given, must hold fractions in [0, 1]
            (NaN where unknown).

        Returns
        -------
        dict
            ``"alpha"``, ``"n_traps"``, ``"train_acc"`` (NaN where unknown), ``"step"`` as
            float arrays of shape (n,), and ``"layer_alpha"``, ``"layer_n_traps"``,
            ``"layer_norm"``, ``"layer_stable_rank"`` of shape (n_layers, n); sorted by step.
        """
        return self._features(data)[0]

    def _features(self, data: Any, train_acc: Any = None) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """(feature table sorted by step, the sorting permutation or None when already in order).

        ``train_acc`` (one value per row of ``data``, in its order) replaces the table's own.
        """
        self._validated()
        if hasattr(data, "feature") and hasattr(data, "layer_names"):
            layers = self._trajectory_layers(data)
            uncentred = [int(s) for s, r in zip(data.steps, data.reports)
                         if getattr(r, "randomize", True) and not getattr(r, "center_traps", False)]
            if uncentred:
                warnings.warn(f"the trajectory's trap counts are of uncentred shuffled weights (first at step "
                              f"{uncentred[0]}); the classifier is calibrated on centred counts, and a layer's "
                              f"non-zero mean adds a spurious trap. Re-run analyze_checkpoints(..., "
                              f"center_traps=True) (its default).", UserWarning, stacklevel=3)
            rules = self._rules()
            if len(data.steps) and int(data.steps[0]) > 0 and rules["norm_ratio"] is not None:
                warnings.warn(f"the trajectory starts at step {int(data.steps[0])}, not at the initialisation "
                              f"(step 0); the norm gate compares each layer's norm with its norm at the first "
                              f"checkpoint, so anti-grokking may be missed or mistimed. Include the step-0 "
                              f"checkpoint (the trainer writes it), or pass norm_ratio=None to switch the "
                              f"gate off.", UserWarning, stacklevel=3)
            alpha = np.vstack([data.feature("alpha", name) for name in layers])
            traps = np.vstack([data.feature("n_traps", name) for name in layers])
            norm = np.vstack([_feature_or_nan(data, "frobenius_norm", name) for name in layers])
            srank = np.vstack([_feature_or_nan(data, "stable_rank", name) for name in layers])
            n = len(data.steps)
            with np.errstate(all="ignore"), _quiet_nanmean():
                table = {"alpha": np.nanmean(alpha, axis=0), "n_traps": np.nansum(traps, axis=0),
                         "train_acc": _check_train_acc(
                             train_acc if train_acc is not None else data.metrics.get("train_acc", np.full(n, np.nan)),
                             "train_acc" if train_acc is not None else "the trajectory's metrics['train_acc']", n),
                         "step": np.asarray(data.steps, dtype=np.float64),
                         "layer_alpha": alpha, "layer_n_traps": traps, "layer_norm": norm,
                         "layer_stable_rank": srank}
            order = _step_order(table["step"])  # a Trajectory sorts itself; kept for a duck-typed one
            if order is not None:
                table = _take(table, order)
            self._warn_if_diverged(table)
            return table, order
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
        alpha = _curve(table["alpha"], "alpha", allow_nan=True)
        n = alpha.size
        if n == 0:
            raise ValueError("the feature table is empty; got 0 checkpoints.")
        out = {"alpha": alpha, "n_traps": _curve(table["n_traps"], "n_traps", n, allow_nan=True)}
        if train_acc is not None:
            out["train_acc"] = _check_train_acc(train_acc, "train_acc", n)
        elif "train_acc" in table:
            out["train_acc"] = _check_train_acc(table["train_acc"], "the feature table's 'train_acc'", n)
        else:
            out["train_acc"] = np.full(n, np.nan)
        out["step"] = (_curve(table["step"], "step", n) if "step" in table
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
            out["layer_norm"] = (_curve(table["norm"], "norm", n, allow_nan=True)[None, :] if "norm" in table
                                 else np.full((1, n), np.nan))
            out["layer_stable_rank"] = (_curve(table["stable_rank"], "stable_rank", n, allow_nan=True)[None, :]
                                        if "stable_rank" in table else np.full((1, n), np.nan))
        order = _step_order(out["step"])
        if order is not None:
            out = _take(out, order)
        self._warn_if_diverged(out)
        return out, order

    def _warn_if_diverged(self, table: Mapping[str, np.ndarray]) -> None:
        """Warn when the training accuracy, once fitted, later falls far below the threshold."""
        tr, steps = table["train_acc"], table["step"]
        with np.errstate(invalid="ignore"):
            fitted = np.flatnonzero(tr >= self.train_threshold)
            if fitted.size == 0:
                return
            lost = np.flatnonzero(tr[fitted[0]:] < self.train_threshold - 0.25)
        if lost.size:
            i = int(fitted[0] + lost[0])
            warnings.warn(f"the training accuracy fell to {tr[i]:.3f} at step {int(steps[i])} after reaching "
                          f"{np.nanmax(tr[:i]):.3f}: the run diverged (a training failure, not anti-grokking). "
                          f"Phase labels from that checkpoint on describe a broken model; label the checkpoints "
                          f"before it, or lower the learning rate and retrain.", UserWarning, stacklevel=3)

    def report_features(self, report: Any, *, train_acc: float | None = None) -> dict[str, Any]:
        """One checkpoint's feature mapping from a :class:`~htsr_diag.analyze.ModelReport`.

        What :class:`~htsr_diag.monitor.Monitor` accumulates for :meth:`predict_step`.

        Returns
        -------
        dict with ``"alpha"``, ``"n_traps"``, ``"train_acc"`` (NaN if not given) and the
        per-layer lists ``"layer_alpha"``, ``"layer_n_traps"``, ``"layer_norm"``.
        """
        from .trajectory import Trajectory  # local: trajectory imports analyze lazily

        traj = Trajectory(steps=np.zeros(1, dtype=np.int64), reports=[report], metrics={}, baselines={})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the Monitor analyses centred; users are told there
            table = self.features(traj)
        out: dict[str, Any] = {"alpha": float(table["alpha"][0]), "n_traps": float(table["n_traps"][0]),
                               "train_acc": float("nan") if train_acc is None else float(train_acc)}
        for key in LAYER_FEATURES:
            out[key] = [float(v) for v in table[key][:, 0]]
        return out

    # -- the rules ------------------------------------------------------------------------
    @staticmethod
    def _layer_rules(table: Mapping[str, np.ndarray], rules: Mapping[str, Any], use_train_acc: bool,
                     train_threshold: float) -> dict[str, np.ndarray]:
        """The rules' parts: fitted, norm onset and grokking per checkpoint; signature and norm gate per layer."""
        rules = _for_table(rules, table)
        a, tr = _onset_series(table, rules["onset"]), table["train_acc"]
        la, lk = table["layer_alpha"], table["layer_n_traps"]
        with np.errstate(invalid="ignore"):
            fitted = _fitted_mask(tr, use_train_acc, train_threshold)
            low = la < rules["alpha_anti"]
            trap = lk >= rules["min_traps"]
            signature = {"both": low & trap, "either": low | trap, "traps": trap, "alpha": low}[rules["anti_rule"]]
            limit = _grok_limit(a, fitted, rules)
            shrunk = _shrunk(table["layer_norm"], fitted, rules.get("shrink_ratio"))
            return {"fitted": fitted, "grokking": fitted & ((a <= limit) | shrunk), "shrunk": shrunk,
                    "layer_signature": signature,
                    "layer_gate": _norm_gate(table["layer_norm"], rules["norm_ratio"])}

    @staticmethod
    def _evidence(table: Mapping[str, np.ndarray], rules: Mapping[str, Any], use_train_acc: bool,
                  train_threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """Per-checkpoint (grokking rule holds, anti-grokking rule holds)."""
        parts = PhaseClassifier._layer_rules(table, rules, use_train_acc, train_threshold)
        anti = parts["fitted"] & (parts["layer_signature"] & parts["layer_gate"]).any(axis=0)
        return parts["grokking"], anti

    def _prepare(self, data: Any, train_acc: Any) -> tuple[dict[str, np.ndarray], np.ndarray | None, np.ndarray]:
        """Feature table (step order), the sorting permutation, and which checkpoints have a feature.

        The input checks of :meth:`predict`, :meth:`confidence`, :meth:`evidence` and
        :meth:`transition_steps`: raises when no checkpoint has a finite feature, warns
        (once per call) about featureless checkpoints and about a missing training accuracy.
        """
        table, order = self._features(data, train_acc)
        known = _has_feature(table)
        if not known.any():
            raise ValueError(f"no finite feature in any analysed layer at any checkpoint: alpha, trap count, norm "
                             f"and stable rank are NaN at all {known.size} checkpoint(s) (steps "
                             f"{_list_steps(table['step'])}), so no phase can be given. Check the weights for NaN "
                             f"(a diverged run) and the analysed layers (layers=..., min_layer_dim=...).")
        if not known.all():
            warnings.warn(f"{int(np.sum(~known))} checkpoint(s) have no finite feature in any analysed layer (steps "
                          f"{_list_steps(table['step'][~known])}): alpha, trap count, norm and stable rank are all "
                          f"NaN. They are labelled {UNKNOWN!r} (confidence NaN) and give no evidence to the rules. "
                          f"Check their weights for NaN (a diverged run).", NoFeatureWarning, stacklevel=3)
        if self.use_train_acc and not np.isfinite(table["train_acc"]).any():
            warnings.warn("no training accuracy at any checkpoint: the classifier cannot tell memorisation from "
                          "grokking without it (with use_train_acc=True a run that has not fitted its training set "
                          "can be labelled grokking). Pass it: predict(traj, train_acc=...) (one fraction per "
                          "checkpoint), Monitor.step(step, train_acc=...), or a 'train_acc' column in the run's "
                          "metrics.jsonl or the feature mapping; or set use_train_acc=False.",
                          MissingTrainAccWarning, stacklevel=3)
        return table, order, known

    def evidence(self, data: Any, *, train_acc: Any = None) -> dict[str, Any]:
        """What each rule reads, per checkpoint and layer: why a label was (or was not) given.

        Parameters
        ----------
        data : Trajectory or feature mapping (see :meth:`features`)
        train_acc : array_like of shape (n,), optional
            Training accuracy per checkpoint (fractions in [0, 1], NaN where unknown), in
            the order of ``data``'s rows; replaces the table's own (see :meth:`predict`).

        Returns
        -------
        dict
            Per-checkpoint arrays in the order of ``data``'s rows (as :meth:`predict`).
            ``"step"`` (n,); ``"layers"``: the analysed layer names (for a Trajectory; else
            ``["layer0", ...]``); ``"has_feature"`` (n,) bool: some analysed layer has a
            finite feature (False: labelled ``"unknown"``, no evidence);
            ``"fitted"`` and ``"grokking"`` (n,) bool: the training set
            counts as fitted / the grokking rule holds; ``"onset"``: the onset series used
            (``"alpha"`` or ``"stable_rank"``; ``"auto"`` resolved); ``"onset_ratio"`` (n,):
            that series (mean alpha, or the smallest layer stable rank) over its value when
            the training set was first fitted (NaN before any checkpoint is fitted), which the
            grokking rule compares with ``"grok_ratio"`` (the ratio in use, None resolved);
            ``"layer_shrink"`` (L, n): each layer's norm over its norm when the training set
            was first fitted, and ``"shrink"`` (n,) the largest of them; ``"shrink_ratio"``:
            the norm onset's ratio (None: off); ``"shrunk"`` (n,) bool: every layer is at or
            below it (the grokking rule holds
            when the onset series or this says so); ``"layer_signature"`` (L, n) bool: the
            layer shows the over-fitting signature (``anti_rule`` on ``alpha_anti`` and
            ``min_traps``), whatever its norm; ``"layer_norm_ratio"`` (L, n): its norm over
            its first norm; ``"layer_gate"`` (L, n) bool: it passes the norm gate;
            ``"anti_grokking"`` (n,) bool: fitted and some layer has both. A signature held
            back by the gate (e.g. under weight decay) shows as signature True, gate False.

        Examples
        --------
        >>> ev = PhaseClassifier(use_train_acc=False).evidence({"alpha": [4.0, 1.5, 1.5], "n_traps": [0, 3, 3],
        ...                                                     "norm": [1.0, 0.5, 2.0]})
        >>> ev["layer_signature"].tolist(), ev["layer_gate"].tolist(), ev["anti_grokking"].tolist()
        ([[False, True, True]], [[False, False, True]], [False, False, True])
        """
        table, order, known = self._prepare(data, train_acc)
        rules = _for_table(self._rules(), table)
        parts = self._layer_rules(table, rules, self.use_train_acc, self.train_threshold)
        norm = table["layer_norm"]
        onset = _onset_series(table, rules["onset"])
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = norm / _first_finite(norm)[:, None]
            onset_ratio = onset / _onset_base(onset, parts["fitted"])
        if hasattr(data, "feature") and hasattr(data, "layer_names"):
            layers = self._trajectory_layers(data)
        else:
            layers = [f"layer{i}" for i in range(norm.shape[0])]
        anti = parts["fitted"] & (parts["layer_signature"] & parts["layer_gate"]).any(axis=0)
        shrink = rules["shrink_ratio"]
        layer_shrink = _shrink_table(norm, parts["fitted"])
        per_checkpoint = {"step": table["step"], "has_feature": known, "fitted": parts["fitted"],
                          "onset_ratio": onset_ratio, "layer_shrink": layer_shrink, "shrink": _largest(layer_shrink),
                          "shrunk": parts["shrunk"], "grokking": parts["grokking"],
                          "layer_signature": parts["layer_signature"], "layer_norm_ratio": ratio,
                          "layer_gate": parts["layer_gate"], "anti_grokking": anti}
        out: dict[str, Any] = {k: _unsort(v, order) for k, v in per_checkpoint.items()}
        out.update({"layers": layers, "onset": rules["onset"], "grok_ratio": float(rules["grok_ratio"]),
                    "shrink_ratio": None if shrink is None else float(shrink)})
        return out

    @staticmethod
    def _segment(grok: np.ndarray, anti: np.ndarray, patience: int, causal: bool) -> np.ndarray:
        """Rank (0, 1, 2) per checkpoint from the evidence, monotone in time.

        Grokking is entered when its rule has held ``patience`` checkpoints in a row, or
        when anti-grokking is entered (a run may skip the grokking label); anti-grokking
        when its rule has. Causal: at the checkpoint completing the streak; otherwise at
        its first checkpoint.
        """
        n = grok.size
        lag = 0 if causal else patience - 1
        t_g = _first_streak(grok, patience)
        t_a = _first_streak(anti, patience)
        s_a = n if t_a is None else t_a - lag
        s_g = min(n if t_g is None else t_g - lag, s_a)
        rank = np.zeros(n, dtype=np.int64)
        rank[s_g:] = 1
        rank[s_a:] = 2
        return rank

    def _rank(self, table: Mapping[str, np.ndarray], causal: bool, known: np.ndarray) -> np.ndarray:
        """Rank (0, 1, 2) per checkpoint of a step-ordered table; -1 where ``known`` is False.

        The rules read the whole table as it is; the phases are then segmented over the
        checkpoints with a feature only, so a featureless one neither starts nor breaks a streak.
        """
        rules = self._rules()
        grok, anti = self._evidence(table, rules, self.use_train_acc, self.train_threshold)
        rank = np.full(known.size, -1, dtype=np.int64)
        rank[known] = self._segment(grok[known], anti[known], rules["patience"], causal)
        return rank

    def predict(self, data: Any, *, train_acc: Any = None) -> np.ndarray:
        """Phase label per checkpoint.

        Parameters
        ----------
        data : Trajectory or feature mapping (see :meth:`features`)
            Checkpoints in any order when they carry steps (a Trajectory always does, and
            is kept in step order; a mapping with a ``"step"`` column is sorted by step
            internally). Repeated or non-finite steps raise ValueError.
        train_acc : array_like of shape (n,), optional
            Training accuracy per checkpoint (fractions in [0, 1], NaN where unknown), in
            the order of ``data``'s rows (``traj.steps`` for a Trajectory); replaces the
            table's own ``train_acc``. Wrong length or values outside [0, 1] raise ValueError.

        Returns
        -------
        ndarray of str, shape (n_checkpoints,)
            One label per row of ``data``, in its order (the rules read the checkpoints in
            step order). A checkpoint with no finite feature in any analysed layer (alpha,
            trap count, norm and stable rank all NaN, e.g. NaN weights) is labelled
            ``"unknown"`` with a :class:`~htsr_diag.exceptions.NoFeatureWarning`, and the
            phases are segmented over the other checkpoints (their labels are unchanged
            with ``patience=1``); when no checkpoint has a feature, ValueError.

        Warns
        -----
        NoFeatureWarning
            Some checkpoints have no finite feature (their steps named).
        MissingTrainAccWarning
            ``use_train_acc`` is True and no checkpoint has a finite training accuracy.

        Examples
        --------
        >>> feats = {"step": [100, 0, 10], "alpha": [2.9, 6.0, 4.0], "n_traps": [0, 0, 0],
        ...          "train_acc": [1.0, 0.5, 1.0]}
        >>> PhaseClassifier().predict(feats).tolist()    # in the order of the rows
        ['grokking', 'pre-grokking', 'pre-grokking']
        """
        table, order, known = self._prepare(data, train_acc)
        return _unsort(_labels(self._rank(table, bool(self.causal), known)), order)

    def _confidence_table(self, table: Mapping[str, np.ndarray], rank: np.ndarray) -> np.ndarray:
        """:meth:`confidence` of a step-ordered table whose ranks are known (-1: unknown, NaN)."""
        rules = _for_table(self._rules(), table)
        a, tr = _onset_series(table, rules["onset"]), table["train_acc"]
        s = float(self.alpha_scale)
        with np.errstate(invalid="ignore"):
            fitted = _fitted_mask(tr, self.use_train_acc, self.train_threshold)
            limit = _grok_limit(a, fitted, rules)
            unit = s if rules["onset"] == "alpha" else 0.05 * _onset_base(a, fitted)
            m_grok = (limit - a) / unit    # > 0: the onset series says "past pre-grokking"
            if rules["shrink_ratio"] is not None:  # or every layer's norm has shrunk far enough (units of 5%)
                worst = _largest(_shrink_table(table["layer_norm"], fitted))
                m_shrink = (rules["shrink_ratio"] - worst) / 0.05
                m_grok = np.where(np.isfinite(m_shrink), np.fmax(m_grok, m_shrink), m_grok)
            m_low = (rules["alpha_anti"] - table["layer_alpha"]) / s    # > 0: the layer's alpha says over-fit
            m_trap = table["layer_n_traps"] - (rules["min_traps"] - 0.5)  # > 0: traps present
            m_layer = {"both": np.minimum(m_low, m_trap), "either": np.maximum(m_low, m_trap),
                       "traps": m_trap, "alpha": m_low}[rules["anti_rule"]]
            gate = _norm_gate(table["layer_norm"], rules["norm_ratio"])
            m_layer = np.where(gate, m_layer, np.minimum(m_layer, -1.0))
            m_anti = np.nanmax(np.where(np.isnan(m_layer), -np.inf, m_layer), axis=0)
            m_anti = np.where(np.isfinite(m_anti), m_anti, np.nan)
            unfitted = self.use_train_acc & (tr < self.train_threshold)
            margin = np.where(rank == 0, np.where(unfitted, 4.0, -np.maximum(m_grok, m_anti)),
                              np.where(rank == 1, np.minimum(m_grok if rules["anti_rule"] != "traps" else np.inf,
                                                             -m_anti), m_anti))
            margin = np.nan_to_num(margin, nan=0.0)
        return np.where(rank >= 0, 1.0 / (1.0 + np.exp(-margin)), np.nan)

    def confidence(self, data: Any, *, train_acc: Any = None) -> np.ndarray:
        """A per-checkpoint confidence in (0, 1) for the predicted label.

        The logistic of the margin by which the current checkpoint's features satisfy the
        rule of its label (alpha distances in units of ``alpha_scale``, stable-rank ones in
        units of 5% of its onset base; trap counts in
        traps beyond ``min_traps - 0.5``; for the anti rule, the best layer, a layer failing
        the norm gate counting at most -1). Below 0.5 means the label is held only because
        phases never go back while this checkpoint's own features point elsewhere. A
        heuristic score, not a calibrated probability. NaN for a checkpoint labelled
        ``"unknown"`` (no finite feature).

        Parameters
        ----------
        data, train_acc
            As for :meth:`predict`.

        Returns
        -------
        ndarray of float, shape (n_checkpoints,)
            In the order of ``data``'s rows, as :meth:`predict`.
        """
        table, order, known = self._prepare(data, train_acc)
        rank = self._rank(table, bool(self.causal), known)
        return _unsort(self._confidence_table(table, rank), order)

    def transition_steps(self, data: Any, *, train_acc: Any = None) -> dict[str, int | None]:
        """The first step labelled grokking and anti-grokking (None if never reached).

        Checkpoints labelled ``"unknown"`` (no finite feature) are ignored.

        Parameters
        ----------
        data, train_acc
            As for :meth:`predict`.

        Returns
        -------
        dict ``{"grokking": step | None, "anti-grokking": step | None}``
        """
        table, _, known = self._prepare(data, train_acc)
        rank = self._rank(table, bool(self.causal), known)
        out: dict[str, int | None] = {}
        for r, phase in ((1, GROK), (2, ANTI)):
            hit = np.flatnonzero(rank == r)
            out[phase] = int(table["step"][hit[0]]) if hit.size else None
        return out

    def predict_step(self, history: Any) -> tuple[str, float]:
        """Causal label and confidence of the *last* checkpoint of ``history``.

        For training-loop use (the Monitor calls it after each analysed checkpoint): only
        the checkpoints in ``history`` are read, whatever ``causal`` is set to. The label
        equals the last label of ``PhaseClassifier(causal=True).predict(history)``.

        Parameters
        ----------
        history : sequence of mappings or mapping of arrays
            The features of every checkpoint so far, oldest first (``"alpha"``,
            ``"n_traps"``, optionally ``"train_acc"``, ``"step"`` and the per-layer lists),
            e.g. a list of :meth:`report_features` results.

        Returns
        -------
        (label, confidence)
            ``("unknown", nan)`` with a :class:`~htsr_diag.exceptions.NoFeatureWarning`
            when the last checkpoint has no finite feature, even when no earlier one has
            any (where :meth:`predict` raises: during training a later checkpoint may have
            features). Only the last checkpoint is warned about, and a missing training
            accuracy is not (the :class:`~htsr_diag.monitor.Monitor` warns about it once).
        """
        table, order = self._features(history)
        known = _has_feature(table)
        last = known.size - 1 if order is None else int(np.argsort(order)[-1])
        if not known[last]:
            warnings.warn(f"the checkpoint at step {table['step'][last]:g} has no finite feature in any analysed "
                          f"layer (alpha, trap count, norm and stable rank are all NaN): its phase is {UNKNOWN!r}. "
                          f"Check the weights for NaN (a diverged run).", NoFeatureWarning, stacklevel=2)
            return UNKNOWN, math.nan
        rank = self._rank(table, True, known)
        return PHASES[int(rank[last])], float(self._confidence_table(table, rank)[last])

    # -- calibration ----------------------------------------------------------------------
    def fit(self, trajectories: Iterable[Any], labels: Iterable[Any], *, params: Sequence[str] | None = None,
            in_time: bool = True) -> "PhaseClassifier":
        """Calibrate the thresholds on labelled runs.

        Exhaustive search over the onset threshold (``grok_ratio``, or ``alpha_grok`` when it
        is set: midpoints of the observed ratios of the onset series to its base, or of the
        mean alphas; ``onset`` and the norm onset's ``shrink_ratio`` are not searched, and
        the norm onset takes part at its set value) and ``alpha_anti``
        (midpoints of the observed layer alphas; at most 120 candidates each, plus the
        current values), ``min_traps``
        (1, 2, 3, 5, 8), the four anti rules, ``norm_ratio`` (None, 1.0, 1.25, 1.5 and the
        current value) and ``patience`` (1, 2, 3), maximising the mean per-run agreement of
        :meth:`predict` (in this classifier's ``causal`` mode) with ``labels``. Ties go to
        the candidate closest to the current values. ``params`` restricts the search to some
        thresholds, the others staying at their current values: a labelled set with one or
        two collapses says little about the anti-grokking thresholds, and
        ``params=["grok_ratio"]`` calibrates the grokking onset only.

        Agreement alone rewards an alarm that fires as late as possible (at the labelled
        collapse, or after it on the next run). With ``in_time=True`` (default) only
        candidates whose *causal* alarm fires no later than the first anti-grokking label of
        every labelled run, and never in a run without one, are considered; if no candidate
        does, the constraint is dropped with a warning.

        Parameters
        ----------
        trajectories : sequence of Trajectory or feature mappings
        labels : sequence of array_like of str
            One label per checkpoint of each trajectory, e.g. from
            :func:`phases_from_accuracy`.
        params : sequence of str, optional
            The thresholds to search, among ``grok_ratio`` (or ``alpha_grok`` when it is
            set), ``alpha_anti``, ``min_traps``, ``anti_rule``, ``norm_ratio``,
            ``patience``. Default: all of them.
        in_time : bool, default True
            Constrain the search to alarms that are in time on every labelled run.

        Returns
        -------
        self
        """
        if not isinstance(in_time, (bool, np.bool_)):
            raise TypeError(f"in_time must be True or False; got {in_time!r}.")
        if params is None:
            search = set(_FITTED)
        else:
            if isinstance(params, str) or not all(isinstance(x, str) for x in params):
                raise TypeError(f"params must be a list of threshold names such as ['grok_ratio']; got {params!r}.")
            unknown = sorted(set(params) - set(_FITTED))
            if unknown or not params:
                raise ValueError(f"params must be a non-empty list drawn from {list(_FITTED)}; got {list(params)!r}.")
            search = set(params)
        params = self._validated()
        trajectories, labels = list(trajectories), list(labels)
        if not trajectories:
            raise ValueError("trajectories must hold at least one labelled run; got none.")
        if len(trajectories) != len(labels):
            raise ValueError(f"trajectories and labels must have the same length; got "
                             f"{len(trajectories)} and {len(labels)}.")
        tables, targets, knowns = [], [], []
        for i, (traj, lab) in enumerate(zip(trajectories, labels)):
            table, order = self._features(traj)
            lab = np.asarray(lab, dtype=str)
            if lab.shape != table["alpha"].shape:
                raise ValueError(f"labels[{i}] must have one label per checkpoint ({table['alpha'].size}); "
                                 f"got shape {lab.shape}.")
            bad = sorted(set(lab.tolist()) - set(PHASES))
            if bad:
                raise ValueError(f"labels[{i}] must only hold {PHASES}; got {bad}.")
            known = _has_feature(table)
            if not known.any():
                raise ValueError(f"trajectories[{i}] has no finite feature in any analysed layer at any checkpoint "
                                 f"(steps {_list_steps(table['step'])}); check its weights for NaN, or leave it out.")
            tables.append(table)
            targets.append(np.array([_RANK[x] for x in (lab if order is None else lab[order])]))
            knowns.append(known)
        absolute = params["alpha_grok"] is not None
        onset_name = "alpha_grok" if absolute else "grok_ratio"
        fitted_masks = [_fitted_mask(t["train_acc"], self.use_train_acc, self.train_threshold) for t in tables]
        resolved = [_for_table(params, t) for t in tables]
        series = [_onset_series(t, r["onset"]) for t, r in zip(tables, resolved)]
        if absolute:
            observed = np.concatenate(series)
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                observed = np.concatenate([x[f] / _onset_base(x, f) for x, f in zip(series, fitted_masks)])
            observed = observed[(observed > 0) & (observed <= 1)]
        current_g = float(params[onset_name] if params[onset_name] is not None else resolved[0]["grok_ratio"])
        grid_g = _grid(observed, current_g) if onset_name in search else np.array([current_g])
        grid_a = (_grid(np.concatenate([t["layer_alpha"].ravel() for t in tables]), params["alpha_anti"])
                  if "alpha_anti" in search else np.array([float(params["alpha_anti"])]))
        ratios: list[float | None] = [None, 1.0, 1.25, 1.5] if "norm_ratio" in search else []
        if params["norm_ratio"] not in ratios:
            ratios.append(None if params["norm_ratio"] is None else float(params["norm_ratio"]))
        traps_grid = (1, 2, 3, 5, 8) if "min_traps" in search else (int(params["min_traps"]),)
        rules_grid = _ANTI_RULES if "anti_rule" in search else (params["anti_rule"],)
        patience_grid = (1, 2, 3) if "patience" in search else (int(params["patience"]),)
        combos = [(a, k, rule, r) for r in ratios for rule in rules_grid for k in traps_grid for a in grid_a]
        combo_a = np.array([c[0] for c in combos])
        combo_k = np.array([c[1] for c in combos], dtype=float)
        combo_r = np.array([_ANTI_RULES.index(c[2]) for c in combos])
        combo_n = np.array([ratios.index(c[3]) for c in combos])
        causal = bool(self.causal)
        current_r = ratios.index(params["norm_ratio"])
        ratio_dist = np.array([0.0 if i == current_r else (1.0 if (r is None) != (params["norm_ratio"] is None)
                                                           else abs(r - params["norm_ratio"]))
                               for i, r in enumerate(ratios)])
        anti_ev = [_anti_grid(t, combo_a, combo_k, combo_r, combo_n, ratios, self.use_train_acc,
                              self.train_threshold)[:, k] for t, k in zip(tables, knowns)]
        # predict() segments over the checkpoints with a feature and labels the others "unknown"
        # (a disagreement): score on those checkpoints, weighted by their share of the run
        targets = [t[k] for t, k in zip(targets, knowns)]
        shares = [float(k.sum()) / k.size for k in knowns]
        best, best_key = None, None
        constrained = bool(in_time)
        if constrained:
            feasible = [np.ones(len(combos), dtype=bool) for _ in patience_grid]
            for target, anti in zip(targets, anti_ev):
                hit = np.flatnonzero(target == 2)
                first_ref = int(hit[0]) if hit.size else target.size
                for pi, p in enumerate(patience_grid):
                    t_a = _first_streak_many(anti, p) if target.size >= p else np.full(len(combos), target.size)
                    feasible[pi] &= (t_a <= first_ref) if hit.size else (t_a >= target.size)
            if not any(f.any() for f in feasible):
                warnings.warn("fit(in_time=True): no candidate flags every labelled collapse in time without a "
                              "false alarm; fitting on agreement alone.", UserWarning, stacklevel=2)
                constrained = False
        grok_ev = []  # onset evidence of every candidate, (G, n) per run; independent of patience
        for a, fit_mask, table, known in zip(series, fitted_masks, tables, knowns):
            limit = grid_g if absolute else grid_g * _onset_base(a, fit_mask)
            shrunk = _shrunk(table["layer_norm"], fit_mask, params["shrink_ratio"])
            with np.errstate(invalid="ignore"):
                grok_ev.append((fit_mask[None, :] & ((a[None, :] <= limit[:, None]) | shrunk[None, :]))[:, known])
        for pi, p in enumerate(patience_grid):
            score = np.zeros((grid_g.size, len(combos)))
            for target, grok, anti, share in zip(targets, grok_ev, anti_ev, shares):
                score += _agreement_grid(target, grok, anti, p, causal) * share
            score /= len(tables)
            if absolute:
                score[grid_g[:, None] < combo_a[None, :]] = -1.0  # alpha_anti must not exceed alpha_grok
            if constrained:
                score[:, ~feasible[pi]] = -2.0
            dist = (np.abs(grid_g - current_g)[:, None] * (1.0 if absolute else 10.0) + np.abs(combo_a - params["alpha_anti"])[None, :]
                    + (np.abs(combo_k - params["min_traps"]) / 4)[None, :]
                    + (combo_r != _ANTI_RULES.index(params["anti_rule"]))[None, :]
                    + ratio_dist[combo_n][None, :] + abs(p - params["patience"]) / 2)
            rounded = np.round(score, 9)
            top = rounded.max()
            cand = np.argwhere(rounded == top)
            i, j = cand[np.argmin(dist[cand[:, 0], cand[:, 1]])]
            key = (float(top), -float(dist[i, j]))
            if best_key is None or key > best_key:
                best_key = key
                best = {"grok_ratio": float(resolved[0]["grok_ratio"]) if absolute else float(grid_g[i]),
                        "alpha_grok": float(grid_g[i]) if absolute else None, "alpha_anti": float(combos[j][0]),
                        "min_traps": int(combos[j][1]), "anti_rule": combos[j][2], "norm_ratio": combos[j][3],
                        "patience": p}
        assert best is not None
        self.thresholds_ = best
        self.train_agreement_ = float(best_key[0])
        self.n_runs_ = len(tables)
        logger.info("PhaseClassifier fitted on %d runs: %s (agreement %.3f)", self.n_runs_,
                    self.thresholds_, self.train_agreement_)
        return self


def _fitted_mask(train_acc: np.ndarray, use_train_acc: bool, train_threshold: float) -> np.ndarray:
    """Per checkpoint: the training set counts as fitted (unknown accuracy counts as fitted)."""
    if not use_train_acc:
        return np.ones(train_acc.size, dtype=bool)
    with np.errstate(invalid="ignore"):
        return np.isnan(train_acc) | (train_acc >= train_threshold)


def _onset_base(alpha: np.ndarray, fitted: np.ndarray) -> float:
    """Mean alpha when the training set was first fitted: the median of that checkpoint and the two before it."""
    hit = np.flatnonzero(fitted)
    if hit.size == 0:
        return math.nan
    window = alpha[max(0, int(hit[0]) - 2): int(hit[0]) + 1]
    window = window[np.isfinite(window)]
    return float(np.median(window)) if window.size else math.nan


def _for_table(rules: Mapping[str, Any], table: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """``rules`` with ``onset="auto"`` and ``grok_ratio=None`` resolved for this feature table.

    "auto": the stable rank when the table has one for some layer (a Trajectory always does),
    else alpha; always alpha when an absolute ``alpha_grok`` is set. ``grok_ratio`` None: the
    calibrated ratio of the resolved onset.
    """
    out = dict(rules)
    if out["onset"] == "auto":
        has_sr = "layer_stable_rank" in table and np.isfinite(np.asarray(table["layer_stable_rank"], float)).any()
        out["onset"] = "stable_rank" if has_sr and out.get("alpha_grok") is None else "alpha"
    if out["grok_ratio"] is None:
        out["grok_ratio"] = _GROK_RATIO[out["onset"]]
    return out


def _onset_series(table: Mapping[str, np.ndarray], onset: str) -> np.ndarray:
    """The per-checkpoint series the grokking rule reads: the mean alpha, or the smallest layer stable rank."""
    if onset == "alpha":
        return table["alpha"]
    sr = np.asarray(table["layer_stable_rank"], dtype=np.float64)
    if not np.isfinite(sr).any():
        raise ValueError("onset='stable_rank' needs each layer's stable rank, and the feature table has none. "
                         "Pass a Trajectory (analyze_checkpoints records it), include 'layer_stable_rank' "
                         "(layers x checkpoints) or 'stable_rank' in the mapping, or use onset='alpha'.")
    with np.errstate(invalid="ignore"), _quiet_nanmean():
        return np.nanmin(sr, axis=0)


def _shrunk(norm: np.ndarray, fitted: np.ndarray, ratio: float | None) -> np.ndarray:
    """Per checkpoint: every layer with a known norm is at most ``ratio`` x its norm when first fitted.

    The norm onset (``shrink_ratio``): weight decay shrinking the weights after the training
    set is fitted. All False when ``ratio`` is None or no layer's norm is known.
    """
    worst = _largest(_shrink_table(norm, fitted))
    if ratio is None:
        return np.zeros(worst.size, dtype=bool)
    with np.errstate(invalid="ignore"):
        return np.isfinite(worst) & (worst <= ratio)


def _shrink_table(norm: np.ndarray, fitted: np.ndarray) -> np.ndarray:
    """Each layer's norm over its norm when the training set was first fitted, (L, n); NaN where unknown."""
    norm = np.asarray(norm, dtype=np.float64)
    base = np.array([_onset_base(row, fitted) for row in norm])
    with np.errstate(invalid="ignore", divide="ignore"):
        return norm / base[:, None]


def _largest(rows: np.ndarray) -> np.ndarray:
    """The largest finite value of each column of an (L, n) array (NaN for a column with none)."""
    with np.errstate(invalid="ignore"), _quiet_nanmean():
        return np.nanmax(rows, axis=0)


def _grok_limit(alpha: np.ndarray, fitted: np.ndarray, rules: Mapping[str, Any]) -> float:
    """The onset value at or below which a fitted checkpoint is grokking (absolute, or relative to the onset base)."""
    if rules.get("alpha_grok") is not None:
        return float(rules["alpha_grok"])
    return float(rules["grok_ratio"]) * _onset_base(alpha, fitted)


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


def _grid(values: np.ndarray, current: float) -> np.ndarray:
    """Candidate thresholds: midpoints of the observed values (at most 120 quantiles), plus ``current``."""
    v = np.unique(values[np.isfinite(values)])
    mids = (v[1:] + v[:-1]) / 2 if v.size > 1 else v
    if mids.size > 120:  # keep the search small: quantiles of the midpoints
        mids = np.quantile(mids, np.linspace(0, 1, 120))
    return np.unique(np.append(mids, current))


def _first_streak_many(evidence: np.ndarray, patience: int) -> np.ndarray:
    """Row-wise :func:`_first_streak` of a (rows, n) boolean array; n where none."""
    n = evidence.shape[1]
    cs = np.concatenate([np.zeros((evidence.shape[0], 1), np.int64), np.cumsum(evidence, axis=1)], axis=1)
    run = cs[:, patience:] - cs[:, :-patience]          # window sums ending at t = patience-1 .. n-1
    hit = run >= patience
    first = np.where(hit.any(axis=1), hit.argmax(axis=1) + patience - 1, n)
    return first


def _anti_grid(table: Mapping[str, np.ndarray], combo_a: np.ndarray, combo_k: np.ndarray, combo_r: np.ndarray,
               combo_n: np.ndarray, ratios: Sequence[float | None], use_train_acc: bool,
               train_threshold: float) -> np.ndarray:
    """Anti-grokking evidence of every (alpha_anti, min_traps, rule, norm_ratio) combo, shape (C, n)."""
    la, lk, tr = table["layer_alpha"], table["layer_n_traps"], table["train_acc"]
    with np.errstate(invalid="ignore"):
        fitted = _fitted_mask(tr, use_train_acc, train_threshold)
        low = la[None, :, :] < combo_a[:, None, None]                  # (C, L, n)
        trap = lk[None, :, :] >= combo_k[:, None, None]
    gates = np.stack([_norm_gate(table["layer_norm"], r) for r in ratios])   # (R, L, n)
    rule = combo_r[:, None, None]
    layer = np.where(rule == 0, low & trap, np.where(rule == 1, low | trap, np.where(rule == 2, trap, low)))
    return fitted[None, :] & (layer & gates[combo_n]).any(axis=1)


def _agreement_grid(target: np.ndarray, grok: np.ndarray, anti: np.ndarray, patience: int,
                    causal: bool) -> np.ndarray:
    """Agreement with ``target`` of every (onset candidate, anti combo) pair, shape (G, C).

    ``grok`` (G, n) and ``anti`` (C, n) are the per-checkpoint evidence of each candidate.
    """
    n = target.size
    if n < patience:
        return np.mean(target == 0) * np.ones((grok.shape[0], anti.shape[0]))
    lag = 0 if causal else patience - 1
    t_g = _first_streak_many(grok, patience)
    t_a = _first_streak_many(anti, patience)
    s_a = np.where(t_a < n, t_a - lag, n)                          # (C,)
    s_g = np.minimum(np.where(t_g < n, t_g - lag, n)[:, None], s_a[None, :])  # (G, C)
    prefix = [np.concatenate([[0], np.cumsum(target == r)]) for r in range(3)]
    total2 = prefix[2][-1]
    return (prefix[0][s_g] + prefix[1][s_a][None, :] - prefix[1][s_g]
            + (total2 - prefix[2][s_a])[None, :]) / n


class _quiet_nanmean:
    """Silence numpy's 'Mean of empty slice' for all-NaN columns (the NaN is the answer)."""

    def __enter__(self) -> None:
        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: Any) -> None:
        self._ctx.__exit__(*exc)
