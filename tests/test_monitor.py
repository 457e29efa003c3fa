"""Tests of the training-loop Monitor."""

from __future__ import annotations

import importlib
import itertools
import json
import logging
import warnings

import numpy as np
import pytest
import torch

from conftest import seeded_mlp
from htsr_diag.exceptions import MissingTrainAccWarning, NoFeatureWarning
from htsr_diag.monitor import Monitor, MonitorRecord, log_schedule
from htsr_diag.phases import ANTI, PHASES, PRE, PhaseClassifier

# the test MLPs' 10-unit heads have fewer than 20 eigenvalues: the small-spectrum warning is expected there and is not under test here
# (tests/test_warn_once.py and tests/test_powerlaw.py test the warning itself)
pytestmark = pytest.mark.filterwarnings("ignore::htsr_diag.exceptions.SmallSpectrumWarning")

# the module, not the function htsr_diag.analyze that the package re-exports under the same name
analyze_module = importlib.import_module("htsr_diag.analyze")


def _model(seed: int = 0) -> torch.nn.Module:
    return seeded_mlp(64, 60, 10, seed=seed)


def _data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(128, 64, generator=g)
    y = torch.randint(0, 10, (128,), generator=g)
    return x, y


def _train(model, monitor, steps, *, train_acc=None):
    x, y = _data()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        monitor.step(step, train_acc=None if train_acc is None else train_acc(step))


def test_log_schedule_values():
    # round(10^(k/4)) = 1, 1.78 -> 2, 3.16 -> 3, 5.62 -> 6, 10, 17.8 -> 18, 31.6 -> 32, 56.2 -> 56, 100
    assert list(itertools.islice(log_schedule(4), 10)) == [0, 1, 2, 3, 6, 10, 18, 32, 56, 100]
    # 10 per decade: every integer below 10 that the rounding hits, then 10, 13, 16, 20, 25, ...
    s = list(itertools.islice(log_schedule(10), 40))
    assert s[:14] == [0, 1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 25, 32]
    assert all(b > a for a, b in zip(s, s[1:]))
    assert list(itertools.islice(log_schedule(1, start=5), 3)) == [5, 10, 100]


def test_monitor_in_a_training_loop_analyses_on_schedule():
    model = _model()
    mon = Monitor(model, per_decade=4, rng=0)
    with pytest.warns(MissingTrainAccWarning, match=r"Monitor: 3 analyses and no train_acc yet.*cannot tell "
                                                    r"memorisation from grokking.*monitor.step\(step, train_acc=...\)") as got:
        _train(model, mon, 120)
    assert sum(issubclass(w.category, MissingTrainAccWarning) for w in got) == 1  # once, not at every analysis
    assert [r.step for r in mon.history] == [0, 1, 2, 3, 6, 10, 18, 32, 56, 100]
    assert mon.next_step == 178  # round(10^(9/4)) = 177.8
    for rec in mon.history:
        assert isinstance(rec, MonitorRecord)
        assert rec.phase in PHASES
        assert 0.0 < rec.confidence < 1.0
        assert set(rec.layer_alpha) == {lay.name for lay in rec.report.layers}
        assert np.isfinite(rec.layer_alpha[rec.report.layers[0].name])
        assert np.isnan(rec.train_acc)
    assert mon.phase == mon.history[-1].phase
    frame = mon.to_frame()
    assert frame["step"].tolist() == [r.step for r in mon.history]
    json.dumps(mon.history[-1].to_dict())  # JSON-safe


def test_monitor_record_equals_analyze_with_the_same_stream():
    """The analysis at step s uses SeedSequence(rng, spawn_key=(s,)), as analyze_checkpoints does."""
    model = _model(1)
    mon = Monitor(model, schedule=[0, 5], rng=7)
    _train(model, mon, 6)
    rec = mon.history[-1]
    rng = np.random.default_rng(np.random.SeedSequence(7, spawn_key=(5,)).spawn(2)[0])
    direct = analyze_module.analyze(model, randomize=True, ks=False, rng=rng, center_traps=True)
    assert json.dumps(direct.to_dict(), sort_keys=True) == json.dumps(rec.report.to_dict(), sort_keys=True)
    fc = rec.report.layers[0]
    assert rec.layer_alpha[fc.name] == fc.alpha and rec.layer_traps[fc.name] == fc.n_traps


