"""Checkpoints: weights plus what rebuilds the model, saved atomically, loaded weights-only.

`best.pt` is the epoch with the lowest validation loss; `last.pt` also holds the training
state (optimizer, schedule, random generators, early stopping) that resume continues from.
Evaluate, predict, export and saliency all load a run's model through `load_model`.
"""
from __future__ import annotations

import io
import math
import pickle
from pathlib import Path

import torch

from .runs import write_bytes_atomic


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded safely; the message says why."""


def checkpoint_dict(cfg, model, classes, input_shape, mean, std, epoch=0, val_loss=None) -> dict:
    """Weights plus everything needed to rebuild the model and prepare its input."""
    return {"format": 1, "config": cfg, "classes": list(classes),
            "input_shape": list(input_shape), "mean": list(mean), "std": list(std),
            "epoch": epoch, "val_loss": val_loss,
            "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()}}


def to_bytes(ckpt: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    return buf.getvalue()


def save_checkpoint(path: Path, ckpt: dict) -> None:
    write_bytes_atomic(Path(path), to_bytes(ckpt))


def from_bytes(data: bytes) -> dict:
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def load_checkpoint(path: Path) -> dict:
    """Load weights and plain values only: nothing in the file is run as code."""
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


def best_checkpoint(run_dir: Path) -> Path:
    """best.pt, else last.pt: the checkpoint a run is evaluated and used with."""
    run_dir = Path(run_dir)
    for name in ("best.pt", "last.pt"):
        if (run_dir / name).exists():
            return run_dir / name
    raise CheckpointError(f"{run_dir.name}: no checkpoint yet (best.pt or last.pt)")


def load_model(ckpt_or_path, device="cpu"):
    """Rebuild a model from a checkpoint (a path or a loaded dict); returns (model, ckpt)."""
    from .config import ConfigError
    from .models import build_model, checked_checkpoint

    if isinstance(ckpt_or_path, dict):
        ckpt, name = ckpt_or_path, "checkpoint"
    else:
        ckpt, name = load_checkpoint(ckpt_or_path), Path(ckpt_or_path).name
    # a checkpoint travels: its config is checked by the config's rules before it builds anything
    ckpt = checked_checkpoint(ckpt, name)
    cfg = dict(ckpt["config"]["model"], init="default")   # the weights replace any init
    try:
        model = build_model(cfg, tuple(ckpt["input_shape"]), len(ckpt["classes"]), load_weights=False)
    except ConfigError as e:
        raise CheckpointError(f"{name}: damaged checkpoint: its model cannot be built ({e})") from None
    state = ckpt.get("model_state")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{name}: damaged checkpoint: model_state is not a mapping of "
                              "names to tensors")
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(f"{name}: the checkpoint's weights do not fit its model: "
                              f"{str(e).splitlines()[0][:200]}") from None
    return model.to(device).eval(), ckpt


# ---------------------------------------------------------------- training state (last.pt)

def training_state(model, optimizer, scheduler, gen: torch.Generator, early, device) -> dict:
    """What a resume (or an epoch restarted after running out of memory) continues from."""
    return {"optimizer_state": optimizer.state_dict(),
            "scheduler_state": scheduler.state_dict() if scheduler is not None else None,
            "early": {"best": early.best if math.isfinite(early.best) else None,
                      "bad_epochs": early.bad_epochs},
            "rng": {"generator": gen.get_state(), "torch": torch.get_rng_state(),
                    **({"cuda": torch.cuda.get_rng_state(device)}
                       if device.type == "cuda" else {})}}


def restore_training_state(ckpt: dict, model, optimizer, gen: torch.Generator, early,
                           device) -> None:
    """Weights, optimizer, random generators and early stopping from a last.pt dict."""
    model.load_state_dict(ckpt["model_state"])
    if ckpt.get("optimizer_state"):
        optimizer.load_state_dict(ckpt["optimizer_state"])
    rng = ckpt.get("rng") or {}
    if "generator" in rng:
        gen.set_state(rng["generator"])
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if "cuda" in rng and device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], device)
    saved = ckpt.get("early") or {}
    early.best = saved.get("best") if saved.get("best") is not None else math.inf
    early.bad_epochs = int(saved.get("bad_epochs") or 0)
