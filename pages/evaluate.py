"""Evaluate: a saved run's test-split metrics, confusion matrix, per-class report, ROC curves
and its most confidently wrong test images, all read from the run's eval.json.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from dlcore.config import ConfigError
from dlcore.datasets import DatasetUnavailable
from dlcore.display import overlay, pictures
from dlcore.evaluate import cell_examples, evaluate_run, held_out_images
from dlcore.export import export_code
from dlcore.figures import confusion_matrix_figure, roc_figure
from dlcore.images import ImageError
from dlcore.checkpoints import CheckpointError
from dlcore.saliency import saliency
from dlcore.summaries import (eval_caption, eval_stamp, evaluation_state, largest_confusion,
                              metric_tiles, run_downloads)
from pages.common import data_root, route_through_app, run_label, store

route_through_app()

GALLERY_COLS = 6
# what loading a run's data or checkpoint can raise; shown as one message, never a traceback
LOAD_ERRORS = (ConfigError, DatasetUnavailable, CheckpointError, OSError, ValueError, KeyError,
               IndexError, TypeError)


@st.cache_data(show_spinner="Loading the test images...", max_entries=16)
def test_split_images(run_path: str, indices: tuple, root: str, stamp: float):
    """The run's test images at `indices`; `stamp` (eval.json's mtime) keys the cache."""
    return held_out_images(run_path, list(indices), root)


def show_images(r, indices: list[int], captions: list[str]):
    """The run's test images at `indices`, enlarged in rows of GALLERY_COLS with a caption
    each; returns them, or None after saying why they cannot be shown."""
    try:
        raw = test_split_images(str(r.path), tuple(indices), data_root(), eval_stamp(r.path))
    except LOAD_ERRORS as e:
        st.warning(f"The test images cannot be shown: {e}")
        return None
    pics = pictures(raw)
    for row in range(0, len(pics), GALLERY_COLS):
        for col, pic, cap in zip(st.columns(GALLERY_COLS), pics[row:row + GALLERY_COLS],
                                 captions[row:row + GALLERY_COLS]):
            col.image(pic, caption=cap, width="stretch")
    return raw


def choose_run(runs) -> object:
    ids = [r.id for r in runs]
    wanted = st.query_params.get("run")
    if wanted in ids and st.session_state.get("eval_from_url") != wanted:
        st.session_state["eval_run"] = wanted   # a link from the Train page names the run
        st.session_state["eval_from_url"] = wanted
    if st.session_state.get("eval_run") not in ids:
        st.session_state["eval_run"] = next((r.id for r in runs if r.state == "completed"), ids[0])
    labels = {r.id: run_label(r) for r in runs}
    rid = st.selectbox("Run", ids, key="eval_run", format_func=lambda i: labels[i])
    st.query_params["run"] = rid
    st.session_state["eval_from_url"] = rid
    return next(r for r in runs if r.id == rid)


def evaluate_button(r, label: str) -> None:
    if st.button(label, type="primary", icon=":material/play_arrow:"):
        with st.spinner("Evaluating the checkpoint on the test split..."):
            try:
                # on the CPU: the web server process must never create a CUDA context (it
                # would hold GPU memory for as long as the server runs)
                evaluate_run(r.path, data_root(), device="cpu")
            except LOAD_ERRORS as e:
                st.error(f"Evaluation failed: {e}")
                return
        st.rerun()


def read_eval(r) -> dict | None:
    """The run's checked eval.json; a problem is shown, never raised."""
    try:
        return store().eval(r.id)
    except (OSError, ValueError, ConfigError) as e:
        st.error(f"eval.json of {r.id} cannot be read: {e}")
        return None


def metrics_row(ev: dict) -> None:
    for col, (label, value, why) in zip(st.columns(5), metric_tiles(ev)):
        col.metric(label, value, help=why)
    st.caption(eval_caption(ev))


def charts(ev: dict) -> None:
    left, right = st.columns(2, gap="large")
    with left:
        st.subheader("Confusion matrix")
        normalized = st.toggle("Normalised by true class", key="eval_normalized",
                               help="each row divided by its number of test images")
        st.plotly_chart(confusion_matrix_figure(ev["confusion_matrix"], ev["classes"],
                                                normalized=normalized), width="stretch")
    with right:
        st.subheader("ROC curves")
        curves = ev.get("roc_curves") or []
        if any(c.get("fpr") for c in curves):
            st.plotly_chart(roc_figure(curves), width="stretch")
        else:
            st.info("No ROC curves: the test split needs at least two classes.")
    st.subheader("Per class")
    table = pd.DataFrame(ev["per_class"], columns=["class", "precision", "recall", "f1", "support"])
    st.dataframe(table, hide_index=True, width="stretch", column_config={
        "class": st.column_config.TextColumn("class"),
        **{k: st.column_config.NumberColumn(k, format="%.3f")
           for k in ("precision", "recall", "f1")},
        "support": st.column_config.NumberColumn("support", format="%d")})


