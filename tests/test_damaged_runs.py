"""One damaged run never breaks a page: every run file is read through one place that checks
types and ranges, caps sizes and refuses non-regular files; the damaged run is listed with its
reason and everything else carries on."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from conftest import ROOT
from dlcore.runfiles import DamagedFile, printable, read_run_bytes
from dlcore.predict import predict
from dlcore.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from dlcore.runs import RunStore, check_name
from dlcore.config import ConfigError

APP = str(ROOT / "app.py")
PAGES = ["pages/data.py", "pages/model.py", "pages/train.py", "pages/evaluate.py",
         "pages/draw.py", "pages/compare.py"]


def edit_json(path: Path, change):
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))


def fifo(path: Path):
    path.unlink()
    os.mkfifo(path)


DAMAGE = {   # run id suffix: (how, what its reason must say)
    "epoch-inf": (lambda d: (d / "status.json").write_text(
        (d / "status.json").read_text().replace('"epoch": 2', '"epoch": 1e999')),
        "status.json is damaged (status.json: epoch should be a whole number"),
    "fraction-x": (lambda d: edit_json(d / "status.json", lambda s: s.update(
        state="running", progress={"epoch": 1, "batch": 1, "batches": 4, "fraction": "x"})),
        "progress: fraction should be a number"),
    "state-5": (lambda d: edit_json(d / "status.json", lambda s: s.update(state=5)),
                "status.json: state should be text"),
    "state-odd": (lambda d: edit_json(d / "status.json", lambda s: s.update(state="exploded")),
                  "state 'exploded' is not one of running, completed"),
    "val-acc-x": (lambda d: (d / "metrics.jsonl").write_text(
        '{"epoch": 1, "val_loss": 1.0, "val_acc": "x"}\n'),
        "metrics.jsonl line 1: val_acc should be a number"),
    "name-dict": (lambda d: edit_json(d / "meta.json", lambda m: m.update(name={"a": 1})),
                  "meta.json: name should be text, not dict"),
    "dataset-list": (lambda d: edit_json(d / "config.json", lambda c: c["data"].update(
        dataset=["mnist"])), "config.json: dataset should be text, not list"),
    "zero-link": (lambda d: ((d / "status.json").unlink(),
                             os.symlink("/dev/zero", d / "status.json")),
                  "status.json is not a regular file"),
    "fifo": (lambda d: fifo(d / "config.json"), "config.json is not a regular file"),
    "huge": (lambda d: os.truncate(d / "meta.json", 3 * 2**30), "meta.json is 3,221,225,472 bytes"),
    "eval-garbage": (lambda d: edit_json(d / "eval.json", lambda e: e.update(accuracy=2)),
                     "eval.json: accuracy should be a number from 0 to 1"),
    "deep": (lambda d: (d / "status.json").write_text("[" * 100000 + "]" * 100000),
             "status.json is nested too deeply"),
}


@pytest.fixture
def damaged_runs(tiny_runs):
    runs, dnn, cnn = tiny_runs
    for i, (suffix, (damage, _)) in enumerate(DAMAGE.items()):
        d = runs / f"2000010{i // 10}-00000{i % 10}-{suffix}"
        shutil.copytree(runs / dnn, d)
        damage(d)
    # whole files, but checkpoints whose embedded config no model can be built from
    bad_ckpt = runs / "20000102-000000-bad-checkpoint"
    shutil.copytree(runs / dnn, bad_ckpt)
    for name in ("best.pt", "last.pt"):
        ckpt = load_checkpoint(bad_ckpt / name)
        ckpt["config"]["model"]["hidden_dims"] = [-1]
        save_checkpoint(bad_ckpt / name, ckpt)
    return runs, dnn, cnn


def test_each_damaged_run_is_listed_with_its_reason_and_the_rest_carry_on(damaged_runs):
    runs, dnn, cnn = damaged_runs
    by_suffix = {r.id.split("-", 2)[2]: r for r in RunStore(runs).list()}
    for suffix, (_, reason) in DAMAGE.items():
        r = by_suffix[suffix]
        assert r.state == "damaged" and reason in r.damaged, (suffix, r.damaged)
    assert by_suffix["tiny-dnn"].state == by_suffix["tiny-cnn"].state == "completed"
    # its files are whole: it is listed, and what loads its model says what is wrong
    bad = by_suffix["bad-checkpoint"]
    assert bad.state == "completed"
    with pytest.raises(CheckpointError, match=r"hidden_dims"):
        predict(bad.path, [np.zeros((28, 28), np.uint8)])


def test_the_runs_command_lists_damaged_runs_instead_of_failing(damaged_runs):
    runs, dnn, cnn = damaged_runs
    out = subprocess.run([sys.executable, "-m", "dlcore", "runs", "--runs-dir", str(runs)],
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 1 + len(DAMAGE) + 3
    for suffix in DAMAGE:
        assert any(suffix in line and "damaged (" in line for line in lines), suffix
    assert sum("completed" in line and "damaged" not in line for line in lines) == 3


@pytest.mark.parametrize("page", PAGES)
def test_every_page_shows_despite_damaged_runs(page, damaged_runs):
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, at.exception
    at.switch_page(page).run()
    assert not at.exception, at.exception


def test_compare_and_evaluate_say_why_a_damaged_run_cannot_be_shown(damaged_runs):
    runs, dnn, cnn = damaged_runs
    bad = next(p.name for p in runs.iterdir() if p.name.endswith("eval-garbage"))
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = bad
    at.run().switch_page("pages/evaluate.py").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="eval_run").value == bad
    assert any("accuracy should be a number from 0 to 1" in e.value for e in at.error)
    at.switch_page("pages/compare.py")
    at.session_state["compare_ids"] = [dnn, bad]
    at.run()
    assert not at.exception, at.exception
    assert any("cannot be compared" in w.value and "accuracy should be a number" in w.value
               for w in at.warning)


def test_reading_never_blocks_or_reads_past_the_cap(tmp_path):
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(3 * 2**30)         # sparse: 3 GB on paper
    with pytest.raises(DamagedFile, match="3,221,225,472 bytes; at most"):
        read_run_bytes(big, 1024)
    os.mkfifo(tmp_path / "pipe")      # opening a FIFO for reading would wait for a writer
    with pytest.raises(DamagedFile, match="not a regular file"):
        read_run_bytes(tmp_path / "pipe")


def test_names_with_terminal_escapes_are_refused_or_escaped(tiny_runs):
    runs, dnn, _ = tiny_runs
    for name in ("\x1b[2J\x1b[Hgotcha", "bell\x07", "rtl\u202eevil"):
        with pytest.raises(ConfigError, match="control character"):
            check_name(name)
    edit_json(runs / dnn / "meta.json", lambda m: m.update(name="\x1b[2Jcleared"))
    assert RunStore(runs).get(dnn).name == "\\x1b[2Jcleared"
    assert printable("tab\there") == "tab\\there"
    out = subprocess.run([sys.executable, "-m", "dlcore", "runs", "--runs-dir", str(runs)],
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "\x1b" not in out.stdout and "\\x1b[2Jcleared" in out.stdout
