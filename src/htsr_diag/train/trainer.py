"""The reference trainer: R independent runs of the study's MLP trained as one batched model.

A single run (:func:`train`) is an ensemble of one. Parameters of all members live in one
``(R, P)`` tensor; the forward and backward passes are written out by hand with batched
matmuls (``torch.baddbmm`` / ``torch.bmm``) and the optimiser is a batched AdamW with
``torch.optim.AdamW`` semantics (per-member lr and weight decay). The tests check each member
against an independent single-model loop (``nn.Module`` + autograd + ``torch.optim.AdamW``).

Run folder (docs/architecture.md)::

    RUN/config.json  RUN/metrics.jsonl  RUN/checkpoints/step_000001234.safetensors
    RUN/state/resume.safetensors        (params + AdamW moments + step + config hash; for resuming)
    RUN/.train.lock                     (held by the one trainer writing the folder)

Every file is written to a temporary name, flushed, fsynced and renamed, so a kill never
leaves a half-written checkpoint under a final name; ``metrics.jsonl`` is rewritten on resume
without the lines past the resumed step (a damaged line is set aside in
``metrics.corrupt.jsonl`` with a warning, never dropped silently).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .._progress import Progress
from ..exceptions import CorruptMetricsWarning  # defined with the other warnings; re-exported here
from .config import TrainConfig
from .data import MNIST, POOL_PER_CLASS, load_mnist, stratified_indices, training_pool
from .environment import run_environment
from .model import PARAM_NAMES, init_mlp_params

__all__ = [
    "train",
    "train_ensemble",
    "checkpoint_steps",
    "read_metrics",
    "list_checkpoints",
    "load_checkpoint",
    "resolve_device",
    "training_subset",
    "noisy_labels",
    "TrainingDivergedError",
    "RunLockedError",
    "CorruptMetricsWarning",
]

logger = logging.getLogger(__name__)

_STATE_FILE = "resume.safetensors"
_STATE_PREV = "resume.prev.safetensors"
_BLOCK = 1000                  # steps per block of pre-drawn batch indices
_FINITE_CHECK_EVERY = 10_000   # steps between host-side finiteness checks (one sync each)
_EVAL_CHUNK = 2500             # test images per evaluation chunk


class TrainingDivergedError(RuntimeError):
    """The loss or the weights became NaN/Inf; everything saved before is kept."""


class RunLockedError(RuntimeError):
    """Another trainer holds the run folder's lock file (``.train.lock``): two writers would
    interleave their metrics and checkpoints."""


# --------------------------------------------------------------------------- helpers
def _version() -> str:
    from .. import __version__
    return __version__


def _require_safetensors():
    try:
        import safetensors.torch as st
    except ImportError as exc:  # pragma: no cover - dev installs have it
        raise ImportError('the trainer writes safetensors checkpoints; install it with '
                          'pip install "htsr-diag[safetensors]"') from exc
    return st


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None -> CUDA when available, else CPU; ``"cuda"`` without CUDA raises."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device must be available; got {str(device)!r} but torch.cuda.is_available() "
                         f"is False. Use device='cpu' or 'auto'.")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]'; got {str(device)!r}.")
    return dev


def checkpoint_steps(steps: int, per_decade: int) -> np.ndarray:
    """Log-spaced checkpoint steps: 0, round(10**(k/per_decade)) for k >= 0 below ``steps``, and ``steps``.

    Examples
    --------
    >>> checkpoint_steps(100, 2).tolist()
    [0, 1, 3, 10, 32, 100]
    """
    n_max = int(math.floor(math.log10(steps) * per_decade + 1e-9)) if steps >= 1 else 0
    grid = np.round(10.0 ** (np.arange(n_max + 1) / per_decade)).astype(np.int64)
    out = np.unique(np.concatenate([[0], grid[grid <= steps], [steps]]))
    return out.astype(np.int64)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _atomic_save_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    st = _require_safetensors()
    _atomic_write_bytes(path, st.save(tensors, metadata=metadata))


def _json_line(d: dict) -> str:
    return json.dumps(d, allow_nan=True) + "\n"


def _scan_metrics(path: Path) -> tuple[dict[int, dict], list[tuple[int, str]]]:
    """Rows by step and the damaged lines ``(line number from 1, text)`` of a metrics file.

    A last line without its newline is a write cut short by a kill: skipped, not damaged.
    """
    rows: dict[int, dict] = {}
    bad: list[tuple[int, str]] = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for no, line in enumerate(fh, 1):
            if not line.endswith("\n"):
                continue  # partial write
            try:
                row = json.loads(line)
                step = row["step"]
                if isinstance(step, float) and step.is_integer():
                    step = int(step)
                if not isinstance(step, int) or isinstance(step, bool):
                    raise TypeError(f"step {step!r} is not an integer")
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                if line.strip():
                    bad.append((no, line.rstrip("\n")))
                    logger.debug("metrics line %d of %s: %s", no, path, exc)
                continue
            rows[step] = row
    return rows, bad


def _warn_corrupt(path: Path, bad: list[tuple[int, str]], where: str, stacklevel: int = 3) -> None:
    nos = [no for no, _ in bad]
    warnings.warn(f"{path}: {len(bad)} damaged line(s) (line number(s) {nos}, not JSON with an integer "
                  f"'step') {where}; the metrics of those evaluations are lost unless repaired by hand.",
                  CorruptMetricsWarning, stacklevel=stacklevel)


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The metrics log of a run folder: one dict per evaluation, sorted by step.

    A partial last line (a run killed while writing) is skipped; a repeated step keeps its
    last line; any other line that is not JSON with an integer ``step`` is skipped with a
    :class:`CorruptMetricsWarning` naming its line number. Returns ``[]`` when the file does
    not exist.
    """
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    rows, bad = _scan_metrics(path)
    if bad:
        _warn_corrupt(path, bad, "were skipped")
    return [rows[k] for k in sorted(rows)]


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``[(step, path), ...]`` of the finished checkpoints of a run folder, by step.

    The files ``checkpoints/step_N.safetensors`` the trainer writes, and ``step_N.pt`` /
    ``step_N.pth`` put there by hand; at a step with both, the safetensors file. Temporary
    files of an interrupted write are ignored. Any other layout:
    :func:`htsr_diag.checkpoints.find_checkpoints`.
    """
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    out: dict[int, Path] = {}
    for suffix in (".pth", ".pt", ".safetensors"):  # later suffixes win a shared step
        for p in folder.glob(f"step_*{suffix}"):
            stem = p.name[len("step_"):-len(suffix)]
            if stem.isdigit():
                out[int(stem)] = p
    return sorted(out.items())


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a trainer checkpoint (safetensors) as a state dict: the MLP's names (checked), or a
    task family's own (metadata ``format`` ``htsr_diag.modular`` / ``htsr_diag.liu_toy``).

    Raises ``htsr_diag.CheckpointError`` for a missing, truncated or foreign file.
    """
    from ..exceptions import CheckpointError
    _require_safetensors()
    from safetensors import safe_open
    try:  # one open: the metadata and the tensors
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            fmt = (f.metadata() or {}).get("format", "htsr_diag.mlp")
            sd = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}. The file is missing or truncated; "
                              f"delete it (a resumed run rewrites it).") from exc
    if fmt != "htsr_diag.mlp":
        return sd
    missing = [n for n in PARAM_NAMES if n not in sd]
    if missing:
        raise CheckpointError(f"{path} is not an htsr_diag MLP checkpoint: missing {missing}.")
    return sd


