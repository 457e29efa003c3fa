"""Tests of analyze_checkpoints / Trajectory on a short real training run."""

from __future__ import annotations

import json
import multiprocessing
import math
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from htsr_diag.analyze import analyze
from htsr_diag.phases import PhaseClassifier
from htsr_diag.trajectory import METRIC_NAMES, Trajectory, analyze_checkpoints

# the test MLPs' 10-unit heads have fewer than 20 eigenvalues: the small-spectrum warning is expected there and is not under test here
# (tests/test_warn_once.py and tests/test_powerlaw.py test the warning itself)
pytestmark = pytest.mark.filterwarnings("ignore::htsr_diag.exceptions.SmallSpectrumWarning")


@pytest.fixture(scope="module")
def run_dir(fast_run_30) -> Path:
    """A real run of the trainer: the reference MLP, 30 steps, checkpoints 0, 1, 3, 10, 30 (conftest)."""
    return fast_run_30


@pytest.fixture(scope="module")
def serial(run_dir) -> Trajectory:
    return analyze_checkpoints(run_dir, rng=0)


def _same(a: Trajectory, b: Trajectory) -> None:
    np.testing.assert_array_equal(a.steps, b.steps)
    # exact equality (NaN == NaN): the per-checkpoint seeding makes runs bit-identical
    assert json.dumps(a.to_dict(), sort_keys=True) == json.dumps(b.to_dict(), sort_keys=True)


def test_run_folder_trajectory_matches_analyze_per_checkpoint(run_dir, serial):
    from htsr_diag.train import list_checkpoints, read_metrics

    pairs = list_checkpoints(run_dir)
    assert serial.steps.tolist() == [s for s, _ in pairs]
    assert serial.steps.tolist() == [0, 1, 3, 10, 30]
    assert serial.layer_names[:2] == ["fc1", "fc2"]
    # each checkpoint's report is analyze() of that file with the stream SeedSequence(0, spawn_key=(step,))
    step, path = pairs[-1]
    rng = np.random.default_rng(np.random.SeedSequence(0, spawn_key=(step,)).spawn(2)[0])
    direct = analyze(path, rng=rng, center_traps=True)  # analyze_checkpoints counts centred traps by default
    assert serial.reports[-1].center_traps is True
    assert json.dumps(direct.to_dict(), sort_keys=True) == json.dumps(serial.reports[-1].to_dict(), sort_keys=True)
    # the metrics are aligned with the checkpoint steps
    rows = {int(r["step"]): r for r in read_metrics(run_dir)}
    for j, s in enumerate(serial.steps):
        for k in METRIC_NAMES:
            expected = rows[int(s)][k] if int(s) in rows and k in rows[int(s)] else math.nan
            np.testing.assert_equal(serial.metrics[k][j], expected)
    # feature(): per layer, mean alpha and summed traps over layers
    a1, a2 = serial.feature("alpha", "fc1"), serial.feature("alpha", "fc2")
    assert a1.shape == serial.steps.shape and np.isfinite(a1).all()
    per_layer = np.vstack([serial.feature("alpha", n) for n in serial.layer_names])
    np.testing.assert_allclose(serial.feature("alpha"), np.nanmean(per_layer, axis=0))
    traps = np.vstack([serial.feature("n_traps", n) for n in serial.layer_names])
    np.testing.assert_array_equal(serial.feature("n_traps"), traps.sum(axis=0))
    np.testing.assert_array_equal(serial.feature("test_acc"), serial.metrics["test_acc"])


def test_frame_csv_and_json_round_trip(serial, tmp_path):
    frame = serial.to_frame()
    n_layers = len(serial.reports[0].layers)
    assert len(frame) == len(serial) * n_layers
    assert {"step", "alpha", "train_acc", "test_acc"} <= set(frame.columns)
    assert frame["step"].tolist()[:n_layers] == [0] * n_layers
    path = serial.to_csv(tmp_path / "t.csv")
    import pandas as pd

    back = pd.read_csv(path)
    np.testing.assert_allclose(back["alpha"].to_numpy(), frame["alpha"].to_numpy(), equal_nan=True)
    serial.to_json(tmp_path / "t.json")
    again = Trajectory.from_json(tmp_path / "t.json")
    _same(serial, again)
    np.testing.assert_array_equal(again.feature("alpha", "fc1"), serial.feature("alpha", "fc1"))


def test_process_pool_equals_serial(run_dir, serial):
    # "spawn": a forked child of a process whose torch/OpenMP threads are running can deadlock
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        parallel = analyze_checkpoints(run_dir, rng=0, executor=pool)
    _same(serial, parallel)


