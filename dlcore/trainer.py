"""A run's training: the epochs of dlcore.loop, early stopping, checkpoints, stop requests and
out-of-memory retries, with everything written through a RunWriter.

A stop request (the run's STOP file or SIGTERM) ends the run at the next batch with a loadable
checkpoint and state `stopped`. Out of device memory, an epoch restarts from the weights,
optimizer, schedule and random state at its start with half the batch.
"""
from __future__ import annotations

import math
import time

import torch
from torch import nn

from .augment import stats_tensors
from .checkpoints import (checkpoint_dict, from_bytes, restore_training_state, to_bytes,
                          training_state)
from .devices import autocast_dtype, describe_device, place_model
from .inspect_layers import LayerProbe
from .loop import (Diverged, DeviceSplit, OutOfMemory, evaluate_split, progress_bar,
                   train_one_epoch)
from .models import count_parameters
from .optim import EarlyStopping, make_optimizer, make_scheduler, replay_scheduler
from .runwriter import RunWriter
from .signals import stop_requested


class TrainingFailed(RuntimeError):
    """Training ended in state `failed`; the message is the run's error."""


class TrainState:
    """What training changes and last.pt keeps: the weights, optimizer, schedule, random
    generator, early stopping and batch size; an epoch restarted after an out-of-memory
    error, and a resumed run, continue from it exactly."""

    def __init__(self, cfg, model, splits, device):
        t, self.cfg, self.model, self.splits, self.device = cfg["train"], cfg, model, splits, device
        # a pretrained model applies ImageNet's normalisation itself, to 0..1 images
        own_norm = cfg["data"]["normalize"] and cfg["model"]["arch"] != "pretrained"
        self.mean, self.std = (splits.mean, splits.std) if own_norm else \
            ((0.0,) * len(splits.mean), (1.0,) * len(splits.std))
        self.optimizer = make_optimizer(model, t)
        self.batch_size = t["batch_size"]   # halved if the device runs out of memory
        self.scheduler = make_scheduler(self.optimizer, t, self.batches)
        self.gen = torch.Generator(device=device).manual_seed(t["seed"])
        self.early = EarlyStopping(t["patience"])
        self.best_epoch = None

    @property
    def batches(self) -> int:
        return math.ceil(len(self.splits.train_y) / self.batch_size)

    def checkpoint(self, epoch: int, val_loss=None) -> dict:
        s = self.splits
        return checkpoint_dict(self.cfg, self.model, s.classes, s.info.shape, self.mean,
                               self.std, epoch=epoch, val_loss=val_loss)

    def to_bytes(self, epoch: int, partial=False, val_loss=None) -> bytes:
        """last.pt: the checkpoint plus what resume needs to continue exactly."""
        return to_bytes({**self.checkpoint(epoch), **training_state(
            self.model, self.optimizer, self.scheduler, self.gen, self.early, self.device),
            "partial_epoch": partial, "total_epochs": self.cfg["train"]["epochs"],
            "batch_size": self.batch_size, "best_epoch": self.best_epoch, "val_loss": val_loss})

    def restore(self, ckpt: dict) -> None:
        restore_training_state(ckpt, self.model, self.optimizer, self.gen, self.early, self.device)

    def replay_schedule(self, epochs_done: int) -> None:
        """The schedule rebuilt for the current batch size and total, stepped to this point."""
        if self.scheduler is not None:
            t = dict(self.cfg["train"], batch_size=self.batch_size)
            self.scheduler = replay_scheduler(self.optimizer, t, self.batches,
                                              epochs_done * self.batches)

    def resume(self, ckpt: dict) -> int:
        """Continue from a last.pt; returns the number of epochs it covers."""
        self.restore(ckpt)
        self.batch_size = int(ckpt.get("batch_size") or self.batch_size)
        done = int(ckpt.get("epoch") or 0)
        if ckpt.get("scheduler_state") and ckpt.get("total_epochs") == self.cfg["train"]["epochs"]:
            if self.scheduler is not None:
                self.scheduler.load_state_dict(ckpt["scheduler_state"])
        else:    # a longer run: the same schedule stretched, replayed to this point
            self.replay_schedule(done)
        return done

    def halve_batch(self, restart_point: bytes, epoch: int) -> str:
        """Out of device memory: back to the epoch's start with half the batch, or fail."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        params, kind = count_parameters(self.model)[0], self.device.type
        if self.batch_size < 4:
            raise TrainingFailed(f"out of {kind} memory at batch size {self.batch_size} "
                                 f"with a model of {params:,} parameters; choose a smaller model")
        self.restore(from_bytes(restart_point))
        old, self.batch_size = self.batch_size, self.batch_size // 2
        self.replay_schedule(epoch - 1)
        where = f"epoch {epoch} restarts" if epoch >= 1 else "training starts"
        return (f"out of {kind} memory at batch size {old} (model of {params:,} parameters): "
                f"{where} with batch size {self.batch_size}")


class Trainer:
    def __init__(self, cfg, run_dir, device, splits, model, progress=True, log=print):
        self.cfg, self.device, self.splits, self.show_bar, self.log = cfg, device, splits, progress, log
        t, self.loss_fn = cfg["train"], nn.CrossEntropyLoss()
        self.model, self.step_model, self.channels_last = place_model(
            model, cfg["model"]["arch"], t["compile"], device)
        self.amp_dtype = autocast_dtype(t["precision"], device)
        self.state = s = TrainState(cfg, self.model, splits, device)
        # made once: a tensor built from Python numbers in the step would copy host to device
        norm = stats_tensors(s.mean, s.std, device)
        self.train_split = DeviceSplit(splits.train_x.to(device), splits.train_y.to(device),
                                       norm, cfg["data"]["augment"], self.channels_last)
        self.val_split = DeviceSplit(splits.val_x.to(device), splits.val_y.to(device), norm,
                                     channels_last=self.channels_last)
        self.probe = LayerProbe(self.model, self.train_split.x, self.train_split.y, *norm, device,
                                self.amp_dtype, None, self.channels_last,
                                batch_size=s.batch_size) if t["layer_stats"] else None
        self.writer = RunWriter(run_dir, log=log, device=describe_device(device),
                                epochs=t["epochs"], parameters=count_parameters(self.model)[0])
        # restart_point: last.pt's bytes, where an epoch restarts after running out of memory
        self.start_epoch, self.stopping, self.restart_point = 1, False, None

    def stop_wanted(self) -> bool:
        """SIGTERM, or the run's STOP file (looked for on the progress timer, not every step)."""
        self.stopping = self.stopping or stop_requested() or self.writer.stop_requested()
        return self.stopping

    def run(self):
        t, w, s, epoch = self.cfg["train"], self.writer, self.state, self.start_epoch - 1
        w.write_status()
        try:
            if self.stop_wanted():       # asked for while the worker was starting
                return self.stopped(epoch, "stopped before training started")
            self.restart_point = self.restart_point or s.to_bytes(epoch)
            if self.probe is not None and self.start_epoch == 1:   # the init
                self.retrying(epoch, lambda: w.layers(self.probe.record(0)))
            for epoch in range(self.start_epoch, t["epochs"] + 1):
                started = time.perf_counter()
                result = self.retrying(epoch, lambda: self.one_epoch(epoch))
                if result is None:
                    return self.stopped(epoch - 1, f"stopped during epoch {epoch}; last.pt saved")
                row = dict(zip(("train_loss", "train_acc", "val_loss", "val_acc"), result),
                           epoch=epoch, lr=s.optimizer.param_groups[0]["lr"],
                           seconds=round(time.perf_counter() - started, 3))
                if s.batch_size != t["batch_size"]:
                    row["batch_size"] = s.batch_size
                improved = s.early.step(row["val_loss"])
                s.best_epoch = epoch if improved else s.best_epoch
                self.restart_point = s.to_bytes(epoch, val_loss=row["val_loss"])
                w.epoch(row, s.checkpoint(epoch, row["val_loss"]) if improved else None,
                        self.restart_point)
                if self.stop_wanted():
                    w.end("stopped")
                    return self.log(f"stopped after epoch {epoch}")
                if s.early.should_stop:
                    self.log(f"early stopping: val_loss has not improved for {s.early.bad_epochs} epochs")
                    w.status["early_stopped"] = epoch
                    break
            w.testing()
            result = final_evaluation(w.run_dir, self.splits, self.device, 2 * s.batch_size, w.note)
            w.finish(self.cfg, result)
            w.end("completed")
        except KeyboardInterrupt:
            self.stopped(max(epoch - 1, 0), "stopped by an interrupt")
            raise
        except Exception as e:
            message = str(e) if isinstance(e, TrainingFailed) else diverged(
                f"loss became non-finite (NaN or infinity) at epoch {epoch}, batch {e.batch}",
                self.cfg) if isinstance(e, Diverged) else f"{e.__class__.__name__}: {e}"
            w.end("failed", error=message.splitlines()[0] if message else e.__class__.__name__)
            raise TrainingFailed(message) from e
        finally:
            w.close()

    def one_epoch(self, epoch: int):
        """Train, validate and probe one epoch: (train_loss, train_acc, val_loss, val_acc),
        or None when a stop came during it."""
        s = self.state

        def tick(batch, batches):
            return self.stop_wanted() or self.writer.progress(epoch, batch, batches)

        with progress_bar(s.batches, f"epoch {epoch}", self.show_bar) as bar:
            trained = train_one_epoch(
                self.step_model, self.train_split, s.optimizer, s.scheduler, s.batch_size,
                s.gen, loss_fn=self.loss_fn, amp_dtype=self.amp_dtype, bar=bar, on_tick=tick,
                stop=lambda: self.stopping or stop_requested())
        if trained is None:
            return None
        val = evaluate_split(self.model, self.val_split, 2 * s.batch_size, self.amp_dtype)
        if not math.isfinite(val[0]):
            raise TrainingFailed(diverged(f"validation loss became {val[0]} at epoch {epoch}",
                                          self.cfg))
        if self.probe is not None:    # inside the epoch's seconds: its cost shows
            self.writer.layers(self.probe.record(epoch))
        return (*trained, *val)

    def stopped(self, epoch: int, message: str) -> None:
        self.writer.save_last(self.state.to_bytes(epoch, partial=True))
        self.writer.end("stopped")
        self.log(message)

    def retrying(self, epoch: int, step):
        """Run `step`; out of device memory, restart the epoch from its start, half the batch."""
        while True:
            try:
                return step()
            except OutOfMemory:
                self.writer.note(self.state.halve_batch(self.restart_point, epoch))
                if self.probe is not None:
                    self.probe.resize(self.state.batch_size)
                self.writer.write_status(batch_size=self.state.batch_size)

    def resume_from(self, ckpt: dict) -> None:
        """Continue from a last.pt: its state, the schedule, and the metrics it covers."""
        self.start_epoch = self.state.resume(ckpt) + 1
        self.writer.keep_epochs(self.start_epoch - 1)
        self.state.best_epoch = self.writer.status["best_epoch"]
        if ckpt.get("partial_epoch"):
            self.writer.note(f"resumed from a stop during epoch {self.start_epoch}: that epoch "
                             "starts again from the weights at the stop")


def diverged(what: str, cfg: dict) -> str:
    return (f"{what}; the model diverged: try a lower learning rate "
            f"(train.lr is {cfg['train']['lr']:g})")


def final_evaluation(run_dir, splits, device, batch: int, note) -> dict:
    """eval.json of the best checkpoint; out of device memory, the batch is halved."""
    from .evaluate import evaluate_run
    while True:
        try:
            return evaluate_run(run_dir, splits=splits, device=device, batch=batch)
        except OutOfMemory:
            if batch <= 1:
                raise TrainingFailed(f"out of {device.type} memory while testing the best "
                                     "checkpoint with one image at a time") from None
            if device.type == "cuda":
                torch.cuda.empty_cache()
            batch //= 2
            note(f"out of {device.type} memory while testing: batches of {batch}")
