"""The result base (htsr_diag._results): every result type round-trips through to_dict / from_dict
and to_json / from_json, writes strict JSON (NaN as null), and reads files written before the base."""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import pkgutil
from pathlib import Path

import numpy as np
import pytest
import torch

import htsr_diag
from conftest import seeded_mlp
from htsr_diag import (ModelReport, Monitor, Trajectory, activation_sparsity, analyze, circuit_complexity,
                       correlation_traps, ks_trap_test, l2_norm, layer_alpha, loss_signature, weight_entropy,
                       write_report)
from htsr_diag._results import Result, result_types, strict_json

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = Path(__file__).parent / "data"


# ----------------------------------------------------------------------------- NaN-aware equality
def _same(a, b, where: str = "x") -> None:
    """Assert a == b field by field: NaN equals NaN, arrays by dtype kind, shape and values."""
    if isinstance(a, Result):
        assert type(a) is type(b), f"{where}: {type(a).__name__} vs {type(b).__name__}"
        for f in dataclasses.fields(a):
            _same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray), f"{where}: ndarray vs {type(b).__name__}"
        assert a.dtype.kind == b.dtype.kind, f"{where}: {a.dtype} vs {b.dtype}"
        if a.size == 0:  # a JSON list cannot hold the shape (0, 2) of an empty 2-D array: (0,) comes back
            assert b.size == 0, where
            return
        assert a.shape == b.shape, f"{where}: {a.shape} vs {b.shape}"
        if a.dtype.kind == "f":
            np.testing.assert_array_equal(a, b, err_msg=where)  # treats NaN == NaN
        else:
            assert (a == b).all(), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), f"{where}: keys {list(a)} vs {b!r:.200}"
        for k in a:
            _same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), f"{where}: {a!r:.200} vs {b!r:.200}"
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), f"{where}: NaN vs {b!r}"
    else:
        assert type(a) is type(b) and a == b, f"{where}: {a!r} ({type(a).__name__}) vs {b!r} ({type(b).__name__})"


def _no_constants(text: str):
    def refuse(token):
        raise AssertionError(f"not strict JSON: bare {token} in the output")
    return json.loads(text, parse_constant=refuse)


# ----------------------------------------------------------------------------- one real instance per type
def _mlp(seed: int = 0) -> torch.nn.Module:
    return seeded_mlp(64, 60, 30, seed=seed)


