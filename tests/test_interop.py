"""Tests of the WeightWatcher interop: compare='weightwatcher' and ModelReport.from_weightwatcher.

The reference values are WeightWatcher 0.7.7's own details table, produced in each test by
``weightwatcher.WeightWatcher(model).analyze()`` (run through ``run_weightwatcher``, which only
contains its side effects), never by the comparison code under test.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import sys
import warnings

import numpy as np
import pytest
import torch

# not importorskip: importing WeightWatcher silences every warning of the process and adds a
# root logging handler; htsr_diag.interop imports it with those side effects undone
if importlib.util.find_spec("weightwatcher") is None:
    pytest.skip('needs WeightWatcher: pip install "htsr-diag[compare]"', allow_module_level=True)
pd = pytest.importorskip("pandas")

from htsr_diag import ModelReport, analyze  # noqa: E402
from htsr_diag.interop import (  # noqa: E402
    ALPHA_RTOL,
    WeightWatcherComparison,
    compare_weightwatcher,
    report_from_weightwatcher,
    run_weightwatcher,
)

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore::htsr_diag.exceptions.SmallSpectrumWarning")]

#: Where torch sees CUDA, WeightWatcher rounds the weights to float16 (cause "fp16"), so alphas
#: agree only to ~1e-4: the tests of exact agreement are for the CPU path (CI's).
exact = pytest.mark.skipif(torch.cuda.is_available(), reason="torch sees CUDA: WeightWatcher rounds weights to "
                                                             "float16 (cause 'fp16')")


def _mlp(seed: int = 0, scale: float = 8.0) -> torch.nn.Module:
    """The study's MLP (784-200-200-10) with its init scale 8 (REFERENCES.md section 1)."""
    torch.manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Linear(784, 200), torch.nn.ReLU(), torch.nn.Linear(200, 200), torch.nn.ReLU(),
                            torch.nn.Linear(200, 10))
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(scale)
    return m


def _ww_rows(details) -> dict:
    return {str(r["longname"]): r for r in details.to_dict("records")}


# ----------------------------------------------------------------------------- agreement
@exact
def test_alpha_agrees_with_weightwatcher_where_it_is_right():
    # Dense layers with eigenvalues far above 1e-5: both tools fit the same spectrum with the
    # same xmin rule, so alpha and xmin must agree to rounding. The tolerance (ALPHA_RTOL =
    # 1e-6) is argued in interop.py; the measured differences on these layers are ~1e-14.
    g = np.random.default_rng(0)
    cases = [_mlp(0), _mlp(1, scale=1.0),
             {f"t{k}.weight": torch.from_numpy(g.standard_t(3, size=(300, 120))).float() for k in range(3)}]
    n = 0
    for model in cases:
        reference = _ww_rows(run_weightwatcher(model, randomize=False))
        ours = analyze(model, randomize=False)
        comp = compare_weightwatcher(model, ours, randomize=False)
        for lay in ours.layers:
            ww = reference[lay.name]
            assert math.isclose(lay.alpha, ww["alpha"], rel_tol=ALPHA_RTOL), (lay.name, lay.alpha, ww["alpha"])
            assert math.isclose(lay.xmin, ww["xmin"], rel_tol=ALPHA_RTOL)
            row = comp.layer(lay.name)
            assert row.alpha_ww == ww["alpha"] and row.xmin_ww == ww["xmin"]
            assert row.alpha_agrees and row.causes == () and row.difference == ""
            n += 1
    assert n == 3 + 3 + 3  # the 10-output layers (10 < 20 eigenvalues) get the same small-n fit too
    # (that the check can fail is shown by the cases below, where the alphas differ)


def test_analyze_compare_keeps_our_numbers_and_adds_the_comparison():
    model = _mlp(0)
    plain = analyze(model, rng=0)
    report = analyze(model, rng=0, compare="weightwatcher")
    assert isinstance(report.comparison, WeightWatcherComparison)
    assert [lr.to_dict() for lr in report.layers] == [lr.to_dict() for lr in plain.layers]
    assert report.comparison.names == report.names
    # the comparison survives to_json / from_json
    back = ModelReport.from_json(report.to_json())
    assert back.comparison.to_dict() == report.comparison.to_dict()
    frame = report.comparison.to_frame()
    assert list(frame["name"]) == ["0", "2", "4"] and "difference" in frame.columns


