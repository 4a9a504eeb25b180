"""What the pages show, worked out here: counts, fractions, texts and the files a run offers,
so that a page only lays them out. Runs are read through RunStore and RunInfo. Imports
that load torch wait until they are needed: the sidebar uses this module on every page.
"""
from __future__ import annotations

import json
from functools import partial
from pathlib import Path

from .config import DATA_DEFAULTS, limits
from .timing import parse_time

# ---------------------------------------------------------------- Evaluate


def evaluation_state(r) -> dict | None:
    """Why a run's evaluation cannot be shown, and what the page can offer instead: a dict
    of `level` (error, warning or info), `message`, `note` and `action` (a button label or
    None); None when eval.json is there to be shown."""
    has_ckpt = r.has_best or r.has_last
    if r.damaged:
        return {"level": "error", "message": f"Run {r.id} is damaged: {r.damaged}",
                "note": "Re-evaluating rewrites eval.json from the checkpoint." if has_ckpt
                else None, "action": "Evaluate again" if has_ckpt else None}
    if r.state == "running":
        return {"level": "info", "note": None, "action": None,
                "message": "This run is still training; it is evaluated on the test split "
                           "when it ends."}
    if r.has_eval:
        return None
    if has_ckpt:
        return {"level": "info", "message": f"Run {r.id} has not been evaluated yet.",
                "note": None, "action": "Evaluate now"}
    return {"level": "warning", "note": None, "action": None,
            "message": f"Run {r.id} has no checkpoint (best.pt or last.pt): nothing to evaluate."}


def _number(v) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "n/a"


def metric_tiles(ev: dict) -> list[tuple[str, str, str | None]]:
    """(label, value, help) of the five headline metrics of an eval.json."""
    return [("Accuracy", _number(ev.get("accuracy")), None),
            ("Precision (macro)", _number(ev.get("precision_macro")), None),
            ("Recall (macro)", _number(ev.get("recall_macro")), None),
            ("F1 (macro)", _number(ev.get("f1_macro")), None),
            ("ROC-AUC (macro)", _number(ev.get("roc_auc_macro")),
             "one-vs-rest, from softmax probabilities; n/a when a class is missing from the "
             "test split")]


def eval_caption(ev: dict) -> str:
    return (f"{ev.get('n_test', '?')} test images · checkpoint {ev.get('checkpoint', '?')} "
            f"(epoch {ev.get('epoch', '?')})")


def largest_confusion(cm) -> tuple[int, int]:
    """(true, predicted) of the largest off-diagonal count, the first in reading order on a
    tie; (0, 1) for a matrix without errors, (0, 0) for one class."""
    best, cell = -1, (0, 1 if len(cm) > 1 else 0)
    for i, row in enumerate(cm):
        for j, v in enumerate(row):
            if i != j and v > best:
                best, cell = v, (i, j)
    return cell


def eval_stamp(run_dir) -> float:
    """When eval.json was last written (0.0 when absent): keys caches of what it lists."""
    try:
        return (Path(run_dir) / "eval.json").stat().st_mtime
    except OSError:
        return 0.0


def run_downloads(run_dir, run_id: str) -> list[dict]:
    """The files a run offers for download, each read or made only when asked for: dicts of
    `label`, `data` (a callable giving the bytes or text), `file_name`, `mime` and `kind`
    (file, code or export). eval.json when there is one, then the checkpoint that evaluate
    uses (best, else last) and what is made from it: the PyTorch code, ONNX, safetensors."""
    from .checkpoints import CheckpointError, best_checkpoint
    from .export import export_code, export_onnx_bytes, safetensors_zip

    run_dir = Path(run_dir)
    out = []
    if (run_dir / "eval.json").is_file():
        out.append({"label": "eval.json", "data": (run_dir / "eval.json").read_bytes,
                    "file_name": f"{run_id}-eval.json", "mime": "application/json",
                    "kind": "file"})
    try:
        ckpt = best_checkpoint(run_dir)
        size = ckpt.stat().st_size
    except (CheckpointError, OSError):
        return out
    return out + [
        {"label": f"{ckpt.name} ({size / 1e6:.1f} MB)", "data": ckpt.read_bytes,
         "file_name": f"{run_id}-{ckpt.name}", "mime": "application/octet-stream", "kind": "file"},
        {"label": "PyTorch code (.py)", "data": partial(export_code, run_dir),
         "file_name": f"train_{run_id}.py", "mime": "text/x-python", "kind": "code"},
        {"label": "ONNX", "data": partial(export_onnx_bytes, run_dir),
         "file_name": f"{run_id}.onnx", "mime": "application/octet-stream", "kind": "export"},
        {"label": "safetensors + config", "data": partial(safetensors_zip, run_dir),
         "file_name": f"{run_id}-safetensors.zip", "mime": "application/zip", "kind": "export"}]


