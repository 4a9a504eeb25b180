"""Saved runs: atomic files, a store that never crashes on a damaged run, safe checkpoints."""
import json
import os
import pickle
import subprocess
import sys

import pytest
import torch

from dlcore.config import ConfigError
from dlcore.checkpoints import CheckpointError, load_checkpoint
from dlcore.runs import RunStore, check_name, read_metrics, slugify, write_json_atomic
from dlcore.runlock import RunLock


def test_store_lists_runs_newest_first_with_their_names(tiny_runs):
    runs, dnn, cnn = tiny_runs
    listed = RunStore(runs).list()
    assert [r.id for r in listed] == [cnn, dnn]              # the CNN was made second
    by_id = {r.id: r for r in listed}
    assert by_id[dnn].name == "tiny dnn" and by_id[dnn].arch == "dnn"
    assert by_id[cnn].state == "completed" and by_id[cnn].best_val_acc > 0.3
    assert by_id[cnn].has_eval and by_id[cnn].has_best


def test_rename_and_delete(tiny_runs):
    runs, dnn, cnn = tiny_runs
    store = RunStore(runs)
    store.rename(dnn, "baseline")
    assert store.get(dnn).name == "baseline"
    store.delete(cnn)
    assert not (runs / cnn).exists()
    assert [r.id for r in store.list()] == [dnn]


def test_running_run_cannot_be_deleted(tiny_runs):
    runs, dnn, _ = tiny_runs
    with RunLock(runs / dnn):            # a worker writing into it
        assert RunStore(runs).get(dnn).state == "running"
        with pytest.raises(ConfigError, match="still training"):
            RunStore(runs).delete(dnn)
    assert (runs / dnn / "best.pt").exists()


def test_a_run_whose_worker_is_gone_shows_as_failed(tiny_runs):
    runs, dnn, _ = tiny_runs
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    st = json.loads((runs / dnn / "status.json").read_text())
    write_json_atomic(runs / dnn / "status.json", dict(st, state="running", pid=dead.pid))
    info = RunStore(runs).get(dnn)
    assert info.state == "failed" and "gone" in info.error


@pytest.mark.parametrize("damage", [
    lambda run: (run / "status.json").write_text("{not json"),
    lambda run: (run / "eval.json").write_text("garbage"),
    lambda run: (run / "metrics.jsonl").write_text('{"epoch": 1}\nbroken\n{"epoch": 3}\n'),
    lambda run: (run / "config.json").write_bytes(b"\xff\xfe\x00"),
], ids=["status", "eval", "metrics-middle-line", "config-bytes"])
def test_damaged_runs_are_listed_as_damaged(tiny_runs, damage):
    runs, dnn, cnn = tiny_runs
    damage(runs / dnn)
    by_id = {r.id: r for r in RunStore(runs).list()}
    assert by_id[dnn].state == "damaged" and by_id[dnn].damaged
    assert by_id[cnn].state == "completed"


def test_a_half_written_last_metrics_line_is_skipped(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1, "val_loss": 1}\n{"epoch": 2, "val_l')
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1]


def test_temp_and_hidden_folders_are_not_runs(tiny_runs):
    runs, dnn, cnn = tiny_runs
    (runs / ".pending").mkdir()
    (runs / ".deleting-x").mkdir()
    (runs / "notes").mkdir()
    (runs / dnn / ".status.json.abc.tmp").write_text("{")
    assert {r.id for r in RunStore(runs).list()} == {dnn, cnn}


def test_atomic_write_replaces_whole_files_and_leaves_no_temp(tmp_path):
    p = tmp_path / "status.json"
    write_json_atomic(p, {"a": 1})
    write_json_atomic(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 2}
    assert [f.name for f in tmp_path.iterdir()] == ["status.json"]
    with pytest.raises(ValueError):
        write_json_atomic(p, {"a": float("nan")})
    assert json.loads(p.read_text()) == {"a": 2}
    assert [f.name for f in tmp_path.iterdir()] == ["status.json"]


@pytest.mark.parametrize("name, slug", [("my run", "my-run"), ("../x", "x"), ("/etc/passwd", "etc-passwd"),
                                        ("ünïcode ok", "n-code-ok"), ("a" * 80, "a" * 80)])
def test_run_names_become_safe_slugs(name, slug, tmp_path):
    assert slugify(name) == slug
    path, lock = RunStore(tmp_path).create(name)
    lock.release()
    assert path.parent == tmp_path and path.name.endswith(slug)


@pytest.mark.parametrize("name, message", [("a\x00b", r"control character '\\x00'"),
                                           ("x" * 300, "at most 80")])
def test_bad_run_names_are_refused(name, message):
    with pytest.raises(ConfigError, match=message):
        check_name(name)


def test_two_runs_created_in_the_same_second_get_different_directories(tmp_path):
    store = RunStore(tmp_path)
    (a, lock_a), (b, lock_b) = store.create("same"), store.create("same")
    lock_a.release(), lock_b.release()
    assert a != b


def test_store_refuses_paths_outside_itself(tiny_runs):
    runs, _, _ = tiny_runs
    for bad in ("../x", "/etc", ".pending", ""):
        with pytest.raises(ConfigError):
            RunStore(runs).get(bad)


def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    p = tmp_path / "evil.pt"
    torch.save({"model_state": {}, "config": {}, "x": Evil()}, p)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(p)
    assert not marker.exists()


def test_truncated_checkpoint_is_a_clear_error(tiny_runs):
    runs, dnn, _ = tiny_runs
    p = runs / dnn / "best.pt"
    p.write_bytes(p.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="damaged or truncated"):
        load_checkpoint(p)


def test_a_plain_pickle_is_not_a_checkpoint(tmp_path):
    p = tmp_path / "x.pt"
    p.write_bytes(pickle.dumps({"hello": 1}, protocol=2))
    with pytest.raises(CheckpointError):
        load_checkpoint(p)
