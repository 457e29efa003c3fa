"""The random streams of the analyses, in one place (internal).

Every random draw of an analysis (the shuffles of the correlation traps and the KS test, the
random baselines) comes from a stream derived here, so that every entry point (``analyze``,
``analyze_checkpoints``, the ``Monitor``, ``write_report`` and the CLI) derives it the same way:

- a *base entropy* from the user's ``rng`` (:func:`base_entropy`): an int seed is used as it
  is, a Generator gives one draw, None gives fresh entropy;
- per training step, :func:`step_streams`: ``SeedSequence(entropy, spawn_key=(step,))``
  spawned into two children, the analysis stream and the baselines stream, so a checkpoint's
  numbers depend only on ``(rng, step)``, not on the worker, the order or the subset run;
- per model analysis, :func:`draw_entropy`: one 63-bit draw from the analysis Generator;
- per layer, :func:`layer_rng`: ``SeedSequence(entropy, spawn_key=(crc32(name),))``, so a
  layer's numbers do not depend on which other layers are analysed.

The streams are those of htsr_diag 0.x before this module existed (bit for bit; tested in
``tests/test_seeding.py``), so saved trajectories keep their numbers.
"""

from __future__ import annotations

import numbers
import zlib
from typing import Any

import numpy as np

from ._validation import check_rng

__all__ = ["base_entropy", "draw_entropy", "step_streams", "layer_rng", "layer_stream", "model_entropy"]

_HIGH = 2**63


def base_entropy(rng: Any, name: str = "rng") -> int:
    """The base entropy of a run: an int seed as it is, one draw of a Generator, fresh entropy for None.

    Raises
    ------
    TypeError
        Not None, an int or a numpy Generator.
    ValueError
        A negative seed.
    """
    if rng is None:
        return int(np.random.SeedSequence().entropy)
    if isinstance(rng, bool) or not isinstance(rng, (numbers.Integral, np.random.Generator)):
        raise TypeError(f"{name} must be None, a non-negative int seed or a numpy Generator; got {rng!r} "
                        f"({type(rng).__name__}). Use an int such as {name}=0.")
    if isinstance(rng, np.random.Generator):
        return draw_entropy(rng)
    if int(rng) < 0:
        raise ValueError(f"{name} must be a non-negative seed; got {rng}.")
    return int(rng)


def draw_entropy(gen: np.random.Generator) -> int:
    """One 63-bit draw: the entropy a model analysis derives its layers' streams from."""
    return int(gen.integers(0, _HIGH))


def model_entropy(rng: Any) -> int:
    """The entropy of one model analysis from ``analyze``'s ``rng`` (None, int or Generator)."""
    return draw_entropy(check_rng(rng))


def step_streams(entropy: int, step: int) -> tuple[np.random.Generator, np.random.Generator]:
    """The (analysis, baselines) Generators of the checkpoint at ``step``."""
    seq = np.random.SeedSequence(int(entropy), spawn_key=(int(step),))
    a, b = seq.spawn(2)
    return np.random.default_rng(a), np.random.default_rng(b)


def layer_rng(entropy: int, name: str) -> np.random.Generator:
    """The Generator of the layer called ``name`` in a model analysis of entropy ``entropy``."""
    return np.random.default_rng(np.random.SeedSequence(int(entropy), spawn_key=(zlib.crc32(name.encode()),)))


def layer_stream(rng: Any, step: int, name: str) -> np.random.Generator:
    """The Generator that ``analyze_checkpoints(..., rng=rng)`` gives layer ``name`` at ``step``.

    The composition of :func:`base_entropy`, :func:`step_streams`, :func:`draw_entropy` and
    :func:`layer_rng`, as the Monitor and the report use it.
    """
    return layer_rng(draw_entropy(step_streams(base_entropy(rng), step)[0]), name)
