"""Train: the training settings, a Start button that launches a worker process, and a live view
of a run read back from its run directory (so a refresh or a second tab sees the same run).
"""
from __future__ import annotations

import copy

import streamlit as st

from dlcore import jobs
from dlcore.config import TRAIN_DEFAULTS, ConfigError, limits
from dlcore.datasets import DatasetUnavailable
from dlcore.figures import layer_stats_figure, learning_curves
from dlcore.timing import eta, format_duration
from dlcore.summaries import config_lines, run_caption, train_progress
from pages.common import config, data_root, route_through_app, run_label, runs_dir, store

route_through_app()

POLL_S = 1.0
RECENT = 30   # runs offered in the picker; older ones are on the Compare page
ss = st.session_state

# the train fields of the form; their bounds, choices and defaults come from limits("train.*")
FIELDS = ("optimizer", "lr", "schedule", "weight_decay", "batch_size", "epochs", "patience",
          "seed", "device", "precision", "compile", "layer_stats")


@st.cache_data(show_spinner=False)
def devices() -> dict:
    return jobs.device_report()


def seed_form() -> None:
    """Fill the form's widgets from config()['train'], falling back to defaults for bad values."""
    given = config().get("train")
    t = {**TRAIN_DEFAULTS, **(given if isinstance(given, dict) else {})}
    for key in FIELDS:
        ss.setdefault(f"train_{key}", limits(f"train.{key}").or_default(t[key]))
    ss.setdefault("train_name", "")


def config_summary(cfg: dict) -> None:
    """What Start will train, besides the settings below; edited on the Data and Model pages."""
    data, model = config_lines(cfg)
    st.markdown(f"**Data** {data}  \n**Model** {model}")
    a, b = st.columns(2)
    a.page_link("pages/data.py", label="Change data", icon=":material/dataset:")
    b.page_link("pages/model.py", label="Change model", icon=":material/account_tree:")


def choice(box, label: str, key: str, **kw) -> None:
    box.selectbox(label, limits(f"train.{key}").choices, key=f"train_{key}", **kw)


def number(box, label: str, key: str, **kw) -> None:
    box.number_input(label, *limits(f"train.{key}").bounds, key=f"train_{key}", **kw)


def settings_form(busy: bool) -> bool:
    seed_form()
    with st.form("train_form", enter_to_submit=False):   # only Start starts a run
        a, b = st.columns(2)
        choice(a, "Optimizer", "optimizer")
        number(b, "Learning rate", "lr", step=1e-4, format="%g")
        choice(a, "Schedule", "schedule",
               help="cosine: decays to zero over all epochs; onecycle: warm-up then decay")
        number(b, "Weight decay", "weight_decay", step=1e-4, format="%g")
        number(a, "Batch size", "batch_size")
        number(b, "Epochs", "epochs")
        number(a, "Early-stopping patience", "patience",
               help="epochs without a lower validation loss before stopping; 0 = off")
        number(b, "Seed", "seed")
        labels = jobs.device_labels(devices())
        choice(a, "Device", "device", format_func=labels.__getitem__)
        choice(b, "Precision", "precision",
               help="auto: bf16 mixed precision on a CUDA GPU that supports it, else fp32")
        st.text_input("Run name", max_chars=80, key="train_name", placeholder="optional")
        with st.container(horizontal=True, gap="medium"):     # whole labels in a narrow column
            st.checkbox("Layer statistics", key="train_layer_stats", width="content",
                        help="each epoch, activation mean/std and weight-gradient norm of every "
                             "layer on a fixed batch of 256 training images (a few % of an epoch)")
            st.checkbox("torch.compile", key="train_compile", width="content",
                        help="compiles the model first: pays off on long GPU runs, not on short ones")
        st.caption(jobs.device_line(devices()))
        return st.form_submit_button("Start", type="primary", icon=":material/play_arrow:",
                                     disabled=busy,
                                     help="this session's run is still going" if busy else None)


def start() -> None:
    # train keys this form does not know are kept: dlcore.config checks them all
    train = config().get("train") if isinstance(config().get("train"), dict) else {}
    config()["train"] = {**train, **{k: ss[f"train_{k}"] for k in FIELDS}}
    try:
        job = jobs.start_training(copy.deepcopy(config()), runs_dir(), ss["train_name"] or None,
                                  data_root())
    except (ConfigError, DatasetUnavailable, OSError) as e:
        st.error(f"Not started: {e}")
        return
    follow(job)


def follow(job) -> None:
    """Make a just-started worker's run this session's run, shown and polled from now on."""
    ss["train_job"], ss["train_job_run"], ss["train_pinned"] = job, job.run_id, False
    st.rerun()


def resume_button(r, busy: bool) -> None:
    if not st.button("Resume", icon=":material/resume:", key=f"resume_{r.id}",
                     disabled=busy,
                     help="continue from last.pt up to the run's own number of epochs"):
        return
    try:
        job = jobs.start_resume(runs_dir(), r.id, data_root=data_root())
    except (ConfigError, DatasetUnavailable, OSError) as e:
        st.error(f"Not resumed: {e}")
        return
    follow(job)


# ---------------------------------------------------------------- following runs

