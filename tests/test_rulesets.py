"""benchmarks/phase_eval/rulesets.py: every rule version is written out in full, and the
library's default PhaseClassifier is its newest version."""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path

import numpy as np
import pytest

from htsr_diag import PhaseClassifier

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "phase_eval" / "rulesets.py"


@pytest.fixture(scope="module")
def rulesets():
    spec = importlib.util.spec_from_file_location("phase_eval_rulesets", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def _params() -> set[str]:
    return {p for p in inspect.signature(PhaseClassifier.__init__).parameters if p not in ("self", "causal")}


def _run(rng, n=30, layers=2):
    """A feature table whose rules fire: fitted at checkpoint 3, stable ranks falling, norms growing."""
    return {"step": 100.0 * np.arange(n), "alpha": rng.uniform(2.5, 6, n), "n_traps": np.zeros(n),
            "train_acc": np.r_[np.full(3, 0.5), np.ones(n - 3)],
            "layer_alpha": rng.uniform(1.5, 6, (layers, n)), "layer_n_traps": rng.integers(0, 3, (layers, n)) * 1.0,
            "layer_norm": np.cumprod(rng.uniform(0.97, 1.1, (layers, n)), axis=1),
            "layer_stable_rank": np.cumprod(rng.uniform(0.93, 1.01, (layers, n)), axis=1) * 50}


def test_every_version_gives_every_parameter(rulesets):
    assert list(rulesets.RULESETS) == ["v2", "v3", "v4", "v5", "v6", "v7"]
    for name, params in rulesets.RULESETS.items():
        assert set(params) == _params(), name
        clf = rulesets.classifier(name, causal=True)
        assert clf.causal is True and all(getattr(clf, k) == v for k, v in params.items())
    with pytest.raises(KeyError, match="unknown rule version 'v1'"):
        rulesets.classifier("v1")


def test_each_version_changes_what_its_commit_says(rulesets):
    r = rulesets.RULESETS

    def diff(a, b):
        return {k for k in r[a] if r[a][k] != r[b][k]}

    assert diff("v2", "v3") == {"min_traps", "anti_rule"}
    assert diff("v3", "v4") == {"norm_ratio"}
    assert diff("v4", "v5") == {"onset", "grok_ratio"}
    assert diff("v5", "v6") == {"shrink_ratio"}
    assert diff("v6", "v7") == {"gate_base", "alpha_fit_min"}


def test_the_default_is_the_current_version(rulesets):
    default = PhaseClassifier()
    current = rulesets.RULESETS[rulesets.CURRENT]
    # the default's onset "auto" / grok_ratio None resolve to the stable rank at 0.85 on features with stable ranks
    assert {k: getattr(default, k) for k in current if k not in ("onset", "grok_ratio")} == \
        {k: v for k, v in current.items() if k not in ("onset", "grok_ratio")}
    rng = np.random.default_rng(3)
    n_anti = n_v2_differs = 0
    for _ in range(10):
        data = _run(rng)
        a = PhaseClassifier(causal=True).predict(data)
        b = rulesets.classifier(rulesets.CURRENT, causal=True).predict(data)
        np.testing.assert_array_equal(a, b)
        n_anti += int(np.sum(a == "anti-grokking"))
        n_v2_differs += not np.array_equal(rulesets.classifier("v2", causal=True).predict(data), a)
    # the tables exercise the anti-grokking rule and tell versions apart, so the comparison can fail
    assert n_anti > 0 and n_v2_differs > 0
