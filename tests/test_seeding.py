"""The random streams of htsr_diag._seeding: the same bits as the streams the modules built by hand before."""

import zlib

import numpy as np
import pytest

from htsr_diag import _seeding


def _old_analyze_layer(rng, name):
    # analyze.py before _seeding: entropy = check_rng(rng).integers(0, 2**63); per layer
    # default_rng(SeedSequence(entropy, spawn_key=(crc32(name),)))
    entropy = int(np.random.default_rng(rng).integers(0, 2**63))
    return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(zlib.crc32(name.encode()),)))


def _old_step(entropy, step):
    # trajectory._analyze_one / Monitor._analyze before _seeding
    seq = np.random.SeedSequence(entropy, spawn_key=(int(step),))
    return tuple(np.random.default_rng(s) for s in seq.spawn(2))


@pytest.mark.parametrize("seed", [0, 7, 2**40])
@pytest.mark.parametrize("name", ["fc1", "0", "model.layers.3.mlp.down_proj"])
def test_layer_stream_of_analyze_is_unchanged(seed, name):
    new = _seeding.layer_rng(_seeding.model_entropy(seed), name)
    assert np.array_equal(new.integers(0, 2**62, 8), _old_analyze_layer(seed, name).integers(0, 2**62, 8))


@pytest.mark.parametrize("step", [0, 1, 1000, 10**7])
def test_step_streams_are_unchanged(step):
    a, b = _seeding.step_streams(3, step)
    oa, ob = _old_step(3, step)
    assert np.array_equal(a.random(5), oa.random(5))
    assert np.array_equal(b.random(5), ob.random(5))
    assert not np.array_equal(_seeding.step_streams(3, step)[0].random(5), _seeding.step_streams(3, step)[1].random(5))


def test_layer_stream_composes_the_steps():
    old_entropy = int(_old_step(5, 30)[0].integers(0, 2**63))
    old = np.random.default_rng(np.random.SeedSequence(old_entropy, spawn_key=(zlib.crc32(b"fc2"),)))
    assert np.array_equal(_seeding.layer_stream(5, 30, "fc2").random(6), old.random(6))


def test_base_entropy():
    assert _seeding.base_entropy(12) == 12
    g1, g2 = np.random.default_rng(4), np.random.default_rng(4)
    assert _seeding.base_entropy(g1) == int(g2.integers(0, 2**63))
    assert _seeding.base_entropy(None) != _seeding.base_entropy(None)  # fresh entropy (2^-128 chance to fail)
    with pytest.raises(TypeError, match="rng must be None, a non-negative int seed or a numpy Generator"):
        _seeding.base_entropy(1.5)
    with pytest.raises(TypeError, match="rng must be None"):
        _seeding.base_entropy(True)
    with pytest.raises(ValueError, match="rng must be a non-negative seed; got -1"):
        _seeding.base_entropy(-1)
