"""Marchenko-Pastur and Tracy-Widom laws, and the robust MP sigma fit."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import integrate, optimize

from htsr_diag.exceptions import DegenerateSpectrumWarning
from htsr_diag.mp import (
    fit_mp_sigma,
    mp_cdf,
    mp_edges,
    mp_pdf,
    mp_ppf,
    tracy_widom_cdf,
    tracy_widom_quantile,
    tracy_widom_scale,
)

QS = [1.0, 1.5, 3.92, 20.0]


@pytest.mark.parametrize("q", QS)
@pytest.mark.parametrize("sigma", [1.0, 0.37])
def test_edges_closed_form(q, sigma):
    lo, hi = mp_edges(q, sigma)
    # closed form (REFERENCES.md section 2; Marchenko & Pastur 1967): sigma^2 (1 -+ sqrt(M/N))^2
    assert lo == pytest.approx(sigma**2 * (1 - math.sqrt(1 / q)) ** 2, rel=1e-14, abs=1e-15)
    assert hi == pytest.approx(sigma**2 * (1 + math.sqrt(1 / q)) ** 2, rel=1e-14)
    # the density vanishes outside (lo, hi) and is positive inside
    assert mp_pdf(hi * 1.001, q, sigma) == 0.0
    assert mp_pdf(0.5 * (lo + hi), q, sigma) > 0.0


@pytest.mark.parametrize("q", QS)
@pytest.mark.parametrize("sigma", [1.0, 1.3])
def test_cdf_matches_quadrature_of_density(q, sigma):
    lo, hi = mp_edges(q, sigma)
    # the density integrates to 1 (scipy.integrate.quad)
    total = integrate.quad(lambda t: mp_pdf(t, q, sigma), lo, hi, limit=200)[0]
    assert total == pytest.approx(1.0, abs=1e-7)
    for x in np.linspace(lo, hi, 9)[1:-1]:
        ref = integrate.quad(lambda t: mp_pdf(t, q, sigma), lo, x, limit=200)[0]  # independent reference
        assert mp_cdf(x, q, sigma) == pytest.approx(ref, abs=1e-7)
    assert mp_cdf(lo - 1.0, q, sigma) == 0.0
    assert mp_cdf(hi + 1.0, q, sigma) == 1.0


def test_mean_of_mp_is_sigma_squared():
    # MP's first moment is sigma^2 (Bai & Silverstein 2010, Lemma 3.1): integral of x f(x)
    q, sigma = 3.92, 0.8
    lo, hi = mp_edges(q, sigma)
    mean = integrate.quad(lambda t: t * mp_pdf(t, q, sigma), lo, hi, limit=200)[0]
    assert mean == pytest.approx(sigma**2, rel=1e-7)


def test_ppf_inverts_cdf_against_brentq():
    q = 2.5
    p = np.array([0.01, 0.2, 0.5, 0.8, 0.99])
    ref = [optimize.brentq(lambda x, pp=pp: mp_cdf(x, q) - pp, *mp_edges(q), xtol=1e-14) for pp in p]
    np.testing.assert_allclose(mp_ppf(p, q), ref, rtol=1e-10)
    assert mp_ppf(0.0, q) == pytest.approx(mp_edges(q)[0], abs=1e-12)


def test_vector_and_scalar_shapes():
    x = np.linspace(0, 3, 12).reshape(3, 4)
    assert np.asarray(mp_pdf(x, 2.0)).shape == (3, 4)
    assert np.asarray(mp_cdf(x, 2.0)).shape == (3, 4)
    assert isinstance(mp_cdf(1.0, 2.0), float)


def test_empirical_spectrum_follows_mp():
    # eigenvalues of W^T W / N of an iid Gaussian matrix: the Marchenko-Pastur theorem
    rng = np.random.default_rng(0)
    W = rng.standard_normal((2000, 500))
    ev = np.linalg.eigvalsh(W.T @ W) / 2000
    emp = np.searchsorted(ev, [0.5, 1.0, 1.5], side="right") / ev.size
    np.testing.assert_allclose(emp, mp_cdf(np.array([0.5, 1.0, 1.5]), 4.0), atol=0.01)


def test_tracy_widom_scale_formula():
    # Johnstone (2001), eq. (1.3)-(1.4) without the n-1 correction (REFERENCES.md section 2)
    mu, s = tracy_widom_scale(784, 200, 2.0)
    assert mu == pytest.approx(4.0 * (28.0 + math.sqrt(200)) ** 2)
    assert s == pytest.approx(4.0 * (28.0 + math.sqrt(200)) * (1 / 28.0 + 1 / math.sqrt(200)) ** (1 / 3))
    assert tracy_widom_scale(200, 784) == pytest.approx(tracy_widom_scale(784, 200))


# Percentiles of TW1: Johnstone (2001), Ann. Statist. 29(2), Table 1 (two decimals),
# computed there from the Painleve II representation of Tracy & Widom (1996).
JOHNSTONE_TABLE1 = {0.01: -3.90, 0.05: -3.18, 0.10: -2.78, 0.30: -1.91, 0.50: -1.27,
                    0.70: -0.59, 0.90: 0.45, 0.95: 0.98, 0.99: 2.02}


@pytest.mark.parametrize("p, value", sorted(JOHNSTONE_TABLE1.items()))
def test_tw1_quantiles_match_johnstone_table(p, value):
    assert tracy_widom_quantile(p) == pytest.approx(value, abs=0.006)
    assert tracy_widom_cdf(tracy_widom_quantile(p)) == pytest.approx(p, abs=1e-9)


def test_tw1_mean_and_variance_match_bornemann():
    # Bornemann (2010), Math. Comp. 79, Table 10 / Tracy & Widom (1996):
    # TW1 mean -1.2065335745820, variance 1.6077810345810.
    F = lambda s: tracy_widom_cdf(s)  # noqa: E731
    mean = (integrate.quad(lambda s: 1 - F(s), 0, 14, limit=200)[0]
            - integrate.quad(F, -14, 0, limit=200)[0])
    second = (integrate.quad(lambda s: 2 * s * (1 - F(s)), 0, 14, limit=200)[0]
              - integrate.quad(lambda s: 2 * s * F(s), -14, 0, limit=200)[0])
    assert mean == pytest.approx(-1.2065335745820, abs=1e-9)
    assert second - mean**2 == pytest.approx(1.6077810345810, abs=1e-9)


def test_largest_eigenvalue_is_tracy_widom():
    # Johnstone (2001), Theorem 1.1: (lambda_max - mu) / s -> TW1. 300 Gaussian 100 x 40
    # matrices: the empirical fraction below TW1's median is near 0.5.
    rng = np.random.default_rng(1)
    mu, s = tracy_widom_scale(100, 40)
    z = [(np.linalg.eigvalsh(W.T @ W)[-1] - mu) / s for W in rng.standard_normal((300, 100, 40))]
    frac = np.mean(np.array(z) < tracy_widom_quantile(0.5))
    assert 0.4 < frac < 0.68  # binomial sd 0.03; the finite-n bias of this centring is conservative


def test_fit_sigma_recovers_sigma_and_is_equivariant():
    rng = np.random.default_rng(2)
    W = 0.3 * rng.standard_normal((800, 200))
    ev = np.linalg.eigvalsh(W.T @ W) / 800
    s = fit_mp_sigma(ev, 4.0)
    assert s == pytest.approx(0.3, rel=0.01)
    assert fit_mp_sigma(ev * 1e6, 4.0) == pytest.approx(s * 1e3, rel=1e-12)


def test_fit_sigma_is_robust_to_outliers():
    rng = np.random.default_rng(3)
    W = rng.standard_normal((784, 200))
    ev = np.linalg.eigvalsh(W.T @ W)
    ev = ev / ev.mean()
    s0 = fit_mp_sigma(ev, 3.92)
    planted = np.concatenate([ev, [40.0, 80.0, 150.0, 300.0, 1000.0]])
    # five huge outliers: the robust fit does not move; the moment estimate (sqrt of the mean) does
    assert fit_mp_sigma(planted, 3.92, m=200) == pytest.approx(s0, rel=1e-3)
    assert math.sqrt(planted.mean()) > 2.5 * s0


def test_fit_sigma_robust_on_a_matrix_with_large_entries():
    # a Gaussian matrix (entry sigma 1) with 3 entries of 80: the bulk still has sigma ~ 1
    rng = np.random.default_rng(4)
    W = rng.standard_normal((784, 200))
    W.flat[[7, 9000, 100000]] = 80.0
    ev = np.linalg.eigvalsh(W.T @ W) / 784
    assert fit_mp_sigma(ev, 3.92) == pytest.approx(1.0, abs=0.02)
    assert math.sqrt(ev.mean()) > 1.05  # the moment estimate is dragged up


def test_fit_sigma_degenerate_gives_nan_and_warning():
    with pytest.warns(DegenerateSpectrumWarning, match="bulk of the spectrum is zero"):
        assert math.isnan(fit_mp_sigma(np.r_[np.zeros(99), 5.0], 2.0))
    with pytest.warns(DegenerateSpectrumWarning, match="all eigenvalues are zero"):
        assert math.isnan(fit_mp_sigma(np.zeros(10), 2.0))


def test_no_warning_on_good_data():
    rng = np.random.default_rng(5)
    W = rng.standard_normal((300, 100))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit_mp_sigma(np.linalg.eigvalsh(W.T @ W), 3.0)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: mp_edges(0.5), ValueError, r"q must be a finite number >= 1; got 0.5"),
    (lambda: mp_edges(float("inf")), ValueError, r"q must be a finite number"),
    (lambda: mp_edges("2"), TypeError, r"q must be a real number"),
    (lambda: mp_edges(2.0, 0.0), ValueError, r"sigma must be a finite number > 0; got 0.0"),
    (lambda: mp_pdf([1.0, np.nan], 2.0), ValueError, r"x must not contain NaN"),
    (lambda: mp_cdf(np.array(["a"]), 2.0), TypeError, r"x must be real numbers"),
    (lambda: mp_ppf(1.5, 2.0), ValueError, r"p must be probabilities in \[0, 1\]"),
    (lambda: tracy_widom_scale(0, 3), ValueError, r"n must be a positive integer"),
    (lambda: tracy_widom_scale(3, 2.5), ValueError, r"m must be a positive integer"),
    (lambda: tracy_widom_quantile(1.0), ValueError, r"p must lie in \[1e-12, 1 - 1e-12\]"),
    (lambda: tracy_widom_quantile(0.0), ValueError, r"p must be a finite number > 0"),
    (lambda: fit_mp_sigma([1.0, -2.0], 2.0), ValueError, r"eigs must be non-negative"),
    (lambda: fit_mp_sigma(np.ones((2, 2)), 2.0), ValueError, r"eigs must be 1-D"),
    (lambda: fit_mp_sigma([1.0, 2.0], 0.1), ValueError, r"q must be a finite number >= 1"),
    (lambda: fit_mp_sigma([1.0, 2.0], 2.0, m=0), ValueError, r"m must be an integer >= 1"),
])
def test_bad_input_raises(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
