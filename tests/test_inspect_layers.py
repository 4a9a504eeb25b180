"""layers.jsonl is read like metrics.jsonl: a half-written last line is skipped, a damaged line
elsewhere is reported (not skipped), and a resumed run starts a damaged file again."""
import json

import pytest

from dlcore.inspect_layers import layer_series, read_layer_lines
from dlcore.runfiles import DamagedFile
from dlcore.runwriter import RunWriter

LINE = {"epoch": 0, "layers": [{"name": "fc", "type": "Linear", "act_mean": 0.1,
                                 "act_std": 1.0, "grad_norm": 2.0}]}


def lines(*rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_a_missing_file_has_no_series(tmp_path):
    assert layer_series(tmp_path) == {"epochs": [], "layers": [], "damaged": None}


def test_a_half_written_last_line_is_skipped(tmp_path):
    (tmp_path / "layers.jsonl").write_text(lines(LINE) + json.dumps({**LINE, "epoch": 1})[:25])
    s = layer_series(tmp_path)
    assert s["epochs"] == [0] and s["layers"][0]["grad_norm"] == [2.0] and s["damaged"] is None


def test_a_resumed_epochs_newer_line_wins(tmp_path):
    newer = {"epoch": 1, "layers": [{**LINE["layers"][0], "grad_norm": 5.0}]}
    (tmp_path / "layers.jsonl").write_text(lines(LINE, {**newer, "layers": []}, newer))
    assert layer_series(tmp_path)["layers"][0]["grad_norm"] == [2.0, 5.0]


@pytest.mark.parametrize("bad, why", [
    ("not json", "line 2 is not JSON"),
    ('{"layers": []}', "line 2: not an epoch record"),
    ('{"epoch": 1, "layers": {"fc": 1}}', "line 2: layers should be a list"),
    ('{"epoch": 1, "layers": [{"type": "Linear"}]}', "line 2 layer 1: expected an object with a name"),
    ('{"epoch": 1, "layers": [{"name": "fc", "grad_norm": "big"}]}', "grad_norm should be a number"),
], ids=["not-json", "no-epoch", "layers-not-a-list", "no-name", "text-number"])
def test_a_damaged_line_is_reported_not_skipped(tmp_path, bad, why):
    (tmp_path / "layers.jsonl").write_text(lines(LINE) + bad + "\n" + lines({**LINE, "epoch": 2}))
    with pytest.raises(DamagedFile, match=why):
        read_layer_lines(tmp_path)
    s = layer_series(tmp_path)
    assert (s["epochs"], s["layers"]) == ([], [])
    assert s["damaged"].startswith("layers.jsonl is damaged") and why in s["damaged"]


def test_resume_keeps_the_layer_lines_of_the_epochs_it_keeps(tmp_path):
    (tmp_path / "layers.jsonl").write_text(lines(LINE, {**LINE, "epoch": 1}, {**LINE, "epoch": 2}))
    RunWriter(tmp_path, log=lambda s: None).keep_epochs(1)
    assert [r["epoch"] for r in read_layer_lines(tmp_path)] == [0, 1]


def test_resume_starts_a_damaged_layers_file_again_and_says_so(tmp_path):
    (tmp_path / "layers.jsonl").write_text(lines(LINE) + "garbage\n" + lines({**LINE, "epoch": 1}))
    said = []
    writer = RunWriter(tmp_path, log=said.append)
    writer.keep_epochs(1)
    assert (tmp_path / "layers.jsonl").read_text() == "" and read_layer_lines(tmp_path) == []
    assert writer.status["notes"] == said and "layers.jsonl was damaged" in said[0]
    writer.layers({**LINE, "epoch": 2})        # the resumed epochs are recorded as usual
    assert [r["epoch"] for r in read_layer_lines(tmp_path)] == [2]
