"""Side-by-side views of saved runs: what differs in their configs, and their final figures."""
from __future__ import annotations

from .config import ConfigError, diff_configs
from .runs import RunStore, best_epoch

METRIC_ROWS = (   # (key, label, higher is better)
    ("accuracy", "test accuracy", True),
    ("precision_macro", "precision (macro)", True),
    ("recall_macro", "recall (macro)", True),
    ("f1_macro", "F1 (macro)", True),
    ("roc_auc_macro", "ROC-AUC (macro, OvR)", True),
    ("best_val_acc", "best val accuracy", True),
    ("best_val_loss", "best val loss", False),
    ("epochs_run", "epochs run", None),
    ("train_seconds", "training time (s)", False),
)


def compare_runs(store: RunStore, run_ids: list[str]) -> dict:
    """Curves, config differences and final metrics of the runs, in the order given.

    Damaged or vanished runs are reported in `problems` and left out of the rest.
    """
    labels, curves, best_epochs, configs, metrics, problems, evals = [], {}, {}, [], [], {}, {}
    for run_id in run_ids:
        try:
            info = store.get(run_id)
        except ConfigError as e:          # deleted meanwhile, e.g. from another tab
            problems[run_id] = str(e)
            continue
        if info.damaged:
            problems[run_id] = info.damaged
            continue
        try:
            cfg = store.config(run_id)
            rows = store.metrics(run_id)
            ev = store.eval(run_id)
        except (OSError, ValueError) as e:
            problems[run_id] = f"{e.__class__.__name__}: {e}"
            continue
        label = info.name or info.id
        if label in curves:
            label = f"{label} ({info.id})"
        labels.append(label)
        curves[label] = rows
        configs.append(cfg)
        best = best_epoch(rows)
        if best:
            best_epochs[label] = best["epoch"]
        m = {k: (ev or {}).get(k) for k in ("accuracy", "precision_macro", "recall_macro",
                                            "f1_macro", "roc_auc_macro")}
        m.update(best_val_acc=best.get("val_acc") if best else None,
                 best_val_loss=best["val_loss"] if best else None,
                 epochs_run=len(rows),
                 train_seconds=round(sum(r.get("seconds", 0) for r in rows), 1))
        metrics.append(m)
        evals[label] = ev
    diff = diff_configs(configs)
    table = [{"metric": label, **{lab: m[key] for lab, m in zip(labels, metrics)}}
             for key, label, _ in METRIC_ROWS]
    best_of = {}
    for (key, label, higher), row in zip(METRIC_ROWS, table):
        vals = [(row[lab], lab) for lab in labels if row[lab] is not None]
        if higher is not None and len(vals) > 1:
            best_of[label] = (max if higher else min)(vals)[1]
    return {"labels": labels, "curves": curves, "best_epochs": best_epochs,
            "config_diff": {k: dict(zip(labels, v)) for k, v in diff.items()},
            "configs": dict(zip(labels, configs)), "metrics": table, "best_of": best_of,
            "evals": evals, "problems": problems}
