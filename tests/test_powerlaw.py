"""Tests of htsr_diag.powerlaw.layer_alpha.

Reference values come from two independent implementations, run on the same eigenvalues:
* powerlaw 2.0 (Alstott et al.): ``powerlaw.Fit(x, xmin=None, verbose=0,
  parameter_ranges={"alpha": [1, None]})``. Its default alpha range is [0, 3]: every
  candidate with alpha > 3 is then flagged invalid (see ``test_powerlaw_default_range_caps_alpha``),
  so the range must be opened for HTSR spectra (alpha ~ 2-8). WeightWatcher's own call
  (``powerlaw.Fit(..., distribution=...)``) raises TypeError with powerlaw 2.0.
* WeightWatcher 0.7.7's fitter ``weightwatcher.WW_powerlaw.WWFit(x)`` (what
  ``WeightWatcher.fit_powerlaw`` calls after dropping eigenvalues <= 1e-5).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import warnings

import numpy as np
import pytest

from conftest import weightwatcher_or_skip
from htsr_diag import DegenerateSpectrumWarning, PowerLawFit, SmallSpectrumWarning, layer_alpha
from htsr_diag.spectrum import esd

torch = pytest.importorskip("torch")
powerlaw = pytest.importorskip("powerlaw")
weightwatcher_or_skip()

RTOL = 1e-6


@contextlib.contextmanager
def _quiet():
    """Silence the reference packages (they print to stdout/stderr and warn freely)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def ww_fit(x):
    with _quiet():
        from weightwatcher.WW_powerlaw import WWFit
        return WWFit(np.asarray(x, dtype=np.float64))


def pl_fit(x, **kw):
    with _quiet():
        return powerlaw.Fit(np.asarray(x, dtype=np.float64), verbose=0,
                            parameter_ranges={"alpha": [1, None]}, **kw)


def fit(x, **kw) -> PowerLawFit:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a standard fit emits no warning at all
        return layer_alpha(x, **kw)


# --------------------------------------------------------------------------- spectra


def _mlp_weights():
    """The study's MLP 784-200-200-10, PyTorch default init, every parameter x 8 (seed 0)."""
    torch.manual_seed(0)
    layers = [torch.nn.Linear(784, 200), torch.nn.Linear(200, 200), torch.nn.Linear(200, 10)]
    with torch.no_grad():
        for lay in layers:
            for p in lay.parameters():
                p.mul_(8.0)
    return [lay.weight.detach().double() for lay in layers]


def _spectra():
    rng = np.random.default_rng(12345)
    fc1, fc2, _ = _mlp_weights()
    out = {
        "mlp-fc1 (200x784)": esd(fc1, method="svd"),
        "mlp-fc2 (200x200)": esd(fc2, method="svd"),
        "student-t df=3 (500x250)": esd(rng.standard_t(3, size=(500, 250)), method="svd"),
        "pareto entries a=1.5 (300x300)": esd(rng.pareto(1.5, size=(300, 300)), method="svd"),
        "gaussian (400x100)": esd(rng.standard_normal((400, 100)), method="svd"),
    }
    return out


SPECTRA = _spectra()


@pytest.mark.parametrize("name", list(SPECTRA))
def test_alpha_xmin_agree_with_weightwatcher_and_powerlaw(name):
    ev = SPECTRA[name]
    assert ev.size >= 20
    ours = fit(ev)
    ww = ww_fit(ev)  # reference: WeightWatcher 0.7.7 WWFit
    pl = pl_fit(ev)  # reference: powerlaw 2.0 Fit, continuous, default xmin search
    assert ours.status == "ok" and ours.method == "mle"
    assert ours.alpha == pytest.approx(ww.alpha, rel=RTOL)
    assert ours.xmin == pytest.approx(ww.xmin, rel=RTOL)
    assert ours.alpha == pytest.approx(pl.alpha, rel=RTOL)
    assert ours.xmin == pytest.approx(pl.xmin, rel=RTOL)
    # the distance they minimise and report
    assert ours.ks_distance_ww == pytest.approx(ww.D, rel=RTOL)
    assert ours.ks_distance_ww == pytest.approx(pl.D, rel=RTOL)
    assert ours.n_tail == len(ww.data) == int(pl.n_tail)
    assert ours.alpha_std == pytest.approx(ww.sigma, rel=RTOL)  # (alpha - 1) / sqrt(n_tail)
    assert ours.xmax == pytest.approx(ww.xmax, rel=RTOL)


