"""Prediction for files, uploads and drawings, prepared the way the run's dataset was.

A drawn digit becomes an MNIST digit: gray, light ink on black with the paper taken out
(a light-grey sheet becomes black like white paper does), cropped to the ink, scaled into
20x20 and centred by its centre of mass in 28x28 (how MNIST itself was made). An image
that already is one of the dataset's samples (its shape and polarity) is left as it is, so
that predicting the test split gives exactly the predictions of its evaluation.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import torch

from .images import ImageError, known_mode, open_image, read_image_file, upright

DIGIT_DATASETS = ("mnist-5k", "mnist", "digits")


def can_draw(cfg: dict) -> tuple[bool, str]:
    """Whether a drawing on a canvas is a fair input for a run of this config, and why."""
    ds = cfg.get("data", {}).get("dataset")
    if ds in DIGIT_DATASETS:
        return True, "a digit classifier: draw a digit"
    if ds == "fashion-mnist":
        return True, "a Fashion-MNIST classifier: sketch a piece of clothing"
    if ds == "cifar10":
        return False, "CIFAR-10 models read colour photos (planes, cats, ships...), not drawings"
    if ds == "folder":
        return False, "models of your own image folders expect images like yours: upload one"
    return False, f"dataset {ds!r} does not take drawings"


def _pixels(image) -> np.ndarray:
    """A PIL image, bytes or array as float pixels 0..255: [H, W], [H, W, 3] or [H, W, 4].

    Arrays may also be channel-first ([1, H, W] or [3, H, W]), as the dataset splits hold them.
    """
    from PIL import Image

    if isinstance(image, (bytes, bytearray)):
        image = open_image(bytes(image))
    if isinstance(image, Image.Image):   # upright and 8-bit, as open_image makes a file's
        image = np.asarray(known_mode(upright(image)))
    try:
        a = np.asarray(image, dtype=np.float64)
    except (TypeError, ValueError):
        raise ImageError(f"expected an image (a file, PIL image or pixel array), "
                         f"got {type(image).__name__}") from None
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[2] not in (1, 3, 4):
        a = a.transpose(1, 2, 0)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))) or a.size == 0:
        raise ImageError(f"expected an image array [H, W], [H, W, 3] or [H, W, 4], got {list(a.shape)}")
    if not np.isfinite(a).all():
        raise ImageError("the image array holds NaN or infinite values")
    return a


def _gray(a: np.ndarray) -> np.ndarray:
    """Float gray [H, W] of `_pixels`' output; transparent pixels count as white paper."""
    if a.ndim == 2:
        return a
    gray = a[:, :, :3] @ np.array([0.299, 0.587, 0.114])
    if a.shape[2] == 4:
        alpha = a[:, :, 3] / 255.0
        gray = gray * alpha + 255.0 * (1 - alpha)
    return gray


def _transparent(a: np.ndarray) -> bool:
    """Whether some pixels are see-through: a drawing on a canvas, not a photo or a sample."""
    return a.ndim == 3 and a.shape[2] == 4 and bool((a[:, :, 3] < 255).any())


def _u8(a: np.ndarray) -> np.ndarray:
    return np.clip(np.round(a), 0, 255).astype(np.uint8)


def to_gray_array(image) -> np.ndarray:
    """A PIL image, RGB/RGBA/gray array or bytes as float gray 0..255 [H, W].

    Transparent pixels (a canvas's empty background) count as white paper.
    """
    return _gray(_pixels(image))


def _border(a: np.ndarray) -> np.ndarray:
    return np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])


def light_background(gray: np.ndarray) -> bool:
    return float(np.median(_border(gray))) > 127


# With the paper taken out (ink_map), a pixel is ink when it is at least MIN_INK above the
# paper and at least a quarter of the picture's strongest ink; a picture whose strongest ink
# stays below MIN_INK (an eighth of black on white) is blank: grain, a shadow, nothing drawn.
MIN_INK = 32
# A digit must span at least a fifth of the picture's shorter side (MNIST's digits span
# 20 of 28 pixels, 71%). On the 280-pixel canvas that is 56 pixels: more than a dot of the
# widest brush (40) and anything written smaller is too small to read.
MIN_SPAN = 0.2


