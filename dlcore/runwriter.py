"""Everything a training run writes into its run directory, in one object.

Status (with in-epoch progress), metrics.jsonl, layers.jsonl, TensorBoard events and the
checkpoints. Every file is written atomically or appended a whole line at a time, so a
killed worker leaves a consistent run. Only the process that owns the run has a RunWriter.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .checkpoints import save_checkpoint
from .inspect_layers import LAYERS_FILE, read_layer_lines
from .runfiles import DamagedFile
from .runs import (STOP_FILE, append_jsonl, best_epoch, now_iso, read_metrics,
                   write_bytes_atomic, write_json_atomic)
from .tblog import TBLog


class RunWriter:
    def __init__(self, run_dir: Path, log=print, **status):
        self.run_dir, self.log = Path(run_dir), log
        self.status = {"state": "running", "error": None, "pid": os.getpid(), "epoch": 0,
                       "best_epoch": None, "best_val_loss": None, "progress": None,
                       "started_at": now_iso(), "finished_at": None, "notes": [], **status}
        self.tb = TBLog(self.run_dir, note=self.note)   # TensorBoard events in RUN_DIR/tb

    def write_status(self, **changes) -> None:
        self.status.update(changes)
        write_json_atomic(self.run_dir / "status.json", self.status)

    def progress(self, epoch: int, batch: int, batches: int) -> None:
        self.write_status(progress={"epoch": epoch, "batch": batch, "batches": batches,
                                    "fraction": round(batch / batches, 4)})

    def testing(self) -> None:
        """Training is over and the best checkpoint is being tested (the bar stays full)."""
        self.write_status(progress={"testing": True, "fraction": 1.0})

    def end(self, state: str, **changes) -> None:
        self.write_status(state=state, finished_at=now_iso(), progress=None, **changes)

    def note(self, text: str) -> None:
        """A line for the user, kept in status.json's notes."""
        self.status["notes"].append(text)
        self.log(text)

    def stop_requested(self) -> bool:
        return (self.run_dir / STOP_FILE).exists()

    # -------------------------------------------------------------- per epoch
    def epoch(self, row: dict, best: dict | None, last: bytes) -> None:
        """An epoch's metrics line and checkpoints (best.pt when it improved), then its status."""
        append_jsonl(self.run_dir / "metrics.jsonl", row)
        self.tb.epoch(row)
        if best is not None:
            save_checkpoint(self.run_dir / "best.pt", best)
            self.status.update(best_epoch=row["epoch"], best_val_loss=row["val_loss"])
        self.save_last(last)
        self.write_status(epoch=row["epoch"], progress=None)
        self.log(f"epoch {row['epoch']:>3}/{self.status['epochs']}  " + "  ".join(
            f"{k} {row[k]:.4f}" for k in ("train_loss", "train_acc", "val_loss", "val_acc"))
            + f"  {row['seconds']:.1f}s" + ("  *" if best is not None else ""))

    def layers(self, line: dict) -> None:
        append_jsonl(self.run_dir / LAYERS_FILE, line)

    def save_last(self, data: bytes) -> None:
        write_bytes_atomic(self.run_dir / "last.pt", data)

    def finish(self, cfg: dict, result: dict) -> None:
        self.tb.finish(cfg, result)

    def close(self) -> None:
        self.tb.close()

    # -------------------------------------------------------------- resume
    def keep_epochs(self, done: int) -> None:
        """A resumed run keeps the metrics and layer lines of the epochs it keeps, and the
        best epoch among them."""
        rows = [r for r in read_metrics(self.run_dir) if r["epoch"] <= done]
        _rewrite_jsonl(self.run_dir / "metrics.jsonl", rows)
        if (self.run_dir / LAYERS_FILE).exists():
            try:
                layers = [r for r in read_layer_lines(self.run_dir) if r["epoch"] <= done]
            except DamagedFile as e:    # diagnostics only: they start again, the run goes on
                self.note(f"{LAYERS_FILE} was damaged ({e}): layer statistics start again "
                          f"after epoch {done}")
                layers = []
            _rewrite_jsonl(self.run_dir / LAYERS_FILE, layers)
        best = best_epoch(rows)
        self.status.update(epoch=done, best_epoch=best["epoch"] if best else None,
                           best_val_loss=best["val_loss"] if best else None,
                           resumed_from_epoch=done)


def _rewrite_jsonl(path: Path, rows: list[dict]) -> None:
    write_bytes_atomic(path, "".join(json.dumps(r) + "\n" for r in rows).encode())
