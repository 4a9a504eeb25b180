"""Draw page: which runs it offers, predictions of uploaded images, and drawings made MNIST-like."""
import base64
import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from conftest import app_page
from dlcore import evaluate
from dlcore.predict import predict

SIZE = 280


def draw_page(drawing=None):
    """The Draw page; with `drawing` (RGBA pixels), as its canvas returns them after a stroke."""
    if drawing is None:
        return app_page("draw")
    url = "data:image/png;base64," + base64.b64encode(png(drawing)).decode()
    state = {"drawing": {"raw": {"objects": [{"type": "path"}]}, "data": url},
             "backgroundFit": None}
    return app_page("draw", state={"draw_canvas_0_light": state})


def drawn_one() -> np.ndarray:
    """A '1' as a canvas returns it: a vertical black bar on white, RGBA."""
    a = np.full((SIZE, SIZE, 4), 255, np.uint8)
    a[40:240, 130:150, :3] = 0
    return a


def drawn_zero() -> np.ndarray:
    """A '0': a black ring on white, RGBA."""
    a = np.full((SIZE, SIZE, 4), 255, np.uint8)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    r = np.hypot(yy - 140, (xx - 140) * 1.4)
    a[(r > 70) & (r < 92), :3] = 0
    return a


def png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def texts(elements) -> list[str]:
    return [e.value for e in elements]


def test_drawings_become_centred_light_on_dark_digits(tiny_runs):
    runs_dir, _, cnn = tiny_runs
    one, zero = predict(runs_dir / cnn, [drawn_one(), drawn_zero()])
    for res in (one, zero):
        seen = res["seen"]
        assert seen.shape == (1, 28, 28) and seen.dtype == np.uint8
        img = seen[0].astype(float)
        border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
        assert border.max() == 0 and img.max() > 200          # light ink, dark background
        cy, cx = ndimage.center_of_mass(img)
        assert abs(cy - 13.5) < 1 and abs(cx - 13.5) < 1        # centred by mass, as MNIST
        assert sum(res["probs"]) == pytest.approx(1, abs=1e-5)
        assert res["probability"] == max(res["probs"]) and res["class"] in res["classes"]
    ones, zeros = one["seen"][0], zero["seen"][0]
    assert ones[14, 14] > 200 and zeros[14, 14] < 50            # a bar through the middle; a hole
    assert (ones > 0).sum() < (zeros > 0).sum()


def test_page_offers_runs_and_hints_before_drawing(tiny_runs):
    _, dnn, cnn = tiny_runs
    at = draw_page()
    run = at.selectbox(key="draw_run")
    assert set(run.options) >= {"tiny dnn · mnist-5k/dnn · completed",
                                "tiny cnn · mnist-5k/cnn · completed"}
    assert run.value == cnn                                     # the newest completed run
    assert any("Draw a digit on the canvas" in t for t in texts(at.info))
    assert not at.metric and not at.get("plotly_chart")


def test_uploaded_digit_is_predicted(tiny_runs):
    at = draw_page()
    at.file_uploader(key="draw_upload").set_value(("one.png", png(drawn_one()), "image/png"))
    at.run()
    assert not at.exception, at.exception
    assert not at.error
    shown = {m.label: m.value for m in at.metric}
    assert shown["Predicted class"] in [str(d) for d in range(10)]
    assert shown["Probability"].endswith("%")
    assert len(at.get("plotly_chart")) == 1
    assert any("what the model sees (28x28)" in c for i in at.image for c in i.captions)


@pytest.mark.parametrize("name,data,expected", [
    ("notes.png", b"these are not pixels", "not an image"),
    ("empty.png", b"", "empty"),
    ("cut.png", png(drawn_zero())[:300], "damaged or truncated"),
])
def test_bad_upload_shows_what_is_wrong(tiny_runs, name, data, expected):
    at = draw_page()
    at.file_uploader(key="draw_upload").set_value((name, data, "image/png"))
    at.run()
    assert not at.exception, at.exception
    errors = texts(at.error)
    assert len(errors) == 1 and name in errors[0] and expected in errors[0], errors
    assert not at.metric


def test_cifar10_run_is_explained_not_offered(tiny_runs):
    runs_dir, _, cnn = tiny_runs
    photo = runs_dir / "20000101-000000-photos"
    photo.mkdir()
    for f in ("best.pt", "status.json", "metrics.jsonl"):
        shutil.copy(runs_dir / cnn / f, photo / f)
    cfg = json.loads((runs_dir / cnn / "config.json").read_text())
    cfg["data"]["dataset"] = "cifar10"
    (photo / "config.json").write_text(json.dumps(cfg))
    (photo / "meta.json").write_text(json.dumps({"name": "cifar photos"}))

    at = draw_page()
    assert photo.name not in at.selectbox(key="draw_run").options
    assert all("cifar photos" not in o for o in at.selectbox(key="draw_run").options)
    notes = " ".join(texts(at.markdown))
    assert "cifar photos" in notes and "CIFAR-10 models read colour photos" in notes


