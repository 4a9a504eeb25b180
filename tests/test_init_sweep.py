"""The init comparison: one run per init method, found by the sweep id in its meta.json."""
import json

import pytest

from dlcore.cli import main
from dlcore.config import ConfigError
from dlcore.inspect_layers import layer_series
from dlcore.runs import RunStore
from dlcore.sweep import init_sweep, sweep_config, sweep_runs

SMALL = {"data": {"dataset": "mnist-5k"}, "model": {"arch": "dnn", "hidden_dims": [16]},
         "train": {"epochs": 9, "batch_size": 64, "device": "cpu", "layer_stats": False}}


def test_sweep_config_is_short_and_records_layers():
    cfg = sweep_config(SMALL, epochs=2, limit=300)
    assert cfg["train"]["epochs"] == 2 and cfg["data"]["limit"] == 300
    assert cfg["train"]["layer_stats"] is True and cfg["model"]["hidden_dims"] == [16]


def test_each_init_becomes_its_own_run(tmp_path):
    cfg = sweep_config(SMALL, epochs=1, limit=200)
    out = init_sweep(cfg, tmp_path, "s", inits=["zeros", "xavier"], log=lambda s: None,
                     sweep_id="sweep-1")
    assert [(i, e) for i, _, e in out] == [("zeros", None), ("xavier", None)]
    found = sweep_runs(RunStore(tmp_path).list(), "sweep-1", inits=("zeros", "xavier", "kaiming"))
    assert found["kaiming"] is None
    for init in ("zeros", "xavier"):
        r = found[init]
        assert r.name == f"s · init={init}" and r.state == "completed"
        assert (r.sweep, r.trial) == ("sweep-1", init)
        assert json.loads((r.path / "config.json").read_text())["model"]["init"] == init
        assert layer_series(r.path)["epochs"] == [0, 1]
    # renaming a run keeps it in its sweep; another sweep's runs are not taken
    RunStore(tmp_path).rename(found["zeros"].id, "my zeros")
    again = sweep_runs(RunStore(tmp_path).list(), "sweep-1", inits=("zeros", "xavier"))
    assert again["zeros"].id == found["zeros"].id and again["zeros"].name == "my zeros"
    assert sweep_runs(RunStore(tmp_path).list(), "sweep-2") == dict.fromkeys(
        ("default", "gaussian", "xavier", "kaiming", "zeros"))


def test_cli_rejects_an_unknown_init(tmp_path, capsys):
    (tmp_path / "c.json").write_text(json.dumps(SMALL))
    assert main(["init-sweep", str(tmp_path / "c.json"), "--runs-dir", str(tmp_path),
                 "--inits", "ones"]) == 2
    assert "--inits: unknown init 'ones'" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        sweep_config(SMALL, epochs=0)
