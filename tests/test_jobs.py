"""Starting workers from the app: everything checkable is checked before a process starts."""
import pytest

from dlcore import jobs
from dlcore.config import ConfigError


def test_batch_larger_than_the_training_split_starts_nothing(empty_runs):
    cfg = {"data": {"limit": 300}, "train": {"batch_size": 5000}}
    with pytest.raises(ConfigError, match="larger than the training split \\(240 images\\)"):
        jobs.start_training(cfg, empty_runs)
    assert not any(empty_runs.iterdir())


def test_resume_of_a_finished_run_needs_more_epochs(tiny_runs):
    runs, dnn, _ = tiny_runs
    with pytest.raises(ConfigError, match="has done 2 of 2 epochs"):
        jobs.start_resume(runs, dnn)
    assert not (runs / ".pending").exists()


def test_watch_is_live_exactly_while_a_run_is_locked(tiny_runs):
    from dlcore.runlock import RunLock
    runs, dnn, cnn = tiny_runs
    w = jobs.watch(None, runs)
    assert (w.phase, w.busy, w.live) == (None, False, False)
    assert {r.id for r in w.runs} == {dnn, cnn}
    with RunLock(runs / cnn):      # a worker at work on a finished run: resuming it
        w = jobs.watch(None, runs)
        assert w.live and not w.busy
        assert {r.id: r.state for r in w.runs}[cnn] == "running"
    assert not jobs.watch(None, runs).live


def test_watched_run_prefers_the_pick_then_mine_then_the_running_one():
    from dlcore.runs import RunInfo
    runs = [RunInfo("c", None, state="completed"), RunInfo("b", None, state="running"),
            RunInfo("a", None, state="stopped")]
    assert jobs.watched_run(runs, mine=None, chosen=None, pinned=False) == "b"
    assert jobs.watched_run(runs, mine="a", chosen="c", pinned=False) == "a"
    assert jobs.watched_run(runs, mine="a", chosen="c", pinned=True) == "c"
    assert jobs.watched_run(runs, mine="gone", chosen="gone", pinned=True) == "b"
    assert jobs.watched_run(runs[:1], mine=None, chosen=None, pinned=False) == "c"
    assert jobs.watched_run([], mine=None, chosen=None, pinned=False) is None


def test_device_labels_and_line_say_what_was_found():
    rep = {"auto": "cuda", "cuda": "NVIDIA H200", "mps": False, "cpu_threads": 16,
           "torch": "2.14.1"}
    assert jobs.device_labels(rep) == {"auto": "auto (cuda)", "cpu": "cpu (16 threads)",
                                       "cuda": "cuda (NVIDIA H200)", "mps": "mps (not found)"}
    assert jobs.device_line(rep) == ("Found: CUDA GPU **NVIDIA H200** · MPS **no** · CPU threads "
                                     "**16** · auto picks **cuda** · torch 2.14.1")
    none = {**rep, "auto": "cpu", "cuda": None}
    assert jobs.device_labels(none)["cuda"] == "cuda (not found)"
    assert "CUDA GPU **none**" in jobs.device_line(none)