def test_off_schedule_calls_do_not_analyse(monkeypatch):
    calls = []
    real = analyze_module.analyze

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(analyze_module, "analyze", counting)
    mon = Monitor(_model(), per_decade=2, randomize=False)
    results = [mon.step(train_acc=0.5) for _ in range(1000)]  # internal counter: steps 0..999
    # log schedule, 2 per decade: 0, 1, 3, 10, 32, 100, 316 (round(10^2.5)) -> 7 analyses
    assert len(calls) == 7
    assert [i for i, r in enumerate(results) if r is not None] == [0, 1, 3, 10, 32, 100, 316]


def test_skipped_scheduled_step_is_caught_up():
    mon = Monitor(_model(), schedule=[0, 5, 50], randomize=False)
    assert mon.step(0, train_acc=0.5) is not None
    assert mon.step(4) is None
    assert mon.step(7) is not None  # step 5 was never called: caught up at 7
    assert mon.step(8) is None
    assert mon.next_step == 50
    assert mon.step(8, force=True).step == 8


def test_every_n_steps_schedule():
    mon = Monitor(_model(), schedule=25, randomize=False)
    steps = [s for s in range(80) if mon.step(s, train_acc=0.5) is not None]
    assert steps == [0, 25, 50, 75]


def test_phase_change_callback_and_alarm_warning(caplog):
    # a classifier whose anti rule fires on alpha < 40 once the training set is fitted
    # (train_acc >= 0.99): the phase goes pre-grokking -> anti-grokking at the first
    # analysis with train_acc = 1.0. No norm gate: ten steps do not grow a layer to 1.5 x.
    clf = PhaseClassifier(causal=True, alpha_grok=50.0, alpha_anti=40.0, anti_rule="alpha", norm_ratio=None)
    seen = []
    model = _model()
    mon = Monitor(model, schedule=[0, 3, 6, 9], classifier=clf,
                  on_phase_change=lambda prev, rec: seen.append((prev, rec.phase, rec.step)))
    with caplog.at_level(logging.WARNING, logger="htsr_diag.monitor"):
        _train(model, mon, 10, train_acc=lambda s: 0.5 if s < 5 else 1.0)
    assert [r.phase for r in mon.history] == [PRE, PRE, ANTI, ANTI]
    assert seen == [(PRE, ANTI, 6)]
    assert mon.alarm_step == 6
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "anti-grokking began at step 6" in warnings[0].getMessage()


def test_monitor_with_the_stable_rank_onset_matches_the_offline_classifier():
    # The Monitor hands each analysis's per-layer stable ranks to the classifier: its running
    # phases equal the causal offline labels of the same features, and the stable ranks it
    # passed are the reports' own. A generous ratio (0.999) so that the onset is reached within
    # the short run while the labels still depend on the stable rank.
    clf = PhaseClassifier(causal=True, onset="stable_rank", grok_ratio=0.999, norm_ratio=None)
    model = _model()
    mon = Monitor(model, schedule=[0, 5, 10, 20, 40, 60], classifier=clf)
    _train(model, mon, 61, train_acc=lambda s: 1.0)
    feats = [clf.report_features(r.report, train_acc=1.0) for r in mon.history]
    assert [f["layer_stable_rank"][0] for f in feats] == [r.report.layers[0].stable_rank for r in mon.history]
    offline = clf.predict(feats).tolist()
    assert [r.phase for r in mon.history] == offline
    assert "grokking" in offline  # the stable rank of the trained layers fell by > 0.1% (else nothing is tested)


