"""Test-split evaluation of a run's best checkpoint, with scikit-learn's metrics.

Writes `eval.json`: accuracy, macro precision/recall/F1, one-vs-rest macro ROC-AUC from
softmax probabilities, confusion matrix, per-class report, ROC curve points per class, and
the most confidently wrong test images for a gallery.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .augment import normalize
from .devices import autocast, autocast_dtype, pick_device
from .checkpoints import best_checkpoint, load_checkpoint, load_model
from .runs import write_json_atomic, writing

EVAL_BATCH = 1024
GALLERY_SIZE = 36
ROC_POINTS = 200


def predict_logits(model, x_u8: torch.Tensor, mean, std, device, batch: int = EVAL_BATCH,
                   amp_dtype=None):
    """Logits for uint8 images [N,C,H,W], in large batches under inference mode."""
    from .augment import stats_tensors
    model.eval()
    if not torch.is_tensor(mean):
        mean, std = stats_tensors(mean, std, device)
    out = []
    with torch.inference_mode(), autocast(device, amp_dtype):
        for i in range(0, len(x_u8), batch):
            x = x_u8[i:i + batch].to(device, non_blocking=True).float().div_(255.0)
            out.append(model(normalize(x, mean, std)).float())
    return torch.cat(out) if out else torch.zeros(0)


def compute_metrics(y_true, probs, classes) -> dict:
    """Every figure of eval.json from true labels and softmax probabilities."""
    from sklearn.metrics import (accuracy_score, confusion_matrix, precision_recall_fscore_support,
                                 roc_auc_score, roc_curve)

    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    k = len(classes)
    labels = list(range(k))
    y_pred = probs.argmax(1)
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="macro",
                                                 zero_division=0)
    pc, rc, fc, sc = precision_recall_fscore_support(y_true, y_pred, labels=labels,
                                                     average=None, zero_division=0)
    present = np.unique(y_true)
    auc = None
    if len(present) == k and k >= 2:
        auc = float(roc_auc_score(y_true, probs if k > 2 else probs[:, 1], multi_class="ovr",
                                  average="macro", labels=labels))
    curves = []
    for c in labels:
        if c not in present or len(present) < 2:
            curves.append({"class": classes[c], "fpr": [], "tpr": [], "auc": None})
            continue
        fpr, tpr, _ = roc_curve(y_true == c, probs[:, c])
        keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), ROC_POINTS)).round().astype(int))
        curves.append({"class": classes[c], "fpr": fpr[keep].round(5).tolist(),
                       "tpr": tpr[keep].round(5).tolist(),
                       "auc": float(roc_auc_score(y_true == c, probs[:, c]))})
    wrong = np.flatnonzero(y_pred != y_true)
    conf = probs[wrong, y_pred[wrong]]
    order = wrong[np.argsort(-conf, kind="stable")][:GALLERY_SIZE]
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision_macro": float(p), "recall_macro": float(r), "f1_macro": float(f),
        "roc_auc_macro": auc,
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "per_class": [{"class": classes[i], "precision": float(pc[i]), "recall": float(rc[i]),
                       "f1": float(fc[i]), "support": int(sc[i])} for i in labels],
        "classes": list(classes),
        "roc_curves": curves,
        "confident_wrong": [{"index": int(i), "true": int(y_true[i]), "predicted": int(y_pred[i]),
                             "confidence": round(float(probs[i, y_pred[i]]), 5)} for i in order],
        "n_test": int(len(y_true)),
        # per test image, for the confusion-matrix drill-down (compact: ints and 3 decimals)
        "labels": y_true.astype(int).tolist(),
        "predictions": y_pred.astype(int).tolist(),
        "confidences": probs[np.arange(len(y_pred)), y_pred].round(3).tolist(),
    }


def evaluate_run(run_dir, data_root=None, splits=None, device=None, batch: int = EVAL_BATCH) -> dict:
    """(Re)write RUN_DIR/eval.json for the best checkpoint (last.pt when there is none).

    The trainer passes its splits (already loaded) and a batch derived from its own."""
    from .splits import load_splits

    run_dir = Path(run_dir)
    device = device or pick_device("auto")
    path = best_checkpoint(run_dir)
    ckpt = load_checkpoint(path)
    model, _ = load_model(ckpt, device)
    cfg = ckpt["config"]
    amp = autocast_dtype(cfg["train"].get("precision", "auto"), torch.device(device))
    if splits is None:
        splits = load_splits(cfg["data"], cfg["train"]["seed"], data_root)
    logits = predict_logits(model, splits.test_x, ckpt["mean"], ckpt["std"], device, batch=batch,
                            amp_dtype=amp)
    probs = torch.softmax(logits, 1).cpu().numpy()
    result = compute_metrics(splits.test_y.numpy(), probs, ckpt["classes"])
    result["checkpoint"] = path.name
    result["epoch"] = ckpt.get("epoch")
    with writing(f"evaluate {run_dir.name}", run_dir):
        write_json_atomic(run_dir / "eval.json", result)
    return result


def cell_examples(ev: dict, true: int, pred: int, limit: int | None = None) -> list[int]:
    """Test indices whose true class is `true` and predicted class `pred`, most confident first.

    Uses eval.json's per-image lists `labels`, `predictions` and `confidences`; an eval.json
    written before they existed gives [] (evaluating the run again adds them).
    """
    preds, confs, labels = ev.get("predictions"), ev.get("confidences"), ev.get("labels")
    if not preds or not confs or labels is None:
        return []
    p, c, y = np.asarray(preds), np.asarray(confs, dtype=float), np.asarray(labels)
    n = min(len(p), len(c), len(y))
    p, c, y = p[:n], c[:n], y[:n]
    idx = np.flatnonzero((y == int(true)) & (p == int(pred)))
    order = idx[np.argsort(-c[idx], kind="stable")]
    return [int(i) for i in (order if limit is None else order[:limit])]


def held_out_images(run_dir, indices, data_root=None) -> np.ndarray:
    """The run's test images at `indices`, as uint8 [N, C, H, W] (for galleries).

    Only those images are copied out of the raw arrays (cached per process) through the one
    test-split derivation; no train/val split or normalisation statistics are made.
    """
    from .splits import fixed_test_split
    from .runfiles import read_json

    cfg = read_json(Path(run_dir) / "config.json")
    return fixed_test_split(cfg["data"], data_root).test_x(list(indices))
