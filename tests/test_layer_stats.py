"""Layer statistics while training: what layers.jsonl records, that recording it changes nothing
about training, and that bad inits show their known patterns in the numbers."""
import json

import pytest

from conftest import TINY, train_quietly
from dlcore.config import ConfigError, resolve_config
from dlcore.inspect_layers import layer_series, read_layer_lines
from dlcore.runs import read_metrics

DEEP = {"data": {"dataset": "mnist-5k", "limit": 300},
        "model": {"arch": "dnn", "hidden_dims": [128, 128, 128, 128], "batchnorm": False,
                  "dropout": 0.0, "activation": "relu"},
        "train": {"epochs": 2, "batch_size": 64, "seed": 3, "device": "cpu"}}


def with_init(init):
    cfg = json.loads(json.dumps(DEEP))
    cfg["model"]["init"] = init
    return cfg


def test_one_line_per_epoch_plus_the_initialisation(tmp_path):
    run = train_quietly(TINY, tmp_path)
    lines = read_layer_lines(run)
    assert [l["epoch"] for l in lines] == [0, 1, 2]
    layers = lines[0]["layers"]
    types = [l["type"] for l in layers]
    assert types.count("Linear") == 3 and "ReLU" in types and "BatchNorm1d" in types
    for l in layers:
        assert set(l) == {"name", "type", "act_mean", "act_std", "grad_norm"}
        assert (l["grad_norm"] is None) == (l["type"] == "ReLU")
    s = layer_series(run)
    assert s["epochs"] == [0, 1, 2]
    assert all(len(l["act_std"]) == 3 for l in s["layers"])


def test_recording_does_not_change_training(tmp_path):
    on = train_quietly(TINY, tmp_path / "on")
    off_cfg = json.loads(json.dumps(TINY))
    off_cfg["train"]["layer_stats"] = False
    off = train_quietly(off_cfg, tmp_path / "off")
    assert not (off / "layers.jsonl").exists()
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(read_metrics(on)) == strip(read_metrics(off))


def test_zeros_init_gradients_vanish_and_gaussian_explodes(tmp_path):
    zeros = layer_series(train_quietly(with_init("zeros"), tmp_path, "zeros"))
    gauss = layer_series(train_quietly(with_init("gaussian"), tmp_path, "gaussian"))
    kaiming = layer_series(train_quietly(with_init("kaiming"), tmp_path, "kaiming"))

    def linears(s):
        return [l for l in s["layers"] if l["type"] == "Linear"]

    # zeros: every unit of a layer is the same (std 0) and no weight gets a gradient
    for l in linears(zeros):
        assert all(g == 0 for g in l["grad_norm"]), l
    for l in linears(zeros)[:-1]:
        assert all(s == 0 for s in l["act_std"]), l
    # gaussian N(0, 1): the activation spread grows layer after layer by orders of magnitude
    g_std = [l["act_std"][0] for l in linears(gauss)]
    assert all(b > 5 * a for a, b in zip(g_std, g_std[1:])), g_std
    assert g_std[-1] > 1000
    # kaiming keeps it near 1 through the depth
    k_std = [l["act_std"][0] for l in linears(kaiming)]
    assert all(0.2 < s < 5 for s in k_std), k_std
    assert max(l["grad_norm"][0] for l in linears(gauss)) > \
        100 * max(l["grad_norm"][0] for l in linears(kaiming))


def test_cnn_and_rnn_layers_are_recorded(tiny_runs, tmp_path):
    runs, _, cnn_id = tiny_runs
    cnn = layer_series(runs / cnn_id)
    assert {"Conv2d", "BatchNorm2d", "Linear"} <= {l["type"] for l in cnn["layers"]}
    rnn_cfg = {"data": {"dataset": "mnist-5k", "limit": 100},
               "model": {"arch": "rnn", "hidden_size": 8},
               "train": {"epochs": 1, "batch_size": 50, "device": "cpu"}}
    rnn = layer_series(train_quietly(rnn_cfg, tmp_path, "rnn"))
    lstm = next(l for l in rnn["layers"] if l["type"] == "LSTM")
    assert lstm["grad_norm"][0] is not None and lstm["grad_norm"][0] > 0


def test_layer_stats_switch_is_validated():
    assert resolve_config({})["train"]["layer_stats"] is True
    with pytest.raises(ConfigError, match="train.layer_stats"):
        resolve_config({"train": {"layer_stats": "yes"}})


def test_the_layer_chart_has_whole_titles_and_a_legend_that_never_scrolls(tiny_runs):
    from dlcore.figures import layer_stats_figure

    runs, _, cnn_id = tiny_runs
    series = layer_series(runs / cnn_id)
    fig = layer_stats_figure(series)
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["activation std", "activation mean", "weight-gradient norm"]
    # the legend sits in rows under the panels, and the figure grows to hold every row
    legend = fig.layout.legend
    assert legend.orientation == "h" and legend.y < 0 and legend.yanchor == "top"
    rows = -(-len(series["layers"]) // 3)
    assert fig.layout.height == 340 + 22 * rows
    names = {t.name for t in fig.data if t.showlegend}
    assert names == {f"{l['name']} ({l['type']})" for l in series["layers"]}
