"""Optimizers, learning-rate schedules and early stopping, as the config names them."""
from __future__ import annotations

import math

import torch


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


def replay_scheduler(optimizer, t: dict, batches_per_epoch: int, steps_done: int):
    """A fresh schedule for `t` (e.g. more epochs, or a halved batch), stepped to where the
    run is: the learning rate continues as if the run had been planned this way."""
    import warnings

    for g in optimizer.param_groups:
        g["lr"] = g.get("initial_lr", t["lr"])
        g.pop("initial_lr", None)
    scheduler = make_scheduler(optimizer, t, batches_per_epoch)
    if scheduler is None:
        return None
    with warnings.catch_warnings():     # replaying steps, not skipping optimizer steps
        warnings.simplefilter("ignore")
        limit = getattr(scheduler, "total_steps", None)   # OneCycleLR ends there
        for _ in range(steps_done if limit is None else min(steps_done, limit - 1)):
            scheduler.step()
    return scheduler
