"""The config contract: `{}` is valid, defaults fill in, every mistake names its field."""
import json

import pytest

from dlcore.config import ConfigError, default_config, load_config_file, resolve_config


def test_empty_config_is_the_tutorial_dnn_on_mnist_5k():
    cfg = resolve_config({})
    assert cfg["data"] == {"dataset": "mnist-5k", "val_fraction": 0.2,
                           "augment": {"crop_padding": 0, "hflip": False, "rotation": 0.0},
                           "normalize": True, "limit": None, "root": None, "image_size": 32}
    assert cfg["model"] == {"arch": "dnn", "hidden_dims": [512, 256, 128], "batchnorm": True,
                            "dropout": 0.2, "activation": "relu", "init": "kaiming"}
    t = cfg["train"]
    assert (t["epochs"], t["batch_size"], t["optimizer"], t["lr"], t["patience"], t["seed"],
            t["device"]) == (10, 32, "adam", 0.001, 3, 42, "auto")


def test_resolving_twice_changes_nothing():
    cfg = resolve_config({"model": {"arch": "rnn", "cell": "gru"}})
    assert resolve_config(cfg) == cfg


@pytest.mark.parametrize("arch", ["dnn", "cnn", "resnet", "rnn"])
def test_default_config_of_each_arch_is_valid(arch):
    assert resolve_config(default_config(arch))["model"]["arch"] == arch


@pytest.mark.parametrize("cfg, field, allowed", [
    ({"bogus": 1}, "bogus", "data, model, train"),
    ({"data": {"dataset": "imagenet"}}, "data.dataset", "mnist-5k"),
    ({"data": {"shuffle": True}}, "data.shuffle", "dataset"),
    ({"data": {"val_fraction": 0.9}}, "data.val_fraction", "0.5"),
    ({"data": {"augment": {"rotation": 90}}}, "data.augment.rotation", "45"),
    ({"model": {"arch": "transformer"}}, "model.arch", "dnn, cnn, resnet, rnn"),
    ({"model": {"arch": "dnn", "blocks": [[1, 2]]}}, "model.blocks", "hidden_dims"),
    ({"model": {"hidden_dims": "512"}}, "model.hidden_dims", "list"),
    ({"model": {"hidden_dims": [512, -1]}}, "model.hidden_dims[1]", "from 1 to"),
    ({"model": {"batchnorm": "yes"}}, "model.batchnorm", "true or false"),
    ({"model": {"init": "he"}}, "model.init", "kaiming"),
    ({"model": {"arch": "cnn", "blocks": [[16]]}}, "model.blocks[0]", "pair"),
    ({"model": {"arch": "rnn", "cell": "transformer"}}, "model.cell", "lstm"),
    ({"train": {"epochs": 0}}, "train.epochs", "from 1 to"),
    ({"train": {"epochs": 2.5}}, "train.epochs", "integer"),
    ({"train": {"batch_size": 0}}, "train.batch_size", "from 1 to"),
    ({"train": {"lr": -0.1}}, "train.lr", "more than 0"),
    ({"train": {"lr": "fast"}}, "train.lr", "number"),
    ({"train": {"optimizer": "lion"}}, "train.optimizer", "adam"),
    ({"train": {"device": "tpu"}}, "train.device", "cuda"),
    ({"train": {"seed": True}}, "train.seed", "integer"),
])
def test_bad_values_name_the_field_and_what_is_allowed(cfg, field, allowed):
    with pytest.raises(ConfigError) as e:
        resolve_config(cfg)
    msg = str(e.value)
    assert msg.startswith(field + ":"), msg
    assert allowed in msg, msg
    assert "\n" not in msg


def test_nan_learning_rate_in_a_file_is_refused(tmp_path):
    p = tmp_path / "c.json"
    p.write_text('{"train": {"lr": NaN}}')
    with pytest.raises(ConfigError, match="NaN"):
        load_config_file(p)


def test_config_file_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_file(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{'data': 1")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config_file(bad)
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps({"model": {"arch": "resnet"}}))
    assert load_config_file(ok)["model"]["stage_blocks"] == [2, 2, 2, 2]


def test_folder_dataset_needs_a_root():
    with pytest.raises(ConfigError, match="data.root"):
        resolve_config({"data": {"dataset": "folder"}})
    with pytest.raises(ConfigError, match="data.root"):
        resolve_config({"data": {"dataset": "mnist-5k", "root": "/tmp"}})
