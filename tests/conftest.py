"""Shared fixtures: tiny real runs made by the engine, an isolated runs directory, and one
way for page tests to open a page."""
from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Each pytest-xdist worker, and every training process its tests start, gets its share of the
# cores (set before torch is imported): torch's threads spinning on a core that another worker
# is using slow both down several times over. Only a worker sets it: the controlling process
# loads this file too, before it starts the workers, and they inherit its environment.
if "PYTEST_XDIST_WORKER" in os.environ:
    _WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))

# a few hundred samples, two epochs: each run takes a second or two on a CPU
TINY = {"data": {"dataset": "mnist-5k", "limit": 400},
        "model": {"arch": "dnn", "hidden_dims": [64, 32]},
        "train": {"epochs": 2, "batch_size": 64, "seed": 1, "device": "cpu"}}
TINY_CNN = {"data": {"dataset": "mnist-5k", "limit": 400},
            "model": {"arch": "cnn", "blocks": [[8, 8], [16, 16]], "fc_dims": [32]},
            "train": {"epochs": 2, "batch_size": 64, "seed": 2, "device": "cpu", "lr": 0.003}}


def wait_for(predicate, worker=None, log=None, timeout=300, what="the condition"):
    """Poll until predicate() is truthy and return its value. A worker (a Popen) that ends
    first fails the wait at once, showing its output; `timeout` only bounds a hang."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if worker is not None and worker.poll() is not None:
            value = predicate()
            if value:
                return value
            out = worker.stderr.read() if getattr(worker, "stderr", None) else ""
            if log and Path(log).exists():
                out += Path(log).read_text(errors="replace")
            raise AssertionError(f"the worker ended (exit {worker.returncode}) before "
                                 f"{what}; its output:\n{out[-4000:]}")
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def app_page(page, runs_dir=None, data_root=None, state=None, query=None, timeout=60):
    """A fresh AppTest of app.py switched to pages/<page>.py, checked for exceptions.

    `state` seeds the session (the working `config`, say) and `query` the URL's query
    parameters before the first run; `runs_dir` and `data_root` override $DLCORE_RUNS and
    $DLCORE_DATA for this session. AppTest's default 3 s is too short for pages that load
    data: `timeout` applies to every later run too."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout)
    seed = dict(state or {})
    if runs_dir is not None:
        seed["runs_dir"] = str(runs_dir)
    if data_root is not None:
        seed["data_root"] = str(data_root)
    for key, value in seed.items():
        at.session_state[key] = value
    for key, value in (query or {}).items():
        at.query_params[key] = value
    path = page if page.startswith("pages/") else f"pages/{page.removesuffix('.py')}.py"
    at.run().switch_page(path).run()
    assert not at.exception, at.exception
    return at


def train_quietly(cfg, runs_dir, name=None, data_root=None):
    from dlcore.train import train
    return train(cfg, runs_dir=runs_dir, name=name, data_root=data_root, progress=False,
                 log=lambda s: None)


@pytest.fixture(scope="session")
def tiny_runs_master(tmp_path_factory):
    """Two completed runs (a DNN and a CNN on mnist-5k), made once per test session."""
    d = tmp_path_factory.mktemp("runs-master")
    dnn = train_quietly(TINY, d, name="tiny dnn")
    cnn = train_quietly(TINY_CNN, d, name="tiny cnn")
    return d, dnn.name, cnn.name


@pytest.fixture
def tiny_runs(tiny_runs_master, tmp_path, monkeypatch):
    """A private copy of the two tiny runs; DLCORE_RUNS points at it. Yields (dir, dnn_id, cnn_id)."""
    src, dnn, cnn = tiny_runs_master
    dst = tmp_path / "runs"
    shutil.copytree(src, dst)
    monkeypatch.setenv("DLCORE_RUNS", str(dst))
    return dst, dnn, cnn


@pytest.fixture
def empty_runs(tmp_path, monkeypatch):
    d = tmp_path / "runs"
    d.mkdir()
    monkeypatch.setenv("DLCORE_RUNS", str(d))
    return d


@pytest.fixture(autouse=True)
def _isolated_data_root(tmp_path_factory, monkeypatch):
    """Tests never read or write the user's data/ folder unless they set DLCORE_DATA."""
    if "DLCORE_DATA" not in os.environ:
        monkeypatch.setenv("DLCORE_DATA", str(tmp_path_factory.getbasetemp() / "data"))
