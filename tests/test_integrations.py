"""Tests of the framework hooks (Lightning, the HF Trainer, TensorBoard) against the real packages.

Each framework trains a tiny MLP for nine steps on the CPU. Before the sixth optimiser step
the first layer's weights are replaced by a heavy-tailed matrix (Student-t, 1.5 degrees of
freedom, scaled by 0.05: alpha ~1.6 and ~10 correlation traps, and a Frobenius norm several
times the initial one), with the training accuracy reported as 1.0, so the Monitor's default
causal classifier must raise the anti-grokking alarm at the analysis of step 6. The tests
read the logged values back from what the framework wrote (Lightning's CSVLogger file, the
Trainer's log history and its TensorBoard reporter, TensorBoard event files) and compare them
with the Monitor's own records.
"""

from __future__ import annotations

import csv
import importlib
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from htsr_diag.integrations import PHASE_CODES, record_metrics
from htsr_diag.phases import ANTI, PRE

pytestmark = pytest.mark.usefixtures("one_thread")

SCHEDULE = [0, 2, 4, 6, 8]
INJECT_BEFORE = 6  # the heavy-tailed layer is in place from the optimiser step that ends at global step 6
MAX_STEPS = 9


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 60), torch.nn.ReLU(), torch.nn.Linear(60, 30))


def _data(n: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 64, generator=g), torch.randint(0, 30, (n,), generator=g)


def _inject_heavy_tail(linear: torch.nn.Linear) -> None:
    W = np.random.default_rng(1).standard_t(1.5, size=tuple(linear.weight.shape)) * 0.05
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(W))


def _check_history(monitor) -> None:
    """The alarm fired at step 6, on the injected layer, after a pre-grokking start."""
    assert [r.step for r in monitor.history] == SCHEDULE
    phases = [r.phase for r in monitor.history]
    assert phases[:3] == [PRE, PRE, PRE] and phases[3:] == [ANTI, ANTI]
    assert monitor.alarm_step == 6
    alarm = monitor.history[3]
    assert alarm.layer_alpha["net.0" if "net.0" in alarm.layer_alpha else "0"] < 2.0


# ----------------------------------------------------------------------------- common
def test_record_metrics_keys_and_phase_codes():
    from htsr_diag import Monitor

    mon = Monitor(_net(), schedule=[0])
    rec = mon.step(0, train_acc=0.5)
    m = record_metrics(rec, prefix="x")
    assert m["x/alpha"] == rec.alpha and m["x/n_traps"] == rec.n_traps
    assert m["x/phase"] == PHASE_CODES[rec.phase] == 0.0 and m["x/alarm"] == 0.0
    assert m["x/alpha/0"] == rec.layer_alpha["0"] and m["x/traps/2"] == rec.layer_traps["2"]
    assert set(record_metrics(rec, per_layer=False)) == {"htsr/alpha", "htsr/n_traps", "htsr/phase", "htsr/alarm",
                                                         "htsr/confidence"}


@pytest.mark.parametrize("module, extra, hide", [
    ("htsr_diag.integrations.lightning", "lightning", ["lightning", "lightning.pytorch", "pytorch_lightning"]),
    ("htsr_diag.integrations.transformers", "transformers", ["transformers"]),
    ("htsr_diag.integrations.tensorboard", "tensorboard", ["torch.utils.tensorboard"]),
])
def test_a_missing_framework_names_the_extra_to_install(monkeypatch, module, extra, hide):
    for name in hide:
        monkeypatch.setitem(sys.modules, name, None)  # import of a None entry raises ImportError
    if module in sys.modules:
        monkeypatch.delitem(sys.modules, module)
    with pytest.raises(ImportError, match=rf'{module} needs .* pip install "htsr-diag\[{extra}\]"'):
        importlib.import_module(module)


# ----------------------------------------------------------------------------- Lightning
def _lightning():
    L = pytest.importorskip("lightning.pytorch", reason='needs Lightning: pip install "htsr-diag[lightning]"')

    class LitNet(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _net()

        def training_step(self, batch, batch_idx):
            if self.global_step == INJECT_BEFORE - 1:
                _inject_heavy_tail(self.net[0])
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.net(x), y)
            self.log("train_acc", 1.0, on_step=True, on_epoch=False)  # as if the training set were fitted
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=1e-3)

    return L, LitNet


