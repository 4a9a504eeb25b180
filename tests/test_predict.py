"""Prediction: drawings become MNIST-like digits; images are read safely and converted right."""
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import train_quietly
from dlcore import evaluate
from dlcore.checkpoints import load_model
from dlcore.evaluate import predict_logits
from dlcore.images import ImageError, open_image
from dlcore.predict import (MIN_SPAN, can_draw, ink_check, mnist_digit, predict, prepare_image,
                            to_gray_array)


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


def assert_predict_reproduces_evaluation(run, tmp_path, n_files=200):
    """predict() on the run's own test split gives eval.json's predictions, image for image."""
    ev = json.loads((run / "eval.json").read_text())
    x = evaluate.held_out_images(run, range(ev["n_test"]))              # uint8 [N, C, H, W]
    assert len(x) == len(ev["predictions"]) == len(ev["labels"])
    for images in ([a[0] for a in x], list(x)):                     # [H, W] and [C, H, W] arrays
        results = predict(run, images)
        assert [r["index"] for r in results] == ev["predictions"]
        assert all(np.array_equal(r["seen"], a) for r, a in zip(results, x))   # pixels untouched

    # the probabilities are evaluation's: same normalisation with the checkpoint's mean/std
    model, ckpt = load_model(run / "best.pt")
    ref = torch.softmax(predict_logits(model, torch.from_numpy(x), ckpt["mean"], ckpt["std"],
                                       "cpu"), 1).numpy()
    probs = np.array([r["probs"] for r in results])
    assert (probs.argmax(1) == ref.argmax(1)).all()
    assert np.abs(probs - ref).max() < 1e-5

    files = []                                                      # and as PNG files on disk
    for i, a in enumerate(x[:n_files]):
        files.append(tmp_path / f"test_{i}.png")
        Image.fromarray(a[0]).save(files[-1])
    results = predict(run, files)
    assert [r["index"] for r in results] == ev["predictions"][:n_files]
    assert all(np.array_equal(r["seen"], a) for r, a in zip(results, x))


def test_predicting_the_test_split_gives_the_evaluations_predictions(tiny_runs, tmp_path):
    runs, dnn, cnn = tiny_runs
    for run in (dnn, cnn):
        assert_predict_reproduces_evaluation(runs / run, tmp_path)


def test_predicting_8x8_digits_gives_the_evaluations_predictions(tmp_path):
    cfg = {"data": {"dataset": "digits"}, "model": {"arch": "dnn", "hidden_dims": [32]},
           "train": {"epochs": 2, "batch_size": 64, "seed": 3, "device": "cpu"}}
    run = train_quietly(cfg, tmp_path / "runs", name="digits")
    assert_predict_reproduces_evaluation(run, tmp_path)


def test_drawings_and_off_format_digits_are_made_into_mnist_digits(tiny_runs):
    runs, _, cnn = tiny_runs
    _, ckpt = load_model(runs / cnn / "best.pt")
    drawing = canvas(one)                                           # 280x280, transparent paper
    assert np.array_equal(prepare_image(drawing, ckpt)[0], mnist_digit(to_gray_array(drawing)))

    sample = evaluate.held_out_images(runs / cnn, [0])[0, 0]            # a real 28x28 MNIST digit
    dark_on_light = 255 - sample                                    # right size, wrong polarity
    seen = prepare_image(dark_on_light, ckpt)[0]
    assert np.array_equal(seen, mnist_digit(dark_on_light.astype(float)))
    assert seen[0].max() == 0 and seen[:, 0].max() == 0             # light ink on black again

    small = np.zeros((28, 28, 4), np.uint8)                         # a small transparent canvas
    small[4:24, 13:15] = (0, 0, 0, 255)
    seen = prepare_image(small, ckpt)[0]
    assert np.array_equal(seen, mnist_digit(to_gray_array(small)))
    assert seen.max() > 100 and seen[0].max() == 0

    with pytest.raises(ImageError, match="expected an image"):
        prepare_image(np.zeros((5, 5, 5)), ckpt)


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


MNIST_5K = {"config": {"data": {"dataset": "mnist-5k"}}, "input_shape": [1, 28, 28]}


def full_range_digit():
    """A real MNIST digit that uses the whole 0..255 range, as uint8 [28, 28]."""
    from dlcore.datasets import load_arrays
    x = load_arrays("mnist-5k", "data")[0][:, 0]
    return next(a for a in x if a.min() == 0 and a.max() == 255)


def encoded(array, fmt, mode=None):
    buf = io.BytesIO()
    (Image.fromarray(array, mode) if mode else Image.fromarray(array)).save(buf, format=fmt)
    return buf.getvalue()


