"""Starting `python -m dlcore train` as a separate process, and following the run it writes.

Training never runs inside the Streamlit script. The app creates the run directory itself,
locked, and hands directory and lock to the worker (`train CONFIG --run-dir DIR`), so the page
knows its run from the start; a run is alive exactly while its lock is held.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import ConfigError, resolve_config
from .runfiles import read_json
from .runs import WORKER_LOG, RunStore, check_name, last_error, write_json_atomic
from .runlock import LOCK_FD_ENV, RunLock, lock_holder, run_is_locked

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Job:
    pid: int
    runs_dir: str
    log: str
    started: float
    run_dir: str | None = None    # the run this worker writes; None for an init sweep
    sweep: str | None = None      # an init sweep's id (its runs carry it in meta.json)
    proc: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    @property
    def run_id(self) -> str | None:
        return Path(self.run_dir).name if self.run_dir else None

    def ended(self) -> bool:
        """Whether the worker process has exited (known to the session that started it)."""
        return self.proc is None or self.proc.poll() is not None


def validate(cfg: dict, data_root=None) -> dict:
    """Everything `train` checks before it writes anything, without loading the data twice.

    Returns the resolved config; raises ConfigError (or DatasetUnavailable) with one line.
    """
    from .datasets import availability, dataset_info
    from .splits import split_sizes
    from .models import meta_model
    from .devices import pick_device

    cfg = resolve_config(cfg)
    pick_device(cfg["train"]["device"])
    ok, how = availability(cfg["data"]["dataset"], data_root)
    if not ok:
        raise ConfigError(f"data.dataset: {cfg['data']['dataset']!r} is not on this machine: {how}")
    info = dataset_info(cfg["data"], data_root)
    meta_model(cfg["model"], info.shape, len(info.classes))   # sizes and weights file, unbuilt
    n_train = split_sizes(cfg["data"], data_root)["train"]
    if cfg["train"]["batch_size"] > n_train:
        raise ConfigError(f"train.batch_size: {cfg['train']['batch_size']} is larger than the "
                          f"training split ({n_train} images); allowed: 1 to {n_train}")
    return cfg


def start_training(cfg: dict, runs_dir="runs", name: str | None = None, data_root=None) -> Job:
    """Validate, create the run (locked), then start its worker; returns at once."""
    name = check_name(name)
    cfg = validate(cfg, data_root)
    run_dir, lock = RunStore(runs_dir).create(name)
    try:
        write_json_atomic(run_dir / "config.json", cfg)
        return _spawn(["train", str(run_dir / "config.json"), "--run-dir", str(run_dir),
                       "--no-progress"], Path(runs_dir), data_root, run_dir / WORKER_LOG,
                      lock=lock, run_dir=run_dir)
    except OSError:
        lock.release()
        shutil.rmtree(run_dir, ignore_errors=True)    # no worker ever saw it
        raise
    finally:
        lock.release()   # the worker holds it now


def start_init_sweep(cfg: dict, runs_dir="runs", name: str = "init sweep", data_root=None,
                     epochs: int = 3, limit: int | None = 1000, inits=None) -> Job:
    """One worker that trains the config's model once per init method, one run after another
    (`python -m dlcore init-sweep`); returns at once. Its runs carry `job.sweep` in meta.json
    (dlcore.sweep.sweep_runs finds them)."""
    from .sweep import check_inits, sweep_config

    name = check_name(name) or "init sweep"
    cfg = validate(sweep_config(cfg, epochs, limit), data_root)
    runs = Path(runs_dir)
    stamp = _stamp()
    cfg_path = _pending_dir(runs) / f"{stamp}.json"
    write_json_atomic(cfg_path, cfg)
    args = ["init-sweep", str(cfg_path), "--runs-dir", str(runs), "--name", name,
            "--sweep-id", stamp, "--inits", *check_inits(inits)]
    return _spawn(args, runs, data_root, _pending_dir(runs) / f"{stamp}.log", sweep=stamp)


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
    lock = RunLock(info.path).acquire(wait=0.5)     # two tabs cannot resume it twice
    try:
        return _spawn(args, Path(runs_dir), data_root, info.path / WORKER_LOG, lock=lock,
                      run_dir=info.path)
    finally:
        lock.release()


def device_report(timeout: float = 120) -> dict:
    """What this machine can train on, asked of a short-lived worker: the web server itself
    never touches the GPU (no CUDA context, no GPU memory held by it)."""
    import json

    cmd = [sys.executable, "-m", "dlcore", "devices", "--json"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                             stdin=subprocess.DEVNULL)
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return {"auto": "cpu", "cuda": None, "mps": False, "cpu_threads": os.cpu_count(),
                "torch": "?", "error": "the device check did not answer"}


def device_labels(report: dict) -> dict[str, str]:
    """Each `train.device` choice as the Train page offers it, with what it means here."""
    return {"auto": f"auto ({report['auto']})",
            "cpu": f"cpu ({report['cpu_threads']} threads)",
            "cuda": f"cuda ({report['cuda']})" if report["cuda"] else "cuda (not found)",
            "mps": "mps" if report["mps"] else "mps (not found)"}


def device_line(report: dict) -> str:
    """One line of what `device_report` found, in Markdown."""
    return (f"Found: CUDA GPU **{report['cuda'] or 'none'}** · MPS "
            f"**{'yes' if report['mps'] else 'no'}** · CPU threads **{report['cpu_threads']}**"
            f" · auto picks **{report['auto']}** · torch {report['torch']}")


def _stamp() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{threading.get_ident() % 10000}"


def _pending_dir(runs: Path) -> Path:
    pending = runs / ".pending"
    pending.mkdir(parents=True, exist_ok=True)
    return pending


def _spawn(args: list[str], runs: Path, data_root, log_path: Path, lock: RunLock | None = None,
           run_dir: Path | None = None, sweep: str | None = None) -> Job:
    cmd = [sys.executable, "-m", "dlcore"]
    if data_root:
        cmd += ["--data-root", str(data_root)]
    cmd += args
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    if lock is not None:
        env[LOCK_FD_ENV] = str(lock.fd)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env,
                                pass_fds=(lock.fd,) if lock is not None else ())
    if lock is not None:
        lock.write_holder(proc.pid)     # Stop signals the worker, never this server
    # reap the worker when it ends, so that it never lingers as a zombie of the app
    threading.Thread(target=proc.wait, daemon=True).start()
    return Job(pid=proc.pid, runs_dir=str(runs), log=str(log_path), started=time.time(),
               run_dir=str(run_dir) if run_dir else None, sweep=sweep, proc=proc)


def job_state(job: Job) -> tuple[str, str | None]:
    """('starting' | 'running' | 'ended', the worker's error when it ended with one).

    A run's worker is starting while it holds the run's lock but has not written its status."""
    if job.run_dir is None:
        return ("ended", last_error(job.log)) if job.ended() else ("running", None)
    status = _status(Path(job.run_dir))
    if run_is_locked(job.run_dir):
        return ("running", None) if status.get("state") == "running" else ("starting", None)
    error = status.get("error") if status.get("state") == "failed" else None
    return "ended", error or (None if status else last_error(job.log))


@dataclass
class Watch:
    """What a page following a session's worker shows, read once per poll: the worker's
    phase (`job_state`), its error, the runs newest first, and whether anything is live."""
    phase: str | None              # None: this session started no worker
    error: str | None
    runs: list = field(default_factory=list)

    @property
    def busy(self) -> bool:
        """This session's worker is loading data or training: no second Start."""
        return self.phase in ("starting", "running")

    @property
    def live(self) -> bool:
        """A worker is at work, this session's or another's: the page keeps polling. One rule
        for every run: `running` while its lock is held (RunStore), so polling stops exactly
        when the last lock is released."""
        return self.busy or any(r.state == "running" for r in self.runs)


def watch(job: Job | None, runs_dir) -> Watch:
    phase, error = job_state(job) if job is not None else (None, None)
    return Watch(phase, error, RunStore(runs_dir).list())


def watched_run(runs: list, mine: str | None, chosen: str | None, pinned: bool) -> str | None:
    """The run a follower shows: the one picked by hand while it is listed, else this
    session's own, else the newest running one, else the newest."""
    ids = [r.id for r in runs]
    if pinned and chosen in ids:
        return chosen
    if mine in ids:
        return mine
    return next((r.id for r in runs if r.state == "running"), ids[0] if ids else None)


def _status(run_dir: Path) -> dict:
    try:
        st = read_json(run_dir / "status.json")
        return st if isinstance(st, dict) else {}
    except (OSError, ValueError):
        return {}


def stop(runs_dir, run_id: str) -> None:
    """Ask a run's worker to stop at its next batch: the STOP file, which it looks for, and
    SIGTERM to the process holding the run's lock once that process is training (its own pid
    in status.json). Never a pid alone: one in a stale status.json may be a stranger's now."""
    import signal

    store = RunStore(runs_dir)
    store.request_stop(run_id)
    path = store.path(run_id)
    pid = lock_holder(path)
    status = _status(path)
    if pid is not None and pid != os.getpid() and status.get("pid") == pid \
            and status.get("state") == "running":
        try:
            os.kill(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass


__all__ = ["Job", "validate", "start_training", "start_init_sweep", "start_resume",
           "job_state", "last_error", "stop", "ConfigError"]
