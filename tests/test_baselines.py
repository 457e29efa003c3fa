"""Tests of htsr_diag.baselines on tiny models whose values have a closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from htsr_diag.baselines import (
    activation_sparsity,
    circuit_complexity,
    compute_baselines,
    l2_norm,
    weight_entropy,
)


def _tiny() -> nn.Sequential:
    """Linear(2, 2) with W = I, b = 0; ReLU; Linear(2, 2) with W = [[0.5, -0.5], [e^-1, 0]], b = [1, 0]."""
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2)).double()
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(2))
        model[0].bias.zero_()
        model[2].weight.copy_(torch.tensor([[0.5, -0.5], [math.exp(-1.0), 0.0]], dtype=torch.float64))
        model[2].bias.copy_(torch.tensor([1.0, 0.0]))
    return model


X = np.array([[1.0, -1.0], [2.0, 3.0]])  # ReLU(W1 x) = [[1, 0], [2, 3]]


class FunctionalMLP(nn.Module):
    """Same weights as _tiny, ReLU applied functionally (no activation module to hook)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(2, 2)
        self.fc2 = nn.Linear(2, 2)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


# ----------------------------------------------------------------------------- sparsity
def test_activation_sparsity_closed_form():
    model = _tiny()
    res = activation_sparsity(model, X)
    # post-ReLU activations [[1, 0], [2, 3]]: one of four is <= 0
    assert res.per_layer == {"1": 0.25} and res.mean == 0.25 and res.hooked == "activations"
    # threshold 1.5: the entries 1 and 0 are <= 1.5, two of four
    assert activation_sparsity(model, X, threshold=1.5).per_layer == {"1": 0.5}
    assert res.n_inputs == 2 and res.threshold == 0.0
    assert res.to_dict()["per_layer"] == {"1": 0.25}


def test_activation_sparsity_without_activation_modules_reads_pre_activations():
    model = FunctionalMLP().double()
    model.load_state_dict({"fc1.weight": torch.eye(2, dtype=torch.float64), "fc1.bias": torch.zeros(2),
                           "fc2.weight": torch.ones(2, 2), "fc2.bias": torch.zeros(2)})
    res = activation_sparsity(model, X)
    # relu(z) <= 0 iff z <= 0: pre-activations [[1, -1], [2, 3]] -> 1 of 4, the same value as post-ReLU
    assert res.hooked == "pre-activations" and res.per_layer == {"fc1": 0.25}
    # choosing modules explicitly: fc2 = ones @ [[1, 0], [2, 3]] gives [[1, 1], [5, 5]]: none <= 0,
    # two of four <= 1
    assert activation_sparsity(model, X, layers=["fc2"]).per_layer == {"fc2": 0.0}
    assert activation_sparsity(model, X, layers="fc2", threshold=1.0).per_layer == {"fc2": 0.5}
    assert not model.fc1._forward_hooks and not model.fc2._forward_hooks  # hooks removed


def test_activation_sparsity_bad_input():
    model = _tiny()
    with pytest.raises(ValueError, match=r"inputs of shape \(2, 3\) .* do not fit the model Sequential"):
        activation_sparsity(model, np.ones((2, 3)))
    with pytest.raises(TypeError, match="model must be a torch.nn.Module; got OrderedDict"):
        activation_sparsity(model.state_dict(), X)
    with pytest.raises(ValueError, match=r"layers \['fc9'\] are not modules of Sequential"):
        activation_sparsity(model, X, layers=["fc9"])
    with pytest.raises(TypeError, match="threshold must be a finite real number"):
        activation_sparsity(model, X, threshold=float("nan"))
    with pytest.raises(ValueError, match="inputs must have at least one sample"):
        activation_sparsity(model, np.ones((0, 2)))
    with pytest.raises(TypeError, match="inputs must be a numpy array or torch tensor"):
        activation_sparsity(model, "x")
    with pytest.raises(ValueError, match="inputs must be finite"):
        activation_sparsity(model, np.array([[np.nan, 1.0]]))


# ----------------------------------------------------------------------------- entropy, l2
def test_weight_entropy_closed_form():
    model = _tiny()
    res = weight_entropy(model)
    # W1 = I: 1 ln 1 = 0 and 0 ln 0 = 0 -> 0
    # W2: -2 * 0.5 ln 0.5 - e^-1 ln e^-1 = ln 2 + e^-1
    assert res.per_layer["0"] == 0.0
    assert res.per_layer["2"] == pytest.approx(math.log(2) + math.exp(-1.0), rel=1e-12)
    assert res.total == pytest.approx(math.log(2) + math.exp(-1.0), rel=1e-12)
    # a state dict gives the same values, biases are not weight matrices
    sd_res = weight_entropy({k: v.numpy() for k, v in model.state_dict().items()})
    assert sd_res.per_layer == pytest.approx(res.per_layer, rel=1e-12)