def test_matrix_input_equals_eigenvalue_input():
    fc1, _, _ = _mlp_weights()
    from_matrix = fit(fc1)
    from_eigs = fit(esd(fc1), shape=tuple(fc1.shape))
    assert from_matrix == from_eigs
    ww = ww_fit(esd(fc1.numpy(), method="svd"))  # reference: WWFit on SVD eigenvalues
    assert from_matrix.alpha == pytest.approx(ww.alpha, rel=RTOL)
    assert from_matrix.xmin == pytest.approx(ww.xmin, rel=RTOL)


def test_powerlaw_default_range_caps_alpha():
    """Why the powerlaw reference needs parameter_ranges: its default range is [0, 3]."""
    ev = SPECTRA["mlp-fc1 (200x784)"]
    with _quiet():
        default = powerlaw.Fit(ev, verbose=0)
    assert fit(ev).alpha > 3 and not default.alpha > 3


def test_weightwatchers_powerlaw_call_fails_with_powerlaw_2():
    """WW's pl_package='powerlaw' path passes distribution=, which powerlaw 2.0 rejects."""
    with pytest.raises(TypeError, match="distribution"):
        with _quiet():
            powerlaw.Fit(SPECTRA["gaussian (400x100)"], xmin=None, verbose=False,
                         distribution="power_law", xmin_distribution="power_law")


@pytest.mark.parametrize("a", [1.2, 2.0])
def test_pareto_samples_recover_alpha(a):
    # numpy's pareto(a) + 1 has density a x^-(a+1) on [1, inf): alpha = a + 1 (closed form)
    x = np.random.default_rng(7).pareto(a, size=1000) + 1.0
    ours = fit(x)
    true_alpha = a + 1.0
    assert abs(ours.alpha - true_alpha) < 3 * ours.alpha_std
    ww, pl = ww_fit(x), pl_fit(x)
    assert ours.alpha == pytest.approx(ww.alpha, rel=RTOL)
    assert ours.xmin == pytest.approx(ww.xmin, rel=RTOL)
    assert ours.alpha == pytest.approx(pl.alpha, rel=RTOL)
    assert ours.xmin == pytest.approx(pl.xmin, rel=RTOL)


def test_fixed_xmin_matches_powerlaw():
    ev = SPECTRA["student-t df=3 (500x250)"]
    xmin = float(np.quantile(ev, 0.6))  # not an eigenvalue
    ours = fit(ev, xmin=xmin)
    ref = pl_fit(ev, xmin=xmin).power_law  # reference: powerlaw 2.0 with a fixed xmin
    assert ours.xmin == xmin
    assert ours.alpha == pytest.approx(ref.alpha, rel=RTOL)
    assert ours.ks_distance_ww == pytest.approx(ref.D, rel=RTOL)
    assert ours.n_tail == int(np.sum(ev >= xmin)) == ref.n
    assert ours.method == "mle+fixed-xmin" and ours.selection == "fixed"
    # closed form (Clauset et al. 2009 eq. 3.1)
    tail = ev[ev >= xmin]
    assert ours.alpha == pytest.approx(1 + tail.size / np.sum(np.log(tail / xmin)), rel=1e-12)


def test_xmin_max_matches_powerlaw_range():
    ev = SPECTRA["pareto entries a=1.5 (300x300)"]
    free = fit(ev)
    cap = float(np.quantile(ev, 0.3))
    assert free.xmin > cap
    ours = fit(ev, xmin_max=cap)
    # reference: powerlaw 2.0 with an xmin search range (its range excludes the upper end)
    ref = pl_fit(ev, xmin=(float(ev[0]), float(np.nextafter(cap, np.inf))))
    assert ours.xmin <= cap
    assert ours.alpha == pytest.approx(ref.alpha, rel=RTOL)
    assert ours.xmin == pytest.approx(ref.xmin, rel=RTOL)


def test_two_sided_distance():
    ev = SPECTRA["student-t df=3 (500x250)"]
    ours = fit(ev)
    tail = ev[ev >= ours.xmin]
    n = tail.size
    F = 1 - (tail / ours.xmin) ** (1 - ours.alpha)
    j = np.arange(n)
    # the KS statistic of the tail against the fitted law, by scipy.stats.kstest
    from scipy import stats
    ks = stats.kstest(tail, lambda t: 1 - (t / ours.xmin) ** (1 - ours.alpha)).statistic
    assert ours.ks_distance == pytest.approx(ks, rel=1e-9)
    assert ours.ks_distance_ww == pytest.approx(np.max(np.abs(F - j / n)), rel=1e-9)
    assert ours.ks_distance - 1 / n <= ours.ks_distance_ww <= ours.ks_distance
    two = fit(ev, selection="two-sided")
    assert two.selection == "two-sided"
    tail2 = ev[ev >= two.xmin]
    ks2 = stats.kstest(tail2, lambda t: 1 - (t / two.xmin) ** (1 - two.alpha)).statistic
    assert two.ks_distance == pytest.approx(ks2, rel=1e-9)
    assert two.ks_distance <= ours.ks_distance + 1e-12  # it minimises that distance


