"""The small-spectrum warning comes once per layer per call or run, not once per checkpoint (issue #14)."""

from __future__ import annotations

import logging
import warnings

import pytest

torch = pytest.importorskip("torch")

from conftest import seeded_mlp  # noqa: E402
from htsr_diag import Monitor, SmallSpectrumWarning, analyze, analyze_checkpoints, layer_alpha  # noqa: E402


def _mlp(seed: int = 0):
    """100-60-60-10-8: layers '4' (10 eigenvalues) and '6' (8) are small."""
    return seeded_mlp(100, 60, 60, 10, 8, seed=seed)


def _small(record):
    return [w for w in record if issubclass(w.category, SmallSpectrumWarning)]


def test_analyze_names_each_small_layer_once():
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        analyze(_mlp(), rng=0)
    small = _small(rec)
    # two layers with 10 and 8 eigenvalues; each warned once, by name, at the caller's line
    assert sorted(str(w.message).split("'")[1] for w in small) == ["4", "6"]
    assert all(str(w.message).startswith("analyze: layer ") and "only " in str(w.message) for w in small)
    assert all(w.filename == __file__ for w in small)


def test_layer_alpha_alone_still_warns():
    import numpy as np

    with pytest.warns(SmallSpectrumWarning, match="layer_alpha: only 10 eigenvalues"):
        layer_alpha(np.linspace(1.0, 10.0, 10))


def test_monitor_warns_once_per_layer_over_a_run():
    model = _mlp()
    mon = Monitor(model, per_decade=10)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: spinning threads on a busy machine only slow them down
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        for step in range(500):
            opt.zero_grad()
            model(torch.randn(4, 100)).pow(2).mean().backward()
            opt.step()
            mon.step(step, train_acc=0.5)
    torch.set_num_threads(threads)
    assert len(mon.history) > 20
    small = _small(rec)
    assert len(small) == 2  # one per small layer, not one per analysis
    assert all(str(w.message).startswith("Monitor: layer ") for w in small)
    assert all(w.filename == __file__ for w in small)


def test_analyze_checkpoints_warns_once_per_layer(tmp_path, caplog):
    model = _mlp()
    for step in (0, 1, 10, 100):
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1.01)
        torch.save(model.state_dict(), tmp_path / f"step_{step}.pt")
    with warnings.catch_warnings(record=True) as rec, caplog.at_level(logging.INFO, logger="htsr_diag"):
        warnings.simplefilter("always")
        traj = analyze_checkpoints(tmp_path, rng=0)
    assert len(traj.steps) == 4
    small = _small(rec)
    assert len(small) == 2
    assert all(str(w.message).startswith("analyze_checkpoints: layer ") and "(at 4 of 4 checkpoints, first at step 0)"
               in str(w.message) for w in small)
    assert all(w.filename == __file__ for w in small)
    # per-checkpoint details are DEBUG: INFO says only that the checkpoints were analysed
    info = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert len(info) <= 2, [r.getMessage() for r in info]
