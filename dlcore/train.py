"""The one training loop, for every architecture: data as device tensors, batches as index slices.

`train()` validates everything before it writes anything, then fills a run directory:
config, status (with in-epoch progress), per-epoch metrics, best/last checkpoints and, at the
end, the test-split evaluation of the best checkpoint. A stop request (the run's STOP file
or SIGTERM) ends it at the next batch with a loadable checkpoint and state `stopped`.
"""
from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from .augment import augment_batch, is_augmenting, normalize
from .config import ConfigError, resolve_config
from .datasets import load_splits
from .devices import (autocast, autocast_dtype, available_devices, describe_device,  # noqa: F401
                      device_report, pick_device, tune_for, uses_channels_last)
from .inspect_layers import LayerProbe
from .tblog import TBLog
from .models import build_model, count_parameters
from .optim import EarlyStopping, make_optimizer, make_scheduler
from .runs import (STOP_FILE, RunLock, RunStore, append_jsonl, check_name, load_checkpoint,
                   now_iso, read_json, read_metrics, save_checkpoint, write_bytes_atomic,
                   write_json_atomic)

PROGRESS_EVERY_S = 0.5   # how often status.json gets the in-epoch progress (an atomic write)
OutOfMemory = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


class TrainingFailed(RuntimeError):
    """Training ended in state `failed`; the message is the run's error."""


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
          progress: bool = True, log=print) -> Path:
    """Train a config into a new run directory and return its path."""
    name = check_name(name)
    cfg, device, splits, model = prepare(cfg, data_root)
    run_dir = RunStore(runs_dir).create(name)
    with RunLock(run_dir):
        write_json_atomic(run_dir / "config.json", cfg)
        Trainer(cfg, run_dir, device, splits, model, progress=progress, log=log).run()
    return run_dir