def batch_stream(seed: int, n: int, batch_size: int, start: int, count: int, gen: torch.Generator,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Mini-batch indices (count, batch_size) into a training set of ``n`` for steps start+1..start+count.

    The stream of a seed is the concatenation of seeded per-epoch permutations (epoch ``e``:
    ``torch.randperm(n)`` from ``SeedSequence([seed, e, 0x5EED])``); step k (0-based) takes
    positions k*B .. k*B+B-1 of it, so a batch may straddle two epochs and a resumed run
    continues the same stream. ``gen`` is a generator on ``device`` (reseeded here).
    """
    lo, hi = start * batch_size, (start + count) * batch_size
    e0, e1 = lo // n, (hi - 1) // n
    perms = []
    for e in range(e0, e1 + 1):
        gen.manual_seed(int(np.random.SeedSequence([seed, e, 0x5EED]).generate_state(1, np.uint64)[0] >> 1))
        perms.append(torch.randperm(n, generator=gen, device=device))
    return torch.cat(perms)[lo - e0 * n: hi - e0 * n].view(count, batch_size)


# --------------------------------------------------------------------------- batched model
@dataclass
class _Layout:
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    offsets: tuple[int, ...]
    size: int

    @classmethod
    def from_state(cls, sd: dict[str, torch.Tensor]) -> "_Layout":
        shapes, offsets, off = [], [], 0
        for n in PARAM_NAMES:
            shapes.append(tuple(sd[n].shape))
            offsets.append(off)
            off += sd[n].numel()
        return cls(PARAM_NAMES, tuple(shapes), tuple(offsets), off)

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        R = flat.shape[0]
        return [flat[:, o:o + int(np.prod(s))].view(R, *s) for o, s in zip(self.offsets, self.shapes)]

    def flatten(self, sd: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([sd[n].reshape(-1) for n in self.names])


def _forward(views: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """x (R, B, in) -> outputs (R, B, 10)."""
    W1, b1, W2, b2, W3, b3 = views
    h1 = torch.baddbmm(b1.unsqueeze(1), x, W1.transpose(1, 2)).relu_()
    h2 = torch.baddbmm(b2.unsqueeze(1), h1, W2.transpose(1, 2)).relu_()
    return torch.baddbmm(b3.unsqueeze(1), h2, W3.transpose(1, 2))


def _grad(views: list[torch.Tensor], x: torch.Tensor, t: torch.Tensor,
          out: list[torch.Tensor] | None = None) -> torch.Tensor | None:
    """Gradient of the mean-squared error (``nn.MSELoss()``) w.r.t. all parameters.

    x (R, B, in), t (R, B, 10). Returns the gradient as (R, P), or writes it into the views
    ``out`` (same layout as ``views``) and returns None.
    """
    W1, b1, W2, b2, W3, b3 = views
    R, B = x.shape[0], x.shape[1]
    h1 = torch.baddbmm(b1.unsqueeze(1), x, W1.transpose(1, 2)).relu_()
    h2 = torch.baddbmm(b2.unsqueeze(1), h1, W2.transpose(1, 2)).relu_()
    g3 = torch.baddbmm(b3.unsqueeze(1), h2, W3.transpose(1, 2))
    g3.sub_(t).mul_(2.0 / (B * t.shape[2]))                         # dL/d out
    # ReLU backward exactly as autograd does it: zero where the ReLU output is <= 0
    g2 = torch.ops.aten.threshold_backward(torch.bmm(g3, W3), h2, 0.0)
    g1 = torch.ops.aten.threshold_backward(torch.bmm(g2, W2), h1, 0.0)
    if out is None:
        grads = (torch.bmm(g1.transpose(1, 2), x), g1.sum(1), torch.bmm(g2.transpose(1, 2), h1), g2.sum(1),
                 torch.bmm(g3.transpose(1, 2), h2), g3.sum(1))
        return torch.cat([g.reshape(R, -1) for g in grads], dim=1)
    gW1, gb1, gW2, gb2, gW3, gb3 = out
    torch.bmm(g1.transpose(1, 2), x, out=gW1)
    torch.sum(g1, 1, out=gb1)
    torch.bmm(g2.transpose(1, 2), h1, out=gW2)
    torch.sum(g2, 1, out=gb2)
    torch.bmm(g3.transpose(1, 2), h2, out=gW3)
    torch.sum(g3, 1, out=gb3)
    return None


class _Member:
    """Row views of one member's parameters, gradient and AdamW moments (CPU path)."""

    def __init__(self, eng: "_Engine", r: int):
        cfg = eng.configs[r]
        self.params = eng.params[r:r + 1]
        self.grad = eng.grad[r:r + 1]
        self.exp_avg = eng.exp_avg[r:r + 1]
        self.exp_avg_sq = eng.exp_avg_sq[r:r + 1]
        self.param_views = eng.layout.views(self.params)
        self.grad_views = eng.layout.views(self.grad)
        self.lr = cfg.lr
        self.decay = 1.0 - cfg.lr * cfg.weight_decay  # exactly torch.optim.AdamW's factor


class _Engine:
    """State and step of R batched runs (same architecture, data size, batch, dtype, betas, eps)."""

    def __init__(self, configs: Sequence[TrainConfig], device: torch.device,
                 x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor):
        c0 = configs[0]
        self.configs = list(configs)
        self.R = len(configs)
        self.device = device
        self.dtype = c0.torch_dtype
        self.B = c0.batch_size
        self.beta1, self.beta2 = c0.betas
        self.eps = c0.eps
        sds = [init_mlp_params(c.hidden, c.init_scale, self.dtype, c.seed) for c in configs]
        self.layout = _Layout.from_state(sds[0])
        self.params = torch.stack([self.layout.flatten(sd) for sd in sds]).to(device)
        self.exp_avg = torch.zeros_like(self.params)
        self.exp_avg_sq = torch.zeros_like(self.params)
        self.step = 0
        kw = dict(device=device, dtype=self.dtype)
        self.lr = torch.tensor([c.lr for c in configs], **kw).unsqueeze(1)
        self.decay = torch.tensor([1.0 - c.lr * c.weight_decay for c in configs], **kw).unsqueeze(1)
        self.t = torch.zeros((), **kw)                    # step counter on the device
        self.k = 0                                        # step counter on the host
        self.batched = device.type != "cpu"
        self.grad = torch.zeros_like(self.params)
        self.param_views = self.layout.views(self.params)
        self.members = [_Member(self, r) for r in range(self.R)]
        self.x_train = x_train                            # (R, n, 784)
        self.t_train = torch.nn.functional.one_hot(y_train, 10).to(self.dtype)  # (R, n, 10)
        self.y_train = y_train
        self.x_flat = x_train.reshape(-1, x_train.shape[-1])
        self.t_flat = self.t_train.reshape(-1, 10)
        self.n = x_train.shape[1]
        self.x_test, self.y_test = x_test, y_test
        self.t_test = torch.nn.functional.one_hot(y_test, 10).to(self.dtype)
        self.offsets = (torch.arange(self.R, device=device) * self.n).view(self.R, 1)
        self._gen = torch.Generator(device=device)
        self.step_fn: Callable[[torch.Tensor], None] = self._step

    # -------------------------------------------------------------- batches
    def batch_indices(self, start: int, count: int) -> torch.Tensor:
        """Indices (count, R, B) into each member's training set for steps start+1..start+count
        (:func:`batch_stream` per member)."""
        return torch.stack([batch_stream(c.seed, self.n, self.B, start, count, self._gen, self.device)
                            for c in self.configs], dim=1)

    # -------------------------------------------------------------- one step
    def _step(self, idx: torch.Tensor) -> None:
        """One AdamW step for every member; idx (R, B) indices into each member's training set."""
        if self.batched:
            self._step_batched(idx)
            return
        # CPU: member by member on contiguous row views (cache-friendly, the same arithmetic as
        # torch.optim.AdamW), bias corrections as Python floats
        self.k += 1
        bc1 = 1.0 - self.beta1 ** self.k
        bc2_sqrt = math.sqrt(1.0 - self.beta2 ** self.k)
        for r, mem in enumerate(self.members):
            rows = idx[r] + r * self.n if r else idx[r]
            x = self.x_flat.index_select(0, rows).unsqueeze(0)
            t = self.t_flat.index_select(0, rows).unsqueeze(0)
            _grad(mem.param_views, x, t, out=mem.grad_views)
            p, g, m, v = mem.params, mem.grad, mem.exp_avg, mem.exp_avg_sq
            if mem.decay != 1.0:
                p.mul_(mem.decay)
            m.lerp_(g, 1.0 - self.beta1)
            v.mul_(self.beta2).addcmul_(g, g, value=1.0 - self.beta2)
            denom = v.sqrt().div_(bc2_sqrt).add_(self.eps)
            p.addcdiv_(m, denom, value=-mem.lr / bc1)

    def _step_batched(self, idx: torch.Tensor) -> None:
        """All members at once with batched matmuls; step-dependent scalars stay on the device
        (no host synchronisation; capturable in a CUDA graph)."""
        flat = (idx + self.offsets).reshape(-1)
        x = self.x_flat.index_select(0, flat).view(self.R, self.B, -1)
        t = self.t_flat.index_select(0, flat).view(self.R, self.B, -1)
        g = _grad(self.param_views, x, t)
        self.t += 1
        bc1 = 1.0 - torch.pow(self.beta1, self.t)
        bc2_sqrt = torch.sqrt(1.0 - torch.pow(self.beta2, self.t))
        self.params.mul_(self.decay)
        self.exp_avg.lerp_(g, 1.0 - self.beta1)
        self.exp_avg_sq.mul_(self.beta2).addcmul_(g, g, value=1.0 - self.beta2)
        denom = (self.exp_avg_sq.sqrt() / bc2_sqrt).add_(self.eps)
        self.params.addcmul_(self.exp_avg / denom, self.lr / bc1, value=-1.0)

    def set_step(self, step: int) -> None:
        self.step = step
        self.k = step
        self.t.fill_(step)

    def compile(self) -> None:
        """Wrap the step in ``torch.compile`` (CUDA graphs on CUDA via mode="reduce-overhead")."""
        mode = "reduce-overhead" if self.device.type == "cuda" else None
        self.batched = True  # Python floats would be baked into the graph
        self.step_fn = torch.compile(self._step, mode=mode, dynamic=False)

    # -------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self) -> dict[str, np.ndarray]:
        """Loss (MSE) and accuracy on each member's full training set and the full test set."""
        views = self.layout.views(self.params)
        out = _forward(views, self.x_train)
        tr_loss = ((out - self.t_train) ** 2).mean(dim=(1, 2))
        tr_acc = (out.argmax(-1) == self.y_train).to(self.dtype).mean(1)
        te_sq = torch.zeros(self.R, device=self.device, dtype=self.dtype)
        te_ok = torch.zeros(self.R, device=self.device, dtype=self.dtype)
        for i in range(0, self.x_test.shape[0], _EVAL_CHUNK):
            xb = self.x_test[i:i + _EVAL_CHUNK].unsqueeze(0).expand(self.R, -1, -1)
            ob = _forward(views, xb)
            te_sq += ((ob - self.t_test[i:i + _EVAL_CHUNK]) ** 2).sum(dim=(1, 2))
            te_ok += (ob.argmax(-1) == self.y_test[i:i + _EVAL_CHUNK]).to(self.dtype).sum(1)
        n_test = self.x_test.shape[0]
        l2 = self.params.pow(2).sum(1).sqrt()
        stacked = torch.stack([tr_loss, tr_acc, te_sq / (n_test * 10), te_ok / n_test, l2]).cpu().double().numpy()
        return dict(zip(("train_loss", "train_acc", "test_loss", "test_acc", "l2_norm"), stacked))

    def member_state(self, r: int) -> dict[str, torch.Tensor]:
        return {n: v[r].detach().contiguous().cpu() for n, v in zip(self.layout.names, self.layout.views(self.params))}


# --------------------------------------------------------------------------- data
def training_subset(config: TrainConfig, data: MNIST | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The training images and labels a run with ``config`` trains on.

    ``n_train_per_class`` images per class drawn by :func:`stratified_indices` (seed
    ``config.data_seed``, else ``config.seed``) from the pool of the first 1,000 images of each
    class (:func:`training_pool`); above 1,000 per class the whole training file is the pool.

    Parameters
    ----------
    config : TrainConfig
    data : MNIST, optional
        Default ``load_mnist(config.data_dir)``.

    Returns
    -------
    x : ndarray, shape (10 * n_train_per_class, 784), uint8 (divide by 255 for the model input)
    y : ndarray, shape (10 * n_train_per_class,), int64

    Examples
    --------
    >>> from htsr_diag.train import PRESETS, training_subset
    >>> x, y = training_subset(PRESETS["paper"].replace(data_dir="bundled"))
    >>> x.shape
    (1000, 784)
    """
    if data is None:
        data = load_mnist(config.data_dir)
    cfg = config
    if cfg.n_train_per_class <= POOL_PER_CLASS:
        pool = training_pool(data.train_y, data.train_index, POOL_PER_CLASS)
    else:
        if data.source == "bundled":
            raise ValueError(f"n_train_per_class must be <= {POOL_PER_CLASS} with the bundled MNIST "
                             f"subset; got {cfg.n_train_per_class}. Pass data_dir= with the full IDX files.")
        pool = np.arange(data.n_train)
    seed = cfg.seed if cfg.data_seed is None else cfg.data_seed
    idx = pool[stratified_indices(data.train_y[pool], cfg.n_train_per_class, seed)]
    x, y = data.train_x[idx], data.train_y[idx].copy()
    if cfg.label_noise > 0:
        y = noisy_labels(y, cfg.label_noise, seed)
    return x, y


def noisy_labels(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """``y`` with a seeded ``fraction`` of its entries shuffled among themselves.

    ``round(fraction * n)`` positions are drawn at random and their labels permuted, so the
    class counts are kept (some labels land on their own class by chance). At 1.0 the
    labels are a random permutation of the originals: independent of the images.

    Examples
    --------
    >>> y = np.arange(10) % 3
    >>> z = noisy_labels(y, 1.0, seed=0)
    >>> sorted(z.tolist()) == sorted(y.tolist()), bool((z != y).any())
    (True, True)
    """
    y = np.array(y, copy=True)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x4015E]))
    pos = np.sort(rng.choice(y.size, size=int(round(fraction * y.size)), replace=False))
    y[pos] = y[pos][rng.permutation(pos.size)]
    return y


def _check_compatible(configs: Sequence[TrainConfig]) -> None:
    if not configs:
        raise ValueError("configs must hold at least one TrainConfig; got an empty list.")
    for c in configs:
        if not isinstance(c, TrainConfig):
            raise TypeError(f"configs must be TrainConfig objects; got {type(c).__name__}.")
    shared = ("task", "betas", "eps", "batch_size", "steps", "dtype", "init_scale", "hidden",
              "n_train_per_class", "checkpoints_per_decade", "data_dir", "modulus", "operation",
              "train_fraction", "d_model", "n_heads", "d_mlp")
    for name in shared:
        values = {repr(getattr(c, name)) for c in configs}
        if len(values) > 1:
            raise ValueError(f"ensemble members must share {name}; got {sorted(values)}. Members may "
                             f"differ only in seed, data_seed, lr, weight_decay, label_noise, decoder_lr "
                             f"and decoder_weight_decay; train the others "
                             f"as a separate ensemble.")
    seen: dict[str, int] = {}
    for r, c in enumerate(configs):
        key = json.dumps(_result_fields([c]), sort_keys=True)
        if key in seen:
            raise ValueError(f"ensemble members must differ; members {seen[key]} and {r} have the same config "
                             f"(seed {c.seed}, lr {c.lr}, weight_decay {c.weight_decay}), so both would train "
                             f"the same run. Remove the duplicate (e.g. a seed or value listed twice).")
        seen[key] = r


# --------------------------------------------------------------------------- run folders
#: Config fields that do not enter the resume state's config hash: ``preset`` is a label, and
#: ``device``, ``steps`` and ``data_dir`` may change on resume (docs/training.md).
_HASH_EXEMPT = ("preset", "device", "steps", "data_dir")
_LOCK_FILE = ".train.lock"


def _config_diff(saved: dict, cfg: TrainConfig) -> dict:
    """Fields (other than device, steps, data_dir) where a saved config differs: name -> (saved, new)."""
    old = TrainConfig.from_dict(saved).to_dict()
    return {k: (old[k], v) for k, v in cfg.to_dict().items()
            if k not in ("device", "steps", "data_dir") and old.get(k) != v}


def _result_fields(configs: Sequence[TrainConfig]) -> list[dict]:
    return [{k: v for k, v in c.to_dict().items() if k not in _HASH_EXEMPT} for c in configs]


def _config_hash(configs: Sequence[TrainConfig]) -> str:
    """SHA-256 (first 16 hex digits) of the members' fields that change results, in order."""
    blob = json.dumps(_result_fields(configs), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _read_json(path: Path, what: str) -> dict:
    """A JSON object from ``path``; a damaged file raises ``ValueError`` naming it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}): the {what} is damaged. Restore it from a "
                         f"copy, delete it (the resume state carries its config hash, so rerunning the "
                         f"same options still resumes), or train in a new out_dir / --out folder.") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object (the {what}); got {type(data).__name__}. Restore "
                         f"it, delete it, or train in a new out_dir / --out folder.")
    return data


@contextlib.contextmanager
def _run_lock(folders: Sequence[Path]):
    """Hold an exclusive ``fcntl.flock`` on ``FOLDER/.train.lock`` of every folder, or raise
    :class:`RunLockedError`. Without ``fcntl`` (Windows) nothing is locked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    import platform
    handles = []
    try:
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / _LOCK_FILE
            fh = open(path, "a+", encoding="utf-8")
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip()
                fh.close()
                by = f" by {holder}" if holder else ""
                raise RunLockedError(
                    f"{folder} is being written by another trainer ({path} is locked{by}); two writers "
                    f"would duplicate metrics.jsonl lines and checkpoints. Wait for it to finish (rerun "
                    f"then to resume or extend the run), or train in another out_dir / --out folder.") from None
            except OSError as exc:  # pragma: no cover - a file system without flock
                logger.warning("cannot lock %s (%s); nothing stops a second trainer on this folder", path, exc)
            else:
                fh.seek(0)
                fh.truncate()
                fh.write(f"pid {os.getpid()} on {platform.node()}\n")
                fh.flush()
            handles.append(fh)
        yield
    finally:
        for fh in handles:
            fh.close()  # closing releases the flock


def _check_config(run_dir: Path, cfg: TrainConfig, resume: bool) -> dict | None:
    """The saved ``config.json`` (None when absent) after checking it matches ``cfg``."""
    path = run_dir / "config.json"
    if not path.is_file():
        return None
    if not resume:
        raise ValueError(f"out_dir {run_dir} already holds a run (config.json); pass resume=True to "
                         f"continue it or choose a new folder.")
    saved = _read_json(path, "run's config")
    try:
        diff = _config_diff(saved, cfg)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path} is not a valid trainer config ({exc}). Restore it, delete it, or train "
                         f"in a new out_dir / --out folder.") from None
    if diff:
        raise ValueError(f"out_dir {run_dir} holds a run with a different config "
                         f"(field: (saved, requested)) {diff}; choose a new folder to train this config.")
    return saved


def _write_config(run_dir: Path, cfg: TrainConfig, saved: dict | None, env: dict, step: int,
                  training: bool) -> None:
    """Write ``config.json``: the config, the version and ``htsr_diag_env``, the environment of
    every training session that differed from the one before (``from_step`` = where it began)."""
    history = saved.get("htsr_diag_env") if saved else None
    history = list(history) if isinstance(history, list) else []
    if not history or training and {k: v for k, v in history[-1].items() if k != "from_step"} != env:
        history.append({"from_step": step, **env})
    new = dict(cfg.to_dict(), htsr_diag_version=_version(), htsr_diag_env=history)
    _atomic_write_bytes(run_dir / "config.json", (json.dumps(new, indent=2) + "\n").encode())


def _check_environment(saved: dict | None, env: dict, run_dir: Path, step: int) -> None:
    """Log a warning when a resumed run trains on with another thread count, torch or device."""
    history = saved.get("htsr_diag_env") if saved else None
    if step == 0 or not isinstance(history, list) or not history or not isinstance(history[-1], dict):
        return
    from .environment import RESULT_KEYS
    last = history[-1]
    changed = {k: (last.get(k), env.get(k)) for k in RESULT_KEYS if last.get(k) != env.get(k)}
    if changed:
        logger.warning("resuming %s at step %d with a different environment (before, now) %s: the steps "
                       "from here are not bit-identical to an uninterrupted run (docs/training.md)",
                       run_dir, step, changed)


def _truncate_metrics(run_dir: Path, upto: int) -> None:
    """Rewrite ``metrics.jsonl`` without the rows past ``upto``; damaged lines are appended to
    ``metrics.corrupt.jsonl`` (line number and text) with a :class:`CorruptMetricsWarning`."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return
    rows, bad = _scan_metrics(path)
    if bad:
        aside = run_dir / "metrics.corrupt.jsonl"
        with open(aside, "a", encoding="utf-8") as fh:
            for no, text in bad:
                fh.write(_json_line({"line": no, "text": text, "resumed_at_step": upto}))
            fh.flush()
            os.fsync(fh.fileno())
        _warn_corrupt(path, bad, f"were moved to {aside}")
    _atomic_write_bytes(path, "".join(_json_line(rows[k]) for k in sorted(rows) if k <= upto).encode())


def _append_metrics(run_dir: Path, row: dict) -> None:
    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
        fh.write(_json_line(row))
        fh.flush()
        os.fsync(fh.fileno())


def _clean_tmp(folder: Path) -> None:
    if folder.is_dir():
        for p in folder.glob(".*.tmp-*"):
            try:
                p.unlink()
            except OSError:  # pragma: no cover
                pass


def _save_state(state_dir: Path, eng: _Engine, wall: float, configs: Sequence[TrainConfig]) -> None:
    meta = {"step": str(eng.step), "wall_time": repr(wall), "n_members": str(eng.R),
            "htsr_diag_version": _version(), "config_hash": _config_hash(configs),
            "config": json.dumps(_result_fields(configs), sort_keys=True)}
    tensors = {"params": eng.params.cpu().contiguous(), "exp_avg": eng.exp_avg.cpu().contiguous(),
               "exp_avg_sq": eng.exp_avg_sq.cpu().contiguous()}
    cur, prev = state_dir / _STATE_FILE, state_dir / _STATE_PREV
    tmp = state_dir / f".{_STATE_FILE}.tmp-{os.getpid()}"
    st = _require_safetensors()
    with open(tmp, "wb") as fh:
        fh.write(st.save(tensors, metadata=meta))
        fh.flush()
        os.fsync(fh.fileno())
    if cur.exists():
        os.replace(cur, prev)
    os.replace(tmp, cur)


def _state_mismatch(path: Path, meta: dict, configs: Sequence[TrainConfig]) -> str | None:
    """Why the state at ``path`` belongs to another config (None when it matches or predates hashes)."""
    saved_hash = meta.get("config_hash")
    new_hash = _config_hash(configs)
    if saved_hash is None or saved_hash == new_hash:
        return None
    try:
        old = json.loads(meta.get("config", "[]"))
    except json.JSONDecodeError:
        old = []
    new = _result_fields(configs)
    if len(old) != len(new):
        diff: object = {"members": (len(old), len(new))}
    else:
        diff = {(f"member {r}: " if len(new) > 1 else "") + k: (o.get(k), v)
                for r, (o, n) in enumerate(zip(old, new)) for k, v in n.items() if o.get(k) != v}
    return (f"the resume state {path} was trained with another config: its config hash is {saved_hash}, "
            f"this run's is {new_hash} (fields that differ, (saved, requested): {diff}). Resuming would mix "
            f"two configs in one run. Train this config in a new out_dir / --out folder, or rerun with the "
            f"options the saved run used.")


def _load_state(state_dir: Path, eng: _Engine, configs: Sequence[TrainConfig]) -> float | None:
    """Restore the newest readable state; returns the saved wall time, or None when none.

    Raises ``ValueError`` when the state was written by a config with another hash."""
    st = _require_safetensors()
    from safetensors import safe_open
    for name in (_STATE_FILE, _STATE_PREV):
        path = state_dir / name
        if not path.is_file():
            continue
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
        except Exception as exc:
            logger.warning("ignoring unreadable resume state %s (%s)", path, exc)
            continue
        why = _state_mismatch(path, meta, configs)
        if why:
            raise ValueError(why)
        try:
            tensors = st.load_file(str(path))
            if tuple(tensors["params"].shape) != tuple(eng.params.shape) or tensors["params"].dtype != eng.dtype:
                raise ValueError(f"shape {tuple(tensors['params'].shape)} / dtype {tensors['params'].dtype}")
            step = int(meta["step"])
        except Exception as exc:
            logger.warning("ignoring unreadable resume state %s (%s)", path, exc)
            continue
        eng.params.copy_(tensors["params"])
        eng.exp_avg.copy_(tensors["exp_avg"])
        eng.exp_avg_sq.copy_(tensors["exp_avg_sq"])
        eng.set_step(step)
        return float(meta.get("wall_time", "0"))
    return None


# --------------------------------------------------------------------------- public API
def train(config: TrainConfig, out_dir: str | os.PathLike, *, device: str | torch.device | None = None,
          progress: bool | None = None, resume: bool = True,
          callback: Callable[[int], None] | None = None, compile: bool = False) -> Path:
    """Train one run of a task family (default: the MLP on MNIST) and write a run folder
    (config, metrics, log-spaced checkpoints).

    Parameters
    ----------
    config : TrainConfig
        All hyperparameters, e.g. ``PRESETS["fast"]``.
    out_dir : path-like
        The run folder (created). An unfinished run there with the same config is resumed.
    device : str or torch.device, optional
        Overrides ``config.device`` ("auto" = CUDA when available).
    progress : bool, optional
        Progress bar on stderr (steps/s, train and test accuracy); None = only on a terminal.
    resume : bool, default True
        Continue the run found in ``out_dir``; False raises if ``out_dir`` already holds a run.
    callback : callable, optional
        ``callback(step)`` after every optimisation step (monitoring, tests). An exception in
        it stops training; everything saved so far stays valid and resumable.
    compile : bool, default False
        ``torch.compile`` the training step (CUDA graphs on CUDA). Experimental.

    Returns
    -------
    Path
        The run folder.

    Raises
    ------
    TrainingDivergedError
        The loss or the weights became non-finite; checkpoints and metrics written before are kept.
    RunLockedError
        Another trainer is writing ``out_dir`` (its ``.train.lock`` is held).
    ValueError
        ``out_dir`` holds a run of another config (``config.json``, or the config hash of the
        resume state when ``config.json`` is gone), a damaged ``config.json``, or a run already
        past ``config.steps``; an MNIST ``batch_size`` above the training set. Nothing of the
        run is written first.

    Warns
    -----
    CorruptMetricsWarning
        On resume, a damaged ``metrics.jsonl`` line was moved to ``metrics.corrupt.jsonl``.

    Examples
    --------
    Skipped: writes a run folder, and even 20 steps take seconds (setting up data and model).

    >>> from htsr_diag.train import PRESETS, train, read_metrics
    >>> run = train(PRESETS["fast"].replace(steps=20, data_dir="bundled"), "runs/tiny")  # doctest: +SKIP
    >>> read_metrics(run)[-1]["step"]  # doctest: +SKIP
    20
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig (e.g. PRESETS['fast']); got {type(config).__name__}.")
    out = Path(out_dir)
    with _run_lock([out]):
        _run([config], [out], out / "state", device=device, progress=progress, resume=resume,
             callback=callback, compile=compile)
    return out


def train_ensemble(configs: Sequence[TrainConfig], out_dir: str | os.PathLike, *,
                   device: str | torch.device | None = None, progress: bool | None = None,
                   resume: bool = True, callback: Callable[[int], None] | None = None,
                   compile: bool = False) -> list[Path]:
    """Train R independent runs at once as one batched model; one run folder per member.

    Members may differ in ``seed``, ``data_seed``, ``lr`` and ``weight_decay``; every other
    field must match, and no two members may be equal. Member r gives the same weights as
    ``train(configs[r], ...)`` (bit for bit on the CPU; to float rounding on CUDA). Writes
    ``out_dir/member_00/`` ... (each a run folder as :func:`train` writes) and
    ``out_dir/ensemble.json`` listing the members' configs; the resume state of the whole
    ensemble is in ``out_dir/state/``. The ensemble folder and every member folder are locked
    for the run (:class:`RunLockedError`, as in :func:`train`).

    Parameters
    ----------
    configs : sequence of TrainConfig
    out_dir : path-like
    device, progress, resume, callback, compile
        As in :func:`train`.

    Returns
    -------
    list of Path
        The member folders, in the order of ``configs``.

    Examples
    --------
    Skipped: trains four models and writes their run folders.

    >>> from htsr_diag.train import PRESETS, train_ensemble
    >>> cfgs = [PRESETS["fast"].replace(seed=s, weight_decay=wd, steps=20)
    ...         for s in (0, 1) for wd in (0.0, 0.01)]
    >>> dirs = train_ensemble(cfgs, "runs/sweep")  # doctest: +SKIP
    """
    configs = list(configs)
    _check_compatible(configs)
    out = Path(out_dir)
    dirs = [out / f"member_{r:02d}" for r in range(len(configs))]
    with _run_lock([out, *dirs]):
        write_list = _check_ensemble(out, dirs, configs, resume)
        _run(configs, dirs, out / "state", device=device, progress=progress, resume=resume,
             callback=callback, compile=compile, on_ready=write_list)
    return dirs


def _check_ensemble(out: Path, dirs: list[Path], configs: list[TrainConfig],
                    resume: bool) -> Callable[[], None]:
    """Check ``out/ensemble.json`` against the members (when resuming); returns its writer."""
    ens_path = out / "ensemble.json"
    members = [{"dir": d.name, "config": c.to_dict()} for d, c in zip(dirs, configs)]
    if ens_path.is_file() and resume:
        old = _read_json(ens_path, "ensemble's member list").get("members", [])
        try:
            same = [m["dir"] for m in old] == [m["dir"] for m in members] and not any(
                _config_diff(m["config"], c) for m, c in zip(old, configs))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{ens_path} is not a valid ensemble file ({exc!r}). Restore it, delete it, "
                             f"or train in a new out_dir / --out folder.") from None
        if not same:
            raise ValueError(f"out_dir {out} holds an ensemble with other members or configs; choose a "
                             f"new folder to train this ensemble.")
    elif ens_path.is_file() and not resume:
        raise ValueError(f"out_dir {out} already holds an ensemble (ensemble.json); pass resume=True "
                         f"to continue it or choose a new folder.")
    data = (json.dumps({"htsr_diag_version": _version(), "members": members}, indent=2) + "\n").encode()
    return lambda: _atomic_write_bytes(ens_path, data)


