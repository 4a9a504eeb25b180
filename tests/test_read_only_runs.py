"""A read-only runs directory (a shared folder, a mounted backup): listing works, and train,
resume, evaluate, rename, delete and Stop each say so in one line; no page raises."""
import os
import shutil
import subprocess
import sys

import pytest
from streamlit.testing.v1 import AppTest

from conftest import ROOT, TINY
from dlcore.config import ConfigError
from dlcore.runs import RunStore

APP = str(ROOT / "app.py")


@pytest.fixture
def read_only_runs(tiny_runs, tmp_path, monkeypatch):
    """The tiny runs behind a read-only bind mount (root: permission bits do not stop it),
    or with their write bits removed (an ordinary user)."""
    runs, dnn, cnn = tiny_runs
    ro = tmp_path / "ro-runs"
    ro.mkdir()
    if os.geteuid() == 0:
        mounted = subprocess.run(["mount", "--bind", str(runs), str(ro)], capture_output=True)
        if mounted.returncode == 0:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        elif os.environ.get("CI"):
            pytest.fail(f"cannot bind-mount read-only here: {mounted.stderr.decode()}")
        else:
            pytest.skip("root without mount rights: a read-only folder cannot be made")
        restore = lambda: subprocess.run(["umount", str(ro)], check=False)   # noqa: E731
    else:
        ro.rmdir()
        shutil.copytree(runs, ro)
        for p in (ro, *ro.rglob("*")):
            p.chmod(p.stat().st_mode & ~0o222)
        restore = lambda: [p.chmod(p.stat().st_mode | 0o200) for p in (ro, *ro.rglob("*"))]  # noqa: E731
    try:
        (ro / "probe").touch()
        pytest.fail("the folder is still writable")
    except OSError:
        pass
    monkeypatch.setenv("DLCORE_RUNS", str(ro))
    try:
        yield ro, dnn, cnn
    finally:
        restore()


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "dlcore", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)))


def one_line(out, *words):
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert all(w in lines[0] for w in words), lines[0]
    assert "Traceback" not in out.stderr


def test_the_command_line_says_read_only_in_one_line(read_only_runs, tmp_path):
    ro, dnn, _ = read_only_runs
    (tmp_path / "c.json").write_text(__import__("json").dumps(TINY))
    one_line(cli("train", "c.json", "--runs-dir", str(ro), cwd=tmp_path), "read-only")
    one_line(cli("evaluate", str(ro / dnn), cwd=tmp_path), "read-only", f"evaluate {dnn}")
    one_line(cli("resume", str(ro / dnn), "--epochs", "3", cwd=tmp_path), "read-only")
    listed = cli("runs", "--runs-dir", str(ro), cwd=tmp_path)
    assert listed.returncode == 0 and listed.stdout.count("completed") == 2


def test_rename_delete_and_stop_say_read_only(read_only_runs):
    ro, dnn, cnn = read_only_runs
    store = RunStore(ro)
    for act in (lambda: store.rename(dnn, "x"), lambda: store.delete(cnn),
                lambda: store.request_stop(dnn)):
        with pytest.raises(ConfigError, match="read-only"):
            act()
    assert {r.id for r in store.list()} == {dnn, cnn}
    assert store.get(dnn).name == "tiny dnn"


def test_pages_show_the_refusal_instead_of_raising(read_only_runs):
    ro, dnn, cnn = read_only_runs
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception, at.exception
    at.selectbox(key="compare_manage").set_value(cnn).run()
    at.text_input(key=f"compare_new_name_{cnn}").input("renamed").run()
    at.checkbox(key=f"compare_rename_ok_{cnn}").check().run()
    at.button(key="compare_rename").click().run()
    assert not at.exception, at.exception
    assert any("read-only" in e.value for e in at.error)
    at.checkbox(key=f"compare_confirm_{cnn}").check().run()
    at.button(key="compare_delete").click().run()
    assert not at.exception, at.exception
    assert any("read-only" in e.value for e in at.error)
    assert (ro / cnn).is_dir()
    at.switch_page("pages/train.py").run()
    at.session_state["config"] = __import__("json").loads(__import__("json").dumps(TINY))
    next(b for b in at.button if b.label == "Start").click().run()
    assert not at.exception, at.exception
    assert any("Not started" in e.value and "read-only" in e.value for e in at.error)
