"""TensorBoard event files of a run, read back with TensorBoard's own reader."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dlcore import tblog
from dlcore.runfiles import read_json

from conftest import TINY, train_quietly

pytest.importorskip("tensorboard")


def accumulator(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def test_scalars_image_and_hparams(tiny_runs):
    from tensorboard.plugins.hparams import plugin_data_pb2

    runs, dnn, _ = tiny_runs
    acc = accumulator(runs / dnn)
    tags = acc.Tags()
    metrics = [json.loads(line) for line in (runs / dnn / "metrics.jsonl").read_text().splitlines()]
    for tag, key in (("loss/train", "train_loss"), ("loss/val", "val_loss"),
                     ("accuracy/train", "train_acc"), ("accuracy/val", "val_acc"), ("lr", "lr")):
        assert tag in tags["scalars"]
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [m["epoch"] for m in metrics]
        assert np.allclose([e.value for e in events], [m[key] for m in metrics], rtol=1e-5)

    assert "test/confusion_matrix" in tags["images"]
    (img,) = acc.Images("test/confusion_matrix")
    assert img.width > 50 and img.height > 50 and img.encoded_image_string[:4] == b"\x89PNG"
    evaluation = read_json(runs / dnn / "eval.json")
    assert acc.Scalars("test/accuracy")[0].value == pytest.approx(evaluation["accuracy"])

    content = acc.PluginTagToContent("hparams")
    data = plugin_data_pb2.HParamsPluginData()
    data.ParseFromString(content["_hparams_/session_start_info"])
    hp = data.session_start_info.hparams
    assert hp["train.lr"].number_value == pytest.approx(0.001)
    assert hp["model.arch"].string_value == "dnn"
    assert hp["model.hidden_dims"].string_value == "[64, 32]"
    exp = plugin_data_pb2.HParamsPluginData()
    exp.ParseFromString(content["_hparams_/experiment"])
    assert "test/accuracy" in [m.name.tag for m in exp.experiment.metric_infos]


def test_training_works_without_tensorboard(empty_runs, monkeypatch):
    monkeypatch.setattr(tblog, "available", lambda: (False, "ImportError: no tensorboard"))
    cfg = {**TINY, "train": {**TINY["train"], "epochs": 2}}
    run = train_quietly(cfg, empty_runs)
    status = read_json(run / "status.json")
    assert status["state"] == "completed"
    notes = [n for n in status["notes"] if "TensorBoard" in n]
    assert len(notes) == 1 and "pip install tensorboard" in notes[0]
    assert not (run / "tb").exists()


def test_confusion_image():
    img = tblog.confusion_image(np.array([[5, 1, 0], [0, 3, 2], [1, 0, 9]]), ["a", "b", "c"])
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert img.shape[0] >= 3 * 28 and (img < 255).any()