# Lightning's advice about DataLoader workers and the logging interval, and its use of a torch
# pytree API that torch 2.13 deprecates: warnings of the framework, not of htsr_diag.
_POSSIBLE_USER_WARNING = "ignore:.*(does not have many workers|smaller than the logging interval).*"
_PYTREE_WARNING = "ignore:.*isinstance\\(treespec, LeafSpec\\)` is deprecated.*"


def _lightning_fit(tmp_path, cb, **trainer_kw):
    L, LitNet = _lightning()
    from lightning.pytorch.loggers import CSVLogger

    x, y = _data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    trainer = L.Trainer(max_steps=MAX_STEPS, accelerator="cpu", devices=1, callbacks=[cb],
                        logger=CSVLogger(tmp_path, name="csv"), enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
                        num_sanity_val_steps=0, **trainer_kw)
    module = LitNet()
    trainer.fit(module, loader)
    return trainer, module


@pytest.mark.filterwarnings(_POSSIBLE_USER_WARNING)
@pytest.mark.filterwarnings(_PYTREE_WARNING)
def test_lightning_callback_logs_to_the_csv_logger_and_raises_the_alarm(tmp_path):
    _lightning()
    from htsr_diag.integrations.lightning import HTSRCallback

    cb = HTSRCallback(train_acc_key="train_acc", schedule=SCHEDULE, rng=0)
    trainer, module = _lightning_fit(tmp_path, cb)
    _check_history(cb.monitor)
    # read back the file the CSVLogger wrote: one row per analysis holds the htsr keys
    files = list(Path(tmp_path).rglob("metrics.csv"))
    assert len(files) == 1
    rows = [r for r in csv.DictReader(files[0].open()) if r.get("htsr/alpha")]
    assert [int(r["step"]) for r in rows] == SCHEDULE
    for row, rec in zip(rows, cb.monitor.history):
        assert float(row["htsr/alpha"]) == pytest.approx(rec.alpha, rel=1e-6)
        assert float(row["htsr/n_traps"]) == rec.n_traps
        assert float(row["htsr/phase"]) == PHASE_CODES[rec.phase]
        assert float(row["htsr/alpha/net.0"]) == pytest.approx(rec.layer_alpha["net.0"], rel=1e-6)
    assert [float(r["htsr/alarm"]) for r in rows] == [0, 0, 0, 1, 1]
    # the summary also reaches the callback metrics (for EarlyStopping / ModelCheckpoint)
    assert float(trainer.callback_metrics["htsr/alarm"]) == 1.0
    assert float(trainer.callback_metrics["htsr/phase"]) == PHASE_CODES[ANTI]


def test_lightning_callback_rejects_bad_options():
    _lightning()
    from htsr_diag.integrations.lightning import HTSRCallback

    with pytest.raises(TypeError, match=r"HTSRCallback: unknown keyword argument\(s\) \['per_decades'\].*per_decade"):
        HTSRCallback(per_decades=3)
    with pytest.raises(ValueError, match=r"prefix must be a non-empty str without a trailing '/'.*got 'htsr/'"):
        HTSRCallback(prefix="htsr/")
    with pytest.raises(TypeError, match=r"train_acc_key must be None or the name of a logged metric.*got 3"):
        HTSRCallback(train_acc_key=3)


@pytest.mark.filterwarnings(_POSSIBLE_USER_WARNING)
@pytest.mark.filterwarnings(_PYTREE_WARNING)
def test_lightning_callback_refuses_a_percentage_accuracy(tmp_path):
    L, LitNet = _lightning()
    from htsr_diag.integrations.lightning import HTSRCallback

    class Percent(LitNet):
        def training_step(self, batch, batch_idx):
            self.log("acc_pct", 100.0, on_step=True, on_epoch=False)
            return torch.nn.functional.cross_entropy(self.net(batch[0]), batch[1])

    cb = HTSRCallback(train_acc_key="acc_pct", schedule=[0, 2])
    x, y = _data()
    trainer = L.Trainer(max_steps=3, accelerator="cpu", devices=1, callbacks=[cb], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(ValueError, match=r"the metric 'acc_pct' \(train_acc_key\) must be a training accuracy in "
                                         r"\[0, 1\]; got 100.0.*divide percentages by 100"):
        trainer.fit(Percent(), torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16))