def wide_range_versions(a8):
    """The same gray picture as a 16-bit PNG, a 12-bit scan in a 16-bit PNG, a 32-bit integer
    TIFF and a 32-bit float TIFF (0..1)."""
    v = a8.astype(np.float64)
    return {"16-bit png": encoded((v * 257).astype(np.uint16), "PNG"),
            "12-bit png": encoded((v * 4095 / 255).round().astype(np.uint16), "PNG"),
            "int32 tiff": encoded((v * 257).astype(np.int32), "TIFF", "I"),
            "float tiff": encoded((v / 255).astype(np.float32), "TIFF", "F")}


def test_16_bit_and_float_images_are_prepared_like_the_8_bit_one():
    digit = full_range_digit()
    big = np.asarray(Image.fromarray(255 - digit).resize((112, 112), Image.BILINEAR))
    for a8 in (digit, big):         # an MNIST-format sample, and a dark-on-light picture
        want = prepare_image(open_image(encoded(a8, "PNG")), MNIST_5K).astype(int)
        assert want.max() > 200 and (want < 128).mean() > 0.5      # a digit, not a blank
        for kind, data in wide_range_versions(a8).items():
            img = open_image(data, name=kind)
            assert img.mode == "L", kind
            seen = prepare_image(img, MNIST_5K).astype(int)
            assert np.abs(seen - want).max() <= 1, kind
            # a PIL image handed over directly is converted the same way
            direct = prepare_image(Image.open(io.BytesIO(data)), MNIST_5K).astype(int)
            assert np.abs(direct - want).max() <= 1, kind


def test_a_float_image_with_nan_is_refused_with_a_reason():
    a = np.zeros((28, 28), np.float32)
    a[3, 3] = np.nan
    with pytest.raises(ImageError, match="NaN or infinite"):
        open_image(encoded(a, "TIFF", "F"), name="scan.tif")


def sideways_photo(orientation):
    """A photo of a 7 (dark ink, white paper) stored rotated, with the EXIF orientation tag
    that tells a viewer how to turn it upright; and the upright picture."""
    upright = np.full((160, 160), 255, np.uint8)
    upright[30:44, 40:120] = 0          # the 7's bar, at the top
    upright[30:130, 106:120] = 0        # its stem, on the right
    turn = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}[orientation]
    stored = Image.fromarray(upright).transpose(turn)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    stored.save(buf, format="JPEG", quality=95, exif=exif)
    return buf.getvalue(), upright


@pytest.mark.parametrize("orientation, turns", [(6, -1), (8, 1)])
def test_exif_orientation_turns_a_sideways_photo_upright(orientation, turns):
    data, upright = sideways_photo(orientation)
    stored = np.asarray(Image.open(io.BytesIO(data)))             # the pixels as the file has them
    assert stored.shape == upright.shape and not np.array_equal(stored, upright)
    img = open_image(data, name="photo.jpg")
    turned = np.rot90(stored, turns)                              # orientation 6: 90 degrees clockwise
    assert np.array_equal(np.asarray(img), turned)
    assert np.abs(turned.astype(int) - upright).mean() < 2        # it is the upright 7 (JPEG aside)
    seen = prepare_image(img, MNIST_5K)
    assert np.array_equal(seen, prepare_image(turned, MNIST_5K))
    assert np.abs(seen.astype(int) - prepare_image(upright, MNIST_5K)).mean() < 2
    assert np.array_equal(prepare_image(Image.open(io.BytesIO(data)), MNIST_5K), seen)


def dot(radius, size=280):
    """A dot as a brush of that radius leaves it on a transparent canvas."""
    a = np.zeros((size, size, 4), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    a[np.hypot(yy - size / 2, xx - size / 2) < radius] = (0, 0, 0, 255)
    return a


# the page's brush is 6 to 40 pixels wide: a dot 5, 17 or 39 pixels across on 280
@pytest.mark.parametrize("radius, percent", [(3, 1), (9, 6), (20, 13)])
def test_a_dot_is_too_little_ink_to_be_a_digit(radius, percent):
    enough, why = ink_check(dot(radius))
    assert not enough
    assert why == (f"too little ink: it spans {percent}% of the picture, at least "
                   f"{MIN_SPAN:.0%} is needed")


def test_drawn_digits_and_real_digits_have_enough_ink():
    from dlcore.datasets import load_arrays
    for drawing in (canvas(one), canvas(zero), dot(40)):     # a big round blob may be a 0
        assert ink_check(drawing) == (True, "")
    for name in ("mnist-5k", "digits"):                 # every real sample, either polarity
        x = load_arrays(name, "data")[0][:, 0]
        assert all(ink_check(a)[0] and ink_check(255 - a)[0] for a in x[::5]), name


def test_a_blank_or_specked_picture_has_no_digit():
    assert ink_check(canvas(lambda a: None)) == (False, "there is no ink on it")
    assert ink_check(np.full((30, 40), 200.0)) == (False, "there is no ink on it")
    specks = np.full((200, 200), 255, np.uint8)
    specks[10:12, 10:12] = specks[185:187, 190:192] = 0     # two specks of dust far apart
    assert ink_check(specks) == (False, "only scattered specks of ink, no strokes")
    with pytest.raises(ImageError, match="expected an image"):
        ink_check(np.zeros((5, 5, 5)))


def on_paper(digit, paper, rng=None, noise=0.0):
    """A real MNIST digit (light on dark, uint8 [28, 28]) written on a sheet and photographed:
    112 pixels tall in a 200x200 picture. Dark ink on paper lighter than mid-grey lets through
    what the ink leaves of the paper's brightness; light ink (chalk) on a dark slate adds to it."""
    ink = np.pad(np.asarray(Image.fromarray(digit).resize((112, 112), Image.BILINEAR),
                            dtype=float) / 255, 44)
    photo = paper * (1 - ink) if paper > 127 else paper + (255 - paper) * ink
    if noise:
        photo = photo + rng.normal(0, noise, photo.shape)
    return np.clip(np.round(photo), 0, 255).astype(np.uint8)


def jpeg(a):
    """The picture as a camera hands it over: JPEG-compressed, then opened like a file."""
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=90)
    return open_image(buf.getvalue(), name="photo.jpg")


