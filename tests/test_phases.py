"""Tests of the phase labels from accuracy curves and of the PhaseClassifier."""

from __future__ import annotations

from dataclasses import dataclass

import warnings

import numpy as np
import pytest

from htsr_diag.exceptions import MissingTrainAccWarning, NoFeatureWarning, NotFittedError
from htsr_diag.phases import (
    ANTI,
    GROK,
    PHASES,
    PRE,
    UNKNOWN,
    PhaseClassifier,
    phase_agreement,
    phases_from_accuracy,
)


# ----------------------------------------------------------------------------- constructed curves
def _curves(n=100, fit_at=10, rise=(40, 50), plateau=0.2, peak=0.9, fall_from=None, fall_rate=0.012):
    """Piecewise-linear accuracy curves whose phase boundaries have a closed form."""
    i = np.arange(n)
    steps = 10 * (i + 1)
    train = np.where(i < fit_at, 0.1 + 0.85 * i / fit_at, 1.0)
    r0, r1 = rise
    test = np.where(i < r0, plateau, np.where(i < r1, plateau + (peak - plateau) * (i - r0) / (r1 - r0), peak))
    if fall_from is not None:
        test = np.where(i > fall_from, peak - fall_rate * (i - fall_from), test)
    return steps, train, test


def test_labels_of_a_full_grok_and_collapse_curve():
    steps, train, test = _curves(fall_from=69)
    labels = phases_from_accuracy(steps, train, test)
    # Closed form: base 0.2, peak 0.9 first reached at i=50 (rise ends at r1=50), so the
    # grokking level is 0.2 + 0.2 * 0.7 = 0.34, first reached at i = 40 + ceil(0.14 / 0.07) = 42
    # (0.07 per checkpoint, i=42 gives 0.34 only up to rounding; i=41 gives 0.27 < 0.34 <= 0.41 at i=42...)
    level = 0.2 + 0.2 * 0.7
    i_grok = int(np.flatnonzero(test >= level)[0])
    assert i_grok in (41, 42)  # 0.2 + 0.7 * (i - 40) / 10 >= 0.34  <=>  i >= 42 (41 with rounding up)
    # collapse: 0.9 - 0.012 * (i - 69) <= 0.85  <=>  i - 69 >= 4.17  <=>  i >= 74
    expected = np.array([PRE] * i_grok + [GROK] * (74 - i_grok) + [ANTI] * (100 - 74))
    np.testing.assert_array_equal(labels, expected)


def test_exact_closed_form_boundaries_without_ties():
    # Plateau 0.25, rise 0.25 -> 0.85 over i = 30..40 (0.06 per checkpoint), level 0.25 + 0.2*0.6 = 0.37:
    # 0.25 + 0.06 * 2 = 0.37 is a tie, so use rise_fraction 0.25: level 0.40 -> i - 30 >= 2.5 -> i = 33.
    steps, train, test = _curves(n=60, fit_at=5, rise=(30, 40), plateau=0.25, peak=0.85, fall_from=50,
                                 fall_rate=0.02)
    labels = phases_from_accuracy(steps, train, test, rise_fraction=0.25, drop=0.05)
    # collapse: 0.85 - 0.02 (i - 50) <= 0.80 <=> i >= 52.5 -> 53
    assert labels.tolist() == [PRE] * 33 + [GROK] * (53 - 33) + [ANTI] * 7


def test_no_collapse_run_has_no_anti_grokking():
    steps, train, test = _curves(fall_from=80, fall_rate=0.001)  # loses 0.019 < 0.05 by the end
    labels = phases_from_accuracy(steps, train, test)
    assert ANTI not in labels
    assert labels[-1] == GROK


def test_training_not_fitted_means_pre_grokking_everywhere():
    steps = np.arange(1, 21)
    train = np.linspace(0.1, 0.9, 20)  # never reaches 0.99
    test = np.linspace(0.1, 0.8, 20)
    assert (phases_from_accuracy(steps, train, test) == PRE).all()


def test_no_rise_is_pre_grokking_and_a_collapse_still_counts():
    steps = np.arange(1, 11)
    train = np.ones(10)
    test = np.array([0.3, 0.32, 0.31, 0.33, 0.32, 0.31, 0.30, 0.25, 0.2, 0.2])
    # rise = 0.33 - 0.30 (min of test between fit and peak, i.e. indices 0..3) = 0.03 < min_rise
    labels = phases_from_accuracy(steps, train, test)
    # collapse: first index after the peak (i=3) with test <= 0.33 - 0.05 = 0.28 -> i = 7
    assert labels.tolist() == [PRE] * 7 + [ANTI] * 3


def test_collapse_needs_training_accuracy_to_stay_high():
    steps = np.arange(1, 7)
    train = np.array([1, 1, 1, 0.5, 0.5, 0.5])
    test = np.array([0.2, 0.9, 0.9, 0.6, 0.6, 0.6])
    labels = phases_from_accuracy(steps, train, test)
    assert ANTI not in labels  # the test drop comes with a training drop: divergence, not anti-grokking


def test_labels_are_monotone_after_a_recovery():
    steps = np.arange(1, 8)
    train = np.ones(7)
    test = np.array([0.2, 0.5, 0.9, 0.8, 0.89, 0.7, 0.6])
    labels = phases_from_accuracy(steps, train, test)
    assert labels.tolist() == [PRE, GROK, GROK, ANTI, ANTI, ANTI, ANTI]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"steps": [3, 2, 4]}, "strictly increasing"),
    ({"train_acc": [0.1, 0.2]}, "one value per checkpoint"),
    ({"test_acc": [10, 50, 90]}, r"fractions in \[0, 1\].*percentages"),
    ({"test_acc": [0.1, np.nan, 0.3]}, "must be finite"),
    ({"drop": 0.0}, r"drop must be in \(0"),
    ({"rise_fraction": 1.5}, "rise_fraction must be in"),
    ({"train_threshold": "high"}, "train_threshold must be a real number"),
    ({"steps": [[1, 2, 3]]}, "must be 1-D"),
])
def test_phases_from_accuracy_rejects_bad_input(kwargs, match):
    args = {"steps": [1, 2, 3], "train_acc": [0.5, 1.0, 1.0], "test_acc": [0.1, 0.5, 0.9]}
    args.update(kwargs)
    exc = TypeError if kwargs.get("train_threshold") == "high" else ValueError
    with pytest.raises(exc, match=match):
        phases_from_accuracy(args.pop("steps"), args.pop("train_acc"), args.pop("test_acc"), **args)


def test_phase_agreement():
    assert phase_agreement([PRE, GROK, ANTI, ANTI], [PRE, GROK, GROK, ANTI]) == 0.75
    with pytest.raises(ValueError, match="equal length"):
        phase_agreement([PRE], [PRE, GROK])


# ----------------------------------------------------------------------------- classifier
def _table(alpha, traps, train=None):
    t = {"alpha": np.asarray(alpha, float), "n_traps": np.asarray(traps, float)}
    if train is not None:
        t["train_acc"] = np.asarray(train, float)
    return t


def test_default_rules_follow_the_study_table():
    # The study's phase means (REFERENCES.md, Prakash & Martin Table): mean alpha 4.0 / 2.9 / 1.1,
    # traps 0 / 0 / >0. The training set is fitted at the third checkpoint (onset base: the median
    # of 6.0, 4.2, 4.0 = 4.2); 2.9 / 4.2 = 0.69 <= grok_ratio 0.78, 4.0 / 4.2 is not.
    feats = _table([6.0, 4.2, 4.0, 2.9, 1.1], [0, 0, 0, 0, 8], [0.5, 0.9, 1, 1, 1])
    assert PhaseClassifier().predict(feats).tolist() == [PRE, PRE, PRE, GROK, ANTI]
    # the absolute rule with the study's midpoint gives the same labels
    assert PhaseClassifier(alpha_grok=3.45).predict(feats).tolist() == [PRE, PRE, PRE, GROK, ANTI]


def test_weight_decay_control_traps_without_low_alpha_is_not_a_collapse():
    # The WD 0.01 control has traps (study: FC1 2, FC2 1) but no collapse. Its layers shrink below
    # their initial norm under weight decay, so the norm gate keeps the default rule ("either":
    # alpha < 2 or >= 2 traps) quiet; the v2 rule "both" needs alpha < 2 as well.
    shrinking = _layered([[4.5, 3.0, 2.7, 2.6]], [[0, 0, 3, 3]], [[60.0, 50.0, 45.0, 40.0]], [1, 1, 1, 1])
    assert ANTI not in PhaseClassifier().predict(shrinking)
    feats = _table([4.5, 3.0, 2.7, 2.6], [0, 0, 3, 3], [1, 1, 1, 1])  # no norms known: no gate
    assert PhaseClassifier().predict(feats)[-1] == ANTI
    assert ANTI not in PhaseClassifier(anti_rule="both", min_traps=1).predict(feats)


