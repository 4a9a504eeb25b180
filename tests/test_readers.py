"""Readers never break writers: listing runs changes nothing, a run is alive exactly while its
lock is held, and Stop signals only the process that holds it."""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT, TINY, wait_for
from datafiles import write_folder
from dlcore import jobs
from dlcore.runs import RunStore, read_metrics, write_json_atomic
from dlcore.runlock import lock_holder, run_is_locked

HOLD_LOCK = r"""
import sys, time
from dlcore.runlock import RunLock
with RunLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


def hold_lock(run_dir):
    """A separate process that holds a run's lock, as a worker does."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_dir)],
                            env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked", proc.stderr.read()
    return proc


def set_status(run_dir, **changes):
    st = json.loads((run_dir / "status.json").read_text())
    write_json_atomic(run_dir / "status.json", dict(st, **changes))


def test_a_run_is_running_exactly_while_its_lock_is_held(tiny_runs):
    runs, dnn, _ = tiny_runs
    store = RunStore(runs)
    assert store.get(dnn).state == "completed" and not run_is_locked(runs / dnn)
    holder = hold_lock(runs / dnn)
    try:
        assert store.get(dnn).state == "running"          # e.g. being resumed
        assert lock_holder(runs / dnn) == holder.pid
    finally:
        holder.kill()
        holder.wait()
    assert store.get(dnn).state == "completed" and lock_holder(runs / dnn) is None


def test_a_live_pid_in_status_does_not_make_a_run_alive(tiny_runs):
    runs, dnn, _ = tiny_runs
    # a run cut by a power loss: its pid now belongs to another program (here: this one)
    set_status(runs / dnn, state="running", pid=os.getpid())
    info = RunStore(runs).get(dnn)
    assert info.state == "failed" and "gone" in info.error
    assert RunStore(runs).active() == []


def test_stop_never_signals_a_process_that_does_not_hold_the_lock(tiny_runs):
    runs, dnn, _ = tiny_runs
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        set_status(runs / dnn, state="running", pid=stranger.pid)
        (runs / dnn / ".lock").write_text(str(stranger.pid))   # a stale lock file, not held
        jobs.stop(runs, dnn)
        time.sleep(0.5)
        assert stranger.poll() is None, "Stop killed a process that holds no lock"
    finally:
        stranger.kill()
        stranger.wait()


def test_stop_signals_the_lock_holder(tiny_runs):
    runs, dnn, _ = tiny_runs
    holder = hold_lock(runs / dnn)
    try:
        set_status(runs / dnn, state="running", pid=holder.pid)    # a worker, training
        jobs.stop(runs, dnn)
        assert holder.wait(timeout=60) == -signal.SIGTERM
    finally:
        holder.kill()
    assert (runs / dnn / "STOP").exists()


def test_listing_runs_never_deletes_a_writers_temp_files(tiny_runs):
    runs, dnn, cnn = tiny_runs
    young = runs / dnn / ".config.json.abc.tmp"      # a resume rewriting config.json right now
    young.write_text("{")
    for _ in range(20):
        RunStore(runs).list()
    assert young.exists()
    RunStore(runs).clean_leftovers()                 # too young to be a leftover
    assert young.exists()


def test_leftovers_are_cleaned_only_in_runs_no_process_holds(tiny_runs):
    runs, dnn, cnn = tiny_runs
    old = time.time() - 3600
    stale = [runs / dnn / ".status.json.x.tmp", runs / cnn / ".last.pt.y.tmp"]
    for p in stale:
        p.write_text("half")
        os.utime(p, (old, old))
    holder = hold_lock(runs / cnn)
    try:
        RunStore(runs).clean_leftovers()
        assert not stale[0].exists()                 # nobody writes the DNN run
        assert stale[1].exists()                     # the CNN run's writer is alive
    finally:
        holder.kill()
        holder.wait()
    RunStore(runs).clean_leftovers()
    assert not stale[1].exists()


def test_atomic_writes_into_a_stopped_run_all_succeed_while_a_reader_polls(tiny_runs):
    runs, dnn, _ = tiny_runs
    set_status(runs / dnn, state="stopped")
    failures, done = [], threading.Event()

    def reader():
        while not done.is_set():
            RunStore(runs).list()
            time.sleep(0.001)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(400):
            try:
                write_json_atomic(runs / dnn / "eval-extra.json", {"i": i})
            except OSError as e:
                failures.append(e)
    finally:
        done.set()
        t.join()
    assert failures == []
    assert json.loads((runs / dnn / "eval-extra.json").read_text()) == {"i": 399}


def quick(seed):
    cfg = json.loads(json.dumps(TINY))
    cfg["data"]["limit"] = 200
    cfg["train"].update(epochs=1, seed=seed, patience=0)
    cfg["train"]["layer_stats"] = seed % 2 == 0
    return cfg


