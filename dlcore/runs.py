"""The run directory: atomic files, checkpoints loaded weights-only, and the one place that reads runs.

A reader never sees a half-written file; a damaged run is listed as damaged, never raised.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .config import ConfigError
from .runfiles import (STATES, DamagedFile, check_eval, count, json_object, metrics_row,
                       number, printable, progress, read_json, read_jsonl, section, text)
from .runlock import RunLock, run_is_locked

STOP_FILE = "STOP"
WORKER_LOG = "worker.log"
MAX_NAME = 80
LEFTOVER_AGE_S = 600      # a temp file this old in an unlocked run belongs to no live writer


def now_iso() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


# ---------------------------------------------------------------- atomic files

def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Temp file in the same folder, fsync, rename: the old or the new file, never half of one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_json_atomic(path: Path, obj) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode())


def append_jsonl(path: Path, obj) -> None:
    """Append one whole line; a crash can only leave a partial last line, which readers skip."""
    line = (json.dumps(obj, allow_nan=False) + "\n").encode()
    with open(path, "ab") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


# ---------------------------------------------------------------- reading runs

def read_metrics(run_dir: Path) -> list[dict]:
    """Per-epoch metrics, each row checked; a half-written last line is skipped, a damaged
    line elsewhere raises DamagedFile."""
    return read_jsonl(Path(run_dir) / "metrics.jsonl", metrics_row)


def best_epoch(metrics: list[dict]) -> dict | None:
    """The epoch row with the lowest val_loss (the one best.pt holds; the first of equals),
    rows without a val_loss skipped; None when no row has one."""
    rows = [m for m in metrics if m.get("val_loss") is not None]
    return min(rows, key=lambda m: m["val_loss"]) if rows else None


@contextlib.contextmanager
def writing(what: str, where):
    """Turn a refused write (a read-only runs directory, a full disk) into one clear line."""
    try:
        yield
    except OSError as e:
        if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise ConfigError(f"{what}: {where} cannot be written ({e.strerror.lower()}): the "
                              "runs directory is read-only here; choose another one") from None
        if e.errno == errno.ENOSPC:
            raise ConfigError(f"{what}: no space left on the device that holds {where}") from None
        raise


def slugify(name: str) -> str:
    """Letters, digits, '-' and '_' only; at most MAX_NAME characters."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name or "").strip("-_")
    return slug[:MAX_NAME].strip("-_")


def check_name(name: str | None) -> str:
    if name is None:
        return ""
    if not isinstance(name, str):
        raise ConfigError("--name: expected text")
    name = " ".join(name.split())
    bad = next((c for c in name if not c.isprintable()), None)
    if bad is not None:
        raise ConfigError(f"--name: contains the control character {bad!r}; use letters, "
                          "digits, spaces, '-' and '_'")
    if len(name) > MAX_NAME:
        raise ConfigError(f"--name: {len(name)} characters is too long; at most {MAX_NAME}")
    return name


def last_error(log_path) -> str | None:
    """The last `error:` line of a worker's log (else its last line); reads only its end."""
    try:
        with open(log_path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 8192))
            lines = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if line.startswith("error:"):
            return line[len("error:"):].strip()
    return lines[-1] if lines else None


def _unlink_quietly(p: Path) -> None:
    try:
        p.unlink()
    except OSError:
        pass


@dataclass
class RunInfo:
    id: str
    path: Path
    name: str = ""
    state: str = "unknown"
    dataset: str = ""
    arch: str = ""
    best_val_acc: float | None = None
    best_epoch: int | None = None
    epoch: int = 0
    epochs: int = 0
    device: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    damaged: str | None = None
    progress: dict = field(default_factory=dict)
    has_eval: bool = False
    has_best: bool = False
    has_last: bool = False
    created: float = 0.0
    sweep: str | None = None
    trial: str | None = None


