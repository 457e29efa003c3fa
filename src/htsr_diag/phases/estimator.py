"""The weight-only phase classifier: a scikit-learn-style estimator over the rules of :mod:`.rules`."""

from __future__ import annotations

import inspect
import logging
import math
import numbers
import warnings
from typing import Any, Iterable, Sequence

import numpy as np

from ..exceptions import MissingTrainAccWarning, NoFeatureWarning, NotFittedError
from .._validation import Interval, Options, check_bool, validate_params
from ._common import list_steps
from .features import LAYER_FEATURES, feature_table, has_feature, select_layers, unsort
from .fitting import search_thresholds
from .labels import ANTI, GROK, PHASES, RANK, UNKNOWN, rank_labels
from .rules import ANTI_RULES, FITTED_RULES, GATE_BASES, ONSETS, confidence, explain, ranks

__all__ = ["PhaseClassifier"]

logger = logging.getLogger(__name__)


class _LayerNames:
    """Constraint: a non-empty list or tuple of layer names."""

    description = "a non-empty list of layer names"

    def __call__(self, value: Any) -> bool:
        return isinstance(value, (list, tuple)) and len(value) > 0 and all(isinstance(x, str) for x in value)

    def type_ok(self, value: Any) -> bool:
        return isinstance(value, (list, tuple, str))


_layer_names = _LayerNames()

_PARAMETER_HINTS = {
    "grok_ratio": "None takes the onset's calibrated ratio; the onset series falls as a run groks, so a ratio is "
                  "at most 1.",
    "shrink_ratio": "None switches the norm onset off; a ratio is the fraction of its norm at fitting that every "
                    "layer must have shrunk to.",
    "alpha_grok": "None uses grok_ratio; a value is an absolute mean alpha such as 3.45.",
    "alpha_fit_min": "None lets the alpha signal count in every layer; a value is an alpha such as 3.0.",
    "norm_ratio": "None switches the norm gate off; a value is a multiple of the reference norm such as 1.5.",
    "gate_base": "Compare a layer's norm with its first norm, or with its norm when the training set was first "
                 "fitted.",
    "train_threshold": "A training accuracy (a fraction, not a percentage).",
}


def _fitted_attribute(name: str, doc: str) -> property:
    """A fitted attribute: kept in the instance ``__dict__`` under its own name (where
    scikit-learn's ``check_is_fitted`` looks), NotFittedError before :meth:`~PhaseClassifier.fit`."""

    def get(self: "PhaseClassifier") -> Any:
        try:
            return self.__dict__[name]
        except KeyError:
            raise NotFittedError(f"This PhaseClassifier is not fitted yet, so it has no {name!r}. Call "
                                 f"fit(trajectories, labels) first, or use predict() with the default "
                                 f"rules.") from None

    def set(self: "PhaseClassifier", value: Any) -> None:
        self.__dict__[name] = value

    return property(get, set, doc=doc)