def gallery(r, ev: dict) -> None:
    st.subheader("Most confidently wrong")
    wrong = ev.get("confident_wrong") or []
    if not wrong:
        st.caption("No wrong predictions on the test split.")
        return
    classes = ev["classes"]
    n = len(wrong) if len(wrong) <= GALLERY_COLS else st.slider(
        "Images", GALLERY_COLS, len(wrong), min(2 * GALLERY_COLS, len(wrong)), GALLERY_COLS)
    wrong = wrong[:n]
    show_images(r, [int(w["index"]) for w in wrong], [f"true {classes[w['true']]} → predicted {classes[w['predicted']]} "
                      f"({w['confidence']:.0%})" for w in wrong])


def drill_down(r, ev: dict) -> None:
    """The test images of one confusion-matrix cell, most confident first, and a saliency map."""
    st.subheader("Confusion cell drill-down")
    if not ev.get("predictions") or not ev.get("labels"):
        st.info("This eval.json has no per-image predictions: evaluate the run again to "
                "drill into the confusion matrix.")
        return
    classes, cm = ev["classes"], ev["confusion_matrix"]
    k = list(range(len(classes)))
    true0, pred0 = largest_confusion(cm)
    ss = st.session_state
    if ss.get("drill_run") != r.id or ss.get("drill_true") not in k \
            or ss.get("drill_pred") not in k:
        # another run: start again from its largest confusion
        ss["drill_run"], ss["drill_true"], ss["drill_pred"] = r.id, true0, pred0
    a, b, c = st.columns([2, 2, 3])
    t = a.selectbox("True class", k, key="drill_true", format_func=lambda i: str(classes[i]))
    p = b.selectbox("Predicted class", k, key="drill_pred", format_func=lambda i: str(classes[i]))
    idx = cell_examples(ev, t, p)
    c.metric("Test images in this cell", len(idx))
    if not idx:
        st.caption(f"No test image of class {classes[t]} was predicted as {classes[p]}.")
        return
    shown = idx[:GALLERY_COLS * 3]
    st.caption(f"true {classes[t]} → predicted {classes[p]}: {len(idx)} images, most confident "
               f"first" + (f" (the first {len(shown)} shown)" if len(shown) < len(idx) else ""))
    raw = show_images(r, shown, [f"true {classes[t]} → predicted {classes[p]} "
                                 f"({ev['confidences'][i]:.0%}) · #{i}" for i in shown])
    if raw is not None:
        explain(r, raw, shown, f"true {classes[t]} → predicted {classes[p]}", classes)


def explain(r, raw, shown: list[int], cell: str, classes) -> None:
    """Saliency of one gallery image for its predicted class."""
    pick = st.selectbox("Explain image", list(range(len(shown))), key="drill_explain",
                        format_func=lambda j: f"#{shown[j]}")
    if pick is None or pick >= len(shown):
        return
    try:
        sal = saliency(r.path, raw[pick])
    except (*LOAD_ERRORS, ImageError) as e:
        st.warning(f"No saliency map: {e}")
        return
    left, right = st.columns(2)
    left.image(pictures(raw[pick:pick + 1], 168)[0], caption=f"{cell}: test image "
               f"#{shown[pick]}")
    right.image(overlay(raw[pick], sal["map"]),
                caption=f"{cell}: saliency for {classes[sal['target']]} "
                        f"({sal['probability']:.0%}); red raised the score, blue lowered it")


def downloads(r) -> None:
    """eval.json, the checkpoint and the files made from it, each read or made on click."""
    files = run_downloads(r.path, r.id)
    for col, f in zip(st.columns(5), files):
        col.download_button(f["label"], data=f["data"], file_name=f["file_name"], mime=f["mime"],
                            icon=":material/code:" if f["kind"] == "code" else
                            ":material/download:", on_click="ignore")
    if any(f["kind"] == "code" for f in files) and st.toggle(
            "Show the PyTorch code of this run", key=f"eval_code_{r.id}"):
        try:
            st.code(export_code(r.path), language="python")
        except LOAD_ERRORS as err:
            st.error(f"No code: {err}")


# ---------------------------------------------------------------- page

st.title("Evaluate")
runs = store().list()
if not runs:
    st.info("No runs yet: train one on the Train page, then come back to see its test metrics.")
    st.page_link("pages/train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()

run = choose_run(runs)
blocked = evaluation_state(run)
if blocked:
    getattr(st, blocked["level"])(blocked["message"])
    if blocked["note"]:
        st.caption(blocked["note"])
    if blocked["action"]:
        evaluate_button(run, blocked["action"])
    st.stop()
ev = read_eval(run)
if ev is None:          # changed or gone since the run was listed
    if run.has_best or run.has_last:
        evaluate_button(run, "Evaluate again")
    st.stop()

try:
    metrics_row(ev)
    charts(ev)
    gallery(run, ev)
    drill_down(run, ev)
except (KeyError, TypeError, ValueError, IndexError) as e:
    st.error(f"eval.json of {run.id} is malformed: {e.__class__.__name__}: {e}")
downloads(run)
