"""Tests of htsr_diag.layers: finding weight matrices in modules, state dicts and checkpoint files."""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest
import torch
import torch.nn as nn

from htsr_diag.exceptions import CheckpointError
from htsr_diag.layers import LAYER_KINDS, LayerSet, find_layers, load_state_dict


class Conv1D(nn.Module):
    """GPT-2 / HF transformers Conv1D: weight stored (in, out), forward x @ W + b."""

    def __init__(self, nf: int, nx: int):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        return x @ self.weight + self.bias


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.ModuleDict({"fc1": nn.Linear(64, 32), "fc2": nn.Linear(32, 32), "fc3": nn.Linear(32, 4)})


# ----------------------------------------------------------------------------- modules
def test_linear_names_shapes_and_skipped_reasons():
    found = find_layers(_mlp())
    assert found.names == ["fc1", "fc2"]
    fc1 = found["fc1"]
    # nn.Linear(64, 32).weight is (out=32, in=64): N = 64, M = 32, Q = 2
    assert (fc1.kind, fc1.param, fc1.shape, fc1.N, fc1.M, fc1.Q, fc1.n_slices) == \
        ("Linear", "fc1.weight", (32, 64), 64, 32, 2.0, 1)
    reasons = {s.name: s.code for s in found.skipped}
    # biases are 1-D; fc3 has min(4, 32) = 4 eigenvalues < the default min_eigenvalues = 8
    assert reasons == {"fc1.bias": "1-D", "fc2.bias": "1-D", "fc3.weight": "too-small", "fc3.bias": "1-D"}
    assert "4 eigenvalues < min_eigenvalues=8" in next(s.reason for s in found.skipped if s.name == "fc3.weight")
    assert find_layers(_mlp(), min_eigenvalues=4).names == ["fc1", "fc2", "fc3"]


def test_nested_module_names_are_kept():
    enc = nn.Module()
    enc.layer = nn.ModuleList([nn.Module() for _ in range(4)])
    enc.layer[3].attention = nn.Module()
    enc.layer[3].attention.self = nn.Module()
    enc.layer[3].attention.self.query = nn.Linear(16, 16)
    model = nn.Module()
    model.encoder = enc
    assert find_layers(model).names == ["encoder.layer.3.attention.self.query"]
    seq = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 10))
    assert find_layers(seq).names == ["0", "2"]


def test_conv_layers_dims_and_slices():
    model = nn.ModuleDict({"c1": nn.Conv1d(16, 48, 5), "c2": nn.Conv2d(48, 16, 2), "c3": nn.Conv2d(8, 24, (3, 1))})
    found = find_layers(model)
    got = {lm.name: (lm.kind, lm.shape, lm.N, lm.M, lm.Q, lm.n_slices, lm.n_eigenvalues) for lm in found}
    # slices are (out, in): N = max(out, in), M = min(out, in), one slice per kernel position
    assert got == {"c1": ("Conv1d", (48, 16, 5), 48, 16, 3.0, 5, 80),
                   "c2": ("Conv2d", (16, 48, 2, 2), 48, 16, 3.0, 4, 64),
                   "c3": ("Conv2d", (24, 8, 3, 1), 24, 8, 3.0, 3, 24)}


def test_gpt2_conv1d_is_transposed_to_out_in():
    torch.manual_seed(0)
    layer = Conv1D(nf=30, nx=12)  # in 12, out 30, weight stored (12, 30)
    lm = find_layers(nn.ModuleDict({"c_attn": layer}))["c_attn"]
    assert lm.kind == "Conv1D" and lm.shape == (12, 30)
    assert tuple(lm.weight.shape) == (30, 12) and (lm.N, lm.M, lm.Q) == (30, 12, 2.5)
    # orientation (out, in): W_out_in @ x equals the module's own forward, minus the bias
    x = torch.randn(12)
    torch.testing.assert_close(lm.weight @ x, layer(x) - layer.bias)
    # the view shares memory with the parameter: nothing is copied
    assert lm.weight.data_ptr() == layer.weight.data_ptr()


