#!/usr/bin/env python
"""Build the MNIST subset bundled in htsr_diag (src/htsr_diag/train/_data/mnist_subset.npz).

Contents: the first 1,000 training images of each class in official file order (the study's
training pool, see ``htsr_diag.train.data.training_pool``) with their labels and official
positions, and the full 10,000-image test set; uint8 pixels, flattened to 784.

The file is byte-reproducible: arrays are written as .npy members of a deflate zip with fixed
timestamps, in a fixed order. Run from the repository root::

    .venv/bin/python scripts/build_mnist_subset.py [--src ../shared/data/mnist] [--out PATH]

It prints the SHA-256 of the result, which must equal ``BUNDLE_SHA256`` in
``htsr_diag/train/data.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from htsr_diag.train.data import POOL_PER_CLASS, bundled_path, load_mnist, training_pool  # noqa: E402


def build(src: Path, out: Path) -> str:
    data = load_mnist(src)  # verifies the SHA-256 of every file
    pool = training_pool(data.train_y, data.train_index, POOL_PER_CLASS)
    arrays = {
        "train_x": np.ascontiguousarray(data.train_x[pool], dtype=np.uint8),
        "train_y": data.train_y[pool].astype(np.uint8),
        "train_index": data.train_index[pool].astype(np.int32),
        "test_x": np.ascontiguousarray(data.test_x, dtype=np.uint8),
        "test_y": data.test_y.astype(np.uint8),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w") as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, arr, allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue(), compresslevel=9)
    tmp.replace(out)
    return hashlib.sha256(out.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=REPO.parent / "shared" / "data" / "mnist",
                    help="folder with the four IDX files (default ../shared/data/mnist)")
    ap.add_argument("--out", type=Path, default=bundled_path(), help="output .npz")
    args = ap.parse_args(argv)
    digest = build(args.src, args.out)
    print(f"{args.out} {args.out.stat().st_size} bytes sha256 {digest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
