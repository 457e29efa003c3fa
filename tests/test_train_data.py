"""MNIST loading, checksums, download path (monkeypatched), bundled subset, stratified sampling."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from htsr_diag.train import data as mdata
from htsr_diag.train import load_mnist, read_idx, stratified_indices, stratified_subset, training_pool

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "mnist"
needs_idx = pytest.mark.skipif(not (SHARED / "train-images-idx3-ubyte.gz").is_file(),
                               reason=f"full MNIST IDX files not found in {SHARED}")

# Label counts from ../shared/data/mnist/README.md (the official files).
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    monkeypatch.delenv("HTSR_DIAG_MNIST_DIR", raising=False)
    monkeypatch.setenv("HTSR_DIAG_CACHE", str(tmp_path / "cache"))

    def no_network(url, dest, timeout=30.0):
        raise AssertionError(f"tests must not download ({url})")
    monkeypatch.setattr(mdata, "_fetch_url", no_network)


def _copy_idx(dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for stem in mdata.MNIST_FILES.values():
        shutil.copy(SHARED / (stem + ".gz"), dst / (stem + ".gz"))
    return dst


@needs_idx
def test_full_files_verified_and_counted():
    d = load_mnist(SHARED)
    assert d.train_x.shape == (60000, 784) and d.test_x.shape == (10000, 784)
    assert d.train_x.dtype == np.uint8
    assert np.bincount(d.train_y).tolist() == TRAIN_COUNTS  # README.md counts
    assert np.bincount(d.test_y).tolist() == TEST_COUNTS
    assert d.source == f"idx:{SHARED}"


@needs_idx
def test_raw_and_gz_files_mix(tmp_path):
    for stem in mdata.MNIST_FILES.values():
        src = SHARED / (stem + ".gz")
        if "labels" in stem:  # raw (uncompressed) label files, gzipped images
            (tmp_path / stem).write_bytes(gzip.decompress(src.read_bytes()))
        else:
            (tmp_path / (stem + ".gz")).symlink_to(src)
    d = load_mnist(tmp_path)
    assert np.bincount(d.test_y).tolist() == TEST_COUNTS


@needs_idx
def test_wrong_file_checksum_is_rejected(tmp_path):
    _copy_idx(tmp_path)
    raw = bytearray(gzip.decompress((tmp_path / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10  # one label changed: valid IDX, wrong content
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(ValueError, match="checksum mismatch for .*t10k-labels"):
        load_mnist(tmp_path)


def test_missing_files_say_where_to_put_them(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing from .*train-images-idx3-ubyte.*Put the four files there"):
        load_mnist(tmp_path)


def test_env_var_is_used(monkeypatch, tmp_path):
    monkeypatch.setenv("HTSR_DIAG_MNIST_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_mnist()


def test_read_idx_rejects_non_idx_and_truncated(tmp_path):
    p = tmp_path / "junk"
    p.write_bytes(b"hello world")
    with pytest.raises(ValueError, match="bad magic"):
        read_idx(p)
    p.write_bytes(bytes([0, 0, 8, 1]) + (100).to_bytes(4, "big") + bytes(10))
    with pytest.raises(ValueError, match="truncated"):
        read_idx(p)
    p.write_bytes(bytes([0, 0, 8, 2]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes(range(6)))
    assert read_idx(p).tolist() == [[0, 1, 2], [3, 4, 5]]


@needs_idx
def test_download_path_with_monkeypatched_fetch(monkeypatch, tmp_path):
    calls = []

    def fake_fetch(url, dest, timeout=30.0):
        calls.append(url)
        if url.startswith(mdata.MNIST_MIRRORS[0]):
            raise OSError("mirror down")
        shutil.copy(SHARED / url.rsplit("/", 1)[1], dest)

    monkeypatch.setattr(mdata, "_fetch_url", fake_fetch)
    d = load_mnist(download=True)
    assert np.bincount(d.test_y).tolist() == TEST_COUNTS
    cache = tmp_path / "cache" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(s + ".gz" for s in mdata.MNIST_FILES.values())
    assert len(calls) == 8  # first mirror fails, second delivers, for each of the 4 files
    calls.clear()
    load_mnist()  # reused from the cache, no fetch
    assert calls == []


@needs_idx
def test_download_rejects_corrupt_mirror_and_tries_next(monkeypatch, tmp_path):
    def fake_fetch(url, dest, timeout=30.0):
        if url.startswith(mdata.MNIST_MIRRORS[0]):
            Path(dest).write_bytes(gzip.compress(b"\x00\x00\x08\x01" + bytes(4)))  # wrong bytes
        else:
            shutil.copy(SHARED / url.rsplit("/", 1)[1], dest)

    monkeypatch.setattr(mdata, "_fetch_url", fake_fetch)
    folder = mdata.fetch_mnist(tmp_path / "dl")
    assert load_mnist(folder).n_train == 60000
    assert not list(folder.glob("*.part"))


def test_offline_download_fails_with_where_to_put_files(monkeypatch, tmp_path):
    def offline(url, dest, timeout=30.0):
        raise OSError("Name or service not known")

    monkeypatch.setattr(mdata, "_fetch_url", offline)
    with pytest.raises(OSError, match=r"offline, copy the four MNIST IDX files .* into .*cache"):
        load_mnist(download=True)


def test_bundled_subset_contents():
    d = load_mnist("bundled")
    assert d.source == "bundled"
    assert d.train_x.shape == (10000, 784) and d.test_x.shape == (10000, 784)
    assert np.bincount(d.train_y).tolist() == [1000] * 10
    assert np.bincount(d.test_y).tolist() == TEST_COUNTS  # full test set, README counts
    assert np.all(np.diff(d.train_index) > 0)


def test_no_files_anywhere_falls_back_to_bundled():
    assert load_mnist().source == "bundled"


def test_tampered_bundle_is_rejected(monkeypatch, tmp_path):
    bad = tmp_path / "mnist_subset.npz"
    raw = bytearray(mdata.bundled_path().read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    bad.write_bytes(bytes(raw))
    monkeypatch.setattr(mdata, "bundled_path", lambda: bad)
    with pytest.raises(ValueError, match="checksum mismatch for the bundled subset"):
        load_mnist("bundled")


@needs_idx
@pytest.mark.slow
def test_bundle_equals_pool_of_full_files_and_rebuilds_byte_identical(tmp_path):
    full = load_mnist(SHARED)
    pool = training_pool(full.train_y, full.train_index)
    b = load_mnist("bundled")
    np.testing.assert_array_equal(b.train_index, pool)
    np.testing.assert_array_equal(b.train_x, full.train_x[pool])
    np.testing.assert_array_equal(b.test_x, full.test_x)
    out = tmp_path / "rebuilt.npz"
    subprocess.run([sys.executable, str(REPO / "scripts" / "build_mnist_subset.py"), "--src", str(SHARED),
                    "--out", str(out)], check=True, capture_output=True)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == mdata.BUNDLE_SHA256


@needs_idx
def test_training_subset_same_from_full_files_and_bundle():
    from htsr_diag.train import PRESETS, training_subset
    full = load_mnist(SHARED)
    b = load_mnist("bundled")
    for seed in (0, 7):
        xf, yf = training_subset(PRESETS["paper"].replace(seed=seed), full)
        xb, yb = training_subset(PRESETS["paper"].replace(seed=seed), b)
        assert np.bincount(yf).tolist() == [100] * 10
        np.testing.assert_array_equal(xf, xb)
        np.testing.assert_array_equal(yf, yb)
    with pytest.raises(ValueError, match="n_train_per_class must be <= 1000 with the bundled"):
        training_subset(PRESETS["paper"].replace(n_train_per_class=1001), b)
    assert training_subset(PRESETS["paper"].replace(n_train_per_class=1001), full)[0].shape == (10010, 784)


def test_stratified_indices_counts_and_seeding():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 10, size=3000)
    idx = stratified_indices(y, 100, seed=0)
    assert np.bincount(y[idx]).tolist() == [100] * 10
    assert len(np.unique(idx)) == 1000 and np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(idx, stratified_indices(y, 100, seed=0))
    assert not np.array_equal(idx, stratified_indices(y, 100, seed=1))
    # a random sample, not the first per_class of each class: over 40 seeds every example of
    # class 0 (~300, each picked with p ~ 1/3) is picked at least once (miss chance ~(2/3)**40)
    hits = np.zeros(y.size)
    for s in range(40):
        hits[stratified_indices(y, 100, seed=s)] += 1
    assert np.all(hits[y == 0] > 0)


def test_stratified_subset_and_errors():
    x = np.arange(12).reshape(6, 2)
    y = np.array([0, 1, 0, 1, 0, 2])
    xs, ys = stratified_subset(x, y, 1, seed=3)
    assert np.bincount(ys).tolist() == [1, 1, 1]
    assert all((x[y == c] == xs[ys == c]).all(axis=1).any() for c in range(3))
    with pytest.raises(ValueError, match="class 2 has 1 examples, per_class=2"):
        stratified_indices(y, 2, seed=0)
    with pytest.raises(ValueError, match="same number of rows"):
        stratified_subset(x[:3], y, 1, seed=0)
    with pytest.raises(ValueError, match="1-D integer"):
        stratified_indices(y.astype(float), 1, seed=0)
    with pytest.raises(ValueError, match="per_class must be an integer >= 1"):
        stratified_indices(y, 0, seed=0)
