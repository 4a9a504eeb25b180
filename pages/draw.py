"""Draw page: draw a digit (or upload an image) and watch a saved run classify it as you draw.

The drawing is prepared the way the run's dataset was (dlcore.predict), and the page shows
the very image the model read. A picture with too little ink to be a digit (a dot, a blank
sheet) gets a hint instead of a prediction.
"""
import streamlit as st
from streamlit_drawable_canvas import st_canvas

from dlcore.config import ConfigError
from dlcore.display import image_grid, overlay
from dlcore.figures import probability_bars
from dlcore.images import EXTENSIONS, ImageError, open_image
from dlcore.predict import ink_check, predict
from dlcore.checkpoints import CheckpointError
from dlcore.saliency import saliency
from dlcore.summaries import drawable_runs
from pages.common import route_through_app, run_label, store

route_through_app()

CANVAS_SIZE = 280          # ten canvas pixels per MNIST pixel
PREDICT_ERRORS = (ImageError, CheckpointError, ConfigError, OSError)

st.title("Draw")
st.session_state.setdefault("draw_canvas_n", 0)


def show_prediction(result: dict, key: str, run_dir=None) -> None:
    """The predicted class big, its probability, all class probabilities, and what the model saw."""
    top, seen = st.columns([1, 1])
    top.metric("Predicted class", str(result["class"]))
    top.metric("Probability", f"{result['probability']:.1%}")
    seen_img = result["seen"]
    h, w = seen_img.shape[1:]
    seen.image(image_grid(seen_img, size=168, pad=0), caption=f"what the model sees ({h}x{w})")
    if run_dir is not None and seen_img.any():
        try:
            sal = saliency(run_dir, seen_img, target=result["index"])
            seen.image(overlay(seen_img, sal["map"], size=168),
                       caption=f"why {result['class']}: red pixels raised its score, blue "
                               "lowered it")
        except PREDICT_ERRORS as e:
            seen.caption(f"No saliency map: {e}")
    st.plotly_chart(probability_bars(result["probs"], result["classes"], height=280),
                    width="stretch", key=f"bars_{key}")


def predict_one(run_dir, image, hint: str):
    """One prediction, or None after showing why there is none: too little ink (with the
    hint) or an error."""
    try:
        enough, why = ink_check(image)
        if not enough:
            st.info(f"{why[:1].upper()}{why[1:]}. {hint}", icon=":material/draw:")
            return None
        return predict(run_dir, [image])[0]
    except PREDICT_ERRORS as e:
        st.error(str(e))
        return None


def clear_canvas() -> None:
    # a new key mounts a fresh, empty canvas
    st.session_state["draw_canvas_n"] += 1


@st.fragment
def draw_panel(run_dir, subject: str) -> None:
    """Canvas and live prediction; a fragment so that each stroke reruns only this part."""
    left, right = st.columns([1, 1.3], gap="large")
    with left:
        # the canvas's own toolbar floats just above it: leave it room, controls go below
        st.space(24)
        dark = st.session_state.get("draw_dark", False)
        canvas = st_canvas(
            stroke_width=st.session_state.get("draw_brush", 18),
            stroke_color="#ffffff" if dark else "#000000",
            background_color="#000000" if dark else "#ffffff",
            update_streamlit=True,    # send the drawing on every stroke: live prediction
            height=CANVAS_SIZE, width=CANVAS_SIZE, drawing_mode="freedraw",
            return_image_data=True,
            key=f"draw_canvas_{st.session_state['draw_canvas_n']}_{'dark' if dark else 'light'}")
        st.button("Clear", icon=":material/ink_eraser:", on_click=clear_canvas, key="draw_clear")
        st.slider("Brush width", 6, 40, 18, key="draw_brush")
        st.toggle("White ink on black", key="draw_dark",
                  help="Either way works: dark ink on a light background is inverted to "
                       "MNIST's light-on-dark before the model reads it. Switching clears "
                       "the canvas.")
    with right:
        objects = (canvas.json_data or {}).get("objects") or []
        pixels = canvas.image_data
        if not objects or pixels is None:
            st.info(f"Draw {subject} on the canvas with the mouse; the prediction updates "
                    "after every stroke.", icon=":material/draw:")
            return
        result = predict_one(run_dir, pixels, f"Draw {subject} that fills most of the canvas.")
        if result is not None:
            show_prediction(result, "canvas", run_dir)


def upload_panel(run_dir, subject: str) -> None:
    left, right = st.columns([1, 1.3], gap="large")
    with left:
        up = st.file_uploader("Image to classify", type=list(EXTENSIONS), key="draw_upload",
                              help="A digit photographed or scanned; dark on light or light on "
                                   "dark both work.")
    if up is None:
        right.info("Upload a PNG, JPEG, BMP, GIF or WebP image.", icon=":material/upload:")
        return
    try:
        img = open_image(up, name=up.name)    # its size is checked before it is read
    except ImageError as e:
        right.error(str(e))
        return
    left.image(img, caption=up.name, width=200)
    with right:
        result = predict_one(run_dir, img, f"Upload a picture of {subject} that fills most "
                                            "of it.")
        if result is not None:
            show_prediction(result, "upload", run_dir)


offered, refused = drawable_runs(store())
if refused:
    with st.expander(f"{len(refused)} run(s) not offered here"):
        for r, why in refused:
            st.markdown(f"- **{r.name or r.id}** ({r.dataset}/{r.arch}): {why}.")
if not offered:
    st.info("No run that reads drawings yet: train a model on mnist-5k, MNIST, digits or "
            "Fashion-MNIST on the Train page, then come back to draw for it.",
            icon=":material/model_training:")
    st.stop()

by_id = {r.id: r for r, _ in offered}
why_of = {r.id: why for r, why in offered}
ids = list(by_id)
if st.session_state.get("draw_run") not in by_id:
    st.session_state.pop("draw_run", None)
default = next((i for i, r in enumerate(by_id.values()) if r.state == "completed"), 0)
run_id = st.selectbox("Run", ids, index=default, key="draw_run",
                      format_func=lambda i: run_label(by_id[i]))
chosen = by_id[run_id]
st.caption(why_of[run_id].capitalize() +
           (f" · best val accuracy {chosen.best_val_acc:.1%}" if chosen.best_val_acc is not None
            else ""))

subject = "a piece of clothing" if chosen.dataset == "fashion-mnist" else "a digit"
draw_tab, upload_tab = st.tabs(["Draw", "Upload an image"])
with draw_tab:
    draw_panel(chosen.path, subject)
with upload_tab:
    upload_panel(chosen.path, subject)