def test_unfitted_training_set_keeps_pre_grokking():
    feats = _table([3.0, 2.5], [0, 0], [0.5, 0.7])
    assert (PhaseClassifier().predict(feats) == PRE).all()
    assert (PhaseClassifier(use_train_acc=False, alpha_grok=3.45).predict(feats) == GROK).all()
    # relative onset without the training accuracy: the base is the first checkpoint's alpha
    assert PhaseClassifier(use_train_acc=False).predict(_table([3.0, 2.5, 2.3], [0, 0, 0])).tolist() == [PRE, PRE, GROK]


def test_patience_and_causal_mode():
    feats = _table([5, 5, 3, 3, 3, 1.5, 1.5, 1.5], [0, 0, 0, 0, 0, 2, 2, 2], np.ones(8))
    offline = PhaseClassifier(patience=2).predict(feats)
    causal = PhaseClassifier(patience=2, causal=True).predict(feats)
    assert offline.tolist() == [PRE, PRE, GROK, GROK, GROK, ANTI, ANTI, ANTI]
    # causal: a switch is reported at the checkpoint completing the 2-checkpoint streak
    assert causal.tolist() == [PRE, PRE, PRE, GROK, GROK, GROK, ANTI, ANTI]


def test_causal_label_at_t_ignores_the_future():
    rng = np.random.default_rng(0)
    alpha = np.concatenate([rng.uniform(3.5, 6, 10), rng.uniform(2.1, 3.4, 10), rng.uniform(0.8, 1.9, 10)])
    traps = np.concatenate([np.zeros(20), rng.integers(0, 4, 10)])
    clf = PhaseClassifier(causal=True, patience=2)
    full = clf.predict(_table(alpha, traps, np.ones(30)))
    for t in range(1, 31):
        prefix = clf.predict(_table(alpha[:t], traps[:t], np.ones(t)))
        np.testing.assert_array_equal(prefix, full[:t])
        label, conf = clf.predict_step([{"alpha": a, "n_traps": k} for a, k in zip(alpha[:t], traps[:t])])
        assert label == full[t - 1]
        assert 0.0 < conf < 1.0


def test_predict_step_is_causal_even_for_an_offline_classifier():
    clf = PhaseClassifier(patience=3)  # offline would date the switch back 2 checkpoints
    hist = [{"alpha": 5.0, "n_traps": 0}] + [{"alpha": 3.0, "n_traps": 0}] * 2
    assert clf.predict_step(hist)[0] == PRE
    assert clf.predict(_table([5, 3, 3], [0, 0, 0], np.ones(3))).tolist() == [PRE, PRE, PRE]
    assert clf.causal is False


def test_transition_steps_and_confidence():
    feats = _table([5, 4, 3, 2.5, 1.5, 1.0], [0, 0, 0, 0, 1, 5], np.ones(6))
    feats["step"] = [1, 10, 100, 1000, 10000, 100000]
    clf = PhaseClassifier()
    # fitted from the first checkpoint: the onset base is its alpha, 5 -> limit 0.78 * 5 = 3.9
    assert clf.transition_steps(feats) == {GROK: 100, ANTI: 10000}
    assert PhaseClassifier(alpha_grok=3.45).transition_steps(feats) == {GROK: 100, ANTI: 10000}
    v2 = PhaseClassifier(anti_rule="both", min_traps=1)
    conf = v2.confidence(feats)
    # margins in alpha_scale units (0.25): alpha 5 vs the onset limit 3.9 -> 4.4 -> logistic(4.4)
    np.testing.assert_allclose(conf[0], 1 / (1 + np.exp(-(5 - 3.9) / 0.25)))
    np.testing.assert_allclose(PhaseClassifier(alpha_grok=3.45, anti_rule="both", min_traps=1).confidence(feats)[0],
                               1 / (1 + np.exp(-(5 - 3.45) / 0.25)))
    # anti with rule "both": min((2 - 1.0)/0.25, 5 - 0.5) = 4 -> logistic(4)
    np.testing.assert_allclose(conf[-1], 1 / (1 + np.exp(-4.0)))
    # default rule "either" with 2 traps: at step 1 the anti margin is max(-12, 0 - 1.5) = -1.5, so
    # pre-grokking holds by min(4.4, 1.5); at the end max(4, 5 - 1.5) = 4
    d = clf.confidence(feats)
    np.testing.assert_allclose(d[0], 1 / (1 + np.exp(-1.5)))
    np.testing.assert_allclose(d[-1], 1 / (1 + np.exp(-4.0)))
    assert clf.transition_steps(_table([5, 5], [0, 0], [1, 1])) == {GROK: None, ANTI: None}


def test_fit_recovers_thresholds_from_labelled_runs():
    # Runs generated by a known rule: grokking when alpha <= 3.0, anti when traps >= 2 (alone).
    rng = np.random.default_rng(1)
    runs, labels = [], []
    for _ in range(4):
        alpha = np.sort(rng.uniform(2.2, 6.0, 40))[::-1]
        traps = np.zeros(40)
        k0 = int(rng.integers(28, 36))
        traps[k0:] = rng.integers(2, 6, 40 - k0)
        traps[k0 - 3:k0] = 1  # single traps before the collapse: noise the rule must ignore
        lab = np.where(alpha <= 3.0, GROK, PRE).astype(object)
        lab[k0:] = ANTI
        runs.append(_table(alpha, traps, np.ones(40)))
        labels.append(lab.astype(str))
    clf = PhaseClassifier()
    default_acc = np.mean([phase_agreement(clf.predict(r), lab) for r, lab in zip(runs, labels)])
    assert clf.fit(runs, labels) is clf
    assert clf.train_agreement_ == 1.0 > default_acc
    # the trap rule is recovered ("either" with an alpha_anti below every alpha is the same rule)
    assert clf.thresholds_["min_traps"] == 2
    assert clf.thresholds_["anti_rule"] == "traps" or clf.thresholds_["alpha_anti"] < 2.2
    for r, lab in zip(runs, labels):
        np.testing.assert_array_equal(clf.predict(r), lab)
    assert clf.n_runs_ == 4
    assert clf.get_params() == PhaseClassifier().get_params()  # fit never changes the parameters


def test_estimator_contract():
    clf = PhaseClassifier(alpha_grok=3.0, causal=True)
    assert clf.get_params()["alpha_grok"] == 3.0
    assert clf.set_params(alpha_grok=3.2) is clf and clf.alpha_grok == 3.2
    assert "alpha_grok=3.2" in repr(clf) and "causal=True" in repr(clf)
    clone = PhaseClassifier(**clf.get_params())
    assert clone.get_params() == clf.get_params()
    with pytest.raises(NotFittedError, match="not fitted yet.*fit"):
        clf.thresholds_
    assert not hasattr(clf, "train_agreement_")
    with pytest.raises(TypeError):
        PhaseClassifier(3.0)  # keyword-only
    with pytest.raises(ValueError, match="Invalid parameter 'alpha'"):
        clf.set_params(alpha=1)


@pytest.mark.parametrize(("params", "exc", "match"), [
    ({"alpha_grok": -1.0}, ValueError, r"alpha_grok must be None or a real number > 0; got -1.0. None uses"),
    ({"alpha_grok": 2.0, "alpha_anti": 3.0}, ValueError, "alpha_anti must not exceed alpha_grok"),
    ({"anti_rule": "any"}, ValueError, "anti_rule must be one of"),
    ({"patience": 0}, ValueError, "patience must be an int >= 1; got 0"),
    ({"min_traps": 1.5}, TypeError, "min_traps must be an int >= 1; got 1.5"),
    ({"train_threshold": 99.0}, ValueError, r"train_threshold must be a real number in \(0, 1\]; got 99.0. A training"),
    ({"use_train_acc": 1}, TypeError, "use_train_acc must be True or False; got 1"),
    ({"layers": ["fc1", 2]}, ValueError, "layers must be 'auto' or a non-empty list of layer names"),
    ({"layers": 3}, TypeError, "layers must be 'auto' or a non-empty list of layer names; got 3"),
    ({"causal": "yes"}, TypeError, "causal must be True or False"),
    ({"layers": "fc1"}, ValueError, "layers must be 'auto' or a non-empty list"),
])
def test_bad_parameters_raise_at_use(params, exc, match):
    clf = PhaseClassifier(**params)  # __init__ only stores (scikit-learn contract)
    with pytest.raises(exc, match=match):
        clf.predict(_table([3.0], [0]))


