"""Tests of htsr_diag.explain: the per-checkpoint words of the report, on constructed evidence."""

from __future__ import annotations

import numpy as np
import pytest

from htsr_diag.explain import LabelExplanation, explain_labels
from htsr_diag.phases import PhaseClassifier

PRE, GROK, ANTI = "pre-grokking", "grokking", "anti-grokking"
RULES = {"alpha_anti": 2.0, "min_traps": 2, "anti_rule": "either", "norm_ratio": 1.5, "gate_base": "first",
         "use_train_acc": True, "train_threshold": 0.99, "alpha_grok": None, "patience": 1}


def _evidence(**over):
    """Five checkpoints, two layers: not fitted, fitted, grokking (stable rank), anti (fc1), anti held."""
    T, F = True, False
    ev = {
        "step": np.array([0, 10, 100, 1000, 2000]),
        "layers": ["fc1", "fc2"],
        "has_feature": np.array([T, T, T, T, T]),
        "fitted": np.array([F, T, T, T, T]),
        "onset": "stable_rank",
        "onset_ratio": np.array([np.nan, 1.0, 0.41, 0.40, 0.9]),
        "grok_ratio": 0.85,
        "shrink": np.array([np.nan, 1.0, 1.1, 1.6, 1.7]),
        "shrink_ratio": 0.85,
        "shrunk": np.array([F, F, F, F, F]),
        "grokking": np.array([F, F, T, T, F]),
        "layer_signature": np.array([[F, F, F, T, F], [F, F, F, T, F]]),
        "layer_norm_ratio": np.array([[1.0, 1.0, 1.1, 1.85, 1.9], [1.0, 1.0, 1.0, 1.2, 1.2]]),
        "layer_gate": np.array([[F, F, F, T, T], [F, F, F, F, F]]),
        "anti_grokking": np.array([F, F, F, T, F]),
    }
    ev.update(over)
    return ev


FEATURES = {"layer_alpha": np.array([[6.0, 5.0, 3.0, 1.88, 2.5], [5.0, 4.5, 3.5, 1.7, 3.0]]),
            "layer_n_traps": np.array([[0, 0, 0, 1, 0], [0, 0, 0, 0, 0]], dtype=float),
            "train_acc": np.array([0.62, 1.0, 1.0, 1.0, 1.0]),
            "alpha": np.array([5.5, 4.75, 3.25, 1.79, 2.75])}
LABELS = [PRE, PRE, GROK, ANTI, ANTI]


def test_rule_words_per_checkpoint():
    ex = explain_labels(_evidence(), FEATURES, LABELS, rules=RULES)
    assert [e.step for e in ex] == [0, 10, 100, 1000, 2000]
    assert all(isinstance(e, LabelExplanation) for e in ex)
    assert ex[0].rule == "pre-grokking: training set not fitted (train acc 0.62 < 0.99)"
    assert ex[1].rule == ("pre-grokking: smallest stable rank 1.00x its value at the fit > 0.85, and largest "
                          "layer norm 1.00x its norm at the fit > 0.85")
    assert ex[2].rule == "grokking: smallest stable rank 0.41x its value at the fit <= 0.85"
    # fc1 fires (alpha < 2, gate passed); fc2 has the signature but is gated, so it is not named
    assert ex[3].rule == "anti-grokking: fc1: alpha 1.88 < 2, with norm 1.85x its first norm >= 1.5"
    # the rule no longer holds at the last checkpoint: the label is held, and the words say why not
    assert ex[4].rule.startswith("anti-grokking since step 1,000 (phases do not go back); here: no layer shows")
    assert "fc1: alpha 2.50 >= 2 and 0 traps < 2" in ex[4].rule
    assert ex[3].layers == ("fc1: alpha 1.88, 1 trap, norm 1.85x its first norm; "
                            "fc2: alpha 1.70, 0 traps, norm 1.20x its first norm")
    assert all(e.differs == "" and e.reference == "" for e in ex)


