"""The config contract: `{}` is valid, defaults fill in, every mistake names its field."""
import json

import pytest
from PIL import Image

from datafiles import write_folder
from dlcore.config import ConfigError, default_config, load_config_file, resolve_config
from dlcore.splits import load_splits, split_sizes


def data_cfg(**kw):
    return resolve_config({"data": kw})["data"]


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


# ---------------------------------------------------------------- nesting

DEEP_TEXTS = {"lists": "[" * 100_000 + "]" * 100_000,
              "objects": '{"a":' * 100_000 + "1" + "}" * 100_000,
              "under a key": '{"model": {"hidden_dims": ' + "[" * 100_000 + "]" * 100_000 + "}}",
              "parsed, then too deep": '{"data": ' + '{"a": ' * 40 + "1" + "}" * 41}


def nested(depth: int, leaf=1):
    """[[...[leaf]...]]: `depth` lists, built without recursion."""
    for _ in range(depth):
        leaf = [leaf]
    return leaf


@pytest.mark.parametrize("text", DEEP_TEXTS.values(), ids=DEEP_TEXTS.keys())
def test_a_deeply_nested_config_file_is_one_config_error(text, tmp_path):
    p = tmp_path / "c.json"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config_file(p)
    assert str(e.value) == (f"config file {str(p)!r} is nested too deeply (more than 32 levels); "
                            "a config has at most 4 levels")


def test_a_deeply_nested_config_given_as_data_is_a_config_error():
    for cfg in ({"model": {"hidden_dims": nested(100_000)}}, {"train": nested(33)}):
        with pytest.raises(ConfigError, match=r"^config: nested too deeply \(more than 32"):
            resolve_config(cfg)


def test_nesting_up_to_the_limit_gets_the_fields_own_message():
    with pytest.raises(ConfigError, match=r"^data.augment.hflip: expected true or false"):
        resolve_config({"data": {"augment": {"hflip": nested(29)}}})      # 32 levels in all


@pytest.mark.parametrize("text", [DEEP_TEXTS["lists"], DEEP_TEXTS["parsed, then too deep"]],
                         ids=["lists", "parsed"])
@pytest.mark.parametrize("command", ["train", "summary"])
def test_the_command_line_says_nested_too_deeply_in_one_line(command, text, tmp_path, capsys):
    p = tmp_path / "c.json"
    p.write_text(text)
    argv = [command, str(p)] + (["--runs-dir", str(tmp_path / "runs")] if command == "train" else [])
    code, err = cli(argv, capsys)
    assert code == 2 and len(err) == 1 and "nested too deeply" in err[0], err
    assert not (tmp_path / "runs").exists()


def test_a_checkpoint_with_a_deeply_nested_config_is_a_checkpoint_error():
    from dlcore.checkpoints import CheckpointError
    from dlcore.models import checked_checkpoint
    with pytest.raises(CheckpointError, match="its config is invalid: config: nested too deeply"):
        checked_checkpoint({"config": {"data": {"limit": nested(100_000)}}}, "best.pt")


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000,
                                  '{"data": ' + "[" * 100 + "]" * 100 + "}"],
                         ids=["unparsed", "parsed"])
def test_resuming_a_run_whose_config_json_nests_too_deeply_is_a_config_error(text, tmp_path):
    import torch
    from dlcore.train import resume
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "config.json").write_text(text)
    torch.save({"model_state": {}, "config": {}, "epoch": 1}, run / "last.pt")
    with pytest.raises(ConfigError, match="nested too deeply"):
        resume(run, epochs=2, progress=False, log=lambda s: None)


def test_flatten_takes_a_deep_config_without_recursion():
    from dlcore.config import flatten
    deep = {}
    for _ in range(100_000):
        deep = {"a": deep, "b": 1}
    assert len(flatten(deep)) == 100_000
    assert list(flatten({"x": {"y": 1, "z": {"w": 2}}, "v": 3})) == ["x.y", "x.z.w", "v"]


def test_folder_dataset_needs_a_root():
    with pytest.raises(ConfigError, match="data.root"):
        resolve_config({"data": {"dataset": "folder"}})
    with pytest.raises(ConfigError, match="data.root"):
        resolve_config({"data": {"dataset": "mnist-5k", "root": "/tmp"}})


# ---------------------------------------------------------------- configs that passed, then crashed

def cli(argv, capsys):
    """(exit code, stderr lines) of `python -m dlcore ...`, run in this process."""
    from dlcore.cli import main
    code = main(argv)
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("model", [{"arch": "dnn"}, {"arch": "cnn", "blocks": [[4, 4]]}])
def test_batch_size_1_with_batchnorm_is_a_config_error(model):
    with pytest.raises(ConfigError) as e:
        resolve_config({"model": {**model, "batchnorm": True}, "train": {"batch_size": 1}})
    msg = str(e.value)
    assert msg.startswith("train.batch_size: 1") and "model.batchnorm" in msg
    assert "at least 2" in msg and "\n" not in msg
    # either fix is accepted
    assert resolve_config({"model": {**model, "batchnorm": False}, "train": {"batch_size": 1}})
    assert resolve_config({"model": {**model, "batchnorm": True}, "train": {"batch_size": 2}})


def test_batch_size_1_with_batchnorm_is_refused_by_train_before_it_starts(tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"data": {"limit": 100}, "train": {"batch_size": 1, "epochs": 1}}))
    code, err = cli(["train", str(cfg), "--runs-dir", str(tmp_path / "runs")], capsys)
    assert code == 2 and len(err) == 1 and "BatchNorm needs batches of at least 2" in err[0]
    assert not (tmp_path / "runs").exists()


LONG_NAME = "a" * 300