def test_bad_features_and_labels():
    clf = PhaseClassifier()
    with pytest.raises(ValueError, match="no 'n_traps' column"):
        clf.predict({"alpha": [3.0]})
    with pytest.raises(TypeError, match="must be a Trajectory, a mapping"):
        clf.predict(42)
    with pytest.raises(ValueError, match="n_traps must have one value per checkpoint"):
        clf.predict({"alpha": [3.0, 2.0], "n_traps": [0]})
    with pytest.raises(ValueError, match=r"labels\[0\] must only hold"):
        clf.fit([_table([3.0, 2.0], [0, 0])], [["pre", "grok"]])
    with pytest.raises(ValueError, match="same length"):
        clf.fit([_table([3.0], [0])], [])
    with pytest.raises(ValueError, match=r"labels\[0\] must have one label per checkpoint"):
        clf.fit([_table([3.0, 2.0], [0, 0])], [[PRE]])


# ----------------------------------------------------------------------------- on a Trajectory
@dataclass(frozen=True)
class _Layer:  # stand-in for analyze.LayerReport (only the fields the classifier reads)
    name: str
    shape: tuple
    alpha: float
    n_traps: int
    frobenius_norm: float = 1.0
    stable_rank: float = 10.0


@dataclass(frozen=True)
class _Report:  # stand-in for analyze.ModelReport
    layers: list
    center_traps: bool = True


def test_classifier_reads_a_trajectory_and_skips_the_small_head():
    from htsr_diag.trajectory import Trajectory

    fc1 = [5.0, 3.0, 1.5]
    fc2 = [3.0, 2.8, 1.0]
    head = [50.0, 50.0, 50.0]  # a 10x200 head's fit would swamp the mean: must be excluded
    norm = [1.0, 1.6, 2.0]  # every layer grows past the default gate (1.5 x its first norm) after step 0
    reports = [_Report([_Layer("fc1", (200, 784), a, 0 if j < 2 else 3, g), _Layer("fc2", (200, 200), b, 0 if j < 2 else 1, g),
                        _Layer("fc3", (10, 200), c, 9, g)]) for j, (a, b, c, g) in enumerate(zip(fc1, fc2, head, norm))]
    traj = Trajectory(steps=[0, 10, 100], reports=reports, metrics={"train_acc": [0.5, 1.0, 1.0]})
    clf = PhaseClassifier(alpha_grok=3.45)
    table = clf.features(traj)
    np.testing.assert_allclose(table["alpha"], [4.0, 2.9, 1.25])  # mean of fc1, fc2
    np.testing.assert_allclose(table["n_traps"], [0, 0, 4])
    assert clf.predict(traj).tolist() == [PRE, GROK, ANTI]
    # only the head (alpha 50, 9 traps): traps alone make it anti-grokking under the default "either"
    # (the gate read against the first checkpoint: 1.6 x at step 10; against the norm at the fit,
    # the median of steps 0 and 10, it is 1.23 x there and 1.54 x at step 100)
    assert PhaseClassifier(layers=["fc3"], gate_base="first").predict(traj).tolist() == [PRE, ANTI, ANTI]
    assert PhaseClassifier(layers=["fc3"]).predict(traj).tolist() == [PRE, PRE, ANTI]
    assert PhaseClassifier(layers=["fc3"], anti_rule="both").predict(traj).tolist() == [PRE, PRE, PRE]
    assert clf.report_features(reports[2], train_acc=1.0) == {
        "alpha": 1.25, "n_traps": 4.0, "train_acc": 1.0, "layer_alpha": [1.5, 1.0], "layer_n_traps": [3.0, 1.0],
        "layer_norm": [2.0, 2.0], "layer_stable_rank": [10.0, 10.0]}
    with pytest.raises(ValueError, match=r"layers names \['fc9'\] not found"):
        PhaseClassifier(layers=["fc9"]).predict(traj)
    assert set(PHASES) == {PRE, GROK, ANTI}


@pytest.mark.parametrize("causal", [False, True])
def test_fit_score_equals_the_agreement_of_its_own_predictions(causal):
    # The vectorised search must score a candidate exactly as predict() + phase_agreement do.
    rng = np.random.default_rng(7)
    runs, labels = [], []
    for _ in range(3):
        n = 30
        alpha = rng.uniform(1.0, 6.0, n)
        traps = rng.integers(0, 4, n).astype(float)
        train = np.where(np.arange(n) < 3, 0.5, 1.0)
        lab = np.asarray(PHASES)[np.sort(rng.integers(0, 3, n))]
        runs.append(_table(alpha, traps, train))
        labels.append(lab)
    clf = PhaseClassifier(causal=causal).fit(runs, labels)
    measured = np.mean([phase_agreement(clf.predict(r), lab) for r, lab in zip(runs, labels)])
    assert clf.train_agreement_ == pytest.approx(measured, abs=1e-9)
    # and no candidate of the default rules scores better than the fitted ones
    default = np.mean([phase_agreement(PhaseClassifier(causal=causal).predict(r), lab)
                       for r, lab in zip(runs, labels)])
    assert clf.train_agreement_ >= default


# ----------------------------------------------------------------------------- per-layer rule, norm gate
def _layered(alpha_l, traps_l, norm_l, train=None):
    """Feature table with per-layer arrays (layers x checkpoints); mean alpha / total traps derived."""
    la, lk, ln = (np.asarray(x, float) for x in (alpha_l, traps_l, norm_l))
    t = {"alpha": la.mean(axis=0), "n_traps": lk.sum(axis=0), "layer_alpha": la, "layer_n_traps": lk,
         "layer_norm": ln}
    if train is not None:
        t["train_acc"] = np.asarray(train, float)
    return t


def test_one_over_fit_layer_is_enough():
    # FC1 alpha 1.8 with 2 traps while FC2 stays at 3.4 (what the fast-preset collapse looks like,
    # docs/phases.md): the mean alpha is 2.6, which the old mean rule never called anti-grokking.
    t = _layered([[6.0, 3.0, 1.8], [6.0, 3.4, 3.4]], [[0, 0, 1], [0, 0, 0]], [[1, 1.2, 1.5], [1, 1, 1]], [1, 1, 1])
    assert PhaseClassifier().predict(t).tolist() == [PRE, GROK, ANTI]
    # the same totals presented as a single pseudo-layer do not trigger (mean alpha 2.6 >= 2, 1 trap)
    assert PhaseClassifier().predict(_table(t["alpha"], t["n_traps"], [1, 1, 1])).tolist() == [PRE, GROK, GROK]


def test_norm_gate_ignores_heavy_tails_of_a_layer_shrunk_by_weight_decay():
    # alpha < 2 and traps in a layer whose norm fell to 40% of its initial value (weight decay 0.1
    # runs): not a collapse by default; the same layer above its initial norm is one.
    alpha, traps, fitted = [[6.0, 3.0, 1.5, 1.4]], [[0, 0, 5, 8]], np.ones(4)
    shrunk = _layered(alpha, traps, [[50.0, 30.0, 20.0, 20.0]], fitted)
    grown = _layered(alpha, traps, [[50.0, 60.0, 80.0, 90.0]], fitted)
    assert ANTI not in PhaseClassifier().predict(shrunk)
    assert PhaseClassifier().predict(grown).tolist() == [PRE, GROK, ANTI, ANTI]
    assert PhaseClassifier(norm_ratio=None).predict(shrunk)[-1] == ANTI
    assert PhaseClassifier(norm_ratio=0.35).predict(shrunk)[-1] == ANTI
    # the gate compares with the first checkpoint only, so it is causal
    clf = PhaseClassifier(causal=True)
    for t in range(1, 5):
        part = _layered([a[:t] for a in alpha], [k[:t] for k in traps], [[50.0, 60.0, 80.0, 90.0][:t]], fitted[:t])
        np.testing.assert_array_equal(clf.predict(part), clf.predict(grown)[:t])


def test_unknown_norms_skip_the_gate():
    t = _layered([[6.0, 3.0, 1.5]], [[0, 0, 3]], [[np.nan, np.nan, np.nan]], [1, 1, 1])
    assert PhaseClassifier().predict(t)[-1] == ANTI
    # a flat table with a "norm" column uses it as the single layer's norm
    flat = _table([6.0, 3.0, 1.5], [0, 0, 3], [1, 1, 1])
    flat["norm"] = [90.0, 60.0, 40.0]
    assert ANTI not in PhaseClassifier().predict(flat)


