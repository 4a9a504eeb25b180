"""Prediction for files, uploads and drawings, prepared the way the run's dataset was.

A drawn digit becomes an MNIST digit: gray, light ink on black, cropped to the ink, scaled
into 20x20 and centred by its centre of mass in 28x28 (how MNIST itself was made). An image
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


def light_background(gray: np.ndarray) -> bool:
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    return float(np.median(border)) > 127


def mnist_digit(gray: np.ndarray, size: int = 28, box: int = 20) -> np.ndarray:
    """Light-on-dark digit: crop to the ink, fit into box x box, centre by mass in size x size."""
    from PIL import Image
    from scipy import ndimage

    ink = gray if not light_background(gray) else 255.0 - gray
    ink = np.clip(ink, 0, 255)
    mask = ink > 0.1 * max(float(ink.max()), 1.0)
    if not mask.any() or ink.max() < 16:
        return np.zeros((size, size), np.uint8)
    ys, xs = np.nonzero(mask)
    crop = ink[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    h, w = crop.shape
    scale = box / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = np.asarray(Image.fromarray(crop.astype(np.uint8)).resize((nw, nh), Image.LANCZOS),
                       dtype=np.float64)
    canvas = np.zeros((size, size))
    top, left = (size - nh) // 2, (size - nw) // 2
    canvas[top:top + nh, left:left + nw] = small
    cy, cx = ndimage.center_of_mass(canvas)
    if np.isfinite(cy) and np.isfinite(cx):
        canvas = ndimage.shift(canvas, (size / 2 - 0.5 - cy, size / 2 - 0.5 - cx), order=1,
                               mode="constant")
    return np.clip(canvas, 0, 255).round().astype(np.uint8)


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
