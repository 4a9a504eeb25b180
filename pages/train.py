"""Train: the training settings, a Start button that launches a worker process, and a live view
of a run read back from its run directory (so a refresh or a second tab sees the same run).
"""
from __future__ import annotations

import copy
import statistics
from datetime import datetime, timezone

import streamlit as st

from dlcore import jobs
from dlcore.config import DEVICES, OPTIMIZERS, PRECISIONS, SCHEDULES, TRAIN_DEFAULTS, ConfigError
from dlcore.datasets import DatasetUnavailable
from dlcore.figures import layer_stats_figure, learning_curves
from dlcore.inspect_layers import layer_series
from pages.common import config, data_root, route_through_app, run_label, runs_dir, store

route_through_app()

POLL_S = 1.0
RECENT = 30   # runs offered in the picker; older ones are on the Compare page
ss = st.session_state

# number fields of the form: (type, min, max); bounds as dlcore.config checks them
NUMBERS = {"lr": (float, 1e-8, 10.0), "weight_decay": (float, 0.0, 1.0),
           "batch_size": (int, 1, 65536), "epochs": (int, 1, 10000),
           "patience": (int, 0, 10000), "seed": (int, 0, 2**32 - 1)}
CHOICES = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "device": DEVICES,
           "precision": PRECISIONS}


@st.cache_data(show_spinner=False)
def devices() -> dict:
    return jobs.device_report()


def seed_form() -> None:
    """Fill the form's widgets from config()['train'], falling back to defaults for bad values."""
    given = config().get("train")
    t = {**TRAIN_DEFAULTS, **(given if isinstance(given, dict) else {})}
    for key, (kind, lo, hi) in NUMBERS.items():
        try:
            value = kind(t[key])
            ok = lo <= value <= hi
        except (TypeError, ValueError):
            ok = False
        ss.setdefault(f"train_{key}", value if ok else kind(TRAIN_DEFAULTS[key]))
    for key, allowed in CHOICES.items():
        ss.setdefault(f"train_{key}", t[key] if t[key] in allowed else TRAIN_DEFAULTS[key])
    ss.setdefault("train_compile", t["compile"] if isinstance(t["compile"], bool) else False)
    ss.setdefault("train_layer_stats", t["layer_stats"] if isinstance(t["layer_stats"], bool)
                  else True)
    ss.setdefault("train_name", "")


def config_summary(cfg: dict) -> None:
    """What Start will train, besides the settings below; edited on the Data and Model pages."""
    d = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
    m = cfg.get("model") if isinstance(cfg.get("model"), dict) else {}
    data = [f"`{d.get('dataset', 'mnist-5k')}`"]
    if d.get("limit"):
        data.append(f"limit {d['limit']}")
    data.append(f"validation {d.get('val_fraction', 0.2):.0%}"
                if isinstance(d.get("val_fraction", 0.2), (int, float)) else "")
    aug = d.get("augment") if isinstance(d.get("augment"), dict) else {}
    data.append("augmented" if any(aug.values()) else "no augmentation")
    arch = m.get("arch", "dnn")
    sizes = {"dnn": ("hidden_dims",), "cnn": ("blocks", "fc_dims"),
             "resnet": ("stage_blocks", "base_width"),
             "rnn": ("cell", "hidden_size", "num_layers")}.get(arch, ())
    model = [f"`{arch}`"] + [f"{k} `{m[k]}`" for k in sizes if k in m]
    model.append(f"init `{m.get('init', 'kaiming')}`")
    st.markdown(f"**Data** {' · '.join(p for p in data if p)}  \n**Model** {' · '.join(model)}")
    a, b = st.columns(2)
    a.page_link("pages/data.py", label="Change data", icon=":material/dataset:")
    b.page_link("pages/model.py", label="Change model", icon=":material/account_tree:")