def test_gated_signature_and_differs_lines():
    ref = [PRE, GROK, GROK, ANTI, GROK]
    ev = _evidence(anti_grokking=np.array([False, False, False, False, False]),
                   layer_gate=np.zeros((2, 5), dtype=bool))
    labels = [PRE, PRE, GROK, GROK, GROK]
    ex = explain_labels(ev, FEATURES, labels, ref, rules=RULES)
    assert ex[1].differs == ("accuracy says grokking, weights say pre-grokking: the grokking rule did not fire "
                             "(smallest stable rank 1.00x its value at the fit > 0.85, and largest layer norm "
                             "1.00x its norm at the fit > 0.85)")
    assert ex[3].differs.startswith("accuracy says anti-grokking, weights say grokking: the anti-grokking rule "
                                    "did not fire (no layer shows the over-fitting signature with the norm gate: ")
    assert "fc1: alpha 1.88 < 2 but norm 1.85x its first norm < 1.5 (held back by the norm gate)" in ex[3].differs
    assert ex[4].rule.startswith("grokking since step 100 (phases do not go back); here: smallest stable rank "
                                 "0.90x")
    assert ex[2].differs == "" and ex[0].differs == ""
    text = ex[3].text().splitlines()
    assert text[0].startswith("step 1,000: grokking: ") and text[2].startswith("    accuracy says anti-grokking")


def test_weights_ahead_of_accuracy_and_norm_onset():
    ev = _evidence(shrunk=np.array([False, False, True, False, False]),
                   onset_ratio=np.array([np.nan, 1.0, 0.95, 0.40, 0.9]), shrink=np.array([np.nan, 1.0, 0.8, 1.6, 1.7]))
    ex = explain_labels(ev, FEATURES, LABELS, [PRE, PRE, PRE, GROK, ANTI], rules=RULES)
    assert ex[2].rule == "grokking: every layer's norm <= 0.85x its norm at the fit (largest 0.80x)"
    assert ex[2].differs == ("accuracy says pre-grokking, weights say grokking: the grokking rule fired on the "
                             "weights before the test accuracy rose")
    assert ex[3].differs == ("accuracy says grokking, weights say anti-grokking: the anti-grokking rule fired on "
                             "the weights before the test accuracy fell")


def test_anti_rule_both_and_gate_base_fit_words():
    rules = {**RULES, "anti_rule": "both", "gate_base": "fit"}
    feats = {**FEATURES, "layer_n_traps": np.array([[0, 0, 0, 3, 0], [0, 0, 0, 0, 0]], dtype=float)}
    ex = explain_labels(_evidence(), feats, LABELS, rules=rules)
    assert ex[3].rule == "anti-grokking: fc1: alpha 1.88 < 2 and 3 traps >= 2, with norm 1.85x its norm at the fit >= 1.5"


@pytest.mark.parametrize("labels, ref, match", [
    ([PRE, PRE], None, "labels must have one entry per checkpoint of evidence \\(5\\); got 2"),
    (LABELS, [PRE], "reference must have one entry per checkpoint of evidence \\(5\\); got 1"),
])
def test_length_errors(labels, ref, match):
    with pytest.raises(ValueError, match=match):
        explain_labels(_evidence(), FEATURES, labels, ref, rules=RULES)


def test_features_of_other_layers_raise():
    feats = {**FEATURES, "layer_alpha": FEATURES["layer_alpha"][:1]}
    with pytest.raises(ValueError, match="same checkpoints and layers as evidence"):
        explain_labels(_evidence(), feats, LABELS, rules=RULES)


def test_agrees_with_the_classifier_on_a_feature_mapping():
    """End to end: the words quote the classifier's own evidence and thresholds."""
    clf = PhaseClassifier()
    feats = {"alpha": [5.0, 4.2, 3.0, 1.5], "n_traps": [0, 0, 0, 4], "norm": [1.0, 1.2, 1.4, 2.0],
             "train_acc": [0.6, 1.0, 1.0, 1.0]}
    labels = clf.predict(feats)
    ex = explain_labels(clf.evidence(feats), clf.features(feats), labels, rules=clf.rules())
    assert [e.label for e in ex] == labels.tolist() == [PRE, PRE, GROK, ANTI]
    assert ex[2].rule.startswith("grokking: mean alpha 0.65x its value at the fit <= 0.78")
    # the norm against its norm at the fit, the median of 1.0 and 1.2: 2.0 / 1.1
    assert ex[3].rule == "anti-grokking: layer0: alpha 1.50 < 2 and 4 traps >= 2, with norm 1.82x its norm at the fit >= 1.5"