# ----------------------------------------------------------------------------- HF Trainer
def _hf_parts():
    transformers = pytest.importorskip("transformers", reason='needs transformers: pip install '
                                                              '"htsr-diag[transformers]"')
    pytest.importorskip("accelerate", reason='the Trainer needs accelerate: pip install "htsr-diag[transformers]"')

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _net()

        def forward(self, x, labels=None):
            logits = self.net(x)
            out = {"logits": logits}
            if labels is not None:
                out["loss"] = torch.nn.functional.cross_entropy(logits, labels)
            return out

    class Injector(transformers.TrainerCallback):
        """Replaces the first layer before step 6 and logs a training accuracy of 1.0 at every step."""

        def on_step_begin(self, args, state, control, model=None, **kw):
            if state.global_step == INJECT_BEFORE - 1:
                _inject_heavy_tail(model.net[0])

        def on_step_end(self, args, state, control, **kw):
            state.log_history.append({"train_accuracy": 1.0, "step": state.global_step})

    class Reporter(transformers.TrainerCallback):
        """Stands for a reporter of ``report_to``: records what ``on_log`` hands it."""

        def __init__(self):
            self.seen = []

        def on_log(self, args, state, control, logs=None, **kw):
            self.seen.append((state.global_step, dict(logs)))

    x, y = _data()
    data = [{"x": x[i], "labels": y[i]} for i in range(len(y))]
    return transformers, Net, Injector, Reporter, data


def _hf_trainer(transformers, Net, data, tmp_path, callbacks, **kw):
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=MAX_STEPS, per_device_train_batch_size=16, learning_rate=1e-3,
        optim="sgd", lr_scheduler_type="constant", logging_steps=3, save_strategy="no", use_cpu=True,
        disable_tqdm=True, dataloader_num_workers=0, seed=0, **kw)
    return transformers.Trainer(model=Net(), args=args, train_dataset=data, callbacks=callbacks)


def test_hf_trainer_callback_logs_into_the_log_history_and_the_reporters(tmp_path):
    from htsr_diag.integrations.transformers import HTSRCallback

    transformers, Net, Injector, Reporter, data = _hf_parts()
    reporter = Reporter()
    trainer = _hf_trainer(transformers, Net, data, tmp_path, [Injector(), reporter], report_to="none")
    cb = HTSRCallback.attach(trainer, train_acc_key="train_accuracy", schedule=SCHEDULE, rng=0)
    trainer.train()
    _check_history(cb.monitor)
    rows = [r for r in trainer.state.log_history if "htsr/alpha" in r]
    assert [r["step"] for r in rows] == SCHEDULE
    for row, rec in zip(rows, cb.monitor.history):
        assert row["htsr/alpha"] == rec.alpha and row["htsr/n_traps"] == rec.n_traps
        assert row["htsr/alpha/net.0"] == rec.layer_alpha["net.0"]
        assert row["htsr/phase"] == PHASE_CODES[rec.phase]
    assert [r["htsr/alarm"] for r in rows] == [0, 0, 0, 1, 1]
    # the reporters got the same rows through on_log
    reported = [(s, logs) for s, logs in reporter.seen if "htsr/alpha" in logs]
    assert [s for s, _ in reported] == SCHEDULE and reported[3][1]["htsr/alarm"] == 1.0
    # the Trainer's own loss logs at logging_steps=3 (steps 3, 6, 9) still happen, the one at
    # step 6 included, where the callback logged too
    assert [r["step"] for r in trainer.state.log_history if "loss" in r] == [3, 6, 9]