def test_per_layer_history_for_predict_step():
    hist = [{"alpha": 4.5, "n_traps": 0, "layer_alpha": [6.0, 3.0], "layer_n_traps": [0, 0], "layer_norm": [10, 10]},
            {"alpha": 2.6, "n_traps": 2, "layer_alpha": [1.8, 3.4], "layer_n_traps": [2, 0], "layer_norm": [15, 10]}]
    assert PhaseClassifier().predict_step(hist)[0] == ANTI
    hist[1]["layer_norm"] = [9, 10]
    assert PhaseClassifier().predict_step(hist)[0] == GROK
    with pytest.raises(ValueError, match="layer_norm must have shape"):
        PhaseClassifier().predict({**_layered([[3.0, 2.0]], [[0, 0]], [[1, 1]]), "layer_norm": np.ones((2, 2))})


@pytest.mark.parametrize(("bad", "exc"), [(0.0, ValueError), (-1.0, ValueError), (float("nan"), ValueError),
                                          (True, TypeError), ("1", TypeError)])
def test_bad_norm_ratio(bad, exc):
    with pytest.raises(exc, match="norm_ratio must be None"):
        PhaseClassifier(norm_ratio=bad).predict(_table([3.0], [0]))


def test_fit_in_time_prefers_an_alarm_that_is_not_late():
    # Two labelled collapses. Traps in FC1 rise 1 -> 2 -> 4 as the collapse approaches; the
    # label starts when there are 2 in run A and 4 in run B. Agreement alone picks min_traps=2 or
    # more (late in run A or B); in_time must pick a rule whose causal alarm is never late.
    def run(k_start):
        traps = np.array([0, 0, 0, 0, 1, 2, 2, 4, 4, 4], float)
        alpha = np.array([6, 5, 3, 3, 1.9, 1.9, 1.9, 1.9, 1.9, 1.9])
        lab = np.array([PRE, PRE, GROK, GROK] + [GROK] * 6, dtype=object)
        lab[k_start:] = ANTI
        return _layered([alpha], [traps], [np.linspace(10, 20, 10)], np.ones(10)), lab.astype(str)

    (ta, la), (tb, lb) = run(5), run(7)
    free = PhaseClassifier(causal=True).fit([ta, tb], [la, lb], in_time=False)
    timed = PhaseClassifier(causal=True).fit([ta, tb], [la, lb])
    for clf in (free, timed):
        assert clf.train_agreement_ == pytest.approx(
            np.mean([phase_agreement(clf.predict(t), y) for t, y in ((ta, la), (tb, lb))]), abs=1e-9)
    flags = [timed.transition_steps(t)[ANTI] for t in (ta, tb)]
    assert flags[0] is not None and flags[0] <= 5 and flags[1] is not None and flags[1] <= 7
    assert free.train_agreement_ >= timed.train_agreement_
    late = [free.transition_steps(t)[ANTI] for t in (ta, tb)]
    assert late[0] is None or late[0] > 5 or late[1] is None or late[1] > 7 or free.train_agreement_ == timed.train_agreement_
    with pytest.raises(TypeError, match="in_time must be True or False"):
        PhaseClassifier().fit([ta], [la], in_time="yes")


def test_fit_in_time_falls_back_with_a_warning_when_impossible():
    # Two runs with identical features, one labelled as collapsing at checkpoint 2 and one never:
    # an alarm in time for the first is a false alarm in the second.
    t = _layered([[6.0, 5.0, 5.0, 1.5]], [[0, 0, 0, 3]], [[1, 1, 1, 2]], np.ones(4))
    with pytest.warns(UserWarning, match="no candidate flags every labelled collapse in time"):
        clf = PhaseClassifier(causal=True).fit([t, t], [[PRE, PRE, ANTI, ANTI], [PRE, PRE, GROK, GROK]])
    assert clf.train_agreement_ == pytest.approx(0.75)


def test_trajectory_with_uncentred_traps_warns():
    from htsr_diag.trajectory import Trajectory

    reports = [_Report([_Layer("fc1", (200, 784), 3.0, 0)], center_traps=False)]
    traj = Trajectory(steps=[0], reports=reports, metrics={})
    with pytest.warns(UserWarning, match="uncentred shuffled weights"):
        PhaseClassifier().features(traj)


def test_trajectory_not_starting_at_initialisation_warns_unless_the_gate_is_off():
    from htsr_diag.trajectory import Trajectory

    reports = [_Report([_Layer("fc1", (200, 784), 3.0, 0)]) for _ in range(2)]
    late = Trajectory(steps=[100, 1000], reports=reports, metrics={})
    with pytest.warns(UserWarning, match="starts at step 100, not at the initialisation"):
        PhaseClassifier(gate_base="first").features(late)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PhaseClassifier(norm_ratio=None, gate_base="first").features(late)  # gate off: nothing reads the first norm
        PhaseClassifier(gate_base="first").features(Trajectory(steps=[0, 1000], reports=reports, metrics={}))
        PhaseClassifier().features(late)  # the default gate reads the norm at the fit, not the first checkpoint


def test_fit_params_restricts_the_search():
    rng = np.random.default_rng(1)
    runs, labels = [], []
    for _ in range(3):
        alpha = np.sort(rng.uniform(2.2, 6.0, 40))[::-1]
        traps = np.zeros(40)
        traps[32:] = 3
        lab = np.where(alpha <= 4.0, GROK, PRE).astype(object)
        lab[32:] = ANTI
        runs.append(_table(alpha, traps, np.ones(40)))
        labels.append(lab.astype(str))
    clf = PhaseClassifier(alpha_grok=3.0, anti_rule="traps", min_traps=2).fit(runs, labels, params=["alpha_grok"])
    th = clf.thresholds_
    assert {k: th[k] for k in ("grok_ratio", "alpha_anti", "min_traps", "anti_rule", "norm_ratio", "patience")} == {
        "grok_ratio": 0.78, "alpha_anti": 2.0, "min_traps": 2, "anti_rule": "traps", "norm_ratio": 1.5, "patience": 1}
    assert 3.9 < th["alpha_grok"] < 4.1
    assert clf.train_agreement_ == 1.0  # the onset threshold alone explains these labels
    for bad, exc in ((["alpha"], ValueError), ([], ValueError), ("alpha_grok", TypeError)):
        with pytest.raises(exc, match="params must be"):
            PhaseClassifier().fit(runs, labels, params=bad)


def test_relative_onset_is_scale_free_and_fit_recovers_the_ratio():
    # Runs whose grokking label starts where the mean alpha falls to 70% of its value at fitting
    # time, at three different absolute alpha levels: one grok_ratio explains all of them, no
    # single absolute alpha_grok can.
    runs, labels = [], []
    for level in (4.0, 5.0, 8.0):  # alpha never below 2: no anti-grokking signal
        alpha = level * np.linspace(1.0, 0.5, 30)
        train = np.where(np.arange(30) < 4, 0.5, 1.0)
        base = np.median(alpha[2:5])
        lab = np.where((train >= 0.99) & (alpha <= 0.7 * base), GROK, PRE)
        runs.append(_table(alpha, np.zeros(30), train))
        labels.append(lab)
    rel = PhaseClassifier().fit(runs, labels, params=["grok_ratio"])
    assert rel.train_agreement_ == 1.0 and 0.6 < rel.thresholds_["grok_ratio"] <= 0.71
    ab = PhaseClassifier(alpha_grok=3.0).fit(runs, labels, params=["alpha_grok"])
    assert ab.train_agreement_ < 1.0
    with pytest.raises(ValueError, match=r"grok_ratio must be None or a real number in \(0, 1\]; got .*None takes the onset's calibrated ratio"):
        PhaseClassifier(grok_ratio=1.5).predict(runs[0])