def test_two_sided_selection_brute_force():
    """selection='two-sided' picks the argmin of scipy's KS statistic over every candidate."""
    from scipy import stats
    x = np.sort(np.random.default_rng(3).pareto(2.0, size=120) + 1.0)
    ds = []
    for xm in x[:-1]:
        tail = x[x >= xm]
        a = 1 + tail.size / np.sum(np.log(tail / xm))
        ds.append(stats.kstest(tail, lambda t: 1 - (t / xm) ** (1 - a)).statistic)
    assert fit(x, selection="two-sided").xmin == x[int(np.argmin(ds))]


def test_large_spectrum_pruning_is_exact():
    """Candidate pruning (>= 64 candidates) must give the brute-force argmin of WW's D."""
    rng = np.random.default_rng(11)
    x = np.sort(np.concatenate([rng.uniform(1, 3, 600), rng.pareto(2.0, 900) + 3.0]))
    ref = ww_fit(x)  # WWFit evaluates every candidate
    ours = fit(x)
    assert ours.xmin == pytest.approx(ref.xmin, rel=1e-12)
    assert ours.alpha == pytest.approx(ref.alpha, rel=RTOL)
    assert ours.ks_distance_ww == pytest.approx(ref.D, rel=RTOL)


# --------------------------------------------------------------------------- small spectra


def test_small_spectrum_matches_weightwatcher_small_n_fit():
    fc3 = _mlp_weights()[2]  # 10 x 200: 10 eigenvalues
    ev = esd(fc3, method="svd")
    with pytest.warns(SmallSpectrumWarning, match="only 10 eigenvalues"):
        ours = layer_alpha(fc3)
    ref = ww_fit(ev)  # reference: WWFit.fit_powerlaw_smallN (N < 20), as selected by WWFit
    assert ours.method == "mle-bias-corrected"
    assert ours.alpha == pytest.approx(ref.alpha, rel=RTOL)
    assert ours.xmin == pytest.approx(ref.xmin, rel=RTOL)
    assert ours.n_tail >= 8
    tail = ev[ev >= ours.xmin]
    # bias-corrected MLE, closed form: 1 + (n - 1) / sum ln(x / xmin)
    assert ours.alpha == pytest.approx(1 + (tail.size - 1) / np.sum(np.log(tail / ours.xmin)), rel=1e-10)


def test_small_spectrum_standard_rule_and_very_small():
    x = np.random.default_rng(5).pareto(2.0, size=6) + 1.0
    with pytest.warns(SmallSpectrumWarning):
        bc = layer_alpha(x)
    ref = ww_fit(x)  # fewer than 8: WW fits the whole spectrum, bias-corrected
    assert bc.n_tail == 6 and bc.alpha == pytest.approx(ref.alpha, rel=RTOL)
    with pytest.warns(SmallSpectrumWarning):
        st = layer_alpha(x, small_n="standard")
    assert st.method == "mle"
    tail = x[x >= st.xmin]
    assert st.alpha == pytest.approx(1 + tail.size / np.sum(np.log(tail / st.xmin)), rel=1e-10)


# --------------------------------------------------------------------------- scale invariance


@pytest.mark.parametrize("factor", [1e-3, 1e3])
def test_scale_invariance(factor):
    fc2 = _mlp_weights()[1].numpy()
    base = fit(fc2)
    scaled = fit(fc2 * factor)
    assert scaled.alpha == pytest.approx(base.alpha, rel=1e-9)
    assert scaled.xmin == pytest.approx(base.xmin * factor**2, rel=1e-9)
    assert scaled.n_tail == base.n_tail and scaled.n_fitted == base.n_fitted
    assert scaled.ks_distance == pytest.approx(base.ks_distance, rel=1e-9)


def _mlp_weights_unscaled():
    torch.manual_seed(0)
    layers = [torch.nn.Linear(784, 200), torch.nn.Linear(200, 200)]
    return [lay.weight.detach().double().numpy() for lay in layers]


