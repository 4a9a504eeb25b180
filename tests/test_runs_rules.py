"""The rules every reader of a run shares: which epoch is the best one, and how long a run takes."""
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from dlcore.compare import compare_runs
from dlcore.runs import RunInfo, RunStore, best_epoch, now_iso
from dlcore.timing import eta, format_duration, parse_time
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


# ---------------------------------------------------------------- elapsed and remaining time

START = "2024-05-01T10:00:00+02:00"
NOW = datetime(2024, 5, 1, 8, 10, 0, tzinfo=timezone.utc)       # ten minutes after START


def running(**kw):
    return RunInfo(id="r", path=Path("r"), **{"state": "running", "started_at": START,
                                              "epochs": 10, **kw})


def test_parse_time_reads_status_times_and_refuses_the_rest():
    assert parse_time(START) == datetime(2024, 5, 1, 8, tzinfo=timezone.utc)
    naive = parse_time("2024-05-01T10:00:00")      # no zone: local time, so it still subtracts
    assert naive.tzinfo is not None and naive == datetime(2024, 5, 1, 10).astimezone()
    assert parse_time(None) is None and parse_time("yesterday") is None and parse_time(3) is None


@pytest.mark.parametrize("seconds, shown", [(None, "—"), (0, "0s"), (-5, "0s"), (44.6, "45s"),
                                            (187, "3m 07s"), (3600, "1h 00m"), (7530, "2h 05m")])
def test_format_duration(seconds, shown):
    assert format_duration(seconds) == shown


def test_a_running_run_estimates_what_is_left_from_its_epochs_so_far():
    r = running(epoch=2, progress={"fraction": 0.5})
    rows = [{"epoch": 1, "seconds": 50.0}, {"epoch": 2, "seconds": 70.0}]
    # 60 s an epoch, 7.5 epochs to go
    assert eta(r, rows, now=NOW) == (600.0, 450.0)


def test_in_the_first_epoch_the_estimate_comes_from_its_progress():
    assert eta(running(progress={"fraction": 0.25}), [], now=NOW) == (600.0, 600.0 * 4 * 9.75)
    # too little done to say
    assert eta(running(progress={"fraction": 0.01}), [], now=NOW) == (600.0, None)
    assert eta(running(), [], now=NOW) == (600.0, None)


def test_a_finished_run_has_its_duration_and_nothing_left():
    r = running(state="completed", finished_at="2024-05-01T10:05:30+02:00", epoch=10)
    assert eta(r, [{"epoch": 1, "seconds": 30.0}], now=NOW) == (330.0, None)
    assert eta(running(state="stopped"), [], now=NOW) == (None, None)
    assert eta(running(started_at=None), [], now=NOW) == (None, None)
    assert eta(running(epoch=12), [{"epoch": 1, "seconds": 30.0}], now=NOW) == (600.0, 0.0)


def test_now_defaults_to_the_current_time_and_may_be_naive():
    elapsed, _ = eta(running(started_at=now_iso()), [])
    assert 0 <= elapsed < 60
    naive_now = NOW.astimezone().replace(tzinfo=None)      # the same time on a local clock
    assert eta(running(), [], now=naive_now)[0] == 600.0