def test_traps_beside_weightwatchers_are_seeded_and_the_global_rng_is_restored():
    model = _mlp(0)
    np.random.seed(123)
    state = np.random.get_state()
    a = compare_weightwatcher(model, rng=5)
    after = np.random.get_state()
    assert after[0] == state[0] and np.array_equal(after[1], state[1]) and after[2:] == state[2:]
    b = compare_weightwatcher(model, rng=5)
    assert [r.n_traps_ww for r in a.layers] == [r.n_traps_ww for r in b.layers]
    # WeightWatcher's own table, run with the same seed of the global RNG, holds the same counts
    seed = int(np.random.default_rng(5).integers(0, 2**32))
    reference = _ww_rows(run_weightwatcher(model, randomize=True, seed=seed))
    assert [r.n_traps_ww for r in a.layers] == [float(reference[n]["num_traps"]) for n in a.names]
    for r in a.layers:
        if r.n_traps != r.n_traps_ww:
            assert "trap-rule" in r.causes and "by rule" in r.difference and "centred" in r.difference


# ----------------------------------------------------------------------------- the causes
def test_the_absolute_cut_is_named_when_weightwatcher_loses_a_small_layer():
    # Layer '2' scaled by 1e-4: its eigenvalues (~1e-8 x 200) all lie below WeightWatcher's
    # absolute 1e-5 cut, so WeightWatcher has no fit (alpha -1, status failed); ours is
    # scale-invariant and equals the unscaled layer's alpha.
    model = _mlp(0)
    alpha_before = analyze(model, randomize=False).layer("2").alpha
    with torch.no_grad():
        model[2].weight.mul_(1e-4)
    reference = _ww_rows(run_weightwatcher(model, randomize=False))
    assert reference["2"]["alpha"] == -1 and reference["2"]["status"] == "failed"
    comp = compare_weightwatcher(model, randomize=False)
    row = comp.layer("2")
    assert math.isclose(row.alpha, alpha_before, rel_tol=ALPHA_RTOL)  # float32 rounding of the scaled weights: ~4e-9
    assert math.isnan(row.alpha_ww) and not row.alpha_agrees
    assert row.causes == ("abs-cut",)
    assert "absolute 1e-05 eigenvalue cut dropped all of 200 eigenvalues" in row.difference
    assert "no fit" in row.difference
    assert comp.layer("0").causes == ()  # the other layers are untouched


@exact
def test_the_absolute_cut_changes_weightwatchers_alpha_on_a_partly_small_spectrum():
    # A 200 x 200 layer whose eigenvalues are a Pareto sample (density exponent alpha = 2.5,
    # lower bound 4e-6): 140 of them lie below 1e-5. WeightWatcher fits only the 60 above its
    # cut and moves away from 2.5; ours keeps them. Scaled by 1e3 (eigenvalues x 1e6) nothing is
    # cut, and the two agree again, at our alpha: ours is scale-invariant, its is not.
    g = np.random.default_rng(0)
    n = 200
    lam = np.sort(4e-6 * (g.pareto(1.5, size=n) + 1.0))
    U, _ = np.linalg.qr(g.standard_normal((n, n)))
    V, _ = np.linalg.qr(g.standard_normal((n, n)))
    W = (U * np.sqrt(lam)) @ V.T
    assert int(np.sum(lam <= 1e-5)) == 140
    small = compare_weightwatcher({"pl.weight": torch.from_numpy(W)}, randomize=False).layer("pl")
    large = compare_weightwatcher({"pl.weight": torch.from_numpy(W * 1e3)}, randomize=False).layer("pl")
    assert small.causes == ("abs-cut",) and not small.alpha_agrees
    assert "absolute 1e-05 eigenvalue cut dropped 140 of 200 eigenvalues" in small.difference
    assert abs(small.alpha - 2.5) < abs(small.alpha_ww - 2.5)  # the cut moves its fit away from the law's 2.5
    assert large.alpha_agrees and large.causes == ()
    assert math.isclose(large.alpha, small.alpha, rel_tol=1e-12)  # ours: the same number at both scales
    # its: float64 weights are rounded to float32 before its SVD (RMT_Util.torch_T_to_np): 2.6e-9 here
    assert math.isclose(large.alpha_ww, small.alpha, rel_tol=ALPHA_RTOL)


