"""Pictures for the pages: one image grid (torchvision's make_grid) and what is built on it.

Every function returns HxWx3 uint8 arrays ready for st.image. Images are enlarged by a whole
factor (nearest), since a 28x28 digit shown at its own size is a smudge.
"""
from __future__ import annotations

import numpy as np
import torch
from torchvision.utils import make_grid


def image_grid(images, ncols: int = 8, size: int = 64, pad: int = 2,
               stretch: bool = False) -> np.ndarray:
    """Tile images [B, C, H, W] (values 0..255; C is 1 or 3) into one picture on white.

    Each image is enlarged by the whole factor that brings its longer side closest to
    `size` without passing it (at least 1). `stretch` maps each image's own min..max to
    0..255, for normalised batches. One image comes back without a border.
    """
    x = torch.as_tensor(np.asarray(images))
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or len(x) == 0:
        raise ValueError(f"image_grid needs images [B, C, H, W], got shape {list(x.shape)}")
    scale = max(1, size // max(x.shape[2], x.shape[3]))
    x = x.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
    ncols = max(1, min(ncols, len(x)))
    if stretch:
        grid = make_grid(x.float(), nrow=ncols, padding=pad, normalize=True, scale_each=True,
                         pad_value=1.0).mul_(255).round_()
    else:
        grid = make_grid(x.float().clamp(0, 255).round(), nrow=ncols, padding=pad, pad_value=255)
    return grid.to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def pictures(images, size: int = 112) -> list[np.ndarray]:
    """One enlarged picture per image [N, C, H, W], for galleries with a caption each."""
    return [image_grid(img, size=size, pad=0) for img in np.asarray(images)]


def overlay(image_uint8_chw, sal: np.ndarray, size: int = 168, alpha: float = 0.65) -> np.ndarray:
    """The image in gray with a saliency map in -1..1 on top (red positive, blue negative)."""
    img = np.asarray(image_uint8_chw, dtype=np.float32)
    if img.ndim == 2:
        img = img[None]
    gray = img.mean(0) / 255.0 * 0.6                    # dimmed so the colours read
    s = np.clip(np.asarray(sal, dtype=np.float32), -1, 1)
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    pos, neg = np.clip(s, 0, 1)[:, :, None], np.clip(-s, 0, 1)[:, :, None]
    red, blue = np.array([1.0, 0.1, 0.1]), np.array([0.1, 0.35, 1.0])
    rgb = rgb * (1 - alpha * pos) + alpha * pos * red
    rgb = rgb * (1 - alpha * neg) + alpha * neg * blue
    return image_grid((rgb * 255).transpose(2, 0, 1), size=size, pad=0)


def column_width(texts, px_per_char: float = 6.6, padding: int = 24, least: int = 90) -> int:
    """Pixels a table column needs to show its longest text whole (Streamlit's dataframe
    font averages about 6.4 px a character in layer names; the padding holds the margins)."""
    longest = max((len(str(t)) for t in texts), default=0)
    return max(least, round(longest * px_per_char) + padding)
