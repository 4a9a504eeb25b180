"""Augmentation and normalisation on whole batches of tensors, on whatever device they are.

No PIL and no per-sample Python: a batch is cropped, flipped and rotated with tensor ops.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def stats_tensors(mean, std, device, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std as [1, C, 1, 1] tensors on `device`: made once, used every step."""
    return (torch.as_tensor(mean, dtype=dtype, device=device).view(1, -1, 1, 1),
            torch.as_tensor(std, dtype=dtype, device=device).view(1, -1, 1, 1))


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """(x - mean) / std per channel; pass stats_tensors() in loops, numbers for one-off calls."""
    if not torch.is_tensor(mean):
        mean, std = stats_tensors(mean, std, x.device, x.dtype)
    return (x - mean) / std


def random_crop(x: torch.Tensor, padding: int, gen: torch.Generator | None = None) -> torch.Tensor:
    """Zero-pad by `padding` and cut a random HxW window per image (torchvision's RandomCrop)."""
    if padding <= 0:
        return x
    b, c, h, w = x.shape
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=gen, device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=gen, device=x.device)
    return crop_at(x, padding, dy, dx)


def crop_at(x: torch.Tensor, padding: int, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """The window at offsets (dy, dx) of each padded image; offsets are per image."""
    b, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    rows = (dy.view(b, 1) + torch.arange(h, device=x.device)).view(b, 1, h, 1)
    cols = (dx.view(b, 1) + torch.arange(w, device=x.device)).view(b, 1, 1, w)
    bi = torch.arange(b, device=x.device).view(b, 1, 1, 1)
    ci = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return padded[bi, ci, rows, cols]


def random_hflip(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    flip = torch.rand(x.shape[0], generator=gen, device=x.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image by its own angle about the centre (bilinear, zero fill)."""
    a = degrees.to(x.dtype) * (math.pi / 180.0)
    cos, sin = torch.cos(a), torch.sin(a)
    zero = torch.zeros_like(a)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_rotation(x: torch.Tensor, max_degrees: float, gen: torch.Generator | None = None):
    if max_degrees <= 0:
        return x
    deg = (torch.rand(x.shape[0], generator=gen, device=x.device) * 2 - 1) * max_degrees
    return rotate(x, deg)


def augment_batch(x: torch.Tensor, aug: dict, gen: torch.Generator | None = None) -> torch.Tensor:
    """Apply the config's augmentations to a float batch in 0..1."""
    x = random_crop(x, int(aug.get("crop_padding", 0)), gen)
    if aug.get("hflip"):
        x = random_hflip(x, gen)
    return random_rotation(x, float(aug.get("rotation", 0)), gen)


def is_augmenting(aug: dict) -> bool:
    return bool(aug.get("crop_padding") or aug.get("hflip") or aug.get("rotation"))

