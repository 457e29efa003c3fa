"""Randomized spectra, correlation traps and the KS test against Marchenko-Pastur."""

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

from conftest import weightwatcher_or_skip
from htsr_diag.exceptions import DegenerateSpectrumWarning
from htsr_diag.mp import tracy_widom_quantile, tracy_widom_scale
from htsr_diag.spectrum import esd
from htsr_diag.traps import (
    DEFAULT_FALSE_ALARM,
    KSTrapResult,
    TrapReport,
    correlation_traps,
    ks_trap_test,
    randomized_analysis,
    randomized_esd,
)

SHAPES = [(200, 784), (200, 200)]


def _entry_threshold(shape, sigma_e=1.0):
    # REFERENCES.md section 2: |W_pq| / sqrt(N) > sigma (1 + sqrt(M / N))  <=>  |W_pq| > sigma (sqrt N + sqrt M)
    n, m = max(shape), min(shape)
    return sigma_e * (math.sqrt(n) + math.sqrt(m))


def _planted(shape, seed, k=3, factor=2.0):
    g = np.random.default_rng(seed)
    W = g.standard_normal(shape)
    flat = g.choice(W.size, k, replace=False)
    W.flat[flat] = factor * _entry_threshold(shape) * g.choice([-1.0, 1.0], k)
    return W, flat


# --------------------------------------------------------------------------- the null
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("law", ["gaussian", "uniform"])
def test_iid_matrices_rarely_show_traps_and_ks_is_not_significant(shape, law):
    """200 seeds of iid matrices: >= 1 trap in at most 1% of them; KS p < 0.05 in < 5%."""
    with_traps, small_p = 0, 0
    for seed in range(200):
        g = np.random.default_rng(10_000 + seed)
        W = g.standard_normal(shape) if law == "gaussian" else g.uniform(-1.0, 1.0, shape)
        traps, ks = randomized_analysis(W, rng=seed, n_shuffles=1)
        with_traps += traps.n_traps >= 1
        small_p += ks.pvalue < 0.05
        assert traps.status == "ok" and traps.sigma == pytest.approx(1.0, abs=0.05)
    assert with_traps <= 2  # 1% of 200 (designed rate: DEFAULT_FALSE_ALARM = 1e-3)
    assert small_p < 10


def test_margin_is_calibrated_at_a_larger_false_alarm_rate():
    """At false_alarm=0.1 the measured rate over 200 Gaussian 200x200 matrices is near 0.1.

    (Measured 0.085 here; benchmarks/results/false_alarm.md has more levels and shapes.)
    The bounds exclude both a margin without effect and one far too wide (WeightWatcher's).
    """
    hits = sum(correlation_traps(np.random.default_rng(s).standard_normal((200, 200)), rng=s,
                                 n_shuffles=1, false_alarm=0.1).n_traps >= 1 for s in range(200))
    assert 8 <= hits <= 40  # binomial(200, 0.1): mean 20, sd 4.2


def test_threshold_is_edge_plus_tracy_widom_margin():
    W = np.random.default_rng(0).standard_normal((200, 784))
    r = correlation_traps(W, rng=0, n_shuffles=1)
    # Johnstone (2001) scale in the esd units (divide by N for W^T W / N, times the rescaling)
    s = tracy_widom_scale(784, 200, r.sigma)[1] / 784 * r.scale
    assert r.tw_scale == pytest.approx(s, rel=1e-12)
    assert r.tw_margin == pytest.approx(tracy_widom_quantile(1 - DEFAULT_FALSE_ALARM), rel=1e-9)
    assert r.threshold == pytest.approx(r.bulk_edge + r.tw_margin * r.tw_scale, rel=1e-12)
    assert r.bulk_edge / r.scale == pytest.approx(r.sigma**2 * (1 + math.sqrt(200 / 784)) ** 2, rel=1e-12)


