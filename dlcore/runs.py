"""The run directory: atomic files, checkpoints loaded weights-only, and the one place that reads runs.

A reader never sees a half-written file; a damaged run is listed as damaged, never raised.
"""
from __future__ import annotations

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

RUN_FILES = ("config.json", "status.json", "metrics.jsonl", "best.pt", "last.pt", "eval.json",
             "meta.json")
STOP_FILE = "STOP"
LOCK_FILE = ".lock"
MAX_NAME = 80


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


def save_checkpoint(path: Path, ckpt: dict) -> None:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(ckpt, buf)
    write_bytes_atomic(path, buf.getvalue())


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded safely; the message says why."""


def load_checkpoint(path: Path) -> dict:
    """Load weights and plain values only: nothing in the file is run as code."""
    import pickle

    import torch

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path.name}: refused, it holds more than weights and plain "
                              f"values ({str(e).splitlines()[0][:200]})") from None
    except Exception as e:
        raise CheckpointError(f"{path.name}: damaged or truncated checkpoint "
                              f"({e.__class__.__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})") from None
    if not isinstance(ckpt, dict) or "model_state" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"{path.name}: not a dlcore checkpoint (no model_state/config)")
    return ckpt


# ---------------------------------------------------------------- reading runs

def read_json(path: Path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


_JSON_CACHE: dict[str, tuple] = {}


def _json_or_empty(path: Path) -> dict:
    """A run file's JSON object ({} when absent), parsed again only when the file changes."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return {}
    key = (st.st_mtime_ns, st.st_size, st.st_ino)
    hit = _JSON_CACHE.get(str(path))
    if hit and hit[0] == key:
        return hit[1]
    value = read_json(path)
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    if len(_JSON_CACHE) > 2000:
        _JSON_CACHE.clear()
    _JSON_CACHE[str(path)] = (key, value)
    return value


def read_metrics(run_dir: Path) -> list[dict]:
    """Per-epoch metrics; a half-written last line is skipped, a damaged middle line raises."""
    p = Path(run_dir) / "metrics.jsonl"
    if not p.exists():
        return []
    data = p.read_bytes()
    lines = data.split(b"\n")
    unfinished = not data.endswith(b"\n")   # the worker died while writing the last line
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or "epoch" not in row:
                raise ValueError("not an epoch record")
        except ValueError:
            if unfinished and i == len(lines) - 1:
                continue
            raise ValueError(f"metrics.jsonl line {i + 1} is damaged") from None
        out.append(row)
    return out


