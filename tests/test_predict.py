"""Prediction: drawings become MNIST-like digits; images are read safely and converted right."""
import io

import numpy as np
import pytest
from PIL import Image

from dlcore.images import ImageError, open_image
from dlcore.predict import can_draw, mnist_digit, predict, prepare_image


def canvas(draw):
    """A 280x280 RGBA canvas, transparent like streamlit-drawable-canvas's, with black ink."""
    a = np.zeros((280, 280, 4), np.uint8)
    draw(a)
    return a


def one(a):
    a[40:240, 130:150] = (0, 0, 0, 255)


def zero(a):
    yy, xx = np.mgrid[:280, :280]
    r = np.hypot(yy - 140, xx - 140)
    a[(r > 70) & (r < 95)] = (0, 0, 0, 255)


def test_a_drawn_digit_becomes_light_on_dark_centred_in_28x28():
    seen = mnist_digit(255 - canvas(one)[:, :, 3].astype(float))   # black ink on white paper
    assert seen.shape == (28, 28) and seen.dtype == np.uint8
    assert seen[0].max() == 0 and seen[:, 0].max() == 0               # dark border
    ys, xs = np.nonzero(seen > 50)
    assert ys.max() - ys.min() + 1 <= 21 and ys.max() - ys.min() >= 18   # fitted into 20 px
    cy, cx = np.average(np.indices(seen.shape), axis=(1, 2), weights=seen.astype(float))
    assert abs(cy - 13.5) < 1 and abs(cx - 13.5) < 1


def test_white_on_black_is_not_inverted():
    a = np.zeros((100, 100))
    a[20:80, 45:55] = 255
    assert mnist_digit(a)[14, 14] > 100


def test_empty_drawing_is_all_black():
    assert mnist_digit(np.full((50, 50), 255.0)).max() == 0


def test_predictions_for_drawings(tiny_runs):
    runs, _, cnn = tiny_runs
    results = predict(runs / cnn, [canvas(one), canvas(zero)])
    for r in results:
        assert r["seen"].shape == (1, 28, 28)
        assert sum(r["probs"]) == pytest.approx(1, abs=1e-5)
        assert r["class"] == r["classes"][r["index"]]


def png_bytes(mode, size=(40, 40), fmt="PNG"):
    white = {"1": 1, "CMYK": (0, 0, 0, 0)}.get(mode, "white")   # no ink is white in CMYK
    img = Image.new(mode, size, white)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("mode, fmt", [("L", "PNG"), ("RGB", "PNG"), ("RGBA", "PNG"), ("P", "PNG"),
                                       ("CMYK", "JPEG"), ("1", "PNG"), ("LA", "PNG")])
def test_image_modes_are_converted(mode, fmt):
    img = open_image(png_bytes(mode, fmt=fmt))
    assert img.mode in ("L", "RGB", "RGBA")
    seen = prepare_image(img, {"config": {"data": {"dataset": "cifar10"}}, "input_shape": [3, 32, 32]})
    assert seen.shape == (3, 32, 32) and seen.min() > 200      # white stays white


@pytest.mark.parametrize("data, message", [
    (b"", "empty"), (b"plain text, not a picture", "not an image"),
])
def test_bad_images_are_refused_with_a_reason(data, message):
    with pytest.raises(ImageError, match=message):
        open_image(data)


def test_truncated_image_is_refused():
    data = png_bytes("RGB", size=(300, 300))
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300, 3), np.uint8))
    buf = io.BytesIO()
    noisy.save(buf, format="PNG")
    with pytest.raises(ImageError, match="damaged or truncated"):
        open_image(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert open_image(data).size == (300, 300)


def test_decompression_bomb_is_refused_before_decoding():
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, format="PNG")     # ~50 KB on disk, 400 Mpixels
    with pytest.raises(ImageError, match="too large"):
        open_image(buf.getvalue())


def test_which_runs_take_drawings():
    assert can_draw({"data": {"dataset": "mnist-5k"}})[0]
    ok, why = can_draw({"data": {"dataset": "cifar10"}})
    assert not ok and "photos" in why
