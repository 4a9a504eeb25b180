"""Opening untrusted images: sized before they are read, checked before decoding, turned upright
(EXIF orientation) and converted to a known 8-bit mode (16-bit and float images by their range).
"""
from __future__ import annotations

import io
import os
import stat

import numpy as np

MAX_PIXELS = 25_000_000       # 5000x5000; a decompression bomb is refused before it is decoded
MAX_BYTES = 20 * 1024 * 1024
ALLOWED = "PNG, JPEG, BMP, GIF, WebP, TIFF"
# the file name endings of ALLOWED, for upload widgets
EXTENSIONS = ("png", "jpg", "jpeg", "bmp", "gif", "webp", "tif", "tiff")


class ImageError(ValueError):
    """The file is not an image we can use; the message says why."""


def _too_big(name: str, n_bytes: int) -> ImageError:
    return ImageError(f"{name}: the file is {n_bytes / 2**20:.0f} MB; at most "
                      f"{MAX_BYTES // 2**20} MB is allowed")


def read_image_file(path, name: str | None = None) -> bytes:
    """The bytes of an image file: its size is checked first, and at most MAX_BYTES + 1 bytes
    are ever read (a file that grows meanwhile is still refused)."""
    name = name or str(path)
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise ImageError(f"{name}: not a regular file; give an image file ({ALLOWED})")
            if st.st_size > MAX_BYTES:
                raise _too_big(name, st.st_size)
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise ImageError(f"{name}: cannot be read ({e.strerror or e})") from None
    if len(data) > MAX_BYTES:
        raise _too_big(name, len(data))
    return data


def _read_upload(f, name: str) -> bytes:
    """The bytes of a binary file object (an upload), its size checked before it is read."""
    size = getattr(f, "size", None)
    if not isinstance(size, int):
        try:
            here = f.tell()
            size = f.seek(0, io.SEEK_END) - here
            f.seek(here)
        except (OSError, AttributeError, ValueError):
            size = None
    if size is not None and size > MAX_BYTES:
        raise _too_big(name, size)
    data = f.read(MAX_BYTES + 1)
    if not isinstance(data, (bytes, bytearray)):
        raise ImageError(f"{name}: expected the bytes of an image file, got {type(data).__name__}")
    return bytes(data)


def open_image(data, name: str = "image"):
    """Decode image bytes (or a binary file object) into an upright PIL image in mode RGB,
    RGBA or L, or raise ImageError."""
    from PIL import Image, UnidentifiedImageError

    if hasattr(data, "read"):
        data = _read_upload(data, name)
    if not data:
        raise ImageError(f"{name}: the file is empty (0 bytes)")
    if len(data) > MAX_BYTES:
        raise _too_big(name, len(data))
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise ImageError(f"{name}: the image is too large to decode safely; at most "
                         f"{MAX_PIXELS:,} pixels") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image (allowed: {ALLOWED})") from None
    except Exception as e:
        raise ImageError(f"{name}: cannot be read as an image ({e})") from None
    w, h = img.size
    if w * h > MAX_PIXELS or w <= 0 or h <= 0:
        raise ImageError(f"{name}: {w}x{h} pixels is too large; at most {MAX_PIXELS:,} pixels")
    try:
        img.load()
    except Exception as e:
        raise ImageError(f"{name}: the image data is damaged or truncated ({e})") from None
    return known_mode(upright(img), name)


def upright(img):
    """The image as it is meant to be seen: a phone's EXIF orientation applied (a photo taken
    sideways is read upright). A damaged EXIF block leaves the image as it is stored."""
    from PIL import ImageOps

    try:
        return ImageOps.exif_transpose(img)
    except Exception:
        return img


def known_mode(img, name: str = "image"):
    """A PIL image in mode RGB, RGBA or L.

    16-bit and 32-bit integer images (scans) and float images (TIFF) are scaled to 8 bits by
    their range: values that fit 0..255 stay as they are, floats within 0..1 are times 255,
    anything else is stretched from its darkest to its lightest pixel. (Pillow's own
    conversion clips them, which makes most 16-bit scans a blank white image.)
    """
    from PIL import Image

    mode = img.mode
    if mode == "P":
        return img.convert("RGBA" if "transparency" in img.info else "RGB")
    if mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        return img.convert("RGB")
    if mode == "1":
        return img.convert("L")
    if mode == "F" or mode.startswith("I"):
        return Image.fromarray(to_8bit(np.asarray(img), name))
    if mode in ("LA", "PA"):
        return img.convert("RGBA")
    if mode not in ("RGB", "RGBA", "L"):
        return img.convert("RGB")
    return img


def to_8bit(a: np.ndarray, name: str = "image") -> np.ndarray:
    """Gray values of any range as uint8 (see known_mode); NaN or infinity is refused."""
    a = np.asarray(a)
    floats = a.dtype.kind == "f"
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ImageError(f"{name}: the image holds NaN or infinite values; allowed: finite "
                         "pixel values")
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if floats and lo >= 0 and hi <= 1:
        out = a * 255.0
    elif lo >= 0 and hi <= 255:
        out = a
    elif hi > lo:
        out = (a - lo) * (255.0 / (hi - lo))
    else:
        out = np.clip(a, 0, 255)     # one value everywhere: nothing to stretch
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
