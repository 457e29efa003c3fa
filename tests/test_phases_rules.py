"""Tests of the pure rule functions of htsr_diag.phases.rules and of the estimator's plumbing.

The classifier and the pure functions are two doors to the same rules: the expected values
here are the classifier's own outputs on random feature tables, recomputed from the functions.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from htsr_diag.exceptions import NotFittedError
from htsr_diag.phases import PHASES, PhaseClassifier, phases_from_accuracy
from htsr_diag.phases import features, rules
from htsr_diag.phases.labels import rank_labels


def _random_run(rng, n=30, layers=2):
    """A feature table whose rules fire: fitted at checkpoint 3, stable ranks falling, norms growing."""
    return {"step": 100.0 * np.arange(n), "alpha": rng.uniform(2.5, 6, n), "n_traps": np.zeros(n),
            "train_acc": np.r_[np.full(3, 0.5), np.ones(n - 3)],
            "layer_alpha": rng.uniform(1.5, 6, (layers, n)), "layer_n_traps": rng.integers(0, 3, (layers, n)) * 1.0,
            "layer_norm": np.cumprod(rng.uniform(0.97, 1.1, (layers, n)), axis=1),
            "layer_stable_rank": np.cumprod(rng.uniform(0.93, 1.01, (layers, n)), axis=1) * 50}


@pytest.mark.parametrize("params", [{}, {"causal": True}, {"patience": 2}, {"onset": "alpha"},
                                    {"anti_rule": "both", "min_traps": 1, "norm_ratio": None},
                                    {"shrink_ratio": None, "anti_rule": "traps"}])
def test_the_pure_rules_give_the_classifier_outputs(params):
    rng = np.random.default_rng(7)
    for _ in range(5):
        data = _random_run(rng)
        clf = PhaseClassifier(**params)
        table, r = clf.features(data), clf.rules()
        rank = rules.ranks(table, r, causal=clf.causal)
        np.testing.assert_array_equal(rank_labels(rank), clf.predict(data))
        np.testing.assert_array_equal(rules.confidence(table, rank, r), clf.confidence(data))
        grok, anti = rules.evidence(table, r)
        np.testing.assert_array_equal(rules.segment(grok, anti, r["patience"], clf.causal), rank)
        ev, explained = clf.evidence(data), rules.explain(table, r)
        assert list(ev) == ["step", "has_feature", "fitted", "onset_ratio", "layer_shrink", "shrink", "shrunk",
                            "grokking", "layer_signature", "layer_norm_ratio", "layer_gate", "anti_grokking",
                            "layers", "onset", "grok_ratio", "shrink_ratio"]
        for key, value in explained.items():
            np.testing.assert_array_equal(ev[key], value)
        np.testing.assert_array_equal(ev["grokking"], grok)
        np.testing.assert_array_equal(ev["anti_grokking"], anti)


def test_rule_pieces_by_hand():
    # one layer: norms 1, 1.2, 1.6, 0.8; alpha 3, 1.9, 1.9, 1.5; traps 0, 0, 2, 2
    la, lk, ln = np.array([[3.0, 1.9, 1.9, 1.5]]), np.array([[0.0, 0, 2, 2]]), np.array([[1.0, 1.2, 1.6, 0.8]])
    r = {"alpha_anti": 2.0, "min_traps": 2, "anti_rule": "both"}
    assert rules.layer_signature(la, lk, r).tolist() == [[False, False, True, True]]
    assert rules.layer_signature(la, lk, {**r, "anti_rule": "either"}).tolist() == [[False, True, True, True]]
    assert rules.norm_gate(ln, 1.5).tolist() == [[False, False, True, False]]
    assert rules.norm_gate(ln, None).all()
    fitted = rules.fitted_mask(np.array([0.5, 0.995, np.nan, 1.0]), True, 0.99)
    assert fitted.tolist() == [False, True, True, True]  # unknown counts as fitted
    assert rules.fitted_mask(np.array([0.5, 0.6]), False, 0.99).all()
    series = np.array([10.0, 8.0, 9.0, 5.0])
    assert rules.onset_base(series, fitted) == 9.0  # first fitted at index 1: median of 10 and 8
    assert rules.grok_limit(series, fitted, {"grok_ratio": 0.5}) == 4.5
    assert rules.grok_limit(series, fitted, {"grok_ratio": 0.5, "alpha_grok": 3.0}) == 3.0
    np.testing.assert_allclose(rules.norm_shrink(ln, fitted), ln / 1.1)
    assert rules.norm_onset(ln, fitted, 0.8).tolist() == [False, False, False, True]
    assert not rules.norm_onset(ln, fitted, None).any()
    assert rules.first_streak(np.array([1, 0, 1, 1], bool), 2) == 3
    assert rules.first_streak(np.zeros(3, bool), 1) is None


def test_resolve_rules_picks_the_onset_and_its_ratio():
    r = PhaseClassifier().rules()
    with_sr = {"layer_stable_rank": np.ones((1, 3))}
    assert rules.resolve_rules(r, with_sr)["onset"] == "stable_rank"
    assert rules.resolve_rules(r, with_sr)["grok_ratio"] == rules.GROK_RATIO["stable_rank"]
    assert rules.resolve_rules(r, {"layer_stable_rank": np.full((1, 3), np.nan)})["onset"] == "alpha"
    assert rules.resolve_rules({**r, "alpha_grok": 3.0}, with_sr)["onset"] == "alpha"
    once = rules.resolve_rules(r, with_sr)
    assert rules.resolve_rules(once, {}) == once


def test_rules_holds_the_fitted_thresholds_after_fit():
    rng = np.random.default_rng(3)
    runs = [_random_run(rng) for _ in range(3)]
    labels = [phases_from_accuracy(t["step"], t["train_acc"], np.r_[np.full(10, 0.2), np.full(20, 0.9)])
              for t in runs]
    clf = PhaseClassifier()
    assert clf.rules()["grok_ratio"] is None and clf.rules()["alpha_scale"] == 0.25
    clf.fit(runs, labels, params=["grok_ratio"], in_time=False)
    assert clf.rules()["grok_ratio"] == clf.thresholds_["grok_ratio"]
    assert set(clf.thresholds_) == set(rules.FITTED_RULES)
    assert clf.get_params() == PhaseClassifier().get_params()


def test_parameter_names_come_from_the_signature():
    names = PhaseClassifier._get_param_names()
    assert names[:3] == ["causal", "onset", "grok_ratio"] and names[-1] == "alpha_scale" and len(names) == 17
    assert "gate_base" in names
    assert list(PhaseClassifier().get_params()) == names


def test_fitted_attributes_before_and_after_fit():
    clf = PhaseClassifier()
    for name in ("thresholds_", "train_agreement_", "n_runs_"):
        with pytest.raises(NotFittedError, match=f"not fitted yet, so it has no '{name}'"):
            getattr(clf, name)
        assert not hasattr(clf, name)
    with pytest.raises(AttributeError, match="no attribute 'nope_'"):
        clf.nope_
    clf.thresholds_ = {"alpha_anti": 1.5}  # set by hand (as report.py copies it): kept in __dict__
    assert clf.__dict__["thresholds_"] == {"alpha_anti": 1.5} and clf.rules()["alpha_anti"] == 1.5
    copy = pickle.loads(pickle.dumps(clf))
    assert copy.thresholds_ == {"alpha_anti": 1.5}


def test_feature_table_builds_the_same_table_from_rows():
    rng = np.random.default_rng(5)
    data = _random_run(rng, n=6)
    rows = [{k: (list(np.asarray(v)[:, i]) if np.ndim(v) == 2 else float(v[i])) for k, v in data.items()}
            for i in range(6)]
    options = {"layers": "auto", "min_layer_dim": 50, "train_threshold": 0.99, "norm_gate": True}
    a, order_a = features.feature_table(data, **options)
    b, order_b = features.feature_table(rows[::-1], **options)
    assert order_a is None and order_b.tolist() == [5, 4, 3, 2, 1, 0]
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    np.testing.assert_array_equal(features.unsort(b["step"], order_b), data["step"][::-1])
    assert features.has_feature(a).all()
    assert set(PHASES) <= set(rank_labels(np.array([0, 1, 2, -1])))


# ----------------------------------------------------------------------------- gate_base
def _grow_then_signature(norm_at_fit: float, later: float) -> dict:
    """One layer: norm 1.0 at init, ``norm_at_fit`` when the training set is fitted (checkpoints 1-3),
    then ``later``; the over-fitting signature (alpha < 2, 3 traps) from checkpoint 4 on."""
    n = 8
    return {"step": np.arange(n) * 10.0, "train_acc": np.r_[0.3, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
            "alpha": np.r_[6.0, 5.0, 5.0, 5.0, 1.8, 1.8, 1.8, 1.8], "n_traps": np.r_[0, 0, 0, 0, 3, 3, 3, 3],
            "norm": np.r_[1.0, norm_at_fit, norm_at_fit, norm_at_fit, later, later, later, later]}


def test_gate_base_fit_asks_for_growth_after_the_fit():
    # a layer that grew 2.3x while fitting (as a transformer's embeddings do) and then shrinks:
    # the first-checkpoint gate passes it, the fit gate does not
    shrinking = _grow_then_signature(2.3, 2.0)
    assert PhaseClassifier(gate_base="first").predict(shrinking)[-1] == "anti-grokking"
    assert PhaseClassifier(gate_base="fit").predict(shrinking)[-1] != "anti-grokking"
    # MNIST-like: the norm barely moves while fitting, then grows 1.7x with the signature: both fire
    growing = _grow_then_signature(1.01, 1.7)
    for base in ("first", "fit"):
        labels = PhaseClassifier(gate_base=base).predict(growing)
        assert labels[4] == "anti-grokking", base
    ev = PhaseClassifier(gate_base="fit").evidence(growing)
    # the ratio the gate read: the norm over the median of the first fitted checkpoint and the ones before it
    np.testing.assert_allclose(ev["layer_norm_ratio"][0, 4:], 1.7 / np.median([1.0, 1.01]))


def test_gate_base_is_validated():
    with pytest.raises(ValueError, match="gate_base must be one of \\('first', 'fit'\\)"):
        PhaseClassifier(gate_base="init").predict(_grow_then_signature(1.0, 2.0))


# ----------------------------------------------------------------------------- alpha_fit_min
def _two_layers(alpha0, alpha1, traps1=(0, 0, 0, 0, 0, 0)):
    """Two layers, fitted from checkpoint 1; norms grow 2x after the fit (the gate passes)."""
    n = 6
    return {"step": np.arange(n) * 10.0, "train_acc": np.r_[0.2, 1, 1, 1, 1, 1.0],
            "alpha": (np.asarray(alpha0) + np.asarray(alpha1)) / 2, "n_traps": np.asarray(traps1, float),
            "layer_alpha": np.vstack([alpha0, alpha1]).astype(float),
            "layer_n_traps": np.vstack([np.zeros(n), traps1]).astype(float),
            "layer_norm": np.vstack([np.r_[1, 1, 1, 2, 2, 2.0], np.r_[1, 1, 1, 2, 2, 2.0]])}


def test_alpha_fit_min_ignores_layers_heavy_tailed_at_the_fit():
    born_heavy = [1.8, 1.8, 1.8, 1.7, 1.7, 1.7]        # below 2 all along
    random_like = [6.0, 6.0, 6.0, 5.0, 5.0, 5.0]
    table = _two_layers(born_heavy, random_like)
    assert PhaseClassifier(alpha_fit_min=None).predict(table)[-1] == "anti-grokking"
    assert PhaseClassifier(alpha_fit_min=3.0).predict(table)[-1] != "anti-grokking"
    assert PhaseClassifier().predict(table)[-1] != "anti-grokking"   # 3.0 is the default
    # a layer that falls from random-like to alpha < 2 after the fit still signals
    falling = _two_layers(born_heavy, [6.0, 6.0, 6.0, 1.9, 1.8, 1.8])
    assert PhaseClassifier(alpha_fit_min=3.0).predict(falling)[3] == "anti-grokking"
    # and traps still count in the born-heavy layer's neighbour
    trapped = _two_layers(random_like, born_heavy, traps1=(0, 0, 0, 3, 3, 3))
    assert PhaseClassifier(alpha_fit_min=3.0).predict(trapped)[3] == "anti-grokking"
    conf = PhaseClassifier(alpha_fit_min=3.0).confidence(table)
    assert np.all(np.isfinite(conf))


def test_alpha_fit_min_is_validated():
    with pytest.raises(ValueError, match="alpha_fit_min must be None or a real number > 0; got .* a value is an alpha such as 3.0"):
        PhaseClassifier(alpha_fit_min=-1.0).predict(_two_layers([3.0] * 6, [3.0] * 6))