def test_an_empty_light_grey_sheet_is_blank_not_a_grey_frame():
    rng = np.random.default_rng(0)
    for sheet in (np.full((200, 150), 200, np.uint8),
                  jpeg(np.clip(200 + rng.normal(0, 3, (300, 400)), 0, 255).astype(np.uint8))):
        assert ink_check(sheet) == (False, "there is no ink on it")
        assert prepare_image(sheet, MNIST_5K).max() == 0         # all black, as MNIST's background
    specked = np.clip(200 + rng.normal(0, 3, (300, 400)), 0, 255).astype(np.uint8)
    specked[140:144, 200:203] = 110                               # a crumb on the sheet
    enough, why = ink_check(jpeg(specked))
    assert not enough and why.startswith("too little ink: it spans 1%")


@pytest.mark.parametrize("paper", [200, 225, 60])   # light grey, off-white, a dark slate
def test_a_digit_on_grey_paper_is_prepared_and_predicted_as_on_white_paper(tiny_runs, paper):
    runs, _, cnn = tiny_runs
    ev = json.loads((runs / cnn / "eval.json").read_text())
    digits = evaluate.held_out_images(runs / cnn, range(30))[:, 0]
    labels = ev["labels"][:30]
    white = [on_paper(d, 255) for d in digits]
    grey = [on_paper(d, paper) for d in digits]
    for w, g in zip(white, grey):
        seen_w, seen_g = prepare_image(w, MNIST_5K)[0], prepare_image(g, MNIST_5K)[0]
        assert np.abs(seen_g.astype(int) - seen_w).max() <= 2       # the same 28x28 input
        assert ink_check(g) == (True, "")
        border = np.concatenate([seen_g[0], seen_g[-1], seen_g[:, 0], seen_g[:, -1]])
        assert border.max() == 0 and seen_g.max() > 200             # light ink, black frame
    on_white, on_grey = predict(runs / cnn, white), predict(runs / cnn, grey)
    right = [i for i, r in enumerate(on_white) if r["index"] == labels[i]]
    assert len(right) >= 15                          # most photos on white paper are read right
    for i in right:                                  # and each of them is read right on grey too
        assert on_grey[i]["index"] == labels[i]
        assert on_grey[i]["probability"] == pytest.approx(on_white[i]["probability"], abs=0.02)


def test_a_photo_of_a_digit_on_grey_paper_keeps_its_reading_despite_grain(tiny_runs):
    runs, _, cnn = tiny_runs
    rng = np.random.default_rng(1)
    digits = evaluate.held_out_images(runs / cnn, range(20))[:, 0]
    white = [on_paper(d, 255) for d in digits]
    photos = [jpeg(on_paper(d, 200, rng, noise=3)) for d in digits]   # grain, then JPEG
    for w, p in zip(white, photos):
        seen_w, seen_p = prepare_image(w, MNIST_5K)[0], prepare_image(p, MNIST_5K)[0]
        assert np.abs(seen_p.astype(int) - seen_w).mean() < 3
        assert seen_p[0].max() == 0 and seen_p[:, 0].max() == 0     # no grey frame
    same = [a["index"] == b["index"]
            for a, b in zip(predict(runs / cnn, white), predict(runs / cnn, photos))]
    assert sum(same) >= 18


def test_the_upload_widgets_take_every_format_the_messages_name():
    from dlcore.images import ALLOWED, EXTENSIONS

    endings = {"PNG": "png", "JPEG": "jpg", "BMP": "bmp", "GIF": "gif", "WebP": "webp",
               "TIFF": "tiff"}
    assert [endings[name] for name in ALLOWED.split(", ")] and \
        all(endings[name] in EXTENSIONS for name in ALLOWED.split(", "))
