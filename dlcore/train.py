"""Training a config into a run directory, or resuming one: the orchestration around the loop.

`train()` validates everything before it writes anything (or, for a run an app created, writes
the input error into the run), holds the run's lock while it trains, and cleans what killed
workers left beside it. The loop itself is dlcore.trainer.Trainer.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .config import ConfigError, config_warnings, resolve_config
from .splits import load_splits
from .devices import pick_device
from .models import build_model
from .runfiles import DamagedFile, read_json
from .checkpoints import load_checkpoint
from .runs import STOP_FILE, RunStore, check_name, now_iso, write_json_atomic
from .runlock import RunLock
from .signals import stop_on_sigterm
from .trainer import Trainer


def prepare(cfg: dict | None, data_root=None):
    """Resolve the config, load the data and build the model: every input error happens here."""
    cfg = resolve_config(cfg)
    device = pick_device(cfg["train"]["device"])
    splits = load_splits(cfg["data"], cfg["train"]["seed"], data_root)
    n_train = len(splits.train_y)
    if cfg["train"]["batch_size"] > n_train:
        raise ConfigError(f"train.batch_size: {cfg['train']['batch_size']} is larger than the "
                          f"training split ({n_train} images); allowed: 1 to {n_train}")
    torch.manual_seed(cfg["train"]["seed"])
    model = build_model(cfg["model"], splits.info.shape, len(splits.classes))
    return cfg, device, splits, model


def train(cfg: dict | None, runs_dir="runs", name: str | None = None, data_root=None,
          progress: bool = True, log=print, run_dir=None, **meta) -> Path:
    """Train a config into a run directory and return its path.

    Without `run_dir` a new run is made in `runs_dir` (after every input check, so bad input
    writes nothing); with it, the run an app made and locked for this worker is filled, and an
    input error is written into its status.json for the app to show."""
    with stop_on_sigterm():
        if run_dir is None:
            name = check_name(name)
            cfg, device, splits, model = prepare(cfg, data_root)
            run_dir, lock = RunStore(runs_dir).create(name, **meta)
        else:
            run_dir = Path(run_dir)
            if not (run_dir / "meta.json").is_file() or (run_dir / "status.json").exists():
                raise ConfigError(f"--run-dir: {str(run_dir)!r} is not a new run directory; "
                                  "give one made for this run (or leave --run-dir out)")
            lock = RunLock(run_dir).acquire()
            try:
                cfg, device, splits, model = prepare(cfg, data_root)
            except BaseException as e:
                _write_failed(run_dir, e)
                lock.release()
                raise
        with lock:
            RunStore(run_dir.parent).clean_leftovers()
            write_json_atomic(run_dir / "config.json", cfg)
            _trainer(cfg, run_dir, device, splits, model, progress, log).run()
    return run_dir


def _trainer(cfg, run_dir, device, splits, model, progress, log) -> Trainer:
    """The run's Trainer, the config's warnings in its notes (status.json) and its log."""
    trainer = Trainer(cfg, run_dir, device, splits, model, progress=progress, log=log)
    for text in config_warnings(cfg):
        trainer.writer.note(f"warning: {text}")
    return trainer


def _drop_old_stop_request(run_dir: Path) -> None:
    """A STOP file older than the run's status is the request that stopped it: done. A newer
    one is a stop asked for while this worker was starting, and stands."""
    stop, status = run_dir / STOP_FILE, run_dir / "status.json"
    try:
        if not status.exists() or stop.stat().st_mtime <= status.stat().st_mtime:
            stop.unlink()
    except FileNotFoundError:
        pass


def _write_failed(run_dir: Path, e: BaseException) -> None:
    message = str(e).splitlines()[0] if str(e) else e.__class__.__name__
    write_json_atomic(run_dir / "status.json", {
        "state": "stopped" if isinstance(e, KeyboardInterrupt) else "failed", "error": message,
        "pid": os.getpid(), "epoch": 0, "started_at": now_iso(), "finished_at": now_iso()})


def resume(run_dir, data_root=None, epochs: int | None = None, progress: bool = True,
           log=print) -> Path:
    """Continue a stopped or failed run from its last.pt (optimizer, RNG and epoch restored).

    `epochs` raises the run's total, which also lets a completed run train further.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise ConfigError(f"RUN_DIR: {str(run_dir)!r} is not a run directory")
    with stop_on_sigterm(), RunLock(run_dir):
        RunStore(run_dir.parent).clean_leftovers()
        if not (run_dir / "last.pt").exists():
            raise ConfigError(f"run {run_dir.name}: there is no last.pt to resume from")
        ckpt = load_checkpoint(run_dir / "last.pt")
        try:      # a run directory may come from anywhere: a damaged file is bad input
            raw = read_json(run_dir / "config.json")
            status = (read_json(run_dir / "status.json") if (run_dir / "status.json").exists()
                      else {})
        except DamagedFile as e:
            raise ConfigError(f"run {run_dir.name}: {e}") from None
        try:
            cfg = resolve_config(raw)
        except ConfigError as e:
            raise ConfigError(f"run {run_dir.name}: config.json is invalid: {e}") from None
        state = status.get("state", "unknown") if isinstance(status, dict) else "unknown"
        done = int(ckpt.get("epoch") or 0)
        if epochs is not None:
            cfg["train"]["epochs"] = epochs
        if cfg["train"]["epochs"] <= done:
            raise ConfigError(f"--epochs: run {run_dir.name} has done {done} of "
                              f"{cfg['train']['epochs']} epochs ({state}); allowed: more "
                              f"than {done}")
        cfg, device, splits, model = prepare(cfg, data_root)
        write_json_atomic(run_dir / "config.json", cfg)
        _drop_old_stop_request(run_dir)
        trainer = _trainer(cfg, run_dir, device, splits, model, progress, log)
        trainer.resume_from(ckpt)
        log(f"resuming {run_dir.name} after epoch {done}")
        trainer.run()
    return run_dir


