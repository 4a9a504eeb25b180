"""The GPU fast paths, run on the CPU where they can be, and the benchmark command."""
import json
import os
import subprocess
import sys

import pytest
import torch

import dlcore.bench as bench
import dlcore.devices as devices_mod
from conftest import ROOT, TINY, train_quietly
from dlcore.runs import read_metrics
from dlcore.devices import autocast_dtype


def with_train(**kw):
    cfg = json.loads(json.dumps(TINY))
    cfg["train"].update(kw)
    return cfg


def test_bf16_autocast_trains_and_evaluates(tmp_path):
    run = train_quietly(with_train(precision="bf16"), tmp_path)
    rows = read_metrics(run)
    assert rows[-1]["val_acc"] > 0.3
    assert json.loads((run / "eval.json").read_text())["accuracy"] > 0.3


def test_precision_auto_is_fp32_on_cpu_and_bf16_on_cuda(monkeypatch):
    assert autocast_dtype("auto", torch.device("cpu")) is None
    assert autocast_dtype("fp32", torch.device("cpu")) is None
    assert autocast_dtype("bf16", torch.device("cpu")) is torch.bfloat16
    cuda = torch.device("cuda")
    # the decision on a GPU, by construction: bf16 where the card computes it, else fp32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert autocast_dtype("auto", cuda) is torch.bfloat16
    assert autocast_dtype("fp32", cuda) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert autocast_dtype("auto", cuda) is None


def test_cuda_gets_channels_last_convolutions_and_autotuning():
    from dlcore.devices import tune_for, uses_channels_last

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert [uses_channels_last(a, cuda) for a in ("cnn", "resnet", "pretrained", "dnn", "rnn")] \
        == [True, True, True, False, False]
    assert not uses_channels_last("cnn", cpu)
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32)
    try:
        cudnn.benchmark = cudnn.allow_tf32 = matmul.allow_tf32 = False
        tune_for(cpu)
        assert not cudnn.benchmark and not matmul.allow_tf32
        tune_for(cuda)
        assert cudnn.benchmark and cudnn.allow_tf32 and matmul.allow_tf32
    finally:
        cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = saved


def test_channels_last_convolutions_give_the_same_result(tmp_path, monkeypatch):
    cfg = {"data": {"limit": 300}, "model": {"arch": "cnn", "blocks": [[8, 8]], "fc_dims": [16]},
           "train": {"epochs": 1, "batch_size": 50, "device": "cpu"}}
    plain = read_metrics(train_quietly(cfg, tmp_path / "a"))
    monkeypatch.setattr(devices_mod, "uses_channels_last", lambda arch, device: True)
    nhwc = read_metrics(train_quietly(cfg, tmp_path / "b"))
    assert nhwc[0]["train_loss"] == pytest.approx(plain[0]["train_loss"], rel=1e-3)
    assert nhwc[0]["val_acc"] == pytest.approx(plain[0]["val_acc"], abs=0.02)


@pytest.mark.skipif(os.environ.get("DLCORE_SKIP_COMPILE") == "1", reason="DLCORE_SKIP_COMPILE=1")
def test_compiled_model_trains_and_saves_plain_weights(tmp_path):
    run = train_quietly(with_train(compile=True, epochs=1), tmp_path)
    state = torch.load(run / "best.pt", weights_only=True)["model_state"]
    assert not any(k.startswith("_orig_mod") for k in state)


def test_bench_prints_a_table_and_writes_the_json_figures(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "dlcore", "bench", "--arch", "dnn", "--seconds",
                          "0.3", "--json", str(tmp_path / "b.json")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "torch" in out.stdout and "dnn" in out.stdout and "x" in out.stdout
    figures = json.loads((tmp_path / "b.json").read_text())
    assert figures["device"] == "cpu" and figures["torch"] == torch.__version__
    dnn = figures["dnn"]
    assert dnn["batch_size"] == 32 and dnn["default_batch_size"] == 256
    for k in ("tutorial_samples_per_s", "engine_samples_per_s", "engine_default_samples_per_s"):
        assert dnn[k] > 0


def test_time_to_accuracy_reports_training_seconds(monkeypatch):
    tiny = {"data": {"dataset": "mnist-5k", "limit": 600}, "model": {"arch": "dnn", "hidden_dims": [64]},
            "train": {"batch_size": 64, "epochs": 3, "seed": 0}}
    monkeypatch.setattr(bench, "TTA_CONFIG", tiny)
    r = bench.time_to_accuracy(0.5, torch.device("cpu"), log=lambda s: None)
    assert r["reached"] and 0 < r["seconds"] and r["epochs"] <= 3
    r = bench.time_to_accuracy(0.999, torch.device("cpu"), max_epochs=1, log=lambda s: None)
    assert not r["reached"] and r["epochs"] == 1


def test_bench_refuses_bad_arguments(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for args, msg in ((["--arch", "vit"], "invalid choice"), (["--seconds", "-1"], "--seconds"),
                      (["--time-to-accuracy", "92.5"], "between 0 and 1")):
        out = subprocess.run([sys.executable, "-m", "dlcore", "bench", *args], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and msg in out.stderr and len(out.stderr.strip().splitlines()) == 1
