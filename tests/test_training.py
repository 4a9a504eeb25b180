"""The training loop: learns, reproduces, stops early and on request, writes a consistent run."""
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, TINY, train_quietly, wait_for
from dlcore.config import ConfigError, INITS, OPTIMIZERS, SCHEDULES
from dlcore.checkpoints import load_checkpoint, load_model
from dlcore.runs import RunStore, read_metrics
from dlcore.devices import pick_device
from dlcore.optim import EarlyStopping
from datafiles import write_cifar_binary


def cfg_with(base=TINY, **sections):
    out = json.loads(json.dumps(base))
    for sec, vals in sections.items():
        if sec == "model" and "arch" in vals:
            out[sec] = dict(vals)            # another architecture: none of the old keys apply
        else:
            out[sec].update(vals)
    return out


def start_worker(cfg, runs_dir, tmp_path, *extra):
    p = tmp_path / "cfg.json"
    p.write_text(json.dumps(cfg))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "dlcore", "train", str(p), "--runs-dir",
                             str(runs_dir), *extra], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_progress(runs_dir, proc, timeout=300):
    return wait_for(lambda: next((r for r in RunStore(runs_dir).list() if r.progress or r.epoch),
                                 None), worker=proc, timeout=timeout, what="progress")


def test_default_config_reaches_92_percent_from_the_command_line(tmp_path):
    """`python -m dlcore train {}`: mnist-5k and the tutorials' DNN, the issue's target."""
    (tmp_path / "c.json").write_text("{}")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "dlcore", "train", "c.json"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    run_dir = Path(tmp_path / out.stdout.strip().splitlines()[-1])
    assert run_dir.parent == tmp_path / "runs"
    ev = json.loads((run_dir / "eval.json").read_text())
    assert ev["accuracy"] >= 0.92
    assert "epoch   1/10" in out.stdout


def test_a_cnn_reaches_95_percent(tmp_path):
    cfg = {"model": {"arch": "cnn", "blocks": [[16, 32], [32, 64]], "fc_dims": [32]},
           "train": {"epochs": 2, "batch_size": 32, "device": "cpu"}}
    run = train_quietly(cfg, tmp_path)
    assert json.loads((run / "eval.json").read_text())["accuracy"] >= 0.95


@pytest.mark.parametrize("arch", ["dnn", "cnn", "resnet", "rnn"])
def test_every_arch_trains_an_epoch_on_mnist_5k(arch, tmp_path):
    model = {"dnn": {"hidden_dims": [32]}, "cnn": {"blocks": [[8, 8]], "fc_dims": [16]},
             "resnet": {"stage_blocks": [1, 1], "base_width": 8},
             "rnn": {"cell": "gru", "hidden_size": 32}}[arch]
    run = train_quietly(cfg_with(model={"arch": arch, **model}, train={"epochs": 1},
                                 data={"limit": 300}), tmp_path)
    assert len(read_metrics(run)) == 1
    assert RunStore(tmp_path).get(run.name).state == "completed"


@pytest.mark.parametrize("arch", ["dnn", "cnn", "resnet", "rnn"])
def test_every_arch_trains_an_epoch_on_a_cifar_shaped_set(arch, tmp_path):
    write_cifar_binary(tmp_path / "data", per_batch=40, n_test=40)
    model = {"dnn": {"hidden_dims": [32]}, "cnn": {"blocks": [[8, 8], [8, 8]], "fc_dims": [16]},
             "resnet": {"stage_blocks": [1, 1], "base_width": 8},
             "rnn": {"cell": "lstm", "hidden_size": 16, "bidirectional": True}}[arch]
    cfg = cfg_with(model={"arch": arch, **model}, train={"epochs": 1, "batch_size": 32},
                   data={"dataset": "cifar10", "limit": None,
                         "augment": {"crop_padding": 4, "hflip": True, "rotation": 5}})
    run = train_quietly(cfg, tmp_path / "runs", data_root=tmp_path / "data")
    ev = json.loads((run / "eval.json").read_text())
    assert ev["n_test"] == 40 and ev["classes"][0] == "airplane"


@pytest.mark.parametrize("init", INITS)
def test_every_init_method_trains(init, tmp_path):
    run = train_quietly(cfg_with(model={"init": init}, train={"epochs": 3, "lr": 0.003}), tmp_path)
    rows = read_metrics(run)
    losses = [r["train_loss"] for r in rows]
    if init == "zeros":     # every hidden unit is 0: the output is uniform, the loss ln(10)
        assert losses == pytest.approx([math.log(10)] * 3, abs=2e-3)
        return
    assert losses[2] < losses[0] * 0.9, losses           # it learns
    if init != "gaussian":   # std-1 weights saturate: it learns, but slowly
        assert rows[-1]["val_acc"] >= 0.5, rows


def test_zero_init_does_not_learn_but_kaiming_does(tmp_path):
    def val_acc(init):
        cfg = cfg_with(model={"init": init, "hidden_dims": [128, 64]},
                       data={"limit": 1500}, train={"epochs": 3, "patience": 0})
        return read_metrics(train_quietly(cfg, tmp_path))[-1]["val_acc"]

    assert val_acc("zeros") <= 0.2          # every hidden unit stays 0: chance level
    assert val_acc("kaiming") >= 0.8


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_optimizers_and_schedules(optimizer, schedule, tmp_path):
    lr = 0.03 if optimizer == "sgd" else 0.003
    run = train_quietly(cfg_with(train={"optimizer": optimizer, "schedule": schedule, "lr": lr,
                                        "epochs": 2, "batch_size": 32},
                                 data={"limit": 1000}), tmp_path)
    rows = read_metrics(run)
    assert rows[-1]["val_acc"] > 0.6
    if schedule != "none":
        assert rows[0]["lr"] != rows[1]["lr"]


