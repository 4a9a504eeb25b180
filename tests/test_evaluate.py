"""Evaluation: every figure matches scikit-learn on the same predictions."""
import json

import numpy as np
import pytest
from sklearn.metrics import (accuracy_score, confusion_matrix, precision_recall_fscore_support,
                             roc_auc_score)

from dlcore.evaluate import compute_metrics, evaluate_run
from dlcore.evaluate import test_images as split_images   # not a test


def random_predictions(n=300, k=10, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += rng.normal(1.5, 1.0, n)    # better than chance, not perfect
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, probs


def test_metrics_match_sklearn():
    y, probs = random_predictions()
    m = compute_metrics(y, probs, [str(i) for i in range(10)])
    pred = probs.argmax(1)
    p, r, f, _ = precision_recall_fscore_support(y, pred, average="macro", zero_division=0)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert (m["precision_macro"], m["recall_macro"], m["f1_macro"]) == pytest.approx((p, r, f))
    assert m["roc_auc_macro"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr",
                                                             average="macro"))
    assert m["confusion_matrix"] == confusion_matrix(y, pred).tolist()
    per = precision_recall_fscore_support(y, pred, average=None, zero_division=0)
    assert [c["f1"] for c in m["per_class"]] == pytest.approx(per[2].tolist())
    assert [c["support"] for c in m["per_class"]] == per[3].tolist()


def test_roc_curves_per_class_carry_their_auc():
    y, probs = random_predictions()
    m = compute_metrics(y, probs, list("abcdefghij"))
    c3 = m["roc_curves"][3]
    assert c3["class"] == "d"
    assert c3["auc"] == pytest.approx(roc_auc_score(y == 3, probs[:, 3]))
    assert c3["fpr"][0] == 0 and c3["tpr"][-1] == 1 and len(c3["fpr"]) <= 200


def test_most_confidently_wrong_examples_come_first():
    y, probs = random_predictions()
    wrong = compute_metrics(y, probs, list(range(10)))["confident_wrong"]
    assert wrong and all(w["true"] != w["predicted"] for w in wrong)
    conf = [w["confidence"] for w in wrong]
    assert conf == sorted(conf, reverse=True)
    assert all(probs[w["index"]].argmax() == w["predicted"] for w in wrong)


def test_a_class_missing_from_the_test_labels_gives_no_auc_instead_of_crashing():
    y, probs = random_predictions()
    y = np.where(y == 9, 0, y)
    m = compute_metrics(y, probs, list(range(10)))
    assert m["roc_auc_macro"] is None
    assert m["roc_curves"][9]["auc"] is None
    json.dumps(m)


def test_binary_problems_work():
    y = np.array([0, 1, 1, 0, 1])
    probs = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.9, 0.1], [0.2, 0.8]])
    m = compute_metrics(y, probs, ["no", "yes"])
    assert m["roc_auc_macro"] == pytest.approx(roc_auc_score(y, probs[:, 1]))


def test_evaluate_run_rewrites_eval_json(tiny_runs):
    runs, dnn, _ = tiny_runs
    run = runs / dnn
    before = json.loads((run / "eval.json").read_text())
    (run / "eval.json").unlink()
    after = evaluate_run(run)
    assert json.loads((run / "eval.json").read_text()) == after
    assert after["accuracy"] == pytest.approx(before["accuracy"])
    assert after["checkpoint"] == "best.pt" and after["n_test"] == 1000
    imgs = split_images(run, [w["index"] for w in after["confident_wrong"][:3]])
    assert imgs.shape == (3, 1, 28, 28) and imgs.dtype == np.uint8


def test_evaluate_uses_last_checkpoint_when_there_is_no_best(tiny_runs):
    runs, dnn, _ = tiny_runs
    (runs / dnn / "best.pt").unlink()
    assert evaluate_run(runs / dnn)["checkpoint"] == "last.pt"
