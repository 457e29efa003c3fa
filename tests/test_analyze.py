"""Tests of htsr_diag.analyze: the whole-model report, against WeightWatcher 0.7.7."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

from conftest import weightwatcher_or_skip
from htsr_diag.analyze import LayerReport, ModelReport, analyze
from htsr_diag.exceptions import CheckpointError, DegenerateSpectrumWarning, HTSRWarning

# fc3 of the test MLP has 10 eigenvalues: its small-n warning is expected and not under test here
pytestmark = pytest.mark.filterwarnings("ignore::htsr_diag.exceptions.SmallSpectrumWarning")


def _heavy_mlp(seed: int = 0) -> nn.Module:
    """784-200-200-10 MLP with Student-t(3) weights (heavy-tailed spectra, alpha in the HTSR range)."""
    rng = np.random.default_rng(seed)
    model = nn.ModuleDict({"fc1": nn.Linear(784, 200), "fc2": nn.Linear(200, 200), "fc3": nn.Linear(200, 10)})
    with torch.no_grad():
        for lin in model.values():
            lin.weight.copy_(torch.from_numpy(rng.standard_t(3, size=tuple(lin.weight.shape)) * 0.05))
    return model


def _ww_details(model: nn.Module):
    """WeightWatcher 0.7.7 analyze(randomize=False), its stdout and logging silenced."""
    ww = weightwatcher_or_skip()
    buf = io.StringIO()
    ww_logger = logging.getLogger("weightwatcher")
    level = ww_logger.level
    ww_logger.setLevel(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            details = ww.WeightWatcher(model=model).analyze(randomize=False)
    finally:
        ww_logger.setLevel(level)
    return details.set_index("name")


# ----------------------------------------------------------------------------- vs WeightWatcher
def test_alpha_matches_weightwatcher_on_linear_layers():
    model = _heavy_mlp()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HTSRWarning)
        report = analyze(model, randomize=False)
    ww = _ww_details(model)
    compared = 0
    for lr in report.layers:
        row = ww.loc[lr.name]
        assert (lr.N, lr.M) == (int(row["N"]), int(row["M"]))
        if lr.n_eigenvalues >= 20 and int(row["num_evals"]) >= 20:  # both fit >= 20 eigenvalues (not small-n)
            # reference: weightwatcher 0.7.7 WeightWatcher.analyze(randomize=False), columns alpha, xmin
            assert lr.alpha == pytest.approx(float(row["alpha"]), rel=1e-6)
            assert lr.xmin == pytest.approx(float(row["xmin"]), rel=1e-6)
            assert lr.lambda_max == pytest.approx(float(row["lambda_max"]), rel=1e-6)
            compared += 1
    assert compared == 2  # fc1 and fc2 (fc3 has 10 eigenvalues only)


def test_conv2d_even_kernel_dims_right_where_weightwatcher_swaps_them():
    torch.manual_seed(0)
    model = nn.ModuleDict({"conv": nn.Conv2d(48, 16, 2)})  # slices (out 16, in 48); 4 slices, 64 eigenvalues
    with torch.no_grad():
        model["conv"].weight.copy_(torch.from_numpy(np.random.default_rng(1).standard_t(3, size=(16, 48, 2, 2))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HTSRWarning)
        lr = analyze(model, randomize=False).layer("conv")
    ww = _ww_details(model).loc["conv"]
    # ours: N = max(16, 48) = 48, M = 16, Q = 3 (the definition, REFERENCES section 2)
    assert (lr.N, lr.M, lr.Q, lr.n_eigenvalues) == (48, 16, 3.0, 64)
    # weightwatcher 0.7.7 reports N = 16, M = 48, Q = 1/3 for this even kernel (its known defect)
    assert (int(ww["N"]), int(ww["M"])) == (16, 48) and float(ww["Q"]) == pytest.approx(1 / 3)
    # ... but pools the same 64 eigenvalues, so alpha agrees (weightwatcher 0.7.7 alpha column)
    assert int(ww["num_evals"]) == 64
    assert lr.alpha == pytest.approx(float(ww["alpha"]), rel=1e-6)


def test_conv1d_analysed_where_weightwatcher_drops_it():
    rng = np.random.default_rng(2)
    kernel = rng.standard_t(3, size=(48, 16, 5))
    conv1 = nn.Conv1d(16, 48, 5)
    with torch.no_grad():
        conv1.weight.copy_(torch.from_numpy(kernel))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HTSRWarning)
        lr = analyze(nn.ModuleDict({"c1": conv1}), randomize=False).layer("c1")
    assert (lr.type, lr.N, lr.M, lr.Q, lr.n_slices, lr.n_eigenvalues) == ("Conv1d", 48, 16, 3.0, 5, 80)
    # weightwatcher 0.7.7 silently drops the Conv1d layer ...
    ww_model = nn.ModuleDict({"c1": conv1, "fc": nn.Linear(64, 32)})
    assert "c1" not in _ww_details(ww_model).index
    # ... but the same kernel as a (48, 16, 5, 1) Conv2d has the same 5 slices, which it analyses:
    conv2 = nn.Conv2d(16, 48, (5, 1))
    with torch.no_grad():
        conv2.weight.copy_(torch.from_numpy(kernel[..., None]))
    ww = _ww_details(nn.ModuleDict({"c1": conv2})).loc["c1"]
    assert int(ww["num_evals"]) == 80
    assert lr.alpha == pytest.approx(float(ww["alpha"]), rel=1e-6)  # weightwatcher 0.7.7 alpha column


class Conv1D(nn.Module):
    """GPT-2 / HF transformers Conv1D: weight stored (in, out)."""

    def __init__(self, nf: int, nx: int, weight: np.ndarray):
        super().__init__()
        self.weight = nn.Parameter(torch.from_numpy(weight))
        self.bias = nn.Parameter(torch.zeros(nf, dtype=torch.float64))

    def forward(self, x):
        return x @ self.weight + self.bias


def test_gpt2_conv1d_matches_weightwatcher_on_the_equivalent_linear():
    w_in_out = np.random.default_rng(3).standard_t(3, size=(300, 100))  # in 300, out 100
    model = nn.ModuleDict({"c_fc": Conv1D(100, 300, w_in_out)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HTSRWarning)
        lr = analyze(model, randomize=False).layer("c_fc")
    assert (lr.type, lr.shape, lr.N, lr.M, lr.Q) == ("Conv1D", (300, 100), 300, 100, 3.0)
    lin = nn.Linear(300, 100).double()
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w_in_out.T))  # nn.Linear stores (out, in)
    ww = _ww_details(nn.ModuleDict({"c_fc": lin})).loc["c_fc"]
    assert lr.alpha == pytest.approx(float(ww["alpha"]), rel=1e-6)  # weightwatcher 0.7.7 alpha column


# ----------------------------------------------------------------------------- the report
def test_report_fields_norms_and_skipped():
    model = _heavy_mlp()
    report = analyze(model, rng=0, progress=False)
    assert report.names == ["fc1", "fc2", "fc3"]
    assert [s.name for s in report.skipped] == ["fc1.bias", "fc2.bias", "fc3.bias"]
    W = model["fc2"].weight.detach().numpy().astype(np.float64)
    sv = np.linalg.svd(W, compute_uv=False)  # reference: numpy SVD
    lr = report.layer("fc2")
    assert lr.lambda_max == pytest.approx(sv[0] ** 2, rel=1e-10)
    assert lr.spectral_norm == pytest.approx(sv[0], rel=1e-10)
    assert lr.frobenius_norm == pytest.approx(np.linalg.norm(W), rel=1e-10)
    assert lr.stable_rank == pytest.approx(np.sum(sv ** 2) / sv[0] ** 2, rel=1e-10)
    assert lr.status == "ok" and isinstance(lr.n_traps, int) and lr.n_traps >= 0
    assert 0 <= lr.ks_pvalue <= 1 and lr.ks_statistic > 0 and lr.sigma_mp > 0
    assert lr.bulk_edge < lr.trap_threshold


def test_planted_large_entry_is_a_trap():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((200, 400))
    W[3, 7] = 200.0  # |W_pq| / sqrt(N) = 10 >> 1 + sqrt(M/N) = 1.71: a trap after any shuffle (BBP)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HTSRWarning)
        lr = analyze({"fc.weight": W}, rng=0).layer("fc")
    assert lr.n_traps >= 1 and len(lr.trap_eigenvalues) >= 1
    assert min(lr.trap_eigenvalues) > lr.trap_threshold


def test_randomize_false_and_ks_false():
    model = _heavy_mlp()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HTSRWarning)
        plain = analyze(model, randomize=False)
        no_ks = analyze(model, ks=False, rng=0)
    lr = plain.layer("fc1")
    assert math.isnan(lr.n_traps) and math.isnan(lr.sigma_mp) and math.isnan(lr.ks_pvalue) and lr.status == "ok"
    assert not math.isnan(no_ks.layer("fc1").sigma_mp) and math.isnan(no_ks.layer("fc1").ks_statistic)


def test_seeded_and_subset_gives_the_same_numbers():
    model = _heavy_mlp()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HTSRWarning)
        a = analyze(model, rng=5)
        b = analyze(model, rng=5)
        sub = analyze(model, rng=5, layers=["fc2"])
    assert a.to_json() == b.to_json()
    assert sub.names == ["fc2"] and sub.layer("fc2").to_dict() == a.layer("fc2").to_dict()
    assert {s.name: s.code for s in sub.skipped}["fc1.weight"] == "filtered-name"


def test_json_round_trip_and_frame(tmp_path):
    model = _heavy_mlp()
    with pytest.warns(DegenerateSpectrumWarning, match="layer 'fc2'"):
        with torch.no_grad():
            model["fc2"].weight[0, 0] = float("nan")
        report = analyze(model, rng=0)
    path = tmp_path / "report.json"
    text = report.to_json(path)
    json.loads(text)  # valid for Python's json (NaN written as NaN)
    back = ModelReport.from_json(path)
    assert back.to_json() == text
    assert back.layer("fc1").alpha == report.layer("fc1").alpha
    assert back.layer("fc1").trap_eigenvalues == report.layer("fc1").trap_eigenvalues
    assert isinstance(back.layers[0], LayerReport) and back.skipped == report.skipped
    frame = report.to_frame()
    assert list(frame["name"]) == ["fc1", "fc2", "fc3"]
    assert {"alpha", "xmin", "n_traps", "ks_pvalue", "status", "warning", "stable_rank"} <= set(frame.columns)
    with pytest.raises(ValueError, match="not a ModelReport dict"):
        ModelReport.from_dict({"rows": []})
    with pytest.raises(ValueError, match="neither"):
        ModelReport.from_json(tmp_path / "nope.json")


def test_nan_layer_gets_a_status_row_and_the_others_are_reported():
    model = _heavy_mlp()
    with torch.no_grad():
        model["fc2"].weight[5, 5] = float("nan")
    with pytest.warns(DegenerateSpectrumWarning, match=r"layer 'fc2' \(fc2.weight, shape \(200, 200\)\): non-finite"):
        report = analyze(model, rng=0)
    bad = report.layer("fc2")
    assert bad.status.startswith("non-finite weights") and math.isnan(bad.alpha) and math.isnan(bad.lambda_max)
    assert report.layer("fc1").status == "ok" and not math.isnan(report.layer("fc1").alpha)


def test_failing_layer_gives_a_row_not_a_failed_report(monkeypatch):
    import htsr_diag.traps as traps

    real = traps.randomized_analysis

    def flaky(W, *, rng=None, center_traps=True):
        if W.shape[0] == 10:
            raise np.linalg.LinAlgError("did not converge")
        return real(W, rng=rng, center_traps=center_traps)

    monkeypatch.setattr(traps, "randomized_analysis", flaky)
    with pytest.warns(HTSRWarning, match="layer 'fc3'.*failed: LinAlgError: did not converge"):
        report = analyze(_heavy_mlp(), rng=0)
    assert report.layer("fc3").status == "failed: LinAlgError: did not converge"
    assert report.layer("fc1").status == "ok"


def test_bad_input():
    with pytest.raises(ValueError, match="has no analysable layer"):
        analyze(nn.Sequential(nn.ReLU()))
    with pytest.raises(TypeError, match="randomize must be True or False"):
        analyze(_heavy_mlp(), randomize="yes")
    with pytest.raises(TypeError, match="progress must be None, True or False"):
        analyze(_heavy_mlp(), progress=1)
    with pytest.raises(TypeError, match="rng must be None, an int seed"):
        analyze(_heavy_mlp(), rng="seed")
    with pytest.raises(ValueError, match="device must be None, 'cpu', 'cuda'"):
        analyze(_heavy_mlp(), device="tpu:x")
    with pytest.raises(CheckpointError, match="does not exist"):
        analyze("/nonexistent/model.safetensors")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            analyze(_heavy_mlp(), device="cuda")


def test_checkpoint_file_gives_the_same_report_as_the_module(tmp_path):
    from safetensors.torch import save_file

    model = _heavy_mlp()
    path = tmp_path / "step_000000100.safetensors"
    save_file(dict(model.state_dict()), str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HTSRWarning)
        from_file = analyze(path, rng=0)
        from_module = analyze(model, rng=0)
    for a, b in zip(from_file.layers, from_module.layers):
        assert a.name == b.name and a.alpha == b.alpha and a.n_traps == b.n_traps and a.ks_statistic == b.ks_statistic
    assert from_file.source == str(path)


def test_progress_bar_only_when_asked(capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HTSRWarning)
        analyze(_heavy_mlp(), randomize=False, progress=True)
        assert "analyze [" in capsys.readouterr().err
        analyze(_heavy_mlp(), randomize=False)  # 3 layers, not a terminal: no bar
        assert capsys.readouterr().err == ""


@pytest.mark.gpu
def test_cuda_weights_are_analysed_on_the_gpu_with_the_cpu_numbers():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    model = _heavy_mlp()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HTSRWarning)
        cpu = analyze(model, rng=0)
        gpu = analyze(model.cuda(), rng=0)
        moved = analyze(_heavy_mlp(), rng=0, device="cuda")
    for a, b, c in zip(cpu.layers, gpu.layers, moved.layers):
        assert b.alpha == pytest.approx(a.alpha, rel=1e-6) and c.alpha == pytest.approx(a.alpha, rel=1e-6)
        assert b.n_traps == a.n_traps


def test_equal_shapes_are_decomposed_together_in_bounded_batches(monkeypatch):
    import importlib

    analyze_mod = importlib.import_module("htsr_diag.analyze")  # the module; htsr_diag.analyze is the function

    rng = np.random.default_rng(4)
    sd = {f"h.{i}.weight": rng.standard_normal((64, 32)) for i in range(5)}
    sd["odd.weight"] = rng.standard_normal((40, 32))
    calls = []
    real = analyze_mod.esd_many

    def recording(ws):
        calls.append([tuple(w.shape) for w in ws])
        return real(ws)

    monkeypatch.setattr(analyze_mod, "esd_many", recording)
    together = analyze(sd, randomize=False)
    assert sorted(len(c) for c in calls) == [1, 5]  # the five (64, 32) layers in one batch
    calls.clear()
    monkeypatch.setattr(analyze_mod, "CPU_BATCH_ELEMENTS", 2 * 64 * 32)  # at most two per batch
    split = analyze(sd, randomize=False)
    assert sorted(len(c) for c in calls) == [1, 1, 2, 2]
    assert split.to_json() == together.to_json()
    # and every layer equals its own single-matrix spectrum fit (reference: numpy SVD eigenvalues)
    from htsr_diag.powerlaw import layer_alpha

    for name, W in sd.items():
        ev = np.sort(np.linalg.svd(W, compute_uv=False) ** 2)
        assert together.layer(name[:-7]).alpha == pytest.approx(layer_alpha(ev, shape=W.shape).alpha, rel=1e-9)


def test_center_traps_removes_the_mean_outlier():
    # iid entries with mean/std = 0.1 (about what FC1 reaches early in the fast preset): the mean
    # survives shuffling as a rank-one outlier of size ~ (0.1)^2 * N * M / M -> far above the MP edge,
    # a "trap" that is no correlation at all. Centring removes it; a planted large entry stays.
    rng = np.random.default_rng(3)
    W = rng.standard_normal((200, 784)) + 0.1
    raw = analyze(W, rng=0, center_traps=False)
    centred = analyze(W, rng=0, center_traps=True)
    assert analyze(W) == centred  # centred traps and rng=0 are the defaults
    assert raw.layers[0].n_traps >= 1 and centred.layers[0].n_traps == 0
    assert raw.center_traps is False and centred.center_traps is True
    assert centred.layers[0].alpha == raw.layers[0].alpha  # alpha is of W itself, never centred
    assert ModelReport.from_json(centred.to_json()).center_traps is True
    planted = W.copy()
    planted[5, 7] = 80.0
    assert analyze(planted, rng=0, center_traps=True).layers[0].n_traps >= 1
    with pytest.raises(TypeError, match="center_traps must be True or False"):
        analyze(W, center_traps="yes")
    with pytest.warns(FutureWarning, match=r"analyze\(\): center= is renamed center_traps="):
        assert analyze(W, rng=0, center=False) == raw