@exact
def test_conv_layers_name_the_swapped_dimensions_and_the_conv_scale():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(64, 32, 2), torch.nn.Conv2d(32, 64, 3))
    reference = _ww_rows(run_weightwatcher(model, randomize=False))
    # WeightWatcher's own table shows both defects: N < M for the 2x2 kernel with out < in, and
    # half our lambda_max (conv2d_norm) for both layers
    assert (reference["0"]["N"], reference["0"]["M"]) == (32, 64)
    assert (reference["1"]["N"], reference["1"]["M"]) == (64, 32)
    ours = analyze(model, randomize=False)
    for name in ("0", "1"):
        assert math.isclose(reference[name]["lambda_max"], 0.5 * ours.layer(name).lambda_max, rel_tol=1e-9)
    comp = compare_weightwatcher(model, ours, randomize=False)
    swapped, odd = comp.layer("0"), comp.layer("1")
    assert swapped.causes == ("swapped-dims", "conv-scale") and swapped.alpha_agrees
    assert "N and M swapped (its N=32, M=64" in swapped.difference and "Q is 0.5 instead of 2" in swapped.difference
    assert odd.causes == ("conv-scale",) and odd.alpha_agrees
    assert "conv2d_norm" in odd.difference and "alpha does not" in odd.difference
    assert math.isclose(odd.xmin_ww, 0.5 * odd.xmin, rel_tol=1e-9)


@exact
def test_layers_weightwatcher_skips_and_layers_we_skip():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(100, 60), torch.nn.Conv1d(16, 32, 3), torch.nn.Embedding(50001, 8))
    reference = _ww_rows(run_weightwatcher(model, randomize=False))
    assert set(reference) == {"0"}  # no row for the Conv1d nor for N > 50000
    comp = compare_weightwatcher(model, randomize=False)
    assert comp.layer("1").causes == ("skipped",) and "no row for Conv1d layers" in comp.layer("1").difference
    assert "N > 50000 (max_N); this one has N = 50001" in comp.layer("2").difference
    assert math.isnan(comp.layer("2").alpha_ww) and not math.isnan(comp.layer("2").alpha)
    # a layer left out of our analysis by layers= is listed as WeightWatcher's only, with our reason
    comp = compare_weightwatcher(_mlp(0), layers=["0"], randomize=False)
    assert comp.names == ["0", "2", "4"]
    assert comp.layer("2").N == 0 and comp.layer("2").causes == ("skipped",)
    assert comp.layer("2").difference == "htsr_diag skipped it: not selected by include"


_SIDE_EFFECTS = """
import logging, warnings
import htsr_diag.interop
handlers = list(logging.getLogger().handlers)
{imp}
ignore_all = any(f[0] == "ignore" and f[1] is None and f[2] is Warning and f[3] is None for f in warnings.filters)
print(not ignore_all, logging.getLogger().handlers == handlers)
"""


def test_weightwatchers_side_effects_are_contained():
    # in a fresh interpreter: the plain import adds a filter that ignores every warning
    # (simplefilter("ignore") in WW_powerlaw.py) and a root logging handler (basicConfig); the
    # interop's import leaves neither
    import subprocess

    def run(imp: str) -> str:
        done = subprocess.run([sys.executable, "-c", _SIDE_EFFECTS.format(imp=imp)], capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1]

    assert run("import weightwatcher") == "False False"
    assert run("from htsr_diag.interop import _import_weightwatcher; _import_weightwatcher()") == "True True"


@exact
def test_comparison_text_and_repeated_runs_leave_the_process_alone():
    root = logging.getLogger()
    handlers, filters = list(root.handlers), list(warnings.filters)
    comp = compare_weightwatcher(_mlp(0), randomize=False)
    assert root.handlers == handlers and warnings.filters == filters
    assert "alpha agrees (rtol 1e-06) on 3 of 3 layers" in comp.to_text()


def test_compare_errors(monkeypatch):
    with pytest.raises(ValueError, match=r"compare must be None or 'weightwatcher'; got 'ww'"):
        analyze(_mlp(0), compare="ww")
    with pytest.raises(TypeError, match=r"report must be a ModelReport .* got dict"):
        compare_weightwatcher(_mlp(0), {"layers": []})
    with pytest.raises(ValueError, match=r"report is not an analysis of this model: its layers \['fc'\]"):
        compare_weightwatcher(_mlp(0), analyze({"fc.weight": torch.randn(50, 40)}, randomize=False))
    monkeypatch.setitem(sys.modules, "weightwatcher", None)
    with pytest.raises(ImportError, match=r'needs WeightWatcher 0.7.7.*pip install "htsr-diag\[compare\]"'):
        analyze(_mlp(0), compare="weightwatcher", randomize=False)


@exact
def test_cli_analyze_compare(tmp_path, capsys):
    from safetensors.torch import save_file

    from htsr_diag.cli import main

    path = tmp_path / "model.safetensors"
    save_file(_mlp(0).state_dict(), str(path))
    assert main(["analyze", str(path), "--compare", "weightwatcher", "--no-randomize"]) == 0
    out = capsys.readouterr().out
    assert "alpha_ww" in out and "alpha agrees (rtol 1e-06) on 3 of 3 layers" in out


