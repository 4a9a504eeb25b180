"""Untrusted files stay data: run directories, checkpoints and paths shared by someone else.

A run directory travels (a classmate, a cluster, a backup): nothing in its files or its name
may run as code, and a damaged value is one clear message naming the field.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from dlcore.cli import main
from dlcore.checkpoints import CheckpointError, save_checkpoint

PAYLOAD = 'x""";open("marker","w");"""'
NAME_PAYLOADS = ['run"""\nopen("marker","w")\n"""', "run'''\nopen('marker','w')#\\",
                 'x""";open("marker","w");"""']


def tampered_run(tiny_runs, dirname, change):
    """A copy of the tiny DNN run named `dirname`, whose config.json and best.pt went through
    `change(ckpt)` (a weights-only checkpoint saved the engine's way)."""
    runs, dnn, _ = tiny_runs
    run = runs / dirname
    shutil.copytree(runs / dnn, run)
    (run / "last.pt").unlink()
    ckpt = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
    change(ckpt)
    save_checkpoint(run / "best.pt", ckpt)
    (run / "config.json").write_text(json.dumps(ckpt["config"]))
    return run


def export_and_run_help(run, tmp_path, capsys):
    """Export the run's script and run it with --help in an empty folder.

    Returns "refused" (export-code said no in one line) or "exported" (the script ran)."""
    script = tmp_path / "train_it.py"
    rc = main(["export-code", str(run), "--out", str(script)])
    err = capsys.readouterr().err.strip()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    if rc != 0:
        assert rc == 2 and err.count("\n") == 0 and err.startswith("error: "), err
        assert not script.exists()
        return "refused"
    out = subprocess.run([sys.executable, str(script), "--help"], cwd=cwd, capture_output=True,
                         text=True, timeout=120)
    assert not (cwd / "marker").exists(), "the exported script ran code from the run's files"
    assert list(cwd.iterdir()) == []
    assert out.returncode == 0, out.stderr[-2000:]
    assert "--epochs" in out.stdout
    return "exported"


def _set(section, key, value):
    def change(ckpt):
        ckpt["config"][section][key] = value
    return change


def _classes(ckpt):
    ckpt["classes"] = [PAYLOAD, 'a"""b', "c\nd", "\\", "'''", *ckpt["classes"][5:]]


def _backbone(ckpt):
    ckpt["config"]["model"] = {"arch": "pretrained", "backbone": PAYLOAD, "weights": "none"}


@pytest.mark.parametrize("change, outcome", [
    (_set("data", "dataset", PAYLOAD), "refused"),        # not a dataset: the config is damaged
    (_set("model", "activation", PAYLOAD), "refused"),
    (_backbone, "refused"),
    (_set("data", "root", PAYLOAD), "refused"),           # only for dataset "folder"
    (_set("train", 'evil\nkey";open("marker","w")#', 1), "refused"),
    (_classes, "exported"),                               # any text is a fine class name
], ids=["dataset", "activation", "backbone", "data-root", "key", "classes"])
def test_checkpoint_strings_never_run_as_code_in_the_exported_script(change, outcome, tiny_runs,
                                                                     tmp_path, capsys):
    run = tampered_run(tiny_runs, "shared-run", change)
    assert export_and_run_help(run, tmp_path, capsys) == outcome


@pytest.mark.parametrize("dirname", NAME_PAYLOADS, ids=["double-quotes", "single-quotes", "issue"])
def test_a_run_directory_name_never_runs_as_code_in_the_exported_script(dirname, tiny_runs,
                                                                        tmp_path, capsys):
    run = tampered_run(tiny_runs, dirname, lambda ckpt: None)
    (run / "meta.json").write_text(json.dumps({"name": PAYLOAD, "created": 0}))
    assert export_and_run_help(run, tmp_path, capsys) == "exported"


def test_class_names_reach_the_script_as_data(tiny_runs, tmp_path):
    from dlcore.export import export_code

    run = tampered_run(tiny_runs, "classes", _classes)
    namespace = {}
    code = export_code(run)
    exec(compile(code.split("\n\nclass ConfigError")[0], "script", "exec"), namespace)
    assert namespace["CLASSES"][:5] == [PAYLOAD, 'a"""b', "c\nd", "\\", "'''"]


def _mean(ckpt):
    ckpt["mean"] = [float("nan")]


def _shape(ckpt):
    ckpt["input_shape"] = ["1", 28, 28]


def _classes_not_text(ckpt):
    ckpt["classes"] = list(range(10))


@pytest.mark.parametrize("change, field", [
    (_set("model", "hidden_dims", [-1]), "model.hidden_dims[0]"),
    (_set("model", "activation", PAYLOAD), "model.activation"),
    (_set("train", "lr", -1.0), "train.lr"),
    (_mean, "mean"), (_shape, "input_shape"), (_classes_not_text, "classes"),
])
def test_a_checkpoint_with_an_invalid_config_is_damaged_and_says_which_field(change, field,
                                                                            tiny_runs, capsys):
    from dlcore.checkpoints import load_model
    from dlcore.predict import predict

    run = tampered_run(tiny_runs, "damaged", change)
    with pytest.raises(CheckpointError, match="damaged") as e:
        load_model(run / "best.pt")
    assert str(e.value).startswith("best.pt: damaged checkpoint") and field in str(e.value)
    assert "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match="damaged"):        # the Draw page's path
        predict(run, [torch.zeros(28, 28).numpy()])
    image = run / "digit.png"
    from PIL import Image
    Image.new("L", (28, 28)).save(image)
    assert main(["predict", str(run), str(image)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and field in err


def test_a_sound_checkpoint_still_loads_with_its_resolved_config(tiny_runs):
    from dlcore.checkpoints import load_model

    runs, dnn, _ = tiny_runs
    saved = torch.load(runs / dnn / "best.pt", map_location="cpu", weights_only=True)
    model, ckpt = load_model(runs / dnn / "best.pt")
    assert ckpt["config"] == saved["config"] and ckpt["classes"] == saved["classes"]
    assert ckpt["mean"] == saved["mean"] and ckpt["input_shape"] == [1, 28, 28]


# ---------------------------------------------------------------- image files

class CountingFile:
    """A file whose reads are counted; a read without a bound (or past the limit) fails."""

    def __init__(self, f, reads, limit):
        self.f, self.reads, self.limit = f, reads, limit

    def read(self, n=-1):
        if n is None or n < 0 or n > self.limit + 1:
            raise AssertionError(f"read({n}) of an untrusted file: unbounded")
        data = self.f.read(n)
        self.reads.append(len(data))
        return data

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.fixture
def counted_reads(monkeypatch):
    """Count every byte read from the files in `watched` (through open, io.open or pathlib)."""
    import builtins
    import io
    from pathlib import Path

    from dlcore import images

    real_open, reads, watched = io.open, [], set()

    def counting_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        if isinstance(file, (str, Path)) and Path(file) in watched:
            return CountingFile(f, reads, images.MAX_BYTES)
        return f

    monkeypatch.setattr(io, "open", counting_open)
    monkeypatch.setattr(builtins, "open", counting_open)
    return reads, watched


def test_a_huge_image_file_is_refused_before_any_of_it_is_read(tmp_path, counted_reads):
    from dlcore.images import ImageError, read_image_file

    reads, watched = counted_reads
    huge = tmp_path / "scan.png"
    with open(huge, "wb") as f:
        f.truncate(3 * 2**30)                  # 3 GB, sparse: no disk used
    watched.add(huge)
    with pytest.raises(ImageError, match=r"3072 MB; at most 20 MB") as e:
        read_image_file(huge)
    assert str(e.value).startswith(str(huge)) and sum(reads) == 0

    small = tmp_path / "digit.png"
    from PIL import Image
    Image.new("L", (28, 28)).save(small)
    want = small.read_bytes()
    watched.add(small)
    assert read_image_file(small) == want
    assert 0 < sum(reads) == small.stat().st_size


def test_predict_refuses_a_huge_image_file_without_reading_it(tiny_runs, tmp_path, counted_reads,
                                                               capsys):
    from dlcore.images import ImageError
    from dlcore.predict import predict

    runs, dnn, _ = tiny_runs
    reads, watched = counted_reads
    huge = tmp_path / "huge.jpg"
    with open(huge, "wb") as f:
        f.truncate(3 * 2**30)
    watched.add(huge)
    with pytest.raises(ImageError, match="at most 20 MB"):
        predict(runs / dnn, [huge])
    assert main(["predict", str(runs / dnn), str(huge)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "at most 20 MB" in err
    assert sum(reads) == 0


def test_a_special_file_is_not_read_as_an_image():
    from dlcore.images import ImageError, read_image_file

    with pytest.raises(ImageError, match="not a regular file"):
        read_image_file("/dev/zero")           # endless: its size says 0


def test_an_upload_larger_than_the_limit_is_refused_by_its_size():
    from dlcore.images import ImageError, open_image

    class Upload:                              # what streamlit's UploadedFile offers
        size, name, asked = 3 * 2**30, "huge.png", []

        def read(self, n=-1):
            self.asked.append(n)
            return b""

    with pytest.raises(ImageError, match="huge.png: the file is 3072 MB"):
        open_image(Upload(), name="huge.png")
    assert Upload.asked == []


# ---------------------------------------------------------------- paths no file system can hold

LONG = "/tmp/" + "a" * 300


def test_a_300_character_weights_path_is_a_config_error_where_the_model_is_built():
    from dlcore.config import ConfigError
    from dlcore.models import build_model

    section = {"arch": "pretrained", "backbone": "resnet18", "weights": LONG + ".pth",
               "freeze": "backbone", "input_size": 32, "dropout": 0.0, "init": "default"}
    with pytest.raises(ConfigError, match=r"^model\.weights: .*allowed: at most 255 bytes"):
        build_model(section, (1, 28, 28), 10)


def test_a_300_character_folder_is_a_clear_error_for_the_model_page():
    from dlcore.config import ConfigError
    from dlcore.datasets import DatasetUnavailable, dataset_info

    # the Data page keeps the folder in the working config even while it is invalid
    with pytest.raises((ConfigError, DatasetUnavailable), match="data.root"):
        dataset_info({"dataset": "folder", "root": LONG, "image_size": 32})


def test_a_300_character_data_root_leaves_datasets_unavailable_not_crashed():
    from dlcore.datasets import availability

    ok, how = availability("mnist", LONG)
    assert not ok and "download" in how
