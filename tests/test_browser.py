"""End to end: `streamlit run app.py` driven in a real Chromium, as a user would.

The steps run in order in one browser session (each builds on the one before: the Data and
Model pages make the config the Train page runs, whose run the later pages show). A
screenshot of every step goes to $DLCORE_SCREENSHOTS (default test-artifacts/screenshots).
"""
from __future__ import annotations

import math
import re
import shutil
import time

import pytest

from browser import (STEP_MS, VIEWPORT, AppServer, assert_clean, choose, copy_log, eventually,
                     launch_chromium, metric, open_page, plotly_traces, problems_on_screen,
                     require_browser, say, screenshots_dir, selected, set_text, shot, wait_idle)

pytestmark = pytest.mark.browser

PAGES = ["Data", "Model", "Train", "Evaluate", "Draw", "Compare"]
RUN_NAME = "browser cnn"        # the 2-epoch run of step 4
LONG_NAME = "browser long"      # the run stopped in step 8
# A CNN of about 4 s per epoch on 2 idle cores: slow enough that the page, polling every
# second, shows epoch 1 alone before epoch 2 (an 8-channel one took under 1 s, too close),
# and ~95% on mnist-5k after 2 epochs, so that the Draw step can tell a 1 from a 0.
CNN_BLOCKS, CNN_FC = "16, 32; 32, 64", "32"


@pytest.fixture(scope="session")
def browser_ready():
    """Decided before anything is trained: skip (fail under CI) without a browser."""
    require_browser()


@pytest.fixture(scope="module")
def app(request, browser_ready, tiny_runs_master, tmp_path_factory):
    """The app on a free port with a private runs dir holding two tiny completed runs."""
    base = tmp_path_factory.mktemp("browser")
    runs = base / "runs"
    shutil.copytree(tiny_runs_master[0], runs)
    server = AppServer(runs, base / "data", base / "streamlit.log").start()
    say(request.config, f"\nbrowser tests: screenshots in {screenshots_dir()}")
    try:
        yield server
    finally:
        server.stop()
        copy_log(server)


@pytest.fixture(scope="module")
def page(app):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
        pg = browser.new_page(viewport=VIEWPORT)
        pg.set_default_timeout(STEP_MS)
        try:
            yield pg
        finally:
            browser.close()


@pytest.fixture(scope="module")
def state():
    """What one step leaves for the next (run ids, predictions)."""
    return {}


@pytest.fixture(autouse=True)
def _timed(request):
    """Each step's time, and a screenshot of the page when a step fails."""
    started, failed = time.monotonic(), request.session.testsfailed
    yield
    say(request.config, f"  {request.node.name}: {time.monotonic() - started:.1f}s")
    pg = request.node.funcargs.get("page")
    if request.session.testsfailed > failed and pg is not None:
        try:
            say(request.config, f"  screenshot: {shot(pg, 'FAILED-' + request.node.name)}")
        except Exception as e:        # the browser itself may be what broke
            say(request.config, f"  no screenshot of the failure: {e}")


def needs(state, key, step):
    if key not in state:
        pytest.fail(f"needs {step}, which did not finish", pytrace=False)
    return state[key]


def image_src(page, caption: str) -> str:
    img = page.locator('[data-testid="stImage"]').filter(has_text=caption).locator("img").first
    return img.get_attribute("src")


def run_by_name(app, name):
    from dlcore.runs import RunStore

    return next((r for r in RunStore(app.runs_dir).list() if r.name == name), None)


# ---------------------------------------------------------------- 1. every page loads

def test_every_page_loads_without_an_exception(app, page, state):
    page.goto(app.url + "/")
    wait_idle(page)
    page.get_by_role("heading", name="Data", level=1).wait_for()
    assert_clean(page, "app start")
    shot(page, "01-app-open")
    for i, title in enumerate(PAGES[1:] + PAGES[:1], start=1):
        open_page(page, title)
        assert_clean(page, f"{title} page")
        shot(page, f"01-page-{i}-{title.lower()}")


# ---------------------------------------------------------------- 2. Data page

