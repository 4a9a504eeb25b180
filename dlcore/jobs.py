"""Starting `python -m dlcore train` as a separate process, and finding the run it makes.

Training never runs inside the Streamlit script: the page starts a worker, and the worker's
run directory is the only channel back (its status.json carries the worker's pid).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .config import ConfigError, resolve_config
from .runs import RunInfo, RunStore, check_name, pid_alive, write_json_atomic

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Job:
    pid: int
    runs_dir: str
    log: str
    started: float


def validate(cfg: dict, data_root=None) -> dict:
    """Everything `train` checks before it writes anything, without loading the data twice.

    Returns the resolved config; raises ConfigError (or DatasetUnavailable) with one line.
    """
    from .datasets import availability, dataset_info, split_sizes
    from .models import build_model
    from .devices import pick_device

    cfg = resolve_config(cfg)
    pick_device(cfg["train"]["device"])
    ok, how = availability(cfg["data"]["dataset"], data_root)
    if not ok:
        raise ConfigError(f"data.dataset: {cfg['data']['dataset']!r} is not on this machine: {how}")
    info = dataset_info(cfg["data"], data_root)
    build_model(cfg["model"], info.shape, len(info.classes))
    n_train = split_sizes(cfg["data"], data_root)["train"]
    if cfg["train"]["batch_size"] > n_train:
        raise ConfigError(f"train.batch_size: {cfg['train']['batch_size']} is larger than the "
                          f"training split ({n_train} images); allowed: 1 to {n_train}")
    return cfg


def start_training(cfg: dict, runs_dir="runs", name: str | None = None, data_root=None) -> Job:
    """Validate, then start a worker process; returns at once."""
    name = check_name(name)
    cfg = validate(cfg, data_root)
    runs = Path(runs_dir)
    stamp = _stamp()
    pending = _pending_dir(runs)
    cfg_path = pending / f"{stamp}.json"
    write_json_atomic(cfg_path, cfg)
    args = ["train", str(cfg_path), "--runs-dir", str(runs), "--no-progress"]
    return _spawn(args + (["--name", name] if name else []), runs, data_root, stamp)


def start_init_sweep(cfg: dict, runs_dir="runs", name: str = "init sweep", data_root=None,
                     epochs: int = 3, limit: int | None = 1000, inits=None) -> Job:
    """One worker that trains the config's model once per init method, one run after another
    (`python -m dlcore init-sweep`); returns at once. Find its runs with dlcore.sweep.sweep_runs."""
    from .sweep import check_inits, sweep_config

    name = check_name(name) or "init sweep"
    cfg = validate(sweep_config(cfg, epochs, limit), data_root)
    runs = Path(runs_dir)
    stamp = _stamp()
    cfg_path = _pending_dir(runs) / f"{stamp}.json"
    write_json_atomic(cfg_path, cfg)
    args = ["init-sweep", str(cfg_path), "--runs-dir", str(runs), "--name", name,
            "--inits", *check_inits(inits)]
    return _spawn(args, runs, data_root, stamp)


def start_resume(runs_dir, run_id: str, epochs: int | None = None, data_root=None) -> Job:
    """Continue a stopped or failed run in a worker process; returns at once."""
    store = RunStore(runs_dir)
    info = store.get(run_id)
    if info.state == "running":
        raise ConfigError(f"run {run_id} is still training")
    if not info.has_last:
        raise ConfigError(f"run {run_id} has no last.pt to resume from")
    total = epochs if epochs is not None else info.epochs
    if total <= info.epoch:
        raise ConfigError(f"epochs: run {run_id} has done {info.epoch} of {info.epochs} epochs; "
                          f"allowed: more than {info.epoch}")
    args = ["resume", str(info.path), "--no-progress"]
    if epochs is not None:
        args += ["--epochs", str(int(epochs))]
    return _spawn(args, Path(runs_dir), data_root, _stamp())


def _stamp() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{threading.get_ident() % 10000}"


def _pending_dir(runs: Path) -> Path:
    pending = runs / ".pending"
    pending.mkdir(parents=True, exist_ok=True)
    return pending


def _spawn(args: list[str], runs: Path, data_root, stamp: str) -> Job:
    log_path = _pending_dir(runs) / f"{stamp}.log"
    cmd = [sys.executable, "-m", "dlcore"]
    if data_root:
        cmd += ["--data-root", str(data_root)]
    cmd += args
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)
    # reap the worker when it ends, so that it never lingers as a zombie of the app
    threading.Thread(target=proc.wait, daemon=True).start()
    return Job(pid=proc.pid, runs_dir=str(runs), log=str(log_path), started=time.time())


def find_run(job: Job) -> RunInfo | None:
    """The run directory the job's worker created, once it exists."""
    store = RunStore(job.runs_dir)
    for r in store.list():
        try:
            st = json.loads((r.path / "status.json").read_text())
        except (OSError, ValueError):
            continue
        if st.get("pid") == job.pid:
            return r
    return None


def job_state(job: Job) -> tuple[str, str | None]:
    """('starting' | 'running' | 'ended', last error line of the worker's output or None)."""
    if find_run(job) is not None:
        return "running" if pid_alive(job.pid) else "ended", None
    if pid_alive(job.pid):
        return "starting", None
    return "ended", last_error(job.log)


def last_error(log_path: str) -> str | None:
    try:
        lines = Path(log_path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if line.startswith("error:"):
            return line[len("error:"):].strip()
    return lines[-1] if lines else None


def stop(runs_dir, run_id: str) -> None:
    """Ask a run's worker to stop at its next batch (the STOP file, then SIGTERM)."""
    import signal

    store = RunStore(runs_dir)
    store.request_stop(run_id)
    try:
        pid = json.loads((store.path(run_id) / "status.json").read_text()).get("pid")
    except (OSError, ValueError):
        return
    if pid_alive(pid):
        try:
            os.kill(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass


__all__ = ["Job", "validate", "start_training", "start_init_sweep", "start_resume", "find_run",
           "job_state", "stop", "ConfigError"]
