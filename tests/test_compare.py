"""Comparing runs: what differs, the best of each metric (within a dataset only), and runs
that vanish meanwhile."""
import json
import shutil

import pytest

from dlcore.compare import (METRIC_ROWS, best_within_datasets, compare_runs, dataset_groups,
                            dataset_note, dataset_of, rename_question, run_to_show_after)
from dlcore.config import ConfigError
from dlcore.runs import RunStore


def edit_json(path, **changes):
    path.write_text(json.dumps(dict(json.loads(path.read_text()), **changes)))


def copy_run(runs_dir, src, new_id, name, dataset=None, accuracy=None):
    """A copy of run `src` under `new_id`, renamed, optionally on another dataset and with
    another test accuracy in its eval.json."""
    dst = runs_dir / new_id
    shutil.copytree(runs_dir / src, dst)
    edit_json(dst / "meta.json", name=name)
    if dataset:
        cfg = json.loads((dst / "config.json").read_text())
        edit_json(dst / "config.json", data=dict(cfg["data"], dataset=dataset))
    if accuracy is not None:
        set_accuracy(runs_dir, new_id, accuracy)
    return new_id


def set_accuracy(runs_dir, run_id, accuracy):
    edit_json(runs_dir / run_id / "eval.json", accuracy=accuracy)


def two_dataset_runs(runs_dir, dnn, cnn):
    """The two tiny mnist-5k runs at test accuracy 0.61 and 0.72, and copies of them made
    fashion-mnist runs at 0.93 and 0.55: (fashion dnn id, fashion cnn id)."""
    set_accuracy(runs_dir, dnn, 0.61)
    set_accuracy(runs_dir, cnn, 0.72)
    return (copy_run(runs_dir, dnn, "20990101-000000-f-dnn", "fashion dnn", "fashion-mnist", 0.93),
            copy_run(runs_dir, cnn, "20990101-000001-f-cnn", "fashion cnn", "fashion-mnist", 0.55))


def test_compare_two_runs(tiny_runs):
    runs, dnn, cnn = tiny_runs
    c = compare_runs(RunStore(runs), [dnn, cnn])
    assert c["labels"] == ["tiny dnn", "tiny cnn"]
    assert c["config_diff"]["model.arch"] == {"tiny dnn": "dnn", "tiny cnn": "cnn"}
    assert "data.dataset" not in c["config_diff"]
    acc = next(r for r in c["metrics"] if r["metric"] == "test accuracy")
    assert c["best_of"]["test accuracy"] == [max(c["labels"], key=lambda lab: acc[lab])]


def test_one_dataset_ranks_all_runs_together_and_says_nothing(tiny_runs):
    runs, dnn, cnn = tiny_runs
    set_accuracy(runs, dnn, 0.61)
    set_accuracy(runs, cnn, 0.72)
    c = compare_runs(RunStore(runs), [dnn, cnn])
    assert c["datasets"] == {"tiny dnn": "mnist-5k", "tiny cnn": "mnist-5k"}
    assert c["dataset_note"] is None
    assert c["best_of"]["test accuracy"] == ["tiny cnn"]
    loss = next(r for r in c["metrics"] if r["metric"] == "best val loss")
    assert c["best_of"]["best val loss"] == [min(c["labels"], key=lambda lab: loss[lab])]
    assert "epochs run" not in c["best_of"]           # more epochs is neither better nor worse


def test_best_is_within_each_dataset_when_runs_span_two(tiny_runs):
    runs, dnn, cnn = tiny_runs
    f_dnn, f_cnn = two_dataset_runs(runs, dnn, cnn)
    c = compare_runs(RunStore(runs), [dnn, f_dnn, cnn, f_cnn])
    assert c["datasets"] == {"tiny dnn": "mnist-5k", "fashion dnn": "fashion-mnist",
                             "tiny cnn": "mnist-5k", "fashion cnn": "fashion-mnist"}
    # across datasets the fashion DNN (0.93) would win alone; per dataset each has its best
    assert c["best_of"]["test accuracy"] == ["tiny cnn", "fashion dnn"]
    note = c["dataset_note"]
    assert "2 datasets" in note and "mnist-5k (2 runs)" in note
    assert "fashion-mnist (2 runs)" in note and "only within a dataset" in note


