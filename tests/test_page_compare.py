"""Compare page: two runs side by side, renaming and deleting runs."""
import json

import pandas as pd

from conftest import app_page, wait_for


def compare_page(ids=None):
    at = app_page("compare")
    if ids is not None:
        at.multiselect(key="compare_ids").set_value(ids).run()
        assert not at.exception, at.exception
    return at


def chart_titles(at) -> list[str]:
    out = []
    for chart in at.get("plotly_chart"):
        title = json.loads(chart.proto.spec).get("layout", {}).get("title")
        out.append((title or {}).get("text", "") if isinstance(title, dict) else title or "")
    return out


def test_two_runs_side_by_side(tiny_runs):
    _, dnn, cnn = tiny_runs
    at = compare_page([dnn, cnn])
    charts = at.get("plotly_chart")
    assert len(charts) == 3                                  # curves + two confusion matrices
    curves = json.loads(charts[0].proto.spec)
    names = {t.get("name") for t in curves["data"]}
    assert {"tiny dnn · val", "tiny cnn · val", "tiny dnn · train"} <= names
    assert chart_titles(at)[1:] == ["tiny dnn", "tiny cnn"]

    diff = at.dataframe[0].value
    assert list(diff.columns) == ["tiny dnn", "tiny cnn"]
    assert diff.loc["model.arch"].tolist() == ["dnn", "cnn"]
    metrics = at.dataframe[1].value
    assert {"test accuracy", "F1 (macro)", "best val loss"} <= set(metrics.index)
    assert metrics.loc["test accuracy"].between(0, 1).all()
    assert any(e.label == "Full configs" for e in at.expander)


def test_best_value_of_each_row_is_highlighted(tiny_runs):
    _, dnn, cnn = tiny_runs
    at = compare_page([dnn, cnn])
    styled = at.dataframe[1].proto.arrow_data.styler.styles
    assert "font-weight: bold" in styled


def test_one_run_shows_hint(tiny_runs):
    _, dnn, _ = tiny_runs
    at = compare_page([dnn])
    assert any("two or more runs" in i.value for i in at.info)
    assert not at.get("plotly_chart") and not at.dataframe


def test_run_without_evaluation_says_so(tiny_runs):
    runs_dir, dnn, cnn = tiny_runs
    (runs_dir / dnn / "eval.json").unlink()
    at = compare_page([dnn, cnn])
    assert len(at.get("plotly_chart")) == 2
    assert any("tiny dnn" in i.value and "no evaluation yet" in i.value for i in at.info)
    assert pd.isna(at.dataframe[1].value.loc["test accuracy", "tiny dnn"])


def test_rename_changes_the_label_everywhere(tiny_runs):
    _, dnn, cnn = tiny_runs
    at = compare_page([dnn, cnn])
    at.selectbox(key="compare_manage").set_value(dnn).run()
    at.text_input(key=f"compare_new_name_{dnn}").input("baseline mlp")
    at.button(key="compare_rename").click().run()
    assert not at.exception, at.exception
    assert any("baseline mlp" in s.value for s in at.success)
    assert "baseline mlp · mnist-5k/dnn · completed" in at.multiselect(key="compare_ids").options
    assert list(at.dataframe[0].value.columns) == ["baseline mlp", "tiny cnn"]
    assert "baseline mlp" in chart_titles(at)


def test_delete_asks_for_confirmation_then_removes_the_run(tiny_runs):
    runs_dir, dnn, cnn = tiny_runs
    at = compare_page([dnn, cnn])
    at.selectbox(key="compare_manage").set_value(cnn).run()
    assert at.button(key="compare_delete").disabled         # nothing happens without the tick

    at.checkbox(key=f"compare_confirm_{cnn}").check().run()
    assert not at.button(key="compare_delete").disabled
    at.button(key="compare_delete").click().run()
    assert not at.exception, at.exception
    assert not (runs_dir / cnn).exists()
    assert any("Deleted" in s.value for s in at.success)
    assert at.multiselect(key="compare_ids").value == [dnn]
    assert any("two or more runs" in i.value for i in at.info)


def test_deleting_a_running_run_is_refused(tiny_runs):
    from dlcore.runlock import RunLock

    runs_dir, dnn, cnn = tiny_runs
    with RunLock(runs_dir / cnn):        # its worker (resuming it, say) holds the lock
        at = compare_page([dnn])
        at.selectbox(key="compare_manage").set_value(cnn).run()
        at.checkbox(key=f"compare_confirm_{cnn}").check().run()
        at.button(key="compare_delete").click().run()
        assert not at.exception, at.exception
        assert any("still training" in e.value for e in at.error)
    assert (runs_dir / cnn).is_dir()


def test_no_runs_explains_what_to_do(empty_runs):
    at = compare_page()
    assert any("Train page" in i.value for i in at.info)
    assert not at.multiselect


def test_init_sweep_button_trains_each_init_and_shows_them(empty_runs):
    import time as _time
    from dlcore.runs import RunStore

    at = app_page("compare", state={"config": {
        "data": {"dataset": "mnist-5k"},
        "model": {"arch": "dnn", "hidden_dims": [16], "init": "kaiming"},
        "train": {"epochs": 5, "batch_size": 64, "device": "cpu"}}})
    at.number_input(key="sweep_epochs").set_value(1).run()
    at.number_input(key="sweep_limit").set_value(200).run()
    at.button(key="sweep_start").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    job = at.session_state["compare_sweep"]["job"]
    wait_for(job.ended, worker=job.proc, log=job.log, what="the init sweep")
    runs = RunStore(empty_runs).list()
    assert [r.state for r in runs] == ["completed"] * 5, [(r.state, r.error) for r in runs]
    assert {r.sweep for r in runs} == {job.sweep}
    for _ in range(20):     # as the page's timer would, until the worker has exited
        at.run()
        assert not at.exception, at.exception
        if len(at.multiselect(key="compare_ids").value) == 5:
            break
        _time.sleep(0.5)
    inits = sorted(r.name.rsplit("init=", 1)[1] for r in runs)
    assert inits == sorted(["default", "gaussian", "xavier", "kaiming", "zeros"])
    assert all(r.epochs == 1 for r in runs)
    assert sorted(at.multiselect(key="compare_ids").value) == sorted(r.id for r in runs)
    tiles = {m.label: m.value for m in at.metric}
    assert all(tiles[f"init={i}"] == "completed" for i in inits)
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    sweep = next(s for s in specs if "init=zeros" in json.dumps(s["layout"].get("annotations")))
    titles = [a["text"] for a in sweep["layout"]["annotations"]]
    assert {f"init={i}" for i in inits} <= set(titles)
