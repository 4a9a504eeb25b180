"""Shared pieces of the views: settings in session state, cached engine calls, the sidebar.

Everything here is a thin wrapper over dlcore; nothing imports torch directly.
"""
from __future__ import annotations

import os

import streamlit as st

from dlcore.config import ARCHS, default_config
from dlcore.runs import RunStore
from dlcore.summaries import run_progress


ROUTED_KEY = "_served_by_router"


LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


def host_name(host_header: str) -> str:
    """The name in a Host header, without its port: 'localhost:8501' and '[::1]:8501'."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def allowed_host(host_header: str | None, server_address: str | None) -> bool:
    """Whether a request's Host is this machine as the server was told to serve it.

    A page from another name that resolves to 127.0.0.1 (DNS rebinding) must not read the
    runs: only localhost, 127.0.0.1, ::1 and the configured server.address are served. A
    server opened to the network on purpose (address 0.0.0.0 or ::) serves every name."""
    if host_header is None:     # no HTTP request behind this run (tests, bare mode)
        return True
    configured = (server_address or "").strip().lower()
    if configured in ("0.0.0.0", "::"):
        return True
    return host_name(host_header) in (*LOCAL_HOSTS, host_name(configured) if configured else "")


def refuse_foreign_host() -> None:
    """Stop here, with one line saying why, for a Host this server does not serve."""
    host = st.context.headers.get("Host")
    if not allowed_host(host, st.get_option("server.address")):
        st.error(f"Refused: this dashboard is served as localhost, not as {host[:100]!r}. "
                 "Open it at http://localhost:<port>, or set server.address in "
                 ".streamlit/config.toml to the name you use.")
        st.stop()


def init_state() -> None:
    """Settings every page reads; set once per browser session."""
    st.session_state.setdefault("runs_dir", os.environ.get("DLCORE_RUNS") or "runs")
    st.session_state.setdefault("data_root", os.environ.get("DLCORE_DATA") or "data")
    # the config being built across Data, Model and Train
    st.session_state.setdefault("config", default_config("dnn"))


def runs_dir() -> str:
    init_state()
    return st.session_state["runs_dir"]


def data_root() -> str:
    init_state()
    return st.session_state["data_root"]


def store() -> RunStore:
    return RunStore(runs_dir())


def config() -> dict:
    """The session's working config (data, model, train sections), with every section and
    data key present so that pages can read them; values are checked where they are used."""
    init_state()
    cfg = st.session_state["config"]
    defaults = default_config(cfg.get("model", {}).get("arch", "dnn")
                              if cfg.get("model", {}).get("arch") in ARCHS else "dnn")
    for section in ("data", "model", "train"):
        if not isinstance(cfg.get(section), dict):
            cfg[section] = defaults[section]
    for key, value in defaults["data"].items():
        cfg["data"].setdefault(key, value)
    if isinstance(cfg["data"]["augment"], dict):
        for key, value in defaults["data"]["augment"].items():
            cfg["data"]["augment"].setdefault(key, value)
    return cfg


def run_label(r) -> str:
    name = r.name or r.id
    extra = f" · {r.dataset}/{r.arch}" if r.dataset else ""
    return f"{name}{extra} · {r.state}"


def sidebar() -> None:
    with st.sidebar:
        st.caption(f"Runs directory  \n`{os.path.abspath(runs_dir())}`")
        # refreshed on its own: every 2 s while something trains, else now and then, so that
        # a run started from another tab or a terminal shows up too
        busy = bool(store().active())
        st.fragment(run_every=2 if busy else 15)(_active_runs)()


def _active_runs() -> None:
    active = store().active()
    if not active:
        st.caption("No run in progress.")
        return
    st.caption("In progress")
    for r in active:
        done, label = run_progress(r)
        st.progress(done, text=label)


def route_through_app() -> None:
    """Make sure this page runs under app.py's router.

    A folder named pages/ beside app.py puts a fresh Streamlit server in its older automatic
    multipage mode until app.py's st.navigation has run once; a deep link such as /train
    opened first after start-up would run the page on its own (no sidebar, no settings).
    Leaving that mode and rerunning hands the request to app.py, which routes it. Only for a
    session that app.py has never served: a rerun drops the widget event that caused this run.
    """
    if st.session_state.get(ROUTED_KEY):
        return
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:     # a Streamlit without the legacy mode
        return
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()