def ink_map(gray: np.ndarray) -> np.ndarray:
    """Light ink on black, float 0..255 [H, W], with the paper taken out.

    The paper is estimated from the border: its median in ink terms (a light-grey sheet
    photographed at 200 is ink 55, white paper 0), raised by three times the border's
    spread (its median absolute deviation) so that the grain of a photo stays black. Ink
    over that floor is stretched back to 0..255: a photo is the paper's brightness times
    how much light the ink lets through, so dark ink on a sheet at 200 comes out as the
    same digit as on white paper.
    """
    ink = 255.0 - gray if light_background(gray) else np.asarray(gray, dtype=np.float64)
    border = _border(ink)
    paper = float(np.median(border))
    spread = 1.4826 * float(np.median(np.abs(border - paper)))
    floor = paper + min(3 * spread, 0.25 * (255 - paper))
    if floor >= 255 - 1e-6:
        return np.zeros_like(ink)
    return np.clip((ink - floor) * (255.0 / (255.0 - floor)), 0, 255)


def ink_check(image) -> tuple[bool, str]:
    """Whether an image (as `prepare_image` takes it) holds enough ink to be read as a digit
    or a sketch; if not, why, as a phrase.

    Enough ink means: some pixel MIN_INK away from the paper, strokes whose bounding box
    spans at least MIN_SPAN of the picture's shorter side, and at least as many inked pixels
    as a line one pixel wide along that span (scattered specks of dust are not a digit).
    A dot or a speck would otherwise be blown up to fill MNIST's 20x20 box and read as a
    confident 8 or 0.
    """
    ink = ink_map(_gray(_pixels(image)))
    peak = float(ink.max())
    if peak < MIN_INK:
        return False, "there is no ink on it"
    mask = ink >= max(MIN_INK, peak / 4)
    ys, xs = np.nonzero(mask)
    span = max(ys.max() - ys.min(), xs.max() - xs.min()) + 1
    share = span / min(ink.shape)
    if share < MIN_SPAN:
        return False, (f"too little ink: it spans {int(share * 100)}% of the picture, at least "
                       f"{MIN_SPAN:.0%} is needed")
    if mask.sum() < span:
        return False, "only scattered specks of ink, no strokes"
    return True, ""


def _extent(profile: np.ndarray, level: float) -> float:
    """Length of the run of a 1-D ink profile above level, its ends placed to a fraction of a
    pixel where the profile crosses level between pixel centres."""
    above = np.nonzero(profile > level)[0]
    i, j = int(above[0]), int(above[-1])
    start = i - 0.5 + (level - profile[i - 1]) / (profile[i] - profile[i - 1]) if i > 0 else 0.0
    end = (j + 0.5 + (profile[j] - level) / (profile[j] - profile[j + 1])
           if j + 1 < len(profile) else float(len(profile)))
    return max(end - start, 1.0)


def mnist_digit(gray: np.ndarray, size: int = 28, box: int = 20) -> np.ndarray:
    """Light-on-dark digit: paper removed (`ink_map`), scaled so that the ink's bounding box
    fits box x box and centred by its centre of mass in size x size.

    One resampling does both: the square of the picture around the ink's centre of mass that
    becomes the size x size output is resized in one go (Hamming filter: anti-aliased, and ink
    spreads at most one output pixel), and the ink's extent is measured to a fraction of a
    pixel. A grey level more or less at the ink's edge (a photo's grain) then changes the
    result by about as much, not by a pixel of scale or a shifted resampling grid.
    """
    from PIL import Image
    from scipy import ndimage

    ink = ink_map(gray)
    if ink.max() < MIN_INK:
        return np.zeros((size, size), np.uint8)
    level = 0.1 * float(ink.max())
    extent = max(_extent(ink.max(axis=1), level), _extent(ink.max(axis=0), level))
    half = size / 2 * extent / box                   # source pixels from the centre to an edge
    cy, cx = (float(c) + 0.5 for c in ndimage.center_of_mass(ink))   # pixel edges at integers
    top, left = int(np.floor(cy - half)) - 1, int(np.floor(cx - half)) - 1
    n = int(np.ceil(2 * half)) + 3
    window = np.zeros((n, n), np.float32)             # the square, zero beyond the picture
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + n, ink.shape[0]), min(left + n, ink.shape[1])
    window[y0 - top:y1 - top, x0 - left:x1 - left] = ink[y0:y1, x0:x1]
    region = (cx - half - left, cy - half - top, cx + half - left, cy + half - top)
    out = Image.fromarray(window).resize((size, size), Image.HAMMING, box=region)
    return np.clip(np.asarray(out, dtype=np.float64), 0, 255).round().astype(np.uint8)


