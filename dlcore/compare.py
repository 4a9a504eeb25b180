"""Side-by-side views of saved runs: what differs in their configs, and their final figures."""
from __future__ import annotations

from .config import DATA_DEFAULTS, ConfigError, diff_configs
from .runs import RunStore, best_epoch, check_name

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
    datasets = {}
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
        datasets[label] = dataset_of(cfg)
    diff = diff_configs(configs)
    table = [{"metric": label, **{lab: m[key] for lab, m in zip(labels, metrics)}}
             for key, label, _ in METRIC_ROWS]
    groups = dataset_groups(datasets)
    return {"labels": labels, "curves": curves, "best_epochs": best_epochs,
            "config_diff": {k: dict(zip(labels, v)) for k, v in diff.items()},
            "configs": dict(zip(labels, configs)), "metrics": table,
            "best_of": best_within_datasets(table, groups), "datasets": datasets,
            "dataset_note": dataset_note(groups), "evals": evals, "problems": problems}


def dataset_of(cfg: dict) -> str:
    """The dataset a run was trained and tested on, as shown to the user: its name, and for
    an image folder also the folder (two folders are two datasets)."""
    data = (cfg or {}).get("data") or {}
    name = str(data.get("dataset") or DATA_DEFAULTS["dataset"])
    return f"{name} ({data['root']})" if name == "folder" and data.get("root") else name


def dataset_groups(datasets: dict) -> dict[str, list[str]]:
    """{dataset: [run labels]}, datasets in the order their first run comes."""
    groups: dict[str, list[str]] = {}
    for label, ds in datasets.items():
        groups.setdefault(ds, []).append(label)
    return groups


def best_within_datasets(table: list[dict], groups: dict[str, list[str]]) -> dict[str, list[str]]:
    """{metric row: [run labels]}: in each dataset with two or more runs having the figure, the
    run(s) with the best value; metrics are never ranked across datasets. Rows without a
    better direction (epochs run) and rows no dataset can rank are left out."""
    higher_of = {label: higher for _, label, higher in METRIC_ROWS}
    best_of = {}
    for row in table:
        higher = higher_of.get(row["metric"])
        if higher is None:
            continue
        best = set()
        for members in groups.values():
            vals = {lab: row[lab] for lab in members if row.get(lab) is not None}
            if len(vals) > 1:
                top = (max if higher else min)(vals.values())
                best.update(lab for lab, v in vals.items() if v == top)
        if best:
            best_of[row["metric"]] = [lab for g in groups.values() for lab in g if lab in best]
    return best_of


def dataset_note(groups: dict[str, list[str]]) -> str | None:
    """One line for a comparison that spans datasets; None when all runs share one."""
    if len(groups) < 2:
        return None
    names = ", ".join(f"{ds} ({len(labs)} run{'s' if len(labs) > 1 else ''})"
                      for ds, labs in groups.items())
    return (f"These runs use {len(groups)} datasets: {names}. Figures are comparable only "
            "within a dataset, so the best value of each row is highlighted per dataset.")


def run_to_show_after(run_ids: list[str], gone: str) -> str | None:
    """The run a picker over `run_ids` should show once `gone` is deleted: the one after it,
    else the one before it; None when no other run is left."""
    if gone not in run_ids:
        return run_ids[0] if run_ids else None
    rest = [i for i in run_ids if i != gone]
    if not rest:
        return None
    return rest[min(run_ids.index(gone), len(rest) - 1)]


def rename_question(shown: str, text: str) -> str:
    """The tick that confirms renaming the run shown as `shown` to what `text` will save."""
    try:
        new = check_name(text)
    except ConfigError:
        new = text          # saving it is refused with the reason; ask about what was typed
    return (f"Yes, rename {shown} to “{new}”" if new
            else f"Yes, clear the name of {shown} (its id is shown instead)")


def rename_done(text: str) -> str:
    new = check_name(text)
    return f"Renamed to “{new}”." if new else "Name cleared; the run id is shown instead."