def test_embedding_and_types_filter():
    model = nn.ModuleDict({"emb": nn.Embedding(100, 16), "fc": nn.Linear(16, 16)})
    found = find_layers(model)
    assert [(lm.name, lm.kind, lm.N, lm.M) for lm in found] == [("emb", "Embedding", 100, 16), ("fc", "Linear", 16, 16)]
    only = find_layers(model, types=["Linear"])
    assert only.names == ["fc"]
    assert {s.name: s.code for s in only.skipped}["emb.weight"] == "filtered-type"


def test_include_exclude_and_unknown_names():
    model = _mlp()
    assert find_layers(model, include=["fc2"]).names == ["fc2"]
    assert find_layers(model, include="fc[12]", exclude=["fc1"]).names == ["fc2"]
    skipped = {s.name: s.reason for s in find_layers(model, include=["fc2"]).skipped}
    assert skipped["fc1.weight"] == "not selected by include"
    with pytest.raises(ValueError, match=r"include names \['fc9'\] match no layer.*layers are \['fc1', 'fc2', 'fc3'\]"):
        find_layers(model, include=["fc1", "fc9"])
    with pytest.raises(ValueError, match="not a valid regular expression"):
        find_layers(model, include="fc[")
    with pytest.raises(TypeError, match="include must be None, a regular expression"):
        find_layers(model, include=3)
    with pytest.raises(ValueError, match=r"types must be a subset of .*unknown \['Dense'\]"):
        find_layers(model, types=["Dense"])


def test_other_2d_parameters_listed_or_included_with_all_2d():
    mha = nn.MultiheadAttention(16, 2)
    found = find_layers(nn.ModuleDict({"attn": mha}))
    assert found.names == ["attn.out_proj"]
    reason = {s.name: s.reason for s in found.skipped}["attn.in_proj_weight"]
    assert "MultiheadAttention" in reason and "all_2d=True" in reason
    found2 = find_layers(nn.ModuleDict({"attn": mha}), all_2d=True)
    assert found2["attn.in_proj_weight"].kind == "Parameter" and found2["attn.in_proj_weight"].shape == (48, 16)


def test_tied_weights_analysed_once():
    emb = nn.Embedding(50, 16)
    head = nn.Linear(16, 50, bias=False)
    head.weight = emb.weight
    found = find_layers(nn.ModuleDict({"wte": emb, "lm_head": head}))
    # named_modules() visits both; the second name of the same memory is listed as tied
    assert found.names == ["wte"]
    assert [(s.name, s.code) for s in found.skipped] == [("lm_head.weight", "tied")]
    assert "same memory as wte.weight" in found.skipped[0].reason
    sd = {"wte.weight": emb.weight.detach(), "lm_head.weight": emb.weight.detach()}
    found_sd = find_layers(sd)
    assert found_sd.names == ["wte"]
    assert [(s.name, s.code) for s in found_sd.skipped] == [("lm_head.weight", "tied")]


def test_no_analysable_layer_is_a_clear_error():
    with pytest.raises(ValueError, match=r"has no analysable layer.*1\.weight \[5\]: 1-D vector"):
        find_layers(nn.Sequential(nn.ReLU(), nn.LayerNorm(5)))
    with pytest.raises(ValueError, match="no parameters at all"):
        find_layers({})


def test_bad_source_and_options():
    with pytest.raises(TypeError, match="source must be a torch.nn.Module, a state dict"):
        find_layers(42)
    with pytest.raises(TypeError, match="all_2d must be True or False"):
        find_layers(_mlp(), all_2d="yes")
    with pytest.raises(ValueError, match="min_eigenvalues must be an integer >= 1"):
        find_layers(_mlp(), min_eigenvalues=0)
    assert set(LAYER_KINDS) >= {"Linear", "Conv1d", "Conv2d", "Embedding", "Conv1D"}