@pytest.mark.parametrize("cfg, field", [
    ({"data": {"dataset": "folder", "root": f"/tmp/{LONG_NAME}"}}, "data.root"),
    ({"data": {"dataset": "folder", "root": "/tmp/" + "abc/" * 1100}}, "data.root"),
    ({"data": {"dataset": "folder", "root": "/tmp/a\x00b"}}, "data.root"),
    ({"model": {"arch": "pretrained", "weights": f"/tmp/{LONG_NAME}.pth"}}, "model.weights"),
    ({"model": {"arch": "pretrained", "weights": "w\x00.pth"}}, "model.weights"),
])
def test_paths_no_file_system_can_hold_are_config_errors(cfg, field):
    with pytest.raises(ConfigError) as e:
        resolve_config(cfg)
    msg = str(e.value)
    assert msg.startswith(field + ":") and "allowed: " in msg, msg
    assert "\n" not in msg and len(msg) < 300


@pytest.mark.parametrize("command", ["summary", "train"])
@pytest.mark.parametrize("cfg, field", [
    ({"data": {"dataset": "folder", "root": f"/tmp/{LONG_NAME}"}}, "data.root"),
    ({"model": {"arch": "pretrained", "weights": f"/tmp/{LONG_NAME}.pth"}}, "model.weights"),
], ids=["data.root", "model.weights"])
def test_a_300_character_path_is_one_line_from_the_command_line(command, cfg, field, tmp_path,
                                                               capsys):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    argv = [command, str(path)] + (["--runs-dir", str(tmp_path / "runs")] if command == "train" else [])
    code, err = cli(argv, capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: {field}:"), err
    assert "OSError" not in err[0] and "File name too long" not in err[0]


def test_an_absent_but_possible_path_is_left_to_the_reader():
    cfg = resolve_config({"data": {"dataset": "folder", "root": "/no/such/folder"},
                          "model": {"arch": "pretrained", "weights": "/no/such/file.pth"}})
    assert cfg["data"]["root"] == "/no/such/folder"


def test_a_limit_too_small_to_stratify_is_one_line_from_train(tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"data": {"limit": 20}, "train": {"epochs": 1}}))
    code, err = cli(["train", str(cfg), "--runs-dir", str(tmp_path / "runs")], capsys)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: data.limit: 20 images for 10 classes") and "at least 46" in err[0]
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- splits too small to stratify

def refused(cfg, seed=0):
    with pytest.raises(ConfigError) as e:
        load_splits(cfg, seed)
    with pytest.raises(ConfigError) as again:        # what jobs.validate checks before a worker
        split_sizes(cfg)
    assert str(again.value) == str(e.value) and "\n" not in str(e.value)
    return str(e.value)


@pytest.mark.parametrize("dataset, val_fraction, fewest", [
    ("mnist-5k", 0.2, 46), ("digits", 0.2, 46), ("mnist-5k", 0.01, 901), ("mnist-5k", 0.5, 20),
    ("mnist-5k", 0.15, 61),
])
def test_a_limit_too_small_for_a_stratified_split_says_how_many_are_needed(dataset, val_fraction,
                                                                          fewest):
    """The smallest limit the message allows works, and one image fewer does not."""
    if fewest > 20:
        msg = refused(data_cfg(dataset=dataset, limit=fewest - 1, val_fraction=val_fraction))
        assert msg.startswith(f"data.limit: {fewest - 1} images for 10 classes")
        assert f"allowed: at least {fewest}," in msg and "fewer than one per class" in msg
    s = load_splits(data_cfg(dataset=dataset, limit=fewest, val_fraction=val_fraction), seed=5)
    assert len(s.train_y) + len(s.val_y) == fewest
    assert set(s.val_y.tolist()) == set(range(10)) == set(s.train_y.tolist())   # stratified


def test_the_issues_limit_20_names_both_fixes_and_both_work():
    msg = refused(data_cfg(limit=20))
    assert msg == ("data.limit: 20 images for 10 classes leave 4 for validation "
                   "(data.val_fraction 0.2), fewer than one per class for a stratified split; "
                   "allowed: at least 46, or data.val_fraction of at least 0.451")
    assert len(load_splits(data_cfg(limit=20, val_fraction=0.451), 0).val_y) == 10
    with pytest.raises(Exception):
        load_splits(data_cfg(limit=20, val_fraction=0.45), 0)


def test_a_limit_just_under_the_pool_still_makes_a_subset():
    """4,000 minus 5 leaves fewer left-out images than classes: no stratified subset, but one."""
    s = load_splits(data_cfg(limit=3995), seed=1)
    assert len(s.train_y) + len(s.val_y) == 3995
    assert split_sizes(data_cfg(limit=3995)) == {"train": len(s.train_y), "val": len(s.val_y),
                                                 "test": 1000}


def test_a_small_folder_says_how_many_images_it_needs(tmp_path):
    six = tmp_path / "six"
    for k, c in enumerate("abcdef"):
        (six / c).mkdir(parents=True)
        for i in range(2):
            Image.new("L", (8, 8), 40 * k + i).save(six / c / f"{i}.png")
    msg = refused(data_cfg(dataset="folder", root=str(six), image_size=8))
    assert msg.startswith("data.root: 12 images for 6 classes are too few for the fixed "
                          "stratified 20% test split") and msg.endswith("allowed: at least 26 images")
    three = write_folder(tmp_path / "three", classes=("a", "b", "c"), per_class=4, size=8)
    msg = refused(data_cfg(dataset="folder", root=str(three), image_size=8))
    assert msg.startswith("data.val_fraction: 0.2 of 9 training images leaves 2 for validation")
    assert msg.endswith("allowed: at least 0.223")
    s = load_splits(data_cfg(dataset="folder", root=str(three), image_size=8, val_fraction=0.223), 0)
    assert sorted(s.val_y.tolist()) == [0, 1, 2]