def test_stable_rank_onset_reads_the_smaller_layer_stable_rank():
    # Two layers; the onset base is the median of the smaller stable rank at the first fitted
    # checkpoint (index 2) and the two before it: median(50, 49, 48) = 49. 0.85 x 49 = 41.65, so
    # checkpoint 4 (min 41.0) is the first grokking one; the mean alpha (flat, 5.0) never
    # crosses v4's alpha rule, so onset="alpha" keeps the run pre-grokking throughout; at grok_ratio
    # 0.92 (limit 45.08) checkpoint 3 (45.0) is grokking too.
    n = 7
    table = {"alpha": np.full(n, 5.0), "n_traps": np.zeros(n), "train_acc": [0.5, 0.9, 1, 1, 1, 1, 1],
             "layer_alpha": np.full((2, n), 5.0), "layer_n_traps": np.zeros((2, n)),
             "layer_stable_rank": np.array([[50.0, 49.0, 48.0, 45.0, 41.0, 30.0, 20.0],
                                            [60.0, 60.0, 60.0, 60.0, 60.0, 60.0, 60.0]])}
    sr = PhaseClassifier(onset="stable_rank")
    assert sr.evidence(table)["onset"] == "stable_rank"
    assert PhaseClassifier(onset="alpha").evidence(table)["onset"] == "alpha"
    assert PhaseClassifier().evidence(table)["onset"] == "stable_rank"  # the default "auto", stable ranks known
    assert sr.evidence(table)["grok_ratio"] == 0.85
    assert PhaseClassifier(onset="alpha").evidence(table)["grok_ratio"] == 0.78
    assert sr.predict(table).tolist() == [PRE] * 4 + [GROK] * 3
    assert PhaseClassifier(onset="stable_rank", grok_ratio=0.92).predict(table).tolist() == [PRE] * 3 + [GROK] * 4
    assert PhaseClassifier(onset="alpha").predict(table).tolist() == [PRE] * n
    ev = sr.evidence(table)
    np.testing.assert_allclose(ev["onset_ratio"], [50 / 49, 1.0, 48 / 49, 45 / 49, 41 / 49, 30 / 49, 20 / 49])
    conf = sr.confidence(table)
    assert conf[4] > 0.5 and conf[3] > 0.5 and conf[6] > conf[4]  # 45/49 is 1.4 units of 5% above the limit
    # fit recovers a ratio between the last pre-grokking and the first grokking checkpoint
    lab = np.array(sr.predict(table))
    fitted = PhaseClassifier(onset="stable_rank", grok_ratio=0.7).fit([table], [lab], params=["grok_ratio"])
    assert fitted.train_agreement_ == 1.0 and 41 / 49 <= fitted.thresholds_["grok_ratio"] < 45 / 49
    # a 1-D "stable_rank" column is read as one layer
    one = {k: table[k] for k in ("alpha", "n_traps", "train_acc")} | {"stable_rank": table["layer_stable_rank"][0]}
    assert sr.predict(one).tolist() == [PRE] * 4 + [GROK] * 3


def test_auto_onset_uses_the_stable_rank_when_the_features_have_it():
    n = 7
    with_sr = {"alpha": np.full(n, 5.0), "n_traps": np.zeros(n), "train_acc": [0.5, 0.9, 1, 1, 1, 1, 1],
               "stable_rank": [50.0, 49.0, 48.0, 45.0, 41.0, 30.0, 20.0]}
    alpha_only = {k: with_sr[k] for k in ("alpha", "n_traps", "train_acc")}
    auto = PhaseClassifier(onset="auto")
    assert auto.evidence(with_sr)["onset"] == "stable_rank"
    assert auto.predict(with_sr).tolist() == PhaseClassifier(onset="stable_rank").predict(with_sr).tolist()
    assert auto.evidence(alpha_only)["onset"] == "alpha"
    assert auto.predict(alpha_only).tolist() == PhaseClassifier(onset="alpha").predict(alpha_only).tolist()
    # an absolute alpha threshold means the alpha onset, whatever else the table has
    assert PhaseClassifier(onset="auto", alpha_grok=3.45).evidence(with_sr)["onset"] == "alpha"
    # fit under "auto" calibrates the ratio of the onset it resolves to
    lab = PhaseClassifier(onset="stable_rank").predict(with_sr)
    fitted = PhaseClassifier(onset="auto").fit([with_sr], [lab], params=["grok_ratio"])
    assert fitted.train_agreement_ == 1.0 and 41 / 49 <= fitted.thresholds_["grok_ratio"] < 45 / 49


def test_stable_rank_onset_errors_name_the_fix():
    feats = _table([6.0, 4.2, 4.0, 2.9, 1.1], [0, 0, 0, 0, 8], [0.5, 0.9, 1, 1, 1])
    with pytest.raises(ValueError, match=r"onset='stable_rank' needs each layer's stable rank.*or use onset='alpha'"):
        PhaseClassifier(onset="stable_rank").predict(feats)
    with pytest.raises(ValueError, match=r"onset must be one of \('auto', 'alpha', 'stable_rank'\); got 'sr'"):
        PhaseClassifier(onset="sr").predict(feats)
    with pytest.raises(ValueError, match=r"alpha_grok is an absolute mean alpha, so it needs onset='alpha'"):
        PhaseClassifier(onset="stable_rank", alpha_grok=3.45).predict(feats)


def test_norm_onset_fires_when_every_layer_has_shrunk():
    # Two layers, fitted from checkpoint 2. Each layer's base is the median of its norm at
    # checkpoints 0-2: fc1 median(1.00, 0.98, 0.96) = 0.98, fc2 median(2.0, 2.0, 2.0) = 2.0.
    # fc1 is at <= 0.85 x 0.98 = 0.833 from checkpoint 4 (0.80), fc2 at <= 1.7 only from
    # checkpoint 5 (1.6): the rule needs every layer, so checkpoint 5 is the first grokking one.
    # The stable ranks stay flat (the stable-rank onset never fires) and alpha stays at 5.
    n = 7
    table = {"alpha": np.full(n, 5.0), "n_traps": np.zeros(n), "train_acc": [0.5, 0.9, 1, 1, 1, 1, 1],
             "layer_alpha": np.full((2, n), 5.0), "layer_n_traps": np.zeros((2, n)),
             "layer_stable_rank": np.full((2, n), 50.0),
             "layer_norm": np.array([[1.00, 0.98, 0.96, 0.90, 0.80, 0.75, 0.70],
                                     [2.00, 2.00, 2.00, 1.90, 1.80, 1.60, 1.50]])}
    assert PhaseClassifier(shrink_ratio=None).predict(table).tolist() == [PRE] * n  # off: the v5 rule
    on = PhaseClassifier(shrink_ratio=0.85)
    assert on.predict(table).tolist() == [PRE] * 5 + [GROK] * 2
    assert PhaseClassifier().predict(table).tolist() == [PRE] * 5 + [GROK] * 2  # the default (v6)
    assert PhaseClassifier(shrink_ratio=0.7).predict(table).tolist() == [PRE] * n  # fc2 never at 0.7 x
    ev = on.evidence(table)
    np.testing.assert_allclose(ev["layer_shrink"][:, 5], [0.75 / 0.98, 1.6 / 2.0])
    assert ev["shrink_ratio"] == 0.85 and ev["shrunk"].tolist() == [False] * 5 + [True] * 2
    assert ev["grokking"].tolist() == ev["shrunk"].tolist()  # the stable rank never fires here
    assert PhaseClassifier(shrink_ratio=None).evidence(table)["shrink_ratio"] is None
    assert not PhaseClassifier(shrink_ratio=None).evidence(table)["shrunk"].any()
    conf = on.confidence(table)
    assert conf[5] > 0.5 and conf[6] > conf[5]  # the margin grows as the norms keep shrinking
    # shrinking before the training set is fitted is not evidence: fitted only at checkpoint 6,
    # the base is then the median of checkpoints 4-6 (fc1 0.75, fc2 1.6), and neither layer is
    # at 0.85 x that
    late_fit = dict(table, train_acc=[0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 1.0])
    assert on.predict(late_fit).tolist() == [PRE] * n
    # a growing norm (no weight decay) never fires it, and unknown norms are no evidence
    grow = dict(table, layer_norm=np.cumprod(np.full((2, n), 1.05), axis=1))
    assert on.predict(grow).tolist() == [PRE] * n
    assert on.predict({k: v for k, v in table.items() if k != "layer_norm"}).tolist() == [PRE] * n
    # fit keeps the norm onset while it calibrates the stable-rank ratio
    lab = on.predict(table)
    assert PhaseClassifier(shrink_ratio=0.85).fit([table], [lab], params=["grok_ratio"]).train_agreement_ == 1.0
    assert PhaseClassifier(shrink_ratio=None).fit([table], [lab], params=["grok_ratio"]).train_agreement_ < 1.0


@pytest.mark.parametrize(("bad", "exc"), [(1.0, ValueError), (0.0, ValueError), (-0.5, ValueError), (1.2, ValueError),
                                          (True, TypeError), ("0.85", TypeError), (float("nan"), ValueError)])
def test_shrink_ratio_must_be_a_fraction(bad, exc):
    with pytest.raises(exc, match=r"shrink_ratio must be None or a real number in \(0, 1\); got .*None switches the norm onset off"):
        PhaseClassifier(shrink_ratio=bad).predict(_table([3.0], [0]))


