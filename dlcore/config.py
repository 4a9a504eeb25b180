"""The run config: defaults, and validation that names the field and the allowed values.

A config is plain JSON (nested dicts). `resolve_config` fills in defaults and checks every
value; anything unknown, mistyped or out of range raises `ConfigError` with one clear line.
"""
from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

DATASETS = ("mnist-5k", "digits", "mnist", "fashion-mnist", "cifar10", "folder")
ARCHS = ("dnn", "cnn", "resnet", "rnn", "pretrained")
INITS = ("default", "gaussian", "xavier", "kaiming", "zeros")
ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu", "tanh", "sigmoid")
CELLS = ("rnn", "lstm", "gru")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("none", "cosine", "onecycle")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16")
PRETRAINED_BACKBONES = ("resnet18", "resnet50", "vgg16", "mobilenet_v3_small",
                        "mobilenet_v3_large", "efficientnet_b0")
FREEZES = ("backbone", "none")


class ConfigError(ValueError):
    """Invalid config or argument; the message is one line meant for the user."""


DATA_DEFAULTS = {
    "dataset": "mnist-5k",
    "val_fraction": 0.2,
    "augment": {"crop_padding": 0, "hflip": False, "rotation": 0},
    "normalize": True,
    "limit": None,       # use at most this many training samples (quick experiments, tests)
    "root": None,        # the image folder, for dataset "folder"
    "image_size": 32,    # folder images are resized to this square size
}

# The DNN is the tutorials' model; the others are sized to train in minutes on a laptop CPU.
MODEL_DEFAULTS = {
    "dnn": {"hidden_dims": [512, 256, 128], "batchnorm": True, "dropout": 0.2,
            "activation": "relu"},
    "cnn": {"blocks": [[32, 32], [64, 64]], "fc_dims": [256], "batchnorm": True,
            "dropout": 0.2, "activation": "relu"},
    "resnet": {"stage_blocks": [2, 2, 2, 2], "base_width": 16},
    "rnn": {"cell": "lstm", "hidden_size": 128, "num_layers": 1, "bidirectional": False,
            "dropout": 0.0},
    # transfer learning as in the tutorials; weights: "imagenet", "none" or a .pth file's path.
    # `init` touches only the new head; input_size 224 is ImageNet's, 64-96 is enough on a CPU.
    "pretrained": {"backbone": "resnet18", "weights": "imagenet", "freeze": "backbone",
                   "input_size": 224, "dropout": 0.0},
}

TRAIN_DEFAULTS = {
    "epochs": 10,
    "batch_size": 32,
    "optimizer": "adam",
    "lr": 0.001,
    "weight_decay": 0.0,
    "schedule": "none",
    "patience": 3,
    "seed": 42,
    "device": "auto",
    "precision": "auto",   # auto: bf16 autocast on a CUDA GPU that supports it, else fp32
    "compile": False,      # torch.compile: costs more than it saves on short runs
    "layer_stats": True,   # per-epoch layer statistics on a probe batch (layers.jsonl)
}


def default_config(arch: str = "dnn") -> dict:
    if arch not in ARCHS:
        raise ConfigError(f"model.arch: unknown architecture {arch!r}; allowed: {', '.join(ARCHS)}")
    return {
        "data": copy.deepcopy(DATA_DEFAULTS),
        "model": {"arch": arch, **copy.deepcopy(MODEL_DEFAULTS[arch]), "init": "kaiming"},
        "train": dict(TRAIN_DEFAULTS),
    }


# ---------------------------------------------------------------- value checks

def _type_name(v) -> str:
    return "null" if v is None else type(v).__name__


def _int(path, v, lo=None, hi=None):
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"{path}: expected an integer, got {_type_name(v)} {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ConfigError(f"{path}: {v} is out of range; allowed: {_range(lo, hi)}")
    return v


def _float(path, v, lo=None, hi=None, lo_open=False):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"{path}: expected a number, got {_type_name(v)} {v!r}")
    v = float(v)
    if not math.isfinite(v):
        raise ConfigError(f"{path}: {v} is not a finite number; allowed: {_range(lo, hi, lo_open)}")
    if (lo is not None and (v < lo or (lo_open and v == lo))) or (hi is not None and v > hi):
        raise ConfigError(f"{path}: {v:g} is out of range; allowed: {_range(lo, hi, lo_open)}")
    return v


def _range(lo, hi, lo_open=False) -> str:
    if lo is not None and hi is not None:
        return f"{'more than' if lo_open else 'from'} {lo:g} {'and at most' if lo_open else 'to'} {hi:g}"
    if lo is not None:
        return f"{'more than' if lo_open else 'at least'} {lo:g}"
    return f"at most {hi:g}"


def _bool(path, v):
    if not isinstance(v, bool):
        raise ConfigError(f"{path}: expected true or false, got {_type_name(v)} {v!r}")
    return v


def _choice(path, v, allowed):
    if not isinstance(v, str) or v not in allowed:
        raise ConfigError(f"{path}: unknown value {v!r}; allowed: {', '.join(allowed)}")
    return v


