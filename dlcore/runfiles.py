"""Reading run files that may come from anywhere: the one place that opens them.

Run directories travel (a classmate's, a cluster's, a backup), so every file is data to be
checked: regular files only (a link to /dev/zero is refused, a FIFO never blocks), sizes
capped before reading, and every field that lists and pages use checked for type and range.
A file that fails raises DamagedFile (a ValueError) naming the file and the field.
"""
from __future__ import annotations

import json
import math
import os
import stat
import unicodedata
from pathlib import Path

MAX_JSON_BYTES = 16 * 2**20      # config, status, meta; eval.json with per-image lists
MAX_JSONL_BYTES = 64 * 2**20     # metrics.jsonl and layers.jsonl: thousands of epochs
STATES = ("running", "completed", "stopped", "failed", "pruned")
MAX_EPOCHS = 10**6


class DamagedFile(ValueError):
    """A run file that cannot be used as it is; the message names the file and what is wrong."""


def read_run_bytes(path: Path, limit: int = MAX_JSON_BYTES) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; never reads more than that."""
    path = Path(path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise DamagedFile(f"{path.name} is not a regular file")
        if st.st_size > limit:
            raise DamagedFile(f"{path.name} is {st.st_size:,} bytes; at most {limit:,} allowed")
        chunks, left = [], limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > limit:
            raise DamagedFile(f"{path.name} grew past {limit:,} bytes while it was read")
        return data
    finally:
        os.close(fd)


def read_json(path: Path, limit: int = MAX_JSON_BYTES):
    path = Path(path)
    try:
        return json.loads(read_run_bytes(path, limit).decode("utf-8"))
    except UnicodeDecodeError as e:
        raise DamagedFile(f"{path.name} is not UTF-8 text ({e.reason})") from None
    except RecursionError:
        raise DamagedFile(f"{path.name} is nested too deeply") from None
    except json.JSONDecodeError as e:
        raise DamagedFile(f"{path.name} is not JSON ({e.msg}, line {e.lineno})") from None


_JSON_CACHE: dict[str, tuple] = {}


def json_object(path: Path) -> dict:
    """A run file's JSON object ({} when absent), parsed again only when the file changes."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        return {}
    key = (st.st_mtime_ns, st.st_size, st.st_ino)
    hit = _JSON_CACHE.get(str(path))
    if hit and hit[0] == key:
        return hit[1]
    value = read_json(path)
    if not isinstance(value, dict):
        raise DamagedFile(f"{path.name}: expected a JSON object, got {_kind(value)}")
    if len(_JSON_CACHE) > 2000:
        _JSON_CACHE.clear()
    _JSON_CACHE[str(path)] = (key, value)
    return value


def read_jsonl(path: Path, check) -> list[dict]:
    """The lines of a JSONL run file, each checked by `check(row, where)`. A half-written last
    line (a worker killed while appending) is skipped; a damaged line elsewhere raises."""
    path = Path(path)
    try:
        data = read_run_bytes(path, MAX_JSONL_BYTES)
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    unfinished = not data.endswith(b"\n")
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        where = f"{path.name} line {i + 1}"
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            if unfinished and i == len(lines) - 1:
                continue
            raise DamagedFile(f"{where} is not JSON") from None
        if not isinstance(row, dict):
            raise DamagedFile(f"{where}: expected an object, got {_kind(row)}")
        out.append(check(row, where))
    return out


# ---------------------------------------------------------------- checked fields

def _kind(v) -> str:
    return type(v).__name__ if v is not None else "null"


def text(d: dict, key: str, where: str, default: str = "") -> str:
    v = d.get(key)
    if v is None:
        return default
    if not isinstance(v, str):
        raise DamagedFile(f"{where}: {key} should be text, not {_kind(v)}")
    return v


def count(d: dict, key: str, where: str, hi: int = MAX_EPOCHS) -> int:
    v = d.get(key)
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= hi:
        raise DamagedFile(f"{where}: {key} should be a whole number from 0 to {hi:,}, not {v!r:.40}")
    return v


def number(d: dict, key: str, where: str, lo=-math.inf, hi=math.inf):
    """A finite number in [lo, hi], or None when absent."""
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
            or not lo <= v <= hi:
        raise DamagedFile(f"{where}: {key} should be a number from {lo:g} to {hi:g}, not {v!r:.40}")
    return v


def section(d: dict, key: str, where: str) -> dict:
    v = d.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise DamagedFile(f"{where}: {key} should be an object, not {_kind(v)}")
    return v


METRIC_NUMBERS = {"train_loss": (0, math.inf), "train_acc": (0, 1), "val_loss": (0, math.inf),
                  "val_acc": (0, 1), "lr": (0, math.inf), "seconds": (0, math.inf),
                  "batch_size": (1, math.inf)}


def metrics_row(row: dict, where: str) -> dict:
    if "epoch" not in row:
        raise DamagedFile(f"{where}: not an epoch record (no epoch)")
    count(row, "epoch", where)
    for key, (lo, hi) in METRIC_NUMBERS.items():
        number(row, key, where, lo, hi)
    return row


LAYER_NUMBERS = ("act_mean", "act_std", "grad_norm")


def layers_row(row: dict, where: str) -> dict:
    """A line of layers.jsonl: an epoch and its layers, each named, with finite numbers or null."""
    if "epoch" not in row:
        raise DamagedFile(f"{where}: not an epoch record (no epoch)")
    count(row, "epoch", where)
    layers = row.get("layers")
    if not isinstance(layers, list):
        raise DamagedFile(f"{where}: layers should be a list, not {_kind(layers)}")
    for i, layer in enumerate(layers):
        at = f"{where} layer {i + 1}"
        if not isinstance(layer, dict) or not isinstance(layer.get("name"), str):
            raise DamagedFile(f"{at}: expected an object with a name")
        text(layer, "type", at)
        for key in LAYER_NUMBERS:
            number(layer, key, at)
    return row


def progress(st: dict, where: str) -> dict:
    p = section(st, "progress", where)
    if p:
        number(p, "fraction", f"{where} progress", 0, 1)
        for key in ("epoch", "batch", "batches"):
            count(p, key, f"{where} progress", 10**9)
    return p


EVAL_REQUIRED = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "confusion_matrix",
                 "classes")


def check_eval(ev: dict, where: str = "eval.json") -> dict:
    """The fields of eval.json that pages show: metrics in range, a square confusion matrix of
    counts matching the classes."""
    missing = [k for k in EVAL_REQUIRED if k not in ev]
    if missing:
        raise DamagedFile(f"{where}: missing {', '.join(missing)}")
    for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "roc_auc_macro"):
        number(ev, key, where, 0, 1)
    classes, cm = ev.get("classes"), ev.get("confusion_matrix")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise DamagedFile(f"{where}: classes should be a list of names")
    k = len(classes)
    if not isinstance(cm, list) or len(cm) != k or not all(
            isinstance(row, list) and len(row) == k and all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in row)
            for row in cm):
        raise DamagedFile(f"{where}: confusion_matrix should be {k}x{k} counts")
    return ev


def printable(s: str) -> str:
    """Text safe to print on a terminal or show on a page: control characters (escape
    sequences, newlines, bidi overrides) are shown as \\x.. escapes."""
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() and unicodedata.category(c) != "Cf"
                   else repr(c)[1:-1] for c in s)
