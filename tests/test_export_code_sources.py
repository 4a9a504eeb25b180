"""The exported script's optimizer, schedule, early stopping and pretrained wrapper are the
engine's own code, not copies of it, and every name the script uses is defined in it."""
import importlib.util
import inspect
import sys

import pytest
import torch

from dlcore import optim, pretrained
from dlcore.config import resolve_config
from dlcore.datasets import dataset_info
from dlcore.export_code import PRETRAINED_SOURCES, generate_code
from dlcore.models import build_model

MODELS = {
    "dnn": {"arch": "dnn", "hidden_dims": [8]},
    "cnn": {"arch": "cnn", "blocks": [[4, 4]], "fc_dims": [8]},
    "resnet": {"arch": "resnet", "stage_blocks": [1], "base_width": 4},
    "rnn": {"arch": "rnn", "hidden_size": 8},
    "pretrained": {"arch": "pretrained", "backbone": "mobilenet_v3_small", "weights": "none",
                   "input_size": 32},
}


def script_for(model_cfg, tmp_path, train=None, name="gen"):
    cfg = resolve_config({"data": {"dataset": "digits"}, "model": model_cfg, "train": train or {}})
    info = dataset_info(cfg["data"])
    engine = build_model(cfg["model"], info.shape, 10)
    code = generate_code({"config": cfg, "classes": list(info.classes),
                          "input_shape": list(info.shape), "mean": [0.3], "std": [0.4],
                          "model_state": engine.state_dict()}, "test")
    path = tmp_path / f"{name}.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return code, mod


@pytest.fixture
def registered(monkeypatch):
    """script_for, with the module registered so that inspect finds its classes' source."""
    def make(*args, **kw):
        code, mod = script_for(*args, **kw)
        monkeypatch.setitem(sys.modules, mod.__name__, mod)
        return code, mod
    return make


def test_optimizer_schedule_and_early_stopping_are_the_engines_source(registered, tmp_path):
    code, mod = registered(MODELS["dnn"], tmp_path)
    for name in ("EarlyStopping", "make_optimizer", "make_scheduler"):
        assert inspect.getsource(getattr(mod, name)) == inspect.getsource(getattr(optim, name))
        assert code.count(f"def {name}(") + code.count(f"class {name}:") == 1   # no copy


def test_the_pretrained_wrapper_is_the_engines_source(registered, tmp_path):
    _, mod = registered(MODELS["pretrained"], tmp_path)
    for name in PRETRAINED_SOURCES:
        assert inspect.getsource(getattr(mod, name)) == inspect.getsource(getattr(pretrained, name))
    assert mod.BACKBONES == pretrained.BACKBONES and mod.IMAGENET_STD == pretrained.IMAGENET_STD


@pytest.mark.parametrize("opt, schedule", [("adam", "none"), ("adamw", "cosine"),
                                           ("sgd", "onecycle"), ("rmsprop", "none")])
def test_the_script_makes_the_engines_optimizer_and_schedule(opt, schedule, tmp_path):
    train = {"optimizer": opt, "schedule": schedule, "lr": 0.01, "weight_decay": 0.001}
    _, mod = script_for(MODELS["dnn"], tmp_path, train)
    model = mod.build_model()
    ours, engines = mod.make_optimizer(model, mod.TRAIN), optim.make_optimizer(model, mod.TRAIN)
    assert type(ours) is type(engines) and ours.defaults == engines.defaults
    sched = mod.make_scheduler(ours, mod.TRAIN, 7)
    assert type(sched) is type(optim.make_scheduler(engines, mod.TRAIN, 7))


@pytest.mark.parametrize("arch", list(MODELS))
def test_every_name_the_script_uses_is_defined_in_it(arch, tmp_path):
    from pyflakes import api
    code, _ = script_for(MODELS[arch], tmp_path)
    found = []

    class Collect:
        def flake(self, message):
            found.append(str(message))
        unexpectedError = syntaxError = lambda self, *a: found.append(repr(a))

    api.check(code, f"{arch}.py", Collect())
    assert found == []


def test_the_scripts_pretrained_model_loads_a_local_weights_file(tmp_path):
    torch.manual_seed(0)
    backbone = pretrained.Pretrained(dict(MODELS["pretrained"], freeze="backbone", dropout=0.0),
                                     (1, 8, 8), 10).backbone
    weights = tmp_path / "backbone.pth"
    torch.save(backbone.state_dict(), weights)
    _, mod = script_for(dict(MODELS["pretrained"], weights=str(weights)), tmp_path)
    model = mod.build_model()
    assert model.weights_source == f"local file {weights}"
    ours = model.backbone.state_dict()
    for k, v in backbone.state_dict().items():
        if not k.startswith(model.head_path + "."):
            assert torch.equal(ours[k], v), k