def _int_list(path, v, lo, min_len=1, max_len=16):
    if not isinstance(v, list):
        raise ConfigError(f"{path}: expected a list of integers, got {_type_name(v)} {v!r}")
    if not min_len <= len(v) <= max_len:
        raise ConfigError(f"{path}: has {len(v)} entries; allowed: {min_len} to {max_len}")
    return [_int(f"{path}[{i}]", x, lo, 65536) for i, x in enumerate(v)]


def _key(k) -> str:
    """A key as the message shows it: plain names as they are, anything else quoted (one line)."""
    return k if isinstance(k, str) and k.isascii() and k.replace("_", "a").isalnum() else repr(k)


MAX_PATH_BYTES = 4096   # Linux's PATH_MAX; a longer path is an OSError, not a missing file
MAX_NAME_BYTES = 255    # NAME_MAX: one folder or file name


def check_path(path, v) -> str:
    """A path the engine will open: text a file system can take, or ConfigError naming `path`.

    A path that is merely absent is fine here (the reader says so); one that no file system
    can hold (a NUL byte, a 300-character name) would be an OSError wherever it is used.
    """
    if not isinstance(v, str) or not v.strip():
        raise ConfigError(f"{path}: expected the path of a file or folder, got {_type_name(v)} {v!r}")
    if "\x00" in v:
        raise ConfigError(f"{path}: the path contains a NUL byte; allowed: a file system path")
    try:
        raw = os.fsencode(v)
    except UnicodeError:
        raise ConfigError(f"{path}: the path has characters this file system cannot encode") from None
    if len(raw) > MAX_PATH_BYTES:
        raise ConfigError(f"{path}: the path is {len(raw)} bytes long; allowed: at most "
                          f"{MAX_PATH_BYTES} bytes, and {MAX_NAME_BYTES} per folder or file name")
    longest = max(raw.split(os.sep.encode()), key=len)
    if len(longest) > MAX_NAME_BYTES:
        shown = longest[:24].decode(errors="replace")
        raise ConfigError(f"{path}: the name {shown!r}... is {len(longest)} bytes long; allowed: at "
                          f"most {MAX_NAME_BYTES} bytes per folder or file name")
    return v


def _keys(path, given: dict, allowed, hint=""):
    if not isinstance(given, dict):
        raise ConfigError(f"{path or 'config'}: expected an object, got {_type_name(given)}")
    for k in given:
        if k not in allowed:
            where = f"{path}.{_key(k)}" if path else _key(k)
            raise ConfigError(f"{where}: unknown key{hint}; allowed: {', '.join(allowed)}")


# ---------------------------------------------------------------- resolve

def resolve_config(cfg: dict | None) -> dict:
    """Return the full config with defaults filled in, or raise ConfigError."""
    cfg = {} if cfg is None else copy.deepcopy(cfg)
    _keys("", cfg, ("data", "model", "train"))
    data = _resolve_data(cfg.get("data", {}))
    model = _resolve_model(cfg.get("model", {}))
    train = _resolve_train(cfg.get("train", {}))
    if model.get("batchnorm") and train["batch_size"] < 2:
        # training BatchNorm normalises by the batch's own statistics: one sample has none
        raise ConfigError(f"train.batch_size: {train['batch_size']} with model.batchnorm true; "
                          "BatchNorm needs batches of at least 2; allowed: train.batch_size of "
                          "at least 2, or model.batchnorm false")
    return {"data": data, "model": model, "train": train}


def _resolve_data(d) -> dict:
    _keys("data", d, tuple(DATA_DEFAULTS))
    out = copy.deepcopy(DATA_DEFAULTS)
    out.update({k: v for k, v in d.items() if k != "augment"})
    _choice("data.dataset", out["dataset"], DATASETS)
    out["val_fraction"] = _float("data.val_fraction", out["val_fraction"], 0.0, 0.5, lo_open=True)
    _bool("data.normalize", out["normalize"])
    if out["limit"] is not None:
        _int("data.limit", out["limit"], 20)
    out["image_size"] = _int("data.image_size", out["image_size"], 8, 256)
    if out["dataset"] == "folder":
        if not isinstance(out["root"], str) or not out["root"].strip():
            raise ConfigError("data.root: the folder dataset needs the path of a folder "
                              "with one sub-folder of images per class")
        check_path("data.root", out["root"])
    elif out["root"] is not None:
        raise ConfigError(f"data.root: only used with dataset 'folder' (dataset is {out['dataset']!r})")
    aug = d.get("augment", {})
    _keys("data.augment", aug, tuple(DATA_DEFAULTS["augment"]))
    out["augment"] = {**DATA_DEFAULTS["augment"], **aug}
    _int("data.augment.crop_padding", out["augment"]["crop_padding"], 0, 8)
    _bool("data.augment.hflip", out["augment"]["hflip"])
    out["augment"]["rotation"] = _float("data.augment.rotation", out["augment"]["rotation"], 0, 45)
    return out