# ---------------------------------------------------------------- runs in progress


def _clamp(fraction: float) -> float:
    """A progress fraction as st.progress takes it: 0..1 whatever a status file says."""
    return min(max(fraction, 0.0), 1.0)


def run_progress(r) -> tuple[float, str]:
    """How far a running run is, 0..1 including the current epoch's batches, and its label."""
    p = r.progress or {}
    if _testing(r):
        return 1.0, f"{r.name or r.id}: testing the best checkpoint"
    done = (r.epoch + (p.get("fraction") or 0)) / max(r.epochs, 1)
    return _clamp(done), f"{r.name or r.id}: epoch {p.get('epoch', r.epoch + 1)}/{r.epochs}"


def _testing(r) -> bool:
    """Training is over (the last epoch, or early stopping) and the test split is running."""
    p = r.progress or {}
    return bool(p.get("testing")) or (not p.get("batches") and r.epochs > 0
                                       and r.epoch >= r.epochs)


def train_progress(r) -> tuple[float, str]:
    """The Train page's progress bar of a running run: the fraction of the current epoch done
    (0..1) and what it is doing."""
    p = r.progress or {}
    if p.get("batches"):
        return (_clamp(float(p.get("fraction") or 0)),
                f"epoch {p.get('epoch')}/{r.epochs} · batch {p.get('batch')}/{p['batches']}")
    if _testing(r):
        return 1.0, "testing the best checkpoint"
    return 0.0, f"epoch {r.epoch + 1}/{r.epochs} · starting"


def run_caption(r) -> str:
    """'mnist-5k/cnn on cpu · started 2026-12-03 10:04:05' (local time) of a run."""
    started = parse_time(r.started_at)
    return (f"{r.dataset}/{r.arch} on {r.device or 'a device not known yet'}"
            + (f" · started {started.astimezone():%Y-%m-%d %H:%M:%S}" if started else ""))


def config_lines(cfg: dict) -> tuple[str, str]:
    """What Start will train besides the training settings, as two Markdown lines: the data
    (dataset, limit, validation share, augmentation) and the model (arch, its sizes, init).
    Any config, however bad, gives text: the check comes when the run starts."""
    d = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
    m = cfg.get("model") if isinstance(cfg.get("model"), dict) else {}
    data = [f"`{d.get('dataset', DATA_DEFAULTS['dataset'])}`"]
    if d.get("limit"):
        data.append(f"limit {d['limit']}")
    val = d.get("val_fraction", DATA_DEFAULTS["val_fraction"])
    if isinstance(val, (int, float)) and not isinstance(val, bool):
        data.append(f"validation {val:.0%}")
    aug = d.get("augment") if isinstance(d.get("augment"), dict) else {}
    data.append("augmented" if any(aug.values()) else "no augmentation")
    arch = m.get("arch", limits("model.arch").default)
    sizes = {"dnn": ("hidden_dims",), "cnn": ("blocks", "fc_dims"),
             "resnet": ("stage_blocks", "base_width"),
             "rnn": ("cell", "hidden_size", "num_layers")}.get(arch, ())
    model = [f"`{arch}`"] + [f"{k} `{m[k]}`" for k in sizes if k in m]
    model.append(f"init `{m.get('init', limits('model.init').default)}`")
    return " · ".join(data), " · ".join(model)


def sweep_progress(found: dict) -> dict:
    """The state of each run of an init sweep ({init: RunInfo or None}): `cells` (label to
    state text), `done`, `total` and `fraction` of runs that have ended."""
    cells = {f"init={init}": "waiting" if r is None else
             f"epoch {r.epoch}/{r.epochs}" if r.state == "running" else r.state
             for init, r in found.items()}
    done = sum(r is not None and r.state != "running" for r in found.values())
    return {"cells": cells, "done": done, "total": len(found),
            "fraction": done / len(found) if found else 1.0}


def sweep_layer_series(found: dict) -> tuple[dict, list[str]]:
    """Layer statistics of each sweep run that recorded any, by `init=` label, and a line for
    each run whose layers.jsonl is damaged ("init=zeros: layers.jsonl is damaged (...)")."""
    from .inspect_layers import layer_series

    series = {f"init={init}": layer_series(r.path) for init, r in found.items() if r}
    return ({k: v for k, v in series.items() if v["epochs"]},
            [f"{k}: {v['damaged']}" for k, v in series.items() if v["damaged"]])


