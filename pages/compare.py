"""Compare page: saved runs side by side (curves, config differences, final metrics,
confusion matrices), and renaming or deleting runs.
"""
import copy
import time

import pandas as pd
import streamlit as st

from dlcore import jobs
from dlcore.compare import compare_runs, rename_done, rename_question, run_to_show_after
from dlcore.config import ConfigError
from dlcore.datasets import DatasetUnavailable
from dlcore.figures import (LAYER_STATS, confusion_matrix_figure, init_sweep_figure,
                             learning_curves)
from dlcore.summaries import config_diff_columns, sweep_layer_series, sweep_progress
from dlcore.sweep import SWEEP_INITS, sweep_runs
from pages.common import config, data_root, route_through_app, run_label, runs_dir, store

route_through_app()

MATRICES_PER_ROW = 3
BEST_STYLE = "background-color: rgba(33, 195, 84, 0.25); font-weight: bold"

st.title("Compare runs")


def show_flash() -> None:
    """A message left by the action that caused this rerun (rename, delete)."""
    msg = st.session_state.pop("compare_flash", None)
    if msg:
        st.success(msg, icon=":material/check:")


def metrics_table(res: dict):
    """Final metrics, one column per run; the best of each row within a dataset highlighted."""
    df = pd.DataFrame(res["metrics"]).set_index("metric")
    df = df.apply(pd.to_numeric, errors="coerce")

    def highlight(row):
        best = res["best_of"].get(row.name, ())
        return [BEST_STYLE if col in best else "" for col in row.index]

    style = df.style.apply(highlight, axis=1).format(precision=4, na_rep="—")
    for row, fmt in (("epochs run", "{:.0f}"), ("training time (s)", "{:.1f}")):
        if row in df.index:
            style = style.format(fmt, subset=pd.IndexSlice[[row], :], na_rep="—")
    return style


def show_comparison(res: dict) -> None:
    labels = res["labels"]
    st.subheader("Learning curves")
    st.caption("Train dashed, validation solid; a star marks each run's best epoch "
               "(lowest validation loss).")
    st.plotly_chart(learning_curves(res["curves"], res["best_epochs"]), width="stretch",
                    key="compare_curves")

    st.subheader("Config differences")
    if res["config_diff"]:
        diff = pd.DataFrame(config_diff_columns(res["config_diff"], labels))
        diff.index.name = "setting"
        st.dataframe(diff, width="stretch")
    else:
        st.caption("The configs are identical.")
    with st.expander("Full configs"):
        for col, lab in zip(st.columns(len(labels)), labels):
            col.markdown(f"**{lab}**")
            col.json(res["configs"][lab], expanded=True)

    st.subheader("Final metrics")
    st.caption("Test metrics come from each run's eval.json; the best value of each row is "
               "highlighted among the runs on the same dataset.")
    if res["dataset_note"]:
        st.info(res["dataset_note"], icon=":material/dataset:")
    st.dataframe(metrics_table(res), width="stretch")

    st.subheader("Confusion matrices")
    normalized = st.toggle("Normalise rows", key="compare_cm_norm",
                           help="Each row as fractions of its true class instead of counts.")
    per_row = min(len(labels), MATRICES_PER_ROW)
    for start in range(0, len(labels), per_row):
        row = labels[start:start + per_row]
        for col, lab in zip(st.columns(per_row), row):
            ev = res["evals"].get(lab)
            with col:
                if not ev or not ev.get("confusion_matrix"):
                    st.info(f"**{lab}**: no evaluation yet (no eval.json); evaluate it on the "
                            "Evaluate page.")
                    continue
                st.plotly_chart(confusion_matrix_figure(ev["confusion_matrix"], ev["classes"],
                                                        normalized=normalized, title=lab,
                                                        height=420),
                                width="stretch", key=f"compare_cm_{start}_{lab}")


def untick(key: str) -> None:
    st.session_state[key] = False


def act(run_id: str, text: str | None, run_ids: list[str]) -> None:
    """Renames the run to `text`, or deletes it (text None), only while the Run box shows it."""
    ss = st.session_state
    if text is not None:
        untick(f"compare_rename_ok_{run_id}")      # each rename is confirmed anew
    try:
        if ss.get("compare_manage") != run_id:
            raise ConfigError("The chosen run changed meanwhile; nothing was done.")
        if text is None:
            store().delete(run_id)          # refused while a process holds the run's lock
            ss["compare_flash"] = f"Deleted run {run_id} and its files."
            ss.pop(f"compare_confirm_{run_id}", None)
            ss["compare_manage"] = run_to_show_after(run_ids, run_id)
        elif ss.get(f"compare_new_name_{run_id}", "") != text:
            raise ConfigError("The name changed meanwhile: check it and confirm again.")
        else:
            store().rename(run_id, text)
            ss["compare_flash"] = rename_done(text)
            ss[f"compare_new_name_{run_id}"] = ""
            ss["compare_manage"] = run_id   # set again, so that the box shows the new label
    except ConfigError as e:
        ss["compare_manage_error"] = str(e)