def prepare_image(image, ckpt_or_cfg: dict) -> np.ndarray:
    """What the model sees: uint8 [C, H, W] in the run's input shape.

    An image that already is a sample of the run's dataset (its input shape, opaque, and for
    digits light ink on a dark background) reaches the model unchanged, exactly as evaluation
    saw the test split. Drawings and other digit images (a canvas, a large or dark-on-light
    picture) are made into MNIST digits first.
    """
    from PIL import Image

    cfg = ckpt_or_cfg.get("config", ckpt_or_cfg)
    shape = ckpt_or_cfg.get("input_shape") or _shape_of(cfg)
    c, h, w = shape
    ds = cfg.get("data", {}).get("dataset")
    a = _pixels(image)
    if c == 1:
        gray = _gray(a)
        if ds in DIGIT_DATASETS:
            if gray.shape == (h, w) and not _transparent(a) and not light_background(gray):
                return _u8(gray)[None]
            digit = mnist_digit(gray)
            if (h, w) != (28, 28):   # the 8x8 digits fill their frame: drop MNIST's 4-pixel margin
                digit = np.asarray(Image.fromarray(digit[2:26, 2:26]).resize((w, h), Image.BILINEAR))
            return digit[None].astype(np.uint8)
        if ds == "fashion-mnist" and light_background(gray):
            gray = 255.0 - gray
        return _resized(_u8(gray), h, w)[None]
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.shape[2] == 4:   # transparent means white paper
        alpha = a[:, :, 3:] / 255.0
        a = a[:, :, :3] * alpha + 255.0 * (1 - alpha)
    return _resized(_u8(a), h, w).transpose(2, 0, 1).copy()


def _resized(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """uint8 [H, W] or [H, W, 3] at h x w (bilinear); an image of that size is left as it is."""
    from PIL import Image

    if a.shape[:2] == (h, w):
        return a
    return np.asarray(Image.fromarray(a).resize((w, h), Image.BILINEAR), dtype=np.uint8)


def _shape_of(cfg):
    from .datasets import dataset_info
    return dataset_info(cfg["data"]).shape


@functools.lru_cache(maxsize=8)
def _cached_model(path: str, mtime: float):
    from .checkpoints import load_model
    return load_model(path, "cpu")


def load_run_model(run_dir):
    """The run's best (else last) checkpoint as (model, ckpt); cached until the file changes."""
    from .checkpoints import best_checkpoint

    path = best_checkpoint(Path(run_dir))
    return _cached_model(str(path), os.path.getmtime(path))


def predict(run_dir, images) -> list[dict]:
    """Classify images (paths, bytes, PIL images or arrays) with a run's best checkpoint.

    Returns per image: class, index, probability, probs (all classes), seen (uint8 [C,H,W]).
    """
    from .augment import normalize

    model, ckpt = load_run_model(run_dir)
    seen = []
    for img in images:
        if isinstance(img, (str, Path)):   # sized before it is read: never more than the limit
            img = open_image(read_image_file(img), name=str(img))
        seen.append(prepare_image(img, ckpt))
    if not seen:
        return []
    x = torch.from_numpy(np.stack(seen)).float().div_(255.0)
    with torch.inference_mode():
        probs = torch.softmax(model(normalize(x, ckpt["mean"], ckpt["std"])), 1).numpy()
    classes = ckpt["classes"]
    return [{"class": classes[int(p.argmax())], "index": int(p.argmax()),
             "probability": float(p.max()), "probs": p.tolist(), "classes": list(classes),
             "seen": s} for p, s in zip(probs, seen)]
