"""TensorBoard event files in RUN_DIR/tb: scalars per epoch, the confusion matrix, hyperparameters.

Optional: without the `tensorboard` package training logs nothing here and says so once.
`tensorboard --logdir runs` then shows every run.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

TB_DIR = "tb"
SCALARS = {"train_loss": "loss/train", "val_loss": "loss/val", "train_acc": "accuracy/train",
           "val_acc": "accuracy/val", "lr": "lr"}
FINAL_METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "roc_auc_macro")


def available() -> tuple[bool, str]:
    try:
        importlib.import_module("torch.utils.tensorboard")
    except Exception as e:   # ImportError, or a broken protobuf/tensorboard install
        return False, f"{e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return True, ""


class TBLog:
    """Opened on the first epoch, so a resumed run purges the epochs it trains again."""

    def __init__(self, run_dir, note=print):
        self.path = Path(run_dir) / TB_DIR
        self.note, self.writer, self.failed = note, None, False

    def _open(self, first_step: int):
        if self.writer is None and not self.failed:
            ok, why = available()
            if not ok:
                self.failed = True
                self.note(f"no TensorBoard logs: the tensorboard package is not usable ({why}); "
                          "pip install tensorboard")
                return None
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(self.path), purge_step=first_step)
        return self.writer

    def _safely(self, fn, *args) -> None:
        """A failed write costs the logs, never the run."""
        try:
            fn(*args)
        except Exception as e:
            self.failed, self.writer = True, None
            self.note(f"TensorBoard logging stopped: {e.__class__.__name__}: {e}")

    def epoch(self, row: dict) -> None:
        self._safely(self._epoch, row)

    def finish(self, cfg: dict, result: dict) -> None:
        """The test evaluation: confusion matrix image and the hparams table's row."""
        self._safely(self._finish, cfg, result)

    def _epoch(self, row: dict) -> None:
        w = self._open(row["epoch"])
        if w is None:
            return
        for key, tag in SCALARS.items():
            if row.get(key) is not None:
                w.add_scalar(tag, row[key], row["epoch"])
        w.flush()

    def _finish(self, cfg: dict, result: dict) -> None:
        w = self._open(int(result.get("epoch") or 0))
        if w is None:
            return
        step = int(result.get("epoch") or 0)
        cm = np.asarray(result["confusion_matrix"])
        w.add_image("test/confusion_matrix", confusion_image(cm, result.get("classes")), step,
                    dataformats="HWC")
        metrics = {f"test/{k}": float(result[k]) for k in FINAL_METRICS if result.get(k) is not None}
        write_hparams(w, hparams_of(cfg), metrics, step)
        w.flush()

    def close(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:
                pass
            self.writer = None


def hparams_of(cfg: dict) -> dict:
    """The flattened config as TensorBoard accepts it: numbers, strings and booleans."""
    from .config import flatten

    out = {}
    for k, v in flatten(cfg).items():
        out[k] = v if isinstance(v, (bool, int, float, str)) else str(v)
    return out


def write_hparams(writer, hparams: dict, metrics: dict, step: int) -> None:
    """add_hparams' summaries, written into this writer's own directory (no extra sub-run)."""
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    exp, ssi, sei = hparams_summary(hparams, metrics)
    fw = writer._get_file_writer()
    for s in (exp, ssi, sei):
        fw.add_summary(s)
    for k, v in metrics.items():
        writer.add_scalar(k, v, step)


def confusion_image(cm: np.ndarray, classes=None, cell: int = 28) -> np.ndarray:
    """The confusion matrix as an HxWx3 uint8 picture: rows true, columns predicted, counts written."""
    from PIL import Image, ImageDraw

    cm = np.asarray(cm, dtype=np.int64)
    k = cm.shape[0]
    labels = [str(c) for c in (classes or range(k))]
    rows = cm.sum(1, keepdims=True).clip(min=1)
    frac = cm / rows                                  # each true class's share: colour
    margin = 6 * min(max(len(s) for s in labels), 12) + 12
    size = (margin + k * cell + 4, margin + k * cell + 4)
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    for i in range(k):
        draw.text((4, margin + i * cell + cell // 2 - 5), labels[i][:12], fill="black")
        draw.text((margin + i * cell + 2, margin - 14), labels[i][:4], fill="black")
        for j in range(k):
            f = float(frac[i, j])
            colour = (int(255 - 200 * f), int(255 - 150 * f), 255)
            x0, y0 = margin + j * cell, margin + i * cell
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=colour, outline=(220, 220, 220))
            if cm[i, j]:
                draw.text((x0 + 3, y0 + cell // 2 - 5), str(int(cm[i, j])),
                          fill="white" if f > 0.6 else "black")
    return np.asarray(img, dtype=np.uint8)
