"""Saliency: which pixels drove a run's prediction, by integrated gradients with plain autograd.

`saliency` gives a map in -1..1 (red: pixels that raised the class score, blue: lowered it);
`dlcore.display.overlay` draws it over the image.
"""
from __future__ import annotations

import numpy as np
import torch

from .augment import normalize
from .images import ImageError

STEPS = 16


def saliency(run_dir, image_uint8_chw, target: int | None = None, steps: int = STEPS) -> dict:
    """Integrated gradients from a black image to `image` for class `target` (default: the
    predicted one). Returns {map: float HxW in -1..1, target, probability}."""
    from .predict import load_run_model

    model, ckpt = load_run_model(run_dir)
    img = np.asarray(image_uint8_chw)
    shape = tuple(ckpt["input_shape"])
    if img.ndim == 2:
        img = img[None]
    if img.shape != shape:
        raise ImageError(f"expected an image of shape {list(shape)} (C, H, W), got {list(img.shape)}")
    x = torch.from_numpy(img.astype(np.float32) / 255.0)
    with torch.inference_mode():
        probs = torch.softmax(model(normalize(x[None], ckpt["mean"], ckpt["std"])), 1)[0]
    if target is None:
        target = int(probs.argmax())
    if not 0 <= int(target) < len(probs):
        raise ImageError(f"target class {target} is out of range; allowed: 0 to {len(probs) - 1}")
    # the path from black to the image, all steps in one batch (midpoint rule)
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps
    path = (alphas.view(-1, 1, 1, 1) * x[None]).requires_grad_(True)
    with torch.enable_grad():
        scores = model(normalize(path, ckpt["mean"], ckpt["std"]))[:, int(target)]
        (grads,) = torch.autograd.grad(scores.sum(), path)
    attr = (x * grads.mean(0)).sum(0).detach().numpy()      # summed over colour channels
    peak = float(np.abs(attr).max())
    m = attr / peak if peak > 0 else np.zeros_like(attr)
    return {"map": m.astype(np.float32), "target": int(target),
            "probability": float(probs[int(target)])}

