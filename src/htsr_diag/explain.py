"""Why each checkpoint got its phase label, in words: the per-checkpoint lines of the report.

:func:`explain_labels` turns what :meth:`PhaseClassifier.evidence <htsr_diag.phases.PhaseClassifier.evidence>`
returns (which rule part held at each checkpoint) and the classifier's feature table (each
layer's alpha and trap count, the training accuracy) into one :class:`LabelExplanation` per
checkpoint: the numbers the rules read per analysed layer, the rule that set the label, and,
where the weight-only label and the accuracy label differ, which rule fired or did not.

It never re-derives a rule: whether the grokking rule, the norm onset, a layer's
over-fitting signature or its norm gate held is read from the evidence; the thresholds
(from :meth:`PhaseClassifier.rules <htsr_diag.phases.PhaseClassifier.rules>`) only supply
the numbers the sentences compare with.

Examples
--------
Three models stand in for three checkpoints of a run:

>>> import torch
>>> from htsr_diag import analyze_checkpoints
>>> from htsr_diag.phases import PhaseClassifier
>>> _ = torch.manual_seed(0)
>>> models = [torch.nn.Sequential(torch.nn.Linear(64, 60), torch.nn.ReLU(), torch.nn.Linear(60, 60))
...           for _ in range(3)]
>>> traj = analyze_checkpoints(models, steps=[0, 10, 100], rng=0).with_metrics(train_acc=[0.1, 0.5, 1.0])
>>> clf = PhaseClassifier()
>>> lines = explain_labels(clf.evidence(traj), clf.features(traj), clf.predict(traj), rules=clf.rules())
>>> print(lines[-1].text())
step 100: pre-grokking: ...
    0: alpha ..., 0 traps, ...; 2: alpha ..., 0 traps, ...
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ._results import Result

__all__ = ["LabelExplanation", "explain_labels"]

_PRE, _GROK, _ANTI = "pre-grokking", "grokking", "anti-grokking"


@dataclass(frozen=True)
class LabelExplanation(Result):
    """Why one checkpoint has its label.

    Attributes
    ----------
    step : int
    label : str
        The weight-only label.
    reference : str
        The accuracy label ("" when there is none).
    layers : str
        Per analysed layer: alpha, trap count and the norm ratio the norm gate reads,
        e.g. ``"fc1: alpha 1.88, 3 traps, norm 1.85x its norm at the fit"``.
    rule : str
        The rule that set the label, in words.
    differs : str
        Where ``label`` and ``reference`` differ: which rule fired or did not; else "".
    """

    step: int
    label: str
    reference: str
    layers: str
    rule: str
    differs: str

    def text(self) -> str:
        """The explanation as lines of plain text (what ``summary.txt`` holds per checkpoint)."""
        lines = [f"step {self.step:,}: {self.rule}", f"    {self.layers}"]
        if self.differs:
            lines.append(f"    {self.differs}")
        return "\n".join(lines)


def _f(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or not math.isfinite(float(x)) else f"{float(x):.{digits}f}"


def _traps(x: float) -> str:
    if not math.isfinite(float(x)):
        return "traps n/a"
    n = float(x)
    return f"{n:g} trap" + ("" if n == 1 else "s")


def explain_labels(evidence: Mapping[str, Any], features: Mapping[str, Any], labels: Sequence[str],
                   reference: Sequence[str] | None = None, *, rules: Mapping[str, Any]) -> list[LabelExplanation]:
    """One :class:`LabelExplanation` per checkpoint, from the classifier's evidence.

    Parameters
    ----------
    evidence : mapping
        :meth:`PhaseClassifier.evidence` of the checkpoints: ``step``, ``layers``,
        ``has_feature``, ``fitted``, ``onset``, ``onset_ratio``, ``grok_ratio``, ``shrink``,
        ``shrink_ratio``, ``shrunk``, ``grokking``, ``layer_signature``,
        ``layer_norm_ratio``, ``layer_gate``, ``anti_grokking`` (per-checkpoint arrays of
        shape (n,) or (L, n), in step order).
    features : mapping
        The classifier's feature table of the same checkpoints
        (:meth:`PhaseClassifier.features`): ``layer_alpha`` and ``layer_n_traps`` (L, n),
        ``train_acc`` and ``alpha`` (n,), rows in the order of ``evidence["layers"]``.
    labels : sequence of n str
        The classifier's labels (:meth:`PhaseClassifier.predict`).
    reference : sequence of n str, optional
        Labels from the accuracy curves (:func:`~htsr_diag.phases.phases_from_accuracy`).
    rules : mapping
        :meth:`PhaseClassifier.rules`: the thresholds the sentences quote (``alpha_anti``,
        ``min_traps``, ``anti_rule``, ``norm_ratio``, ``gate_base``, ``use_train_acc``,
        ``train_threshold``, ``alpha_grok``, ``patience``).

    Returns
    -------
    list of LabelExplanation, one per checkpoint in step order.

    Raises
    ------
    ValueError
        ``labels``, ``reference`` or ``features`` do not have one entry per checkpoint of
        ``evidence``.

    Examples
    --------
    >>> from htsr_diag.phases import PhaseClassifier
    >>> clf = PhaseClassifier()
    >>> feats = {"alpha": [5.0, 4.0, 1.5], "n_traps": [0, 0, 4], "norm": [1.0, 1.2, 2.0],
    ...          "train_acc": [0.6, 1.0, 1.0]}
    >>> ex = explain_labels(clf.evidence(feats), clf.features(feats), clf.predict(feats), rules=clf.rules())
    >>> ex[0].rule
    'pre-grokking: training set not fitted (train acc 0.60 < 0.99)'
    >>> ex[2].rule
    'anti-grokking: layer0: alpha 1.50 < 2 and 4 traps >= 2, with norm 1.82x its norm at the fit >= 1.5'
    """
    steps = np.asarray(evidence["step"])
    n = steps.size
    labels = [str(x) for x in labels]
    if len(labels) != n:
        raise ValueError(f"labels must have one entry per checkpoint of evidence ({n}); got {len(labels)}.")
    ref = None if reference is None else [str(x) for x in reference]
    if ref is not None and len(ref) != n:
        raise ValueError(f"reference must have one entry per checkpoint of evidence ({n}); got {len(ref)}.")
    alpha = np.asarray(features["layer_alpha"], dtype=float)
    traps = np.asarray(features["layer_n_traps"], dtype=float)
    if alpha.shape != np.shape(evidence["layer_signature"]):
        raise ValueError(f"features must hold the layer table of the same checkpoints and layers as evidence "
                         f"{np.shape(evidence['layer_signature'])}; got layer_alpha of shape {alpha.shape}.")
    train_acc = np.asarray(features.get("train_acc", np.full(n, np.nan)), dtype=float)
    names = list(evidence["layers"])
    base = "its norm at the fit" if rules.get("gate_base", "first") == "fit" else "its first norm"
    norm_ratio = rules.get("norm_ratio")
    onset_name = {"stable_rank": "smallest stable rank", "alpha": "mean alpha"}[evidence["onset"]]
    first = {lab: next((i for i in range(n) if labels[i] == lab), None) for lab in (_GROK, _ANTI)}

    def layer_numbers(i: int) -> str:
        return "; ".join(f"{name}: alpha {_f(alpha[j, i])}, {_traps(traps[j, i])}, "
                         f"norm {_f(evidence['layer_norm_ratio'][j, i])}x {base}" for j, name in enumerate(names))

    def signals(j: int, i: int) -> str:
        """A layer's alpha and trap numbers against their thresholds."""
        a, t = alpha[j, i], traps[j, i]
        low = math.isfinite(a) and a < rules["alpha_anti"]
        many = math.isfinite(t) and t >= rules["min_traps"]
        parts = {"alpha": (low, f"alpha {_f(a)} {'<' if low else '>='} {rules['alpha_anti']:g}"),
                 "traps": (many, f"{_traps(t)} {'>=' if many else '<'} {rules['min_traps']}")}
        if rules["anti_rule"] in parts:
            return parts[rules["anti_rule"]][1]
        if rules["anti_rule"] == "either" and (low or many):
            return " and ".join(words for held, words in parts.values() if held)
        return " and ".join(words for _, words in parts.values())

    def gate_words(j: int, i: int) -> str:
        r = evidence["layer_norm_ratio"][j, i]
        if norm_ratio is None:
            return "no norm gate"
        ok = bool(evidence["layer_gate"][j, i])
        return f"norm {_f(r)}x {base} {'>=' if ok else '<'} {norm_ratio:g}"

    def grok_words(i: int) -> str:
        """Whether the grokking rule holds at i and why."""
        if not evidence["fitted"][i]:
            return f"training set not fitted (train acc {_f(train_acc[i])} < {rules['train_threshold']:g})"
        if rules.get("alpha_grok") is not None:
            a = float(np.asarray(features["alpha"], float)[i])
            onset_holds = math.isfinite(a) and a <= rules["alpha_grok"]
            onset = f"mean alpha {_f(a)} {'<=' if onset_holds else '>'} {rules['alpha_grok']:g}"
        else:
            r = evidence["onset_ratio"][i]
            onset_holds = math.isfinite(r) and r <= evidence["grok_ratio"]
            onset = (f"{onset_name} {_f(r)}x its value at the fit {'<=' if onset_holds else '>'} "
                     f"{evidence['grok_ratio']:g}")
        sr = evidence["shrink_ratio"]
        if sr is None:
            return onset
        if evidence["shrunk"][i]:
            norm = f"every layer's norm <= {sr:g}x its norm at the fit (largest {_f(evidence['shrink'][i])}x)"
            return norm if not onset_holds else f"{onset}; {norm}"
        norm = f"largest layer norm {_f(evidence['shrink'][i])}x its norm at the fit > {sr:g}"
        return onset if onset_holds else f"{onset}, and {norm}"

    def anti_words(i: int) -> str:
        """Whether the anti-grokking rule holds at i: the layers that fire it, or why none does."""
        if not evidence["fitted"][i]:
            return f"training set not fitted (train acc {_f(train_acc[i])} < {rules['train_threshold']:g})"
        fire = [j for j in range(len(names)) if evidence["layer_signature"][j, i] and evidence["layer_gate"][j, i]]
        if fire:
            return "; ".join(f"{names[j]}: {signals(j, i)}, with {gate_words(j, i)}" for j in fire)
        why = []
        for j, name in enumerate(names):
            if evidence["layer_signature"][j, i]:
                why.append(f"{name}: {signals(j, i)} but {gate_words(j, i)} (held back by the norm gate)")
            else:
                why.append(f"{name}: {signals(j, i)}")
        return "no layer shows the over-fitting signature with the norm gate: " + "; ".join(why)

    out = []
    for i in range(n):
        lab = labels[i]
        r = "" if ref is None else ref[i]
        if not evidence["has_feature"][i] or lab not in (_PRE, _GROK, _ANTI):
            out.append(LabelExplanation(int(steps[i]), lab, r, layer_numbers(i),
                                        f"{lab}: no finite feature in any analysed layer", ""))
            continue
        if lab == _PRE:
            holds = bool(evidence["grokking"][i] or evidence["anti_grokking"][i])
            rule = f"pre-grokking: {grok_words(i)}" if not holds else (
                f"pre-grokking: the rules hold here but not yet on {rules.get('patience', 1)} checkpoints in a row")
        elif lab == _GROK:
            rule = (f"grokking: {grok_words(i)}" if evidence["grokking"][i] else
                    f"grokking since step {int(steps[first[_GROK]]):,} (phases do not go back); here: {grok_words(i)}")
        else:
            rule = (f"anti-grokking: {anti_words(i)}" if evidence["anti_grokking"][i] else
                    f"anti-grokking since step {int(steps[first[_ANTI]]):,} (phases do not go back); here: "
                    f"{anti_words(i)}")
        differs = ""
        if r and r != lab:
            differs = f"accuracy says {r}, weights say {lab}: "
            if r == _ANTI:
                differs += f"the anti-grokking rule did not fire ({anti_words(i)})"
            elif lab == _ANTI:
                differs += "the anti-grokking rule fired on the weights before the test accuracy fell"
            elif r == _GROK:  # weights: pre-grokking
                differs += f"the grokking rule did not fire ({grok_words(i)})"
            else:             # weights grokking, accuracy pre-grokking
                differs += "the grokking rule fired on the weights before the test accuracy rose"
        out.append(LabelExplanation(int(steps[i]), lab, r, layer_numbers(i), rule, differs))
    return out