def test_dask_local_cluster_equals_serial(run_dir, serial):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        on_dask = analyze_checkpoints(run_dir, rng=0, executor=client.get_executor())
    _same(serial, on_dask)


def test_a_checkpoint_gets_the_same_numbers_in_any_subset_or_order(run_dir, serial):
    from htsr_diag.train import list_checkpoints

    pairs = list_checkpoints(run_dir)
    subset = pairs[::-2]  # reversed, every other one: sorted back by step, seeded by step
    sub = analyze_checkpoints([p for _, p in subset], rng=0)
    assert sub.steps.tolist() == sorted(s for s, _ in subset)
    for j, s in enumerate(sub.steps):
        k = serial.steps.tolist().index(s)
        assert json.dumps(sub.reports[j].to_dict(), sort_keys=True) == json.dumps(serial.reports[k].to_dict(),
                                                                                 sort_keys=True)
    # the metrics next to the files (the run folder's metrics.jsonl) come with them, as from the folder
    assert sorted(sub.metrics) == sorted(serial.metrics)
    for k in METRIC_NAMES:
        np.testing.assert_array_equal(sub.metrics[k], serial.metrics[k][np.isin(serial.steps, sub.steps)])


def test_models_and_state_dicts(run_dir, serial):
    from htsr_diag.train import list_checkpoints
    from htsr_diag.layers import load_state_dict

    pairs = list_checkpoints(run_dir)[-2:]
    states = [load_state_dict(p) for _, p in pairs]
    steps = [s for s, _ in pairs]
    from_states = analyze_checkpoints(states, steps=steps, rng=0)
    models = []
    for sd in states:
        m = torch.nn.Module()
        for name in ("fc1", "fc2", "fc3"):
            w = sd[f"{name}.weight"]
            layer = torch.nn.Linear(w.shape[1], w.shape[0], dtype=w.dtype)
            layer.load_state_dict({"weight": w, "bias": sd[f"{name}.bias"]})
            setattr(m, name, layer)
        models.append(m)
    from_models = analyze_checkpoints(models, steps=steps, rng=0)
    for traj in (from_states, from_models):
        np.testing.assert_array_equal(traj.feature("alpha", "fc1"), serial.feature("alpha", "fc1")[-2:])
        np.testing.assert_array_equal(traj.feature("n_traps"), serial.feature("n_traps")[-2:])
    no_steps = analyze_checkpoints(states[:1], rng=0)
    assert no_steps.steps.tolist() == [0]


def test_inputs_add_the_baselines(run_dir):
    from htsr_diag.train import list_checkpoints, load_mnist

    data = load_mnist()
    x = data.train_x[:64].reshape(64, -1).astype(np.float32) / 255.0  # pixels in [0, 1], as in training
    pairs = list_checkpoints(run_dir)[-2:]
    threads = torch.get_num_threads()
    traj = analyze_checkpoints(run_dir, inputs=x, rng=0, num_threads=1)
    assert torch.get_num_threads() == threads  # the fixed thread count is restored afterwards
    assert traj.baselines, "inputs given: baselines expected"
    for name, values in traj.baselines.items():
        assert values.shape == traj.steps.shape, name
    assert {"l2_norm", "weight_entropy", "activation_sparsity", "circuit_complexity"} <= set(traj.baselines)
    # the run folder's MLP was rebuilt from config.json, so the activation baselines ran
    assert np.isfinite(traj.baselines["activation_sparsity"]).all()
    # l2 norm of the checkpoint, weights and biases (Omnigrok's definition), by hand
    from htsr_diag.layers import load_state_dict

    sd = load_state_dict(pairs[-1][1])
    by_hand = math.sqrt(sum(float((torch.as_tensor(v).double() ** 2).sum()) for v in sd.values()))
    np.testing.assert_allclose(traj.baselines["l2_norm"][-1], by_hand, rtol=1e-6)


def test_classifier_runs_on_a_real_trajectory(serial):
    clf = PhaseClassifier()
    labels = clf.predict(serial)
    assert labels.shape == serial.steps.shape
    assert set(labels) <= {"pre-grokking", "grokking", "anti-grokking"}
    # 30 steps of the fast preset: the training set is not fitted at step 0
    assert labels[0] == "pre-grokking"
    assert clf.confidence(serial).shape == serial.steps.shape