class RunStore:
    """Lists, reads, renames and deletes runs under one folder.

    Reading changes nothing: a run is `running` exactly while a process holds its lock, and
    what killed processes left is cleaned only by `clean_leftovers`, which workers call.
    """

    def __init__(self, root=None):
        self.root = Path(root or "runs")

    # -- creating
    def create(self, name: str | None = None, **meta) -> tuple[Path, "RunLock"]:
        """A new run directory, locked from its first file on: (path, the held lock).

        `meta` goes into meta.json beside the name (a sweep's id and trial, for instance).
        """
        name = check_name(name)
        with writing("a new run", self.root):
            return self._create(name, meta)

    def _create(self, name: str, meta: dict) -> tuple[Path, "RunLock"]:
        self.root.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        slug = slugify(name)
        base = f"{stamp}-{slug}" if slug else stamp
        for n in range(1000):
            run_id = base if n == 0 else f"{base}-{n}"
            path = self.root / run_id
            try:
                path.mkdir()      # exclusive: two workers never share a directory
            except FileExistsError:
                continue
            lock = RunLock(path).acquire()
            try:
                write_json_atomic(path / "meta.json", {"name": name, "created": time.time(), **meta})
            except BaseException:
                lock.release()
                raise
            return path, lock
        raise RuntimeError(f"could not create a run directory under {self.root}")

    # -- reading
    def path(self, run_id: str) -> Path:
        if not run_id or "/" in run_id or "\\" in run_id or run_id.startswith(".") or "\x00" in run_id:
            raise ConfigError(f"run id {run_id!r} is not a run of {self.root}")
        p = self.root / run_id
        if not p.is_dir():
            raise ConfigError(f"run {run_id!r} not found in {self.root}")
        return p

    def _run_dirs(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return [p for p in self.root.iterdir()
                if p.is_dir() and not p.name.startswith(".")
                and ((p / "config.json").exists() or (p / "status.json").exists()
                     or (p / "meta.json").exists())]

    def list(self) -> list[RunInfo]:
        runs = [self.info(p) for p in self._run_dirs()]
        # ids tell the second; the creation time orders runs made within the same one
        return sorted(runs, key=lambda r: (r.id[:15], r.created, r.id), reverse=True)

    def clean_leftovers(self) -> None:
        """Remove what killed processes left, and only that: temp files older than
        LEFTOVER_AGE_S in runs whose lock no process holds, half-deleted runs, and worker logs
        older than a week. Called by workers as they start, never by a page's poll."""
        old = time.time() - LEFTOVER_AGE_S
        for run in self._run_dirs():
            temps = [t for t in run.glob(".*.tmp") if _mtime(t) < old]
            if temps and not run_is_locked(run):
                for tmp in temps:
                    _unlink_quietly(tmp)
        for p in self.root.glob(".deleting-*"):
            if _mtime(p) < old:
                shutil.rmtree(p, ignore_errors=True)
        week_ago = time.time() - 7 * 86400
        for p in (self.root / ".pending").glob("*"):
            if _mtime(p) < week_ago:
                _unlink_quietly(p)

    def info(self, path) -> RunInfo:
        """One run's summary. Whatever its files hold, this returns: a file that fails its
        checks makes the run `damaged`, with the file and the reason."""
        path = Path(path)
        r = RunInfo(id=path.name, path=path)
        reading = "run directory"
        try:
            alive = run_is_locked(path)
            # what is there, before what it holds: a damaged run can still be re-evaluated
            r.has_best, r.has_last = (path / "best.pt").exists(), (path / "last.pt").exists()
            r.has_eval = (path / "eval.json").exists()
            reading = "meta.json"
            meta = json_object(path / reading)
            r.name = printable(text(meta, "name", reading))
            r.created = number(meta, "created", reading) or 0.0
            r.sweep, r.trial = text(meta, "sweep", reading, None), text(meta, "trial", reading, None)
            reading = "status.json"
            st = json_object(path / reading)
            state = text(st, "state", reading, "unknown")
            if st and state not in STATES:
                raise DamagedFile(f"state {state!r:.40} is not one of {', '.join(STATES)}")
            r.state, r.epoch = state, count(st, "epoch", reading)
            r.device = printable(text(st, "device", reading))
            r.started_at = text(st, "started_at", reading, None)
            r.finished_at = text(st, "finished_at", reading, None)
            r.error = text(st, "error", reading, None)
            r.progress = progress(st, reading)
            r.epochs = count(st, "epochs", reading)
            reading = "config.json"
            cfg = json_object(path / reading)
            r.dataset = printable(text(section(cfg, "data", reading), "dataset", reading))
            r.arch = printable(text(section(cfg, "model", reading), "arch", reading))
            r.epochs = r.epochs or count(section(cfg, "train", reading), "epochs", reading)
            if alive:             # a worker holds the lock: starting, training or resuming
                r.state, r.error = "running", None
                if st.get("state") != "running":
                    r.progress, r.finished_at = {}, None
            elif r.state == "running" or not st:
                r.state = "failed"
                r.error = r.error or ("the training process is gone" if st else
                                      last_error(path / WORKER_LOG)
                                      or "the worker ended before training started")
            reading = "metrics.jsonl"
            best = best_epoch(read_metrics(path))
            if best:
                r.best_val_acc, r.best_epoch = best.get("val_acc"), best.get("epoch")
            reading = "eval.json"
            if r.has_eval:
                check_eval(json_object(path / reading))
            if not st and not cfg and not alive:
                r.state = "damaged"
                r.damaged = "no config.json or status.json"
        except (OSError, ValueError, TypeError, AttributeError, ArithmeticError) as e:
            why = str(e) if isinstance(e, DamagedFile) else f"{e.__class__.__name__}: {e}"
            r.state, r.damaged = "damaged", printable(f"{reading} is damaged ({why})")
        return r

    def get(self, run_id: str) -> RunInfo:
        return self.info(self.path(run_id))

    def config(self, run_id: str) -> dict:
        return read_json(self.path(run_id) / "config.json")

    def metrics(self, run_id: str) -> list[dict]:
        return read_metrics(self.path(run_id))

    def eval(self, run_id: str) -> dict | None:
        """eval.json, checked (DamagedFile when it is not a usable evaluation); None if absent."""
        p = self.path(run_id) / "eval.json"
        return check_eval(json_object(p)) if p.exists() else None

    def layers(self, run_id: str) -> dict:
        """The run's layer statistics as series over epochs (dlcore.inspect_layers.layer_series):
        a damaged layers.jsonl says why in `damaged` rather than raising."""
        from .inspect_layers import layer_series

        return layer_series(self.path(run_id))

    def active(self) -> list[RunInfo]:
        return [r for r in self.list() if r.state == "running"]

    # -- changing
    def rename(self, run_id: str, name: str) -> None:
        path = self.path(run_id)
        meta = dict(json_object(path / "meta.json"), name=check_name(name))
        with writing(f"rename {run_id}", path):
            write_json_atomic(path / "meta.json", meta)

    def request_stop(self, run_id: str) -> None:
        path = self.path(run_id)
        with writing(f"stop {run_id}", path):
            (path / STOP_FILE).touch()

    def delete(self, run_id: str) -> None:
        p = self.path(run_id)
        if run_is_locked(p):
            raise ConfigError(f"run {run_id!r} is still training; stop it before deleting it")
        with writing(f"delete {run_id}", self.root):
            # held while the directory is renamed away: no worker can start in it meanwhile
            with RunLock(p).acquire(wait=0.5):
                # rename first so that a half-finished delete never looks like a run
                trash = self.root / f".deleting-{run_id}-{int(time.time())}"
                os.replace(p, trash)
        shutil.rmtree(trash, ignore_errors=True)


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return float("inf")     # gone already: nothing to clean
