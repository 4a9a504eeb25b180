"""What the pages show, worked out in dlcore: each summary from known inputs."""
import json
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from dlcore import summaries as s
from dlcore.runs import RunInfo, RunStore
from dlcore.splits import load_splits


def run(**kw):
    return RunInfo(id=kw.pop("id", "r1"), path=kw.pop("path", Path("/nowhere/r1")), **kw)


# ---------------------------------------------------------------- Evaluate

@pytest.mark.parametrize("cm, cell", [
    ([[5, 1, 0], [0, 5, 7], [3, 0, 5]], (1, 2)),
    ([[5, 2], [2, 5]], (0, 1)),                 # a tie: the first in reading order
    ([[5, 0], [0, 5]], (0, 1)),                 # no error at all
    ([[9]], (0, 0)),                            # one class
])
def test_largest_confusion_is_the_biggest_off_diagonal_cell(cm, cell):
    assert s.largest_confusion(cm) == cell


def test_a_damaged_run_offers_re_evaluation_only_with_a_checkpoint():
    damaged = s.evaluation_state(run(damaged="eval.json is damaged (x)", has_best=True))
    assert damaged["level"] == "error" and "eval.json is damaged" in damaged["message"]
    assert damaged["action"] == "Evaluate again" and damaged["note"]
    bare = s.evaluation_state(run(damaged="status.json is damaged (y)"))
    assert bare["action"] is None and bare["note"] is None


def test_evaluation_state_follows_the_run():
    assert s.evaluation_state(run(state="running", has_best=True))["action"] is None
    assert s.evaluation_state(run(state="completed", has_last=True))["action"] == "Evaluate now"
    none = s.evaluation_state(run(state="stopped"))
    assert none["level"] == "warning" and "no checkpoint" in none["message"]
    assert s.evaluation_state(run(state="completed", has_best=True, has_eval=True)) is None


def test_metric_tiles_format_numbers_and_say_n_a_for_the_rest():
    ev = {"accuracy": 0.91234, "precision_macro": 1, "recall_macro": 0.5, "f1_macro": 0.25,
          "roc_auc_macro": None}
    tiles = s.metric_tiles(ev)
    assert [(label, value) for label, value, _ in tiles] == [
        ("Accuracy", "0.9123"), ("Precision (macro)", "1.0000"), ("Recall (macro)", "0.5000"),
        ("F1 (macro)", "0.2500"), ("ROC-AUC (macro)", "n/a")]
    assert "one-vs-rest" in tiles[-1][2]
    assert s.eval_caption({"n_test": 10, "checkpoint": "best.pt", "epoch": 3}) == \
        "10 test images · checkpoint best.pt (epoch 3)"


def test_downloads_of_an_evaluated_run_are_read_only_on_click(tiny_runs):
    runs, dnn, _ = tiny_runs
    files = s.run_downloads(runs / dnn, dnn)
    assert [f["label"] for f in files] == [
        "eval.json", files[1]["label"], "PyTorch code (.py)", "ONNX", "safetensors + config"]
    assert files[1]["label"].startswith("best.pt (")
    assert all(callable(f["data"]) for f in files)
    assert files[0]["data"]() == (runs / dnn / "eval.json").read_bytes()
    assert files[1]["data"]() == (runs / dnn / "best.pt").read_bytes()
    assert files[1]["label"].endswith(" MB)") and files[1]["file_name"] == f"{dnn}-best.pt"
    assert "class DNN(nn.Module)" in files[2]["data"]()


def test_downloads_fall_back_to_the_last_checkpoint_and_need_one(tiny_runs):
    runs, dnn, _ = tiny_runs
    (runs / dnn / "best.pt").unlink()
    (runs / dnn / "eval.json").unlink()
    assert [f["file_name"] for f in s.run_downloads(runs / dnn, dnn)][0] == f"{dnn}-last.pt"
    (runs / dnn / "last.pt").unlink()
    assert s.run_downloads(runs / dnn, dnn) == []


def test_eval_stamp_changes_when_eval_json_is_rewritten(tmp_path):
    assert s.eval_stamp(tmp_path) == 0.0
    (tmp_path / "eval.json").write_text("{}")
    assert s.eval_stamp(tmp_path) > 0


# ---------------------------------------------------------------- progress and sweeps

