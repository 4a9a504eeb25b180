"""The Train page: the settings form, Start launching a real worker, the live view read back
from the run directory, Stop, and runs that failed, stopped or never started."""
import json
import os
import shutil
import time
from pathlib import Path

from dlcore.config import OPTIMIZERS, SCHEDULES
from dlcore.runs import RunStore
from dlcore.runlock import RunLock
from conftest import app_page, train_quietly, wait_for

QUICK = {"data": {"dataset": "mnist-5k", "limit": 300},
         "model": {"arch": "dnn", "hidden_dims": [32]},
         "train": {"epochs": 2, "batch_size": 32, "device": "cpu"}}


def open_train(cfg=None):
    return app_page("train", state=None if cfg is None else {"config": json.loads(json.dumps(cfg))})


def press_start(at):
    next(b for b in at.button if b.label == "Start").click().run()
    assert not at.exception, at.exception


def poll(at, until, timeout=600):
    """Rerun the page (as the fragment's timer would) until `until()` holds. A worker that
    ends first fails the wait at once with its log; `timeout` only bounds a hang."""
    def reached():
        if until():
            return True
        try:
            job = at.session_state["train_job"]
        except KeyError:
            job = None
        if job is not None and job.ended():
            at.run()
            if until():
                return True
            log = Path(job.log).read_text(errors="replace") if Path(job.log).exists() else ""
            raise AssertionError(f"the worker ended first; its log:\n{log[-4000:]}")
        time.sleep(0.5)
        at.run()
        assert not at.exception, at.exception
        return False

    wait_for(reached, timeout=timeout, what="the page's run")
    at.run()
    assert not at.exception, at.exception


def states(runs_dir):
    return [r.state for r in RunStore(runs_dir).list()]


def test_form_shows_settings_and_found_devices(empty_runs):
    at = open_train(QUICK)
    assert at.selectbox(key="train_optimizer").options == list(OPTIMIZERS)
    assert at.selectbox(key="train_schedule").options == list(SCHEDULES)
    assert at.number_input(key="train_epochs").value == 2
    assert at.number_input(key="train_batch_size").value == 32
    assert at.selectbox(key="train_device").value == "cpu"
    assert any("CPU threads" in c.value and "CUDA GPU" in c.value for c in at.caption)
    summary = " ".join(m.value for m in at.markdown)
    assert "mnist-5k" in summary and "limit 300" in summary and "[32]" in summary
    assert any("No runs yet" in i.value for i in at.info)


def test_invalid_model_shows_error_and_starts_nothing(empty_runs):
    at = open_train({**QUICK, "model": {"arch": "transformer"}})
    press_start(at)
    assert any("model.arch" in e.value and "dnn" in e.value for e in at.error)
    assert at.session_state["train_job"] is None
    assert not any(empty_runs.iterdir())


def test_unavailable_device_shows_error(empty_runs):
    at = open_train(QUICK)
    at.selectbox(key="train_device").set_value("mps")
    press_start(at)
    assert any("train.device" in e.value for e in at.error)
    assert not any(p.name != ".pending" for p in empty_runs.iterdir())


def test_batch_larger_than_the_data_is_refused_before_any_worker_starts(empty_runs):
    at = open_train({**QUICK, "train": {**QUICK["train"], "batch_size": 5000}})
    press_start(at)
    assert any("train.batch_size" in e.value and "training split" in e.value for e in at.error)
    assert at.session_state["train_job"] is None
    assert states(empty_runs) == [] and not (empty_runs / ".pending").exists()


def test_start_trains_a_run_to_completion_then_another(empty_runs):
    at = open_train(QUICK)
    press_start(at)
    assert at.session_state["train_job"] is not None
    assert next(b for b in at.button if b.label == "Start").disabled
    poll(at, lambda: states(empty_runs) == ["completed"])
    assert at.get("plotly_chart"), "learning curves"
    assert any(s.value.startswith("Completed after 2 epoch") for s in at.success)
    assert {m.label: m.value for m in at.metric}["Epoch"] == "2/2"
    first = at.session_state["train_job_run"]

    at.text_input(key="train_name").input("second one")
    press_start(at)
    poll(at, lambda: states(empty_runs) == ["completed", "completed"])
    second = at.session_state["train_job_run"]
    assert second != first and second.endswith("second-one")
    assert at.selectbox(key="train_watch").value == second
    assert at.get("plotly_chart")


