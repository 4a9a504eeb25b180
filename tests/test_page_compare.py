"""Compare page: runs side by side (the best of each metric within a dataset), renaming and
deleting runs."""
import json
import re

import pandas as pd

from conftest import app_page, wait_for
from test_compare import copy_run, set_accuracy, two_dataset_runs


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


def highlighted(table) -> dict[str, list[str]]:
    """{metric: [run labels]} of the cells the metrics table shows in bold."""
    df, out = table.value, {}
    for rule in table.proto.arrow_data.styler.styles.split("}"):
        if "font-weight: bold" in rule:
            for r, c in re.findall(r"_row(\d+)_col(\d+)", rule):
                out.setdefault(df.index[int(r)], []).append(df.columns[int(c)])
    return out


def test_best_value_of_each_row_is_highlighted(tiny_runs):
    runs_dir, dnn, cnn = tiny_runs
    set_accuracy(runs_dir, dnn, 0.61)
    set_accuracy(runs_dir, cnn, 0.72)
    at = compare_page([dnn, cnn])
    metrics = at.dataframe[1].value
    best = highlighted(at.dataframe[1])
    assert best["test accuracy"] == ["tiny cnn"]
    assert best["best val loss"] == [metrics.loc["best val loss"].idxmin()]
    assert "epochs run" not in best
    assert not any("datasets" in i.value for i in at.info)      # one dataset: no note


def test_runs_on_two_datasets_are_ranked_per_dataset_and_the_page_says_so(tiny_runs):
    runs_dir, dnn, cnn = tiny_runs
    f_dnn, f_cnn = two_dataset_runs(runs_dir, dnn, cnn)
    at = compare_page([dnn, cnn, f_dnn, f_cnn])
    notes = [i.value for i in at.info if "datasets" in i.value]
    assert len(notes) == 1
    assert "mnist-5k (2 runs)" in notes[0] and "fashion-mnist (2 runs)" in notes[0]
    assert "comparable only within a dataset" in notes[0]
    table = at.dataframe[1]
    assert list(table.value.columns) == ["tiny dnn", "tiny cnn", "fashion dnn", "fashion cnn"]
    # across both datasets the fashion DNN (0.93) alone would be highlighted
    assert sorted(highlighted(table)["test accuracy"]) == ["fashion dnn", "tiny cnn"]


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


def meta_name(runs_dir, run_id) -> str:
    return json.loads((runs_dir / run_id / "meta.json").read_text()).get("name", "")


def box_shows(at, before: str) -> str:
    """What a browser's Run box shows after this run: the value the page sent it, if it sent
    one; else it keeps showing what it showed `before` (AppTest alone would not)."""
    box = at.selectbox(key="compare_manage")
    return box.proto.raw_value if box.proto.set_value else before


def type_new_name(at, run_id, name, tick=False):
    """Choose the run in the Run box and type its new name (and tick the confirmation)."""
    at.selectbox(key="compare_manage").set_value(run_id).run()
    at.text_input(key=f"compare_new_name_{run_id}").input(name).run()
    if tick:
        at.checkbox(key=f"compare_rename_ok_{run_id}").check().run()


def test_rename_asks_first_then_renames_the_run_shown(tiny_runs):
    runs_dir, dnn, cnn = tiny_runs
    at = compare_page([dnn, cnn])
    type_new_name(at, dnn, "baseline mlp")
    assert at.button(key="compare_rename").disabled          # nothing happens without the tick
    tick = at.checkbox(key=f"compare_rename_ok_{dnn}")
    assert tick.label == "Yes, rename tiny dnn to “baseline mlp”"
    tick.check().run()
    at.button(key="compare_rename").click().run()
    assert not at.exception, at.exception
    assert (meta_name(runs_dir, dnn), meta_name(runs_dir, cnn)) == ("baseline mlp", "tiny cnn")
    assert any("baseline mlp" in s.value for s in at.success)
    assert at.selectbox(key="compare_manage").value == dnn
    assert box_shows(at, "tiny dnn · mnist-5k/dnn · completed") == \
        "baseline mlp · mnist-5k/dnn · completed"
    assert "baseline mlp · mnist-5k/dnn · completed" in at.multiselect(key="compare_ids").options
    assert list(at.dataframe[0].value.columns) == ["baseline mlp", "tiny cnn"]
    assert "baseline mlp" in chart_titles(at)
    assert not at.checkbox(key=f"compare_rename_ok_{dnn}").value    # the next one asks again


