"""`limits`: a page reads a field's bounds, choices and default from the config's own dataclasses."""
import math

import pytest

from dlcore.config import (ARCHS, OPTIMIZERS, Config, ConfigError, DNNConfig, PretrainedConfig,
                           RNNConfig, TrainConfig, limits, resolve_config)


def test_lr_must_be_more_than_zero_and_its_minimum_is_the_smallest_allowed_number():
    lr = limits("train.lr")
    assert (lr.lo, lr.hi, lr.lo_open, lr.default) == (0.0, 10.0, True, 0.001)
    assert lr.min_value == math.nextafter(0.0, 1.0) and lr.bounds == (lr.min_value, 10.0)
    assert lr.allows(lr.min_value) and not lr.allows(0.0) and not lr.allows(10.01)
    with pytest.raises(ConfigError, match=r"^train.lr: 0 is out of range; allowed: more than 0"):
        lr.check(0)


@pytest.mark.parametrize("path, bounds, default", [
    ("train.batch_size", (1, 65536), 32), ("train.epochs", (1, 10000), 10),
    ("train.patience", (0, 10000), 3), ("train.seed", (0, 2**32 - 1), 42),
    ("train.weight_decay", (0.0, 1.0), 0.0), ("data.image_size", (8, 256), 32),
    ("data.augment.rotation", (0.0, 45.0), 0), ("data.augment.crop_padding", (0, 8), 0),
    ("model.base_width", (4, 512), 16), ("model.hidden_size", (1, 4096), 128),
    ("model.num_layers", (1, 8), 1), ("model.input_size", (32, 512), 224),
])
def test_number_bounds_are_the_ones_the_config_checks(path, bounds, default):
    lim = limits(path)
    assert lim.bounds == bounds and lim.default == default
    assert all(type(b) is type(bounds[0]) for b in lim.bounds)      # a widget needs one type
    lo, hi = bounds
    assert lim.allows(lo) and lim.allows(hi) and not lim.allows(hi + 1)


@pytest.mark.parametrize("path, choices", [
    ("train.optimizer", OPTIMIZERS), ("model.arch", ARCHS),
    ("model.init", ("default", "gaussian", "xavier", "kaiming", "zeros")),
    ("model.cell", ("rnn", "lstm", "gru")), ("model.freeze", ("backbone", "none")),
])
def test_choices(path, choices):
    assert limits(path).choices == choices


def test_a_model_field_is_per_arch():
    assert limits("model.dropout").default == 0.2                  # dnn's
    assert limits("model.dropout", arch="rnn").default == 0.0
    assert limits("model.dropout", arch="cnn").bounds == (0.0, 0.9)
    assert limits("model.hidden_dims").min_len == 0 and limits("model.stage_blocks").min_len == 1
    with pytest.raises(ConfigError, match="model.hidden_size: no such config field for arch 'dnn'"):
        limits("model.hidden_size", arch="dnn")
    with pytest.raises(ConfigError, match="model.arch: unknown value 'vit'"):
        limits("model.dropout", arch="vit")
    with pytest.raises(ConfigError, match="train.momentum: no such config field"):
        limits("train.momentum")


def test_or_default_seeds_a_widget_from_any_config():
    assert limits("train.lr").or_default(1) == 1.0 and type(limits("train.lr").or_default(1)) is float
    assert limits("train.lr").or_default("fast") == 0.001
    assert limits("train.epochs").or_default(0) == 10
    assert limits("train.device").or_default("tpu") == "auto"
    assert limits("data.augment.rotation").or_default(-3) == 0.0


def test_the_dataclasses_hold_the_defaults_of_the_json_config():
    cfg = Config.from_json({"model": {"arch": "rnn", "cell": "gru"}, "train": {"lr": 1}})
    assert isinstance(cfg.model, RNNConfig) and cfg.model.cell == "gru"
    assert cfg.train == TrainConfig(lr=1.0)
    assert cfg.to_json() == resolve_config({"model": {"arch": "rnn", "cell": "gru"},
                                            "train": {"lr": 1}})
    assert Config().to_json() == resolve_config({})
    assert DNNConfig().to_json() == resolve_config({})["model"]
    assert list(PretrainedConfig().to_json()) == ["arch", "backbone", "weights", "freeze",
                                                  "input_size", "dropout", "init"]


def test_layer_lists_typed_as_text_round_trip():
    from dlcore.fields import blocks_text, parse_blocks, parse_widths, widths_text
    assert parse_widths("[512, 256 128]", "w", "e") == [512, 256, 128] and parse_widths("", "w", "e") == []
    assert widths_text([512, 256]) == "512, 256"
    assert parse_blocks(blocks_text([[16, 32], [64, 128]])) == [[16, 32], [64, 128]]
    assert parse_blocks("[[16, 32], [64, 128]]") == [[16, 32], [64, 128]]
    with pytest.raises(ValueError, match="Hidden: 'abc' is not a positive whole number"):
        parse_widths("512, abc", "Hidden", "512, 256")
    with pytest.raises(ValueError, match="'16' is not a \\[hidden, out\\] channel pair"):
        parse_blocks("16; 32, 64")