def test_a_dataset_with_one_run_has_no_best(tiny_runs):
    runs, dnn, cnn = tiny_runs
    set_accuracy(runs, dnn, 0.61)
    set_accuracy(runs, cnn, 0.72)
    fash = copy_run(runs, dnn, "20990101-000000-fash", "fashion dnn", "fashion-mnist", 0.99)
    c = compare_runs(RunStore(runs), [dnn, cnn, fash])
    assert c["best_of"]["test accuracy"] == ["tiny cnn"]
    assert "fashion-mnist (1 run)" in c["dataset_note"]


def test_best_within_datasets_rules():
    higher = {label: h for _, label, h in METRIC_ROWS}
    assert higher["test accuracy"] and higher["training time (s)"] is False
    table = [{"metric": "test accuracy", "a": 0.5, "b": 0.7, "c": 0.7, "x": 0.9, "y": None},
             {"metric": "training time (s)", "a": 3.0, "b": 1.0, "c": 2.0, "x": 9.0, "y": 8.0},
             {"metric": "epochs run", "a": 1, "b": 2, "c": 3, "x": 4, "y": 5},
             {"metric": "F1 (macro)", "a": None, "b": None, "c": 0.4, "x": 0.3, "y": None}]
    groups = dataset_groups({"a": "mnist-5k", "x": "cifar10", "b": "mnist-5k",
                             "y": "cifar10", "c": "mnist-5k"})
    assert groups == {"mnist-5k": ["a", "b", "c"], "cifar10": ["x", "y"]}
    best = best_within_datasets(table, groups)
    assert best["test accuracy"] == ["b", "c"]        # a tie: both; cifar10 has one figure
    assert best["training time (s)"] == ["b", "y"]    # lower is better
    assert "epochs run" not in best and "F1 (macro)" not in best


def test_dataset_identity_and_note():
    assert dataset_of({"data": {"dataset": "cifar10"}}) == "cifar10"
    assert dataset_of({}) == "mnist-5k"                                  # the default
    assert dataset_of({"data": {"dataset": "folder", "root": "/x/a"}}) == "folder (/x/a)"
    assert dataset_note({"mnist-5k": ["a", "b"]}) is None
    assert dataset_note({}) is None


def test_run_to_show_after_a_delete():
    assert run_to_show_after(["a", "b", "c"], "a") == "b"
    assert run_to_show_after(["a", "b", "c"], "b") == "c"
    assert run_to_show_after(["a", "b", "c"], "c") == "b"       # the last: the one before
    assert run_to_show_after(["a"], "a") is None
    assert run_to_show_after(["a", "b"], "gone") == "a"


def test_rename_question_names_the_run_and_the_name_saved():
    assert rename_question("tiny dnn", "  baseline   mlp ") == \
        "Yes, rename tiny dnn to “baseline mlp”"
    assert "clear the name of tiny dnn" in rename_question("tiny dnn", "   ")


def test_a_deleted_run_is_a_problem_not_a_crash(tiny_runs):
    runs, dnn, cnn = tiny_runs
    c = compare_runs(RunStore(runs), [dnn, "20990101-000000-gone"])
    assert c["labels"] == ["tiny dnn"] and "not found" in c["problems"]["20990101-000000-gone"]


def test_a_running_run_is_never_deleted(tiny_runs):
    from dlcore.runlock import RunLock

    runs, dnn, cnn = tiny_runs
    with RunLock(runs / cnn):
        with pytest.raises(ConfigError, match="still training"):
            RunStore(runs).delete(cnn)
    assert (runs / cnn).is_dir()
