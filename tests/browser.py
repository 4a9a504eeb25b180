"""Driving the dashboard in a real Chromium: the app server, the browser, and page helpers.

Used by test_browser.py. A missing browser fails the tests under CI (env CI set) and skips
them elsewhere, saying what to install.
"""
from __future__ import annotations

import importlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("DLCORE_CHROMIUM") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
# tall, because Streamlit scrolls an inner container: a screenshot shows only the viewport
VIEWPORT = {"width": 1400, "height": 1900}
IDLE = ('[data-testid="stApp"][data-test-script-state="notRunning"]'
        '[data-test-connection-state="CONNECTED"]')
# generous for a busy 2-core machine; a healthy step takes a few seconds
STEP_MS = 90_000


def screenshots_dir() -> Path:
    d = Path(os.environ.get("DLCORE_SCREENSHOTS") or ROOT / "test-artifacts" / "screenshots")
    d.mkdir(parents=True, exist_ok=True)
    return d


def require_browser() -> None:
    """Skip (or, under CI, fail) with the reason when Chromium or Playwright is missing."""
    problems = []
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        problems.append(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium; "
                        "or set DLCORE_CHROMIUM to its path)")
    try:
        importlib.import_module("playwright.sync_api")
    except ImportError:
        problems.append("the playwright package is not installed (pip install playwright)")
    if not problems:
        return
    reason = "browser tests need a browser: " + "; ".join(problems)
    if os.environ.get("CI"):
        pytest.fail(reason + " [CI is set: the browser tests must run here]", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- the app server

class AppServer:
    """`streamlit run app.py` on a free localhost port, in its own process group."""

    def __init__(self, runs_dir: Path, data_root: Path, log_path: Path):
        self.runs_dir, self.data_root, self.log_path = Path(runs_dir), Path(data_root), log_path
        self.port = free_port()
        self.url = f"http://localhost:{self.port}"
        self.proc = None

    def start(self, timeout: float = 120) -> "AppServer":
        env = dict(os.environ, DLCORE_RUNS=str(self.runs_dir), DLCORE_DATA=str(self.data_root),
                   PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "streamlit", "run", "app.py",
               "--server.headless", "true", "--server.port", str(self.port),
               "--server.address", "localhost", "--browser.gatherUsageStats", "false",
               # the suite must not react to edits of the source while it runs
               "--server.fileWatcherType", "none", "--server.runOnSave", "false"]
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        return self
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"streamlit did not answer on {self.url} in {timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        _stop_workers(self.runs_dir)
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(5)
        self.log.close()


def _stop_workers(runs_dir: Path, grace: float = 15) -> None:
    """Training workers run in their own sessions: end any the tests left running."""
    from dlcore.jobs import stop
    from dlcore.runs import RunStore
    from dlcore.runlock import lock_holder, run_is_locked

    store = RunStore(runs_dir)
    holders = []
    for r in store.active():
        holders.append((r.path, lock_holder(r.path)))
        try:
            stop(runs_dir, r.id)
        except (OSError, ValueError):
            continue
    deadline = time.monotonic() + grace
    for path, pid in holders:
        while run_is_locked(path) and time.monotonic() < deadline:
            time.sleep(0.2)
        if run_is_locked(path) and pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# ---------------------------------------------------------------- the browser

def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


def wait_idle(page, timeout: int = STEP_MS, settle: int = 300) -> None:
    """The script finished and every lazily loaded element (Plotly) is drawn."""
    page.wait_for_timeout(settle)          # let a rerun just triggered begin
    page.wait_for_selector(IDLE, timeout=timeout)
    page.wait_for_selector('[data-testid="stSkeleton"]', state="detached", timeout=timeout)


def open_page(page, title: str) -> None:
    """Navigate with the sidebar, as a user does (keeps the browser session's state)."""
    page.locator('[data-testid="stSidebarNav"] a', has_text=title).first.click()
    heading = page.get_by_role("heading", name=title, level=1).first
    heading.or_(page.locator('[data-testid="stException"]')).first.wait_for(timeout=STEP_MS)
    wait_idle(page)
    if not heading.is_visible():
        raise AssertionError(f"the {title} page did not open: "
                             + (" | ".join(problems_on_screen(page)) or "no heading"))


def problems_on_screen(page) -> list[str]:
    """Exception boxes and error messages currently shown."""
    def short(text):       # the message and traceback, without the box's buttons
        return text.split("\nCopy\n")[0].strip()[:800]

    found = [f"exception: {short(t)}"
             for t in page.locator('[data-testid="stException"]').all_inner_texts()]
    # an exception box is drawn as an error alert too: count it once
    errors = page.locator('[data-testid="stAlertContentError"]').evaluate_all(
        "els => els.filter(e => !e.closest('[data-testid=\"stException\"]')"
        " && !e.querySelector('[data-testid=\"stException\"]')).map(e => e.innerText)")
    found += [f"error: {short(t)}" for t in errors]
    body = page.locator('[data-testid="stMain"]').inner_text()
    if "Traceback (most recent call last)" in body and not found:
        found.append("a traceback is printed on the page")
    return found


def assert_clean(page, where: str) -> None:
    problems = problems_on_screen(page)
    assert not problems, f"{where}: " + " | ".join(problems)


def choose(page, label: str, option: str) -> None:
    """Pick an option of a selectbox (a react-aria combobox) by its visible text."""
    page.get_by_role("combobox", name=label).first.click()
    page.get_by_role("option", name=option).first.click()
    wait_idle(page)


def set_text(page, label: str, value: str) -> None:
    box = page.get_by_role("textbox", name=label, exact=True).first
    box.fill(value)
    box.press("Enter")
    wait_idle(page)


def selected(page, label: str) -> str:
    """The text a selectbox shows as chosen ("" while it is not on the page)."""
    box = page.get_by_role("combobox", name=label, exact=True)
    try:
        return box.first.input_value(timeout=1000) if box.count() else ""
    except Exception:      # replaced by a rerun between finding and reading it
        return ""


def metric(page, label: str) -> str:
    """The value shown by the st.metric with this label."""
    m = page.locator('[data-testid="stMetric"]').filter(
        has=page.locator('[data-testid="stMetricLabel"]', has_text=label)).first
    return m.locator('[data-testid="stMetricValue"]').inner_text().strip()


def plotly_traces(chart) -> list[dict]:
    """The traces Plotly drew in a chart element: name and x values (typed arrays decoded)."""
    return chart.evaluate("""el => {
        const gd = el.querySelector('.js-plotly-plot') || el;
        return (gd.data || []).map(t => ({
            name: t.name || '', type: t.type || '',
            x: t.x ? Array.from(t.x) : [], y: t.y ? Array.from(t.y) : []}));
    }""")


def shot(page, name: str) -> Path:
    path = screenshots_dir() / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def eventually(check, timeout: float, interval: float = 0.25, what: str = "condition"):
    """Poll `check` until it returns a truthy value; the value, or AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def say(config, text: str) -> None:
    """Print past pytest's output capture (where the screenshots are, step timings)."""
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is None:
        print(text)
        return
    with capman.global_and_fixture_disabled():
        print(text, flush=True)


def copy_log(server: AppServer) -> None:
    try:
        shutil.copyfile(server.log_path, screenshots_dir() / "streamlit-server.log")
    except OSError:
        pass