def test_bad_sources(tmp_path, run_dir):
    with pytest.raises(ValueError, match="holds no checkpoint"):
        analyze_checkpoints(tmp_path)
    with pytest.raises(ValueError, match="empty sequence"):
        analyze_checkpoints([])
    with pytest.raises(TypeError, match=r"sources\[0\] must be a torch module"):
        analyze_checkpoints([42])
    with pytest.raises(ValueError, match="is not a file"):
        analyze_checkpoints([tmp_path / "missing.safetensors"])
    noname = tmp_path / "weights.safetensors"
    noname.write_bytes(b"")
    with pytest.raises(ValueError, match=r"cannot read a step from the name of 1 checkpoint\(s\): '.*weights\.safetensors'"):
        analyze_checkpoints([noname])
    with pytest.raises(ValueError, match="steps must give one step per source"):
        analyze_checkpoints([{"w": torch.zeros(3, 3)}], steps=[1, 2])
    with pytest.raises(ValueError, match="steps must be unique"):
        analyze_checkpoints([{"w": torch.zeros(3, 3)}] * 2, steps=[1, 1])
    with pytest.raises(ValueError, match="steps must be None for a run folder"):
        analyze_checkpoints(run_dir, steps=[1])
    with pytest.raises(TypeError, match="executor must be a concurrent.futures.Executor"):
        analyze_checkpoints(run_dir, executor=object())
    with pytest.raises(ValueError, match="rng must be a non-negative seed"):
        analyze_checkpoints(run_dir, rng=-1)
    with pytest.raises(ValueError, match="num_threads must be an integer >= 1"):
        analyze_checkpoints(run_dir, num_threads=0)
    with pytest.raises(TypeError, match="model_factory must be a callable"):
        analyze_checkpoints(run_dir, model_factory=3)
    ens = tmp_path / "ens"
    (ens / "member_00").mkdir(parents=True)
    with pytest.raises(ValueError, match="ensemble folder.*member_00"):
        analyze_checkpoints(ens)


def test_trajectory_validation():
    with pytest.raises(ValueError, match="one entry per step"):
        Trajectory(steps=[0, 1], reports=[])
    with pytest.raises(ValueError, match="is not a serialised Trajectory"):
        Trajectory.from_dict({"format": "other"})


def test_a_trajectory_in_any_order_is_sorted_by_step(serial, tmp_path):
    # Built or read with its checkpoints shuffled, a trajectory is the one in step order: each
    # report, metric and baseline value travels with its step.
    perm = [3, 0, 4, 2, 1]
    data = serial.to_dict()
    shuffled = {**data, "steps": [data["steps"][i] for i in perm], "reports": [data["reports"][i] for i in perm],
                "metrics": {k: [v[i] for i in perm] for k, v in data["metrics"].items()}}
    _same(Trajectory.from_dict(shuffled), serial)
    (tmp_path / "shuffled.json").write_text(json.dumps(shuffled, allow_nan=True))
    _same(Trajectory.from_json(tmp_path / "shuffled.json"), serial)
    built = Trajectory(steps=serial.steps[perm], reports=[serial.reports[i] for i in perm],
                       metrics={k: v[perm] for k, v in serial.metrics.items()},
                       baselines={"b": np.arange(5.0)[perm]}, source=serial.source)
    _same(Trajectory(steps=built.steps, reports=built.reports, metrics=built.metrics, source=serial.source), serial)
    np.testing.assert_array_equal(built.baselines["b"], np.arange(5.0))
    assert built.steps.tolist() == [0, 1, 3, 10, 30]
    clf = PhaseClassifier()
    np.testing.assert_array_equal(clf.predict(built), clf.predict(serial))


def test_trajectory_steps_must_be_unique_whole_numbers(serial):
    reports = serial.reports[:3]
    with pytest.raises(ValueError, match=r"steps must not repeat \(one checkpoint per step\); step 10 appears 2 "
                                         r"times\. Drop the repeated checkpoint\(s\) or correct their steps"):
        Trajectory(steps=[10, 0, 10], reports=reports)
    data = serial.to_dict()
    with pytest.raises(ValueError, match=r"step 3 appears 2 times"):
        Trajectory.from_dict({**data, "steps": [0, 1, 3, 3, 30]})
    with pytest.raises(ValueError, match=r"steps must be whole numbers \(training steps\); got nan at index 1\. "
                                         r"Drop that checkpoint or give its step"):
        Trajectory(steps=[0.0, np.nan, 2.0], reports=reports)
    with pytest.raises(ValueError, match=r"steps must be whole numbers .* got 1.5 at index 0"):
        Trajectory(steps=[1.5, 2.0, 3.0], reports=reports)
    with pytest.raises(TypeError, match=r"steps must be a sequence of int training steps; got dtype <U1"):
        Trajectory(steps=["a", "b", "c"], reports=reports)
    assert Trajectory(steps=[0.0, 5.0, 2.0], reports=reports).steps.tolist() == [0, 2, 5]
