"""The Evaluate page: metrics, charts, per-class table and gallery from eval.json, and every
way a run can lack or break its eval.json."""
import json

from conftest import app_page


def open_evaluate(run_id=None):
    at = app_page("evaluate")
    if run_id is not None:
        at.selectbox(key="eval_run").set_value(run_id).run()
        assert not at.exception, at.exception
    return at


def heatmap_text(at):
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    return [cell for row in spec["data"][0]["text"] for cell in row]


def test_evaluated_run_shows_metrics_charts_table_gallery_and_downloads(tiny_runs):
    runs, dnn, _ = tiny_runs
    ev = json.loads((runs / dnn / "eval.json").read_text())
    at = open_evaluate(dnn)
    tiles = {m.label: m.value for m in at.metric}
    assert tiles["Accuracy"] == f"{ev['accuracy']:.4f}"
    assert tiles["Precision (macro)"] == f"{ev['precision_macro']:.4f}"
    assert tiles["Recall (macro)"] == f"{ev['recall_macro']:.4f}"
    assert tiles["F1 (macro)"] == f"{ev['f1_macro']:.4f}"
    assert tiles["ROC-AUC (macro)"] == f"{ev['roc_auc_macro']:.4f}"
    kinds = [json.loads(c.proto.spec)["data"][0]["type"] for c in at.get("plotly_chart")]
    assert kinds == ["heatmap", "scatter"]            # confusion matrix, ROC curves
    table = at.dataframe[0].value
    assert list(table.columns) == ["class", "precision", "recall", "f1", "support"]
    assert table["support"].sum() == ev["n_test"]
    captions = [c for img in at.get("image") for c in img.captions]
    assert captions and all("→ predicted" in c and c.startswith("true ") for c in captions)
    first = ev["confident_wrong"][0]
    assert captions[0] == (f"true {ev['classes'][first['true']]} → predicted "
                           f"{ev['classes'][first['predicted']]} ({first['confidence']:.0%})")
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels[0] == "eval.json" and labels[1].startswith("best.pt")


def test_normalised_toggle_shows_row_fractions(tiny_runs):
    _, dnn, _ = tiny_runs
    at = open_evaluate(dnn)
    assert all("." not in cell for cell in heatmap_text(at))     # counts
    at.toggle(key="eval_normalized").set_value(True).run()
    assert not at.exception
    cells = heatmap_text(at)
    assert all("." in cell for cell in cells) and all(0 <= float(c) <= 1 for c in cells)


def test_run_without_eval_json_is_evaluated_on_request(tiny_runs):
    runs, _, cnn = tiny_runs
    (runs / cnn / "eval.json").unlink()
    at = open_evaluate(cnn)
    assert not at.metric
    button = next(b for b in at.button if b.label == "Evaluate now")
    button.click().run()
    assert not at.exception, at.exception
    ev = json.loads((runs / cnn / "eval.json").read_text())
    assert {m.label: m.value for m in at.metric}["Accuracy"] == f"{ev['accuracy']:.4f}"
    assert len(at.get("plotly_chart")) == 2


def test_damaged_eval_json_shows_an_error_not_an_exception(tiny_runs):
    runs, dnn, _ = tiny_runs
    (runs / dnn / "eval.json").write_text("garbage {{{")
    at = open_evaluate(dnn)
    assert any("eval.json" in e.value for e in at.error)
    assert not at.metric and not at.get("plotly_chart")


def test_incomplete_eval_json_names_the_missing_keys(tiny_runs):
    runs, dnn, _ = tiny_runs
    (runs / dnn / "eval.json").write_text(json.dumps({"accuracy": 0.5}))
    at = open_evaluate(dnn)
    assert any("missing" in e.value and "confusion_matrix" in e.value for e in at.error)


def test_query_param_picks_the_run(tiny_runs):
    runs, dnn, cnn = tiny_runs
    for rid in (dnn, cnn):
        at = app_page("evaluate", query={"run": rid})
        assert at.selectbox(key="eval_run").value == rid


def test_no_runs_shows_a_hint_to_train(empty_runs):
    at = open_evaluate()
    assert any("train one" in i.value for i in at.info)
    assert not at.get("selectbox") or not any(s.key == "eval_run" for s in at.selectbox)


