"""Reference phase labels drawn from accuracy curves (test data needed).

:func:`phases_from_accuracy` labels each checkpoint as a person reads Prakash & Martin
(2025, arXiv 2506.04434) Figure 1. It is the reference used to evaluate and calibrate
:class:`~htsr_diag.phases.PhaseClassifier`, never its input. :func:`phase_agreement`
scores a label sequence against it. :func:`liu_phase` gives the one label of a whole run
in the four phases of Liu et al. (2022, arXiv 2205.10343), for phase diagrams over a grid.
"""

from __future__ import annotations

from typing import Any

import math
import numbers

import numpy as np

from ._common import check_fraction, check_steps, curve
from .labels import ANTI, GROK, PRE, UNKNOWN

__all__ = ["phases_from_accuracy", "phase_agreement", "liu_phase", "LIU_PHASES",
           "COMPREHENSION", "LIU_GROKKING", "MEMORIZATION", "CONFUSION"]

#: Train and test accuracy reach the threshold within ``gap`` steps of each other.
COMPREHENSION = "comprehension"
#: Both reach it, test more than ``gap`` steps after train.
LIU_GROKKING = "grokking"
#: Train reaches it, test never does (within the budget).
MEMORIZATION = "memorization"
#: Train never reaches it (within the budget).
CONFUSION = "confusion"
#: The four run-level phases of Liu et al. (2022), in the order of their Figure's legend.
LIU_PHASES: tuple[str, str, str, str] = (COMPREHENSION, LIU_GROKKING, MEMORIZATION, CONFUSION)


def _accuracy_curves(steps: Any, train_acc: Any, test_acc: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Checked (steps, train_acc, test_acc): equal lengths, accuracies as fractions in [0, 1]."""
    s = check_steps(steps)
    tr = curve(train_acc, "train_acc", s.size)
    te = curve(test_acc, "test_acc", s.size)
    for name, a in (("train_acc", tr), ("test_acc", te)):
        if a.min() < 0 or a.max() > 1:
            raise ValueError(f"{name} must be fractions in [0, 1]; got range [{a.min():g}, {a.max():g}]. "
                             f"Divide percentages by 100.")
    return s, tr, te


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
    s, tr, te = _accuracy_curves(steps, train_acc, test_acc)
    n = s.size
    train_threshold = check_fraction(train_threshold, "train_threshold")
    rise_fraction = check_fraction(rise_fraction, "rise_fraction")
    min_rise = check_fraction(min_rise, "min_rise", open_low=False)
    drop = check_fraction(drop, "drop")

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


def liu_phase(steps: Any, train_acc: Any, test_acc: Any, *, threshold: float = 0.9, gap: float = 1000,
              budget: float | None = None) -> str:
    """The Liu et al. (2022, arXiv 2205.10343) phase of a whole run, from its accuracy curves.

    Only the checkpoints with ``step <= budget`` count (all of them when ``budget`` is None).
    ``t_train`` and ``t_test`` are the first steps at which the training and the test accuracy
    reach ``threshold``. Then:

    - ``"confusion"``: the training accuracy never reaches it (whatever the test accuracy does);
    - ``"memorization"``: the training accuracy reaches it, the test accuracy never does;
    - ``"comprehension"``: both reach it and ``t_test - t_train <= gap`` (exactly ``gap``
      steps apart counts as comprehension, "within ``gap`` steps");
    - ``"grokking"``: both reach it and ``t_test - t_train > gap``.

    A run whose test accuracy reaches the threshold *before* its training accuracy
    (``t_test < t_train``, e.g. with label noise in the training set) is comprehension: test
    accuracy did not lag, which is the sense of the paper's "train and test rise together".
    Liu et al. use ``threshold=0.9`` and ``gap=1000`` steps; the labels depend on how often
    accuracies were logged (the first logged step at or above the threshold is used).

    Parameters
    ----------
    steps : array_like of shape (n,)
        Training steps, strictly increasing.
    train_acc, test_acc : array_like of shape (n,)
        Accuracies in [0, 1] at those steps.
    threshold : float, default 0.9
        Accuracy counted as reached, in (0, 1].
    gap : float, default 1000
        Largest lag, in steps, of the test accuracy behind the training accuracy that is
        still comprehension; >= 0.
    budget : float, optional
        Last step that counts (the step budget of the run); at least ``steps[0]``.

    Returns
    -------
    str
        One of :data:`LIU_PHASES`.

    Examples
    --------
    >>> liu_phase([0, 500, 1000, 5000], [0.1, 0.95, 1.0, 1.0], [0.1, 0.3, 0.4, 0.95])
    'grokking'
    >>> liu_phase([0, 500, 1000, 5000], [0.1, 0.95, 1.0, 1.0], [0.1, 0.3, 0.4, 0.95], budget=1000)
    'memorization'
    """
    s, tr, te = _accuracy_curves(steps, train_acc, test_acc)
    threshold = check_fraction(threshold, "threshold")
    if isinstance(gap, bool) or not isinstance(gap, numbers.Real):
        raise TypeError(f"gap must be a number of steps (real, >= 0); got {gap!r}.")
    if not (math.isfinite(gap) and gap >= 0):
        raise ValueError(f"gap must be a finite number of steps >= 0; got {gap!r}. Liu et al. use 1000.")
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, numbers.Real) or math.isnan(budget):
            raise TypeError(f"budget must be a step (a real number) or None; got {budget!r}.")
        if budget < s[0]:
            raise ValueError(f"budget must be at least the first step ({s[0]:g}) so that a checkpoint counts; "
                             f"got {budget!r}. Pass None for no budget.")
        keep = s <= budget
        s, tr, te = s[keep], tr[keep], te[keep]

    fit_train = np.flatnonzero(tr >= threshold)
    if fit_train.size == 0:
        return CONFUSION
    fit_test = np.flatnonzero(te >= threshold)
    if fit_test.size == 0:
        return MEMORIZATION
    lag = s[fit_test[0]] - s[fit_train[0]]
    return COMPREHENSION if lag <= gap else LIU_GROKKING