def test_first_analysis_not_pre_grokking_triggers_callback():
    clf = PhaseClassifier(causal=True, alpha_grok=50.0, alpha_anti=40.0, anti_rule="alpha", use_train_acc=False,
                          norm_ratio=None)
    seen = []
    mon = Monitor(_model(), schedule=[0], classifier=clf, on_phase_change=lambda p, r: seen.append((p, r.phase)))
    mon.step(0)
    assert seen == [(None, ANTI)] and mon.alarm_step == 0


def test_monitor_does_not_change_the_model_or_its_gradients():
    model = _model()
    x, y = _data()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]
    model.train()
    Monitor(model, schedule=[0]).step(0)
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))


@pytest.mark.gpu
def test_monitor_on_a_cuda_model():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    model = _model().cuda()
    mon = Monitor(model, schedule=[0, 2])
    x, y = (t.cuda() for t in _data())
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        mon.step(step)
    assert all(p.is_cuda for p in model.parameters())
    cpu = Monitor(_model().cpu(), schedule=[0], randomize=False)
    cpu.model.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
    rec_cpu = cpu.step(0)
    rec_gpu = mon.history[-1]
    for name, a in rec_cpu.layer_alpha.items():
        assert rec_gpu.layer_alpha[name] == pytest.approx(a, rel=1e-3)


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"schedule": "linear"}, ValueError, r"schedule must be 'log', a positive int .* got 'linear'"),
    ({"schedule": 0}, ValueError, "schedule"),
    ({"schedule": [5, 3]}, ValueError, "strictly increasing"),
    ({"schedule": [-1]}, ValueError, "non-negative int steps"),
    ({"schedule": 2.5}, TypeError, "schedule must be 'log', a positive int or a sequence"),
    ({"per_decade": 0}, ValueError, "per_decade"),
    ({"on_phase_change": 3}, TypeError, "on_phase_change must be callable"),
    ({"classifier": object()}, TypeError, "classifier must be a PhaseClassifier"),
    ({"randomize": "yes"}, TypeError, "randomize must be True or False"),
    ({"rng": -1}, ValueError, "rng must be a non-negative seed; got -1"),
    ({"rng": 1.5}, TypeError, "rng must be None, a non-negative int seed or a numpy Generator"),
    ({"center_traps": "yes"}, TypeError, "center_traps must be True or False"),
])
def test_constructor_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        Monitor(_model(), **kwargs)


def test_constructor_rejects_a_non_module():
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module; got dict"):
        Monitor({"w": torch.zeros(3, 3)})


def test_step_errors():
    mon = Monitor(_model(), schedule=[0, 1], randomize=False)
    with pytest.raises(ValueError, match=r"step must be a non-negative int; got -1"):
        mon.step(-1)
    with pytest.raises(TypeError, match=r"step must be an int .* got 1.5"):
        mon.step(1.5)
    with pytest.raises(ValueError, match=r"train_acc must be a fraction in \[0, 1\] .* got 95"):
        mon.step(0, train_acc=95)


def test_a_signature_held_back_by_the_norm_gate_is_logged_once_and_is_not_an_alarm(caplog):
    # every layer has the signature (alpha < 40) once fitted, but a gate of 50 x the first norm never opens
    clf = PhaseClassifier(causal=True, alpha_grok=50.0, alpha_anti=40.0, anti_rule="alpha", norm_ratio=50.0)
    model = _model()
    mon = Monitor(model, schedule=[0, 3, 6, 9], classifier=clf)
    with caplog.at_level(logging.INFO, logger="htsr_diag.monitor"):
        _train(model, mon, 10, train_acc=lambda s: 0.5 if s < 5 else 1.0)
    assert mon.alarm_step is None and mon.phase != ANTI
    assert mon.gated_signature_step == 6  # the first analysis with the training set fitted
    notes = [r.getMessage() for r in caplog.records if "below the norm gate" in r.getMessage()]
    assert len(notes) == 1 and notes[0].startswith("step 6: ") and "not an alarm" in notes[0]
    # with the gate off the same signature is the alarm, and nothing is noted
    mon2 = Monitor(_model(), schedule=[0, 3, 6, 9], classifier=clf.set_params(norm_ratio=None))
    _train(mon2.model, mon2, 10, train_acc=lambda s: 0.5 if s < 5 else 1.0)
    assert mon2.alarm_step == 6 and mon2.gated_signature_step is None


