"""Faults: killed workers, interrupted writes, divergence, out of memory, resume, locks."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from conftest import ROOT, TINY, train_quietly, wait_for
from dlcore.config import ConfigError
from dlcore.checkpoints import load_checkpoint, load_model
from dlcore.runs import RunStore, read_metrics
from dlcore.runlock import RunLock
from dlcore.train import resume
from dlcore.trainer import TrainingFailed

# 200 small steps an epoch: long enough to be killed inside one, short on a busy machine
LONG = {"data": {"dataset": "mnist-5k", "limit": 1000},
        "model": {"arch": "dnn", "hidden_dims": [256, 256]},
        "train": {"epochs": 100, "batch_size": 4, "patience": 0, "device": "cpu"}}


def worker(cfg, runs, tmp_path):
    (tmp_path / "long.json").write_text(json.dumps(cfg))
    return subprocess.Popen([sys.executable, "-m", "dlcore", "train", "long.json", "--runs-dir",
                             str(runs)], cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def strip(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_killed_worker_shows_failed_with_a_loadable_checkpoint(tmp_path):
    runs = tmp_path / "runs"
    proc = worker(LONG, runs, tmp_path)
    try:
        run = wait_for(lambda: next((r for r in RunStore(runs).list() if r.epoch >= 1), None),
                       worker=proc, what="the first epoch")
        time.sleep(0.3)                             # into the next epoch
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
    info = RunStore(runs).get(run.id)
    assert info.state == "failed" and "gone" in info.error
    load_model(info.path / "last.pt")
    assert (info.path / "metrics.jsonl").read_bytes().endswith(b"\n")
    assert len(read_metrics(info.path)) >= 1


WRITER = r"""
import json, sys, torch
from pathlib import Path
from dlcore.checkpoints import save_checkpoint
from dlcore.runs import write_json_atomic
d = Path(sys.argv[1])
i = json.loads((d / "status.json").read_text())["i"] if (d / "status.json").exists() else 0
while True:
    i += 1
    write_json_atomic(d / "status.json", {"state": "running", "pid": 0, "i": i, "pad": "x" * (i % 5000)})
    save_checkpoint(d / "last.pt", {"model_state": {"w": torch.full((20000 + i % 7,), float(i))},
                                    "config": {}, "i": i})