# --------------------------------------------------------------------------- planted entries
@pytest.mark.parametrize("shape", SHAPES)
def test_planted_entries_are_flagged_and_reported(shape):
    """3 entries at twice the BBP threshold: flagged in >= 99% of 200 seeds, exactly those reported."""
    flagged, exact = 0, 0
    for seed in range(200):
        W, flat = _planted(shape, seed)
        r = correlation_traps(W, rng=seed, n_shuffles=1)
        flagged += r.n_traps >= 1
        reported = set(np.ravel_multi_index(tuple(r.large_entry_index.T), shape).tolist())
        exact += reported == set(flat.tolist())
    assert flagged >= 198
    assert exact == 200


def test_reported_entries_are_sorted_with_their_values():
    W, flat = _planted((200, 784), 1, k=5)
    W.flat[flat[0]] *= 1.5  # the largest
    r = correlation_traps(W, rng=0, max_entries=2, center_traps=False)  # values of W itself, not of W - mean
    assert r.n_large_entries == 5 and r.large_entry_index.shape == (2, 2)
    assert tuple(r.large_entry_index[0]) == np.unravel_index(flat[0], W.shape)
    np.testing.assert_array_equal(r.large_entry_values, W[tuple(r.large_entry_index.T)])
    assert abs(r.large_entry_values[0]) >= abs(r.large_entry_values[1])
    # the threshold is relative to the bulk's entry scale, here sigma_e ~ 1
    assert r.entry_threshold == pytest.approx(_entry_threshold(W.shape), rel=0.03)


def test_ks_detects_many_planted_entries():
    # with the robust sigma, k outliers add ~k/n to the statistic: 40 traps in 200 eigenvalues
    for seed in range(10):
        W, _ = _planted((200, 784), seed, k=40)
        res = ks_trap_test(W, rng=seed, n_shuffles=1)
        assert res.pvalue < 1e-3 and res.n_traps >= 20
    # a few planted entries: the moment fit (sigma=1 after the mean-1 rescaling) reacts to them
    W, _ = _planted((200, 784), 0, k=10)
    assert ks_trap_test(W, rng=0, sigma=1.0).pvalue < 1e-3
    assert ks_trap_test(W, rng=0).pvalue > 0.05  # the robust fit sees a clean bulk


# --------------------------------------------------------------------------- properties
def test_same_seed_same_numbers_and_seed_matters():
    W, _ = _planted((120, 300), 0)
    a, b = correlation_traps(W, rng=7), correlation_traps(W, rng=7)
    np.testing.assert_array_equal(a.trap_eigenvalues, b.trap_eigenvalues)
    assert json.dumps(a.to_dict()) == json.dumps(b.to_dict())
    np.testing.assert_array_equal(randomized_esd(W, rng=7), randomized_esd(W, rng=np.random.default_rng(7)))
    assert not np.array_equal(randomized_esd(W, rng=7), randomized_esd(W, rng=8))
    k1, k2 = ks_trap_test(W, rng=3), ks_trap_test(W, rng=3)
    assert k1 == k2


def test_randomized_analysis_equals_separate_calls():
    W, _ = _planted((150, 400), 2)
    traps, ks = randomized_analysis(W, rng=5)
    assert json.dumps(traps.to_dict()) == json.dumps(correlation_traps(W, rng=5).to_dict())
    assert ks == ks_trap_test(W, rng=5)
    assert ks.n_traps == traps.n_traps and ks.n_eigenvalues == 150 and ks.sigma == traps.sigma


@pytest.mark.parametrize("shape", [(7, 5), (6, 5, 3, 3)])
def test_device_shuffle_uses_the_numpy_permutation(shape):
    # the tensor path (used on CUDA) gathers with rng.permutation; the numpy path shuffles in
    # place with rng.shuffle: the same Fisher-Yates swaps, so the same shuffled matrix
    from htsr_diag.traps import _shuffle

    W = np.random.default_rng(0).standard_normal(shape)
    W0 = W.copy()
    a = _shuffle(W, np.random.default_rng(1))
    np.testing.assert_array_equal(W, W0)  # the input is never modified
    b = _shuffle(torch.from_numpy(W), np.random.default_rng(1)).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, W)