def test_cli_analyze_compare_without_the_extra(tmp_path, capsys, monkeypatch):
    from safetensors.torch import save_file

    from htsr_diag.cli import main

    path = tmp_path / "model.safetensors"
    save_file(_mlp(0).state_dict(), str(path))
    monkeypatch.setitem(sys.modules, "weightwatcher", None)
    assert main(["analyze", str(path), "--compare", "weightwatcher", "--no-randomize"]) == 2
    err = capsys.readouterr().err
    assert 'pip install "htsr-diag[compare]"' in err and "Traceback" not in err


# ----------------------------------------------------------------------------- from_weightwatcher
def test_from_weightwatcher_round_trips_a_real_details_table(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(100, 60), torch.nn.ReLU(), torch.nn.Linear(60, 30),
                                torch.nn.Conv2d(16, 32, 3), torch.nn.Embedding(300, 40))
    details = run_weightwatcher(model, randomize=True, seed=0)
    path = tmp_path / "details.csv"
    details.to_csv(path)  # as users save it (with the index column)
    for source in (details, path):
        rep = ModelReport.from_weightwatcher(source)
        assert rep.names == list(details["longname"])
        for lay, ww in zip(rep.layers, details.to_dict("records")):
            assert lay.alpha == pytest.approx(ww["alpha"], rel=1e-12)
            assert lay.xmin == pytest.approx(ww["xmin"], rel=1e-12)
            assert lay.xmax == pytest.approx(ww["xmax"], rel=1e-12)
            assert lay.alpha_std == pytest.approx(ww["sigma"], rel=1e-12)
            assert lay.n_tail == ww["num_pl_spikes"] and lay.n_traps == ww["num_traps"]
            assert lay.lambda_max == pytest.approx(ww["lambda_max"], rel=1e-12)
            assert lay.frobenius_norm == pytest.approx(math.sqrt(ww["norm"]), rel=1e-12)
            assert lay.stable_rank == pytest.approx(ww["stable_rank"], rel=1e-12)
            assert (lay.N, lay.M) == (max(ww["N"], ww["M"]), min(ww["N"], ww["M"]))
            assert lay.n_eigenvalues == ww["num_evals"] and lay.n_slices == ww["rf"]
            assert math.isnan(lay.ks_distance) and lay.status == "ok"
        assert [lay.type for lay in rep.layers] == ["Linear", "Linear", "Conv2d", "Embedding"]
    # our JSON round trip, and our trajectory tools read it
    back = ModelReport.from_json(rep.to_json())
    assert [lay.alpha for lay in back.layers] == [lay.alpha for lay in rep.layers]
    from htsr_diag.trajectory import Trajectory

    traj = Trajectory(steps=np.array([10, 20]), reports=[rep, report_from_weightwatcher(details)])
    assert traj.feature("alpha", "0").tolist() == [rep.layer("0").alpha] * 2


def test_from_weightwatcher_errors(tmp_path):
    with pytest.raises(ValueError, match=r"not a WeightWatcher details table: columns \['alpha'\] are missing"):
        ModelReport.from_weightwatcher(pd.DataFrame({"longname": ["a"], "N": [3], "M": [2]}))
    with pytest.raises(TypeError, match=r"details must be a pandas DataFrame .* got list"):
        ModelReport.from_weightwatcher([1, 2])
    with pytest.raises(ValueError, match=r"is not a file"):
        ModelReport.from_weightwatcher(tmp_path / "missing.csv")


def test_a_difference_without_a_known_cause_is_reported_as_such():
    # WeightWatcher's row doctored to another alpha and xmin: no rule explains it, and the row says so
    # (on a CUDA machine, where WeightWatcher rounds the weights to float16, that is the cause named)
    from htsr_diag.interop import _compare_layer

    model = _mlp(0)
    lay = analyze(model, randomize=False).layer("2")
    row = {"N": 200, "M": 200, "num_evals": 200, "alpha": lay.alpha * 1.01, "xmin": lay.xmin * 1.5,
           "lambda_max": lay.lambda_max}
    got = _compare_layer(lay, row, model[2].weight.detach(), ALPHA_RTOL, False, True)
    assert not got.alpha_agrees and got.causes == ("unexplained",)
    assert "for no known cause; please report it" in got.difference
    got = _compare_layer(lay, row, model[2].weight.detach(), ALPHA_RTOL, False, True, half=True)
    assert got.causes == ("fp16",) and "rounds the weights to float16" in got.difference
    # within the tolerance the same row agrees
    row["alpha"], row["xmin"] = lay.alpha * (1 + 0.5 * ALPHA_RTOL), lay.xmin
    assert _compare_layer(lay, row, model[2].weight.detach(), ALPHA_RTOL, False, True).causes == ()