def test_data_page_new_batch_changes_the_grid(app, page, state):
    if not page.url.startswith(app.url):      # step 1 did not get as far as opening it
        page.goto(app.url + "/")
        wait_idle(page)
    open_page(page, "Data")
    # pick another dataset first, so that picking mnist-5k is a real change
    choose(page, "Dataset", "· digits")
    eventually(lambda: metric(page, "Input shape") == "1×8×8", 30, what="digits' input shape")
    choose(page, "Dataset", "· mnist-5k")
    eventually(lambda: metric(page, "Input shape") == "1×28×28", 30, what="mnist-5k's input shape")
    assert metric(page, "Classes") == "10"
    before = image_src(page, "batch seed 0")

    crop = page.get_by_role("slider", name="Random crop padding")
    crop.focus()
    crop.press("End")                       # padding 8: every image shifted
    wait_idle(page)
    eventually(lambda: page.locator('[data-testid="stSlider"]', has_text="Random crop padding")
               .locator('[data-testid="stSliderThumbValue"]').inner_text().strip() == "8", 30,
               what="crop padding 8")
    augmented = eventually(lambda: (src := image_src(page, "batch seed 0")) != before and src, 30,
                           what="the crop padding to change the batch grid")

    page.get_by_role("button", name="New batch").click()
    wait_idle(page)
    eventually(lambda: image_src(page, "batch seed") not in (before, augmented), 30,
               what="New batch to change the batch grid")
    page.locator('[data-testid="stImageCaption"]', has_text="batch seed 1").wait_for()
    assert_clean(page, "Data page")
    shot(page, "02-data-new-batch")

    # train on plain images: back to no padding
    crop.focus()
    crop.press("Home")
    wait_idle(page)
    eventually(lambda: page.locator('[data-testid="stSlider"]', has_text="Random crop padding")
               .locator('[data-testid="stSliderThumbValue"]').inner_text().strip() == "0", 30,
               what="crop padding 0")
    state["data"] = True


# ---------------------------------------------------------------- 3. Model page

def test_model_page_width_changes_the_parameter_count(app, page, state):
    needs(state, "data", "step 2")      # back to plain images, mnist-5k
    open_page(page, "Model")
    dnn = metric(page, "Trainable parameters")
    page.get_by_role("radio", name="CNN", exact=True).click()
    page.get_by_role("textbox", name="Convolution blocks ([hidden, out] channels)",
                     exact=True).wait_for()
    wait_idle(page)
    cnn = eventually(lambda: (v := metric(page, "Trainable parameters")) != dnn and v, 30,
                     what="the CNN's parameter count")

    set_text(page, "Convolution blocks ([hidden, out] channels)", CNN_BLOCKS)
    narrow = eventually(lambda: (v := metric(page, "Trainable parameters")) != cnn and v, 30,
                        what="a new count after changing the convolution widths")
    set_text(page, "Fully connected widths", CNN_FC)
    small = eventually(lambda: (v := metric(page, "Trainable parameters")) != narrow and v, 30,
                       what="a new count after changing the fully connected width")
    counts = [int(v.replace(",", "")) for v in (cnn, narrow, small)]
    assert counts[0] > counts[1] > counts[2] > 0, counts
    assert_clean(page, "Model page")
    shot(page, "03-model-cnn-widths")
    state["model"] = counts[2]


# ---------------------------------------------------------------- 4. Train page

def _train(page, epochs: int, name: str) -> None:
    open_page(page, "Train")
    form = page.locator('[data-testid="stForm"]')
    for label, value in (("Epochs", str(epochs)), ("Run name", name)):
        box = form.get_by_label(label, exact=True)
        box.fill(value)
        box.press("Tab")          # commit the value without submitting the form
    form.get_by_role("button", name="Start").click()