def test_torch_tensor_gives_the_numpy_numbers():
    W, _ = _planted((100, 60), 3)
    a = randomized_esd(W, rng=4)
    b = randomized_esd(torch.from_numpy(W), rng=4)  # gathered with the same permutation
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * a.max())
    r1, r2 = correlation_traps(W, rng=4), correlation_traps(torch.from_numpy(W), rng=4)
    assert r1.n_traps == r2.n_traps and np.array_equal(r1.large_entry_index, r2.large_entry_index)
    # half-precision tensors are analysed in float64
    r3 = correlation_traps(torch.from_numpy(W).to(torch.bfloat16), rng=4)
    assert r3.n_traps == r1.n_traps


@pytest.mark.gpu
def test_cuda_tensor_gives_the_cpu_numbers():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    W, _ = _planted((200, 784), 0)
    Wc = torch.from_numpy(W).cuda()
    a, b = randomized_esd(W, rng=1), randomized_esd(Wc, rng=1)
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9 * a.max())
    r1, r2 = correlation_traps(W, rng=1), correlation_traps(Wc, rng=1)
    assert r1.n_traps == r2.n_traps == 3
    np.testing.assert_array_equal(r1.large_entry_index, r2.large_entry_index)


@pytest.mark.parametrize("factor", [1e-3, 1e3])
def test_scale_invariance(factor):
    W, _ = _planted((200, 784), 4)
    ref = correlation_traps(W, rng=0)
    r = correlation_traps(W * factor, rng=0)
    assert r.n_traps == ref.n_traps == 3
    assert r.sigma == pytest.approx(ref.sigma, rel=1e-9)
    np.testing.assert_allclose(r.trap_eigenvalues, ref.trap_eigenvalues * factor**2, rtol=1e-9)
    assert r.threshold == pytest.approx(ref.threshold * factor**2, rel=1e-9)
    np.testing.assert_array_equal(r.large_entry_index, ref.large_entry_index)
    k1, k2 = ks_trap_test(W, rng=0), ks_trap_test(W * factor, rng=0)
    assert k2.statistic == pytest.approx(k1.statistic, rel=1e-9)


def test_float32_spectrum_agrees_with_float64():
    W, _ = _planted((300, 500), 6)
    W32 = W.astype(np.float32)
    a = correlation_traps(W32, rng=0)  # auto: float32 arithmetic for float32 weights
    b = correlation_traps(W32, rng=0, precision="float64")
    assert a.n_traps == b.n_traps == 3
    np.testing.assert_allclose(a.trap_eigenvalues, b.trap_eigenvalues, rtol=1e-5)
    # the largest bulk eigenvalue: float32 error far below the Tracy-Widom scale
    ea, eb = randomized_esd(W32, rng=1), randomized_esd(W32, rng=1, precision="float64")
    assert np.abs(ea - eb).max() < 0.01 * b.tw_scale
    np.testing.assert_array_equal(randomized_esd(W, rng=1), randomized_esd(W, rng=1, precision="float64"))


def test_shuffle_keeps_the_entries():
    W = np.random.default_rng(0).standard_normal((30, 20))
    # the Frobenius norm (sum of eigenvalues) survives any permutation of the entries
    # uncentred: the shuffle permutes W's own entries (centring would subtract the mean first)
    assert randomized_esd(W, rng=0, n_shuffles=3, center_traps=False).sum() == pytest.approx(3 * (W**2).sum(),
                                                                                          rel=1e-10)