def test_run_progress_counts_the_current_epochs_batches():
    r = run(name="demo", epoch=1, epochs=4, progress={"epoch": 2, "fraction": 0.5})
    assert s.run_progress(r) == (pytest.approx(0.375), "demo: epoch 2/4")
    # after the last epoch, while the best checkpoint is tested: never "epoch 5/4"
    assert s.run_progress(run(name="demo", epoch=4, epochs=4)) == (1.0, "demo: testing the best checkpoint")
    # early stopping after epoch 2 of 4: the worker says it is testing
    assert s.run_progress(run(name="demo", epoch=2, epochs=4, progress={"testing": True,
                          "fraction": 1.0})) == (1.0, "demo: testing the best checkpoint")
    assert s.train_progress(run(epoch=2, epochs=4, progress={"testing": True})) == (
        1.0, "testing the best checkpoint")
    assert s.run_progress(run(epochs=0)) == (0.0, "r1: epoch 1/0")


def test_sweep_progress_says_what_each_init_is_doing():
    found = {"zeros": run(state="completed"), "xavier": run(state="running", epoch=1, epochs=3),
             "kaiming": None}
    p = s.sweep_progress(found)
    assert p["cells"] == {"init=zeros": "completed", "init=xavier": "epoch 1/3",
                          "init=kaiming": "waiting"}
    assert (p["done"], p["total"]) == (1, 3) and p["fraction"] == pytest.approx(1 / 3)
    assert s.sweep_progress({})["fraction"] == 1.0


def test_sweep_layer_series_skips_runs_without_layer_statistics(tiny_runs):
    runs, dnn, cnn = tiny_runs
    (runs / cnn / "layers.jsonl").unlink()
    store = RunStore(runs)
    series, damaged = s.sweep_layer_series({"kaiming": store.get(dnn), "zeros": store.get(cnn),
                                            "xavier": None})
    assert list(series) == ["init=kaiming"] and series["init=kaiming"]["epochs"] == [0, 1, 2]
    assert damaged == []


def test_sweep_layer_series_names_a_damaged_layers_file(tiny_runs):
    runs, dnn, cnn = tiny_runs
    (runs / cnn / "layers.jsonl").write_bytes(b"\x00\xffnot json\n")
    store = RunStore(runs)
    series, damaged = s.sweep_layer_series({"kaiming": store.get(dnn), "zeros": store.get(cnn)})
    assert list(series) == ["init=kaiming"]
    assert len(damaged) == 1 and damaged[0].startswith("init=zeros: layers.jsonl is damaged")


def test_train_progress_is_the_current_epochs_batches():
    def running(**kw):
        return SimpleNamespace(**{"epoch": 1, "epochs": 3, "progress": None, **kw})

    assert s.train_progress(running(progress={"epoch": 2, "batch": 5, "batches": 20,
                                          "fraction": 0.25})) == (0.25, "epoch 2/3 · batch 5/20")
    assert s.train_progress(running(progress={"epoch": 2, "batch": 99, "batches": 20,
                                          "fraction": 4.9}))[0] == 1.0
    assert s.train_progress(running()) == (0.0, "epoch 2/3 · starting")
    assert s.train_progress(running(epoch=3)) == (1.0, "testing the best checkpoint")


def test_config_lines_say_what_start_will_train_from_any_config():
    cfg = {"data": {"dataset": "digits", "limit": 300, "val_fraction": 0.1,
                    "augment": {"hflip": True}},
           "model": {"arch": "cnn", "blocks": [[8, 16]], "fc_dims": [32], "init": "xavier"}}
    assert s.config_lines(cfg) == ("`digits` · limit 300 · validation 10% · augmented",
                                   "`cnn` · blocks `[[8, 16]]` · fc_dims `[32]` · init `xavier`")
    assert s.config_lines({}) == ("`mnist-5k` · validation 20% · no augmentation",
                                  "`dnn` · init `kaiming`")
    assert s.config_lines({"data": "bad", "model": {"arch": "rnn", "cell": "lstm"},
                           "train": None})[1] == "`rnn` · cell `lstm` · init `kaiming`"