# ---------------------------------------------------------------- Compare and Draw


def as_text(v) -> str:
    """A config value as one printable string; None (a key the other architecture does not
    have) as a dash."""
    return "—" if v is None else v if isinstance(v, str) else json.dumps(v)


def config_diff_columns(config_diff: dict, labels: list[str]) -> dict:
    """{run label: {setting: value as text}}: the columns of the config differences table."""
    return {lab: {k: as_text(v.get(lab)) for k, v in config_diff.items()} for lab in labels}


def drawable_runs(store) -> tuple[list, list]:
    """Runs with a checkpoint, as (offered, refused) lists of (RunInfo, why): those whose
    model can read a drawing, and the others with the reason."""
    from .predict import can_draw

    offered, refused = [], []
    for r in store.list():
        if r.damaged or not (r.has_best or r.has_last):
            continue
        try:
            ok, why = can_draw(store.config(r.id))
        except (OSError, ValueError) as e:
            ok, why = False, f"its config cannot be read ({e})"
        (offered if ok else refused).append((r, why))
    return offered, refused


# ---------------------------------------------------------------- Data


def shape_text(shape) -> str:
    """(1, 28, 28) as '1×28×28'."""
    return "×".join(map(str, shape))


def model_notes(resolved: dict, summary: dict, info, dataset: str) -> list[str]:
    """The Model page's captions under the counts: how a pretrained model reads its input,
    which input the counts are for, and a tutorial model's count on its own input."""
    from .models import tutorial_counts

    notes = []
    if resolved["arch"] == "pretrained":
        size = resolved["input_size"]
        notes.append(f"Backbone weights: **{summary.get('weights', 'unknown')}**. Images are "
                     f"resized to {size}×{size}, gray repeated to three channels and normalised "
                     "with ImageNet's mean and std inside the model; the weight initialisation "
                     "applies to the new head only.")
    notes.append(f"Computed for **{dataset}**: input {shape_text(info.shape)}, "
                 f"{len(info.classes)} classes (the dataset chosen on the Data page).")
    notes += [f"The {name} has {count:,} parameters on {ref.title}'s {shape_text(ref.shape)} "
              f"input; the count above is for {dataset}'s shape."
              for name, ref, count in tutorial_counts(resolved, info.shape)]
    return notes


def dataset_tiles(counts: dict, shape) -> list[tuple[str, str]]:
    """(label, value) of the Data page's headline numbers, from splits.class_counts."""
    return [("Classes", str(len(counts["classes"]))),
            ("Input shape (C×H×W)", shape_text(shape)),
            ("Training set", f"{sum(counts['train']):,}"),
            ("Test set", f"{sum(counts['test']):,}")]


def label_rows(labels: list, ncols: int = 8) -> str:
    """Labels in aligned rows of `ncols`, as the images of a grid are laid out."""
    if not labels:
        return ""
    width = max(len(str(x)) for x in labels)
    return "\n".join("  ".join(f"{str(x):<{width}}" for x in labels[i:i + ncols])
                     for i in range(0, len(labels), ncols))


def split_text(data_cfg: dict, batch_size: int, batches_per_epoch: int, data_root=None) -> str:
    """How the training images are split and batched, from splits.split_sizes."""
    from .config import resolve_config
    from .splits import split_sizes

    s = split_sizes(resolve_config({"data": data_cfg})["data"], data_root)
    return (f"{s['train'] + s['val']:,} training images split into {s['train']:,} for training "
            f"and {s['val']:,} for validation; {batches_per_epoch:,} batches of {batch_size} "
            "per epoch. Test images are kept apart.")


def batch_text(b: dict, normalize: bool) -> str:
    """A preview.augmented_batch as it prints in PyTorch: shapes, dtype, range and the
    Normalize transform of the training split."""
    dims = ", ".join(map(str, b["shape"]))
    mean = ", ".join(f"{v:.4f}" for v in b["channel_mean"])
    std = ", ".join(f"{v:.4f}" for v in b["channel_std"])
    one = "," if len(b["channel_mean"]) == 1 else ""
    applied = "applied" if normalize else "computed, not applied (normalise is off)"
    return (f"images: torch.Size([{dims}])  labels: torch.Size([{b['label_shape'][0]}])\n"
            f"dtype: torch.{b['dtype']}  range: [{b['min']:.3f}, {b['max']:.3f}]  "
            f"mean: {b['mean']:.3f}  std: {b['std']:.3f}\n"
            f"Normalize(mean=({mean}{one}), std=({std}{one}))  # per channel, from the training "
            f"split; {applied}")