def test_default_shuffles_pool_small_layers():
    small = np.random.default_rng(0).standard_normal((10, 200))  # 10 eigenvalues < 100: 5 shuffles
    big = np.random.default_rng(0).standard_normal((200, 300))
    assert randomized_esd(small, rng=0).shape == (50,)
    assert randomized_esd(big, rng=0).shape == (200,)
    r = correlation_traps(small, rng=0)
    assert r.n_shuffles == 5 and r.counts.shape == (5,)
    assert correlation_traps(small, rng=0, n_shuffles=2).n_shuffles == 2


def test_conv_kernel_per_slice_shuffle_and_entry_positions():
    g = np.random.default_rng(0)
    K = g.standard_normal((64, 32, 3, 3))
    K[5, 7, 2, 1] = 3.0 * (8 + math.sqrt(32))  # 3x the entry threshold of a 64 x 32 slice
    r = correlation_traps(K, rng=0)
    assert r.n_slices == 9 and (r.n, r.m) == (64, 32)
    assert r.n_traps == 1
    assert r.large_entry_index.tolist() == [[5, 7, 2, 1]]
    ev = randomized_esd(K, rng=0)
    assert ev.shape == (9 * 32,)  # 288 eigenvalues >= 100: one shuffle
    # per-slice shuffling: each slice keeps its own entries (sum of squares per slice)
    from htsr_diag.traps import _shuffle
    S = _shuffle(K, np.random.default_rng(1))
    np.testing.assert_allclose((S**2).sum(axis=(0, 1)), (K**2).sum(axis=(0, 1)), rtol=1e-12)
    assert not np.array_equal(S, K)


def test_nonzero_mean_is_a_trap_unless_centered():
    # a mean offset is a rank-one spike that shuffling keeps (module docstring)
    W = np.random.default_rng(0).uniform(0.0, 1.0, (200, 200))
    assert correlation_traps(W, rng=0, center_traps=False).n_traps == 1
    r = correlation_traps(W, rng=0, center_traps=True)
    assert r.n_traps == 0 and r.centered
    # centred is the default (one default for every entry point, docs/quantities.md)
    assert correlation_traps(W).n_traps == 0 and correlation_traps(W).centered


def test_the_report_carries_the_shuffled_spectrum_it_counted():
    # one shuffle for traps, KS and plots: the pooled shuffled eigenvalues of the TrapReport are
    # exactly what randomized_esd draws from the same seed, and the traps are those above threshold
    W, _ = _planted((80, 120), 3)
    for center_traps in (True, False):
        r = correlation_traps(W, rng=5, center_traps=center_traps)
        np.testing.assert_array_equal(r.shuffled_eigenvalues, randomized_esd(W, rng=5, center_traps=center_traps))
        np.testing.assert_array_equal(r.trap_eigenvalues, r.shuffled_eigenvalues[r.shuffled_eigenvalues / r.scale
                                                                                 > r.threshold / r.scale])
    assert r.shuffled_eigenvalues.size == r.n_shuffles * r.m


def test_center_is_the_old_name_of_center_traps():
    W = np.random.default_rng(0).uniform(0.0, 1.0, (200, 200))
    for fn in (correlation_traps, randomized_analysis, ks_trap_test, randomized_esd):
        with pytest.warns(FutureWarning, match=r"center= is renamed center_traps="):
            old = fn(W, rng=0, center=False)
        new = fn(W, rng=0, center_traps=False)
        if isinstance(old, np.ndarray):
            np.testing.assert_array_equal(old, new)
        else:
            assert repr(old) == repr(new)
    with pytest.raises(TypeError, match=r"got both center=True and center_traps=False"):
        correlation_traps(W, center=True, center_traps=False)


def test_default_seed_is_zero():
    # rng=0 by default, as in every entry point: two calls agree; rng=None is fresh entropy
    W = np.random.default_rng(1).standard_normal((60, 90))
    np.testing.assert_array_equal(randomized_esd(W), randomized_esd(W, rng=0))
    assert not np.array_equal(randomized_esd(W, rng=None), randomized_esd(W, rng=None))