def slugify(name: str) -> str:
    """Letters, digits, '-' and '_' only; at most MAX_NAME characters."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name or "").strip("-_")
    return slug[:MAX_NAME].strip("-_")


def check_name(name: str | None) -> str:
    if name is None:
        return ""
    if not isinstance(name, str):
        raise ConfigError("--name: expected text")
    if "\x00" in name:
        raise ConfigError("--name: contains a NUL byte; use letters, digits, spaces, '-' and '_'")
    name = " ".join(name.split())
    if len(name) > MAX_NAME:
        raise ConfigError(f"--name: {len(name)} characters is too long; at most {MAX_NAME}")
    return name


def pid_alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:   # a zombie (exited, not yet reaped by its parent) is gone for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


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

    @property
    def label(self) -> str:
        return f"{self.name or self.id} ({self.id})" if self.name else self.id

    @property
    def active(self) -> bool:
        return self.state == "running"


class RunStore:
    """Lists, reads, renames and deletes runs under one folder."""

    def __init__(self, root=None):
        self.root = Path(root or "runs")

    # -- creating
    def create(self, name: str | None = None) -> Path:
        name = check_name(name)
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
            write_json_atomic(path / "meta.json", {"name": name, "created": time.time()})
            return path
        raise RuntimeError(f"could not create a run directory under {self.root}")

    # -- reading
    def path(self, run_id: str) -> Path:
        if not run_id or "/" in run_id or "\\" in run_id or run_id.startswith(".") or "\x00" in run_id:
            raise ConfigError(f"run id {run_id!r} is not a run of {self.root}")
        p = self.root / run_id
        if not p.is_dir():
            raise ConfigError(f"run {run_id!r} not found in {self.root}")
        return p

    def list(self) -> list[RunInfo]:
        if not self.root.is_dir():
            return []
        runs = [self.info(p) for p in self.root.iterdir()
                if p.is_dir() and not p.name.startswith(".")
                and ((p / "config.json").exists() or (p / "status.json").exists()
                     or (p / "meta.json").exists())]
        self.clean_leftovers(runs)
        # ids tell the second; the creation time orders runs made within the same one
        return sorted(runs, key=lambda r: (r.id[:15], r.created, r.id), reverse=True)

    def clean_leftovers(self, runs: list[RunInfo]) -> None:
        """Remove what killed processes left: temp files of runs no process writes any more,
        half-deleted runs, and worker logs older than a week."""
        for r in runs:
            if r.state != "running":
                for tmp in r.path.glob(".*.tmp"):
                    _unlink_quietly(tmp)
        for p in self.root.glob(".deleting-*"):
            shutil.rmtree(p, ignore_errors=True)
        week_ago = time.time() - 7 * 86400
        for p in (self.root / ".pending").glob("*"):
            try:
                if p.stat().st_mtime < week_ago:
                    _unlink_quietly(p)
            except OSError:
                pass

    def info(self, path) -> RunInfo:
        path = Path(path)
        r = RunInfo(id=path.name, path=path)
        reading = "run directory"
        try:
            reading = "meta.json"
            meta = _json_or_empty(path / reading)
            r.name, r.created = meta.get("name", ""), float(meta.get("created") or 0)
            reading = "status.json"
            st = _json_or_empty(path / reading)
            reading = "config.json"
            cfg = _json_or_empty(path / reading)
            reading = "status.json"
            r.state = st.get("state", "unknown")
            r.epoch = int(st.get("epoch") or 0)
            r.epochs = int(st.get("epochs") or cfg.get("train", {}).get("epochs") or 0)
            r.device = st.get("device") or ""
            r.started_at, r.finished_at = st.get("started_at"), st.get("finished_at")
            r.error = st.get("error")
            r.progress = st.get("progress") or {}
            reading = "config.json"
            r.dataset = cfg.get("data", {}).get("dataset", "")
            r.arch = cfg.get("model", {}).get("arch", "")
            if r.state == "running" and not pid_alive(st.get("pid")):
                r.state = "failed"
                r.error = r.error or f"the training process (pid {st.get('pid')}) is gone"
            reading = "metrics.jsonl"
            metrics = read_metrics(path)
            if metrics:
                best = min(metrics, key=lambda m: m.get("val_loss", float("inf")))
                r.best_val_acc, r.best_epoch = best.get("val_acc"), best.get("epoch")
            reading = "eval.json"
            r.has_eval = (path / reading).exists()
            if r.has_eval and not isinstance(_json_or_empty(path / reading).get("accuracy"), (int, float)):
                raise ValueError("no accuracy in it")
            r.has_best, r.has_last = (path / "best.pt").exists(), (path / "last.pt").exists()
            if not st and not cfg:
                r.state = "damaged"
                r.damaged = "no config.json or status.json"
        except (OSError, ValueError, TypeError, AttributeError) as e:
            r.state, r.damaged = "damaged", f"{reading} is damaged ({e.__class__.__name__}: {e})"
        return r

    def get(self, run_id: str) -> RunInfo:
        return self.info(self.path(run_id))

    def config(self, run_id: str) -> dict:
        return read_json(self.path(run_id) / "config.json")

    def metrics(self, run_id: str) -> list[dict]:
        return read_metrics(self.path(run_id))

    def eval(self, run_id: str) -> dict | None:
        p = self.path(run_id) / "eval.json"
        return read_json(p) if p.exists() else None

    def active(self) -> list[RunInfo]:
        return [r for r in self.list() if r.state == "running"]

    # -- changing
    def rename(self, run_id: str, name: str) -> None:
        path = self.path(run_id)
        meta = dict(_json_or_empty(path / "meta.json"), name=check_name(name))
        write_json_atomic(path / "meta.json", meta)

    def request_stop(self, run_id: str) -> None:
        (self.path(run_id) / STOP_FILE).touch()

    def delete(self, run_id: str) -> None:
        p = self.path(run_id)
        info = self.info(p)
        if info.state == "running":
            raise ConfigError(f"run {run_id!r} is still training; stop it before deleting it")
        # rename first so that a half-finished delete never looks like a run
        trash = self.root / f".deleting-{run_id}-{int(time.time())}"
        os.replace(p, trash)
        shutil.rmtree(trash, ignore_errors=True)


class RunLock:
    """An exclusive lock on a run directory held while a worker writes into it."""

    def __init__(self, run_dir: Path):
        self.path, self.fd = Path(run_dir) / LOCK_FILE, None

    def __enter__(self):
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConfigError(f"run {self.path.parent.name} is being written by another "
                              f"process (pid {holder}); stop it first") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc):
        os.close(self.fd)      # closing releases the lock; the file stays, harmlessly