def test_workers_started_resumed_and_evaluated_while_a_reader_polls_all_finish(empty_runs):
    """The app's whole life of a run, for many runs at once, under a sidebar polling every
    10 ms. DLCORE_STRESS_WORKERS sets how many (the issue's check: 20)."""
    n = int(os.environ.get("DLCORE_STRESS_WORKERS", "3"))
    errors, done = [], threading.Event()

    def reader():
        while not done.is_set():
            try:
                for r in RunStore(empty_runs).list():
                    assert r.state != "damaged", r.damaged
            except Exception as e:        # a reader failing is a finding too
                errors.append(e)
            time.sleep(0.01)

    t = threading.Thread(target=reader)
    t.start()
    try:
        started = [jobs.start_training(quick(i), empty_runs, f"w{i}") for i in range(n)]
        for job in started:
            wait_for(lambda: job.ended(), worker=job.proc, log=job.log, what="training")
        runs = {job.run_id: RunStore(empty_runs).get(job.run_id) for job in started}
        assert {r.state for r in runs.values()} == {"completed"}, \
            {k: (r.state, r.error) for k, r in runs.items()}
        resumed = [jobs.start_resume(empty_runs, rid, epochs=2) for rid in runs]
        for job in resumed:
            wait_for(lambda: job.ended(), worker=job.proc, log=job.log, what="the resume")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        evals = [subprocess.Popen([sys.executable, "-m", "dlcore", "evaluate", str(empty_runs / rid)],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True) for rid in runs]
        for proc in evals:
            assert proc.wait(timeout=600) == 0, proc.stderr.read()
    finally:
        done.set()
        t.join()
    assert errors == []
    for rid in runs:
        info = RunStore(empty_runs).get(rid)
        assert (info.state, info.epoch) == ("completed", 2), (info.state, info.error)
        assert [m["epoch"] for m in read_metrics(info.path)] == [1, 2]
        assert not list(info.path.glob(".*.tmp"))
        assert json.loads((info.path / "eval.json").read_text())["n_test"] == 1000


def test_the_app_knows_its_run_from_the_start(empty_runs):
    job = jobs.start_training(quick(1), empty_runs, "known")
    assert job.run_id.endswith("known")
    # locked from its first file on: listed as running while the worker loads torch and data
    info = RunStore(empty_runs).get(job.run_id)
    assert info.state == "running" and info.name == "known"
    assert jobs.job_state(job)[0] in ("starting", "running")
    wait_for(job.ended, worker=job.proc, log=job.log, what="training")
    assert jobs.job_state(job) == ("ended", None)
    assert RunStore(empty_runs).get(job.run_id).state == "completed"


def test_a_stop_while_the_worker_loads_ends_the_run_stopped(empty_runs):
    job = jobs.start_training(quick(2), empty_runs, "early stop")
    jobs.stop(empty_runs, job.run_id)          # before torch is even imported, most likely
    wait_for(job.ended, worker=job.proc, log=job.log, what="the stop")
    info = RunStore(empty_runs).get(job.run_id)
    assert info.state == "stopped", (info.state, info.error)


def test_a_worker_that_cannot_load_its_data_says_why_in_its_run(empty_runs, tmp_path):
    folder = tmp_path / "imgs"
    write_folder(folder, classes=("a", "b"), per_class=8)
    cfg = {"data": {"dataset": "folder", "root": str(folder), "val_fraction": 0.25},
           "model": {"hidden_dims": [8]}, "train": {"epochs": 1, "batch_size": 4, "device": "cpu"}}
    job = jobs.start_training(cfg, empty_runs, "vanishing")
    shutil.rmtree(folder)                      # gone before the worker reads it
    wait_for(job.ended, worker=job.proc, log=job.log, what="the failure")
    info = RunStore(empty_runs).get(job.run_id)
    assert info.state == "failed" and "data.root" in info.error and "not a folder" in info.error
    assert jobs.job_state(job) == ("ended", info.error)


@pytest.mark.parametrize("arch", ["dnn", "cnn"])
def test_a_training_step_never_waits_for_the_device(arch, tmp_path, monkeypatch):
    """By construction: no .item(), no reading a tensor into Python and no tensor made from
    Python data inside the step; those happen on the progress timer and at the epoch's end."""
    import torch

    import dlcore.loop as loop_mod
    from dlcore.loop import train_one_epoch
    from dlcore.train import prepare
    from dlcore.trainer import Trainer

    model_cfg = {"arch": "cnn", "blocks": [[4, 4]], "fc_dims": [8]} if arch == "cnn" else \
        {"arch": "dnn", "hidden_dims": [16]}
    cfg = {"data": {"dataset": "mnist-5k", "limit": 640,
                    "augment": {"crop_padding": 2, "hflip": True, "rotation": 5}},
           "model": model_cfg, "train": {"batch_size": 16, "device": "cpu", "schedule": "onecycle",
                                         "layer_stats": False}}
    cfg, device, splits, model = prepare(cfg)
    trainer = Trainer(cfg, tmp_path, device, splits, model, progress=False, log=lambda s: None)
    dlcore_dir = str(ROOT / "dlcore")
    calls = []

    def counting(name, real):
        def wrapper(*a, **k):
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(dlcore_dir):
                calls.append((name, caller.rsplit("/", 1)[-1], sys._getframe(1).f_lineno))
            return real(*a, **k)
        return wrapper

    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, counting(name, getattr(torch.Tensor, name)))
    for name in ("tensor", "as_tensor"):
        monkeypatch.setattr(torch, name, counting(name, getattr(torch, name)))
    monkeypatch.setattr(loop_mod, "PROGRESS_EVERY_S", 1e9)      # the timer never fires
    s = trainer.state
    loss, acc = train_one_epoch(trainer.step_model, trainer.train_split, s.optimizer, s.scheduler,
                                s.batch_size, s.gen, on_tick=lambda b, n: False)
    assert s.batches == 32
    # two reads for the whole epoch (loss and accuracy) plus the one divergence check
    assert sorted(n for n, _, _ in calls) == ["item", "item", "item"], calls
    assert 0 < loss < 10 and 0 <= acc <= 1
