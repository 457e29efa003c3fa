"""Tests of htsr_diag.spectrum (esd, esd_many, rank_floor, matrix_slices) and of the
input checks of htsr_diag._validation that esd relies on.

Reference values: scipy.linalg.svdvals (LAPACK gesdd), squared; closed forms.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

import htsr_diag.spectrum as spectrum
from htsr_diag._validation import check_eigenvalues
from htsr_diag.spectrum import esd, esd_many, matrix_dims, matrix_slices, rank_floor

torch = pytest.importorskip("torch")

EPS = np.finfo(np.float64).eps


def _ref(W: np.ndarray) -> np.ndarray:
    """Reference ESD: squared singular values from scipy, ascending."""
    return np.sort(scipy.linalg.svdvals(np.asarray(W, dtype=np.float64)) ** 2)


def _assert_spectrum(ev: np.ndarray, ref: np.ndarray, shape) -> None:
    """Equal above the rank floor to 1e-10 relative; below it, within the floor."""
    assert ev.shape == ref.shape and ev.dtype == np.float64
    assert np.all(np.diff(ev) >= 0) and np.all(ev >= 0)
    floor = rank_floor(ref[-1], shape)
    big = ref > 1e3 * floor
    np.testing.assert_allclose(ev[big], ref[big], rtol=1e-10)
    np.testing.assert_allclose(ev[~big], ref[~big], rtol=0, atol=1e4 * floor)


@pytest.mark.parametrize("shape", [(60, 25), (25, 60), (40, 40)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_esd_matches_scipy_svdvals(shape, dtype):
    W = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    ev = esd(W)
    assert ev.size == min(shape)
    _assert_spectrum(ev, _ref(W), shape)


def test_esd_closed_form():
    # diag(3, 2, 1): squared singular values 1, 4, 9 exactly
    np.testing.assert_allclose(esd(np.diag([3.0, 2.0, 1.0])), [1.0, 4.0, 9.0], rtol=1e-14)


def test_method_svd_resolves_small_singular_values():
    rng = np.random.default_rng(1)
    U, _ = np.linalg.qr(rng.standard_normal((30, 30)))
    V, _ = np.linalg.qr(rng.standard_normal((20, 20)))
    s = np.logspace(0, -10, 20)  # singular values down to 1e-10: squares to 1e-20
    W = U[:, :20] @ np.diag(s) @ V.T
    ev_svd = esd(W, method="svd")
    np.testing.assert_allclose(ev_svd, np.sort(s**2), rtol=1e-3)  # closed form, down to 1e-24
    np.testing.assert_allclose(ev_svd, _ref(W), rtol=1e-10)
    # eigh: absolute error within the rank floor (lambda_max * max(N, M) * eps), as documented
    np.testing.assert_allclose(esd(W), np.sort(s**2), rtol=0, atol=rank_floor(1.0, W.shape))


@pytest.mark.parametrize("kernel", [(3, 3), (2, 4), (5,)])
def test_conv_kernel_slices_are_pooled(kernel):
    W = np.random.default_rng(2).standard_normal((16, 8, *kernel))
    slices = [W[(slice(None), slice(None), *idx)] for idx in np.ndindex(*kernel)]
    ref = np.sort(np.concatenate([_ref(S) for S in slices]))  # reference: scipy per slice
    ev = esd(W)
    assert ev.size == 8 * int(np.prod(kernel))
    np.testing.assert_allclose(ev, ref, rtol=1e-10)
    stack = matrix_slices(W)
    assert stack.shape == (int(np.prod(kernel)), 16, 8)
    np.testing.assert_array_equal(stack[1], slices[1])


def test_matrix_dims():
    assert matrix_dims((200, 784)) == (784, 200, 784 / 200)
    assert matrix_dims((10, 10, 3, 3)) == (10, 10, 1.0)


@pytest.mark.parametrize("method", ["eigh", "svd"])
def test_torch_equals_numpy(method):
    W = np.random.default_rng(3).standard_normal((50, 30))
    np.testing.assert_allclose(esd(torch.from_numpy(W), method=method), esd(W, method=method), rtol=1e-12)
    W32 = torch.from_numpy(W.astype(np.float32)).requires_grad_(True)
    np.testing.assert_allclose(esd(W32, method=method), _ref(W.astype(np.float32)), rtol=1e-9)
    K = np.random.default_rng(4).standard_normal((6, 4, 3, 3))
    np.testing.assert_allclose(esd(torch.from_numpy(K), method=method), esd(K, method=method), rtol=1e-12)


def test_torch_cuda_matches_numpy():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    W = np.random.default_rng(5).standard_normal((64, 32))
    np.testing.assert_allclose(esd(torch.from_numpy(W).cuda()), _ref(W), rtol=1e-10)
    out = esd_many([torch.from_numpy(W).cuda(), W])
    np.testing.assert_allclose(out[0], out[1], rtol=1e-10)


def test_esd_many_keeps_order_and_batches(monkeypatch):
    rng = np.random.default_rng(6)
    mats = [rng.standard_normal(s) for s in [(20, 10), (7, 9), (20, 10), (5, 5, 3, 3), (7, 9), (20, 10)]]
    mats.append(torch.from_numpy(rng.standard_normal((20, 10))))
    calls: list[tuple] = []
    orig_np, orig_t = spectrum._esd_stack_numpy, spectrum._esd_stack_torch

    def count_np(S, method):
        calls.append(("numpy", tuple(S.shape)))
        return orig_np(S, method)

    def count_t(S, method):
        calls.append(("torch", tuple(S.shape)))
        return orig_t(S, method)

    monkeypatch.setattr(spectrum, "_esd_stack_numpy", count_np)
    monkeypatch.setattr(spectrum, "_esd_stack_torch", count_t)
    out = esd_many(mats)
    # one decomposition call per (shape, device): three (20, 10) numpy matrices in one batch
    assert sorted(calls) == sorted([("numpy", (3, 20, 10)), ("numpy", (2, 7, 9)), ("numpy", (9, 5, 5)),
                                    ("torch", (1, 20, 10))])
    monkeypatch.undo()
    assert len(out) == len(mats)
    for W, ev in zip(mats, out):  # order kept: each equals its own esd
        np.testing.assert_allclose(ev, esd(W), rtol=1e-12)
    assert esd_many([]) == []
    svd = esd_many(mats[:2], method="svd")
    np.testing.assert_allclose(svd[1], _ref(mats[1]), rtol=1e-12)


def test_rank_floor():
    # closed form: lambda_max * max(N, M) * eps(dtype)
    assert rank_floor(2.0, (200, 784)) == pytest.approx(2.0 * 784 * EPS, rel=1e-15)
    f32 = np.finfo(np.float32).eps
    assert rank_floor(1.0, (3, 5), np.float32) == pytest.approx(5 * f32, rel=1e-15)
    assert rank_floor(1.0, (3, 5), torch.float32) == pytest.approx(5 * f32, rel=1e-15)  # torch dtypes too
    assert rank_floor(1.0, (3, 5), torch.float64) == pytest.approx(5 * EPS, rel=1e-15)
    assert rank_floor(1.0, (5, 3, 3, 3)) == pytest.approx(5 * EPS, rel=1e-15)
    with pytest.raises(TypeError, match=r"dtype must be a floating-point numpy or torch dtype; got <class 'int'>"):
        rank_floor(1.0, (3, 3), int)
    with pytest.raises(TypeError, match=r"dtype must be a floating-point"):
        rank_floor(1.0, (3, 3), torch.int64)


# --------------------------------------------------------------------------- errors of check_weight


@pytest.mark.parametrize(
    "W, exc, match",
    [
        (np.ones(5), ValueError, r"W must be 2-D or 3-D or 4-D .*got 1-D with shape \(5,\)"),
        (np.ones((2, 2, 2, 2, 2)), ValueError, r"W must be 2-D or 3-D or 4-D .*got 5-D"),
        (np.array([[1.0, np.nan], [0.0, 1.0]]), ValueError, r"W must contain only finite values; got NaN or Inf"),
        (np.array([[1.0, np.inf], [0.0, 1.0]]), ValueError, r"must contain only finite values"),
        (torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), ValueError, r"must contain only finite values"),
        (np.ones((0, 5)), ValueError, r"W must not be empty; got shape \(0, 5\)"),
        (np.ones((3, 3), dtype=complex), TypeError, r"W must be a real floating-point matrix; got complex dtype"),
        (torch.ones((3, 3), dtype=torch.complex64), TypeError, r"got a complex tensor"),
        (np.ones((3, 3), dtype=np.int64), TypeError, r"W must be a floating-point matrix; got dtype int64\. "
                                                      r"Convert it first"),
        (torch.ones((3, 3), dtype=torch.int32), TypeError, r"got dtype torch\.int32"),
        (np.ones((3, 3), dtype=bool), TypeError, r"floating-point matrix; got dtype bool"),
        (np.ones((1, 5)), ValueError, r"W must have at least 2 rows and 2 columns; got shape \(1, 5\)"),
        (np.ones((5, 1)), ValueError, r"at least 2 rows and 2 columns"),
        (np.ones((4, 1, 3, 3)), ValueError, r"at least 2 rows and 2 columns; got shape \(4, 1, 3, 3\)"),
        (np.array([[1.0, "a"]], dtype=object), TypeError, r"W must be a numeric array; got an object array"),
        ([[1.0, 2.0], [3.0]], TypeError, r"rectangular nested sequence"),
    ],
)
def test_esd_bad_input(W, exc, match):
    with pytest.raises(exc, match=match):
        esd(W)


def test_esd_many_names_the_bad_element_and_method_checked():
    with pytest.raises(ValueError, match=r"weights\[1\] must contain only finite values"):
        esd_many([np.ones((3, 3)), np.full((3, 3), np.nan)])
    with pytest.raises(ValueError, match=r"method must be one of \('eigh', 'svd'\); got 'qr'"):
        esd(np.ones((3, 3)), method="qr")
    with pytest.raises(ValueError, match=r"method must be one of"):
        esd_many([np.ones((3, 3))], method="qr")


def test_list_and_float16_inputs_are_converted():
    W = [[1.0, 2.0], [3.0, 4.0]]
    np.testing.assert_allclose(esd(W), _ref(np.array(W)), rtol=1e-12)
    W16 = np.random.default_rng(7).standard_normal((6, 4)).astype(np.float16)
    np.testing.assert_allclose(esd(W16), _ref(W16.astype(np.float64)), rtol=1e-10)


def test_check_eigenvalues_clips_roundoff_negatives_only():
    W = np.random.default_rng(8).standard_normal((10, 4))
    ev = np.linalg.eigvalsh(W @ W.T)  # 10 eigenvalues, 6 of them true zeros (+-1e-15)
    out = check_eigenvalues(ev)
    assert out.min() >= 0 and np.all(np.diff(out) >= 0)
    np.testing.assert_allclose(out[-4:], _ref(W), rtol=1e-10)
    with pytest.raises(ValueError, match=r"eigenvalues must be non-negative .*got minimum -0\.1"):
        check_eigenvalues(np.array([-0.1, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"eigenvalues must be 1-D; got shape \(2, 2\)"):
        check_eigenvalues(np.ones((2, 2)))
