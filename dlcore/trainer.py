"""The one training loop, for every architecture: data as device tensors, batches as index slices.

`Trainer.run()` fills a run directory: status (with in-epoch progress), per-epoch metrics,
best/last checkpoints and, at the end, the test-split evaluation of the best checkpoint. A
stop request (the run's STOP file or SIGTERM) ends it at the next batch with a loadable
checkpoint and state `stopped`. Out of device memory, an epoch restarts from its start with
half the batch.
"""
from __future__ import annotations

import io
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from .augment import augment_batch, is_augmenting, normalize, stats_tensors
from .devices import autocast, autocast_dtype, describe_device, tune_for, uses_channels_last
from .inspect_layers import LayerProbe
from .models import count_parameters
from .optim import EarlyStopping, make_optimizer, make_scheduler
from .runs import (STOP_FILE, append_jsonl, now_iso, read_metrics, save_checkpoint,
                   write_bytes_atomic, write_json_atomic)
from .signals import stop_requested
from .tblog import TBLog

PROGRESS_EVERY_S = 0.5   # how often status.json gets the in-epoch progress (an atomic write)
OutOfMemory = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


class TrainingFailed(RuntimeError):
    """Training ended in state `failed`; the message is the run's error."""


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
        # made once: a tensor built from Python numbers in the step would copy host to device
        self.norm = stats_tensors(self.mean, self.std, device)
        self.loss_fn = nn.CrossEntropyLoss()
        self.optimizer = make_optimizer(self.model, t)
        self.batch_size = t["batch_size"]   # halved if the device runs out of memory
        self.batches = math.ceil(len(splits.train_y) / self.batch_size)
        self.scheduler = make_scheduler(self.optimizer, t, self.batches)
        self.gen = torch.Generator(device=device).manual_seed(t["seed"])
        self.train_x = splits.train_x.to(device)
        self.train_y = splits.train_y.to(device)
        self.val_x, self.val_y = splits.val_x.to(device), splits.val_y.to(device)
        self.stopping = False
        self.early, self.start_epoch = EarlyStopping(t["patience"]), 1
        self.probe = LayerProbe.for_trainer(self) if t.get("layer_stats", True) else None
        self.tb = TBLog(self.run_dir, note=self.note)   # TensorBoard events in RUN_DIR/tb
        self.restart_point = None    # last.pt's bytes: where an epoch restarts after an OOM
        self.status = {"state": "running", "error": None, "pid": os.getpid(),
                       "device": describe_device(device), "epoch": 0, "epochs": t["epochs"],
                       "best_epoch": None, "best_val_loss": None, "progress": None,
                       "started_at": now_iso(), "finished_at": None,
                       "parameters": count_parameters(self.model)[0], "notes": []}

    @property
    def eval_batch(self) -> int:
        """Inference keeps no activations for a backward pass: twice the training batch fits."""
        return 2 * self.batch_size

    # -------------------------------------------------------------- status
    def write_status(self, **changes):
        self.status.update(changes)
        write_json_atomic(self.run_dir / "status.json", self.status)

    def stop_wanted(self) -> bool:
        """SIGTERM, or the run's STOP file (looked for on the progress timer, not every step)."""
        if not self.stopping and (stop_requested() or (self.run_dir / STOP_FILE).exists()):
            self.stopping = True
        return self.stopping

    # -------------------------------------------------------------- the loop
    def run(self):
        t = self.cfg["train"]
        self.write_status()
        early, epoch = self.early, self.start_epoch - 1
        try:
            if self.stop_wanted():       # asked for while the worker was starting
                self.save("last.pt", epoch, partial=True)
                self.write_status(state="stopped", finished_at=now_iso(), progress=None)
                self.log("stopped before training started")
                return
            if self.restart_point is None:
                self.restart_point = self.state_bytes(epoch)
            if self.probe is not None and self.start_epoch == 1:
                self.with_memory_retry(epoch, lambda: self.probe.record(0))   # the init
            for epoch in range(self.start_epoch, t["epochs"] + 1):
                started = time.perf_counter()
                result = self.with_memory_retry(epoch, lambda: self.epoch_body(epoch))
                if result is None:
                    self.save("last.pt", epoch - 1, partial=True)
                    self.write_status(state="stopped", finished_at=now_iso(), progress=None)
                    self.log(f"stopped during epoch {epoch}; last.pt saved")
                    return
                train_loss, train_acc, val_loss, val_acc = result
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
            result = self.final_evaluation()
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

    def epoch_body(self, epoch: int):
        """Train, validate and probe one epoch: (train_loss, train_acc, val_loss, val_acc),
        or None when a stop came during it."""
        train_loss, train_acc, finished = self.train_epoch(epoch)
        if not finished:
            return None
        val_loss, val_acc = self.evaluate_split(self.val_x, self.val_y)
        if not math.isfinite(val_loss):
            raise TrainingFailed(f"validation loss became {val_loss} at epoch {epoch}; "
                                 f"the model diverged: try a lower learning rate "
                                 f"(train.lr is {self.cfg['train']['lr']:g})")
        if self.probe is not None:    # inside the epoch's seconds: its cost shows
            self.probe.record(epoch)
        return train_loss, train_acc, val_loss, val_acc

    def with_memory_retry(self, epoch: int, step):
        """Run `step`; out of device memory, restart the epoch from the weights, optimizer,
        schedule and random state at its start with half the batch."""
        while True:
            try:
                return step()
            except OutOfMemory:
                self.halve_batch(epoch)

    def final_evaluation(self) -> dict:
        from .evaluate import evaluate_run
        batch = self.eval_batch
        while True:
            try:
                return evaluate_run(self.run_dir, splits=self.splits, device=self.device,
                                    batch=batch)
            except OutOfMemory:
                if batch <= 1:
                    raise TrainingFailed(f"out of {self.device.type} memory while testing "
                                         "the best checkpoint with one image at a time") from None
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                batch //= 2
                self.note(f"out of {self.device.type} memory while testing: batches of {batch}")

    def train_epoch(self, epoch: int, max_batches: int | None = None):
        """One pass over a fresh permutation; returns (loss, acc, finished).

        Nothing in a step waits for the device: loss, accuracy and the first non-finite loss
        are summed on it and read on the progress timer. `max_batches` cuts the pass short
        (the benchmark times a fixed number of steps).
        """
        aug = self.cfg["data"]["augment"]
        augmenting = is_augmenting(aug)
        bs, n = self.batch_size, len(self.train_y)
        self.model.train()
        perm = torch.randperm(n, generator=self.gen, device=self.device)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        first_bad = torch.zeros((), dtype=torch.long, device=self.device)   # 0: none yet
        seen, last_report = 0, time.perf_counter()
        bar = _bar(self.batches, f"epoch {epoch}", self.show_bar)
        try:
            for b in range(min(self.batches, max_batches or self.batches)):
                idx = perm[b * bs:(b + 1) * bs]
                if len(idx) < 2 and b > 0:
                    break   # BatchNorm cannot train on a batch of one
                x = self.train_x[idx].float().div_(255.0)
                if augmenting:
                    x = augment_batch(x, aug, self.gen)
                x = normalize(x, *self.norm)
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                y = self.train_y[idx]
                with autocast(self.device, self.amp_dtype):
                    logits = self.step_model(x)
                    loss = self.loss_fn(logits.float(), y)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                if self.scheduler is not None:
                    self.scheduler.step()
                loss = loss.detach()
                first_bad = torch.where((first_bad == 0) & ~torch.isfinite(loss), b + 1, first_bad)
                loss_sum += loss * len(idx)
                correct += (logits.argmax(1) == y).sum()
                seen += len(idx)
                bar.update()
                if self.stopping or stop_requested():
                    return float("nan"), float("nan"), False
                now = time.perf_counter()
                if now - last_report >= PROGRESS_EVERY_S:
                    last_report = now
                    self.check_finite(epoch, first_bad)
                    if self.stop_wanted():
                        return float("nan"), float("nan"), False
                    self.write_status(progress={"epoch": epoch, "batch": b + 1,
                                                "batches": self.batches,
                                                "fraction": round((b + 1) / self.batches, 4)})
        finally:
            bar.close()
        self.check_finite(epoch, first_bad)
        return loss_sum.item() / max(seen, 1), correct.item() / max(seen, 1), True

    def check_finite(self, epoch: int, first_bad: torch.Tensor) -> None:
        bad = int(first_bad.item())
        if bad:
            raise TrainingFailed(f"loss became non-finite (NaN or infinity) at epoch {epoch}, "
                                 f"batch {bad}; the model diverged: try a lower learning rate "
                                 f"(train.lr is {self.cfg['train']['lr']:g})")

    def evaluate_split(self, x_u8, y):
        from .evaluate import predict_logits
        logits = predict_logits(self.model, x_u8, self.norm[0], self.norm[1], self.device,
                                batch=self.eval_batch, amp_dtype=self.amp_dtype)
        loss = nn.functional.cross_entropy(logits, y.to(logits.device)).item()
        acc = (logits.argmax(1) == y.to(logits.device)).float().mean().item()
        return loss, acc

    # -------------------------------------------------------------- checkpoints
    def state(self, epoch: int, partial=False) -> dict:
        """Everything a resume (or an epoch restarted after an OOM) needs to continue exactly."""
        ckpt = checkpoint_dict(self.cfg, self.model, self.splits, self.mean, self.std, epoch=epoch)
        ckpt.update(optimizer_state=self.optimizer.state_dict(), partial_epoch=partial,
                    scheduler_state=self.scheduler.state_dict() if self.scheduler else None,
                    total_epochs=self.cfg["train"]["epochs"], batch_size=self.batch_size,
                    early={"best": self.early.best if math.isfinite(self.early.best) else None,
                           "bad_epochs": self.early.bad_epochs},
                    best_epoch=self.status.get("best_epoch"),
                    rng={"generator": self.gen.get_state(), "torch": torch.get_rng_state(),
                         **({"cuda": torch.cuda.get_rng_state(self.device)}
                            if self.device.type == "cuda" else {})})
        return ckpt

    def state_bytes(self, epoch: int, partial=False, **extra) -> bytes:
        buf = io.BytesIO()
        torch.save({**self.state(epoch, partial), **extra}, buf)
        return buf.getvalue()

    def save(self, filename: str, epoch: int, val_loss=None, partial=False):
        if filename == "last.pt":
            data = self.state_bytes(epoch, partial, val_loss=val_loss)
            if not partial:
                self.restart_point = data    # the state at the start of the next epoch
            write_bytes_atomic(self.run_dir / filename, data)
            return
        save_checkpoint(self.run_dir / filename, checkpoint_dict(
            self.cfg, self.model, self.splits, self.mean, self.std, epoch=epoch, val_loss=val_loss))

    def restore_state(self, ckpt: dict) -> None:
        """Weights, optimizer, RNG and early stopping from a state() dict."""
        self.model.load_state_dict(ckpt["model_state"])
        if ckpt.get("optimizer_state"):
            self.optimizer.load_state_dict(ckpt["optimizer_state"])
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

    def resume_from(self, ckpt: dict) -> None:
        """Continue from a last.pt: its state, the schedule, and the metrics it covers."""
        done = int(ckpt.get("epoch") or 0)
        self.restore_state(ckpt)
        self.batch_size = int(ckpt.get("batch_size") or self.batch_size)
        self.batches = math.ceil(len(self.train_y) / self.batch_size)
        if self.scheduler is not None:
            if ckpt.get("scheduler_state") and ckpt.get("total_epochs") == self.cfg["train"]["epochs"]:
                self.scheduler.load_state_dict(ckpt["scheduler_state"])
            else:    # a longer run: the same schedule stretched, replayed to this point
                self.rebuild_scheduler(done * self.batches)
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
        """Out of device memory: back to the epoch's start with half the batch, or fail."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        params = count_parameters(self.model)[0]
        if self.batch_size < 4:
            raise TrainingFailed(f"out of {self.device.type} memory at batch size {self.batch_size} "
                                 f"with a model of {params:,} parameters; choose a smaller model")
        self.restore_state(torch.load(io.BytesIO(self.restart_point), map_location="cpu",
                                      weights_only=True))
        old, self.batch_size = self.batch_size, self.batch_size // 2
        self.batches = math.ceil(len(self.train_y) / self.batch_size)
        if self.scheduler is not None:
            self.rebuild_scheduler((epoch - 1) * self.batches)
        if self.probe is not None:
            self.probe.resize(self.batch_size)
        where = f"epoch {epoch} restarts" if epoch >= 1 else "training starts"
        self.note(f"out of {self.device.type} memory at batch size {old} (model of {params:,} "
                  f"parameters): {where} with batch size {self.batch_size}")
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
