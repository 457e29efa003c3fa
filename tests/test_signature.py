"""loss_signature: Hjorth parameters of a loss curve, against closed forms and the time domain."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import htsr_diag
from htsr_diag import LossSignature, loss_signature
from htsr_diag.exceptions import DegenerateSpectrumWarning

N = 1024
T = np.arange(N, dtype=np.float64)


def hjorth_time_domain(x: np.ndarray, fs: float = 1.0) -> tuple[float, float, float]:
    """Hjorth's own definitions (1970): var(x), sqrt(var(x')/var(x)), mobility(x')/mobility(x).

    An independent reference: derivatives by central differences (np.gradient), no spectrum.
    """
    d1 = np.gradient(x, 1 / fs)
    d2 = np.gradient(d1, 1 / fs)
    v0, v1, v2 = np.var(x), np.var(d1), np.var(d2)
    mob = math.sqrt(v1 / v0)
    return v0, mob, math.sqrt(v2 / v1) / mob


def test_exported_and_result_fields():
    assert htsr_diag.loss_signature is loss_signature and "loss_signature" in htsr_diag.__all__
    assert "LossSignature" in htsr_diag.__all__
    sig = loss_signature(np.sin(0.3 * T), window=(0, 400))
    d = sig.to_dict()
    assert list(d) == ["activity", "mobility", "complexity", "n", "window", "detrend", "method", "fs", "status"]
    assert d["window"] == [0.0, 400.0] and d["n"] == 400 and d["status"] == "ok"
    with pytest.raises(AttributeError):
        sig.activity = 0.0  # frozen


@pytest.mark.parametrize("method", ["periodogram", "welch"])
@pytest.mark.parametrize("detrend", ["linear", "constant", None])
def test_sine_on_a_frequency_bin(method, detrend):
    # Closed form: A sin(2 pi f0 t) has power A^2/2, one angular frequency 2 pi f0
    # (mobility, rad per sample at fs=1) and complexity 1 (a single line: m4 m0 = m2^2).
    A, f0 = 1.7, 32 / N
    sig = loss_signature(A * np.cos(2 * np.pi * f0 * T), detrend=detrend, method=method)
    assert sig.activity == pytest.approx(A ** 2 / 2, rel=0.01)
    assert sig.mobility == pytest.approx(2 * np.pi * f0, rel=0.01)
    assert sig.complexity == pytest.approx(1.0, abs=0.02)


def test_sine_off_bin():
    # 0.0317 cycles/sample is not a multiple of 1/N: the boxcar periodogram leaks power into
    # distant bins (complexity inflated, ~1.6), the Hann-windowed Welch estimate does not.
    A, f0 = 0.5, 0.0317
    x = A * np.sin(2 * np.pi * f0 * T)
    for method in ("periodogram", "welch"):
        sig = loss_signature(x, method=method)
        assert sig.activity == pytest.approx(A ** 2 / 2, rel=0.01)
        assert sig.mobility == pytest.approx(2 * np.pi * f0, rel=0.01)
    assert loss_signature(x, method="welch").complexity == pytest.approx(1.0, abs=0.02)


def test_sine_with_a_trend_and_offset():
    # Linear detrending removes 3 + 0.002 t; the sine's moments are left.
    f0 = 40 / N
    sig = loss_signature(3 + 0.002 * T + 0.1 * np.cos(2 * np.pi * f0 * T))
    assert sig.activity == pytest.approx(0.1 ** 2 / 2, rel=0.01)
    assert sig.mobility == pytest.approx(2 * np.pi * f0, rel=0.01)
    assert sig.complexity == pytest.approx(1.0, abs=0.02)


def test_fs_scales_mobility():
    # With fs samples per unit time, frequencies are fs times larger: mobility in rad per unit time.
    x = np.cos(2 * np.pi * 32 / N * T)
    a, b = loss_signature(x), loss_signature(x, fs=0.1)
    assert b.mobility == pytest.approx(0.1 * a.mobility, rel=1e-12)
    assert b.activity == pytest.approx(a.activity, rel=1e-12)
    assert b.complexity == pytest.approx(a.complexity, rel=1e-12)


@pytest.mark.parametrize("method", ["periodogram", "welch"])
def test_white_noise(method):
    # Closed forms for white noise of variance s^2 at fs=1 (flat spectrum on [0, 1/2]):
    # activity s^2; mobility^2 = mean of w^2 over w in [0, pi] = pi^2/3; complexity
    # sqrt(mean w^4) / mean w^2 = (pi^2/sqrt 5) / (pi^2/3) = 3/sqrt(5).
    s = 3.0
    x = np.random.default_rng(0).normal(0, s, 16384)
    sig = loss_signature(x, method=method)
    assert sig.activity == pytest.approx(s ** 2, rel=0.03)
    assert sig.mobility == pytest.approx(np.pi / np.sqrt(3), rel=0.02)
    assert sig.complexity == pytest.approx(3 / np.sqrt(5), rel=0.02)


def test_periodogram_activity_is_the_variance_exactly():
    # Parseval: with the boxcar periodogram, m0 is the mean square of the detrended signal.
    x = np.random.default_rng(1).normal(size=301).cumsum()
    for detrend in ("constant", None):
        y = x - x.mean() if detrend else x
        assert loss_signature(x, detrend=detrend).activity == pytest.approx(np.mean(y ** 2), rel=1e-10)


def test_agrees_with_time_domain_for_a_smooth_signal():
    # Hjorth's time-domain parameters (derivative variances) agree with the spectral moments
    # for a smooth, low-frequency signal: to 1% here (central differences err by ~(w dt)^2/6,
    # and w <= 2 pi * 24/1024 = 0.15 rad per sample).
    x = (np.cos(2 * np.pi * 8 / N * T) + 0.5 * np.sin(2 * np.pi * 16 / N * T)
         + 0.2 * np.cos(2 * np.pi * 24 / N * T + 0.4))
    sig = loss_signature(x, detrend="constant")
    act, mob, comp = hjorth_time_domain(x)
    assert sig.activity == pytest.approx(act, rel=0.01)
    assert sig.mobility == pytest.approx(mob, rel=0.01)
    assert sig.complexity == pytest.approx(comp, rel=0.01)


@pytest.mark.parametrize("detrend, expected", [("linear", "flat signal"), ("constant", "ok")])
def test_linear_trend_alone(detrend, expected):
    # A line has no power left after linear detrending: activity ~0, mobility and complexity NaN
    # with a DegenerateSpectrumWarning. Mean removal alone leaves the ramp's variance.
    x = 2.5 - 0.01 * T
    if expected == "ok":
        sig = loss_signature(x, detrend=detrend)
        assert sig.activity == pytest.approx(np.var(x), rel=1e-10)
        return
    with pytest.warns(DegenerateSpectrumWarning, match="flat after detrend='linear'"):
        sig = loss_signature(x, detrend=detrend)
    assert sig.activity < 1e-20 * np.var(x)
    assert math.isnan(sig.mobility) and math.isnan(sig.complexity) and sig.status == "flat signal"


def test_constant_signal_is_flat():
    with pytest.warns(DegenerateSpectrumWarning):
        sig = loss_signature(np.full(50, 0.7), detrend="constant")
    assert sig.activity < 1e-25 and math.isnan(sig.mobility)  # rounding of the mean removal


@pytest.mark.parametrize("method", ["periodogram", "welch"])
@pytest.mark.parametrize("c", [1e-6, 0.3, 1e4])
def test_scale_invariance(method, c):
    # Property: x -> c x multiplies activity by c^2 and leaves mobility and complexity unchanged.
    x = np.random.default_rng(2).normal(size=500).cumsum() + np.sin(0.2 * np.arange(500))
    a, b = loss_signature(x, method=method), loss_signature(c * x, method=method)
    assert b.activity == pytest.approx(c ** 2 * a.activity, rel=1e-9)
    assert b.mobility == pytest.approx(a.mobility, rel=1e-9)
    assert b.complexity == pytest.approx(a.complexity, rel=1e-9)


def test_window_selects_the_slice():
    # Steps 0, 10, ..., the window [100, 500) is points 10..49 (half-open like a slice).
    steps = np.arange(0, 2000, 10)
    x = np.random.default_rng(3).normal(size=steps.size)
    sig = loss_signature(x, steps=steps, window=(100, 500))
    ref = loss_signature(x[10:50])
    assert sig.n == 40 and sig.window == (100, 500)
    assert (sig.activity, sig.mobility, sig.complexity) == (ref.activity, ref.mobility, ref.complexity)
    # Without steps, the window counts samples: (0, 100) is the first 100 points.
    first = loss_signature(np.r_[x, x], window=(0, 100))
    assert first.n == 100 and first.activity == loss_signature(x[:100]).activity


def test_steps_offset_and_float_spacing():
    steps = 1000 + 0.5 * np.arange(64)
    x = np.cos(2 * np.pi * 4 / 64 * np.arange(64))
    assert loss_signature(x, steps=steps).activity == pytest.approx(loss_signature(x).activity, rel=1e-12)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(losses=np.ones(7)), ValueError, r"losses must hold at least 8 points.*got 7.*Log the loss more often"),
    (dict(losses=[1.0, 2.0, float("nan")] + [1.0] * 10), ValueError, r"losses must be finite; got nan at index 2"),
    (dict(losses=np.ones((4, 4))), ValueError, r"losses must be 1-D.*shape \(4, 4\).*one curve at a time"),
    (dict(losses="abc"), TypeError, r"losses must be a 1-D sequence of numbers; got str"),
    (dict(losses=np.ones(20), steps=np.arange(19)), ValueError, r"steps must have one value per loss \(20\); got 19"),
    (dict(losses=np.ones(10), steps=[0, 1, 2, 3, 5, 6, 7, 8, 9, 10]), ValueError,
     r"steps must be equally spaced.*steps\[3\]=3 to steps\[4\]=5 is 2.*np.interp"),
    (dict(losses=np.ones(10), steps=[0, 1, 2, 3, 3, 4, 5, 6, 7, 8]), ValueError,
     r"steps must be strictly increasing; got steps\[3\]=3 followed by steps\[4\]=3"),
    (dict(losses=np.ones(10), steps=[0, 1, 2, 3, np.inf, 4, 5, 6, 7, 8]), ValueError, r"steps must be finite"),
    (dict(losses=np.ones(20), detrend="quadratic"), ValueError, r"detrend must be one of 'linear', 'constant' or None; got 'quadratic'"),
    (dict(losses=np.ones(20), method="fft"), ValueError, r"method must be 'periodogram' or 'welch'; got 'fft'"),
    (dict(losses=np.ones(20), fs=0), ValueError, r"fs must be positive and finite.*got 0"),
    (dict(losses=np.ones(20), fs="1"), TypeError, r"fs must be a positive real number.*got '1'"),
    (dict(losses=np.ones(20), window=400), TypeError, r"window must be a \(start, stop\) pair of steps; got 400.*window=\(0, 400\)"),
    (dict(losses=np.ones(20), window=(5, 2)), ValueError, r"window must be \(start, stop\) with finite start < stop; got \(5, 2\)"),
    (dict(losses=np.ones(20), window=(0, 5)), ValueError, r"window must hold at least 8 points; \(0, 5\) holds 5 of steps 0 to 19. Widen"),
])
def test_errors(kwargs, exc, match):
    losses = kwargs.pop("losses")
    with pytest.raises(exc, match=match):
        loss_signature(losses, **kwargs)


def test_returns_a_losssignature_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert isinstance(loss_signature(np.random.default_rng(4).normal(size=100)), LossSignature)