def test_to_dict_is_json_safe():
    W, _ = _planted((80, 120), 0)
    traps, ks = randomized_analysis(W, rng=0)
    d = json.loads(json.dumps(traps.to_dict()))
    assert d["n_traps"] == traps.n_traps and isinstance(d["large_entry_index"], list)
    assert json.loads(json.dumps(ks.to_dict()))["pvalue"] == ks.pvalue
    assert isinstance(traps, TrapReport) and isinstance(ks, KSTrapResult)
    with pytest.raises(Exception):
        traps.n_traps = 5  # frozen


# --------------------------------------------------------------------------- degenerate input
@pytest.mark.parametrize("W, status", [
    (np.zeros((50, 80)), "all-zero matrix"),
    (np.full((50, 80), 0.3), "bulk of the spectrum is zero"),
])
def test_degenerate_matrices_give_nan_and_warning(W, status):
    with pytest.warns(DegenerateSpectrumWarning, match=status):
        r = correlation_traps(W, rng=0, center_traps=False)
    assert status in r.status and math.isnan(r.n_traps) and math.isnan(r.sigma) and math.isnan(r.threshold)
    with pytest.warns(DegenerateSpectrumWarning):
        k = ks_trap_test(W, rng=0, center_traps=False)
    assert math.isnan(k.pvalue) and math.isnan(k.statistic) and status in k.status
    json.dumps(r.to_dict())


def test_constant_matrix_centered_is_the_zero_matrix():
    with pytest.warns(DegenerateSpectrumWarning, match="all-zero matrix"):
        r, k = randomized_analysis(np.full((40, 60), 2.0), rng=0, center_traps=True)
    assert r.status == k.status == "all-zero matrix"


def test_no_warning_on_good_data():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        randomized_analysis(np.random.default_rng(0).standard_normal((50, 70)), rng=0)


# --------------------------------------------------------------------------- bad input
GOOD = np.random.default_rng(0).standard_normal((20, 30))


