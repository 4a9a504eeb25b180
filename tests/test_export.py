"""Exports of a run: the standalone PyTorch script, ONNX, safetensors, and their errors."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import warnings

import numpy as np
import onnx
import pytest
import torch

from conftest import train_quietly
from dlcore.cli import main
from dlcore.config import ConfigError, resolve_config
from dlcore.datasets import dataset_info
from dlcore.splits import load_splits
from dlcore.checkpoints import load_model
from dlcore.evaluate import predict_logits
from dlcore.export import (export_onnx_bytes, export_run, export_safetensors_bytes,
                           load_safetensors)
from dlcore.export import export_code
from dlcore.export_code import generate_code
from dlcore.models import build_model
from dlcore.checkpoints import CheckpointError

SMALL = {
    "dnn": {"arch": "dnn", "hidden_dims": [16], "init": "xavier"},
    "cnn": {"arch": "cnn", "blocks": [[4, 4]], "fc_dims": [8], "activation": "gelu"},
    "resnet": {"arch": "resnet", "stage_blocks": [1, 1], "base_width": 4},
    "rnn": {"arch": "rnn", "cell": "gru", "hidden_size": 8, "num_layers": 2,
            "bidirectional": True, "dropout": 0.1},
    "pretrained": {"arch": "pretrained", "backbone": "mobilenet_v3_small", "weights": "none",
                   "input_size": 32},
}


def import_script(code: str, path):
    path.write_text(code)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("arch", list(SMALL))
def test_generated_model_matches_the_engine(arch, tmp_path):
    cfg = resolve_config({"data": {"dataset": "digits"}, "model": SMALL[arch],
                          "train": {"schedule": "cosine", "optimizer": "sgd"}})
    info = dataset_info(cfg["data"])
    torch.manual_seed(7)
    engine = build_model(cfg["model"], info.shape, 10)
    ckpt = {"config": cfg, "classes": list(info.classes), "input_shape": list(info.shape),
            "mean": [0.3], "std": [0.4], "model_state": engine.state_dict()}
    mod = import_script(generate_code(ckpt, "test"), tmp_path / f"gen_{arch}.py")
    torch.manual_seed(7)
    script_model = mod.build_model()
    # same init from the same seed, same parameter names and count
    assert list(script_model.state_dict()) == list(engine.state_dict())
    for k, v in engine.state_dict().items():
        assert torch.equal(script_model.state_dict()[k], v), k
    script_model.load_state_dict(ckpt["model_state"], strict=True)
    x = torch.randn(3, *info.shape)
    with torch.no_grad():
        assert torch.allclose(script_model.eval()(x), engine.eval()(x), atol=1e-6)
    assert mod.MEAN == (0.3,) and mod.TRAIN["optimizer"] == "sgd"


def test_exported_script_trains_and_loads_the_runs_weights(tiny_runs, tmp_path):
    runs, _, cnn = tiny_runs
    script = tmp_path / "train_cnn.py"
    assert main(["export-code", str(runs / cnn), "--out", str(script)]) == 0
    out = subprocess.run([sys.executable, str(script), "--epochs", "1", "--limit", "100",
                          "--device", "cpu", "--data-root", str(tmp_path),
                          "--out", str(tmp_path / "m.pt")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "epoch   1/1" in out.stdout and "test accuracy" in out.stdout
    assert (tmp_path / "m.pt").exists()

    mod = import_script(script.read_text(), tmp_path / "again.py")
    engine, ckpt = load_model(runs / cnn / "best.pt")
    model = mod.build_model()
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in engine.parameters())
    state = torch.load(runs / cnn / "best.pt", map_location="cpu", weights_only=True)["model_state"]
    model.load_state_dict(state, strict=True)
    assert mod.MEAN == tuple(ckpt["mean"]) and mod.STD == tuple(ckpt["std"])
    x = torch.randint(0, 256, (4, *ckpt["input_shape"]), dtype=torch.uint8)
    with torch.no_grad():
        ours = model.eval()(mod.prepare(x, "cpu"))
    assert torch.allclose(ours, predict_logits(engine, x, ckpt["mean"], ckpt["std"], "cpu"),
                          atol=1e-5)


def test_export_code_prints_the_script(tiny_runs, capsys):
    runs, dnn, _ = tiny_runs
    assert main(["export-code", str(runs / dnn)]) == 0
    code = capsys.readouterr().out
    assert code == export_code(runs / dnn)
    compile(code, "script.py", "exec")
    assert "class DNN(nn.Module)" in code and "import dlcore" not in code


ONNX_RUNS = {   # tiny runs of the architectures tiny_runs does not have
    "resnet": {"arch": "resnet", "stage_blocks": [1, 1], "base_width": 4},
    "rnn": {"arch": "rnn", "cell": "gru", "hidden_size": 8, "num_layers": 2, "bidirectional": True},
}


@pytest.mark.parametrize("arch", ["dnn", "cnn", "resnet", "rnn"])
def test_onnx_gives_the_same_predictions(arch, tiny_runs, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    runs, dnn, cnn = tiny_runs
    if arch in ONNX_RUNS:
        cfg = {"data": {"dataset": "mnist-5k", "limit": 200}, "model": ONNX_RUNS[arch],
               "train": {"epochs": 1, "batch_size": 64, "seed": 4, "device": "cpu"}}
        run = train_quietly(cfg, tmp_path / "runs", name=arch)
    else:
        run = runs / {"dnn": dnn, "cnn": cnn}[arch]
    model, ckpt = load_model(run / "best.pt")
    assert ckpt["config"]["model"]["arch"] == arch
    splits = load_splits(ckpt["config"]["data"], ckpt["config"]["train"]["seed"])
    x = splits.test_x[:300]
    ref = torch.softmax(predict_logits(model, x, ckpt["mean"], ckpt["std"], "cpu"), 1).numpy()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = export_onnx_bytes(run)
    assert [str(w.message) for w in caught] == []          # nothing to hide: no warnings at all

    proto = onnx.load_from_string(data)
    assert [(o.domain, o.version) for o in proto.opset_import if o.domain == ""] == [("", 18)]
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in [*proto.graph.input, *proto.graph.output]}
    assert dims == {"image": ["batch", *ckpt["input_shape"]], "logits": ["batch", 10],
                    "probabilities": ["batch", 10]}

    session = ort.InferenceSession(data)
    for batch in (x, x[:1]):                                # any batch size, not just the example's
        logits, probs = session.run(None, {"image": (batch.float() / 255.0).numpy()})
        want = ref[:len(batch)]
        assert probs.shape == want.shape and logits.shape == want.shape
        assert (probs.argmax(1) == want.argmax(1)).all()
        assert np.abs(probs - want).max() < 1e-5
        assert np.allclose(probs.sum(1), 1, atol=1e-5)
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["classes"]) == ckpt["classes"]
    assert json.loads(meta["input_shape"]) == ckpt["input_shape"]
    assert json.loads(meta["mean"]) == ckpt["mean"] and meta["run"] == run.name


def test_safetensors_round_trip(tiny_runs, tmp_path):
    runs, dnn, cnn = tiny_runs
    out = tmp_path / "cnn.safetensors"
    assert main(["export", str(runs / cnn), "--format", "safetensors", "--out", str(out)]) == 0
    assert out.exists() and out.with_suffix(".json").exists()
    model, meta = load_safetensors(out)
    engine, ckpt = load_model(runs / cnn / "best.pt")
    assert meta["classes"] == ckpt["classes"] and meta["mean"] == ckpt["mean"]
    assert meta["config"] == ckpt["config"]
    x = torch.randn(5, *ckpt["input_shape"])
    with torch.no_grad():
        assert torch.equal(model(x), engine(x))
    weights, config = export_safetensors_bytes(runs / dnn)
    assert weights[:8] and json.loads(config)["config"]["model"]["arch"] == "dnn"


def test_export_onnx_default_path(tiny_runs):
    runs, dnn, _ = tiny_runs
    (path,) = export_run(runs / dnn, "onnx")
    assert path == runs / dnn / "export" / "model.onnx" and path.stat().st_size > 1000


def test_export_errors_are_one_line(tiny_runs, tmp_path, capsys):
    runs, dnn, cnn = tiny_runs
    assert main(["export", str(runs / dnn), "--format", "tflite"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "onnx, safetensors" in err
    with pytest.raises(ConfigError):
        export_run(runs / dnn, "pickle")

    for name in ("best.pt", "last.pt"):
        (runs / dnn / name).unlink()
    for argv in (["export", str(runs / dnn), "--format", "onnx"], ["export-code", str(runs / dnn)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "no checkpoint" in err
    with pytest.raises(CheckpointError):
        export_code(runs / dnn)

    (runs / cnn / "last.pt").unlink()
    data = (runs / cnn / "best.pt").read_bytes()
    (runs / cnn / "best.pt").write_bytes(data[: len(data) // 2])
    for fmt in ("onnx", "safetensors"):
        assert main(["export", str(runs / cnn), "--format", fmt]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "best.pt" in err
    assert main(["export", str(tmp_path), "--format", "onnx"]) == 2
    capsys.readouterr()


def test_damaged_safetensors_is_a_checkpoint_error(tiny_runs, tmp_path):
    runs, dnn, _ = tiny_runs
    weights, config = export_safetensors_bytes(runs / dnn)
    (tmp_path / "m.safetensors").write_bytes(weights[: len(weights) // 3])
    (tmp_path / "m.json").write_bytes(config)
    with pytest.raises(CheckpointError):
        load_safetensors(tmp_path / "m.safetensors")


@pytest.mark.parametrize("out", ["model.json", "model.JSON"])
def test_safetensors_weights_never_share_a_name_with_their_config(out, tiny_runs, tmp_path, capsys):
    runs, dnn, _ = tiny_runs
    assert main(["export", str(runs / dnn), "--format", "safetensors",
                 "--out", str(tmp_path / out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and ".json" in err and "model.safetensors" in err
    assert list(tmp_path.glob("model*")) == []                # nothing half-written

    plain = tmp_path / "model"                                  # no suffix: model + model.json
    assert main(["export", str(runs / dnn), "--format", "safetensors", "--out", str(plain)]) == 0
    assert capsys.readouterr().out.split() == [str(plain), str(plain) + ".json"]
    model, meta = load_safetensors(plain)
    assert meta["config"]["model"]["arch"] == "dnn"
    assert plain.read_bytes()[:8] != plain.with_suffix(".json").read_bytes()[:8]


@pytest.mark.parametrize("fmt, out", [("onnx", "best.pt"), ("safetensors", "last.pt"),
                                      ("safetensors", "config.safetensors"),
                                      ("onnx", "metrics.jsonl")])
def test_an_export_never_overwrites_the_runs_own_files(fmt, out, tiny_runs, capsys):
    runs, dnn, _ = tiny_runs
    before = {p.name: p.read_bytes() for p in (runs / dnn).iterdir() if p.is_file()}
    assert main(["export", str(runs / dnn), "--format", fmt, "--out", str(runs / dnn / out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "would overwrite the run's own" in err
    after = {p.name: p.read_bytes() for p in (runs / dnn).iterdir() if p.is_file()}
    assert after == before


def test_exported_code_never_overwrites_the_runs_own_files(tiny_runs, capsys):
    runs, dnn, _ = tiny_runs
    before = (runs / dnn / "config.json").read_bytes()
    assert main(["export-code", str(runs / dnn), "--out", str(runs / dnn / "config.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "would overwrite the run's own config.json" in err
    assert (runs / dnn / "config.json").read_bytes() == before