def test_a_diverged_run_warns_but_a_brief_dip_does_not():
    alpha = [6.0, 4.0, 3.0, 3.0]
    diverged = _table(alpha, [0, 0, 0, 0], [0.5, 1.0, 1.0, 0.1])  # fitted, then the loss blew up
    with pytest.warns(UserWarning, match=r"fell to 0.100 at step 3 after reaching 1.000: the run diverged"):
        PhaseClassifier().predict(diverged)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PhaseClassifier().predict(_table(alpha, [0, 0, 0, 0], [0.5, 1.0, 0.978, 1.0]))  # a transient dip
        PhaseClassifier().predict(_table(alpha, [0, 0, 0, 0], [0.1, 0.5, 0.9, 0.95]))  # never fitted


def test_evidence_explains_the_labels_and_shows_a_gated_signature():
    from htsr_diag.trajectory import Trajectory

    # fc1 over-fits while growing (collapse); fc2 has the signature from checkpoint 2 on but has shrunk
    fc1 = [(6.0, 0, 1.0), (3.0, 0, 1.2), (2.5, 1, 1.4), (1.8, 3, 1.7)]
    fc2 = [(6.0, 0, 1.0), (3.0, 0, 0.8), (1.5, 5, 0.3), (1.4, 9, 0.2)]
    reports = [_Report([_Layer("fc1", (200, 784), a, k, g), _Layer("fc2", (200, 200), b, m, h)])
               for (a, k, g), (b, m, h) in zip(fc1, fc2)]
    traj = Trajectory(steps=[0, 10, 100, 1000], reports=reports, metrics={"train_acc": [0.5, 1.0, 1.0, 1.0]})
    clf = PhaseClassifier(causal=True, gate_base="first")
    ev = clf.evidence(traj)
    assert ev["layers"] == ["fc1", "fc2"]
    assert ev["layer_signature"].tolist() == [[False, False, False, True], [False, False, True, True]]
    assert ev["layer_gate"].tolist() == [[False, False, False, True], [False, False, False, False]]
    np.testing.assert_allclose(ev["layer_norm_ratio"], [[1.0, 1.2, 1.4, 1.7], [1.0, 0.8, 0.3, 0.2]])
    assert ev["anti_grokking"].tolist() == [False, False, False, True]
    assert clf.predict(traj).tolist()[-1] == ANTI and clf.transition_steps(traj)[ANTI] == 1000
    # without the gate fc2's signature alone is anti-grokking at step 100
    assert PhaseClassifier(causal=True, norm_ratio=None).transition_steps(traj)[ANTI] == 100
    # the default gate reads each norm against its norm at the fit (median of steps 0 and 10):
    # the same gate decisions here, other ratios
    ev_fit = PhaseClassifier(causal=True).evidence(traj)
    expected = np.array([[1.0, 1.2, 1.4, 1.7], [1.0, 0.8, 0.3, 0.2]]) / np.array([[1.1], [0.9]])
    expected[:, 0] = np.nan   # before the fit (step 10) the reference is not known yet
    np.testing.assert_allclose(ev_fit["layer_norm_ratio"], expected)
    assert ev_fit["layer_gate"].tolist() == ev["layer_gate"].tolist()


def test_predict_step_on_each_prefix_equals_the_causal_labels_with_both_onsets():
    # Random runs whose layer norms drift down (weight decay) or up, so that either onset, the
    # stable rank or the norm, can come first: the label predict_step gives for the last
    # checkpoint of every prefix (what the Monitor reports during training) must be the causal
    # label of that checkpoint over the whole run.
    rng = np.random.default_rng(11)
    fired = {"shrunk": 0, "stable_rank": 0}
    for _ in range(12):
        n, L = 25, 2
        drift = rng.choice([0.96, 1.04])
        table = {"alpha": rng.uniform(2.5, 6, n), "n_traps": np.zeros(n),
                 "train_acc": np.r_[np.full(4, 0.5), np.ones(n - 4)],
                 "layer_alpha": rng.uniform(2.5, 6, (L, n)), "layer_n_traps": np.zeros((L, n)),
                 "layer_norm": np.cumprod(rng.normal(drift, 0.02, (L, n)), axis=1),
                 "layer_stable_rank": np.cumprod(rng.uniform(0.96, 1.01, (L, n)), axis=1) * 50}
        clf = PhaseClassifier(causal=True)
        offline = clf.predict(table)
        ev = clf.evidence(table)
        fired["shrunk"] += bool(ev["shrunk"].any())
        fired["stable_rank"] += bool((ev["fitted"] & (ev["onset_ratio"] <= ev["grok_ratio"])).any())
        rows = [{"alpha": table["alpha"][i], "n_traps": 0.0, "train_acc": table["train_acc"][i],
                 **{k: table[k][:, i].tolist() for k in ("layer_alpha", "layer_n_traps", "layer_norm",
                                                          "layer_stable_rank")}} for i in range(n)]
        online = [PhaseClassifier().predict_step(rows[: i + 1])[0] for i in range(n)]
        assert online == offline.tolist()
    assert fired["shrunk"] > 0 and fired["stable_rank"] > 0  # both onsets were exercised


def test_evidence_agrees_with_predict_on_random_tables():
    rng = np.random.default_rng(3)
    for _ in range(20):
        n, L = 30, 2
        table = {"alpha": rng.uniform(1, 6, n), "n_traps": rng.integers(0, 3, n).astype(float),
                 "train_acc": np.r_[np.full(5, 0.5), np.ones(n - 5)],
                 "layer_alpha": rng.uniform(1.5, 6, (L, n)), "layer_n_traps": rng.integers(0, 3, (L, n)).astype(float),
                 "layer_norm": np.cumprod(rng.uniform(0.95, 1.08, (L, n)), axis=1)}
        clf = PhaseClassifier(causal=True)
        ev, pred = clf.evidence(table), clf.predict(table)
        first_anti = np.flatnonzero(ev["anti_grokking"])
        labelled = np.flatnonzero(pred == ANTI)
        assert (first_anti[0] if first_anti.size else None) == (labelled[0] if labelled.size else None)


# ----------------------------------------------------------------------------- input hygiene
def _random_run(rng, n=20, layers=2):
    """A feature table with log-spaced steps whose rules fire (fitted at checkpoint 3, layers growing)."""
    return {"step": np.round(np.logspace(0, 5, n)), "alpha": rng.uniform(2.5, 6, n), "n_traps": np.zeros(n),
            "train_acc": np.r_[np.full(3, 0.5), np.ones(n - 3)],
            "layer_alpha": rng.uniform(1.5, 6, (layers, n)), "layer_n_traps": rng.integers(0, 3, (layers, n)) * 1.0,
            "layer_norm": np.cumprod(rng.uniform(0.97, 1.1, (layers, n)), axis=1),
            "layer_stable_rank": np.cumprod(rng.uniform(0.95, 1.01, (layers, n)), axis=1) * 50}


def _shuffled(table, perm):
    return {k: np.asarray(v)[..., perm] for k, v in table.items()}


@pytest.mark.parametrize("params", [{}, {"causal": True}, {"patience": 2}, {"causal": True, "patience": 2}])
def test_a_shuffled_mapping_gives_each_step_the_label_of_the_sorted_one(params):
    rng = np.random.default_rng(5)
    clf = PhaseClassifier(**params)
    seen = set()
    for _ in range(6):
        table = _random_run(rng)
        perm = rng.permutation(20)
        shuffled = _shuffled(table, perm)
        labels = clf.predict(table)
        seen |= set(labels.tolist())
        # labels come back in the caller's row order: row i of the shuffled table is checkpoint perm[i]
        np.testing.assert_array_equal(clf.predict(shuffled), labels[perm])
        np.testing.assert_array_equal(clf.confidence(shuffled), clf.confidence(table)[perm])
        assert clf.transition_steps(shuffled) == clf.transition_steps(table)
        ev, ev_sorted = clf.evidence(shuffled), clf.evidence(table)
        np.testing.assert_array_equal(ev["step"], table["step"][perm])
        for key in ("fitted", "grokking", "onset_ratio", "shrink", "anti_grokking", "has_feature"):
            np.testing.assert_array_equal(ev[key], ev_sorted[key][perm])
        for key in ("layer_signature", "layer_gate", "layer_norm_ratio", "layer_shrink"):
            np.testing.assert_array_equal(ev[key], ev_sorted[key][:, perm])
        # features() itself is in step order, every column and layer table sorted together
        feats = clf.features(shuffled)
        for key, value in clf.features(table).items():
            np.testing.assert_array_equal(feats[key], value)
        # a sequence of per-checkpoint mappings with "step" is sorted the same way
        rows = [{k: (v[:, i].tolist() if np.ndim(v) == 2 else v[i]) for k, v in shuffled.items()} for i in range(20)]
        np.testing.assert_array_equal(clf.predict(rows), labels[perm])
    assert seen == set(PHASES)  # every phase occurred, so the order was exercised on each