def _run(configs: list[TrainConfig], dirs: list[Path], state_dir: Path, *, device, progress,
         resume: bool, callback, compile: bool, on_ready: Callable[[], None] | None = None) -> None:
    """Validate the folders, configs and resume state, then write the configs (and call
    ``on_ready``) and train; nothing is written before every check has passed."""
    _check_compatible(configs)
    c0 = configs[0]
    dev = resolve_device(device if device is not None else c0.device)
    dtype = c0.torch_dtype
    n_train = 10 * c0.n_train_per_class
    if c0.task == "mnist" and c0.batch_size > n_train:
        raise ValueError(f"batch_size must be at most the training-set size (10 classes x "
                         f"n_train_per_class {c0.n_train_per_class} = {n_train}); got {c0.batch_size}. "
                         f"A larger batch would repeat images within a step; lower batch_size or raise "
                         f"n_train_per_class.")
    # ---- folders and configs (validated before anything is written)
    saved = []
    for d, c in zip(dirs, configs):
        d.mkdir(parents=True, exist_ok=True)
        (d / "checkpoints").mkdir(exist_ok=True)
        _clean_tmp(d / "checkpoints")
        _clean_tmp(d)
        saved.append(_check_config(d, c, resume))
    state_dir.mkdir(parents=True, exist_ok=True)
    _clean_tmp(state_dir)
    with torch.no_grad():
        eng = _make_engine(configs, dev, dtype)
        wall0 = _load_state(state_dir, eng, configs) if resume else None
        if wall0 is not None and eng.step > c0.steps:
            before = saved[0].get("steps") if saved[0] else None
            had = f" (its config.json has steps={before})" if before is not None else ""
            raise ValueError(f"steps must be at least the step the run in {state_dir.parent} has reached: "
                             f"it is at step {eng.step}{had}; got steps={c0.steps}. A run cannot be shortened. "
                             f"Rerun with steps >= {eng.step} to keep or extend it, use its checkpoints up to "
                             f"step {c0.steps} as they are, or train in a new out_dir / --out folder.")
        env = run_environment(dev)
        if eng.step < c0.steps:  # a finished run trains nothing, so its environment record stays
            _check_environment(saved[0], env, state_dir.parent, eng.step)
        if on_ready is not None:
            on_ready()
        for d, c, s in zip(dirs, configs, saved):
            _write_config(d, c, s, env, eng.step, eng.step < c0.steps)
        if wall0 is None:
            wall0 = 0.0
            for d in dirs:
                _truncate_metrics(d, -1)
        else:
            logger.info("resuming %s at step %d", state_dir.parent, eng.step)
            for d in dirs:
                _truncate_metrics(d, eng.step)
        if compile:
            eng.compile()
        _loop(eng, configs, dirs, state_dir, wall0, progress, callback)


