"""The one training loop, for every architecture: data as device tensors, batches as index slices.

`train()` validates everything before it writes anything, then fills a run directory:
config, status (with in-epoch progress), per-epoch metrics, best/last checkpoints and, at the
end, the test-split evaluation of the best checkpoint. A stop request (the run's STOP file
or SIGTERM) ends it at the next batch with a loadable checkpoint and state `stopped`.
"""
from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

import torch
from torch import nn

from .augment import augment_batch, is_augmenting, normalize
from .config import ConfigError, resolve_config
from .datasets import load_splits
from .models import build_model, count_parameters
from .runs import (STOP_FILE, RunStore, append_jsonl, check_name, now_iso, save_checkpoint,
                   write_json_atomic)

PROGRESS_EVERY_S = 0.5   # how often status.json gets the in-epoch progress (an atomic write)


class TrainingFailed(RuntimeError):
    """Training ended in state `failed`; the message is the run's error."""


def pick_device(pref: str = "auto") -> torch.device:
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if pref == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if pref == "cuda" and not cuda:
        raise ConfigError("train.device: cuda was asked for but no CUDA GPU is available; "
                          f"available: {', '.join(available_devices())}")
    if pref == "mps" and not mps:
        raise ConfigError("train.device: mps was asked for but Apple MPS is not available; "
                          f"available: {', '.join(available_devices())}")
    return torch.device(pref)


def available_devices() -> list[str]:
    found = ["auto", "cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return found


def device_report() -> dict:
    """What this machine offers, for the Train page and `datasets`-style listings."""
    cuda = torch.cuda.is_available()
    return {"auto": str(pick_device("auto")),
            "cuda": torch.cuda.get_device_name(0) if cuda else None,
            "mps": "mps" in available_devices(),
            "cpu_threads": torch.get_num_threads(),
            "torch": torch.__version__}


def autocast_dtype(precision: str, device: torch.device):
    """bf16 where it is asked for, or by default on a CUDA GPU that has it; None means fp32."""
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def autocast(device, dtype):
    """Mixed precision for `dtype`, or nothing at all for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def uses_channels_last(arch: str, device: torch.device) -> bool:
    """Convolutions on a CUDA GPU run faster on NHWC tensors (tensor cores); not worth it on CPU."""
    return device.type == "cuda" and arch in ("cnn", "resnet")


def tune_for(device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True          # fixed shapes: autotune once, reuse
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


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
    write_json_atomic(run_dir / "config.json", cfg)
    Trainer(cfg, run_dir, device, splits, model, progress=progress, log=log).run()
    return run_dir


class EarlyStopping:
    """Watches validation loss; the patience counter resets whenever the loss improves."""

    def __init__(self, patience: int):
        self.patience, self.best, self.bad_epochs = patience, math.inf, 0

    def step(self, val_loss: float) -> bool:
        """Record an epoch; True when it improved on the best so far."""
        if val_loss < self.best:
            self.best, self.bad_epochs = val_loss, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience


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
        self.mean, self.std = (splits.mean, splits.std) if cfg["data"]["normalize"] else \
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
        self.status = {"state": "running", "error": None, "pid": os.getpid(),
                       "device": describe_device(device), "epoch": 0, "epochs": t["epochs"],
                       "best_epoch": None, "best_val_loss": None, "progress": None,
                       "started_at": now_iso(), "finished_at": None,
                       "parameters": count_parameters(self.model)[0]}

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
        early, epoch = EarlyStopping(t["patience"]), 0
        try:
            for epoch in range(1, t["epochs"] + 1):
                started = time.perf_counter()
                train_loss, train_acc, finished = self.train_epoch(epoch)
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
                row = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                       "val_loss": val_loss, "val_acc": val_acc,
                       "lr": self.optimizer.param_groups[0]["lr"],
                       "seconds": round(time.perf_counter() - started, 3)}
                append_jsonl(self.run_dir / "metrics.jsonl", row)
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
            auc = result["roc_auc_macro"]
            self.log(f"test accuracy {result['accuracy']:.4f}  macro F1 {result['f1_macro']:.4f}  "
                     f"ROC-AUC {'n/a' if auc is None else format(auc, '.4f')}  "
                     f"(checkpoint {result['checkpoint']}, epoch {result['epoch']})")
            self.write_status(state="completed", finished_at=now_iso(), progress=None)
        except KeyboardInterrupt:
            self.save("last.pt", epoch - 1 if epoch else 0, partial=True)
            self.write_status(state="stopped", finished_at=now_iso(), progress=None)
            raise
        except Exception as e:
            message = str(e) if isinstance(e, TrainingFailed) else f"{e.__class__.__name__}: {e}"
            self.write_status(state="failed", error=message.splitlines()[0] if message else
                              e.__class__.__name__, finished_at=now_iso(), progress=None)
            raise TrainingFailed(message) from e
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def train_epoch(self, epoch: int, max_batches: int | None = None):
        """One pass over a fresh permutation; returns (loss, acc, finished).

        `max_batches` cuts the pass short (the benchmark times a fixed number of steps).
        """
        t, aug = self.cfg["train"], self.cfg["data"]["augment"]
        bs, n = t["batch_size"], len(self.train_y)
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
        if filename == "last.pt":
            ckpt["optimizer_state"] = self.optimizer.state_dict()
            ckpt["partial_epoch"] = partial
        save_checkpoint(self.run_dir / filename, ckpt)


def checkpoint_dict(cfg, model, splits, mean, std, epoch=0, val_loss=None) -> dict:
    """Weights plus everything needed to rebuild the model and prepare its input."""
    return {"format": 1, "config": cfg, "classes": list(splits.classes),
            "input_shape": list(splits.info.shape), "mean": list(mean), "std": list(std),
            "epoch": epoch, "val_loss": val_loss,
            "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()}}


def make_optimizer(model, t: dict):
    params = [p for p in model.parameters() if p.requires_grad]
    lr, wd = t["lr"], t["weight_decay"]
    if t["optimizer"] == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if t["optimizer"] == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if t["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd)
    return torch.optim.RMSprop(params, lr=lr, weight_decay=wd)


def make_scheduler(optimizer, t: dict, batches_per_epoch: int):
    total = max(1, t["epochs"] * batches_per_epoch)
    if t["schedule"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if t["schedule"] == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=t["lr"], total_steps=total)
    return None


class _NoBar:
    def update(self, n=1):
        pass

    def close(self):
        pass


def _bar(total, desc, show):
    if not show:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="batch", leave=False, file=sys.stderr,
                dynamic_ncols=True)