def test_fit_on_shuffled_runs_equals_fit_on_sorted_runs():
    rng = np.random.default_rng(8)
    runs = [_random_run(rng, n=25) for _ in range(3)]
    labels = [np.asarray(PHASES)[np.sort(rng.integers(0, 3, 25))] for _ in runs]
    perms = [rng.permutation(25) for _ in runs]
    ordered = PhaseClassifier(causal=True).fit(runs, labels, params=["grok_ratio", "min_traps"])
    shuffled = PhaseClassifier(causal=True).fit([_shuffled(r, p) for r, p in zip(runs, perms)],
                                                [lab[p] for lab, p in zip(labels, perms)],
                                                params=["grok_ratio", "min_traps"])
    assert shuffled.thresholds_ == ordered.thresholds_
    assert shuffled.train_agreement_ == ordered.train_agreement_


def test_a_mapping_without_steps_is_read_in_row_order():
    # documented: without "step" the rows are checkpoints 0, 1, ..., n-1 in the given order
    # fitted throughout: the onset base is the first row's alpha, the limit 0.78 x that
    feats = _table([6.0, 4.0, 2.9], [0, 0, 0], [1.0, 1.0, 1.0])
    clf = PhaseClassifier()
    np.testing.assert_array_equal(clf.features(feats)["step"], [0.0, 1.0, 2.0])
    assert clf.predict(feats).tolist() == [PRE, GROK, GROK]  # limit 4.68
    backwards = _table([2.9, 4.0, 6.0], [0, 0, 0], [1.0, 1.0, 1.0])  # read as given: a different run
    assert clf.predict(backwards).tolist() == [PRE, PRE, PRE]  # limit 2.26
    # the same rows with their steps are put back in order, and labelled in the rows' order
    assert clf.predict({**backwards, "step": [100, 10, 0]}).tolist() == [GROK, GROK, PRE]