def test_steps_must_not_go_back():
    mon = Monitor(_model(), schedule=[0, 5, 50], randomize=False)
    assert mon.step(0, train_acc=0.5) is not None
    assert mon.step(3) is None
    assert mon.step(3) is None  # the same step again (e.g. once per micro-batch) is fine off the schedule
    with pytest.raises(ValueError, match=r"step must not decrease over the calls; got step 2 after step 3\. Pass "
                                         r"the training step, which only grows"):
        mon.step(2)
    with pytest.raises(ValueError, match=r"got step 1 after step 3"):
        mon.step(1, force=True)
    assert mon.step(6).step == 6  # the refused calls changed nothing: step 5 is caught up at 6
    assert mon.step() is None and mon._counter == 8  # the internal counter continues from the last step


def test_force_never_analyses_a_step_twice():
    mon = Monitor(_model(), schedule=[0, 5, 50], randomize=False)
    mon.step(0, train_acc=0.5)
    with pytest.raises(ValueError, match=r"step must be larger than the last analysed step to analyse it; got step 0 "
                                         r"with force=True after the analysis at step 0\. A step is analysed once"):
        mon.step(0, force=True)
    assert mon.step(4) is None
    assert mon.step(4, force=True).step == 4  # seen but not analysed: may be forced
    with pytest.raises(ValueError, match=r"got step 4 with force=True after the analysis at step 4"):
        mon.step(4, force=True)
    assert mon.step(4) is None  # off the schedule, the same step is still just a no-op
    assert [r.step for r in mon.history] == [0, 4]


def test_missing_train_acc_warns_once_and_only_without_it():
    with warnings.catch_warnings():
        warnings.simplefilter("error", MissingTrainAccWarning)
        given_once = Monitor(_model(), schedule=[0, 1, 2, 3, 4], randomize=False)
        given_once.step(0, train_acc=0.2)  # a training accuracy was received: no warning afterwards
        for s in range(1, 5):
            given_once.step(s)
        no_rule = Monitor(_model(), schedule=[0, 1, 2, 3, 4], randomize=False,
                          classifier=PhaseClassifier(causal=True, use_train_acc=False))
        for s in range(5):
            no_rule.step(s)  # the classifier does not read it: nothing to warn about
        two = Monitor(_model(), schedule=[0, 1], randomize=False)
        two.step(0), two.step(1)  # fewer than three analyses: not yet
    mon = Monitor(_model(), schedule=[0, 1, 2, 3, 4], randomize=False)
    mon.step(0), mon.step(1)
    with pytest.warns(MissingTrainAccWarning, match=r"Monitor: 3 analyses and no train_acc yet"):
        mon.step(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MissingTrainAccWarning)
        mon.step(3), mon.step(4)  # once per Monitor