def pick_run(runs) -> str:
    recent = runs[:RECENT]
    labels = {r.id: run_label(r) for r in recent}
    ss["train_watch"] = jobs.watched_run(recent, ss.get("train_job_run"), ss.get("train_watch"),
                                         ss.get("train_pinned"))
    return st.selectbox("Watch run", list(labels), key="train_watch",
                        format_func=lambda i: labels[i],
                        on_change=lambda: ss.update(train_pinned=True),
                        help="the newest run in progress is shown unless you pick another")


def monitor(was_live: bool) -> None:
    w = jobs.watch(ss.get("train_job"), runs_dir())
    if w.phase == "starting":
        st.info("Starting... the training process is loading the data.",
                icon=":material/hourglass_top:")
    if not w.runs:
        st.info("No runs yet: choose the settings and press Start.")
    else:
        watched = pick_run(w.runs)
        run_view(next(r for r in w.runs if r.id == watched), w.busy)
    if was_live and not w.live:
        st.rerun()   # the last run ended and is shown so: redraw the page once, without polling


# ---------------------------------------------------------------- one run

def state_banner(r, ev) -> None:
    if r.state == "completed":
        acc = f": test accuracy **{ev['accuracy']:.2%}**" if isinstance(ev, dict) and \
            isinstance(ev.get("accuracy"), (int, float)) else ""
        st.success(f"Completed after {r.epoch} epoch(s){acc}.", icon=":material/check_circle:")
        st.page_link("pages/evaluate.py", label="Open in Evaluate", icon=":material/analytics:",
                     query_params={"run": r.id})
    elif r.state == "stopped":
        st.warning(f"Stopped after {r.epoch} of {r.epochs} epoch(s); last.pt holds the weights "
                   "so far.", icon=":material/stop_circle:")
    elif r.state == "failed":
        st.error(f"Failed: {r.error or 'no error was recorded'}")


def curves_figure(r, metrics):
    """The learning curves, rebuilt only when an epoch was added: polling redraws every second."""
    key = (r.id, r.name, len(metrics), r.best_epoch)
    memo = ss.get("train_figure")
    if memo is None or memo[0] != key:
        label = r.name or r.id
        memo = ss["train_figure"] = (key, learning_curves({label: metrics}, {label: r.best_epoch}))
    return memo[1]


def run_view(r, busy: bool) -> None:
    if r.damaged:
        st.error(f"Run {r.id} cannot be read: {r.damaged}")
        return
    try:
        metrics = store().metrics(r.id)
        ev = store().eval(r.id) if r.has_eval else None
    except (OSError, ValueError, ConfigError) as e:
        st.error(f"Run {r.id} cannot be read: {e}")
        return
    st.caption(run_caption(r))
    state_banner(r, ev)
    elapsed, left = eta(r, metrics)
    # tiles wrap onto a second line rather than cutting their numbers off in a narrow column
    with st.container(horizontal=True, gap="medium"):
        tile = dict(width="content")
        st.metric("Epoch", f"{r.epoch}/{r.epochs}", **tile)
        st.metric("Best epoch", r.best_epoch if r.best_epoch is not None else "—", **tile)
        st.metric("Best val accuracy", f"{r.best_val_acc:.2%}" if r.best_val_acc is not None
                  else "—", help="at the epoch with the lowest validation loss", **tile)
        st.metric("Elapsed", format_duration(elapsed), **tile)
        if r.state == "running":
            st.metric("Remaining", format_duration(left), **tile,
                      help="estimated from the seconds per epoch so far; early stopping may end "
                           "sooner")
    if r.state == "running":
        a, b = st.columns([5, 1], vertical_alignment="bottom")
        fraction, text = train_progress(r)
        a.progress(fraction, text=text)
        if b.button("Stop", icon=":material/stop:", key=f"stop_{r.id}", width="stretch"):
            jobs.stop(runs_dir(), r.id)
            st.toast("Stopping at the next batch; last.pt will hold the weights.")
    if r.state in ("stopped", "failed") and r.has_last and r.epoch < r.epochs:
        resume_button(r, busy)
    if metrics:
        st.plotly_chart(curves_figure(r, metrics), width="stretch", key="train_curves")
    elif r.state == "running":
        st.caption("The learning curves appear after the first epoch.")
    layers_view(r)


def layers_view(r) -> None:
    """Per-layer statistics of layers.jsonl, rebuilt only when an epoch was added."""
    series = store().layers(r.id)
    if series["damaged"]:
        st.warning(f"No layer statistics: {series['damaged']}")
    if not series["epochs"]:
        return
    key = (r.id, tuple(series["epochs"]))
    memo = ss.get("train_layers_figure")
    if memo is None or memo[0] != key:
        memo = ss["train_layers_figure"] = (key, layer_stats_figure(series))
    with st.expander("Layer statistics", expanded=True, icon=":material/stacked_line_chart:"):
        st.caption("On a fixed batch of training images, each epoch (epoch 0: the initial "
                   "weights). Vanishing gradients or activations that explode or die point "
                   "at a bad initialisation or learning rate.")
        st.plotly_chart(memo[1], width="stretch", key="train_layers")


# ---------------------------------------------------------------- page

st.title("Train")
ss.setdefault("train_job", None)
ss.setdefault("train_job_run", None)
ss.setdefault("train_pinned", False)

left, right = st.columns([2, 3], gap="large")
now = jobs.watch(ss["train_job"], runs_dir())
with left:
    st.subheader("Settings")
    config_summary(config())
    if settings_form(busy=now.busy):
        start()
with right:
    st.subheader("Run")
    st.fragment(monitor, run_every=POLL_S if now.live else None)(now.live)
