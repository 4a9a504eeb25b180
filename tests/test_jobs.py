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
