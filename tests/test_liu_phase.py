"""liu_phase: the four run-level phases of Liu et al. (2022) on constructed accuracy curves."""

from __future__ import annotations

import numpy as np
import pytest

import htsr_diag
from htsr_diag import LIU_PHASES, liu_phase
from htsr_diag.phases import LIU_PHASES as PHASES_LIU_PHASES
from htsr_diag.phases import liu_phase as phases_liu_phase

STEPS = np.arange(0, 10_001, 100)  # checkpoints every 100 steps up to 10,000


def ramp(t_reach: float | None, *, low: float = 0.1, high: float = 1.0) -> np.ndarray:
    """An accuracy curve that first reaches 0.9 at step ``t_reach`` (never when None).

    Rises linearly from ``low`` at step 0 to exactly 0.9 at ``t_reach``, then ``high``.
    """
    if t_reach is None:
        return np.minimum(low + STEPS / STEPS[-1] * 0.5, 0.85)
    return np.where(STEPS < t_reach, low + (0.9 - low) * STEPS / max(t_reach, 1) * 0.99, np.maximum(0.9, high))


def test_exports():
    assert liu_phase is phases_liu_phase is htsr_diag.liu_phase
    assert LIU_PHASES is PHASES_LIU_PHASES
    assert LIU_PHASES == ("comprehension", "grokking", "memorization", "confusion")
    assert {"liu_phase", "LIU_PHASES"} <= set(htsr_diag.__all__) & set(htsr_diag.phases.__all__)


@pytest.mark.parametrize("t_train, t_test, expected", [
    (500, 800, "comprehension"),    # 300 steps apart
    (500, 500, "comprehension"),    # together
    (500, 4000, "grokking"),        # 3,500 steps apart
    (500, None, "memorization"),    # test never reaches 0.9
    (None, None, "confusion"),      # train never reaches 0.9
    (None, 3000, "confusion"),      # train never fitted, whatever the test accuracy does
])
def test_each_phase(t_train, t_test, expected):
    assert liu_phase(STEPS, ramp(t_train), ramp(t_test)) == expected


def test_exactly_gap_apart_is_comprehension():
    # "within gap steps": a lag equal to gap is comprehension; one checkpoint more is grokking.
    assert liu_phase(STEPS, ramp(1000), ramp(2000)) == "comprehension"
    assert liu_phase(STEPS, ramp(1000), ramp(2100)) == "grokking"
    assert liu_phase(STEPS, ramp(1000), ramp(2100), gap=1100) == "comprehension"
    assert liu_phase(STEPS, ramp(1000), ramp(1000), gap=0) == "comprehension"
    assert liu_phase(STEPS, ramp(1000), ramp(1100), gap=0) == "grokking"


def test_test_before_train_is_comprehension():
    # Documented choice: test accuracy did not lag behind train, however far ahead it was.
    assert liu_phase(STEPS, ramp(5000), ramp(1000)) == "comprehension"
    assert liu_phase(STEPS, ramp(9000), ramp(100), gap=0) == "comprehension"


def test_budget_cuts_the_run_short():
    tr, te = ramp(500), ramp(4000)
    assert liu_phase(STEPS, tr, te) == "grokking"
    assert liu_phase(STEPS, tr, te, budget=4000) == "grokking"      # budget is inclusive
    assert liu_phase(STEPS, tr, te, budget=3999) == "memorization"  # test reached after the budget
    assert liu_phase(STEPS, tr, te, budget=400) == "confusion"      # train too
    assert liu_phase(STEPS, tr, te, budget=0) == "confusion"        # only the first checkpoint
    assert liu_phase(STEPS, tr, te, budget=1e9) == "grokking"


def test_threshold_is_a_parameter():
    tr = np.r_[np.linspace(0.1, 0.96, 50), np.full(51, 0.96)]
    te = np.r_[np.linspace(0.1, 0.92, 50), np.full(51, 0.92)]
    assert liu_phase(STEPS, tr, te) == "comprehension"
    assert liu_phase(STEPS, tr, te, threshold=0.95) == "memorization"
    assert liu_phase(STEPS, tr, te, threshold=0.99) == "confusion"


def test_accepts_lists_and_a_single_checkpoint():
    assert liu_phase([0, 500, 1000, 5000], [0.1, 0.95, 1.0, 1.0], [0.1, 0.3, 0.4, 0.95]) == "grokking"
    assert liu_phase([7], [1.0], [1.0]) == "comprehension"
    assert liu_phase([7], [1.0], [0.2]) == "memorization"


@pytest.mark.parametrize(("kwargs", "exc", "match"), [
    ({"steps": [3, 2, 4]}, ValueError, "steps must be strictly increasing"),
    ({"steps": []}, ValueError, "steps must not be empty"),
    ({"train_acc": [0.1, 0.2]}, ValueError, r"train_acc must have one value per checkpoint \(3\); got 2"),
    ({"test_acc": [10, 50, 90]}, ValueError, r"test_acc must be fractions in \[0, 1\].*Divide percentages by 100"),
    ({"test_acc": [0.1, np.nan, 0.3]}, ValueError, "test_acc must be finite; got NaN or Inf at index 1"),
    ({"steps": [[1, 2, 3]]}, ValueError, "steps must be 1-D"),
    ({"threshold": 0.0}, ValueError, r"threshold must be in \(0.0, 1.0\]; got 0.0"),
    ({"threshold": 90}, ValueError, r"threshold must be in \(0.0, 1.0\]; got 90"),
    ({"threshold": "high"}, TypeError, "threshold must be a real number"),
    ({"gap": -1}, ValueError, r"gap must be a finite number of steps >= 0; got -1. Liu et al. use 1000"),
    ({"gap": "1e3"}, TypeError, r"gap must be a number of steps \(real, >= 0\); got '1e3'"),
    ({"budget": 0}, ValueError, r"budget must be at least the first step \(1\).*got 0. Pass None"),
    ({"budget": "10k"}, TypeError, r"budget must be a step \(a real number\) or None; got '10k'"),
])
def test_rejects_bad_input(kwargs, exc, match):
    args = {"steps": [1, 2, 3], "train_acc": [0.5, 1.0, 1.0], "test_acc": [0.1, 0.5, 0.9]}
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        liu_phase(args.pop("steps"), args.pop("train_acc"), args.pop("test_acc"), **args)
