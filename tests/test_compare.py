"""Comparing runs: what differs, the best of each metric, and runs that vanish meanwhile."""
from dlcore.compare import compare_runs
from dlcore.runs import RunStore


def test_compare_two_runs(tiny_runs):
    runs, dnn, cnn = tiny_runs
    c = compare_runs(RunStore(runs), [dnn, cnn])
    assert c["labels"] == ["tiny dnn", "tiny cnn"]
    assert c["config_diff"]["model.arch"] == {"tiny dnn": "dnn", "tiny cnn": "cnn"}
    assert "data.dataset" not in c["config_diff"]
    acc = next(r for r in c["metrics"] if r["metric"] == "test accuracy")
    assert c["best_of"]["test accuracy"] == max(c["labels"], key=lambda lab: acc[lab])


def test_a_deleted_run_is_a_problem_not_a_crash(tiny_runs):
    runs, dnn, cnn = tiny_runs
    c = compare_runs(RunStore(runs), [dnn, "20990101-000000-gone"])
    assert c["labels"] == ["tiny dnn"] and "not found" in c["problems"]["20990101-000000-gone"]
