"""analyze() on safetensors files and sharded model folders, one tensor at a time (htsr_diag.streaming).

Reference for every streamed report: analyze() of the same weights loaded whole
(layers.load_state_dict), the path that reads the whole checkpoint into memory. Reference for
the blockwise float64 spectrum: scipy.linalg.svdvals squared.
"""

from __future__ import annotations

import json
import math
import weakref

import numpy as np
import pytest
import scipy.linalg
import torch
from safetensors.torch import save_file

from htsr_diag import analyze
from htsr_diag import streaming
from htsr_diag.exceptions import CheckpointError
from htsr_diag.layers import load_state_dict

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("error")]


def _llama_like(n_blocks: int = 2, hidden: int = 48, mlp: int = 80, vocab: int = 96, kv: int = 24,
                dtype=torch.bfloat16, seed: int = 0) -> dict[str, torch.Tensor]:
    """A Llama-shaped state dict in HF names (GQA k/v projections hidden -> kv), random weights."""
    g = torch.Generator().manual_seed(seed)

    def w(*shape):
        return (torch.randn(*shape, generator=g) / math.sqrt(shape[-1])).to(dtype)

    sd = {"model.embed_tokens.weight": w(vocab, hidden)}
    for i in range(n_blocks):
        p = f"model.layers.{i}."
        sd.update({p + "self_attn.q_proj.weight": w(hidden, hidden), p + "self_attn.k_proj.weight": w(kv, hidden),
                   p + "self_attn.v_proj.weight": w(kv, hidden), p + "self_attn.o_proj.weight": w(hidden, hidden),
                   p + "mlp.gate_proj.weight": w(mlp, hidden), p + "mlp.up_proj.weight": w(mlp, hidden),
                   p + "mlp.down_proj.weight": w(hidden, mlp),
                   p + "input_layernorm.weight": torch.ones(hidden, dtype=dtype),
                   p + "post_attention_layernorm.weight": torch.ones(hidden, dtype=dtype)})
    sd["model.norm.weight"] = torch.ones(hidden, dtype=dtype)
    sd["lm_head.weight"] = w(vocab, hidden)
    return sd


def _save_sharded(sd: dict[str, torch.Tensor], folder, n_shards: int = 3) -> list[str]:
    """Shards assigned round-robin (so shard order is not index order); the index lists the
    names in a fixed shuffled order, which is the order the reports must follow."""
    folder.mkdir(parents=True, exist_ok=True)
    names = list(sd)
    files = [f"model-{k + 1:05d}-of-{n_shards:05d}.safetensors" for k in range(n_shards)]
    owner = {n: files[i % n_shards] for i, n in enumerate(names)}
    for f in files:
        save_file({n: sd[n] for n in names if owner[n] == f}, folder / f)
    order = [names[i] for i in np.random.default_rng(1).permutation(len(names))]
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 0}, "weight_map": {n: owner[n] for n in order}}))
    return order


def _assert_same_report(a, b, rtol: float = 1e-9) -> None:
    """Equal layer by layer: names, order, ints and strings exactly, floats to rtol (NaN == NaN)."""
    assert a.names == b.names
    assert [s.to_dict() for s in a.skipped] == [s.to_dict() for s in b.skipped]
    assert (a.randomize, a.ks, a.center_traps) == (b.randomize, b.ks, b.center_traps)
    for la, lb in zip(a.layers, b.layers):
        da, db = la.to_dict(), lb.to_dict()
        assert da.keys() == db.keys()
        for key in da:
            x, y = da[key], db[key]
            if isinstance(x, float) or isinstance(y, float):
                assert x == pytest.approx(y, rel=rtol, abs=0, nan_ok=True), (la.name, key, x, y)
            elif isinstance(x, list) and x and isinstance(x[0], float):
                np.testing.assert_allclose(x, y, rtol=rtol, err_msg=f"{la.name} {key}")
            else:
                assert x == y, (la.name, key, x, y)


def test_sharded_folder_equals_the_model_loaded_whole_in_index_order(tmp_path):
    sd = _llama_like()
    order = _save_sharded(sd, tmp_path / "m")
    assert streaming.is_streamable(tmp_path / "m")
    streamed = analyze(tmp_path / "m", rng=0)
    whole = analyze(load_state_dict(tmp_path / "m"), rng=0)
    _assert_same_report(streamed, whole)
    # index order, not shard order: the 2-D weights of the index, '.weight' removed
    assert streamed.names == [n[:-len(".weight")] for n in order if sd[n].ndim == 2]
    assert streamed.source == str(tmp_path / "m")
    assert [s.name for s in streamed.skipped] == [n for n in order if sd[n].ndim == 1]
    assert all(s.code == "1-D" for s in streamed.skipped)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_single_file_equals_whole_and_reads_weights_as_stored(tmp_path, monkeypatch, dtype):
    sd = _llama_like(n_blocks=1, dtype=dtype)
    save_file(sd, tmp_path / "model.safetensors")
    seen = []
    read = streaming.read_weight
    monkeypatch.setattr(streaming, "read_weight", lambda f, n: seen.append(read(f, n).dtype) or read(f, n))
    for path in (tmp_path / "model.safetensors", tmp_path):  # the file, and its model folder
        streamed = analyze(path, rng=3, layers=r"proj|embed")
        whole = analyze(load_state_dict(path), rng=3, layers=r"proj|embed")
        _assert_same_report(streamed, whole)
    assert set(seen) == {dtype}
    assert "lm_head" not in streamed.names and any(s.name == "lm_head.weight" and s.code == "filtered-name"
                                                   for s in streamed.skipped)


