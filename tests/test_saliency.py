"""Saliency maps, per-image predictions in eval.json and the confusion-cell drill-down."""
import json

import numpy as np
import pytest

from dlcore import evaluate
from dlcore.evaluate import cell_examples, compute_metrics
from dlcore.display import overlay
from dlcore.images import ImageError
from dlcore.saliency import saliency


def test_saliency_is_a_normalised_map_of_the_image(tiny_runs):
    runs, dnn, cnn = tiny_runs
    img = evaluate.held_out_images(runs / dnn, [0])[0]
    for run in (dnn, cnn):
        s = saliency(runs / run, img)
        m = s["map"]
        assert m.shape == (28, 28) and m.dtype == np.float32
        assert np.abs(m).max() == pytest.approx(1.0)
        assert 0 <= s["target"] < 10 and 0 < s["probability"] <= 1
    # black pixels carry no attribution in gradient x input
    assert np.all(m[img[0] == 0] == 0)
    other = saliency(runs / dnn, img, target=(s["target"] + 1) % 10)
    assert other["target"] == (s["target"] + 1) % 10
    pic = overlay(img, m)
    assert pic.dtype == np.uint8 and pic.shape == (168, 168, 3)


def test_saliency_rejects_a_wrong_shape_or_class(tiny_runs):
    runs, dnn, _ = tiny_runs
    with pytest.raises(ImageError, match="shape"):
        saliency(runs / dnn, np.zeros((3, 32, 32), np.uint8))
    with pytest.raises(ImageError, match="target"):
        saliency(runs / dnn, np.zeros((1, 28, 28), np.uint8), target=10)


def test_eval_json_has_per_image_predictions(tiny_runs):
    runs, dnn, _ = tiny_runs
    ev = json.loads((runs / dnn / "eval.json").read_text())
    n = ev["n_test"]
    assert len(ev["labels"]) == len(ev["predictions"]) == len(ev["confidences"]) == n
    cm = np.asarray(ev["confusion_matrix"])
    for t in range(10):
        for p in range(10):
            idx = cell_examples(ev, t, p)
            assert len(idx) == cm[t, p]
            assert all(ev["labels"][i] == t and ev["predictions"][i] == p for i in idx)
            confs = [ev["confidences"][i] for i in idx]
            assert confs == sorted(confs, reverse=True)
    assert (runs / dnn / "eval.json").stat().st_size < 200_000


def test_cell_examples_sorts_limits_and_tolerates_old_eval_files():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3], [0.05, 0.95]])
    ev = compute_metrics([0, 0, 0, 1, 1], probs, ["a", "b"])
    assert cell_examples(ev, 0, 1) == [1, 2]
    assert cell_examples(ev, 0, 1, limit=1) == [1]
    assert cell_examples(ev, 1, 0) == [3]
    assert cell_examples({"confusion_matrix": [[1]]}, 0, 0) == []
