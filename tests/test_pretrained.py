"""Transfer learning: torchvision backbones, their weights' sources, freezing and clear errors.

No download is needed: weights files in torchvision's format are written by the tests.
"""
import json
import os
import pickle
import urllib.error

import pytest
import torch
import torchvision
from torch import nn

from conftest import train_quietly
from dlcore.config import PRETRAINED_BACKBONES, ConfigError, config_warnings, resolve_config
from dlcore.models import build_model, count_parameters, meta_model, summarize
from dlcore.pretrained import BACKBONES, weights_source
from dlcore.checkpoints import load_checkpoint

MNIST = (1, 28, 28)


def section(**kw):
    """A random-init section, frozen unless `freeze` says otherwise (what counts assume)."""
    return resolve_config({"model": {"arch": "pretrained", "weights": "none", "input_size": 32,
                                     "freeze": "backbone", **kw}})["model"]


def imagenet_head_params(backbone):
    head = BACKBONES[backbone][0]
    net = torchvision.models.get_model(backbone, weights=None)
    return net, sum(p.numel() for p in net.get_submodule(head).parameters())


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory):
    """A state_dict of torchvision's own model, saved as its ImageNet weights are."""
    d = tmp_path_factory.mktemp("weights")

    def make(backbone):
        path = d / f"{backbone}.pth"
        if not path.exists():
            torch.manual_seed(0)
            torch.save(torchvision.models.get_model(backbone, weights=None).state_dict(), path)
        return path
    return make


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """An empty torch hub cache and no network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*a, **k):
        raise urllib.error.URLError("Name or service not known")
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    monkeypatch.setattr("dlcore.pretrained._FAILED_DOWNLOADS", {})
    return tmp_path / "torch" / "hub" / "checkpoints"


# ---------------------------------------------------------------- counts

@pytest.mark.parametrize("backbone", PRETRAINED_BACKBONES)
def test_frozen_counts_are_the_backbone_and_trainable_the_new_head(backbone):
    net, head = imagenet_head_params(backbone) if backbone != "vgg16" else (None, None)
    with torch.device("meta"):      # vgg16's 138M weights would take seconds to initialise
        model = build_model(section(backbone=backbone), MNIST, 10)
        if net is None:
            net = torchvision.models.get_model(backbone, weights=None)
            head = sum(p.numel() for p in net.get_submodule(BACKBONES[backbone][0]).parameters())
    total = sum(p.numel() for p in net.parameters())
    width = BACKBONES[backbone][1]
    trainable, frozen = count_parameters(model)
    assert frozen == total - head
    assert trainable == width * 10 + 10
    assert count_parameters(meta_model(section(backbone=backbone), MNIST, 10)) == (trainable, frozen)


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v3_small", "efficientnet_b0"])
def test_summary_shows_trainable_and_frozen_and_ends_in_the_classes(backbone):
    model = build_model(section(backbone=backbone), MNIST, 10)
    s = summarize(model, MNIST)
    trainable, frozen = count_parameters(model)
    assert (s["trainable"], s["frozen"]) == (trainable, frozen) and frozen > 0
    assert sum(r["params"] for r in s["rows"]) == trainable + frozen
    assert s["rows"][-1]["output_shape"] == [-1, 10]
    assert s["weights"] == "random init (no pretrained weights)"


def test_fine_tuning_everything_freezes_nothing():
    model = build_model(section(backbone="resnet18", freeze="none"), MNIST, 10)
    trainable, frozen = count_parameters(model)
    assert frozen == 0 and trainable == 11_176_512 + 5130


def test_init_applies_to_the_new_head_only(weights_file):
    path = weights_file("resnet18")
    model = build_model(section(backbone="resnet18", weights=str(path), init="zeros"), MNIST, 10)
    assert (model.head[1].weight == 0).all()
    saved = torch.load(path, weights_only=True)
    assert torch.equal(model.backbone.conv1.weight, saved["conv1.weight"])


# ---------------------------------------------------------------- input handling

def test_gray_and_color_batches_of_any_size_are_resized_inside():
    model = build_model(section(backbone="mobilenet_v3_small", input_size=64), MNIST, 10).eval()
    seen = []
    model.backbone.features[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert seen == [(2, 3, 64, 64)] * 2


# ---------------------------------------------------------------- freezing

def test_frozen_batchnorm_stays_in_eval_mode_and_keeps_its_statistics():
    model = build_model(section(backbone="resnet18"), MNIST, 10)
    before = model.backbone.bn1.running_mean.clone()
    model.train()
    assert not any(m.training for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d))
    assert model.head.training
    model(torch.rand(4, 1, 28, 28))
    assert torch.equal(model.backbone.bn1.running_mean, before)


def test_unfrozen_backbone_learns():
    model = build_model(section(backbone="resnet18", freeze="none"), MNIST, 10).train()
    before = model.backbone.conv1.weight.clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    nn.functional.cross_entropy(model(torch.rand(4, 1, 28, 28)), torch.arange(4)).backward()
    opt.step()
    assert not torch.equal(model.backbone.conv1.weight, before)


def test_training_a_frozen_backbone_changes_only_the_head(weights_file, tmp_path):
    path = weights_file("mobilenet_v3_small")
    cfg = {"data": {"dataset": "digits", "limit": 100},     # a small test split: a quick eval
           "model": {"arch": "pretrained", "backbone": "mobilenet_v3_small", "weights": str(path),
                     "input_size": 32},
           "train": {"epochs": 1, "batch_size": 20, "seed": 3, "device": "cpu", "lr": 0.01}}
    run = train_quietly(cfg, tmp_path / "runs", name="transfer")
    ckpt = load_checkpoint(run / "last.pt")
    state, saved = ckpt["model_state"], torch.load(path, weights_only=True)
    head = "backbone." + BACKBONES["mobilenet_v3_small"][0] + "."
    backbone_keys = [k for k in state if not k.startswith(head)]
    assert any("running_mean" in k for k in backbone_keys)
    for k in backbone_keys:       # weights and BatchNorm statistics alike
        assert torch.equal(state[k], saved[k.removeprefix("backbone.")]), k
    torch.manual_seed(3)
    fresh = build_model(resolve_config(cfg)["model"], (1, 8, 8), 10).state_dict()
    assert not torch.equal(state[head + "1.weight"], fresh[head + "1.weight"])
    # the model normalises itself: the engine feeds it 0..1 images
    assert ckpt["mean"] == [0.0] and ckpt["std"] == [1.0]
    assert json.loads((run / "eval.json").read_text())["n_test"] > 0


# ---------------------------------------------------------------- a random backbone

RANDOM = {"arch": "pretrained", "backbone": "mobilenet_v3_small", "weights": "none",
          "input_size": 32}


@pytest.mark.parametrize("weights", ["none", " none "])
def test_random_weights_train_the_whole_model_unless_freeze_is_given(weights):
    model = resolve_config({"model": dict(RANDOM, weights=weights)})["model"]
    assert model["freeze"] == "none" and model["weights"] == "none"
    assert count_parameters(build_model(model, MNIST, 10))[1] == 0
    assert config_warnings({"model": RANDOM}) == []
    # weights to learn from keep the frozen backbone by default
    imagenet = resolve_config({"model": dict(RANDOM, weights="imagenet")})["model"]
    assert imagenet["freeze"] == "backbone"
    assert resolve_config({"model": {"arch": "pretrained"}})["model"]["freeze"] == "backbone"


def test_a_frozen_random_backbone_is_valid_but_warned_about():
    cfg = {"model": dict(RANDOM, freeze="backbone")}
    assert resolve_config(cfg)["model"]["freeze"] == "backbone"
    (warning,) = config_warnings(cfg)
    assert warning.startswith('model.freeze "backbone" with model.weights "none"')
    assert "near chance" in warning and 'set model.freeze to "none"' in warning
    assert "\n" not in warning
    assert config_warnings(resolve_config(cfg)) == [warning], "a resolved config warns alike"
    assert config_warnings({"model": dict(RANDOM, freeze="none")}) == []
    assert config_warnings({}) == []


def test_training_a_frozen_random_backbone_says_so_in_the_log_and_the_notes(tmp_path):
    from dlcore.train import train
    cfg = {"data": {"dataset": "digits", "limit": 100},
           "model": dict(RANDOM, freeze="backbone"),
           "train": {"epochs": 1, "batch_size": 50, "device": "cpu", "layer_stats": False}}
    lines = []
    run = train(cfg, runs_dir=tmp_path / "runs", progress=False, log=lines.append)
    (warning,) = config_warnings(cfg)
    assert lines[0] == f"warning: {warning}"
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "completed" and status["notes"] == [f"warning: {warning}"]
    assert json.loads((run / "config.json").read_text())["model"]["freeze"] == "backbone"


# ---------------------------------------------------------------- where the weights come from

def test_missing_imagenet_weights_say_how_to_get_them(empty_hub):
    with pytest.raises(ConfigError) as e:
        build_model(section(backbone="resnet18", weights="imagenet"), MNIST, 10)
    msg = str(e.value)
    assert msg.startswith("model.weights: the ImageNet weights of resnet18 are not in the torch hub cache")
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in msg
    assert str(empty_hub) in msg and '"none"' in msg
    # in the words of the Model page too, where weights: none is called "Random init"
    assert '"none" ("Random init")' in msg and '("Local file" on the Model page)' in msg


def test_cached_imagenet_weights_are_used_and_reported(empty_hub, weights_file):
    empty_hub.mkdir(parents=True)
    (empty_hub / "resnet18-f37072fd.pth").write_bytes(weights_file("resnet18").read_bytes())
    cfg = section(backbone="resnet18", weights="imagenet")
    model = build_model(cfg, MNIST, 10)
    assert model.weights_source == weights_source(cfg) == (
        "ImageNet (torchvision ResNet18_Weights.IMAGENET1K_V1, from the torch hub cache at "
        f"{empty_hub / 'resnet18-f37072fd.pth'})")
    saved = torch.load(weights_file("resnet18"), weights_only=True)
    assert torch.equal(model.backbone.layer1[0].conv1.weight, saved["layer1.0.conv1.weight"])


def test_random_init_only_when_asked(empty_hub):
    model = build_model(section(backbone="mobilenet_v3_small", weights="none"), MNIST, 10)
    assert model.weights_source.startswith("random init")
    assert not empty_hub.exists() or not any(empty_hub.iterdir())


def test_local_file_is_reported(weights_file):
    path = weights_file("resnet18")
    model = build_model(section(backbone="resnet18", weights=str(path)), MNIST, 10)
    assert model.weights_source == f"local file {path}"


def test_weights_of_another_model_are_a_clear_error(weights_file):
    with pytest.raises(ConfigError, match=r"model.weights: the weights do not fit torchvision's "
                                          r"resnet18"):
        build_model(section(backbone="resnet18", weights=str(weights_file("mobilenet_v3_small"))),
                    MNIST, 10)


def test_wrong_shapes_are_a_clear_error(weights_file, tmp_path):
    state = torch.load(weights_file("resnet18"), weights_only=True)
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ConfigError, match=r"do not fit torchvision's resnet18: size mismatch "
                                          r"for conv1.weight"):
        build_model(section(backbone="resnet18", weights=str(tmp_path / "bad.pth")), MNIST, 10)


def test_garbage_bytes_and_missing_files_are_clear_errors(tmp_path):
    (tmp_path / "junk.pth").write_bytes(os.urandom(256))
    with pytest.raises(ConfigError, match="is not a weights file torch can load safely"):
        build_model(section(weights=str(tmp_path / "junk.pth")), MNIST, 10)
    with pytest.raises(ConfigError, match="does not exist"):
        build_model(section(weights=str(tmp_path / "nowhere.pth")), MNIST, 10)
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ConfigError, match="holds no state_dict"):
        build_model(section(weights=str(tmp_path / "list.pth")), MNIST, 10)


class _RunsCode:
    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_a_pickle_that_would_run_code_is_refused_unrun(tmp_path):
    payload = _RunsCode()
    payload.target = str(tmp_path / "pwned")
    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"conv1.weight": payload}, protocol=2))
    with pytest.raises(ConfigError, match="is not a weights file torch can load safely"):
        build_model(section(weights=str(tmp_path / "evil.pth")), MNIST, 10)
    assert not (tmp_path / "pwned").exists()


# ---------------------------------------------------------------- config and command line

@pytest.mark.parametrize("model, message", [
    ({"backbone": "vit"}, "model.backbone: unknown value 'vit'; allowed: resnet18, resnet50, vgg16"),
    ({"freeze": "all"}, "model.freeze: unknown value 'all'; allowed: backbone, none"),
    ({"input_size": 16}, "model.input_size: 16 is out of range; allowed: from 32 to 512"),
    ({"weights": ""}, 'model.weights: expected "imagenet", "none" or the path'),
    ({"hidden_dims": [8]}, "model.hidden_dims: unknown key for arch 'pretrained' (it belongs to dnn)"),
])
def test_bad_pretrained_config_names_the_field_and_the_allowed_values(model, message):
    with pytest.raises(ConfigError) as e:
        resolve_config({"model": {"arch": "pretrained", **model}})
    assert str(e.value).startswith(message)


def test_cli_summary_prints_trainable_and_frozen(tmp_path, capsys):
    from dlcore.cli import main
    cfg = {"model": {"arch": "pretrained", "backbone": "mobilenet_v3_small", "weights": "none",
                     "freeze": "backbone", "input_size": 32}}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    assert main(["summary", str(tmp_path / "cfg.json")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "trainable parameters: 10250"
    assert lines[-2] == "frozen parameters: 1517856"
    assert lines[-3] == "weights: random init (no pretrained weights)"


def test_rebuilding_for_a_checkpoint_needs_no_weights(empty_hub):
    model = build_model(section(backbone="resnet18", weights="imagenet"), MNIST, 10,
                        load_weights=False)
    assert model.weights_source == "replaced by the checkpoint's weights"


def test_a_four_channel_dataset_is_a_clear_error():
    with pytest.raises(ConfigError, match="gray or RGB images; this dataset has 4 channels"):
        build_model(section(), (4, 32, 32), 10)