def test_run_caption_names_data_model_device_and_local_start():
    r = SimpleNamespace(dataset="digits", arch="dnn", device=None, started_at=None)
    assert s.run_caption(r) == "digits/dnn on a device not known yet"
    r = SimpleNamespace(dataset="digits", arch="dnn", device="cpu",
                        started_at="2026-12-03T10:04:05+00:00")
    local = datetime(2026, 12, 3, 10, 4, 5, tzinfo=timezone.utc).astimezone()
    assert s.run_caption(r) == f"digits/dnn on cpu · started {local:%Y-%m-%d %H:%M:%S}"


# ---------------------------------------------------------------- Compare and Draw

def test_config_differences_are_text_with_a_dash_for_missing_keys():
    diff = {"model.arch": {"a": "dnn", "b": "cnn"}, "model.blocks": {"a": None, "b": [[8, 8]]},
            "train.lr": {"a": 0.001, "b": 0.003}}
    assert s.config_diff_columns(diff, ["a", "b"]) == {
        "a": {"model.arch": "dnn", "model.blocks": "—", "train.lr": "0.001"},
        "b": {"model.arch": "cnn", "model.blocks": "[[8, 8]]", "train.lr": "0.003"}}


def test_drawable_runs_offer_digit_models_and_say_why_not_the_others(tiny_runs):
    runs, dnn, cnn = tiny_runs
    cfg = json.loads((runs / cnn / "config.json").read_text())
    cfg["data"]["dataset"] = "cifar10"
    (runs / cnn / "config.json").write_text(json.dumps(cfg))
    (runs / dnn / "eval.json").write_text("garbage")          # damaged: not offered at all
    offered, refused = s.drawable_runs(RunStore(runs))
    assert offered == []
    assert [(r.id, "colour photos" in why) for r, why in refused] == [(cnn, True)]


# ---------------------------------------------------------------- Data

def test_dataset_tiles_and_label_rows():
    counts = {"classes": ["a", "b"], "train": [1000, 2500], "test": [10, 20]}
    assert s.dataset_tiles(counts, (1, 28, 28)) == [
        ("Classes", "2"), ("Input shape (C×H×W)", "1×28×28"), ("Training set", "3,500"),
        ("Test set", "30")]
    assert s.label_rows(["1", "22", "3"], ncols=2) == "1   22\n3 "
    assert s.label_rows([]) == ""


def test_split_text_gives_the_sizes_of_the_splits_made():
    data = {"dataset": "mnist-5k", "limit": 1000, "val_fraction": 0.2}
    sp = load_splits({**data, "augment": {}, "normalize": True}, 0)
    text = s.split_text(data, 32, 25)
    assert text.startswith(f"1,000 training images split into {len(sp.train_y):,} for training "
                           f"and {len(sp.val_y):,} for validation; 25 batches of 32 per epoch")


def test_batch_text_prints_like_pytorch():
    b = {"shape": [32, 1, 28, 28], "label_shape": [32], "dtype": "float32", "min": -0.4,
         "max": 2.8, "mean": 0.0, "std": 1.0, "channel_mean": [0.1307], "channel_std": [0.3081]}
    text = s.batch_text(b, normalize=False)
    assert text.splitlines()[0] == "images: torch.Size([32, 1, 28, 28])  labels: torch.Size([32])"
    assert "Normalize(mean=(0.1307,), std=(0.3081,))" in text and "not applied" in text


def test_model_notes_say_which_input_the_counts_are_for():
    from dlcore.config import resolve_config
    from dlcore.datasets import BUILTIN
    from dlcore.models import TUTORIAL_MODELS

    cnn = resolve_config({"model": TUTORIAL_MODELS["Tutorial CNN"][0]})["model"]
    notes = s.model_notes(cnn, {}, BUILTIN["mnist-5k"], "mnist-5k")
    assert notes == ["Computed for **mnist-5k**: input 1×28×28, 10 classes (the dataset chosen "
                     "on the Data page).",
                     "The Tutorial CNN has 9,457,962 parameters on CIFAR-10's 3×32×32 input; the "
                     "count above is for mnist-5k's shape."]
    pre = resolve_config({"model": {"arch": "pretrained", "weights": "none", "input_size": 64}})["model"]
    first = s.model_notes(pre, {"weights": "random init"}, BUILTIN["mnist-5k"], "mnist-5k")[0]
    assert first.startswith("Backbone weights: **random init**. Images are resized to 64×64")
