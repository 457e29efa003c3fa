"""The task zoo: MNIST label noise, modular arithmetic on a transformer, Liu et al.'s toy model.

Reference values: the data tables are checked against Python's own integer arithmetic
(``%`` and ``pow(b, -1, p)``); the trainer is checked against ``torch.optim.AdamW`` with
parameter groups on an independent module (autograd), as tests/test_train_trainer.py does
for the MLP engine.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import Kill, final_checkpoint, killer, tiny_config
from htsr_diag.train import (
    PRESETS,
    TrainConfig,
    build_model,
    list_checkpoints,
    load_checkpoint,
    load_mnist,
    noisy_labels,
    read_metrics,
    task_data,
    train,
    train_ensemble,
    training_subset,
)
from htsr_diag.train.tasks import LiuToy, ModularTransformer, liu_pairs, modular_pairs
from htsr_diag.train.tasks.common import split_indices

MOD, LIU = tiny_config("modular", steps=40), tiny_config("liu-toy", steps=40)  # tests/conftest.py


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# ----------------------------------------------------------------------------- data
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
def test_modular_table_matches_python_arithmetic(op):
    p = 7
    x, y = modular_pairs(p, op)
    expected = {}
    for a in range(p):
        for b in range(p):
            if op == "div" and b == 0:
                continue
            expected[(a, b)] = {"add": (a + b) % p, "sub": (a - b) % p, "mul": (a * b) % p,
                                "div": (a * pow(b, -1, p)) % p if b else None}[op]
    assert len(y) == len(expected)
    assert (x[:, 2] == p).all()  # the '=' token
    for (a, b, _), c in zip(x.tolist(), y.tolist()):
        assert expected[(a, b)] == c


def test_liu_pairs_are_unordered_sums():
    x, y = liu_pairs(6)
    assert len(y) == 6 * 7 // 2
    assert (x[:, 0] <= x[:, 1]).all()
    assert len({tuple(r) for r in x.tolist()}) == len(y)
    assert (y == x.sum(1)).all() and y.max() == 10


def test_split_is_seeded_disjoint_and_complete():
    tr, te = split_indices(100, 0.3, seed=4)
    assert len(tr) == 30 and len(te) == 70
    assert np.intersect1d(tr, te).size == 0 and np.union1d(tr, te).tolist() == list(range(100))
    tr2, _ = split_indices(100, 0.3, seed=4)
    tr3, _ = split_indices(100, 0.3, seed=5)
    assert (tr == tr2).all() and not (tr == tr3).all()
    with pytest.raises(ValueError, match="train_fraction must leave at least one training and one test"):
        split_indices(3, 0.01, seed=0)


def test_task_data_split_follows_data_seed():
    a, b = task_data(MOD), task_data(MOD.replace(seed=5, data_seed=MOD.seed))
    assert (a.train_x == b.train_x).all()
    c = task_data(MOD.replace(seed=5))
    assert not np.array_equal(a.train_x, c.train_x)
    assert a.n_classes == 11 and task_data(LIU).n_classes == 17
    assert len(a.train_y) + len(a.test_y) == 121


def test_noisy_labels_keep_counts_and_shuffle_the_fraction():
    y = np.repeat(np.arange(10), 100)
    z = noisy_labels(y, 0.3, seed=1)
    assert np.array_equal(np.bincount(z, minlength=10), np.bincount(y, minlength=10))
    changed = np.mean(z != y)
    assert 0.2 < changed <= 0.3        # 300 positions shuffled; ~10% land on their own class
    assert np.array_equal(noisy_labels(y, 0.0, seed=1), y)
    assert np.array_equal(noisy_labels(y, 0.3, seed=1), z)
    full = noisy_labels(y, 1.0, seed=1)
    assert 0.85 < np.mean(full != y) < 0.95   # a random permutation: ~90% moved for 10 balanced classes


def test_label_noise_changes_labels_not_images():
    data = load_mnist("bundled")
    cfg = PRESETS["fast"].replace(n_train_per_class=20, data_dir="bundled")
    x0, y0 = training_subset(cfg, data)
    x1, y1 = training_subset(cfg.replace(label_noise=1.0), data)
    assert np.array_equal(x0, x1)
    assert sorted(y0.tolist()) == sorted(y1.tolist()) and (y0 != y1).mean() > 0.7


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize("changes, match", [
    (dict(task="cifar"), "task must be one of"),
    (dict(task="modular", operation="pow"), "operation must be one of"),
    (dict(label_noise=1.5), "label_noise must be a fraction in"),
    (dict(task="modular", label_noise=0.5), "label_noise must be 0 unless task='mnist'"),
    (dict(task="modular", train_fraction=1.0), "train_fraction must be a fraction in"),
    (dict(task="modular", d_model=30, n_heads=4), "d_model must be divisible by n_heads=4"),
    (dict(task="modular", operation="div", modulus=96), "modulus must be a prime for operation='div'"),
    (dict(decoder_lr=-1.0), "decoder_lr must be None or a finite number > 0"),
    (dict(decoder_weight_decay=-1.0), "decoder_weight_decay must be None or a finite number >= 0"),
])
def test_config_errors_name_the_field(changes, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**changes)


def test_zoo_presets_round_trip():
    for name in ("mnist-noise", "modular", "modular-nowd", "liu-toy", "liu-toy-mem"):
        cfg = PRESETS[name]
        assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert PRESETS["mnist-noise"].label_noise == 1.0
    assert PRESETS["modular-nowd"].weight_decay == 0.0 and PRESETS["modular"].weight_decay > 0
    assert PRESETS["liu-toy-mem"].decoder_weight_decay == 0.0 and PRESETS["liu-toy-mem"].weight_decay == 0.0


# ----------------------------------------------------------------------------- models
def _naive_transformer_logits(m: ModularTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """Every position computed with an explicit causal mask, read at the last position."""
    B, T = tokens.shape
    H, dh = m.n_heads, m.d_model // m.n_heads
    h = m.embed.weight[tokens] + m.pos[:T]
    q = (h @ m.attn.W_Q.weight.T).view(B, T, H, dh).transpose(1, 2)
    k = (h @ m.attn.W_K.weight.T).view(B, T, H, dh).transpose(1, 2)
    v = (h @ m.attn.W_V.weight.T).view(B, T, H, dh).transpose(1, 2)
    s = q @ k.transpose(-1, -2) / math.sqrt(dh)
    s = s.masked_fill(~torch.tril(torch.ones(T, T, dtype=torch.bool)), float("-inf"))
    z = (s.softmax(-1) @ v).transpose(1, 2).reshape(B, T, -1)
    h = h + z @ m.attn.W_O.weight.T
    mlp = torch.relu(h @ m.mlp.fc_in.weight.T + m.mlp.fc_in.bias) @ m.mlp.fc_out.weight.T + m.mlp.fc_out.bias
    h = h + mlp
    return (h @ m.unembed.weight.T)[:, -1]


def test_transformer_last_position_readout_equals_full_causal_forward():
    torch.manual_seed(0)
    m = ModularTransformer(13, d_model=24, n_heads=3, d_mlp=40, dtype=torch.float64)
    tokens = torch.as_tensor(modular_pairs(13, "add")[0][:50])
    torch.testing.assert_close(m(tokens), _naive_transformer_logits(m, tokens), rtol=1e-12, atol=1e-12)


def test_models_have_the_documented_matrices():
    m = build_model(MOD)
    shapes = {n: tuple(p.shape) for n, p in m.named_parameters()}
    assert shapes["embed.weight"] == (12, 16) and shapes["unembed.weight"] == (11, 16)
    assert shapes["attn.W_Q.weight"] == (16, 16) and shapes["mlp.fc_in.weight"] == (24, 16)
    t = build_model(LIU)
    assert isinstance(t, LiuToy)
    assert {n.split(".")[0] for n, _ in t.named_parameters()} == {"embed", "decoder"}
    g0 = torch.get_rng_state()
    build_model(LIU)
    assert torch.equal(torch.get_rng_state(), g0)  # the global RNG is untouched


# ----------------------------------------------------------------------------- trainer
def _reference_run(cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """Full-batch training with autograd and torch.optim.AdamW (parameter groups)."""
    model = build_model(cfg)
    d = task_data(cfg)
    x, y = torch.as_tensor(d.train_x), torch.as_tensor(d.train_y)
    dec = [p for n, p in model.named_parameters() if cfg.task == "liu_toy" and n.startswith("decoder.")]
    rest = [p for n, p in model.named_parameters() if not (cfg.task == "liu_toy" and n.startswith("decoder."))]
    groups = [{"params": rest, "lr": cfg.lr, "weight_decay": cfg.weight_decay}]
    if dec:
        groups.append({"params": dec, "lr": cfg.decoder_lr, "weight_decay": cfg.decoder_weight_decay})
    opt = torch.optim.AdamW(groups, betas=cfg.betas, eps=cfg.eps)
    for _ in range(cfg.steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return {n: p.detach() for n, p in model.named_parameters()}


@pytest.mark.parametrize("cfg", [MOD, LIU], ids=["modular", "liu_toy"])
def test_task_run_equals_torch_adamw_reference(tmp_path, cfg):
    run = train(cfg, tmp_path / "run", progress=False)
    got, ref = final_checkpoint(run), _reference_run(cfg)
    assert got.keys() == ref.keys()
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-10, atol=1e-12)
    rows = read_metrics(run)
    assert rows[0]["step"] == 0 and rows[-1]["step"] == cfg.steps
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    for key in ("train_acc", "test_acc", "l2_norm"):
        assert all(np.isfinite(r[key]) for r in rows)


def test_decoder_groups_really_differ():
    # the same run with the decoder's settings equal to the embeddings' gives other weights
    a = _reference_run(LIU)
    b = _reference_run(LIU.replace(decoder_lr=LIU.lr, decoder_weight_decay=LIU.weight_decay))
    assert not torch.allclose(a["decoder.0.weight"], b["decoder.0.weight"])


def test_task_run_metrics_match_the_saved_checkpoint(tmp_path):
    run = train(MOD, tmp_path / "run", progress=False)
    step, path = list_checkpoints(run)[-1]
    model = build_model(MOD)
    model.load_state_dict(load_checkpoint(path))
    d = task_data(MOD)
    with torch.no_grad():
        acc = (model(torch.as_tensor(d.test_x)).argmax(-1) == torch.as_tensor(d.test_y)).double().mean().item()
    assert read_metrics(run)[-1]["test_acc"] == pytest.approx(acc, abs=1e-12)


@pytest.mark.parametrize("kill_at", [1, 23])
def test_task_resume_equals_uninterrupted(tmp_path, kill_at):
    cfg = MOD.replace(batch_size=32)  # mini-batches: the resumed batch stream must continue exactly
    ref = train(cfg, tmp_path / "ref", progress=False)
    with pytest.raises(Kill):
        train(cfg, tmp_path / "run", progress=False, callback=killer(kill_at))
    run = train(cfg, tmp_path / "run", progress=False)
    a, b = final_checkpoint(run), final_checkpoint(ref)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["step"] for r in read_metrics(run)] == [r["step"] for r in read_metrics(ref)]


def test_task_ensemble_members_equal_single_runs(tmp_path):
    cfgs = [LIU.replace(seed=1), LIU.replace(seed=2, decoder_weight_decay=0.0)]
    dirs = train_ensemble(cfgs, tmp_path / "ens", progress=False)
    for cfg, d in zip(cfgs, dirs):
        single = train(cfg, tmp_path / f"single_{cfg.seed}", progress=False)
        a, b = final_checkpoint(d), final_checkpoint(single)
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-12, atol=1e-13)


def test_ensemble_rejects_mixed_tasks(tmp_path):
    with pytest.raises(ValueError, match="ensemble members must share task"):
        train_ensemble([MOD, LIU], tmp_path / "ens", progress=False)


def test_compile_is_refused_for_task_families(tmp_path):
    with pytest.raises(ValueError, match="compile=True is only available for task='mnist'"):
        train(MOD, tmp_path / "run", progress=False, compile=True)


def test_task_run_folder_is_analysable(tmp_path):
    from htsr_diag import PhaseClassifier, analyze_checkpoints

    cfg = MOD.replace(d_model=64, n_heads=4, d_mlp=96, modulus=23, steps=10)
    run = train(cfg, tmp_path / "run", progress=False)
    traj = analyze_checkpoints(run, rng=0)
    names = traj.layer_names
    assert "attn.W_Q" in names and "mlp.fc_in" in names and "embed" in names
    assert len(traj) == len(list_checkpoints(run))
    assert np.isfinite(traj.metrics["train_acc"]).all()
    labels = PhaseClassifier().predict(traj)
    assert len(labels) == len(traj)