def test_a_changed_name_needs_a_new_tick(tiny_runs):
    runs_dir, dnn, cnn = tiny_runs
    at = compare_page([dnn, cnn])
    type_new_name(at, dnn, "first", tick=True)
    # typed and clicked at once: the tick was given for another name
    at.text_input(key=f"compare_new_name_{dnn}").input("second")
    at.button(key="compare_rename").click().run()
    assert not at.exception, at.exception
    assert meta_name(runs_dir, dnn) == "tiny dnn"
    assert any("name changed" in e.value for e in at.error)
    tick = at.checkbox(key=f"compare_rename_ok_{dnn}")
    assert not tick.value and tick.label == "Yes, rename tiny dnn to “second”"


def test_nothing_is_done_to_a_run_the_box_no_longer_shows(tiny_runs):
    runs_dir, dnn, cnn = tiny_runs
    at = compare_page([dnn, cnn])
    type_new_name(at, dnn, "renamed", tick=True)
    at.checkbox(key=f"compare_confirm_{dnn}").check().run()
    at.selectbox(key="compare_manage").set_value(cnn)      # the box moved on meanwhile
    at.button(key="compare_rename").click().run()
    assert not at.exception, at.exception
    assert any("chosen run changed" in e.value for e in at.error)
    assert (meta_name(runs_dir, dnn), meta_name(runs_dir, cnn)) == ("tiny dnn", "tiny cnn")


def test_delete_asks_for_confirmation_then_removes_the_run(tiny_runs):
    runs_dir, dnn, cnn = tiny_runs
    at = compare_page([dnn, cnn])
    at.selectbox(key="compare_manage").set_value(cnn).run()
    assert at.button(key="compare_delete").disabled         # nothing happens without the tick
    assert at.checkbox(key=f"compare_confirm_{cnn}").label == \
        "Yes, delete tiny cnn and all its files"

    at.checkbox(key=f"compare_confirm_{cnn}").check().run()
    assert not at.button(key="compare_delete").disabled
    at.button(key="compare_delete").click().run()
    assert not at.exception, at.exception
    assert not (runs_dir / cnn).exists() and (runs_dir / dnn).is_dir()
    assert any("Deleted" in s.value for s in at.success)
    assert at.multiselect(key="compare_ids").value == [dnn]
    assert any("two or more runs" in i.value for i in at.info)
    # the box shows, and its confirmation names, the run the next action touches
    assert at.selectbox(key="compare_manage").value == dnn
    assert box_shows(at, "tiny cnn · mnist-5k/cnn · completed") == \
        "tiny dnn · mnist-5k/dnn · completed"
    assert at.checkbox(key=f"compare_confirm_{dnn}").label == \
        "Yes, delete tiny dnn and all its files"
    assert not at.checkbox(key=f"compare_confirm_{dnn}").value
    assert at.button(key="compare_delete").disabled


def test_after_a_delete_the_box_shows_the_next_run(tiny_runs):
    runs_dir, dnn, cnn = tiny_runs
    third = copy_run(runs_dir, dnn, "20990101-000000-third", "third")
    at = compare_page([dnn, cnn])
    assert at.selectbox(key="compare_manage").options[:2] == [
        "third · mnist-5k/dnn · completed", "tiny cnn · mnist-5k/cnn · completed"]
    at.selectbox(key="compare_manage").set_value(third).run()
    at.checkbox(key=f"compare_confirm_{third}").check().run()
    at.button(key="compare_delete").click().run()
    assert not at.exception, at.exception
    assert not (runs_dir / third).exists()
    box = at.selectbox(key="compare_manage")
    assert box.value == cnn and third not in box.options
    assert box_shows(at, "third · mnist-5k/dnn · completed") == \
        "tiny cnn · mnist-5k/cnn · completed"
    assert at.checkbox(key=f"compare_confirm_{cnn}").label == \
        "Yes, delete tiny cnn and all its files"
    # the next delete removes the run now shown, and only that one
    at.checkbox(key=f"compare_confirm_{cnn}").check().run()
    at.button(key="compare_delete").click().run()
    assert not (runs_dir / cnn).exists() and (runs_dir / dnn).is_dir()
    assert at.selectbox(key="compare_manage").value == dnn


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