def _heavy(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_t(3, size=(120, 60))


@pytest.fixture(scope="module")
def instances(tmp_path_factory) -> dict[str, Result]:
    """One instance of every result type, each from a small real computation."""
    model = _mlp()
    x = torch.randn(32, 64, generator=torch.Generator().manual_seed(0))
    report = analyze(model, rng=0)
    reports = [analyze(_mlp(s), rng=0, center_traps=True) for s in range(4)]
    traj = Trajectory(steps=np.array([0, 10, 100, 1000]), reports=reports,
                      metrics={"train_acc": [0.1, 0.6, 1.0, 1.0], "test_acc": [0.1, 0.2, 0.9, np.nan]},
                      source="four seeds")
    run = write_report(trajectory=traj, out_dir=tmp_path_factory.mktemp("report"), baselines=False, progress=False)
    mon = Monitor(_mlp(), schedule=[0])
    record = mon.step(0, train_acc=0.5)
    from htsr_diag.sweep import sweep

    swept = sweep("fast", {"lr": [1e-3], "weight_decay": [0.0]}, seeds=(0,), out=tmp_path_factory.mktemp("sweep") / "sw",
                  steps=20, signature_steps=20, figures=False,
                  overrides={"data_dir": "bundled", "checkpoints_per_decade": 2})
    t = np.arange(200.0)
    out = {
        "LayerReport": report.layers[0],
        "ModelReport": report,
        "SkippedParam": report.skipped[0],
        "TrapReport": correlation_traps(_heavy(), rng=0),
        "KSTrapResult": ks_trap_test(_heavy(), rng=0),
        "PowerLawFit": layer_alpha(_heavy()),
        "ActivationSparsity": activation_sparsity(model, x),
        "WeightEntropy": weight_entropy(model),
        "CircuitComplexity": circuit_complexity(model, x, rng=0),
        "L2Norm": l2_norm(model),
        "LossSignature": loss_signature(np.sin(0.3 * t) + 0.01 * t, window=(10, 190)),
        "MonitorRecord": record,
        "Trajectory": traj,
        "RunSummary": run.summary,
        "RunReport": run,
        "LabelExplanation": run.explanations[0],
        "SweepResult": swept,
    }
    # the WeightWatcher comparison (htsr_diag.interop), built directly: running WeightWatcher
    # here would make this fixture need the compare extra (tests/test_interop.py runs it)
    from htsr_diag.interop import LayerComparison, WeightWatcherComparison

    row = LayerComparison(name="0", type="Conv2d", N=64, M=32, n_eigenvalues=128, N_ww=32, M_ww=64,
                          n_eigenvalues_ww=128, alpha=3.5, alpha_ww=3.5, xmin=0.2, xmin_ww=0.1, n_traps=0.0,
                          n_traps_ww=float("nan"), alpha_agrees=True, causes=("swapped-dims", "conv-scale"),
                          difference="N and M swapped")
    out["LayerComparison"] = row
    out["WeightWatcherComparison"] = WeightWatcherComparison(layers=(row,), weightwatcher_version="0.7.7")
    return out


def _import_every_module() -> None:
    """Import every module of the package, so that every Result subclass is registered whatever
    the test modules imported before (a module whose optional dependency is missing is left out)."""
    for info in pkgutil.walk_packages(htsr_diag.__path__, "htsr_diag."):
        if not info.name.endswith("__main__"):
            try:
                importlib.import_module(info.name)
            except ImportError:
                pass


_import_every_module()
TYPES = {t.__name__: t for t in result_types()}


def test_every_result_type_is_covered_and_frozen(instances):
    # a new Result subclass without an instance above fails here, so none is forgotten
    assert sorted(TYPES) == sorted(instances)
    for name, cls in TYPES.items():
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen, name
        assert isinstance(instances[name], cls), name
        assert getattr(htsr_diag, name, cls) is cls  # the public name is the same class


@pytest.mark.parametrize("name", sorted(TYPES))
def test_dict_round_trip(instances, name):
    x = instances[name]
    d = x.to_dict()
    _same(type(x).from_dict(d), x, name)
    assert set(d) >= {f.name for f in dataclasses.fields(x)}


@pytest.mark.parametrize("name", sorted(TYPES))
def test_json_round_trip_is_strict(instances, name, tmp_path):
    x = instances[name]
    text = x.to_json()
    parsed = _no_constants(text)
    assert isinstance(parsed, dict)
    _same(type(x).from_json(text), x, name)
    path = tmp_path / f"{name}.json"
    assert x.to_json(path) == path.read_text(encoding="utf-8") == text
    _same(type(x).from_json(path), x, name)
    _same(type(x).from_dict(parsed), x, name)


def test_nan_is_null_on_disk_and_nan_in_memory():
    with pytest.warns(htsr_diag.DegenerateSpectrumWarning):
        fit = layer_alpha(np.zeros((6, 5)))
    assert math.isnan(fit.alpha)
    assert math.isnan(fit.to_dict()["alpha"])  # in memory: float('nan')
    assert _no_constants(fit.to_json())["alpha"] is None  # on disk: null
    assert math.isnan(type(fit).from_json(fit.to_json()).alpha)
    # a null inside an array field comes back as NaN in a float array
    traj = Trajectory(steps=[0, 1], reports=[analyze(_mlp(), rng=0)] * 2, metrics={"test_acc": [np.nan, 0.5]})
    back = Trajectory.from_json(traj.to_json())
    assert back.metrics["test_acc"].dtype == np.float64 and np.isnan(back.metrics["test_acc"][0])


def test_infinity_is_null_too():
    assert strict_json({"a": float("inf"), "b": [-np.inf, 1.0]}) == '{"a": null, "b": [null, 1.0]}'


def test_count_fields_keep_int_and_nan(instances):
    lr = instances["LayerReport"]
    assert isinstance(lr.n_traps, int)
    back = type(lr).from_json(lr.to_json())
    assert isinstance(back.n_traps, int) and back.n_traps == lr.n_traps
    no_traps = analyze(_mlp(), randomize=False).layers[0]
    assert math.isnan(no_traps.n_traps)
    assert math.isnan(type(no_traps).from_json(no_traps.to_json()).n_traps)


def test_model_report_reads_a_file_written_before_the_base(instances):
    """tests/data/old_model_report.json and old_trajectory.json were written by the code of commit
    56c0b2b (before this base): ModelReport.to_json wrote bare NaN tokens, json.dumps(allow_nan=True)."""
    old = (DATA / "old_model_report.json").read_text()
    assert "NaN" in old  # the file really has the old bare tokens
    rep = ModelReport.from_json(DATA / "old_model_report.json")
    assert rep.names == ["0", "2"] and rep.randomize is False
    assert all(math.isnan(lr.n_traps) for lr in rep.layers)
    assert all(lr.alpha > 1 for lr in rep.layers)
    again = ModelReport.from_json(rep.to_json())
    _same(again, rep)
    traj = Trajectory.from_json(DATA / "old_trajectory.json")
    assert traj.steps.tolist() == [0, 5] and traj.metrics["test_acc"].dtype == np.float64
    assert np.isnan(traj.metrics["test_acc"][0])
    _same(Trajectory.from_json(traj.to_json()), traj)


def test_from_dict_errors():
    with pytest.raises(TypeError, match="PowerLawFit.from_dict takes a mapping"):
        htsr_diag.PowerLawFit.from_dict([1, 2])
    with pytest.raises(ValueError, match=r"missing required keys \['xmin'"):
        htsr_diag.PowerLawFit.from_dict({"alpha": 2.0})
    with pytest.raises(ValueError, match="not a serialised Trajectory"):
        Trajectory.from_dict({"format": "htsr_diag.ModelReport", "steps": [], "reports": []})
    with pytest.raises(ValueError, match="not a serialised ModelReport"):
        ModelReport.from_dict({"format": "htsr_diag.Trajectory", "layers": []})
    with pytest.raises(ValueError, match="must be JSON text or an existing file"):
        htsr_diag.LossSignature.from_json("no/such/file.json")


def test_unknown_keys_are_ignored_and_defaults_fill_missing(instances):
    lr = instances["LayerReport"]
    d = {k: v for k, v in lr.to_dict().items() if k not in ("warning", "status")}
    back = type(lr).from_dict({**d, "from_a_newer_version": 1})
    assert back.status == "ok" and back.warning == ""