def resume(run_dir, data_root=None, epochs: int | None = None, progress: bool = True,
           log=print) -> Path:
    """Continue a stopped or failed run from its last.pt (optimizer, RNG and epoch restored).

    `epochs` raises the run's total, which also lets a completed run train further.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise ConfigError(f"RUN_DIR: {str(run_dir)!r} is not a run directory")
    with RunLock(run_dir):
        info = RunStore(run_dir.parent).info(run_dir)
        if not (run_dir / "last.pt").exists():
            raise ConfigError(f"run {run_dir.name}: there is no last.pt to resume from")
        ckpt = load_checkpoint(run_dir / "last.pt")
        cfg = read_json(run_dir / "config.json")
        done = int(ckpt.get("epoch") or 0)
        if epochs is not None:
            cfg["train"]["epochs"] = epochs
        if cfg["train"]["epochs"] <= done:
            raise ConfigError(f"--epochs: run {run_dir.name} has done {done} of "
                              f"{cfg['train']['epochs']} epochs ({info.state}); allowed: more "
                              f"than {done}")
        cfg, device, splits, model = prepare(cfg, data_root)
        write_json_atomic(run_dir / "config.json", cfg)
        (run_dir / STOP_FILE).unlink(missing_ok=True)     # the request that stopped it is done
        trainer = Trainer(cfg, run_dir, device, splits, model, progress=progress, log=log)
        trainer.restore(ckpt)
        log(f"resuming {run_dir.name} after epoch {done}")
        trainer.run()
    return run_dir


class Trainer:
    def __init__(self, cfg, run_dir: Path, device, splits, model, progress=True, log=print):
        self.cfg, self.run_dir, self.device, self.splits = cfg, Path(run_dir), device, splits
        t = cfg["train"]
        tune_for(device)
        self.channels_last = uses_channels_last(cfg["model"]["arch"], device)
        self.model = model.to(device, memory_format=torch.channels_last) if self.channels_last \
            else model.to(device)
        # the compiled wrapper runs the steps; checkpoints keep the plain module's weights
        self.step_model = torch.compile(self.model) if t["compile"] else self.model
        self.amp_dtype = autocast_dtype(t["precision"], device)
        self.show_bar, self.log = progress, log
        # a pretrained model applies ImageNet's normalisation itself, to 0..1 images
        own_norm = cfg["data"]["normalize"] and cfg["model"]["arch"] != "pretrained"
        self.mean, self.std = (splits.mean, splits.std) if own_norm else \
            ((0.0,) * len(splits.mean), (1.0,) * len(splits.std))
        self.loss_fn = nn.CrossEntropyLoss()
        self.optimizer = make_optimizer(self.model, t)
        self.batches = math.ceil(len(splits.train_y) / t["batch_size"])
        self.scheduler = make_scheduler(self.optimizer, t, self.batches)
        self.gen = torch.Generator(device=device).manual_seed(t["seed"])
        self.train_x = splits.train_x.to(device)
        self.train_y = splits.train_y.to(device)
        self.val_x, self.val_y = splits.val_x.to(device), splits.val_y.to(device)
        self.stop_requested = False
        self.early, self.start_epoch = EarlyStopping(t["patience"]), 1
        self.probe = LayerProbe.for_trainer(self) if t.get("layer_stats", True) else None
        self.tb = TBLog(self.run_dir, note=self.note)   # TensorBoard events in RUN_DIR/tb
        self.batch_size = t["batch_size"]   # halved if the GPU runs out of memory
        self.status = {"state": "running", "error": None, "pid": os.getpid(),
                       "device": describe_device(device), "epoch": 0, "epochs": t["epochs"],
                       "best_epoch": None, "best_val_loss": None, "progress": None,
                       "started_at": now_iso(), "finished_at": None,
                       "parameters": count_parameters(self.model)[0], "notes": []}

    # -------------------------------------------------------------- status
    def write_status(self, **changes):
        self.status.update(changes)
        write_json_atomic(self.run_dir / "status.json", self.status)

    def stop_wanted(self) -> bool:
        if not self.stop_requested and (self.run_dir / STOP_FILE).exists():
            self.stop_requested = True
        return self.stop_requested

    def _on_sigterm(self, signum, frame):
        self.stop_requested = True

    # -------------------------------------------------------------- the loop
    def run(self):
        t = self.cfg["train"]
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        self.write_status()
        early, epoch = self.early, self.start_epoch - 1
        try:
            if self.probe is not None and self.start_epoch == 1:
                self.probe.record(0)     # the initialisation, before any step
            for epoch in range(self.start_epoch, t["epochs"] + 1):
                started = time.perf_counter()
                while True:
                    try:
                        train_loss, train_acc, finished = self.train_epoch(epoch)
                        break
                    except OutOfMemory:
                        self.halve_batch(epoch)
                if not finished:
                    self.save("last.pt", epoch - 1, partial=True)
                    self.write_status(state="stopped", finished_at=now_iso(), progress=None)
                    self.log(f"stopped during epoch {epoch}; last.pt saved")
                    return
                val_loss, val_acc = self.evaluate_split(self.val_x, self.val_y)
                if not math.isfinite(val_loss):
                    raise TrainingFailed(f"validation loss became {val_loss} at epoch {epoch}; "
                                         f"the model diverged: try a lower learning rate "
                                         f"(train.lr is {t['lr']:g})")
                if self.probe is not None:    # inside the epoch's seconds: its cost shows
                    self.probe.record(epoch)
                row = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                       "val_loss": val_loss, "val_acc": val_acc,
                       "lr": self.optimizer.param_groups[0]["lr"],
                       "seconds": round(time.perf_counter() - started, 3)}
                if self.batch_size != t["batch_size"]:
                    row["batch_size"] = self.batch_size
                append_jsonl(self.run_dir / "metrics.jsonl", row)
                self.tb.epoch(row)
                improved = early.step(val_loss)
                if improved:
                    self.save("best.pt", epoch, val_loss=val_loss)
                    self.status.update(best_epoch=epoch, best_val_loss=val_loss)
                self.save("last.pt", epoch, val_loss=val_loss)
                self.write_status(epoch=epoch, progress=None)
                self.log(f"epoch {epoch:>3}/{t['epochs']}  train_loss {train_loss:.4f}  "
                         f"train_acc {train_acc:.4f}  val_loss {val_loss:.4f}  "
                         f"val_acc {val_acc:.4f}  {row['seconds']:.1f}s" + ("  *" if improved else ""))
                if self.stop_wanted():
                    self.write_status(state="stopped", finished_at=now_iso())
                    self.log(f"stopped after epoch {epoch}")
                    return
                if early.should_stop:
                    self.log(f"early stopping: val_loss has not improved for {early.bad_epochs} epochs")
                    self.status["early_stopped"] = epoch
                    break
            from .evaluate import evaluate_run
            result = evaluate_run(self.run_dir, model=self.model, splits=self.splits,
                                  device=self.device)
            self.tb.finish(self.cfg, result)
            auc = result["roc_auc_macro"]
            self.log(f"test accuracy {result['accuracy']:.4f}  macro F1 {result['f1_macro']:.4f}  "
                     f"ROC-AUC {'n/a' if auc is None else format(auc, '.4f')}  "
                     f"(checkpoint {result['checkpoint']}, epoch {result['epoch']})")
            self.write_status(state="completed", finished_at=now_iso(), progress=None)
        except KeyboardInterrupt:
            self.save("last.pt", max(epoch - 1, 0), partial=True)
            self.write_status(state="stopped", finished_at=now_iso(), progress=None)
            raise
        except Exception as e:
            message = str(e) if isinstance(e, TrainingFailed) else f"{e.__class__.__name__}: {e}"
            self.write_status(state="failed", error=message.splitlines()[0] if message else
                              e.__class__.__name__, finished_at=now_iso(), progress=None)
            raise TrainingFailed(message) from e
        finally:
            self.tb.close()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def train_epoch(self, epoch: int, max_batches: int | None = None):
        """One pass over a fresh permutation; returns (loss, acc, finished).

        `max_batches` cuts the pass short (the benchmark times a fixed number of steps).
        """
        aug = self.cfg["data"]["augment"]
        bs, n = self.batch_size, len(self.train_y)
        self.model.train()
        perm = torch.randperm(n, generator=self.gen, device=self.device)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        seen, last_report = 0, time.perf_counter()
        check_each_batch = self.device.type == "cpu"
        bar = _bar(self.batches, f"epoch {epoch}", self.show_bar)
        try:
            for b in range(min(self.batches, max_batches or self.batches)):
                idx = perm[b * bs:(b + 1) * bs]
                if len(idx) < 2 and b > 0:
                    break   # BatchNorm cannot train on a batch of one
                x = self.train_x[idx].float().div_(255.0)
                if is_augmenting(aug):
                    x = augment_batch(x, aug, self.gen)
                x = normalize(x, self.mean, self.std)
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                y = self.train_y[idx]
                with autocast(self.device, self.amp_dtype):
                    logits = self.step_model(x)
                    loss = self.loss_fn(logits.float(), y)
                if check_each_batch and not math.isfinite(loss.item()):
                    self._diverged(epoch, b + 1, loss.item())
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                if self.scheduler is not None:
                    self.scheduler.step()
                loss_sum += loss.detach() * len(idx)
                correct += (logits.argmax(1) == y).sum()
                seen += len(idx)
                bar.update()
                if self.stop_wanted():
                    return float("nan"), float("nan"), False
                now = time.perf_counter()
                if now - last_report >= PROGRESS_EVERY_S:
                    last_report = now
                    if not check_each_batch and not math.isfinite(loss_sum.item()):
                        self._diverged(epoch, b + 1, loss_sum.item())
                    self.write_status(progress={"epoch": epoch, "batch": b + 1,
                                                "batches": self.batches,
                                                "fraction": round((b + 1) / self.batches, 4)})
        finally:
            bar.close()
        train_loss = loss_sum.item() / max(seen, 1)
        if not math.isfinite(train_loss):
            self._diverged(epoch, self.batches, train_loss)
        return train_loss, correct.item() / max(seen, 1), True

    def _diverged(self, epoch, batch, value):
        raise TrainingFailed(f"loss became {value} at epoch {epoch}, batch {batch}; the model "
                             f"diverged: try a lower learning rate (train.lr is "
                             f"{self.cfg['train']['lr']:g})")

    def evaluate_split(self, x_u8, y):
        from .evaluate import predict_logits
        logits = predict_logits(self.model, x_u8, self.mean, self.std, self.device,
                                amp_dtype=self.amp_dtype)
        loss = nn.functional.cross_entropy(logits, y.to(logits.device)).item()
        acc = (logits.argmax(1).cpu() == y.cpu()).float().mean().item()
        return loss, acc

    def save(self, filename: str, epoch: int, val_loss=None, partial=False):
        ckpt = checkpoint_dict(self.cfg, self.model, self.splits, self.mean, self.std,
                               epoch=epoch, val_loss=val_loss)
        if filename == "last.pt":   # everything a resume needs to continue exactly
            ckpt.update(optimizer_state=self.optimizer.state_dict(), partial_epoch=partial,
                        scheduler_state=self.scheduler.state_dict() if self.scheduler else None,
                        total_epochs=self.cfg["train"]["epochs"], batch_size=self.batch_size,
                        early={"best": self.early.best if math.isfinite(self.early.best) else None,
                               "bad_epochs": self.early.bad_epochs},
                        best_epoch=self.status.get("best_epoch"),
                        rng={"generator": self.gen.get_state(), "torch": torch.get_rng_state(),
                             **({"cuda": torch.cuda.get_rng_state(self.device)}
                                if self.device.type == "cuda" else {})})
        save_checkpoint(self.run_dir / filename, ckpt)

    def restore(self, ckpt: dict) -> None:
        """Continue from a last.pt: weights, optimizer, schedule, RNG, early stopping, metrics."""
        done = int(ckpt.get("epoch") or 0)
        self.model.load_state_dict(ckpt["model_state"])
        if ckpt.get("optimizer_state"):
            self.optimizer.load_state_dict(ckpt["optimizer_state"])
        self.batch_size = int(ckpt.get("batch_size") or self.batch_size)
        self.batches = math.ceil(len(self.train_y) / self.batch_size)
        if self.scheduler is not None:
            if ckpt.get("scheduler_state") and ckpt.get("total_epochs") == self.cfg["train"]["epochs"]:
                self.scheduler.load_state_dict(ckpt["scheduler_state"])
            else:    # a longer run: the same schedule stretched, replayed to this point
                self.rebuild_scheduler(done * self.batches)
        rng = ckpt.get("rng") or {}
        if "generator" in rng:
            self.gen.set_state(rng["generator"])
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        early = ckpt.get("early") or {}
        self.early.best = early.get("best") if early.get("best") is not None else math.inf
        self.early.bad_epochs = int(early.get("bad_epochs") or 0)
        self.start_epoch = done + 1
        if self.probe is not None:
            self.probe.truncate(done)
        rows = [r for r in read_metrics(self.run_dir) if r["epoch"] <= done]
        write_bytes_atomic(self.run_dir / "metrics.jsonl",
                           "".join(json.dumps(r) + "\n" for r in rows).encode())
        best = min(rows, key=lambda r: r["val_loss"]) if rows else None
        self.status.update(epoch=done, best_epoch=best["epoch"] if best else None,
                           best_val_loss=best["val_loss"] if best else None,
                           resumed_from_epoch=done)
        if ckpt.get("partial_epoch"):
            self.note(f"resumed from a stop during epoch {done + 1}: that epoch starts again "
                      "from the weights at the stop")

    def rebuild_scheduler(self, steps_done: int) -> None:
        for g in self.optimizer.param_groups:
            g["lr"] = g.get("initial_lr", self.cfg["train"]["lr"])
            g.pop("initial_lr", None)
        t = dict(self.cfg["train"], batch_size=self.batch_size)
        self.scheduler = make_scheduler(self.optimizer, t, self.batches)
        with warnings.catch_warnings():     # replaying steps, not skipping optimizer steps
            warnings.simplefilter("ignore")
            limit = getattr(self.scheduler, "total_steps", None)   # OneCycleLR ends there
            for _ in range(steps_done if limit is None else min(steps_done, limit - 1)):
                self.scheduler.step()

    def halve_batch(self, epoch: int) -> None:
        """Out of device memory: retry the epoch with half the batch, or fail saying why."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        params = count_parameters(self.model)[0]
        if self.batch_size < 4:
            raise TrainingFailed(f"out of {self.device.type} memory at batch size {self.batch_size} "
                                 f"with a model of {params:,} parameters; choose a smaller model")
        old, self.batch_size = self.batch_size, self.batch_size // 2
        self.batches = math.ceil(len(self.train_y) / self.batch_size)
        if self.scheduler is not None:
            self.rebuild_scheduler((epoch - 1) * self.batches)
        self.note(f"out of {self.device.type} memory at batch size {old} (model of {params:,} "
                  f"parameters): epoch {epoch} restarts with batch size {self.batch_size}")
        self.write_status(batch_size=self.batch_size)

    def note(self, text: str) -> None:
        self.status["notes"].append(text)
        self.log(text)


def checkpoint_dict(cfg, model, splits, mean, std, epoch=0, val_loss=None) -> dict:
    """Weights plus everything needed to rebuild the model and prepare its input."""
    return {"format": 1, "config": cfg, "classes": list(splits.classes),
            "input_shape": list(splits.info.shape), "mean": list(mean), "std": list(std),
            "epoch": epoch, "val_loss": val_loss,
            "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()}}


def _bar(total, desc, show):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="batch", leave=False, file=sys.stderr,
                dynamic_ncols=True, disable=not show)
