"""Opening untrusted images: checked before decoding, converted to a known mode."""
from __future__ import annotations

import io

MAX_PIXELS = 25_000_000       # 5000x5000; a decompression bomb is refused before it is decoded
MAX_BYTES = 20 * 1024 * 1024


class ImageError(ValueError):
    """The file is not an image we can use; the message says why."""


def open_image(data: bytes, name: str = "image"):
    """Decode image bytes into a PIL image (RGB, RGBA or L), or raise ImageError."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageError(f"{name}: the file is empty (0 bytes)")
    if len(data) > MAX_BYTES:
        raise ImageError(f"{name}: the file is {len(data) / 2**20:.0f} MB; at most "
                         f"{MAX_BYTES // 2**20} MB is allowed")
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise ImageError(f"{name}: the image is too large to decode safely; at most "
                         f"{MAX_PIXELS:,} pixels") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image (allowed: PNG, JPEG, BMP, GIF, WebP, TIFF)") from None
    except Exception as e:
        raise ImageError(f"{name}: cannot be read as an image ({e})") from None
    w, h = img.size
    if w * h > MAX_PIXELS or w <= 0 or h <= 0:
        raise ImageError(f"{name}: {w}x{h} pixels is too large; at most {MAX_PIXELS:,} pixels")
    try:
        img.load()
    except Exception as e:
        raise ImageError(f"{name}: the image data is damaged or truncated ({e})") from None
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        img = img.convert("RGB")
    elif img.mode in ("1", "I", "I;16", "F"):
        img = img.convert("L")
    elif img.mode == "LA":
        img = img.convert("RGBA")
    elif img.mode not in ("RGB", "RGBA", "L"):
        img = img.convert("RGB")
    return img