def test_same_seed_gives_the_same_result_on_cpu(tmp_path):
    a = read_metrics(train_quietly(TINY, tmp_path / "a"))
    b = read_metrics(train_quietly(TINY, tmp_path / "b"))
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    assert strip(a) == strip(b)
    c = read_metrics(train_quietly(cfg_with(train={"seed": 7}), tmp_path / "c"))
    assert strip(c) != strip(a)


def test_early_stopping_counter_resets_on_improvement():
    es = EarlyStopping(patience=2)
    assert es.step(1.0) and not es.should_stop
    assert not es.step(1.1) and not es.should_stop
    assert es.step(0.9) and es.bad_epochs == 0       # reset
    es.step(0.95)
    es.step(0.99)
    assert es.should_stop
    assert not EarlyStopping(0).should_stop


def test_early_stopping_ends_the_run_and_best_is_the_lowest_val_loss(tmp_path, monkeypatch):
    import dlcore.trainer as trainer
    from dlcore.runs import RunStore
    from dlcore.summaries import run_progress

    seen = []                    # what the sidebar says while the best checkpoint is tested

    def final_evaluation(run_dir, *args):
        seen.append(run_progress(RunStore(run_dir.parent).get(run_dir.name)))
        return real(run_dir, *args)

    real = trainer.final_evaluation
    monkeypatch.setattr(trainer, "final_evaluation", final_evaluation)
    cfg = cfg_with(train={"epochs": 30, "patience": 1, "lr": 0.01}, data={"limit": 200})
    run = train_quietly(cfg, tmp_path)
    assert seen == [(1.0, f"{run.name}: testing the best checkpoint")]
    rows = read_metrics(run)
    assert len(rows) < 30
    best = min(rows, key=lambda r: r["val_loss"])
    assert load_checkpoint(run / "best.pt")["epoch"] == best["epoch"]
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "completed" and status["best_epoch"] == best["epoch"]


def test_run_directory_holds_the_contract_files(tmp_path):
    run = train_quietly(TINY, tmp_path, name="my run")
    assert run.name.endswith("-my-run")
    for f in ("config.json", "status.json", "metrics.jsonl", "best.pt", "last.pt", "eval.json"):
        assert (run / f).exists(), f
    st = json.loads((run / "status.json").read_text())
    assert {"state", "error", "pid", "device", "epoch", "started_at", "finished_at"} <= set(st)
    assert st["device"] == "cpu" and st["epoch"] == 2
    row = read_metrics(run)[0]
    assert set(row) == {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"}
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["batchnorm"] is True         # defaults filled in
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_checkpoint_rebuilds_its_model_and_predicts_the_same(tmp_path):
    run = train_quietly(TINY, tmp_path)
    model, ckpt = load_model(run / "best.pt")
    model2, _ = load_model(run / "best.pt")
    x = torch.randn(5, 1, 28, 28)
    assert torch.equal(model(x), model2(x))
    assert ckpt["classes"] == list("0123456789") and len(ckpt["mean"]) == 1


def test_bad_input_writes_nothing(tmp_path):
    with pytest.raises(ConfigError, match="train.batch_size: 5000 is larger"):
        train_quietly(cfg_with(train={"batch_size": 5000}), tmp_path)
    with pytest.raises(ConfigError, match="train.epochs"):
        train_quietly(cfg_with(train={"epochs": 0}), tmp_path)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_asking_for_an_absent_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="train.device: cuda .* available: auto, cpu"):
        pick_device("cuda")
    assert pick_device("auto").type in ("cpu", "mps")


@pytest.mark.parametrize("how", ["stop-file", "sigterm"])
def test_stop_request_ends_the_run_with_a_loadable_checkpoint(how, tmp_path):
    cfg = cfg_with(data={"limit": None}, model={"hidden_dims": [256, 256]},
                   train={"epochs": 200, "batch_size": 16, "patience": 0})
    runs = tmp_path / "runs"
    proc = start_worker(cfg, runs, tmp_path)
    try:
        info = wait_for_progress(runs, proc)
        if how == "stop-file":
            RunStore(runs).request_stop(info.id)
        else:
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, proc.stderr.read()
    run = RunStore(runs).get(info.id)
    assert run.state == "stopped" and run.finished_at
    model, ckpt = load_model(run.path / "last.pt")
    assert "optimizer_state" in ckpt
    # it stopped in the epoch it was in (or at its end), not epochs later
    assert ckpt["epoch"] <= info.epoch + 1 and run.epoch <= info.epoch + 1
    read_metrics(run.path)              # whole lines only


def test_progress_within_an_epoch_is_visible_in_status(tmp_path):
    cfg = cfg_with(data={"limit": None}, model={"hidden_dims": [256, 256]},
                   train={"epochs": 50, "batch_size": 2})   # epochs long enough to report
    runs = tmp_path / "runs"
    proc = start_worker(cfg, runs, tmp_path)
    try:
        progress = wait_for(lambda: next((r.progress for r in RunStore(runs).list() if r.progress),
                                         None), worker=proc, what="in-epoch progress")
        assert 0 < progress["fraction"] <= 1 and progress["batches"] == 1600
    finally:
        proc.terminate()
        proc.wait(timeout=30)