def _resolve_model(m) -> dict:
    if not isinstance(m, dict):
        raise ConfigError(f"model: expected an object, got {_type_name(m)}")
    arch = m.get("arch", "dnn")
    _choice("model.arch", arch, ARCHS)
    allowed = ("arch", "init", *MODEL_DEFAULTS[arch])
    for k in m:
        if k not in allowed:
            other = [a for a in ARCHS if k in MODEL_DEFAULTS[a]]
            hint = f" for arch {arch!r}" + (f" (it belongs to {', '.join(other)})" if other else "")
            raise ConfigError(f"model.{_key(k)}: unknown key{hint}; allowed: {', '.join(allowed)}")
    out = {"arch": arch, **copy.deepcopy(MODEL_DEFAULTS[arch]), "init": "kaiming"}
    out.update(copy.deepcopy(m))
    _choice("model.init", out["init"], INITS)
    if "activation" in out:
        _choice("model.activation", out["activation"], ACTIVATIONS)
    if "batchnorm" in out:
        _bool("model.batchnorm", out["batchnorm"])
    if "dropout" in out:
        out["dropout"] = _float("model.dropout", out["dropout"], 0.0, 0.9)
    if arch == "dnn":
        _int_list("model.hidden_dims", out["hidden_dims"], 1, min_len=0)
    elif arch == "cnn":
        blocks = out["blocks"]
        if not isinstance(blocks, list) or not 1 <= len(blocks) <= 8:
            raise ConfigError("model.blocks: expected 1 to 8 [hidden, out] channel pairs, "
                              f"got {blocks!r}")
        for i, b in enumerate(blocks):
            if not isinstance(b, list) or len(b) != 2:
                raise ConfigError(f"model.blocks[{i}]: expected a [hidden, out] channel pair, got {b!r}")
            _int_list(f"model.blocks[{i}]", b, 1, min_len=2, max_len=2)
        _int_list("model.fc_dims", out["fc_dims"], 1, min_len=0)
    elif arch == "resnet":
        _int_list("model.stage_blocks", out["stage_blocks"], 1, min_len=1, max_len=6)
        _int("model.base_width", out["base_width"], 4, 512)
    elif arch == "rnn":
        _choice("model.cell", out["cell"], CELLS)
        _int("model.hidden_size", out["hidden_size"], 1, 4096)
        _int("model.num_layers", out["num_layers"], 1, 8)
        _bool("model.bidirectional", out["bidirectional"])
    elif arch == "pretrained":
        _choice("model.backbone", out["backbone"], PRETRAINED_BACKBONES)
        _choice("model.freeze", out["freeze"], FREEZES)
        _int("model.input_size", out["input_size"], 32, 512)
        if not isinstance(out["weights"], str) or not out["weights"].strip():
            raise ConfigError(f"model.weights: expected \"imagenet\", \"none\" or the path of a "
                              f".pth state_dict file, got {_type_name(out['weights'])} {out['weights']!r}")
        out["weights"] = out["weights"].strip()
        if out["weights"] not in ("imagenet", "none"):
            check_path("model.weights", out["weights"])
    return out


def _resolve_train(t) -> dict:
    _keys("train", t, tuple(TRAIN_DEFAULTS))
    out = {**TRAIN_DEFAULTS, **t}
    _int("train.epochs", out["epochs"], 1, 10000)
    _int("train.batch_size", out["batch_size"], 1, 65536)
    _choice("train.optimizer", out["optimizer"], OPTIMIZERS)
    out["lr"] = _float("train.lr", out["lr"], 0.0, 10.0, lo_open=True)
    out["weight_decay"] = _float("train.weight_decay", out["weight_decay"], 0.0, 1.0)
    _choice("train.schedule", out["schedule"], SCHEDULES)
    _int("train.patience", out["patience"], 0, 10000)
    _int("train.seed", out["seed"], 0, 2**32 - 1)
    _choice("train.device", out["device"], DEVICES)
    _choice("train.precision", out["precision"], PRECISIONS)
    _bool("train.compile", out["compile"])
    _bool("train.layer_stats", out["layer_stats"])
    return out


def load_config_file(path) -> dict:
    """Read and resolve a JSON config file; every problem is a ConfigError."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {str(p)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {str(p)!r} cannot be read: {e}") from None
    try:
        raw = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise ConfigError(f"config file {str(p)!r} is not valid JSON: {e.msg} "
                          f"at line {e.lineno} column {e.colno}") from None
    return resolve_config(raw)


def _reject_constant(name):
    raise ConfigError(f"{name} is not allowed in a config; use a finite number")


def diff_configs(configs: list[dict]) -> dict[str, list]:
    """Flattened keys whose values differ between configs: {"train.lr": [0.001, 0.01], ...}."""
    flats = [flatten(c) for c in configs]
    keys = sorted(set().union(*flats)) if flats else []
    return {k: [f.get(k) for f in flats] for k in keys
            if len({json.dumps(f.get(k), sort_keys=True) for f in flats}) > 1}


def flatten(cfg: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