def test_no_runs_explains_what_to_do(empty_runs):
    at = draw_page()
    assert not at.selectbox
    assert any("Train page" in t for t in texts(at.info))


def test_uploaded_digit_gets_a_saliency_map(tiny_runs):
    at = draw_page()
    at.file_uploader(key="draw_upload").set_value(("one.png", png(drawn_one()), "image/png"))
    at.run()
    assert not at.exception, at.exception
    shown = {m.label: m.value for m in at.metric}
    captions = [c for i in at.image for c in i.captions]
    assert any(c.startswith(f"why {shown['Predicted class']}: red pixels") for c in captions)


def dot(radius=9) -> np.ndarray:
    """A dot of the default brush (18 pixels wide), as the canvas returns it."""
    a = np.full((SIZE, SIZE, 4), 255, np.uint8)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    a[np.hypot(yy - 140, xx - 140) < radius, :3] = 0
    return a


def test_a_dot_on_the_canvas_gets_the_hint_not_a_prediction(tiny_runs):
    at = draw_page(dot())
    assert not at.exception and not at.error
    assert texts(at.info)[0] == ("Too little ink: it spans 6% of the picture, at least 20% is "
                                 "needed. Draw a digit that fills most of the canvas.")
    assert not at.metric and not at.get("plotly_chart")


def test_a_drawn_digit_is_predicted_as_drawn(tiny_runs):
    runs_dir, _, cnn = tiny_runs
    at = draw_page(drawn_one())
    assert not at.exception and not at.error
    want = predict(runs_dir / cnn, [drawn_one()])[0]
    shown = {m.label: m.value for m in at.metric}
    assert shown == {"Predicted class": want["class"], "Probability": f"{want['probability']:.1%}"}
    assert len(at.get("plotly_chart")) == 1


def photo(digit, paper: int, rng=None) -> bytes:
    """A JPEG of a real MNIST digit written dark on a sheet of that brightness: the ink lets
    through what it leaves of the paper's light; with `rng`, a camera's grain too."""
    ink = np.pad(np.asarray(Image.fromarray(digit).resize((112, 112), Image.BILINEAR),
                            dtype=float) / 255, 44)
    a = paper * (1 - ink) + (rng.normal(0, 3, ink.shape) if rng is not None else 0)
    buf = io.BytesIO()
    Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8)).save(buf, format="JPEG",
                                                                          quality=92)
    return buf.getvalue()


def upload(data: bytes, name="photo.jpg"):
    at = draw_page()
    at.file_uploader(key="draw_upload").set_value((name, data, "image/jpeg"))
    at.run()
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    return at


def test_a_digit_photographed_on_light_grey_paper_reads_as_on_white_paper(tiny_runs):
    runs_dir, _, cnn = tiny_runs
    labels = json.loads((runs_dir / cnn / "eval.json").read_text())["labels"]
    digits = evaluate.held_out_images(runs_dir / cnn, range(10))[:, 0]
    on_white = predict(runs_dir / cnn, [Image.open(io.BytesIO(photo(d, 255))) for d in digits])
    i = next(i for i, r in enumerate(on_white) if r["index"] == labels[i] and
             r["probability"] > 0.5)                   # a digit the model reads on white paper
    rng = np.random.default_rng(0)
    white, grey = upload(photo(digits[i], 255)), upload(photo(digits[i], 200, rng))
    shown = [{m.label: m.value for m in at.metric} for at in (white, grey)]
    assert shown[0]["Predicted class"] == shown[1]["Predicted class"] == str(labels[i])
    p_white, p_grey = (float(s["Probability"].rstrip("%")) for s in shown)
    assert abs(p_white - p_grey) < 5                    # percentage points


def test_a_nearly_blank_grey_photo_is_not_read_as_a_digit(tiny_runs):
    rng = np.random.default_rng(0)
    sheet = np.clip(200 + rng.normal(0, 3, (300, 400)), 0, 255)
    sheet[140:144, 200:203] = 110                          # a crumb on an empty grey sheet
    buf = io.BytesIO()
    Image.fromarray(sheet.astype(np.uint8)).save(buf, format="JPEG", quality=90)
    at = upload(buf.getvalue())
    assert not at.metric and not at.get("plotly_chart")
    assert texts(at.info)[-1] == ("Too little ink: it spans 1% of the picture, at least 20% "
                                  "is needed. Upload a picture of a digit that fills most of it.")
