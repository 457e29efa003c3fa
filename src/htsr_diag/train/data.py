"""MNIST for the reference study: IDX reader, checksums, cache/download, bundled subset.

Where the data comes from (:func:`load_mnist`), in order:

1. ``data_dir`` (a directory holding the four standard IDX files, gzipped or raw);
2. the environment variable ``HTSR_DIAG_MNIST_DIR``;
3. the user cache (``$HTSR_DIAG_CACHE`` or ``$XDG_CACHE_HOME/htsr_diag`` or
   ``~/.cache/htsr_diag``, sub-folder ``mnist``), filled by :func:`fetch_mnist` or by
   ``load_mnist(download=True)``;
4. the subset bundled inside the package (``_data/mnist_subset.npz``): the first 1,000
   training images of each class, in file order, and the full 10,000-image test set.

Every IDX file is checked against the SHA-256 of the official uncompressed file.

The training pool of the study is the first 1,000 images of each class (file order) whatever
the source, so :func:`stratified_subset` picks the same images from the full files and from
the bundled subset (see :func:`training_pool`).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._validation import check_positive_int

__all__ = [
    "MNIST",
    "MNIST_FILES",
    "MNIST_SHA256",
    "MNIST_MIRRORS",
    "BUNDLE_SHA256",
    "POOL_PER_CLASS",
    "bundled_path",
    "cache_dir",
    "fetch_mnist",
    "load_mnist",
    "read_idx",
    "stratified_indices",
    "stratified_subset",
    "training_pool",
]

logger = logging.getLogger(__name__)

#: Logical names -> file stems of the four standard IDX files.
MNIST_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

#: SHA-256 of the *uncompressed* official files (../shared/data/mnist/README.md).
MNIST_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

#: Public mirrors serving ``<stem>.gz``, tried in order.
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

#: Images per class in the training pool (and in the bundled subset).
POOL_PER_CLASS = 1000

ENV_DATA_DIR = "HTSR_DIAG_MNIST_DIR"
ENV_CACHE = "HTSR_DIAG_CACHE"
BUNDLE_NAME = "mnist_subset.npz"
#: SHA-256 of the bundled file as written by scripts/build_mnist_subset.py.
BUNDLE_SHA256 = "a875a855363603f25c971152c5346eab8097a1e67251ad1eb8a398a650f8453d"


@dataclass(frozen=True)
class MNIST:
    """MNIST images and labels as numpy arrays.

    Attributes
    ----------
    train_x : ndarray, shape (n_train, 784), uint8
        Training images, flattened row-major, pixel values 0..255.
    train_y : ndarray, shape (n_train,), int64
        Training labels 0..9.
    test_x : ndarray, shape (n_test, 784), uint8
    test_y : ndarray, shape (n_test,), int64
    train_index : ndarray, shape (n_train,), int64
        Position of each training image in the official training file (0..59999).
    source : str
        ``"idx:<directory>"`` or ``"bundled"``.
    """

    train_x: np.ndarray = field(repr=False)
    train_y: np.ndarray = field(repr=False)
    test_x: np.ndarray = field(repr=False)
    test_y: np.ndarray = field(repr=False)
    train_index: np.ndarray = field(repr=False)
    source: str = "bundled"

    @property
    def n_train(self) -> int:
        return int(self.train_y.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.test_y.shape[0])


# --------------------------------------------------------------------------- IDX files
def read_idx(path: str | os.PathLike, *, expected_sha256: str | None = None) -> np.ndarray:
    """Read one IDX file (raw or ``.gz``) and optionally verify its SHA-256.

    Parameters
    ----------
    path : path-like
        The file; a name ending in ``.gz`` is decompressed.
    expected_sha256 : str, optional
        Hex digest of the *uncompressed* bytes; a mismatch raises ``ValueError``.

    Returns
    -------
    ndarray
        uint8 array with the shape stored in the header, e.g. (60000, 28, 28).

    Examples
    --------
    A three-label file (header: magic ``0 0 8 1``, then the length 3 as a big-endian int32):

    >>> import gzip, pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "labels-idx1-ubyte.gz"
    >>> _ = path.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1])))
    >>> read_idx(path).tolist()
    [7, 2, 1]

    The MNIST test labels (skipped: needs the files on disk, see :func:`fetch_mnist`):

    >>> read_idx("../shared/data/mnist/t10k-labels-idx1-ubyte.gz").shape  # doctest: +SKIP
    (10000,)
    """
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise ValueError(f"cannot read IDX file {path}: {exc}. Delete it and fetch it again "
                         f"(htsr_diag.train.fetch_mnist()).") from exc
    if expected_sha256 is not None:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != expected_sha256:
            raise ValueError(f"checksum mismatch for {path}: SHA-256 of the uncompressed bytes is "
                             f"{digest}, expected {expected_sha256}. The file is corrupt or not the "
                             f"official MNIST file; delete it and fetch it again.")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (bad magic number).")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=header)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: header says shape {shape}, found {data.size} bytes.")
    return data.reshape(shape)


def _find_file(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def _missing(directory: Path) -> list[str]:
    return [stem for stem in MNIST_FILES.values() if _find_file(directory, stem) is None]


def _load_idx_dir(directory: Path) -> MNIST:
    missing = _missing(directory)
    if missing:
        raise FileNotFoundError(
            f"MNIST IDX files missing from {directory}: {', '.join(missing)} (raw or .gz). "
            f"Put the four files there (e.g. copy them from a machine with network access, "
            f"sources: {', '.join(MNIST_MIRRORS)}), or call "
            f"htsr_diag.train.fetch_mnist({str(directory)!r}) when online.")
    arrays = {key: read_idx(_find_file(directory, stem), expected_sha256=MNIST_SHA256[stem])
              for key, stem in MNIST_FILES.items()}
    n = arrays["train_images"].shape[0]
    return MNIST(train_x=arrays["train_images"].reshape(n, -1),
                 train_y=arrays["train_labels"].astype(np.int64),
                 test_x=arrays["test_images"].reshape(arrays["test_images"].shape[0], -1),
                 test_y=arrays["test_labels"].astype(np.int64),
                 train_index=np.arange(n, dtype=np.int64),
                 source=f"idx:{directory}")


# --------------------------------------------------------------------------- cache / download
def cache_dir() -> Path:
    """The user cache folder for MNIST (``$HTSR_DIAG_CACHE``, ``$XDG_CACHE_HOME/htsr_diag``
    or ``~/.cache/htsr_diag``, then ``/mnist``). Not created here."""
    root = os.environ.get(ENV_CACHE)
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = os.path.join(xdg, "htsr_diag") if xdg else os.path.join(os.path.expanduser("~"), ".cache", "htsr_diag")
    return Path(root) / "mnist"


def _fetch_url(url: str, dest: Path, timeout: float = 30.0) -> None:
    """Download ``url`` to ``dest`` (the one network call; tests monkeypatch it)."""
    with urllib.request.urlopen(url, timeout=timeout) as resp, open(dest, "wb") as out:  # noqa: S310
        shutil.copyfileobj(resp, out)


def fetch_mnist(dest: str | os.PathLike | None = None, *,
                mirrors: tuple[str, ...] = MNIST_MIRRORS) -> Path:
    """Download the four gzipped IDX files into ``dest`` (default: :func:`cache_dir`), verify them.

    Files already present and valid are kept. Each file is downloaded to a temporary name,
    verified, then renamed, so an interrupted download leaves nothing half-written.

    Parameters
    ----------
    dest : path-like, optional
        Target folder, created if needed.
    mirrors : tuple of str
        Base URLs tried in order; each must serve ``<stem>.gz``.

    Returns
    -------
    Path
        The folder holding the verified files.

    Raises
    ------
    OSError
        No mirror delivered a valid copy of some file (e.g. offline); the message says where to
        put the files by hand.

    Examples
    --------
    Skipped: needs the network (or the files already in the cache).

    >>> folder = fetch_mnist()  # doctest: +SKIP
    >>> load_mnist(folder).n_train  # doctest: +SKIP
    60000
    """
    dest = Path(dest) if dest is not None else cache_dir()
    dest.mkdir(parents=True, exist_ok=True)
    for stem, sha in MNIST_SHA256.items():
        present = _find_file(dest, stem)
        if present is not None:
            try:
                read_idx(present, expected_sha256=sha)
                continue
            except ValueError:
                logger.warning("discarding invalid %s", present)
                present.unlink()
        errors = []
        for base in mirrors:
            url = base + stem + ".gz"
            fd, tmp = tempfile.mkstemp(prefix=stem, suffix=".gz.part", dir=dest)
            os.close(fd)
            try:
                _fetch_url(url, Path(tmp))
                with gzip.open(tmp, "rb") as fh:
                    if hashlib.sha256(fh.read()).hexdigest() != sha:
                        raise ValueError("checksum mismatch")
                os.replace(tmp, dest / (stem + ".gz"))
                logger.info("downloaded %s", url)
                break
            except Exception as exc:  # network errors, bad content: try the next mirror
                errors.append(f"{url}: {exc}")
                if os.path.exists(tmp):
                    os.unlink(tmp)
        else:
            raise OSError(
                f"could not download {stem}.gz from any mirror ({'; '.join(errors)}). If this "
                f"machine is offline, copy the four MNIST IDX files ({', '.join(MNIST_FILES.values())}, "
                f"raw or .gz) into {dest} or into a folder named by ${ENV_DATA_DIR}, or pass data_dir=.")
    return dest


# --------------------------------------------------------------------------- bundled subset
def bundled_path() -> Path:
    """Path of the subset shipped inside the package."""
    return Path(__file__).resolve().parent / "_data" / BUNDLE_NAME


def _load_bundled() -> MNIST:
    path = bundled_path()
    if not path.is_file():
        raise FileNotFoundError(f"the bundled MNIST subset {path} is missing from the installation; "
                                f"rebuild it with scripts/build_mnist_subset.py or pass data_dir=.")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != BUNDLE_SHA256:
        raise ValueError(f"checksum mismatch for the bundled subset {path}: SHA-256 {digest}, "
                         f"expected {BUNDLE_SHA256}. Reinstall htsr-diag or rebuild it with "
                         f"scripts/build_mnist_subset.py.")
    with np.load(path, allow_pickle=False) as z:
        return MNIST(train_x=z["train_x"], train_y=z["train_y"].astype(np.int64),
                     test_x=z["test_x"], test_y=z["test_y"].astype(np.int64),
                     train_index=z["train_index"].astype(np.int64), source="bundled")


def load_mnist(data_dir: str | os.PathLike | None = None, *, download: bool = False) -> MNIST:
    """Load MNIST from IDX files, the cache, a download, or the bundled subset.

    Parameters
    ----------
    data_dir : path-like or "bundled", optional
        Folder with the four IDX files (raw or ``.gz``). ``"bundled"`` forces the packaged
        subset. ``None``: ``$HTSR_DIAG_MNIST_DIR``, else the user cache, else (with
        ``download=True``) a download into the cache, else the bundled subset.
    download : bool, default False
        Download missing files (into ``data_dir`` or the cache) from the public mirrors.

    Returns
    -------
    MNIST
        Full sets (60,000 / 10,000 images) from IDX files; from the bundled subset 10,000
        training images (the first 1,000 of each class) and the full test set.

    Raises
    ------
    FileNotFoundError
        ``data_dir`` (or ``$HTSR_DIAG_MNIST_DIR``) lacks files and ``download`` is False; the
        message lists the files and where to put them.
    ValueError
        A file fails its SHA-256 check or is not an IDX file.

    Examples
    --------
    >>> from htsr_diag.train import load_mnist
    >>> data = load_mnist("bundled")
    >>> data.train_x.shape, data.test_x.shape
    ((10000, 784), (10000, 784))
    """
    if data_dir is not None and str(data_dir) == "bundled":
        return _load_bundled()
    if data_dir is None and os.environ.get(ENV_DATA_DIR):
        data_dir = os.environ[ENV_DATA_DIR]
    if data_dir is not None:
        directory = Path(data_dir).expanduser()
        if download and _missing(directory):
            fetch_mnist(directory)
        return _load_idx_dir(directory)
    cached = cache_dir()
    if not _missing(cached):
        return _load_idx_dir(cached)
    if download:
        return _load_idx_dir(fetch_mnist(cached))
    logger.info("MNIST IDX files not found (%s); using the bundled subset", cached)
    return _load_bundled()


# --------------------------------------------------------------------------- sampling
def training_pool(y: np.ndarray, train_index: np.ndarray | None = None,
                  per_class: int = POOL_PER_CLASS) -> np.ndarray:
    """Positions of the first ``per_class`` images of each class, in official file order.

    The study's training subsets are drawn from this pool, which the bundled subset holds
    entirely, so the full files and the bundle give the same training images.

    Parameters
    ----------
    y : ndarray, shape (n,)
        Labels.
    train_index : ndarray, shape (n,), optional
        Official file positions of the rows (default ``arange(n)``).
    per_class : int
        Pool size per class.

    Returns
    -------
    ndarray of int64, positions into ``y`` (ascending by official index).
    """
    y = np.asarray(y)
    order = np.argsort(train_index, kind="stable") if train_index is not None else np.arange(y.size)
    keep = []
    for c in np.unique(y):
        pos = order[y[order] == c][:per_class]
        keep.append(pos)
    pool = np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)
    key = train_index[pool] if train_index is not None else pool
    return pool[np.argsort(key, kind="stable")].astype(np.int64)


def stratified_indices(y: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Seeded stratified sample: ``per_class`` positions of each class, without replacement.

    For each class ``c`` (ascending) the positions ``flatnonzero(y == c)`` are permuted with
    ``numpy.random.default_rng(seed)`` (one generator shared across classes, in class order)
    and the first ``per_class`` kept. The result is sorted ascending.

    Parameters
    ----------
    y : ndarray, shape (n,), integer labels
    per_class : int, >= 1
    seed : int, >= 0

    Returns
    -------
    ndarray of int64, shape (n_classes * per_class,)

    Raises
    ------
    ValueError
        A class has fewer than ``per_class`` examples, or ``y`` is not 1-D integer.

    Examples
    --------
    >>> import numpy as np
    >>> stratified_indices(np.array([0, 0, 1, 1, 1]), per_class=1, seed=0).size
    2
    """
    per_class = check_positive_int(per_class, "per_class")
    seed = check_positive_int(seed, "seed", minimum=0)
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y must be a 1-D integer label array; got shape {y.shape}, dtype {y.dtype}.")
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(y):
        pos = np.flatnonzero(y == c)
        if pos.size < per_class:
            raise ValueError(f"per_class must be at most the size of the smallest class; class {c} "
                             f"has {pos.size} examples, per_class={per_class}. Use a smaller "
                             f"per_class or the full IDX files (data_dir=).")
        out.append(rng.permutation(pos)[:per_class])
    return np.sort(np.concatenate(out)).astype(np.int64)


def stratified_subset(x: np.ndarray, y: np.ndarray, per_class: int, seed: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(x[idx], y[idx])`` for ``idx = stratified_indices(y, per_class, seed)``.

    Parameters
    ----------
    x : ndarray, shape (n, ...)
    y : ndarray, shape (n,)
    per_class : int
    seed : int

    Returns
    -------
    (ndarray, ndarray)
        Shapes (n_classes * per_class, ...) and (n_classes * per_class,).

    Examples
    --------
    >>> import numpy as np
    >>> xs, ys = stratified_subset(np.arange(6)[:, None], np.array([0, 1, 0, 1, 0, 1]), 2, seed=0)
    >>> np.bincount(ys).tolist()
    [2, 2]
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same number of rows; got {x.shape[0]} and {y.shape[0]}.")
    idx = stratified_indices(y, per_class, seed)
    return x[idx], y[idx]