def settings_form(busy: bool) -> bool:
    seed_form()
    with st.form("train_form"):
        a, b = st.columns(2)
        a.selectbox("Optimizer", OPTIMIZERS, key="train_optimizer")
        b.number_input("Learning rate", min_value=1e-8, max_value=10.0, step=1e-4, format="%g",
                       key="train_lr")
        a.selectbox("Schedule", SCHEDULES, key="train_schedule",
                    help="cosine: decays to zero over all epochs; onecycle: warm-up then decay")
        b.number_input("Weight decay", min_value=0.0, max_value=1.0, step=1e-4, format="%g",
                       key="train_weight_decay")
        a.number_input("Batch size", min_value=1, max_value=65536, key="train_batch_size")
        b.number_input("Epochs", min_value=1, max_value=10000, key="train_epochs")
        a.number_input("Early-stopping patience", min_value=0, max_value=10000,
                       key="train_patience",
                       help="epochs without a lower validation loss before stopping; 0 = off")
        b.number_input("Seed", min_value=0, max_value=2**32 - 1, key="train_seed")
        labels = jobs.device_labels(devices())
        a.selectbox("Device", DEVICES, key="train_device", format_func=labels.__getitem__)
        b.selectbox("Precision", PRECISIONS, key="train_precision",
                    help="auto: bf16 mixed precision on a CUDA GPU that supports it, else fp32")
        a.text_input("Run name", max_chars=80, key="train_name", placeholder="optional")
        b.checkbox("torch.compile", key="train_compile",
                   help="compiles the model first: pays off on long GPU runs, not on short ones")
        a.checkbox("Layer statistics", key="train_layer_stats",
                   help="each epoch, activation mean/std and weight-gradient norm of every layer "
                        "on a fixed batch of 256 training images (a few % of the epoch time)")
        st.caption(jobs.device_line(devices()))
        return st.form_submit_button("Start", type="primary", icon=":material/play_arrow:",
                                     disabled=busy,
                                     help="this session's run is still going" if busy else None)


def start() -> None:
    # train keys this form does not know are kept: dlcore.config checks them all
    train = config().get("train") if isinstance(config().get("train"), dict) else {}
    config()["train"] = {**train, **{k: ss[f"train_{k}"] for k in (*NUMBERS, *CHOICES, "compile",
                                                                   "layer_stats")}}
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

def parse_time(s):
    try:
        return datetime.fromisoformat(s)
    except (TypeError, ValueError):
        return None


def duration(seconds) -> str:
    if seconds is None:
        return "—"
    s = int(round(max(seconds, 0)))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s" if m else f"{s}s"


def timing(r, metrics) -> tuple[float | None, float | None]:
    """(elapsed seconds, estimated seconds left) from the status times and per-epoch seconds."""
    start = parse_time(r.started_at)
    end = parse_time(r.finished_at) if r.finished_at else (
        datetime.now(timezone.utc) if r.state == "running" else None)
    elapsed = (end - start).total_seconds() if start and end else None
    if r.state != "running":
        return elapsed, None
    frac = (r.progress or {}).get("fraction") or 0.0
    secs = [m["seconds"] for m in metrics if isinstance(m.get("seconds"), (int, float))]
    if secs:
        per_epoch = statistics.fmean(secs)
    elif elapsed and frac > 0.02:
        per_epoch = elapsed / frac
    else:
        return elapsed, None
    return elapsed, per_epoch * max(r.epochs - r.epoch - frac, 0.0)


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


def progress_bar(r) -> None:
    p = r.progress or {}
    if p.get("batches"):
        st.progress(min(max(float(p.get("fraction") or 0), 0.0), 1.0),
                    text=f"epoch {p.get('epoch')}/{r.epochs} · "
                         f"batch {p.get('batch')}/{p['batches']}")
    elif r.epoch >= r.epochs:
        st.progress(1.0, text="testing the best checkpoint")
    else:
        st.progress(0.0, text=f"epoch {r.epoch + 1}/{r.epochs} · starting")


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
    started = parse_time(r.started_at)
    st.caption(f"{r.dataset}/{r.arch} on {r.device or 'a device not known yet'}"
               + (f" · started {started.astimezone():%Y-%m-%d %H:%M:%S}" if started else ""))
    state_banner(r, ev)
    elapsed, left = timing(r, metrics)
    # tiles wrap onto a second line rather than cutting their numbers off in a narrow column
    with st.container(horizontal=True, gap="medium"):
        tile = dict(width="content")
        st.metric("Epoch", f"{r.epoch}/{r.epochs}", **tile)
        st.metric("Best epoch", r.best_epoch if r.best_epoch is not None else "—", **tile)
        st.metric("Best val accuracy", f"{r.best_val_acc:.2%}" if r.best_val_acc is not None
                  else "—", help="at the epoch with the lowest validation loss", **tile)
        st.metric("Elapsed", duration(elapsed), **tile)
        if r.state == "running":
            st.metric("Remaining", duration(left), help="estimated from the seconds per epoch "
                      "so far; early stopping may end sooner", **tile)
    if r.state == "running":
        a, b = st.columns([5, 1], vertical_alignment="bottom")
        with a:
            progress_bar(r)
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
    series = layer_series(r.path)
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
