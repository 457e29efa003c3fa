"""The training engine of the task families that are not the study's MLP (modular, Liu toy).

Same contract as the MLP engine in :mod:`htsr_diag.train.trainer` (``step_fn``, ``evaluate``,
``member_state``, the flat ``(R, P)`` parameter and AdamW-moment tensors that the resume
state stores), so checkpoints, metrics, resume and ensembles are shared. Each member is an
``nn.Module`` whose parameters are views into row ``r`` of the flat tensor; gradients come
from autograd, and the AdamW update is ``torch.optim.AdamW``'s, written on the flat tensors
with a per-element learning rate and decay (so the Liu toy's decoder can have its own).
The tests check every member against ``torch.optim.AdamW`` on an independent module.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from .tasks import build_model, task_data

__all__ = ["ModuleEngine", "param_groups"]


def param_groups(config, names: Sequence[str]) -> list[tuple[float, float]]:
    """``(lr, weight_decay)`` per parameter name: the Liu toy's ``decoder.*`` parameters take
    ``decoder_lr`` / ``decoder_weight_decay`` when set; everything else ``lr`` / ``weight_decay``."""
    out = []
    for n in names:
        if config.task == "liu_toy" and n.startswith("decoder."):
            lr = config.lr if config.decoder_lr is None else config.decoder_lr
            wd = config.weight_decay if config.decoder_weight_decay is None else config.decoder_weight_decay
            out.append((float(lr), float(wd)))
        else:
            out.append((float(config.lr), float(config.weight_decay)))
    return out


class ModuleEngine:
    """State and step of R runs of one task family (stepped member by member)."""

    def __init__(self, configs: Sequence, device: torch.device) -> None:
        c0 = configs[0]
        self.configs = list(configs)
        self.R = len(self.configs)
        self.device = device
        self.dtype = c0.torch_dtype
        self.beta1, self.beta2 = c0.betas
        self.eps = c0.eps
        self.B = c0.batch_size
        models = [build_model(c).to(device) for c in self.configs]
        self.names = [n for n, _ in models[0].named_parameters()]
        shapes = [tuple(p.shape) for _, p in models[0].named_parameters()]
        sizes = [int(np.prod(s)) for s in shapes]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self.params = torch.stack([torch.cat([p.detach().reshape(-1) for p in m.parameters()])
                                   for m in models]).to(device)
        self.exp_avg = torch.zeros_like(self.params)
        self.exp_avg_sq = torch.zeros_like(self.params)
        self.grad = torch.zeros_like(self.params)
        self.lr = torch.empty_like(self.params)
        self.decay = torch.empty_like(self.params)
        self.models = models
        self._params: list[list[torch.nn.Parameter]] = []
        for r, m in enumerate(models):
            plist = []
            for (name, p), o, size, shape, (lr, wd) in zip(m.named_parameters(), offsets[:-1], sizes, shapes,
                                                            param_groups(self.configs[r], self.names)):
                p.data = self.params[r, o:o + size].view(shape)
                self.lr[r, o:o + size] = lr
                self.decay[r, o:o + size] = 1.0 - lr * wd   # exactly torch.optim.AdamW's factor
                plist.append(p)
            self._params.append(plist)
        # data: per member (the split depends on the data seed)
        self.data = []
        for c in self.configs:
            d = task_data(c)
            self.data.append(tuple(torch.as_tensor(a, device=device) for a in
                                   (d.train_x, d.train_y, d.test_x, d.test_y)))
        self.full_batch = self.B >= max(int(d[1].shape[0]) for d in self.data)
        self.step = 0
        self.k = 0
        self._gen = torch.Generator(device="cpu")
        self.step_fn = self._step

    # ------------------------------------------------------------------ batches
    def batch_indices(self, start: int, count: int):
        """Per step, one index tensor (R, B) into each member's training set; None = full batch.

        Mini-batches (``batch_size`` below the training-set size) follow the MLP engine's
        scheme (:func:`~htsr_diag.train.trainer.batch_stream`).
        """
        if self.full_batch:
            return [None] * count
        from .trainer import batch_stream  # local: trainer imports this module lazily
        return torch.stack([batch_stream(c.seed, int(d[1].shape[0]), self.B, start, count, self._gen)
                            for c, d in zip(self.configs, self.data)], dim=1).to(self.device)

    # ------------------------------------------------------------------ one step
    def _step(self, idx) -> None:
        self.k += 1
        bc1 = 1.0 - self.beta1 ** self.k
        bc2_sqrt = math.sqrt(1.0 - self.beta2 ** self.k)
        for r, (model, plist) in enumerate(zip(self.models, self._params)):
            x, y = self.data[r][0], self.data[r][1]
            if idx is not None:
                x, y = x[idx[r]], y[idx[r]]
            for p in plist:
                p.grad = None
            with torch.enable_grad():
                loss = torch.nn.functional.cross_entropy(model(x), y)
                loss.backward()
            torch.cat([p.grad.reshape(-1) for p in plist], out=self.grad[r])
        p, g, m, v = self.params, self.grad, self.exp_avg, self.exp_avg_sq
        p.mul_(self.decay)
        m.lerp_(g, 1.0 - self.beta1)
        v.mul_(self.beta2).addcmul_(g, g, value=1.0 - self.beta2)
        denom = v.sqrt().div_(bc2_sqrt).add_(self.eps)
        p.addcmul_(m / denom, self.lr, value=-1.0 / bc1)

    def set_step(self, step: int) -> None:
        self.step = step
        self.k = step

    def compile(self) -> None:
        raise ValueError("compile=True is only available for task='mnist' (the batched MLP step); "
                         "train the other tasks without it.")

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> dict[str, np.ndarray]:
        """Cross-entropy and accuracy on each member's training and test split, and the l2 norm."""
        rows = []
        for r, model in enumerate(self.models):
            xtr, ytr, xte, yte = self.data[r]
            out_tr, out_te = model(xtr), model(xte)
            rows.append([torch.nn.functional.cross_entropy(out_tr, ytr).item(),
                         (out_tr.argmax(-1) == ytr).double().mean().item(),
                         torch.nn.functional.cross_entropy(out_te, yte).item(),
                         (out_te.argmax(-1) == yte).double().mean().item(),
                         self.params[r].double().pow(2).sum().sqrt().item()])
        arr = np.asarray(rows, dtype=np.float64).T
        return dict(zip(("train_loss", "train_acc", "test_loss", "test_acc", "l2_norm"), arr))

    def member_state(self, r: int) -> dict[str, torch.Tensor]:
        return {n: p.detach().contiguous().cpu().clone() for n, p in self.models[r].named_parameters()}