def test_an_analysis_without_any_finite_feature_is_unknown(caplog):
    # The model's weights turn NaN at step 6 (a diverged step) and are restored at step 9. The
    # NaN analysis is "unknown" with a warning; it is no phase change, so the callback sees
    # pre-grokking -> anti-grokking once, at step 9, as if step 6 had not been analysed.
    from htsr_diag.exceptions import DegenerateSpectrumWarning
    from htsr_diag.phases import UNKNOWN

    clf = PhaseClassifier(causal=True, alpha_grok=50.0, alpha_anti=40.0, anti_rule="alpha", norm_ratio=None)
    seen = []
    model = _model()
    mon = Monitor(model, schedule=[0, 3, 6, 9], classifier=clf,
                  on_phase_change=lambda prev, rec: seen.append((prev, rec.phase, rec.step)))
    mon.step(0, train_acc=0.5)
    mon.step(3, train_acc=0.5)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    with pytest.warns(NoFeatureWarning, match=r"the checkpoint at step 6 has no finite feature .* its phase is "
                                              r"'unknown'"), pytest.warns(DegenerateSpectrumWarning):
        rec = mon.step(6, train_acc=1.0)
    assert rec.phase == UNKNOWN and np.isnan(rec.confidence) and mon.phase == UNKNOWN
    assert seen == [] and mon.alarm_step is None
    model.load_state_dict(saved)
    with caplog.at_level(logging.WARNING, logger="htsr_diag.monitor"):
        rec = mon.step(9, train_acc=1.0)
    assert [r.phase for r in mon.history] == [PRE, PRE, UNKNOWN, ANTI]
    assert seen == [(PRE, ANTI, 9)] and mon.alarm_step == 9 and mon.phase == ANTI
    assert np.isfinite(rec.confidence)
    assert ["anti-grokking began at step 9" in r.getMessage() for r in caplog.records] == [True]


def _layer(name, shape, alpha, n_traps, norm, srank):
    from htsr_diag.analyze import LayerReport

    n, m = max(shape), min(shape)
    return LayerReport(name=name, type="Linear", shape=shape, N=n, M=m, Q=n / m, n_slices=1, n_eigenvalues=m,
                       alpha=alpha, n_traps=n_traps, frobenius_norm=norm, stable_rank=srank)


def test_monitor_labels_equal_the_causal_predict_over_a_long_run(monkeypatch):
    # 300 analyses whose features go through all three phases (the stable rank falls after the
    # fit, then a layer grows, gets traps and a heavy tail): the Monitor's running labels and
    # confidences are those of PhaseClassifier(causal=True).predict / .confidence on the same
    # features, computed once at the end. The Monitor keeps one growing feature table
    # (FeatureRows) rather than re-reading its history; this checks that nothing is lost.
    from htsr_diag.analyze import ModelReport

    n = 300
    t = np.arange(n)
    g = np.random.default_rng(0)
    acc = np.clip(0.3 + t / 60, 0, 1.0)
    srank = np.where(t < 80, 40.0, 40.0 - 0.2 * (t - 80)).clip(5) + g.normal(0, 0.3, n)
    norm1 = 10.0 + np.where(t < 200, 0.0, 0.2 * (t - 200))
    alpha1 = np.where(t < 230, 4.5, 1.6) + g.normal(0, 0.05, n)
    traps1 = np.where(t < 220, 0, 3)
    reports = [ModelReport(layers=[_layer("fc1", (200, 784), float(alpha1[i]), int(traps1[i]), float(norm1[i]),
                                          float(srank[i])),
                                   _layer("fc2", (200, 200), 4.0 + 0.01 * g.normal(), 0, 8.0, 30.0)],
                           skipped=[], center_traps=True) for i in range(n)]
    it = iter(reports)
    monkeypatch.setattr(analyze_module, "analyze", lambda *a, **k: next(it))
    mon = Monitor(_model(), schedule=1)
    for i in range(n):
        mon.step(i, train_acc=float(acc[i]))
    clf = PhaseClassifier(causal=True)
    feats = [clf.report_features(r, train_acc=float(a)) for r, a in zip(reports, acc)]
    for i, f in enumerate(feats):
        f["step"] = float(i)
    offline = clf.predict(feats)
    assert [r.phase for r in mon.history] == offline.tolist()
    assert set(offline.tolist()) == set(PHASES)  # all three phases reached (else less is tested)
    np.testing.assert_allclose([r.confidence for r in mon.history], clf.confidence(feats), rtol=1e-12)
    assert mon.alarm_step == int(np.flatnonzero(offline == ANTI)[0])