class PhaseClassifier:
    """Label checkpoints pre-grokking / grokking / anti-grokking from weight-only features.

    Reads, per checkpoint and per analysed layer, the power-law exponent alpha, the
    correlation-trap count (of the centred shuffled weights, as :func:`analyze_checkpoints`
    computes it by default), the Frobenius norm and the stable rank; optionally the training
    accuracy, which every user has. Never the test accuracy. The analysed layers are by
    default those whose smaller dimension is at least ``min_layer_dim`` (the study's FC1 and
    FC2, not the 10-unit head, whose 10 eigenvalues give no reliable fit).

    Rules (HTSR theory, Prakash & Martin 2025 and Omnigrok; the pure functions of
    :mod:`htsr_diag.phases.rules`; docs/phases.md has their history and measured accuracy).
    A run starts pre-grokking. It is *grokking* once the training set is fitted
    (``train_acc >= train_threshold``, when known) and

    - the onset series has fallen to ``grok_ratio`` times its value when the training set
      was first fitted (the median of that checkpoint and the two before it). The series is
      the smallest stable rank ``||W||_F^2 / ||W||_2^2`` of the analysed layers (learned
      directions separating from the random-like bulk), or the mean alpha for features
      without stable ranks; ``alpha_grok`` sets an absolute alpha threshold instead;
    - or every analysed layer's Frobenius norm is at most ``shrink_ratio`` times its norm at
      fitting (the same median of three): weight decay shrinking the weights while the test
      accuracy rises, before the stable rank moves. Without weight decay the norms grow and
      this never fires.

    It is *anti-grokking* once the training set is fitted and some analysed layer shows the
    over-fitting signature (``anti_rule`` on ``alpha < alpha_anti`` and
    ``n_traps >= min_traps``; the alpha signal only in a layer whose alpha at the fit was at
    least ``alpha_fit_min``) while its Frobenius norm is at least ``norm_ratio`` times its
    norm when the training set was first fitted (``gate_base="fit"``; ``"first"``: its norm
    at the first checkpoint). The norm gate keeps the heavy tails and traps of a layer shrunk
    by weight decay, and the early traps of grokking (at 1.0-1.1 x its norm at the fit), from
    being called a collapse; ``alpha_fit_min`` keeps layers that were heavy-tailed before any
    fit (a small transformer's square matrices and embeddings) from being called over-fit.

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
        ``alpha_grok`` is set. :meth:`evidence` reports the one used.
    grok_ratio : float or None, default None
        Grokking starts when the onset series is at most this fraction of its value when
        the training set was first fitted. None: the onset's calibrated value, 0.85 for the
        stable rank (the middle of the flat range 0.80-0.88 on seeds 0-23) and 0.78 for
        alpha (the study's phase means give 2.9 / 4.0 = 0.73).
    shrink_ratio : float or None, default 0.85
        The norm onset: grokking also starts when every analysed layer's Frobenius norm is
        at most this fraction of its norm when the training set was first fitted (read from
        ``layer_norm``; features without norms never fire it). None: off. Inside the flat
        range 0.84-0.92 on seeds 0-33.
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
        How a layer's trap and alpha signals combine into the over-fitting signature:
        ``"either"`` one of them (traps appear at the onset of the collapse, alpha < 2 a
        little later; either comes first in some runs), ``"both"`` both, ``"traps"`` or
        ``"alpha"`` that one alone.
    alpha_fit_min : float or None, default 3.0
        The alpha signal (``alpha < alpha_anti``) counts only in a layer whose alpha when the
        training set was first fitted (median of that checkpoint and the two before it) was
        at least this: a layer that fell from a random-like spectrum to a heavy tail after
        the fit. A layer already heavy-tailed at the fit (the 128x128 matrices and embeddings
        of a small transformer sit at alpha 1.5-2.5 from the start and generalise) keeps only
        its trap signal. None: every layer's alpha counts. 3.0 is inside the flat range 2.5-4.0
        on the runs it was chosen on (docs/phases.md has the runs and the pre-registered rule
        that judged it).
    norm_ratio : float or None, default 1.5
        A layer's over-fitting signature counts only while its Frobenius norm is at least
        this multiple of its reference norm (``gate_base``). None: no norm gate. 1.5 lies
        between the largest ratio of a signalling layer under weight decay (0.96) and the
        smallest at a weight-decay-0 collapse (1.73) on seeds 0-11.
    gate_base : {"first", "fit"}, default "fit"
        What the norm gate compares a layer's norm with: its norm at the first checkpoint
        (the initialisation, when the sequence starts at step 0), or its norm when the
        training set was first fitted (median of that checkpoint and the two before it;
        needs the training accuracy, else the first checkpoints are used). "fit" asks whether
        the layer kept growing after the fit, whatever the first checkpoint is.
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
        The fitted ``grok_ratio``, ``alpha_grok``, ``alpha_anti``, ``min_traps``,
        ``anti_rule``, ``norm_ratio``, ``patience`` (after :meth:`fit`; before it the
        constructor's values are used, and reading it raises NotFittedError).
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

    #: What each constructor parameter may be (checked at use, as scikit-learn's ``fit`` does);
    #: the constraints of :func:`htsr_diag._validation.validate_params`.
    _parameter_constraints: dict[str, list[Any]] = {
        "causal": ["boolean"],
        "onset": [Options(*ONSETS)],
        "grok_ratio": [None, Interval(numbers.Real, 0, 1, closed="right")],
        "shrink_ratio": [None, Interval(numbers.Real, 0, 1, closed="neither")],
        "alpha_grok": [None, Interval(numbers.Real, 0, None, closed="neither")],
        "alpha_anti": [Interval(numbers.Real, 0, None, closed="neither")],
        "alpha_fit_min": [None, Interval(numbers.Real, 0, None, closed="neither")],
        "min_traps": [Interval(numbers.Integral, 1, None)],
        "anti_rule": [Options(*ANTI_RULES)],
        "norm_ratio": [None, Interval(numbers.Real, 0, None, closed="neither")],
        "gate_base": [Options(*GATE_BASES)],
        "patience": [Interval(numbers.Integral, 1, None)],
        "use_train_acc": ["boolean"],
        "train_threshold": [Interval(numbers.Real, 0, 1, closed="right")],
        "layers": [Options("auto"), _layer_names],
        "min_layer_dim": [Interval(numbers.Integral, 1, None)],
        "alpha_scale": [Interval(numbers.Real, 0, None, closed="neither")],
    }

    thresholds_ = _fitted_attribute("thresholds_", "The fitted rule thresholds (dict).")
    train_agreement_ = _fitted_attribute("train_agreement_", "Mean per-run agreement on the runs fit saw.")
    n_runs_ = _fitted_attribute("n_runs_", "Number of labelled runs fit saw.")

    def __init__(self, *, causal: bool = False, onset: str = "auto", grok_ratio: float | None = None,
                 shrink_ratio: float | None = 0.85, alpha_grok: float | None = None,
                 alpha_anti: float = 2.0, alpha_fit_min: float | None = 3.0,
                 min_traps: int = 2, anti_rule: str = "either", norm_ratio: float | None = 1.5,
                 gate_base: str = "fit",
                 patience: int = 1, use_train_acc: bool = True, train_threshold: float = 0.99,
                 layers: str | Sequence[str] = "auto", min_layer_dim: int = 50,
                 alpha_scale: float = 0.25) -> None:
        self.causal = causal
        self.onset = onset
        self.grok_ratio = grok_ratio
        self.shrink_ratio = shrink_ratio
        self.alpha_grok = alpha_grok
        self.alpha_anti = alpha_anti
        self.alpha_fit_min = alpha_fit_min
        self.min_traps = min_traps
        self.anti_rule = anti_rule
        self.norm_ratio = norm_ratio
        self.gate_base = gate_base
        self.patience = patience
        self.use_train_acc = use_train_acc
        self.train_threshold = train_threshold
        self.layers = layers
        self.min_layer_dim = min_layer_dim
        self.alpha_scale = alpha_scale

    # -- scikit-learn estimator plumbing ------------------------------------------------
    @classmethod
    def _get_param_names(cls) -> list[str]:
        """The constructor's keyword parameters, in signature order (as ``sklearn.base`` reads them)."""
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values() if p.name != "self" and p.kind == p.KEYWORD_ONLY]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor parameters as a dict (scikit-learn's contract)."""
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params: Any) -> "PhaseClassifier":
        """Set constructor parameters; returns self. Unknown names raise ValueError."""
        names = self._get_param_names()
        for name, value in params.items():
            if name not in names:
                raise ValueError(f"Invalid parameter {name!r} for PhaseClassifier; valid parameters "
                                 f"are {', '.join(names)}.")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = PhaseClassifier.__init__.__kwdefaults__ or {}
        changed = [f"{k}={v!r}" for k, v in self.get_params().items() if defaults.get(k) != v]
        return f"PhaseClassifier({', '.join(changed)})"

    def _validated(self) -> dict[str, Any]:
        """Check the constructor parameters (at use, as scikit-learn does)."""
        p = self.get_params()
        validate_params(p, self._parameter_constraints, _PARAMETER_HINTS)
        if p["alpha_grok"] is not None and p["onset"] == "stable_rank":
            raise ValueError(f"alpha_grok is an absolute mean alpha, so it needs onset='alpha'; got "
                             f"onset={p['onset']!r}. Drop alpha_grok, or set onset='alpha'.")
        if p["alpha_grok"] is not None and p["alpha_anti"] > p["alpha_grok"]:
            raise ValueError(f"alpha_anti must not exceed alpha_grok (alpha falls through the phases); "
                             f"got alpha_anti={p['alpha_anti']!r} > alpha_grok={p['alpha_grok']!r}.")
        return p

    def rules(self) -> dict[str, Any]:
        """The rules dict the classifier applies (validated), for the functions of :mod:`htsr_diag.phases.rules`.

        The constructor's values of the rule parameters (``onset``, ``grok_ratio``,
        ``shrink_ratio``, ``alpha_grok``, ``alpha_anti``, ``min_traps``, ``anti_rule``,
        ``norm_ratio``, ``patience``, ``use_train_acc``, ``train_threshold``,
        ``alpha_scale``), with the fitted ``thresholds_`` in place after :meth:`fit`.
        ``onset="auto"`` and ``grok_ratio=None`` are resolved per feature table
        (:func:`~htsr_diag.phases.rules.resolve_rules`).
        """
        p = self._validated()
        rules = {k: p[k] for k in FITTED_RULES}
        for k in ("onset", "shrink_ratio", "gate_base", "alpha_fit_min", "use_train_acc", "train_threshold",
                  "alpha_scale"):
            rules[k] = p[k]
        fitted = self.__dict__.get("thresholds_")
        if fitted is not None:
            rules.update(fitted)
        return rules

    # -- features -------------------------------------------------------------------------
    def _table_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`feature_table` for this classifier (parameters validated)."""
        self._validated()
        return {"layers": self.layers, "min_layer_dim": self.min_layer_dim, "train_threshold": self.train_threshold,
                "norm_gate": self.rules()["norm_ratio"] is not None and self.gate_base == "first"}

    def features(self, data: Any) -> dict[str, np.ndarray]:
        """The per-checkpoint feature table the rules read, in increasing step order.

        Parameters
        ----------
        data : Trajectory or mapping
            A :class:`~htsr_diag.trajectory.Trajectory`; or a mapping with equal-length 1-D
            ``"alpha"`` (mean over layers) and ``"n_traps"`` (total) sequences, optionally
            ``"train_acc"``, ``"step"`` and the per-layer arrays ``"layer_alpha"``,
            ``"layer_n_traps"``, ``"layer_norm"``, ``"layer_stable_rank"`` of shape
            (n_layers, n_checkpoints) (without them the anti rule reads ``alpha`` and
            ``n_traps`` as one layer, and the norm gate uses ``"norm"`` if given, else is
            skipped); or a sequence of per-checkpoint mappings with those keys (per-layer
            values as lists), such as :meth:`report_features` returns. With a ``"step"``
            column the checkpoints may come in any order: every per-checkpoint column (and
            the layer tables along their checkpoint axis) is sorted by step. Steps must be
            finite and must not repeat. Without ``"step"`` the checkpoints are taken in the
            given order, as steps 0, 1, ..., n-1. ``"train_acc"``, when given, must hold
            fractions in [0, 1] (NaN where unknown).

        Returns
        -------
        dict
            ``"alpha"``, ``"n_traps"``, ``"train_acc"`` (NaN where unknown), ``"step"`` as
            float arrays of shape (n,), and ``"layer_alpha"``, ``"layer_n_traps"``,
            ``"layer_norm"``, ``"layer_stable_rank"`` of shape (n_layers, n); sorted by step
            (:func:`~htsr_diag.phases.features.feature_table`).
        """
        return feature_table(data, **self._table_options())[0]

    def report_features(self, report: Any, *, train_acc: float | None = None) -> dict[str, Any]:
        """One checkpoint's feature mapping from a :class:`~htsr_diag.analyze.ModelReport`.

        What :class:`~htsr_diag.monitor.Monitor` accumulates for :meth:`predict_step`.

        Returns
        -------
        dict with ``"alpha"``, ``"n_traps"``, ``"train_acc"`` (NaN if not given) and the
        per-layer lists ``"layer_alpha"``, ``"layer_n_traps"``, ``"layer_norm"``,
        ``"layer_stable_rank"``.
        """
        from ..trajectory import Trajectory  # local: trajectory imports analyze lazily

        traj = Trajectory(steps=np.zeros(1, dtype=np.int64), reports=[report], metrics={}, baselines={})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the Monitor analyses centred; users are told there
            table = self.features(traj)
        out: dict[str, Any] = {"alpha": float(table["alpha"][0]), "n_traps": float(table["n_traps"][0]),
                               "train_acc": float("nan") if train_acc is None else float(train_acc)}
        for key in LAYER_FEATURES:
            out[key] = [float(v) for v in table[key][:, 0]]
        return out

    def analysed_layers(self, trajectory: Any) -> list[str]:
        """The names of the layers whose features this classifier reads from a Trajectory."""
        self._validated()
        return select_layers(trajectory, self.layers, self.min_layer_dim)

    # -- the rules ------------------------------------------------------------------------
    def _prepare(self, data: Any, train_acc: Any) -> tuple[dict[str, np.ndarray], np.ndarray | None, np.ndarray]:
        """Feature table (step order), the sorting permutation, and which checkpoints have a feature.

        The input checks of :meth:`predict`, :meth:`confidence`, :meth:`evidence` and
        :meth:`transition_steps`: raises when no checkpoint has a finite feature, warns
        (once per call) about featureless checkpoints and about a missing training accuracy.
        """
        table, order = feature_table(data, train_acc=train_acc, **self._table_options())
        known = has_feature(table)
        if not known.any():
            raise ValueError(f"no finite feature in any analysed layer at any checkpoint: alpha, trap count, norm "
                             f"and stable rank are NaN at all {known.size} checkpoint(s) (steps "
                             f"{list_steps(table['step'])}), so no phase can be given. Check the weights for NaN "
                             f"(a diverged run) and the analysed layers (layers=..., min_layer_dim=...).")
        if not known.all():
            warnings.warn(f"{int(np.sum(~known))} checkpoint(s) have no finite feature in any analysed layer (steps "
                          f"{list_steps(table['step'][~known])}): alpha, trap count, norm and stable rank are all "
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
            its reference norm (``gate_base``); ``"layer_gate"`` (L, n) bool: it passes the norm gate;
            ``"anti_grokking"`` (n,) bool: fitted and some layer has both. A signature held
            back by the gate (e.g. under weight decay) shows as signature True, gate False.
            (:func:`~htsr_diag.phases.rules.explain` gives the same in step order.)

        Examples
        --------
        >>> ev = PhaseClassifier(use_train_acc=False).evidence({"alpha": [4.0, 1.5, 1.5], "n_traps": [0, 3, 3],
        ...                                                     "norm": [1.0, 0.5, 2.0]})
        >>> ev["layer_signature"].tolist(), ev["layer_gate"].tolist(), ev["anti_grokking"].tolist()
        ([[False, True, True]], [[False, False, True]], [False, False, True])
        """
        table, order, known = self._prepare(data, train_acc)
        explained = explain(table, self.rules(), known)
        if hasattr(data, "feature") and hasattr(data, "layer_names"):
            layers = self.analysed_layers(data)
        else:
            layers = [f"layer{i}" for i in range(table["layer_norm"].shape[0])]
        out: dict[str, Any] = {k: unsort(v, order) for k, v in explained.items() if isinstance(v, np.ndarray)}
        out["layers"] = layers
        out.update({k: v for k, v in explained.items() if not isinstance(v, np.ndarray)})
        return out

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
        return unsort(rank_labels(ranks(table, self.rules(), known, causal=bool(self.causal))), order)

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
        rules = self.rules()
        rank = ranks(table, rules, known, causal=bool(self.causal))
        return unsort(confidence(table, rank, rules), order)

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
        rank = ranks(table, self.rules(), known, causal=bool(self.causal))
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
        table, order = feature_table(history, **self._table_options())
        known = has_feature(table)
        last = known.size - 1 if order is None else int(np.argsort(order)[-1])
        if not known[last]:
            warnings.warn(f"the checkpoint at step {table['step'][last]:g} has no finite feature in any analysed "
                          f"layer (alpha, trap count, norm and stable rank are all NaN): its phase is {UNKNOWN!r}. "
                          f"Check the weights for NaN (a diverged run).", NoFeatureWarning, stacklevel=2)
            return UNKNOWN, math.nan
        rules = self.rules()
        rank = ranks(table, rules, known, causal=True)
        return PHASES[int(rank[last])], float(confidence(table, rank, rules)[last])

    # -- calibration ----------------------------------------------------------------------
    def fit(self, trajectories: Iterable[Any], labels: Iterable[Any], *, params: Sequence[str] | None = None,
            in_time: bool = True) -> "PhaseClassifier":
        """Calibrate the thresholds on labelled runs.

        Exhaustive search (:func:`~htsr_diag.phases.fitting.search_thresholds`) over the
        onset threshold (``grok_ratio``, or ``alpha_grok`` when it is set: midpoints of the
        observed ratios of the onset series to its base, or of the mean alphas; ``onset``
        and the norm onset's ``shrink_ratio`` are not searched, and the norm onset takes
        part at its set value) and ``alpha_anti`` (midpoints of the observed layer alphas;
        at most 120 candidates each, plus the current values), ``min_traps`` (1, 2, 3, 5,
        8), the four anti rules, ``norm_ratio`` (None, 1.0, 1.25, 1.5 and the current value)
        and ``patience`` (1, 2, 3), maximising the mean per-run agreement of :meth:`predict`
        (in this classifier's ``causal`` mode) with ``labels``. Ties go to the candidate
        closest to the current values. ``params`` restricts the search to some thresholds,
        the others staying at their current values: a labelled set with one or two
        collapses says little about the anti-grokking thresholds, and
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
        in_time = check_bool(in_time, "in_time")
        if params is None:
            search = set(FITTED_RULES)
        else:
            if isinstance(params, str) or not all(isinstance(x, str) for x in params):
                raise TypeError(f"params must be a list of threshold names such as ['grok_ratio']; got {params!r}.")
            unknown = sorted(set(params) - set(FITTED_RULES))
            if unknown or not params:
                raise ValueError(f"params must be a non-empty list drawn from {list(FITTED_RULES)}; "
                                 f"got {list(params)!r}.")
            search = set(params)
        current = self._validated()
        trajectories, labels = list(trajectories), list(labels)
        if not trajectories:
            raise ValueError("trajectories must hold at least one labelled run; got none.")
        if len(trajectories) != len(labels):
            raise ValueError(f"trajectories and labels must have the same length; got "
                             f"{len(trajectories)} and {len(labels)}.")
        tables, targets, knowns = [], [], []
        for i, (traj, lab) in enumerate(zip(trajectories, labels)):
            table, order = feature_table(traj, **self._table_options())
            lab = np.asarray(lab, dtype=str)
            if lab.shape != table["alpha"].shape:
                raise ValueError(f"labels[{i}] must have one label per checkpoint ({table['alpha'].size}); "
                                 f"got shape {lab.shape}.")
            bad = sorted(set(lab.tolist()) - set(PHASES))
            if bad:
                raise ValueError(f"labels[{i}] must only hold {PHASES}; got {bad}.")
            known = has_feature(table)
            if not known.any():
                raise ValueError(f"trajectories[{i}] has no finite feature in any analysed layer at any checkpoint "
                                 f"(steps {list_steps(table['step'])}); check its weights for NaN, or leave it out.")
            tables.append(table)
            targets.append(np.array([RANK[x] for x in (lab if order is None else lab[order])]))
            knowns.append(known)
        self.thresholds_, self.train_agreement_ = search_thresholds(
            tables, targets, knowns, current, search=search, causal=bool(self.causal), in_time=bool(in_time))
        self.n_runs_ = len(tables)
        logger.info("PhaseClassifier fitted on %d runs: %s (agreement %.3f)", self.n_runs_,
                    self.thresholds_, self.train_agreement_)
        return self