# ----------------------------------------------------------------------------- mappings
def test_state_dict_and_numpy_mapping_give_the_same_matrices():
    model = _mlp()
    from_sd = find_layers(model.state_dict())
    assert from_sd.names == ["fc1", "fc2"] and from_sd["fc1"].kind == "matrix"
    np_map = {k: v.numpy() for k, v in model.state_dict().items()}
    from_np = find_layers(np_map)
    for a, b in zip(find_layers(model), from_np):
        assert a.name == b.name and (a.N, a.M, a.Q) == (b.N, b.M, b.Q)
        np.testing.assert_array_equal(a.weight.numpy(), b.weight)
    conv = {"c.weight": np.zeros((8, 4, 3, 3)), "c.bias": np.zeros(8), "pos": np.zeros((10, 10)),
            "steps": 12, "n": torch.tensor(3)}
    found = find_layers(conv)
    assert [(lm.name, lm.kind, lm.n_slices) for lm in found] == [("c", "Conv2d", 9)]
    codes = {s.name: s.code for s in found.skipped}
    assert codes == {"c.bias": "1-D", "pos": "not-weight", "steps": "not-array", "n": "1-D"}


def test_single_array_source():
    found = find_layers(np.ones((20, 10)))
    assert [(lm.name, lm.kind, lm.N, lm.M) for lm in found] == [("W", "matrix", 20, 10)]
    assert find_layers(found) is found and isinstance(found, LayerSet)
    with pytest.raises(ValueError, match="source is already a LayerSet"):
        find_layers(found, include=["W"])


# ----------------------------------------------------------------------------- files
def test_safetensors_round_trip(tmp_path):
    from safetensors.torch import save_file

    model = _mlp()
    path = tmp_path / "step_000000010.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    found = find_layers(path)
    assert found.names == ["fc1", "fc2"] and found.source == str(path)
    torch.testing.assert_close(found["fc1"].weight, model.fc1.weight.detach(), rtol=0, atol=0)


def test_pt_round_trip_plain_and_nested(tmp_path):
    model = _mlp()
    plain = tmp_path / "m.pt"
    torch.save(model.state_dict(), plain)
    torch.testing.assert_close(find_layers(plain)["fc2"].weight, model.fc2.weight.detach(), rtol=0, atol=0)
    nested = tmp_path / "ckpt.pth"
    torch.save({"model_state_dict": model.state_dict(), "step": 7, "optimizer": {"lr": 1e-3}}, nested)
    assert sorted(load_state_dict(nested)) == sorted(model.state_dict())


class _Payload:
    """Unpickling this calls pathlib.Path.touch(target): code execution from a checkpoint."""

    def __init__(self, target: pathlib.Path):
        self.target = target

    def __reduce__(self):
        return (pathlib.Path.touch, (self.target,))


def test_malicious_pickle_is_refused_and_not_executed(tmp_path):
    side = tmp_path / "side_effect_created"
    evil = tmp_path / "evil.pt"
    torch.save({"fc.weight": torch.zeros(3, 3), "x": _Payload(side)}, evil)
    assert not side.exists()
    with pytest.raises(CheckpointError, match=r"refusing to load .*evil\.pt.*needs to run code"):
        load_state_dict(evil)
    with pytest.raises(CheckpointError, match="refusing to load"):
        find_layers(str(evil))
    assert not side.exists()  # the payload never ran
    # control: the payload is real -- an unsafe load would have executed it
    torch.load(evil, weights_only=False)
    assert side.exists()


def test_bad_files_raise_checkpoint_error_naming_the_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"'.*missing\.pt' does not exist"):
        load_state_dict(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="is not a file"):
        load_state_dict(tmp_path)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.safetensors' is empty"):
        load_state_dict(empty)
    text = tmp_path / "notes.pt"
    text.write_text("these are not weights\n" * 10)
    with pytest.raises(CheckpointError, match=r"notes\.pt"):
        load_state_dict(text)
    good = tmp_path / "good.pt"
    torch.save(_mlp().state_dict(), good)
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"trunc\.pt.*truncated"):
        load_state_dict(trunc)
    from safetensors.torch import save_file

    st = tmp_path / "good.safetensors"
    save_file({"w": torch.zeros(20, 20)}, str(st))
    st_trunc = tmp_path / "trunc.safetensors"
    st_trunc.write_bytes(st.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"trunc\.safetensors.*truncated or not a safetensors"):
        load_state_dict(st_trunc)
    listing = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], listing)
    with pytest.raises(CheckpointError, match=r"list\.pt.*holds a list, not a state dict"):
        load_state_dict(listing)
    with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
        load_state_dict(3)
    assert os.path.exists(good)