def _make_engine(configs: list[TrainConfig], dev: torch.device, dtype: torch.dtype):
    """The engine of the configs' task: the batched MLP for MNIST, else the module engine."""
    c0 = configs[0]
    if c0.task != "mnist":
        from .module_engine import ModuleEngine
        return ModuleEngine(configs, dev)
    data = load_mnist(c0.data_dir)
    xs, ys = zip(*(training_subset(c, data) for c in configs))
    x_train = torch.as_tensor(np.stack(xs), device=dev).to(dtype).div_(255.0)
    y_train = torch.as_tensor(np.stack(ys), device=dev)
    x_test = torch.as_tensor(data.test_x, device=dev).to(dtype).div_(255.0)
    y_test = torch.as_tensor(data.test_y, device=dev)
    return _Engine(configs, dev, x_train, y_train, x_test, y_test)


def _loop(eng, configs, dirs, state_dir: Path, wall0: float, progress, callback) -> None:
    c0 = configs[0]
    sched = checkpoint_steps(c0.steps, c0.checkpoints_per_decade)
    t_start = time.perf_counter()
    desc = f"train {c0.preset}" + (f" x{eng.R}" if eng.R > 1 else "")
    done_before = eng.step

    def checkpoint() -> str:
        m = eng.evaluate()
        bad = [r for r in range(eng.R) if not np.isfinite(m["train_loss"][r])
               or not np.isfinite(m["l2_norm"][r])]
        if bad:
            raise TrainingDivergedError(
                f"training diverged by step {eng.step}: non-finite loss or weights in member(s) {bad} "
                f"({', '.join(str(dirs[r]) for r in bad)}). Checkpoints and metrics up to the last saved "
                f"step are kept; lower lr (now {[configs[r].lr for r in bad]}) or use dtype='float64'.")
        wall = wall0 + time.perf_counter() - t_start
        for r, d in enumerate(dirs):
            fmt = "htsr_diag.mlp" if c0.task == "mnist" else f"htsr_diag.{c0.task}"
            meta = {"step": str(eng.step), "format": fmt, "htsr_diag_version": _version()}
            _atomic_save_safetensors(d / "checkpoints" / f"step_{eng.step:09d}.safetensors",
                                     eng.member_state(r), meta)
            row = {"step": eng.step, **{k: float(v[r]) for k, v in m.items()}, "wall_time": wall}
            _append_metrics(d, row)
        _save_state(state_dir, eng, wall, configs)
        return f"train_acc={np.mean(m['train_acc']):.3f} test_acc={np.mean(m['test_acc']):.3f}"

    with Progress(c0.steps, desc, enabled=progress) as bar:
        bar.update(eng.step)
        saved = {s for s, _ in list_checkpoints(dirs[0])}
        metric_steps = {r["step"] for r in read_metrics(dirs[0])}
        if eng.step == 0 and not (0 in saved and 0 in metric_steps and (state_dir / _STATE_FILE).exists()):
            bar.update(0, postfix=checkpoint())
        since_check = 0
        for target in sched[sched > eng.step]:
            while eng.step < target:
                n = int(min(target - eng.step, _BLOCK))
                idx = eng.batch_indices(eng.step, n)
                for i in range(n):
                    eng.step_fn(idx[i])
                    eng.step += 1
                    if callback is not None:
                        callback(eng.step)
                bar.update(n)
                since_check += n
                if since_check >= _FINITE_CHECK_EVERY and eng.step < target:
                    since_check = 0
                    if not bool(torch.isfinite(eng.params).all()):
                        checkpoint()  # raises TrainingDivergedError with the member list
            bar.update(0, postfix=checkpoint())
    logger.info("trained %d steps in %.1f s", eng.step - done_before, time.perf_counter() - t_start)