def test_drill_down_shows_exactly_the_images_of_the_chosen_cell(tiny_runs):
    runs, dnn, _ = tiny_runs
    ev = json.loads((runs / dnn / "eval.json").read_text())
    cm = ev["confusion_matrix"]
    off = [(cm[t][p], t, p) for t in range(10) for p in range(10) if t != p]
    _, t0, p0 = max(off, key=lambda c: (c[0], -c[1], -c[2]))
    at = open_evaluate(dnn)
    assert at.selectbox(key="drill_true").value == t0      # the largest confusion first
    assert at.selectbox(key="drill_pred").value == p0
    # a diagonal cell: the correctly classified 3s, most confident first
    at.selectbox(key="drill_true").set_value(3).run()
    at.selectbox(key="drill_pred").set_value(3).run()
    assert not at.exception, at.exception
    assert {m.label: m.value for m in at.metric}["Test images in this cell"] == str(cm[3][3])
    cell = [c for img in at.get("image") for c in img.captions
            if c.startswith("true 3 → predicted 3 (")]
    want = sorted((i for i in range(ev["n_test"])
                   if ev["labels"][i] == 3 and ev["predictions"][i] == 3),
                  key=lambda i: -ev["confidences"][i])[:18]
    assert [int(c.rsplit("#", 1)[1]) for c in cell] == want
    saliency = [c for img in at.get("image") for c in img.captions if "saliency for" in c]
    assert len(saliency) == 1 and saliency[0].startswith("true 3 → predicted 3: saliency for 3")


def test_old_eval_json_without_predictions_asks_for_a_new_evaluation(tiny_runs):
    runs, dnn, _ = tiny_runs
    path = runs / dnn / "eval.json"
    ev = json.loads(path.read_text())
    for key in ("labels", "predictions", "confidences"):
        ev.pop(key)
    path.write_text(json.dumps(ev))
    at = open_evaluate(dnn)
    assert any("evaluate the run again" in i.value for i in at.info)


def test_run_code_and_portable_files_are_offered(tiny_runs):
    _, _, cnn = tiny_runs
    at = open_evaluate(cnn)
    labels = [b.proto.label for b in at.get("download_button")]
    assert {"PyTorch code (.py)", "ONNX", "safetensors + config"} <= set(labels), labels
    at.toggle(key=f"eval_code_{cnn}").set_value(True).run()
    assert not at.exception, at.exception
    code = at.code[0].value
    assert "class CNN(nn.Module)" in code and "def main(" in code


def test_evaluate_again_runs_on_the_cpu_and_shows_the_new_figures(tiny_runs, monkeypatch):
    """The web server never creates a CUDA context: the page re-evaluates on the CPU."""
    import torch

    import dlcore.devices
    import dlcore.evaluate

    runs, dnn, _ = tiny_runs
    calls, picked = [], []
    real_evaluate, real_pick = dlcore.evaluate.evaluate_run, dlcore.devices.pick_device

    def pick(pref="auto"):
        picked.append(str(pref))
        return real_pick(pref)

    def evaluate(run_dir, data_root=None, device=None, **kw):
        calls.append(device)
        picked.clear()
        result = real_evaluate(run_dir, data_root, device=device, **kw)
        calls.append(list(picked))            # what evaluate_run itself asked pick_device for
        return result

    monkeypatch.setattr(dlcore.devices, "pick_device", pick)
    monkeypatch.setattr(dlcore.evaluate, "pick_device", pick)
    monkeypatch.setattr(dlcore.evaluate, "evaluate_run", evaluate)
    cuda_before = torch.cuda.is_initialized()
    path = runs / dnn / "eval.json"
    path.write_text(json.dumps({"accuracy": 0.5}))     # incomplete: the page offers a new one
    at = open_evaluate(dnn)
    assert not at.metric and any("missing" in e.value for e in at.error)
    next(b for b in at.button if b.label == "Evaluate again").click().run()
    assert not at.exception, at.exception
    assert len(calls) == 2 and str(calls[0]) == "cpu", calls
    assert not [p for p in calls[1] if p != "cpu"], f"evaluate_run picked {calls[1]}"
    assert cuda_before or not torch.cuda.is_initialized()
    ev = json.loads(path.read_text())
    assert ev["n_test"] == 1000 and ev["checkpoint"] == "best.pt"
    tiles = {m.label: m.value for m in at.metric}
    assert tiles["Accuracy"] == f"{ev['accuracy']:.4f}"
    assert tiles["F1 (macro)"] == f"{ev['f1_macro']:.4f}"
    assert tiles["ROC-AUC (macro)"] == f"{ev['roc_auc_macro']:.4f}"
    assert not at.error and len(at.get("plotly_chart")) == 2
    assert heatmap_text(at) == [str(v) for row in ev["confusion_matrix"] for v in row]