def test_weightwatcher_absolute_cut_at_1e_minus_3():
    """WW drops eigenvalues <= 1e-5 (absolute). Measured facts, W * 1e-3 (eigenvalues * 1e-6):

    * the study's MLP (init x 8, eigenvalues 5..84 -> 5e-6..8e-5): WW's xmin stays above the
      cut, so its alpha does NOT change;
    * the same MLP at plain PyTorch default init (x 1, eigenvalues <= 1.3 -> <= 1.3e-6):
      every eigenvalue falls below the cut and WW's fit fails (alpha = -1, status "failed").
    Ours gives the same alpha in every case (relative rank cut).
    """
    with _quiet():
        from weightwatcher import WeightWatcher
        ww = WeightWatcher()
    for scale, ww_changes in [(8.0, False), (1.0, True)]:
        for W in _mlp_weights_unscaled():
            W = W * scale
            with _quiet():
                ref = ww.fit_powerlaw(esd(W, method="svd"), plot=False)
                small = ww.fit_powerlaw(esd(W * 1e-3, method="svd"), plot=False)
            assert ref[-2] == "success"
            if ww_changes:
                assert small[0] == -1 and small[-2] == "failed"
            else:
                assert small[-2] == "success" and small[0] == pytest.approx(ref[0], rel=1e-9)
            assert fit(W * 1e-3).alpha == pytest.approx(fit(W).alpha, rel=1e-9)
            assert fit(W).alpha == pytest.approx(ref[0], rel=RTOL)


# --------------------------------------------------------------------------- degenerate


def test_zero_matrix():
    with pytest.warns(DegenerateSpectrumWarning, match="zero"):
        r = layer_alpha(np.zeros((30, 20)))
    assert math.isnan(r.alpha) and math.isnan(r.xmin) and math.isnan(r.ks_distance)
    assert math.isnan(r.alpha_std) and r.n_tail == 0 and r.warning == ""
    assert "zero" in r.status and not r.ok


def test_all_eigenvalues_equal():
    Q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((50, 50)))  # orthogonal: all eigenvalues 1
    with pytest.warns(DegenerateSpectrumWarning, match="equal"):
        r = layer_alpha(Q * 3.0)
    assert math.isnan(r.alpha) and "equal" in r.status and r.n_fitted == 50


def test_too_few_above_rank_cut():
    u = np.random.default_rng(1).standard_normal((40, 1))
    v = np.random.default_rng(2).standard_normal((1, 30))
    with pytest.warns(DegenerateSpectrumWarning, match="rank cut"):
        r = layer_alpha(u @ v + 1e-3 * (u @ np.ones((1, 30))))  # rank 1 (plus a rank-1 term)
    assert math.isnan(r.alpha) and r.n_fitted < 3 and r.n_eigenvalues == 30
    with pytest.warns(DegenerateSpectrumWarning, match="only 2 eigenvalue"):
        r = layer_alpha(np.array([0.0, 0.0, 0.0, 1.0, 2.0]))
    assert r.n_fitted == 2 and r.status.startswith("only 2")


def test_fixed_xmin_at_top_is_degenerate():
    ev = SPECTRA["gaussian (400x100)"]
    with pytest.warns(DegenerateSpectrumWarning, match="leaves 1 eigenvalue"):
        r = layer_alpha(ev, xmin=float(ev[-1]))
    assert math.isnan(r.alpha)


def test_to_dict_is_json_safe():
    r = fit(SPECTRA["gaussian (400x100)"])
    d = r.to_dict()
    assert set(d) >= {"alpha", "xmin", "xmax", "ks_distance", "ks_distance_ww", "n_tail", "n_eigenvalues",
                      "alpha_std", "status", "warning"}
    assert json.loads(json.dumps(d))["alpha"] == pytest.approx(r.alpha)
    with pytest.warns(DegenerateSpectrumWarning):
        nan = layer_alpha(np.zeros((5, 5))).to_dict()
    assert math.isnan(json.loads(json.dumps(nan))["alpha"])
    with pytest.raises(Exception):
        r.alpha = 1.0  # frozen


def test_htsr_readings():
    over = fit(np.random.default_rng(0).pareto(0.6, size=500) + 1.0)  # alpha ~ 1.6
    under = fit(SPECTRA["mlp-fc1 (200x784)"])  # random init: alpha ~ 8.9
    assert over.alpha < 2 and over.warning == "over-trained"
    assert under.alpha > 6 and under.warning == "under-trained"
    assert fit(SPECTRA["pareto entries a=1.5 (300x300)"]).warning == "over-trained"  # alpha 1.84
    assert fit(SPECTRA["student-t df=3 (500x250)"]).warning == ""  # alpha 4.66