def test_one_tensor_in_memory_at_a_time(tmp_path, monkeypatch):
    """Each tensor read is freed before the next one is read (counted with weakref finalizers)."""
    sd = _llama_like(n_blocks=2)
    _save_sharded(sd, tmp_path / "m")
    counts = {"loads": 0, "frees": 0, "alive_at_load": []}
    read = streaming.read_weight

    def counting_read(file, name):
        counts["alive_at_load"].append(counts["loads"] - counts["frees"])
        W = read(file, name)
        counts["loads"] += 1
        weakref.finalize(W, lambda: counts.__setitem__("frees", counts["frees"] + 1))
        return W

    monkeypatch.setattr(streaming, "read_weight", counting_read)
    report = analyze(tmp_path / "m", rng=0)
    n_layers = sum(1 for v in sd.values() if v.ndim == 2)
    assert len(report.layers) == counts["loads"] == n_layers  # only the layers are read, each once
    assert counts["alive_at_load"] == [0] * n_layers
    assert counts["frees"] == n_layers


def test_blockwise_float64_spectrum_matches_svd(monkeypatch):
    """Above GRAM_BLOCK_ELEMENTS the Gram matrix is summed over blocks; reference: scipy's svdvals**2."""
    monkeypatch.setattr(streaming, "GRAM_BLOCK_ELEMENTS", 500)
    g = torch.Generator().manual_seed(0)
    for shape in ((300, 40), (40, 300)):
        W = torch.randn(*shape, generator=g).to(torch.bfloat16)
        ref = np.sort(scipy.linalg.svdvals(W.to(torch.float64).numpy()) ** 2)
        got = streaming._spectrum(W)
        assert got.dtype == np.float64 and got.shape == (40,)
        np.testing.assert_allclose(got, ref, rtol=1e-10)


def test_large_layers_through_the_blockwise_path_equal_the_whole_analysis(tmp_path, monkeypatch):
    monkeypatch.setattr(streaming, "GRAM_BLOCK_ELEMENTS", 1000)
    sd = _llama_like(n_blocks=1)
    _save_sharded(sd, tmp_path / "m", n_shards=2)
    _assert_same_report(analyze(tmp_path / "m", rng=0), analyze(load_state_dict(tmp_path / "m"), rng=0),
                        rtol=1e-8)


def test_wrapper_prefixes_and_all_2d_follow_the_whole_path(tmp_path):
    sd = {f"module.{k}": v for k, v in _llama_like(n_blocks=1).items()}
    sd["module.pos_embed"] = torch.randn(32, 48).to(torch.bfloat16)  # 2-D, key not ending in 'weight'
    save_file(sd, tmp_path / "ddp.safetensors")
    for all_2d in (False, True):
        streamed = analyze(tmp_path / "ddp.safetensors", rng=0, all_2d=all_2d, randomize=False)
        _assert_same_report(streamed, analyze(load_state_dict(tmp_path / "ddp.safetensors"), rng=0,
                                              all_2d=all_2d, randomize=False))
        assert ("pos_embed" in streamed.names) is all_2d
    assert not any(n.startswith("module.") for n in streamed.names)


def test_non_finite_layer_gets_a_row_and_the_others_carry_on(tmp_path):
    sd = _llama_like(n_blocks=1)
    sd["model.layers.0.mlp.up_proj.weight"][3, 4] = float("nan")
    save_file(sd, tmp_path / "model.safetensors")
    with pytest.warns(Warning, match="non-finite weights"):
        report = analyze(tmp_path / "model.safetensors", rng=0, randomize=False)
    bad = report.layer("model.layers.0.mlp.up_proj")
    assert bad.status.startswith("non-finite") and math.isnan(bad.alpha)
    assert all(lr.status == "ok" for lr in report.layers if lr is not bad)


def test_errors_name_the_file_and_the_fix(tmp_path):
    sd = _llama_like(n_blocks=1)
    _save_sharded(sd, tmp_path / "m")
    (tmp_path / "m" / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"names shard\(s\) that are not in the folder.*00002"):
        analyze(tmp_path / "m")

    _save_sharded(sd, tmp_path / "n")
    index = json.loads((tmp_path / "n" / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.extra.weight"] = "model-00001-of-00003.safetensors"
    (tmp_path / "n" / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"lacks 1 tensor\(s\).*do not belong together"):
        analyze(tmp_path / "n")

    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match=r"bad\.safetensors.*not a safetensors checkpoint"):
        analyze(tmp_path / "bad.safetensors")

    with pytest.raises(ValueError, match="not a .safetensors file"):
        streaming.stream_layers(tmp_path / "bad.pt")


def test_pt_files_and_models_are_not_streamed(tmp_path):
    torch.save(_llama_like(n_blocks=1), tmp_path / "m.pt")
    assert not streaming.is_streamable(tmp_path / "m.pt")
    assert not streaming.is_streamable(torch.nn.Linear(3, 3))
    assert not streaming.is_streamable(tmp_path)  # a folder without model files


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_streamed_on_the_gpu_matches_the_cpu(tmp_path):
    sd = _llama_like(n_blocks=1)
    _save_sharded(sd, tmp_path / "m")
    _assert_same_report(analyze(tmp_path / "m", rng=0, device="cuda", randomize=False),
                        analyze(tmp_path / "m", rng=0, randomize=False), rtol=1e-6)