def test_repeated_or_non_finite_steps_raise():
    clf = PhaseClassifier()
    feats = _table([6.0, 4.0, 2.9], [0, 0, 0], [0.5, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"step must not repeat: step 10 appears 2 times\. Each checkpoint needs its "
                                         r"own step; drop the repeated rows"):
        clf.predict({**feats, "step": [10, 0, 10]})
    rows = [{"alpha": 3.0, "n_traps": 0, "train_acc": 1.0, "step": s} for s in (0, 5, 5)]
    with pytest.raises(ValueError, match=r"step must not repeat: step 5 appears 2 times"):
        clf.predict_step(rows)
    with pytest.raises(ValueError, match=r"step must be finite; got NaN or Inf at index 1\. Drop or fill"):
        clf.predict({**feats, "step": [0, np.nan, 10]})
    with pytest.raises(ValueError, match=r"step must be finite; got NaN or Inf at index 2"):
        clf.features(rows[:2] + [{"alpha": 3.0, "n_traps": 0}])  # a row without "step" among rows with one
    with pytest.raises(ValueError, match=r"step must be finite; got NaN or Inf at index 0"):
        clf.evidence({**feats, "step": [np.inf, 1, 2]})


def _with_featureless(table, cols):
    out = {k: np.array(v, dtype=float) for k, v in table.items()}
    for key in ("alpha", "n_traps", "layer_alpha", "layer_n_traps", "layer_norm", "layer_stable_rank"):
        if key in out:
            out[key][..., cols] = np.nan
    return out


def test_a_featureless_checkpoint_is_unknown_with_a_warning():
    # Fitted from checkpoint 1: onset base median(6, 4) = 5, limit 0.78 x 5 = 3.9. Checkpoint 2 has
    # no feature at all; 3 and 4 are grokking (alpha <= 3.9), 5 anti-grokking (alpha 1.5 < 2, no norm known).
    feats = {"step": [0, 10, 20, 30, 40, 50], "alpha": [6.0, 4.0, np.nan, 2.9, 2.8, 1.5],
             "n_traps": [0, 0, np.nan, 0, 0, 3], "train_acc": [0.5, 1, 1, 1, 1, 1]}
    clf = PhaseClassifier()
    with pytest.warns(NoFeatureWarning, match=r"1 checkpoint\(s\) have no finite feature in any analysed layer "
                                              r"\(steps 20\).*labelled 'unknown' \(confidence NaN\).*Check their "
                                              r"weights for NaN"):
        labels = clf.predict(feats)
    assert labels.tolist() == [PRE, PRE, UNKNOWN, GROK, GROK, ANTI]
    assert UNKNOWN not in PHASES
    with pytest.warns(NoFeatureWarning):
        conf = clf.confidence(feats)
    assert np.isnan(conf[2]) and np.isfinite(np.delete(conf, 2)).all()
    with pytest.warns(NoFeatureWarning):
        assert clf.evidence(feats)["has_feature"].tolist() == [True, True, False, True, True, True]
    # unknown is a disagreement, even with itself
    assert phase_agreement(labels, [PRE, PRE, GROK, GROK, GROK, ANTI]) == pytest.approx(5 / 6)
    assert phase_agreement([UNKNOWN, GROK], [UNKNOWN, GROK]) == 0.5
    # a featureless checkpoint where grokking would start is skipped by transition_steps
    first = {**feats, "alpha": [6.0, 4.0, np.nan, 2.9, 2.8, 2.8], "n_traps": [0, 0, np.nan, 0, 0, 0]}
    first["alpha"][3] = np.nan
    first["n_traps"][3] = np.nan
    with pytest.warns(NoFeatureWarning, match=r"2 checkpoint\(s\).*\(steps 20, 30\)"):
        assert clf.transition_steps(first) == {GROK: 40, ANTI: None}


def test_a_featureless_checkpoint_neither_starts_nor_breaks_a_streak():
    # grokking evidence at checkpoints 2, 4 and 5 (alpha 3.0 <= 3.9), none at 3, which has no feature:
    # with patience 2 the streak 2 -> 4 holds across it (causal: reported at 4; offline: dated back to 2)
    feats = {"step": [0, 1, 2, 3, 4, 5], "alpha": [6.0, 4.0, 3.0, np.nan, 3.0, 3.0], "n_traps": [0, 0, 0, np.nan, 0, 0],
             "train_acc": [0.5, 1, 1, 1, 1, 1]}
    with pytest.warns(NoFeatureWarning):
        assert PhaseClassifier(patience=2, causal=True).predict(feats).tolist() == [PRE, PRE, PRE, UNKNOWN, GROK, GROK]
    with pytest.warns(NoFeatureWarning):
        assert PhaseClassifier(patience=2).predict(feats).tolist() == [PRE, PRE, GROK, UNKNOWN, GROK, GROK]
    # a featureless checkpoint alone does not make a streak either
    alone = {**feats, "alpha": [6.0, 4.0, 3.0, np.nan, 4.5, 4.5]}
    with pytest.warns(NoFeatureWarning):
        assert PhaseClassifier(patience=2, causal=True).predict(alone).tolist() == [PRE, PRE, PRE, UNKNOWN, PRE, PRE]


def test_predict_step_equals_predict_on_prefixes_with_featureless_checkpoints():
    rng = np.random.default_rng(12)
    for patience in (1, 2):
        for _ in range(5):
            table = _with_featureless(_random_run(rng), rng.choice(np.arange(1, 20), 4, replace=False))
            clf = PhaseClassifier(causal=True, patience=patience)
            with pytest.warns(NoFeatureWarning):
                full = clf.predict(table)
            rows = [{k: (np.asarray(v)[:, i].tolist() if np.ndim(v) == 2 else np.asarray(v)[i])
                     for k, v in table.items()} for i in range(20)]
            for t in range(1, 21):
                with warnings.catch_warnings(record=True) as got:
                    warnings.simplefilter("always")
                    label, conf = PhaseClassifier(patience=patience).predict_step(rows[:t])
                    np.testing.assert_array_equal(clf.predict(_shuffled(table, np.arange(t))), full[:t])
                assert label == full[t - 1]
                assert np.isnan(conf) == (label == UNKNOWN)
                own = [w for w in got if issubclass(w.category, NoFeatureWarning) and "its phase is" in str(w.message)]
                assert len(own) == (label == UNKNOWN)  # predict_step warns about its last checkpoint only


def test_predict_step_on_a_featureless_last_checkpoint():
    rows = [{"alpha": 5.0, "n_traps": 0, "train_acc": 1.0, "step": 0},
            {"alpha": np.nan, "n_traps": np.nan, "train_acc": 1.0, "step": 7}]
    with pytest.warns(NoFeatureWarning, match=r"the checkpoint at step 7 has no finite feature .* its phase is "
                                              r"'unknown'\. Check the weights for NaN"):
        label, conf = PhaseClassifier().predict_step(rows)
    assert label == UNKNOWN and np.isnan(conf)
    with pytest.warns(NoFeatureWarning, match="at step 7"):  # no earlier feature either: still not an error
        assert PhaseClassifier().predict_step(rows[1:])[0] == UNKNOWN


def test_no_finite_feature_anywhere_raises():
    feats = {"alpha": [np.nan] * 3, "n_traps": [np.nan] * 3, "train_acc": [0.5, 1.0, 1.0]}
    match = (r"no finite feature in any analysed layer at any checkpoint: alpha, trap count, norm and stable rank "
             r"are NaN at all 3 checkpoint\(s\) \(steps 0, 1, 2\).*Check the weights for NaN")
    for method in ("predict", "confidence", "evidence", "transition_steps"):
        with pytest.raises(ValueError, match=match):
            getattr(PhaseClassifier(), method)(feats)
    good = _table([6.0, 4.0, 2.9], [0, 0, 0], [0.5, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"trajectories\[1\] has no finite feature in any analysed layer .* check "
                                         r"its weights for NaN"):
        PhaseClassifier().fit([good, feats], [[PRE, PRE, GROK]] * 2)


def test_a_nan_model_is_unknown_not_pre_grokking():
    # The issue: analyze() of a model with NaN weights gives NaN rows, which were labelled pre-grokking
    # without a word. Real reports of a small MLP (both layers at least 50 wide).
    import torch
    from conftest import seeded_mlp

    from htsr_diag.analyze import analyze
    from htsr_diag.exceptions import DegenerateSpectrumWarning
    from htsr_diag.trajectory import Trajectory

    model = seeded_mlp(100, 60, 60)
    ok = analyze(model, rng=0, center_traps=True)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    with pytest.warns(DegenerateSpectrumWarning, match="non-finite weights"):
        broken = analyze(model, rng=0, center_traps=True)
    traj = Trajectory(steps=[0, 10, 20], reports=[ok, ok, broken], metrics={"train_acc": [0.5, 0.6, 0.6]})
    with pytest.warns(NoFeatureWarning, match=r"\(steps 20\)"):
        assert PhaseClassifier().predict(traj).tolist() == [PRE, PRE, UNKNOWN]
    dead = Trajectory(steps=[0, 10], reports=[broken, broken], metrics={"train_acc": [0.5, 0.6]})
    with pytest.raises(ValueError, match=r"no finite feature in any analysed layer at any checkpoint.*\(steps 0, 10\)"):
        PhaseClassifier().predict(dead)


def test_fit_scores_featureless_checkpoints_as_predict_does():
    # fit's vectorised score must stay the agreement of predict(), "unknown" labels counting as misses
    rng = np.random.default_rng(4)
    runs, labels = [], []
    for _ in range(3):
        runs.append(_with_featureless(_random_run(rng, n=25), rng.choice(np.arange(25), 5, replace=False)))
        labels.append(np.asarray(PHASES)[np.sort(rng.integers(0, 3, 25))])
    for causal in (False, True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoFeatureWarning)
            clf = PhaseClassifier(causal=causal).fit(runs, labels)
            measured = np.mean([phase_agreement(clf.predict(r), lab) for r, lab in zip(runs, labels)])
        assert clf.train_agreement_ == pytest.approx(measured, abs=1e-9)


def test_train_acc_keyword_overrides_the_table():
    feats = _table([6.0, 4.0, 2.9, 2.8], [0, 0, 0, 0])
    clf = PhaseClassifier()
    given = {**feats, "train_acc": np.array([0.5, 1.0, 1.0, 1.0])}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # train_acc given: no MissingTrainAccWarning
        assert clf.predict(feats, train_acc=[0.5, 1.0, 1.0, 1.0]).tolist() == clf.predict(given).tolist()
        np.testing.assert_array_equal(clf.confidence(feats, train_acc=given["train_acc"]), clf.confidence(given))
        assert clf.transition_steps(feats, train_acc=given["train_acc"]) == clf.transition_steps(given)
        assert clf.evidence(feats, train_acc=given["train_acc"])["fitted"].tolist() == [False, True, True, True]
        # the keyword replaces the table's own column: never fitted here, so never grokking
        assert clf.predict(given, train_acc=[0.5, 0.5, 0.5, 0.5]).tolist() == [PRE] * 4
        # NaN is allowed (unknown), and in the caller's row order for a shuffled mapping
        assert clf.predict(given, train_acc=[0.5, 1, np.nan, 1]).tolist() == clf.predict(given).tolist()
        shuffled = {**feats, "step": [3, 0, 2, 1]}  # rows are steps 3, 0, 2, 1
        assert (clf.predict(shuffled, train_acc=[1.0, 0.5, 1.0, 1.0]).tolist()
                == clf.predict({**feats, "step": [3, 0, 2, 1], "train_acc": [1.0, 0.5, 1.0, 1.0]}).tolist())


def test_train_acc_keyword_on_a_trajectory():
    from htsr_diag.trajectory import Trajectory

    reports = [_Report([_Layer("fc1", (200, 784), a, 0, g)]) for a, g in ((6.0, 1.0), (4.0, 1.0), (2.9, 1.1))]
    with_metric = Trajectory(steps=[0, 10, 100], reports=reports, metrics={"train_acc": [0.5, 1.0, 1.0]})
    bare = Trajectory(steps=[0, 10, 100], reports=reports, metrics={})
    clf = PhaseClassifier(onset="alpha")
    with pytest.warns(MissingTrainAccWarning):  # unknown counts as fitted: base 6.0, and 4.0 <= 0.78 x 6.0
        assert clf.predict(bare).tolist() == [PRE, GROK, GROK]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert clf.predict(bare, train_acc=[0.5, 1.0, 1.0]).tolist() == clf.predict(with_metric).tolist() == \
            [PRE, PRE, GROK]


@pytest.mark.parametrize(("value", "match"), [
    ([0.5, 1.0], r"train_acc must have one value per checkpoint \(3\); got 2\. Align it with steps"),
    ([50, 100, 100], r"train_acc must hold fractions in \[0, 1\] \(NaN where unknown\); got 50 at index 0\. "
                     r"Divide percentages by 100"),
    ([0.5, -0.1, 1.0], r"train_acc must hold fractions in \[0, 1\].*got -0.1 at index 1"),
    ([0.5, np.inf, 1.0], r"train_acc must hold fractions in \[0, 1\].*got inf at index 1"),
    ([[0.5, 1.0, 1.0]], r"train_acc must be 1-D \(one value per checkpoint\)"),
])
def test_bad_train_acc_keyword_raises(value, match):
    feats = _table([6.0, 4.0, 2.9], [0, 0, 0])
    for method in ("predict", "confidence", "evidence", "transition_steps"):
        with pytest.raises(ValueError, match=match):
            getattr(PhaseClassifier(), method)(feats, train_acc=value)


def test_a_percentage_train_acc_column_raises():
    with pytest.raises(ValueError, match=r"the feature table's 'train_acc' must hold fractions in \[0, 1\].*got 50 "
                                         r"at index 0\. Divide percentages by 100"):
        PhaseClassifier().predict(_table([6.0, 4.0, 2.9], [0, 0, 0], [50, 100, 100]))


def test_missing_train_acc_warns_once_per_call():
    feats = _table([6.0, 4.0, 2.9], [0, 0, 0])
    match = (r"no training accuracy at any checkpoint: the classifier cannot tell memorisation from grokking without "
             r"it.*predict\(traj, train_acc=...\).*Monitor.step\(step, train_acc=...\).*metrics.jsonl")
    for method in ("predict", "confidence", "evidence", "transition_steps"):
        with pytest.warns(MissingTrainAccWarning, match=match) as got:
            getattr(PhaseClassifier(), method)(feats)
        assert sum(issubclass(w.category, MissingTrainAccWarning) for w in got) == 1, method
    assert issubclass(MissingTrainAccWarning, UserWarning) and issubclass(NoFeatureWarning, UserWarning)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PhaseClassifier(use_train_acc=False).predict(feats)  # the rules do not read it: nothing to warn about
        PhaseClassifier().predict({**feats, "train_acc": [np.nan, 1.0, np.nan]})  # known somewhere
        PhaseClassifier().predict(feats, train_acc=[0.5, 1.0, 1.0])
        PhaseClassifier().predict_step([{"alpha": 3.0, "n_traps": 0}] * 3)  # the Monitor warns instead