def test_hf_trainer_callback_reaches_the_tensorboard_reporter(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard", reason='needs tensorboard: pip install "htsr-diag[tensorboard]"')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from htsr_diag.integrations.transformers import HTSRCallback

    transformers, Net, Injector, _, data = _hf_parts()
    # the reporter writes under output_dir (TENSORBOARD_LOGGING_DIR unset)
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    trainer = _hf_trainer(transformers, Net, data, tmp_path, [Injector()], report_to=["tensorboard"])
    cb = HTSRCallback.attach(trainer, train_acc_key="train_accuracy", schedule=SCHEDULE, rng=0)
    trainer.train()
    assert cb.monitor.alarm_step == 6
    files = list((tmp_path / "out").rglob("events.out.tfevents.*"))
    assert files, "the Trainer's TensorBoard reporter wrote no event file"
    acc = EventAccumulator(str(files[0].parent)).Reload()
    # the HF reporter writes each training log under "train/<key>", at the trainer's global step
    alarm = {e.step: e.value for e in acc.Scalars("train/htsr/alarm")}
    assert alarm == {0: 0.0, 2: 0.0, 4: 0.0, 6: 1.0, 8: 1.0}
    alpha = {e.step: e.value for e in acc.Scalars("train/htsr/alpha")}
    assert alpha[6] == pytest.approx(cb.monitor.history[3].alpha, rel=1e-6)  # float32 in the event file


def test_hf_trainer_callback_unbound_appends_to_the_log_history(tmp_path):
    from htsr_diag.integrations.transformers import HTSRCallback

    transformers, Net, Injector, _, data = _hf_parts()
    cb = HTSRCallback(train_acc_key="train_accuracy", schedule=SCHEDULE, rng=0)
    trainer = _hf_trainer(transformers, Net, data, tmp_path, [Injector(), cb], report_to="none")
    trainer.train()
    _check_history(cb.monitor)
    rows = [r for r in trainer.state.log_history if "htsr/alarm" in r]
    assert [(r["step"], r["htsr/alarm"]) for r in rows] == [(0, 0.0), (2, 0.0), (4, 0.0), (6, 1.0), (8, 1.0)]


def test_hf_trainer_callback_rejects_bad_options():
    pytest.importorskip("transformers")
    from htsr_diag.integrations.transformers import HTSRCallback

    with pytest.raises(TypeError, match=r"trainer must be a transformers.Trainer or None; got str"):
        HTSRCallback("trainer")
    with pytest.raises(TypeError, match=r"HTSRCallback: unknown keyword argument\(s\) \['seed'\]"):
        HTSRCallback(seed=0)


# ----------------------------------------------------------------------------- TensorBoard
def test_tensorboard_monitor_writes_scalars_read_back_from_the_event_file(tmp_path):
    pytest.importorskip("tensorboard", reason='needs tensorboard: pip install "htsr-diag[tensorboard]"')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from htsr_diag.integrations.tensorboard import TensorBoardMonitor

    model = _net()
    x, y = _data()
    mon = TensorBoardMonitor(model, log_dir=tmp_path, schedule=SCHEDULE, rng=0)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    for step in range(1, MAX_STEPS + 1):  # optimiser steps 1..9, as the frameworks count them
        if step == 1:
            mon.step(0, train_acc=1.0)  # the initialisation
        if step == INJECT_BEFORE:
            _inject_heavy_tail(model[0])
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        mon.step(step, train_acc=1.0)
    mon.close()
    _check_history(mon)
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "tensors": 0}).Reload()
    got = {e.step: e.value for e in acc.Scalars("htsr/n_traps")}
    assert got == {r.step: r.n_traps for r in mon.history}
    got = {e.step: e.value for e in acc.Scalars("htsr/alpha/0")}
    assert got == {r.step: pytest.approx(r.layer_alpha["0"], rel=1e-6) for r in mon.history}
    assert [e.value for e in acc.Scalars("htsr/phase")] == [0, 0, 0, 2, 2]
    # the phase change is written once, as text, at the alarm
    texts = acc.Tensors("htsr/phase_change/text_summary")
    assert [(t.step, t.tensor_proto.string_val[0].decode()) for t in texts] == [
        (6, "step 6: pre-grokking -> anti-grokking")]


def test_write_history_and_bad_writer(tmp_path):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    from htsr_diag import Monitor
    from htsr_diag.integrations.tensorboard import TensorBoardMonitor, write_history, write_record

    mon = Monitor(_net(), schedule=[0, 1])
    mon.step(0, train_acc=0.5), mon.step(1, train_acc=0.5)
    with SummaryWriter(tmp_path) as w:
        assert write_history(w, mon) == 2
    with pytest.raises(TypeError, match=r"writer must be a torch.utils.tensorboard.SummaryWriter; got dict"):
        write_record({}, mon.history[0])
    with pytest.raises(ValueError, match=r"TensorBoardMonitor needs exactly one of writer= .* and log_dir="):
        TensorBoardMonitor(_net())
    assert math.isfinite(mon.history[0].alpha)