def test_l2_norm_closed_form():
    model = _tiny()
    res = l2_norm(model)
    # squares: W1 2, b1 0, W2 0.25 + 0.25 + e^-2, b2 1
    assert res.total == pytest.approx(math.sqrt(2 + 0.5 + math.exp(-2.0) + 1), rel=1e-12)
    assert res.per_layer["0"] == pytest.approx(math.sqrt(2), rel=1e-12)
    no_bias = l2_norm(model, include_bias=False)
    assert no_bias.total == pytest.approx(math.sqrt(2 + 0.5 + math.exp(-2.0)), rel=1e-12)
    sd = dict(model.state_dict())
    sd["bn.running_mean"] = torch.ones(2) * 100  # statistics, not parameters
    sd["bn.num_batches_tracked"] = torch.tensor(5)
    assert l2_norm(sd).total == pytest.approx(res.total, rel=1e-12)
    with pytest.raises(TypeError, match="include_bias must be True or False"):
        l2_norm(model, include_bias=1)
    with pytest.raises(TypeError, match="l2_norm: model must be a torch.nn.Module, a state dict"):
        l2_norm(3.0)


# ----------------------------------------------------------------------------- circuit complexity
def _softmax_model() -> nn.Sequential:
    model = nn.Sequential(nn.Linear(2, 2)).double()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]], dtype=torch.float64))
        model[0].bias.zero_()
    return model


def test_circuit_complexity_closed_form_full_mask():
    model = _softmax_model()
    x = np.array([[1.0, 0.0], [0.0, 1.0]])
    res = circuit_complexity(model, x, fraction=1.0, n_masks=3, rng=0)
    # W' = 0 -> logits 0 -> q = (1/2, 1/2).
    # x1: logits (ln 3, 0) -> p = (3/4, 1/4): KL = 3/4 ln(3/2) + 1/4 ln(1/2);  x2: p = q, KL = 0
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert res.per_layer["0"] == pytest.approx(expected, rel=1e-12)
    assert res.per_mask["0"] == pytest.approx([expected] * 3, rel=1e-12)
    assert res.mean == res.per_layer["0"] and res.n_inputs == 2 and res.fraction == 1.0


def test_circuit_complexity_mask_size_and_seed():
    model = _softmax_model()
    x = np.array([[1.0, 0.0], [0.0, 1.0]])
    # fraction 0.25 of 4 weights: exactly one entry zeroed. Only zeroing W[0,0] = ln 3 changes the
    # output (the other three are 0), so each mask's KL is either 0 or the full-mask value.
    full = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    res = circuit_complexity(model, x, fraction=0.25, n_masks=40, rng=1)
    assert all(v == pytest.approx(0.0, abs=1e-15) or v == pytest.approx(full, rel=1e-12) for v in res.per_mask["0"])
    hits = sum(v > full / 2 for v in res.per_mask["0"])
    assert 0 < hits < 40  # a uniform choice of 1 of 4 entries, 40 draws: P(0 or 40 hits) < 1e-4
    again = circuit_complexity(model, x, fraction=0.25, n_masks=40, rng=1)
    assert again.per_mask == res.per_mask


def test_circuit_complexity_never_modifies_the_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3))
    model.train()
    model[2].eval()  # a mixed train/eval state must come back exactly
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [m.training for m in model.modules()]
    x = torch.randn(32, 6)
    res = circuit_complexity(model, x, layer=["0", "3"], fraction=0.5, n_masks=2, rng=0)
    activation_sparsity(model, x)
    assert set(res.per_layer) == {"0", "3"} and all(v > 0 for v in res.per_layer.values())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [m.training for m in model.modules()] == flags
    assert all(not m._forward_hooks for m in model.modules())


def test_circuit_complexity_bad_input():
    model = _softmax_model()
    x = np.eye(2)
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]; got .* the study uses 0.1"):
        circuit_complexity(model, x, fraction=0.0)
    with pytest.raises(TypeError, match="fraction must be a real number"):
        circuit_complexity(model, x, fraction="10%")
    with pytest.raises(ValueError, match="n_masks must be an integer >= 1"):
        circuit_complexity(model, x, n_masks=0)
    with pytest.raises(ValueError, match=r"layer 'fc1' is not an analysable layer of Sequential; layers are \['0'\]"):
        circuit_complexity(model, x, layer="fc1")
    with pytest.raises(ValueError, match=r"inputs of shape \(2, 5\)"):
        circuit_complexity(model, np.ones((2, 5)))
    with pytest.raises(TypeError, match="circuit_complexity runs the model"):
        circuit_complexity({"w": x}, x)


def test_compute_baselines_from_state_dict_and_factory():
    model = _tiny()
    sd = model.state_dict()
    out = compute_baselines(sd, X, rng=0, model_factory=lambda: _tiny())
    assert set(out) == {"l2_norm", "weight_entropy", "activation_sparsity", "circuit_complexity"}
    assert out["activation_sparsity"] == 0.25  # closed form, test_activation_sparsity_closed_form
    assert out["weight_entropy"] == pytest.approx(math.log(2) + math.exp(-1.0), rel=1e-12)
    no_module = compute_baselines(sd, X)
    assert math.isnan(no_module["activation_sparsity"]) and math.isnan(no_module["circuit_complexity"])
    assert no_module["l2_norm"] == pytest.approx(out["l2_norm"], rel=1e-12)
