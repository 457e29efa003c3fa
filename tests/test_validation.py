"""The shared validation helpers of htsr_diag._validation (scikit-learn's check_scalar / _parameter_constraints style)."""

import numbers
import warnings

import numpy as np
import pytest

from htsr_diag._validation import (UNSET, Interval, Options, check_bool, check_choice, check_scalar, renamed,
                                   validate_params)


def test_check_bool():
    assert check_bool(True, "flag") is True and check_bool(np.bool_(False), "flag") is False
    assert check_bool(None, "flag", allow_none=True) is None
    with pytest.raises(TypeError, match=r"flag must be True or False; got 1\."):
        check_bool(1, "flag")
    with pytest.raises(TypeError, match=r"progress must be None, True or False; got 'yes'\."):
        check_bool("yes", "progress", allow_none=True)


@pytest.mark.parametrize(("value", "bounds", "ok"), [
    (0.0, "both", True), (1.0, "both", True), (0.0, "right", False), (1.0, "right", True),
    (0.0, "left", True), (1.0, "left", False), (0.0, "neither", False), (0.5, "neither", True),
])
def test_check_scalar_boundaries(value, bounds, ok):
    if ok:
        assert check_scalar(value, "x", min_val=0.0, max_val=1.0, include_boundaries=bounds) == value
    else:
        with pytest.raises(ValueError, match=r"x must be in [\[(]0, 1[\])]; got"):
            check_scalar(value, "x", min_val=0.0, max_val=1.0, include_boundaries=bounds)


def test_check_scalar_types_and_messages():
    assert check_scalar(np.int64(3), "n", numbers.Integral, min_val=1) == 3
    assert isinstance(check_scalar(2, "x"), float)  # a real target returns a float
    with pytest.raises(TypeError, match=r"n must be an int; got 2\.5 \(float\)\."):
        check_scalar(2.5, "n", numbers.Integral)
    with pytest.raises(TypeError, match=r"x must be a real number; got True \(bool\)"):
        check_scalar(True, "x")  # a bool is not a number here
    with pytest.raises(ValueError, match=r"x must be a finite number; got inf\. Use 1\."):
        check_scalar(float("inf"), "x", fix="Use 1.")
    with pytest.raises(ValueError, match=r"n must be >= 1; got 0\."):
        check_scalar(0, "n", numbers.Integral, min_val=1)
    with pytest.raises(ValueError, match=r"x must be < 2; got 2\.0\."):
        check_scalar(2.0, "x", max_val=2, include_boundaries="left")
    assert check_scalar(None, "x", allow_none=True) is None


def test_check_choice():
    assert check_choice("a", "mode", ("a", "b")) == "a"
    with pytest.raises(ValueError, match=r"mode must be one of \('a', 'b'\); got 'c'\. Pick one\."):
        check_choice("c", "mode", ("a", "b"), fix="Pick one.")
    with pytest.raises(ValueError, match=r"mode must be one of \(1, 2\); got True"):
        check_choice(True, "mode", (1, 2))  # True == 1, but a bool is not an option
    with pytest.raises(ValueError, match="mode must be one of"):
        check_choice(["a"], "mode", ("a", "b"))


CONSTRAINTS = {"ratio": [None, Interval(numbers.Real, 0, 1, closed="right")], "mode": [Options("x", "y")],
               "flag": ["boolean"], "n": [Interval(numbers.Integral, 1, None)]}


@pytest.mark.parametrize(("params", "exc", "match"), [
    ({"ratio": 0.0}, ValueError, r"ratio must be None or a real number in \(0, 1\]; got 0\.0\. A hint\."),
    ({"ratio": "half"}, TypeError, r"ratio must be None or a real number in \(0, 1\]; got 'half'"),
    ({"mode": "z"}, ValueError, r"mode must be one of \('x', 'y'\); got 'z'\."),
    ({"mode": 3}, TypeError, r"mode must be one of \('x', 'y'\); got 3\."),
    ({"flag": 0}, TypeError, r"flag must be True or False; got 0\."),
    ({"n": 0}, ValueError, r"n must be an int >= 1; got 0\."),
    ({"n": 1.0}, TypeError, r"n must be an int >= 1; got 1\.0\."),
])
def test_validate_params(params, exc, match):
    with pytest.raises(exc, match=match):
        validate_params(params, CONSTRAINTS, {"ratio": "A hint."})


def test_validate_params_accepts_good_values_and_ignores_unknown_names():
    validate_params({"ratio": None, "mode": "y", "flag": np.bool_(True), "n": np.int64(4), "other": object()},
                    CONSTRAINTS)


def test_renamed():
    assert renamed(UNSET, "old", 5, "new", 1, "f") == 5
    with pytest.warns(FutureWarning, match=r"f\(\): old= is renamed new= .* Pass new=3\."):
        assert renamed(3, "old", 1, "new", 1, "f") == 3
    with pytest.raises(TypeError, match=r"f\(\) got both old=3 and new=2"):
        renamed(3, "old", 2, "new", 1, "f")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        assert renamed(2, "old", 2, "new", 1, "f") == 2  # the same value under both names is fine