def test_stop_button_ends_the_run_stopped(empty_runs):
    long = {**QUICK, "train": {**QUICK["train"], "epochs": 5000, "patience": 0}}
    at = open_train(long)
    press_start(at)
    run_id = at.session_state["train_job_run"]          # known from the start
    assert run_id and states(empty_runs) == ["running"]
    stop = next(b for b in at.button if b.label == "Stop")
    stop.click().run()
    poll(at, lambda: states(empty_runs) == ["stopped"])
    assert any("Stopped after" in w.value for w in at.warning)
    assert (empty_runs / run_id / "last.pt").exists()
    assert not next(b for b in at.button if b.label == "Start").disabled
    assert any(b.label == "Resume" for b in at.button)


def craft_status(run_dir, **status):
    st = json.loads((run_dir / "status.json").read_text())
    st.update(status)
    (run_dir / "status.json").write_text(json.dumps(st))


def craft(runs_dir, src, name, **status):
    shutil.copytree(src, runs_dir / name)
    craft_status(runs_dir / name, **status)
    return name


def test_failed_and_stopped_runs_show_their_state(tiny_runs):
    runs, dnn, _ = tiny_runs
    failed = craft(runs, runs / dnn, "29990101-000000-failed", state="failed",
                   error="loss became nan at epoch 2, batch 3; the model diverged")
    stopped = craft(runs, runs / dnn, "29990101-000001-stopped", state="stopped")
    at = open_train()
    assert at.selectbox(key="train_watch").value == stopped      # newest first
    assert any("Stopped after" in w.value for w in at.warning)
    at.selectbox(key="train_watch").set_value(failed).run()
    assert not at.exception
    assert any("model diverged" in e.value for e in at.error)
    assert at.get("plotly_chart")


def test_running_run_of_another_session_is_shown_first(tiny_runs):
    runs, dnn, _ = tiny_runs
    live = craft(runs, runs / dnn, "20000101-000000-live", state="running", pid=os.getpid(),
                 epoch=1, progress={"epoch": 2, "batch": 3, "batches": 4, "fraction": 0.75})
    with RunLock(runs / live):      # held, as by that session's worker: the run is alive
        at = open_train()
        assert at.selectbox(key="train_watch").value == live       # though it is the oldest
        assert any(b.label == "Stop" for b in at.button)
        assert {m.label: m.value for m in at.metric}["Epoch"] == "1/2"
        assert at.get("plotly_chart")


def test_resume_continues_a_stopped_run_to_its_end(empty_runs):
    run = train_quietly(QUICK, empty_runs, name="resumable")
    cfg = json.loads((run / "config.json").read_text())
    cfg["train"]["epochs"] = 3          # as if it had been stopped after 2 of 3 epochs
    (run / "config.json").write_text(json.dumps(cfg))
    craft_status(run, state="stopped", epochs=3)
    at = open_train()
    assert any("Stopped after 2 of 3" in w.value for w in at.warning)
    next(b for b in at.button if b.label == "Resume").click().run()
    assert not at.exception, at.exception
    poll(at, lambda: states(empty_runs) == ["completed"])
    assert at.session_state["train_job_run"] == run.name
    assert {m.label: m.value for m in at.metric}["Epoch"] == "3/3"
    assert len(RunStore(empty_runs).metrics(run.name)) == 3


def test_layer_statistics_of_a_run_are_shown(tiny_runs):
    runs, dnn, _ = tiny_runs
    at = open_train()
    at.selectbox(key="train_watch").set_value(dnn).run()
    assert not at.exception, at.exception
    figs = {c.proto.id: json.loads(c.proto.spec) for c in at.get("plotly_chart")}
    layers = next(f for f in figs.values()
                  if "weight-gradient norm" in json.dumps(f["layout"].get("annotations", [])))
    names = {t["name"] for t in layers["data"]}
    assert any("(Linear)" in n for n in names) and any("(ReLU)" in n for n in names)
    assert all(t["x"] == [0, 1, 2] for t in layers["data"])


def test_run_without_layer_statistics_shows_no_such_figure(tiny_runs):
    runs, dnn, _ = tiny_runs
    (runs / dnn / "layers.jsonl").unlink()
    at = open_train()
    at.selectbox(key="train_watch").set_value(dnn).run()
    assert not at.exception, at.exception
    assert len(at.get("plotly_chart")) == 1          # the learning curves only


def test_a_damaged_layers_file_is_named_and_the_curves_still_show(tiny_runs):
    runs, dnn, _ = tiny_runs
    (runs / dnn / "layers.jsonl").write_bytes(b"\x00\xff not json\n")
    at = open_train()
    at.selectbox(key="train_watch").set_value(dnn).run()
    assert not at.exception, at.exception
    assert any(w.value.startswith("No layer statistics: layers.jsonl is damaged")
               for w in at.warning), [w.value for w in at.warning]
    assert len(at.get("plotly_chart")) == 1          # the learning curves only