"""


def test_killing_a_writer_mid_write_never_leaves_a_broken_file(tmp_path):
    run = tmp_path / "runs" / "20260101-000000-x"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"data": {"dataset": "mnist-5k"},
                                                 "model": {"arch": "dnn"}, "train": {}}))
    rng = random.Random(0)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    seen = set()
    def written():
        try:
            return json.loads((run / "status.json").read_text())["i"]
        except FileNotFoundError:
            return 0

    for _ in range(8):
        before = written()
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(run)], env=env)
        wait_for(lambda: written() > before, worker=proc, what="a write")   # writing has begun
        time.sleep(rng.uniform(0.0, 0.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        status = json.loads((run / "status.json").read_text())      # whole, old or new
        ckpt = load_checkpoint(run / "last.pt")
        assert ckpt["model_state"]["w"][0].item() == ckpt["i"]
        seen.add(status["i"])
    assert len(seen) > 5                         # the kills landed at different points
    store = RunStore(tmp_path / "runs")
    assert [r.id for r in store.list()] == [run.name]
    left = list(run.glob(".*.tmp"))
    assert left                                  # a reader changes nothing, leftovers included
    store.clean_leftovers()
    assert sorted(run.glob(".*.tmp")) == sorted(left)   # too young: a live writer may own them
    old = time.time() - 3600
    for tmp in left:
        os.utime(tmp, (old, old))
    store.clean_leftovers()                      # a worker starting: the run's lock is free
    assert not list(run.glob(".*.tmp"))


class NaNAt:
    """A loss that turns NaN at one (epoch, batch) of the training loop."""

    def __init__(self, batches_per_epoch, epoch, batch):
        self.call, self.at = 0, (epoch - 1) * batches_per_epoch + batch

    def __call__(self, logits, y):
        self.call += 1
        loss = nn.functional.cross_entropy(logits, y)
        return loss * float("nan") if self.call == self.at else loss


def test_divergence_fails_at_once_and_keeps_the_finite_best(tmp_path, monkeypatch):
    cfg = json.loads(json.dumps(TINY))
    cfg["train"].update(epochs=5, patience=0)
    batches = 5                                   # 320 training images at batch 64
    monkeypatch.setattr(nn, "CrossEntropyLoss", lambda: NaNAt(batches, 3, 2))
    with pytest.raises(TrainingFailed) as e:
        train_quietly(cfg, tmp_path)
    msg = str(e.value)
    assert "epoch 3, batch 2" in msg and "lower learning rate" in msg
    run = RunStore(tmp_path).list()[0]
    assert run.state == "failed" and "epoch 3, batch 2" in run.error
    best = load_checkpoint(run.path / "best.pt")
    assert best["epoch"] <= 2
    assert all(torch.isfinite(v).all() for v in best["model_state"].values() if v.is_floating_point())
    assert len(read_metrics(run.path)) == 2


def tight_memory(model, limit):
    """Make a model run out of memory above a batch size while training, like a small GPU."""
    def check(module, inputs):
        if module.training and len(inputs[0]) > limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    model.register_forward_pre_hook(check)
    return model


def test_out_of_memory_retries_with_a_smaller_batch(tmp_path, monkeypatch):
    import dlcore.train as train_mod
    real_build = train_mod.build_model
    monkeypatch.setattr(train_mod, "build_model", lambda *a: tight_memory(real_build(*a), 40))
    cfg = json.loads(json.dumps(TINY))
    cfg["train"].update(batch_size=160, epochs=2)
    run = train_quietly(cfg, tmp_path)
    rows = read_metrics(run)
    assert [r["batch_size"] for r in rows] == [40, 40]
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "completed" and status["batch_size"] == 40
    assert any("batch size 160" in n for n in status["notes"])


def tight_inference_memory(model, limit):
    """Out of memory above a batch size in evaluation mode only: validation and the layer probe."""
    def check(module, inputs):
        if not module.training and len(inputs[0]) > limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
    model.register_forward_pre_hook(check)
    return model


def test_out_of_memory_while_validating_restarts_the_epoch_from_its_start(tmp_path, monkeypatch):
    import dlcore.train as train_mod
    real_build = train_mod.build_model
    cfg = json.loads(json.dumps(TINY))
    cfg["train"].update(epochs=2, patience=0)
    cfg["model"]["dropout"] = 0.3                 # the global RNG must be rewound too
    straight = train_quietly(dict(cfg, train=dict(cfg["train"], batch_size=20)), tmp_path / "a")
    # the layer probe (a batch as large as the training one, at most 256) runs out of memory
    # at 160 and 80 before epoch 1; validation (twice the batch) at 40, after epoch 1 trained
    monkeypatch.setattr(train_mod, "build_model",
                        lambda *a: tight_inference_memory(real_build(*a), 50))
    retried = train_quietly(dict(cfg, train=dict(cfg["train"], batch_size=160)), tmp_path / "b")
    status = json.loads((retried / "status.json").read_text())
    assert status["state"] == "completed" and status["batch_size"] == 20
    assert [n.split(" (")[0] for n in status["notes"]] == [
        f"out of cpu memory at batch size {b}" for b in (160, 80, 40)]
    assert "epoch 1 restarts with batch size 20" in status["notes"][-1]
    assert strip(read_metrics(retried)) == [dict(r, batch_size=20) for r in strip(read_metrics(straight))]
    a = load_checkpoint(straight / "last.pt")["model_state"]
    b = load_checkpoint(retried / "last.pt")["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)   # as if it had started at batch 40


def test_out_of_memory_at_the_smallest_batch_names_batch_and_model_size(tmp_path, monkeypatch):
    import dlcore.train as train_mod
    real_build = train_mod.build_model
    monkeypatch.setattr(train_mod, "build_model", lambda *a: tight_memory(real_build(*a), 1))
    cfg = json.loads(json.dumps(TINY))
    cfg["train"].update(batch_size=8)
    with pytest.raises(TrainingFailed, match=r"batch size 2 with a model of [\d,]+ parameters"):
        train_quietly(cfg, tmp_path)


@pytest.mark.parametrize("schedule", ["none", "onecycle"])
def test_two_epochs_straight_equal_one_plus_resume_plus_one(schedule, tmp_path):
    cfg = json.loads(json.dumps(TINY))
    cfg["model"]["dropout"] = 0.3                  # the global RNG matters too
    cfg["data"]["augment"] = {"crop_padding": 2, "hflip": False, "rotation": 5}
    cfg["train"].update(epochs=2, schedule=schedule, patience=0)
    straight = train_quietly(cfg, tmp_path / "a")
    cfg["train"]["epochs"] = 2
    half = train_quietly(dict(cfg, train=dict(cfg["train"], epochs=1)), tmp_path / "b")
    if schedule == "none":
        resume(half, epochs=2, progress=False, log=lambda s: None)
        assert strip(read_metrics(half)) == strip(read_metrics(straight))
        a = load_checkpoint(straight / "last.pt")["model_state"]
        b = load_checkpoint(half / "last.pt")["model_state"]
        assert all(torch.equal(a[k], b[k]) for k in a)
    else:   # a longer one-cycle schedule is replayed to the point reached, then continues
        resume(half, epochs=3, progress=False, log=lambda s: None)
        rows = read_metrics(half)
        assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert json.loads((half / "status.json").read_text())["state"] == "completed"
    assert (half / "eval.json").exists()


def test_stopped_run_resumes_from_the_command_line(tmp_path):
    runs = tmp_path / "runs"
    proc = worker(LONG, runs, tmp_path)       # 100 epochs: it is stopped long before its end
    try:
        run = wait_for(lambda: next((r for r in RunStore(runs).list()
                                     if r.progress or r.epoch), None), worker=proc,
                       what="progress")
        RunStore(runs).request_stop(run.id)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    stopped = RunStore(runs).get(run.id)
    assert stopped.state == "stopped" and stopped.epoch < 100
    target = stopped.epoch + 1               # the epoch it stopped in, done again from last.pt
    out = subprocess.run([sys.executable, "-m", "dlcore", "resume", str(runs / run.id),
                          "--epochs", str(target)],
                         cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    info = RunStore(runs).get(run.id)
    assert info.state == "completed" and info.epoch == target
    assert [r["epoch"] for r in read_metrics(info.path)] == list(range(1, target + 1))


def test_a_second_worker_is_refused_by_the_run_lock(tiny_runs):
    runs, dnn, _ = tiny_runs
    with RunLock(runs / dnn):
        with pytest.raises(ConfigError, match=r"being written by another process \(pid \d+\)"):
            resume(runs / dnn, epochs=5, progress=False, log=lambda s: None)
    assert json.loads((runs / dnn / "status.json").read_text())["state"] == "completed"


def test_resume_needs_more_epochs_than_done(tiny_runs):
    runs, dnn, _ = tiny_runs
    with pytest.raises(ConfigError, match="has done 2 of 2 epochs"):
        resume(runs / dnn, progress=False, log=lambda s: None)
