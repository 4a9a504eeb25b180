"""The training and evaluation passes, for every architecture: plain functions that know
nothing of files. Data lives on the device as uint8 tensors; a batch is an index slice,
augmented and normalised there (airbench's way: no DataLoader, no PIL).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import torch
from torch import nn

from .augment import augment_batch, is_augmenting, normalize
from .devices import autocast

PROGRESS_EVERY_S = 0.5   # how often `on_tick` runs: the only place a step waits for the device
OutOfMemory = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


class Diverged(ArithmeticError):
    """The training loss became NaN or infinite; `batch` is the first such batch (1-based)."""

    def __init__(self, batch: int):
        super().__init__(f"loss became non-finite at batch {batch}")
        self.batch = batch


@dataclass
class DeviceSplit:
    """One split on the device: uint8 images, labels, and how a batch of it is prepared."""
    x: torch.Tensor
    y: torch.Tensor
    norm: tuple[torch.Tensor, torch.Tensor]       # mean, std as device tensors [C]
    augment: dict | None = None                   # data.augment, for the training split
    channels_last: bool = False

    def batch(self, idx: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        x = self.x[idx].float().div_(255.0)
        if gen is not None and self.augment and is_augmenting(self.augment):
            x = augment_batch(x, self.augment, gen)
        x = normalize(x, *self.norm)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def train_one_epoch(model, data: DeviceSplit, optimizer, scheduler, batch_size: int,
                    gen: torch.Generator, *, loss_fn=nn.functional.cross_entropy,
                    amp_dtype=None, stop=lambda: False, on_tick=None,
                    max_batches: int | None = None, bar=None):
    """One pass over a fresh permutation: (mean loss, accuracy), or None when `stop()` said so.

    Nothing in a step waits for the device: loss, accuracy and the first non-finite loss are
    summed on it and read every PROGRESS_EVERY_S, when `on_tick(batches_done, batches)` runs
    too (a true return value stops the pass). Raises Diverged on a non-finite loss.
    """
    device, n = data.y.device, len(data.y)
    batches = -(-n // batch_size)
    model.train()
    perm = torch.randperm(n, generator=gen, device=device)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    first_bad = torch.zeros((), dtype=torch.long, device=device)   # 0: none yet
    seen, last_tick = 0, time.perf_counter()
    for b in range(min(batches, max_batches or batches)):
        idx = perm[b * batch_size:(b + 1) * batch_size]
        if len(idx) < 2 and b > 0:
            break   # BatchNorm cannot train on a batch of one
        x, y = data.batch(idx, gen), data.y[idx]
        with autocast(device, amp_dtype):
            logits = model(x)
            loss = loss_fn(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        loss = loss.detach()
        first_bad = torch.where((first_bad == 0) & ~torch.isfinite(loss), b + 1, first_bad)
        loss_sum += loss * len(idx)
        correct += (logits.argmax(1) == y).sum()
        seen += len(idx)
        if bar is not None:
            bar.update()
        if stop():
            return None
        now = time.perf_counter()
        if on_tick is not None and now - last_tick >= PROGRESS_EVERY_S:
            last_tick = now
            _check_finite(first_bad)
            if on_tick(b + 1, batches):
                return None
    _check_finite(first_bad)
    return loss_sum.item() / max(seen, 1), correct.item() / max(seen, 1)


def _check_finite(first_bad: torch.Tensor) -> None:
    bad = int(first_bad.item())
    if bad:
        raise Diverged(bad)


def evaluate_split(model, data: DeviceSplit, batch: int, amp_dtype=None) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of a split."""
    from .evaluate import predict_logits
    logits = predict_logits(model, data.x, *data.norm, data.norm[0].device, batch=batch,
                            amp_dtype=amp_dtype)
    y = data.y.to(logits.device)
    return (nn.functional.cross_entropy(logits, y).item(),
            (logits.argmax(1) == y).float().mean().item())


def progress_bar(total: int, desc: str, show: bool):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="batch", leave=False, file=sys.stderr,
                dynamic_ncols=True, disable=not show)