@pytest.mark.parametrize("call, exc, match", [
    (lambda: correlation_traps(np.ones(5)), ValueError, r"W must be 2-D or 3-D or 4-D"),
    (lambda: correlation_traps(np.array([[1.0, np.nan], [0.0, 1.0]])), ValueError, r"W must contain only finite values"),
    (lambda: correlation_traps(np.ones((4, 4), dtype=int)), TypeError, r"W must be a floating-point matrix"),
    (lambda: correlation_traps(GOOD, rng=-1), ValueError, r"rng must be a non-negative seed"),
    (lambda: correlation_traps(GOOD, rng="a"), TypeError, r"rng must be None, an int seed or a numpy.random.Generator"),
    (lambda: correlation_traps(GOOD, n_shuffles=0), ValueError, r"n_shuffles must be an integer >= 1; got 0"),
    (lambda: correlation_traps(GOOD, n_shuffles=2.5), TypeError, r"n_shuffles must be an integer"),
    (lambda: correlation_traps(GOOD, false_alarm=0.7), ValueError, r"false_alarm must be in \[1e-10, 0.5\]; got 0.7. It is the designed probability"),
    (lambda: correlation_traps(GOOD, false_alarm="x"), TypeError, r"false_alarm must be a real number; got 'x' \(str\)"),
    (lambda: correlation_traps(GOOD, max_entries=-1), ValueError, r"max_entries must be an integer >= 0"),
    (lambda: correlation_traps(GOOD, center_traps="yes"), TypeError, r"center_traps must be True or False"),
    (lambda: ks_trap_test(GOOD, sigma=-1.0), ValueError, r"sigma must be a finite number > 0"),
    (lambda: randomized_analysis(GOOD, ks_sigma=0.0), ValueError, r"sigma must be a finite number > 0"),
    (lambda: randomized_esd(np.ones((1, 5))), ValueError, r"at least 2 rows and 2 columns"),
    (lambda: randomized_esd(GOOD, precision="half"), ValueError, r"precision must be one of \('auto', 'float64', 'float32'\); got 'half'"),
])
def test_bad_input_raises(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# --------------------------------------------------------------------------- vs WeightWatcher
def test_agrees_with_weightwatcher_on_a_clear_case():
    """3 entries at twice the entry threshold in an nn.Linear: both tools see the traps.

    Where counts differ (not in this case): WeightWatcher 0.7.7's margin is sqrt(TW) with
    TW = q^-1/2 lambda_+^(2/3) M^(-2/3) (about 0.16 in mean-1 units for 200 x 784, i.e. ~6
    Tracy-Widom scales of 0.0255), ours is z s = 3.27 * 0.0255 = 0.083 for false_alarm=1e-3, so
    outliers just beyond the edge count here and not there; its sigma comes from a KDE grid
    fit and it pools (and counts) 5 shuffles for layers with < 100 eigenvalues.
    """
    ww = weightwatcher_or_skip()
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    W, _ = _planted((200, 784), 0)
    W *= 0.05  # a realistic weight scale; scale does not matter to either tool
    lin = torch.nn.Linear(784, 200)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(W))
    np.random.seed(0)  # WeightWatcher shuffles with the global RNG
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = ww.WeightWatcher(model=torch.nn.Sequential(lin)).analyze(randomize=True)
    row = df.iloc[0]
    ours = correlation_traps(lin.weight, rng=0, center_traps=False)  # WeightWatcher does not centre
    assert row["rand_num_spikes"] == row["num_traps"] >= 1 and ours.n_traps >= 1
    assert abs(int(row["num_traps"]) - ours.n_traps) <= 1  # both 3 here
    # same eigenvalue convention: its largest shuffled eigenvalue is within 10% of ours
    assert ours.max_eigenvalue == pytest.approx(row["max_rand_eval"], rel=0.1)
    # both fit the bulk's sigma in mean-1 units (WW: KDE grid; here: robust fit)
    assert ours.sigma == pytest.approx(row["rand_sigma_mp"], rel=0.05)
    # and the shuffle keeps the Frobenius norm that the esd of W has (float32 arithmetic here)
    assert np.sum(randomized_esd(lin.weight, rng=0, center_traps=False)) == pytest.approx(esd(lin.weight).sum(),
                                                                                          rel=1e-6)


# ----------------------------------------------------------------------------- half precision as stored
@pytest.mark.parametrize("shape", [(300, 40), (40, 300)])
@pytest.mark.parametrize("center", [True, False])
def test_half_precision_layers_are_analysed_as_stored_with_the_float32_numbers(monkeypatch, shape, center):
    """A 2-D bf16/fp16 CPU tensor is shuffled as stored and its Gram matrix summed over blocks
    (traps._half_spectrum); reference: the same tensor converted to float32 first, which takes the
    whole-matrix path with the same permutation. Small blocks force several of them."""
    import htsr_diag.traps as T

    monkeypatch.setattr(T, "_CHUNK", 500)
    W, _ = _planted(shape, 5, k=2, factor=3.0)
    W[1, 2] = 60.0  # one large entry to find
    for dtype in (torch.bfloat16, torch.float16):
        half = torch.from_numpy(W).to(dtype)
        as32 = half.to(torch.float32)
        assert T._half_as_stored(half, True) and not T._half_as_stored(as32, True)
        a = randomized_esd(half, rng=2, center_traps=center)
        b = randomized_esd(as32, rng=2, center_traps=center)
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6 * b.max())
        r1, r2 = correlation_traps(half, rng=2, center_traps=center), correlation_traps(as32, rng=2, center_traps=center)
        assert r1.n_traps == r2.n_traps >= 1
        assert r1.n_large_entries == r2.n_large_entries >= 1
        assert [1, 2] in r1.large_entry_index.tolist()
        np.testing.assert_array_equal(r1.large_entry_index, r2.large_entry_index)
        np.testing.assert_allclose(r1.large_entry_values, r2.large_entry_values, rtol=1e-6)