def test_training_chart_updates_live_without_reload(app, page, state):
    from dlcore.runs import RunStore

    needs(state, "model", "step 3")
    page.evaluate("window.__sameDocument = true")     # lost if the page were reloaded
    _train(page, 2, RUN_NAME)
    chart = page.locator(".st-key-train_curves")
    seen = []

    def epochs_drawn():
        # until the worker has made its run, the page shows the newest older run
        if RUN_NAME not in selected(page, "Watch run") or not chart.count():
            return ()
        try:
            traces = plotly_traces(chart)
        except Exception:      # redrawn between finding and reading it
            return None
        got = tuple(sorted({int(x) for t in traces if t["type"] == "scatter" for x in t["x"]}))
        if got and (not seen or seen[-1] != got):
            seen.append(got)
        return got

    def until_drawn(epochs, what):
        try:
            eventually(lambda: epochs_drawn() == epochs, 180, 0.2, what=what)
        except AssertionError as e:     # say what the page and the runs directory showed
            shot(page, "04-train-timed-out")
            runs = [(r.name, r.state, r.epoch, r.damaged) for r in RunStore(app.runs_dir).list()]
            raise AssertionError(f"{e}; charts drawn {seen}, watching "
                                 f"{selected(page, 'Watch run')!r}, runs {runs}, on screen "
                                 f"{problems_on_screen(page)}") from None

    until_drawn((1,), "the chart with epoch 1 only")
    shot(page, "04-train-epoch-1")
    until_drawn((1, 2), "the chart with epochs 1 and 2")
    page.get_by_text("Completed after 2 epoch(s)").wait_for(timeout=180_000)
    wait_idle(page)
    assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"
    assert (1, 2) in seen[seen.index((1,)):], seen

    run = run_by_name(app, RUN_NAME)
    assert run is not None and run.state == "completed", run
    assert (run.dataset, run.arch, run.epoch) == ("mnist-5k", "cnn", 2)
    # the curves drawn are this run's: validation loss per epoch as in metrics.jsonl
    rows = RunStore(app.runs_dir).metrics(run.id)
    drawn = [t["y"] for t in plotly_traces(chart) if t["name"] == "val" and len(t["y"]) == 2]
    assert drawn and drawn[0] == pytest.approx([r["val_loss"] for r in rows]), (drawn, rows)
    assert_clean(page, "Train page")
    shot(page, "04-train-completed")
    state["run"] = run


# ---------------------------------------------------------------- 5. Evaluate page

def test_evaluate_shows_confusion_matrix_and_roc_auc(app, page, state):
    from dlcore.runs import RunStore

    run = needs(state, "run", "step 4")
    open_page(page, "Evaluate")
    choose(page, "Run", RUN_NAME)
    page.get_by_role("heading", name="Confusion matrix").wait_for()
    wait_idle(page)
    auc = metric(page, "ROC-AUC (macro)")
    assert re.fullmatch(r"0\.\d{4}|1\.0000", auc), f"ROC-AUC tile shows {auc!r}"
    assert float(auc) > 0.9, auc
    charts = page.locator('[data-testid="stPlotlyChart"]')
    types = [t["type"] for i in range(charts.count()) for t in plotly_traces(charts.nth(i))]
    assert "heatmap" in types, f"no confusion matrix heatmap among the charts: {types}"
    ev = RunStore(app.runs_dir).eval(run.id)
    assert metric(page, "Accuracy") == f"{ev['accuracy']:.4f}"
    assert_clean(page, "Evaluate page")
    shot(page, "05-evaluate")
    state["evaluated"] = True


# ---------------------------------------------------------------- 6. Draw page

def _stroke(page, points) -> None:
    canvas = page.locator('[class*="st-key-draw_canvas_"] canvas.upper-canvas').first
    canvas.wait_for()
    box = canvas.bounding_box()
    x0, y0 = box["x"], box["y"]
    page.mouse.move(x0 + points[0][0], y0 + points[0][1])
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(x0 + x, y0 + y, steps=2)
    page.mouse.up()


def _prediction(page) -> tuple[str, str]:
    page.locator('[data-testid="stMetric"]', has_text="Predicted class").wait_for()
    page.locator('.st-key-bars_canvas .js-plotly-plot').wait_for()
    wait_idle(page)
    bars = plotly_traces(page.locator(".st-key-bars_canvas"))
    assert bars and bars[0]["type"] == "bar" and len(bars[0]["x"]) == 10, bars
    return metric(page, "Predicted class"), metric(page, "Probability")