def manage_runs(runs) -> None:
    """Rename or delete the run the box shows; both ask for a tick naming that run first."""
    by_id = {r.id: r for r in runs}
    ids, ss = list(by_id), st.session_state
    if ss.get("compare_manage") not in by_id:
        ss["compare_manage"] = ids[0]       # set, not dropped: the box is told what it shows
    # keyed, so that it stays open while the messages above it come and go
    with st.expander("Rename or delete a run", icon=":material/edit:", key="compare_manage_box"):
        run_id = st.selectbox("Run", ids, key="compare_manage",
                              format_func=lambda i: run_label(by_id[i]))
        shown = by_id[run_id].name or run_id
        err = ss.pop("compare_manage_error", None)
        if err:
            st.error(err)
        name_col, del_col = st.columns(2, gap="large")
        with name_col:
            # keyed by run, so that neither a typed name nor a tick carries over to another run
            text = st.text_input("New name", key=f"compare_new_name_{run_id}",
                                 placeholder=shown, max_chars=80,
                                 help="Shown everywhere instead of the run id; leave empty "
                                      "to show the id.",
                                 on_change=untick, args=(f"compare_rename_ok_{run_id}",))
            sure = st.checkbox(rename_question(shown, text), key=f"compare_rename_ok_{run_id}")
            st.button("Rename", key="compare_rename", disabled=not sure, on_click=act,
                      args=(run_id, text, ids))
        with del_col:
            sure = st.checkbox(f"Yes, delete {shown} and all its files",
                               key=f"compare_confirm_{run_id}")
            st.button("Delete run", key="compare_delete", type="primary", disabled=not sure,
                      icon=":material/delete:", on_click=act, args=(run_id, None, ids))


def start_sweep() -> None:
    ss = st.session_state
    name = f"init sweep {time.strftime('%H:%M:%S')}"
    try:
        job = jobs.start_init_sweep(copy.deepcopy(config()), runs_dir(), name, data_root(),
                                    epochs=int(ss["sweep_epochs"]), limit=int(ss["sweep_limit"]))
    except (ConfigError, DatasetUnavailable, OSError) as e:
        ss["sweep_error"] = f"Not started: {e}"
        return
    ss["compare_sweep"] = {"name": name, "job": job, "selected": False}


def show_sweep_progress(sweep: dict) -> None:
    """Which of the sweep's runs exist and how far each is; reruns the page when it ends."""
    p = sweep_progress(sweep_runs(store().list(), sweep["job"].sweep))
    for col, (label, state) in zip(st.columns(p["total"]), p["cells"].items()):
        col.metric(label, state)
    if not sweep["job"].ended():
        st.progress(p["fraction"], text=f"{sweep['name']}: {p['done']} of {p['total']} runs done")
    elif not sweep["selected"]:
        st.rerun()      # the whole page: the finished runs get selected for comparison


def sweep_section() -> None:
    """One click trains the working model once per init method; see the layers side by side."""
    ss = st.session_state
    ss.setdefault("sweep_epochs", 3)
    ss.setdefault("sweep_limit", 1000)
    sweep = ss.get("compare_sweep")
    with st.expander("Init comparison", icon=":material/science:", expanded=sweep is not None):
        model = config().get("model", {})
        st.caption(f"Trains the working model ({model.get('arch', '?')}) once per init: "
                   f"{', '.join(SWEEP_INITS)}, one short run after another in one worker, "
                   "each with layer statistics.")
        a, b, c = st.columns([1, 1, 1], vertical_alignment="bottom")
        a.number_input("Epochs per run", 1, 50, key="sweep_epochs")
        b.number_input("Training images", 100, 100000, step=100, key="sweep_limit")
        running = sweep is not None and not sweep["job"].ended()
        c.button("Compare inits", icon=":material/play_arrow:", key="sweep_start",
                 on_click=start_sweep, disabled=running, type="primary",
                 help="still training the last sweep" if running else None)
        err = ss.pop("sweep_error", None)
        if err:
            st.error(err)
        if sweep is None:
            return
        found = {i: r for i, r in sweep_runs(store().list(), sweep["job"].sweep).items() if r}
        if not running and not sweep["selected"] and found:
            # once, so that the user can change the selection afterwards
            sweep["selected"] = True
            ss["compare_ids"] = [r.id for r in found.values()]
        st.fragment(show_sweep_progress, run_every=1.0 if running else None)(sweep)
        if not running and not found:
            why = jobs.last_error(sweep["job"].log)
            st.error(f"The init comparison produced no run{': ' + why if why else ''}")
            return
        series, damaged = sweep_layer_series(found)
        for line in damaged:
            st.warning(f"No layer statistics of {line}")
        if series:
            key = st.selectbox("Layer statistic", ["grad_norm", "act_std", "act_mean"],
                               key="sweep_stat", format_func=dict(LAYER_STATS).get)
            st.plotly_chart(init_sweep_figure(series, key), width="stretch", key="sweep_layers")


show_flash()
sweep_section()
runs = store().list()
if not runs:
    st.info("No saved runs yet: train a model on the Train page, then compare runs here.",
            icon=":material/model_training:")
    st.stop()

by_id = {r.id: r for r in runs}
# drop runs deleted since the selection was made, before the widget reads its state
st.session_state["compare_ids"] = (
    [i for i in st.session_state["compare_ids"] if i in by_id] if "compare_ids" in st.session_state
    else [r.id for r in runs if r.state == "completed"][:2])
ids = st.multiselect("Runs to compare", list(by_id), key="compare_ids",
                     format_func=lambda i: run_label(by_id[i]),
                     placeholder="Choose two or more runs")
manage_runs(runs)

if len(ids) < 2:
    st.info("Choose two or more runs to compare them.", icon=":material/compare:")
    st.stop()

res = compare_runs(store(), ids)
for run_id, why in res["problems"].items():
    st.warning(f"{run_label(by_id[run_id])} cannot be compared: {why}")
if len(res["labels"]) < 2:
    st.info("Fewer than two of the chosen runs can be read: choose another.")
    st.stop()
show_comparison(res)
