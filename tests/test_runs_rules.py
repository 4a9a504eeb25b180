"""The rules every reader of a run shares: which epoch is the best one, and how long a run takes."""
import json

from dlcore.compare import compare_runs
from dlcore.runs import RunStore, best_epoch
from dlcore.runwriter import RunWriter

ROWS = [{"epoch": 1, "val_loss": 0.9, "val_acc": 0.5}, {"epoch": 2, "val_loss": 0.4, "val_acc": 0.7},
        {"epoch": 3, "val_loss": 0.4, "val_acc": 0.8}, {"epoch": 4, "val_loss": 0.6, "val_acc": 0.9}]


def test_best_epoch_is_the_lowest_val_loss_and_the_first_of_equals():
    # the first of equals: early stopping only counts a strictly lower loss as better
    assert best_epoch(ROWS)["epoch"] == 2
    assert best_epoch([]) is None


def test_best_epoch_skips_rows_without_a_val_loss():
    assert best_epoch([{"epoch": 1}, {"epoch": 2, "val_loss": 0.5}, {"epoch": 3, "val_loss": None}]) \
        == {"epoch": 2, "val_loss": 0.5}
    assert best_epoch([{"epoch": 1}, {"epoch": 2, "val_loss": None}]) is None


def write_run(root, rows):
    run = root / "20240101-000000-r"
    run.mkdir(parents=True)
    (run / "meta.json").write_text(json.dumps({"name": "r", "created": 1.0}))
    (run / "status.json").write_text(json.dumps({"state": "stopped", "epoch": len(rows)}))
    (run / "config.json").write_text(json.dumps({"data": {"dataset": "mnist-5k"},
                                                 "model": {"arch": "dnn"}, "train": {"epochs": 9}}))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def test_the_run_list_the_comparison_and_a_resume_agree_on_the_best_epoch(tmp_path):
    run = write_run(tmp_path, ROWS)
    store = RunStore(tmp_path)
    info = store.get(run.name)
    assert (info.best_epoch, info.best_val_acc) == (2, 0.7)
    res = compare_runs(store, [run.name])
    assert res["best_epochs"] == {"r": 2}
    assert {row["metric"]: row["r"] for row in res["metrics"]}["best val loss"] == 0.4
    writer = RunWriter(run, log=lambda s: None)
    writer.keep_epochs(4)
    assert (writer.status["best_epoch"], writer.status["best_val_loss"]) == (2, 0.4)
    writer.keep_epochs(1)
    assert (writer.status["best_epoch"], writer.status["best_val_loss"]) == (1, 0.9)