def test_draw_one_and_zero_get_different_predictions(app, page, state, request):
    needs(state, "run", "step 4")
    open_page(page, "Draw")
    choose(page, "Run", RUN_NAME)
    one = [(140, 45 + i * 9) for i in range(22)]                     # a vertical bar
    zero = [(140 + 55 * math.sin(2 * math.pi * k / 40), 140 - 85 * math.cos(2 * math.pi * k / 40))
            for k in range(42)]                                        # an upright ellipse
    _stroke(page, one)
    pred_one = _prediction(page)
    assert_clean(page, "Draw page, a 1")
    shot(page, "06-draw-one")

    page.get_by_role("button", name="Clear").click()
    page.locator('[data-testid="stMetric"]', has_text="Predicted class").wait_for(state="detached")
    wait_idle(page)
    _stroke(page, zero)
    pred_zero = _prediction(page)
    assert_clean(page, "Draw page, a 0")
    shot(page, "06-draw-zero")
    say(request.config, f"  drawn 1 -> {pred_one[0]} ({pred_one[1]}), "
                        f"drawn 0 -> {pred_zero[0]} ({pred_zero[1]})")
    assert pred_one[0] != pred_zero[0], (pred_one, pred_zero)
    state["drawn"] = (pred_one, pred_zero)


# ---------------------------------------------------------------- 7. Compare page

def test_compare_two_runs_shows_curves_and_config_differences(app, page, state):
    needs(state, "run", "step 4")
    open_page(page, "Compare")
    picker = page.get_by_role("combobox", name="Runs to compare")
    page.get_by_role("button", name="Clear all").click()
    wait_idle(page)
    page.get_by_text("Choose two or more runs to compare them.").wait_for()
    for label in (RUN_NAME, "tiny dnn"):
        picker.click()
        page.get_by_role("option", name=label).first.click()
        wait_idle(page)
        page.keyboard.press("Escape")
    page.get_by_role("heading", name="Config differences").wait_for()
    wait_idle(page)
    names = {t["name"] for t in plotly_traces(page.locator(".st-key-compare_curves"))}
    for label in (RUN_NAME, "tiny dnn"):
        assert any(n.startswith(label) for n in names), f"no curve of {label}: {names}"
    # the config differences table: the first dataframe after its heading
    diff = page.locator('[data-testid="stHeading"]', has_text="Config differences") \
        .locator("xpath=following::*[@data-testid='stDataFrame'][1]")
    diff.wait_for()
    assert diff.bounding_box()["height"] > 50
    assert_clean(page, "Compare page")
    shot(page, "07-compare")
    state["compared"] = True


# ---------------------------------------------------------------- 8. Stop

def test_stop_button_ends_a_long_run_with_a_checkpoint(app, page, state):
    needs(state, "model", "step 3")
    from dlcore.checkpoints import load_model

    _train(page, 200, LONG_NAME)
    # the run's own Stop button (Streamlit's toolbar has one too, for the script)
    stop = page.locator('[class*="st-key-stop_"] button')
    stop.wait_for(timeout=180_000)
    # stop it in the middle of training, not while it is loading
    page.locator('[data-testid="stProgress"]', has_text=re.compile(r"batch \d+/\d+")) \
        .wait_for(timeout=120_000)
    shot(page, "08-stop-running")
    stop.click()
    page.get_by_text(re.compile(r"Stopped after \d+ of 200 epoch")).wait_for(timeout=120_000)
    wait_idle(page)
    assert_clean(page, "Train page after Stop")
    shot(page, "08-stop-stopped")

    run = run_by_name(app, LONG_NAME)
    assert run is not None and run.state == "stopped", run
    assert run.has_last, "a stopped run must keep last.pt"
    model, ckpt = load_model(run.path / "last.pt")
    assert ckpt["config"]["model"]["arch"] == "cnn"
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == state["model"]
