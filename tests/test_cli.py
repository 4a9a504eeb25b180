"""The command line: every command works, and bad input is one line on stderr, nothing written."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from dlcore.evaluate import held_out_images
from dlcore.predict import predict


def dlcore(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "dlcore", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_datasets_lists_every_dataset_and_availability(tmp_path):
    out = dlcore("--data-root", tmp_path, "datasets", cwd=tmp_path)
    assert out.returncode == 0
    lines = {line.split()[0]: line for line in out.stdout.splitlines()[1:]}
    assert set(lines) == {"mnist-5k", "digits", "mnist", "fashion-mnist", "cifar10", "folder"}
    assert " yes " in lines["mnist-5k"] and " no " in lines["mnist"]
    assert "download" in lines["cifar10"]


def test_summary_ends_with_the_trainable_parameter_count(tmp_path):
    (tmp_path / "c.json").write_text("{}")
    out = dlcore("summary", "c.json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "trainable parameters: 569226"
    assert "BatchNorm1d" in out.stdout and "[-1, 512]" in out.stdout
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


def test_seed_cnn_summary_needs_no_downloaded_data(tmp_path):
    cfg = {"data": {"dataset": "cifar10"}, "model": {"arch": "cnn", "batchnorm": False,
           "blocks": [[16, 32], [64, 128], [128, 256]], "fc_dims": [2048, 256]}}
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    out = dlcore("summary", "c.json", cwd=tmp_path)
    assert out.stdout.strip().splitlines()[-1] == "trainable parameters: 9457962"


def test_runs_evaluate_and_predict(tiny_runs, tmp_path):
    runs, dnn, cnn = tiny_runs
    out = dlcore("runs", "--runs-dir", runs, cwd=tmp_path)
    assert out.returncode == 0
    assert dnn in out.stdout and "tiny dnn" in out.stdout and "completed" in out.stdout
    ev = dlcore("evaluate", runs / cnn, cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["classes"] == list("0123456789")
    img = np.full((200, 200), 255, np.uint8)
    img[30:170, 90:110] = 0                           # a dark "1" on white paper
    Image.fromarray(img).save(tmp_path / "one.png")
    # and three real test digits, which must get the predictions their evaluation recorded
    evaluation = json.loads((runs / cnn / "eval.json").read_text())
    digits = held_out_images(runs / cnn, [0, 1, 2])
    files = [tmp_path / "one.png"]
    for i, d in enumerate(digits):
        files.append(tmp_path / f"test{i}.png")
        Image.fromarray(d[0]).save(files[-1])
    out = dlcore("predict", runs / cnn, *files, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = [line.split("\t") for line in out.stdout.strip().splitlines()]
    assert [len(fields) for fields in lines] == [3, 3, 3, 3]   # image, class, probability
    expected = ["1"] + [evaluation["classes"][evaluation["predictions"][i]] for i in range(3)]
    assert [cls for _, cls, _ in lines] == expected
    results = predict(runs / cnn, files)
    for (path, cls, prob), f, r in zip(lines, files, results):
        assert path == str(f) and cls == r["class"]
        assert 0.1 <= float(prob) <= 1               # the largest of 10 probabilities
        assert prob == f"{r['probability']:.4f}"


@pytest.mark.parametrize("cfg, field", [
    ({"train": {"lr": -1}}, "train.lr"),
    ({"model": {"arch": "cnn", "hidden_dims": [3]}}, "model.hidden_dims"),
    ({"data": {"dataset": "imagenet"}}, "data.dataset"),
    ({"train": {"batch_size": 100000}}, "train.batch_size"),
    ({"data": {"dataset": "digits"}, "model": {"arch": "cnn", "blocks": [[4, 4]] * 5}}, "model.blocks"),
    ({"data": {"dataset": "mnist"}}, "mnist"),
])
def test_invalid_config_is_one_line_with_no_traceback_and_nothing_written(cfg, field, tmp_path):
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    out = dlcore("--data-root", tmp_path / "data", "train", "c.json", cwd=tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and field in lines[0], out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, message", [
    (["train"], "the following arguments are required: config"),
    (["fly"], "invalid choice"),
    (["train", "missing.json"], "does not exist"),
    (["evaluate", "nowhere"], "not a run directory"),
    (["train", "c.json", "--name", "x" * 300], "at most 80"),
])
def test_bad_arguments_are_one_clear_line(args, message, tmp_path):
    (tmp_path / "c.json").write_text("{}")
    out = dlcore(*args, cwd=tmp_path)
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and message in out.stderr, out.stderr
    assert not (tmp_path / "runs").exists()


def test_predicting_a_non_image_is_a_clear_error(tiny_runs, tmp_path):
    runs, dnn, _ = tiny_runs
    (tmp_path / "notes.png").write_text("hello")
    (tmp_path / "empty.png").write_bytes(b"")
    for f, msg in (("notes.png", "not an image"), ("empty.png", "empty")):
        out = dlcore("predict", runs / dnn, tmp_path / f, cwd=tmp_path)
        assert out.returncode == 2 and msg in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("command", ["datasets", "summary", "train", "evaluate", "predict", "runs"])
def test_every_command_has_help(command, tmp_path):
    out = dlcore(command, "--help", cwd=tmp_path)
    assert out.returncode == 0 and "usage:" in out.stdout


def test_devices_reports_this_machine_and_the_app_asks_a_worker(tmp_path):
    import torch

    from dlcore import jobs

    out = dlcore("devices", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    assert rep["auto"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert rep["cpu_threads"] == torch.get_num_threads() and rep["torch"] == torch.__version__
    # the web server's view comes from a short-lived process, so the server never opens CUDA
    assert jobs.device_report() == rep


def test_a_config_nested_100000_levels_deep_exits_2_with_one_line(tmp_path):
    (tmp_path / "c.json").write_text("[" * 100_000 + "]" * 100_000)
    out = dlcore("train", "c.json", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert out.stderr.splitlines() == ["error: config file 'c.json' is nested too deeply (more "
                                       "than 32 levels); a config has at most 4 levels"]
    assert "RecursionError" not in out.stderr and not (tmp_path / "runs").exists()
