"""Evaluation: every figure of eval.json, checked against hand computations on small cases."""
import json
from fractions import Fraction as Fr

import numpy as np
import pytest

from dlcore.evaluate import compute_metrics, evaluate_run
from dlcore.evaluate import held_out_images


def random_predictions(n=300, k=10, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += rng.normal(1.5, 1.0, n)    # better than chance, not perfect
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, probs


def confident(y_pred, k):
    """Probabilities whose argmax is y_pred: 0.6 on the predicted class, the rest shared."""
    probs = np.full((len(y_pred), k), 0.4 / (k - 1))
    probs[np.arange(len(y_pred)), y_pred] = 0.6
    return probs


def test_metrics_of_a_known_confusion_matrix():
    #              true 0      true 1   true 2
    y_true = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    y_pred = [0, 0, 1, 2, 1, 1, 0, 2, 2, 1]
    m = compute_metrics(y_true, confident(y_pred, 3), ["a", "b", "c"])
    assert m["confusion_matrix"] == [[2, 1, 1],       # rows: true class, columns: predicted
                                     [1, 2, 0],
                                     [0, 1, 2]]
    assert m["accuracy"] == pytest.approx(6 / 10)    # the diagonal over all samples
    # precision = diagonal / column sums: 2/3, 2/4, 2/3; recall = diagonal / row sums: 2/4, 2/3, 2/3
    precision = [Fr(2, 3), Fr(1, 2), Fr(2, 3)]
    recall = [Fr(1, 2), Fr(2, 3), Fr(2, 3)]
    f1 = [2 * p * r / (p + r) for p, r in zip(precision, recall)]
    assert f1 == [Fr(4, 7), Fr(4, 7), Fr(2, 3)]
    assert m["precision_macro"] == pytest.approx(float(Fr(11, 18)))
    assert m["recall_macro"] == pytest.approx(float(Fr(11, 18)))
    assert m["f1_macro"] == pytest.approx(float(Fr(38, 63)))
    assert [c["class"] for c in m["per_class"]] == ["a", "b", "c"]
    assert [c["precision"] for c in m["per_class"]] == pytest.approx([float(p) for p in precision])
    assert [c["recall"] for c in m["per_class"]] == pytest.approx([float(r) for r in recall])
    assert [c["f1"] for c in m["per_class"]] == pytest.approx([float(f) for f in f1])
    assert [c["support"] for c in m["per_class"]] == [4, 3, 3]
    assert m["labels"] == y_true and m["predictions"] == y_pred and m["n_test"] == 10


def test_a_class_never_predicted_has_zero_precision():
    y_true, y_pred = [0, 1, 2, 2], [0, 1, 1, 1]     # class 2 is never predicted
    m = compute_metrics(y_true, confident(y_pred, 3), list("abc"))
    assert m["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 2, 0]]
    assert m["accuracy"] == pytest.approx(1 / 2)
    assert m["precision_macro"] == pytest.approx((1 + 1 / 3 + 0) / 3)     # 0/0 counts as 0
    assert m["recall_macro"] == pytest.approx((1 + 1 + 0) / 3)
    assert m["f1_macro"] == pytest.approx((1 + 1 / 2 + 0) / 3)


# one-vs-rest AUC of a class = the share of (positive, negative) pairs whose positive scores
# higher, ties counting half
THREE = np.array([[0.7, 0.2, 0.1],    # true 0
                  [0.3, 0.4, 0.3],    # true 0
                  [0.2, 0.6, 0.2],    # true 1
                  [0.5, 0.3, 0.2],    # true 1
                  [0.1, 0.1, 0.8],    # true 2
                  [0.2, 0.3, 0.5]])   # true 2


def test_roc_auc_one_vs_rest_from_pair_counts():
    m = compute_metrics([0, 0, 1, 1, 2, 2], THREE, ["a", "b", "c"])
    # class a: positives 0.7, 0.3 against negatives 0.2, 0.5, 0.1, 0.2: 4 + 3 of 8 pairs
    # class b: positives 0.6, 0.3 against 0.2, 0.4, 0.1, 0.3: 4 + (2 wins, 1 tie) = 6.5 of 8
    # class c: positives 0.8, 0.5 against 0.1, 0.3, 0.2, 0.2: all 8 pairs
    aucs = [7 / 8, 6.5 / 8, 1.0]
    assert [c["auc"] for c in m["roc_curves"]] == pytest.approx(aucs)
    assert m["roc_auc_macro"] == pytest.approx(43 / 48)            # their unweighted mean
    for c in m["roc_curves"]:
        assert c["fpr"][0] == 0 and c["tpr"][-1] == 1 and c["fpr"][-1] == 1
        assert all(a <= b for a, b in zip(c["fpr"], c["fpr"][1:]))
    c = m["roc_curves"][2]                                         # perfectly separated
    assert c["class"] == "c" and any(f == 0 and t == 1 for f, t in zip(c["fpr"], c["tpr"]))


def test_roc_curves_are_thinned_to_at_most_200_points():
    y, probs = random_predictions()
    m = compute_metrics(y, probs, list("abcdefghij"))
    c3 = m["roc_curves"][3]
    assert c3["class"] == "d"
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
    y = np.array([0, 0, 1, 1, 0, 1])
    p1 = np.array([0.1, 0.4, 0.35, 0.8, 0.35, 0.9])
    m = compute_metrics(y, np.stack([1 - p1, p1], 1), ["no", "yes"])
    # positives 0.35, 0.8, 0.9 against negatives 0.1, 0.4, 0.35: 1.5 + 3 + 3 of 9 pairs
    assert m["roc_auc_macro"] == pytest.approx(7.5 / 9)
    assert m["confusion_matrix"] == [[3, 0], [1, 2]] and m["accuracy"] == pytest.approx(5 / 6)


def test_evaluate_run_rewrites_eval_json(tiny_runs):
    runs, dnn, _ = tiny_runs
    run = runs / dnn
    before = json.loads((run / "eval.json").read_text())
    (run / "eval.json").unlink()
    after = evaluate_run(run)
    assert json.loads((run / "eval.json").read_text()) == after
    assert after["accuracy"] == pytest.approx(before["accuracy"])
    assert after["checkpoint"] == "best.pt" and after["n_test"] == 1000
    imgs = held_out_images(run, [w["index"] for w in after["confident_wrong"][:3]])
    assert imgs.shape == (3, 1, 28, 28) and imgs.dtype == np.uint8


def test_evaluate_uses_last_checkpoint_when_there_is_no_best(tiny_runs):
    runs, dnn, _ = tiny_runs
    (runs / dnn / "best.pt").unlink()
    assert evaluate_run(runs / dnn)["checkpoint"] == "last.pt"
