"""Sizes without building: the meta-device model has the built model's exact counts and shapes,
and costs no memory and no ImageNet weights."""
import urllib.error

import pytest
import torch
import torchvision

from dlcore.config import ConfigError, resolve_config
from dlcore.models import MODELS, build_model, count_parameters, meta_model, model_summary, summarize

MNIST, CIFAR = (1, 28, 28), (3, 32, 32)
SMALL = {   # one small config per architecture, so that the real build is quick
    "dnn": {"hidden_dims": [64, 32]},
    "cnn": {"blocks": [[8, 16], [16, 16]], "fc_dims": [32]},
    "resnet": {"stage_blocks": [1, 2], "base_width": 8},
    "rnn": {"cell": "gru", "hidden_size": 24, "num_layers": 2, "bidirectional": True},
    "pretrained": {"backbone": "mobilenet_v3_small", "weights": "none", "input_size": 32},
}
assert set(SMALL) == set(MODELS)


def section(arch):
    return resolve_config({"model": {"arch": arch, **SMALL[arch]}})["model"]


@pytest.fixture
def no_imagenet(tmp_path, monkeypatch):
    """An empty hub cache, no network, and a record of every weights load asked for."""
    asked = []

    def offline(*a, **k):
        asked.append(a)
        raise urllib.error.URLError("Name or service not known")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    monkeypatch.setattr("dlcore.pretrained.load_imagenet_state", lambda *a: asked.append(a))
    return asked


@pytest.mark.parametrize("arch", list(MODELS))
@pytest.mark.parametrize("shape", [MNIST, CIFAR], ids=["mnist", "cifar"])
def test_meta_counts_and_shapes_equal_the_built_model(arch, shape):
    real = build_model(section(arch), shape, 10)
    meta = meta_model(section(arch), shape, 10)
    assert count_parameters(meta) == count_parameters(real)
    assert all(p.is_meta for p in meta.parameters())
    built, unbuilt = summarize(real, shape), model_summary(section(arch), shape, 10)
    assert unbuilt == built
    assert unbuilt["rows"][-1]["output_shape"] == [-1, 10]


def test_seed_models_come_out_exactly_on_meta():
    cnn = {"arch": "cnn", "blocks": [[16, 32], [64, 128], [128, 256]], "fc_dims": [2048, 256],
           "batchnorm": False}
    assert model_summary(resolve_config({})["model"], MNIST, 10)["trainable"] == 569_226
    assert model_summary(resolve_config({"model": cnn})["model"], CIFAR, 10)["trainable"] == 9_457_962


def test_meta_model_takes_no_imagenet_weights(no_imagenet):
    cfg = resolve_config({"model": {"arch": "pretrained", "backbone": "vgg16"}})["model"]
    assert cfg["weights"] == "imagenet"
    s = model_summary(cfg, MNIST, 10)
    assert no_imagenet == []
    assert (s["trainable"], s["frozen"]) == (4096 * 10 + 10, 138_357_544 - 4096 * 1000 - 1000)
    assert "to be downloaded from https://download.pytorch.org/models/vgg16" in s["weights"]


def test_a_weights_file_that_does_not_fit_is_refused_unloaded(tmp_path):
    path = tmp_path / "small.pth"
    torch.save(torchvision.models.get_model("mobilenet_v3_small", weights=None).state_dict(), path)
    ok = resolve_config({"model": {"arch": "pretrained", "backbone": "mobilenet_v3_small",
                                   "weights": str(path), "input_size": 32}})["model"]
    assert model_summary(ok, MNIST, 10)["weights"] == f"local file {path}"
    with pytest.raises(ConfigError, match="do not fit torchvision's resnet18"):
        meta_model({**ok, "backbone": "resnet18"}, MNIST, 10)


def test_oversized_model_is_refused_with_its_exact_count():
    cfg = resolve_config({"model": {"hidden_dims": [65536, 65536]}})["model"]
    n = 784 * 65536 + 65536 + 2 * 65536 + 65536 * 65536 + 65536 + 2 * 65536 + 65536 * 10 + 10
    with pytest.raises(ConfigError, match=f"model: {n:,} parameters .* too large"):
        model_summary(cfg, MNIST, 10)