def test_torch_and_list_input():
    fc2 = _mlp_weights()[1]
    assert fit(fc2).alpha == pytest.approx(fit(fc2.numpy()).alpha, rel=1e-9)
    ev = SPECTRA["gaussian (400x100)"]
    assert fit(list(ev)).alpha == fit(ev).alpha == fit(torch.from_numpy(ev)).alpha
    assert fit(ev[::-1].copy()).alpha == fit(ev).alpha  # order irrelevant


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"xmin": -1.0}, ValueError, r"xmin must be > 0; got -1\.0\. It is an eigenvalue of W\^T W"),
        ({"xmin": 0.0}, ValueError, r"xmin must be > 0; got 0\.0"),
        ({"xmin": float("nan")}, ValueError, r"xmin must be a finite number; got nan"),
        ({"xmin": "1"}, TypeError, r"xmin must be a real number or None; got '1' \(str\)"),
        ({"xmin": True}, TypeError, r"xmin must be a real number or None; got True"),
        ({"xmin": 1e9}, ValueError, r"xmin must not exceed the largest eigenvalue .*got xmin=1e\+09"),
        ({"xmin_max": -2}, ValueError, r"xmin_max must be > 0; got -2\. It is an eigenvalue"),
        ({"xmin_max": 1e-9}, ValueError, r"xmin_max must be at least the smallest eigenvalue"),
        ({"xmin": 1.0, "xmin_max": 2.0}, ValueError, r"xmin and xmin_max exclude each other"),
        ({"selection": "D"}, ValueError, r"selection must be one of \('ww', 'two-sided'\); got 'D'"),
        ({"small_n": "ww"}, ValueError, r"small_n must be one of"),
        ({"shape": (3,)}, ValueError, r"shape must be the \(rows, cols\)"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        layer_alpha(SPECTRA["gaussian (400x100)"], **kwargs)


@pytest.mark.parametrize(
    "value, exc, match",
    [
        (np.ones((50, 1)), ValueError, r"shape \(50, 1\).*flatten them to 1-D"),
        (np.ones((2, 3, 4, 5, 6)), ValueError, r"must be 1-D \(eigenvalues\) or 2-D/3-D/4-D.*got 5-D"),
        (3.0, ValueError, r"must be 1-D \(eigenvalues\) or 2-D/3-D/4-D.*got 0-D"),
        (np.array([1.0, -2.0, 3.0]), ValueError, r"must be non-negative"),
        (np.array([1.0, np.nan, 3.0]), ValueError, r"must be finite"),
        (np.array([], dtype=float), ValueError, r"must not be empty"),
        (np.array([1 + 1j, 2.0]), TypeError, r"must be real numbers"),
        (np.ones((4, 4), dtype=complex), TypeError, r"complex"),
        (np.ones((4, 4), dtype=int), TypeError, r"floating-point"),
    ],
)
def test_bad_input(value, exc, match):
    with pytest.raises(exc, match=match):
        layer_alpha(value)


def test_shape_only_for_eigenvalues_and_method_checked():
    with pytest.raises(ValueError, match=r"shape is only for eigenvalue \(1-D\) input"):
        layer_alpha(np.eye(3), shape=(3, 3))
    with pytest.raises(ValueError, match=r"method must be one of"):
        layer_alpha(np.random.default_rng(0).standard_normal((5, 4)), method="qr")


@pytest.mark.parametrize("selection", ["ww", "two-sided"])
def test_pruning_equals_full_evaluation(monkeypatch, selection):
    """The pruned search returns exactly what evaluating every candidate returns."""
    import htsr_diag.powerlaw as pl_mod

    rng = np.random.default_rng(21)
    spectra = [rng.pareto(2.5, 1200) + 1.0,  # flat D over many candidates: pruning's hard case
               (rng.pareto(1.5, 1000) + 1.0) * rng.uniform(0.5, 1.0, 1000),
               SPECTRA["student-t df=3 (500x250)"]]
    pruned = [fit(x, selection=selection) for x in spectra]
    monkeypatch.setattr(pl_mod, "_PRUNE_LEVELS", ())
    full = [fit(x, selection=selection) for x in spectra]
    assert pruned == full


def test_conv_kernel_input_pools_slices():
    K = np.random.default_rng(9).standard_t(3, size=(32, 16, 3, 3))
    pooled = np.sort(np.concatenate([esd(K[:, :, i, j]) for i in range(3) for j in range(3)]))
    ours = fit(K)
    assert ours.n_eigenvalues == 16 * 9
    assert ours == fit(pooled, shape=(32, 16))
    assert ours.alpha == pytest.approx(ww_fit(pooled).alpha, rel=RTOL)  # reference: WWFit on pooled slices
