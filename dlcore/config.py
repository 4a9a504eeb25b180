"""The run config: one dataclass per section, holding each field's default and allowed values.

A config is plain JSON (nested dicts). `Config.from_json` fills in defaults and checks every
value; anything unknown, mistyped or out of range raises `ConfigError` with one clear line.
`resolve_config` gives the full config back as JSON; `limits` gives a page one field's bounds;
`config_warnings` names what is valid but will not train well.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar

from .fields import ConfigError, Limits, check_path, key_name, type_name

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
WIDTH = dict(lo=1, hi=65536)        # every layer width of a list
# A config nests at most 4 levels (the config, model, blocks, one [hidden, out] pair); anything
# past MAX_DEPTH is refused before it is read further (copies, messages and JSON recurse).
CONFIG_DEPTH, MAX_DEPTH = 4, 32
DEPTH_PROBLEM = (f"nested too deeply (more than {MAX_DEPTH} levels); a config has at most "
                 f"{CONFIG_DEPTH} levels")


def _f(kind: str, default, **kw):
    """A dataclass field whose default and allowed values are one `Limits`."""
    lim = Limits(kind, default, **kw)
    if isinstance(default, list):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"limits": lim})
    return field(default=default, metadata={"limits": lim})


def _limits_of(cls) -> dict[str, Limits]:
    return {f.name: f.metadata["limits"] for f in fields(cls) if "limits" in f.metadata}


def _keys(path, given, allowed, hint=""):
    if not isinstance(given, dict):
        raise ConfigError(f"{path or 'config'}: expected an object, got {type_name(given)}")
    for k in given:
        if k not in allowed:
            where = f"{path}.{key_name(k)}" if path else key_name(k)
            raise ConfigError(f"{where}: unknown key{hint}; allowed: {', '.join(allowed)}")


def _checked(cls, given: dict, first=(), later=()) -> dict:
    """Every field of `cls` but `later`'s, defaults filled in and checked: `first`, then the other
    values in field order, then paths (a value's message before a path's)."""
    lims = {k: v for k, v in _limits_of(cls).items() if k not in later}
    out = {k: copy.deepcopy(given.get(k, lim.default)) for k, lim in lims.items()}
    rest = [k for k in lims if k not in first]
    order = [*first, *(k for k in rest if lims[k].kind not in ("path", "weights")),
             *(k for k in rest if lims[k].kind in ("path", "weights"))]
    for k in order:
        out[k] = lims[k].check(out[k], f"{cls.PATH}.{k}")
    return out


def _json(v):
    return v.to_json() if hasattr(v, "to_json") else copy.deepcopy(v)


class _Section:
    PATH: ClassVar[str]

    def to_json(self) -> dict:
        return {f.name: _json(getattr(self, f.name)) for f in fields(self)}


# ---------------------------------------------------------------- data

@dataclass
class Augment(_Section):
    PATH: ClassVar[str] = "data.augment"
    crop_padding: int = _f("int", 0, lo=0, hi=8)
    hflip: bool = _f("bool", False)
    rotation: float = _f("float", 0, lo=0, hi=45)

    @classmethod
    def from_json(cls, a) -> Augment:
        _keys(cls.PATH, a, [f.name for f in fields(cls)])
        return cls(**_checked(cls, a))


@dataclass
class DataConfig(_Section):
    PATH: ClassVar[str] = "data"
    dataset: str = _f("choice", "mnist-5k", choices=DATASETS)
    val_fraction: float = _f("float", 0.2, lo=0.0, hi=0.5, lo_open=True)
    augment: Augment = field(default_factory=Augment)
    normalize: bool = _f("bool", True)
    # use at most this many training samples (quick experiments, tests)
    limit: int | None = _f("int", None, lo=20, optional=True)
    root: str | None = _f("path", None, optional=True)    # the image folder, for dataset "folder"
    image_size: int = _f("int", 32, lo=8, hi=256)   # folder images are resized to this square size

    @classmethod
    def from_json(cls, d) -> DataConfig:
        _keys(cls.PATH, d, [f.name for f in fields(cls)])
        out = _checked(cls, d, later=("root",))
        root = d.get("root")
        if out["dataset"] == "folder":
            if not isinstance(root, str) or not root.strip():
                raise ConfigError("data.root: the folder dataset needs the path of a folder "
                                  "with one sub-folder of images per class")
            check_path("data.root", root)
        elif root is not None:
            raise ConfigError(f"data.root: only used with dataset 'folder' (dataset is {out['dataset']!r})")
        return cls(**out, root=root, augment=Augment.from_json(d.get("augment", {})))


# ---------------------------------------------------------------- model: one class per arch

ARCH = Limits("choice", "dnn", choices=ARCHS)


@dataclass
class ModelConfig(_Section):
    """What every architecture has; `init` touches only the new head of a pretrained model."""
    PATH: ClassVar[str] = "model"
    ARCH: ClassVar[str]
    init: str = _f("choice", "kaiming", choices=INITS)

    @classmethod
    def own_fields(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.name != "init"]

    @classmethod
    def from_json(cls, m) -> ModelConfig:
        """The config of `m`'s arch (`m["arch"]`, by default dnn)."""
        if not isinstance(m, dict):
            raise ConfigError(f"model: expected an object, got {type_name(m)}")
        arch = ARCH.check(m.get("arch", ARCH.default), "model.arch")
        kind = MODEL_CONFIGS[arch]
        allowed = ("arch", "init", *kind.own_fields())
        for k in m:
            if k not in allowed:
                other = [a for a in ARCHS if k in MODEL_CONFIGS[a].own_fields()]
                hint = f" for arch {arch!r}" + (f" (it belongs to {', '.join(other)})" if other else "")
                raise ConfigError(f"model.{key_name(k)}: unknown key{hint}; allowed: {', '.join(allowed)}")
        shared = [k for k in ("init", "activation", "batchnorm", "dropout") if k in allowed]
        return kind(**_checked(kind, {**kind.implied_defaults(m), **m}, first=shared))

    @classmethod
    def implied_defaults(cls, m: dict) -> dict:
        """Defaults that depend on other given values (a field given in `m` overrides them)."""
        return {}

    def to_json(self) -> dict:
        own = super().to_json()
        return {"arch": self.ARCH, **{k: own[k] for k in self.own_fields()}, "init": self.init}


def _dropout(default: float):
    return _f("float", default, lo=0.0, hi=0.9)


# The DNN is the tutorials' model; the others are sized to train in minutes on a laptop CPU.
@dataclass
class DNNConfig(ModelConfig):
    ARCH: ClassVar[str] = "dnn"
    hidden_dims: list[int] = _f("ints", [512, 256, 128], min_len=0, max_len=16, **WIDTH)
    batchnorm: bool = _f("bool", True)
    dropout: float = _dropout(0.2)
    activation: str = _f("choice", "relu", choices=ACTIVATIONS)


@dataclass
class CNNConfig(ModelConfig):
    ARCH: ClassVar[str] = "cnn"
    blocks: list[list[int]] = _f("blocks", [[32, 32], [64, 64]], min_len=1, max_len=8, **WIDTH)
    fc_dims: list[int] = _f("ints", [256], min_len=0, max_len=16, **WIDTH)
    batchnorm: bool = _f("bool", True)
    dropout: float = _dropout(0.2)
    activation: str = _f("choice", "relu", choices=ACTIVATIONS)


@dataclass
class ResNetConfig(ModelConfig):
    ARCH: ClassVar[str] = "resnet"
    stage_blocks: list[int] = _f("ints", [2, 2, 2, 2], min_len=1, max_len=6, **WIDTH)
    base_width: int = _f("int", 16, lo=4, hi=512)


@dataclass
class RNNConfig(ModelConfig):
    ARCH: ClassVar[str] = "rnn"
    cell: str = _f("choice", "lstm", choices=CELLS)
    hidden_size: int = _f("int", 128, lo=1, hi=4096)
    num_layers: int = _f("int", 1, lo=1, hi=8)
    bidirectional: bool = _f("bool", False)
    dropout: float = _dropout(0.0)


# transfer learning as in the tutorials; weights: "imagenet", "none" or a .pth file's path.
# input_size 224 is ImageNet's, 64-96 is enough on a CPU.
@dataclass
class PretrainedConfig(ModelConfig):
    ARCH: ClassVar[str] = "pretrained"
    backbone: str = _f("choice", "resnet18", choices=PRETRAINED_BACKBONES)
    weights: str = _f("weights", "imagenet")
    freeze: str = _f("choice", "backbone", choices=FREEZES)
    input_size: int = _f("int", 224, lo=32, hi=512)
    dropout: float = _dropout(0.0)

    @classmethod
    def implied_defaults(cls, m: dict) -> dict:
        # a random backbone frozen would train the head on random features: train everything
        w = m.get("weights")
        return {"freeze": "none"} if isinstance(w, str) and w.strip() == "none" else {}


MODEL_CONFIGS: dict[str, type[ModelConfig]] = {
    "dnn": DNNConfig, "cnn": CNNConfig, "resnet": ResNetConfig, "rnn": RNNConfig,
    "pretrained": PretrainedConfig}
assert tuple(MODEL_CONFIGS) == ARCHS


# ---------------------------------------------------------------- train

@dataclass
class TrainConfig(_Section):
    PATH: ClassVar[str] = "train"
    epochs: int = _f("int", 10, lo=1, hi=10000)
    batch_size: int = _f("int", 32, lo=1, hi=65536)
    optimizer: str = _f("choice", "adam", choices=OPTIMIZERS)
    lr: float = _f("float", 0.001, lo=0.0, hi=10.0, lo_open=True)
    weight_decay: float = _f("float", 0.0, lo=0.0, hi=1.0)
    schedule: str = _f("choice", "none", choices=SCHEDULES)
    patience: int = _f("int", 3, lo=0, hi=10000)
    seed: int = _f("int", 42, lo=0, hi=2**32 - 1)
    device: str = _f("choice", "auto", choices=DEVICES)
    # auto: bf16 autocast on a CUDA GPU that supports it, else fp32
    precision: str = _f("choice", "auto", choices=PRECISIONS)
    compile: bool = _f("bool", False)       # torch.compile: costs more than it saves on short runs
    layer_stats: bool = _f("bool", True)    # per-epoch layer statistics on a probe batch (layers.jsonl)

    @classmethod
    def from_json(cls, t) -> TrainConfig:
        _keys(cls.PATH, t, [f.name for f in fields(cls)])
        return cls(**_checked(cls, t))


# ---------------------------------------------------------------- the whole config

@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=DNNConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def from_json(cls, cfg: dict | None) -> Config:
        cfg = {} if cfg is None else cfg
        if nested_too_deeply(cfg):
            raise ConfigError(f"config: {DEPTH_PROBLEM}")
        _keys("", cfg, ("data", "model", "train"))
        c = cls(DataConfig.from_json(cfg.get("data", {})), ModelConfig.from_json(cfg.get("model", {})),
                TrainConfig.from_json(cfg.get("train", {})))
        if getattr(c.model, "batchnorm", False) and c.train.batch_size < 2:
            # training BatchNorm normalises by the batch's own statistics: one sample has none
            raise ConfigError(f"train.batch_size: {c.train.batch_size} with model.batchnorm true; "
                              "BatchNorm needs batches of at least 2; allowed: train.batch_size of "
                              "at least 2, or model.batchnorm false")
        return c

    def to_json(self) -> dict:
        return {"data": self.data.to_json(), "model": self.model.to_json(),
                "train": self.train.to_json()}


def resolve_config(cfg: dict | None) -> dict:
    """Return the full config with defaults filled in, or raise ConfigError."""
    return Config.from_json(cfg).to_json()


def config_warnings(cfg: dict | None) -> list[str]:
    """What is valid in a config but works against training, one line each (empty: nothing).
    `cfg` is resolved first (ConfigError if it is invalid)."""
    m = resolve_config(cfg)["model"]
    out = []
    if m["arch"] == "pretrained" and m["weights"] == "none" and m["freeze"] == "backbone":
        out.append('model.freeze "backbone" with model.weights "none": only the new head is '
                   "trained, on the features of a random, untrained backbone, so accuracy stays "
                   'near chance; set model.freeze to "none" to train the whole model, or use '
                   "ImageNet weights or a weights file")
    return out


def nested_too_deeply(value, limit: int = MAX_DEPTH) -> bool:
    """Whether lists and objects nest more than `limit` levels (counted without recursion)."""
    todo = [(value, 1)]
    while todo:
        v, depth = todo.pop()
        if isinstance(v, (dict, list, tuple)):
            if depth > limit:
                return True
            todo.extend((x, depth + 1) for x in (v.values() if isinstance(v, dict) else v))
    return False


def default_config(arch: str = "dnn") -> dict:
    if arch not in ARCHS:
        raise ConfigError(f"model.arch: unknown architecture {arch!r}; allowed: {', '.join(ARCHS)}")
    return Config(model=MODEL_CONFIGS[arch]()).to_json()


DATA_DEFAULTS = DataConfig().to_json()
TRAIN_DEFAULTS = TrainConfig().to_json()
MODEL_DEFAULTS = {a: {k: v for k, v in c().to_json().items() if k not in ("arch", "init")}
                  for a, c in MODEL_CONFIGS.items()}


def limits(path: str, arch: str | None = None) -> Limits:
    """One field's default, bounds and choices, for a page's widget: `limits("train.lr").bounds`,
    `limits("model.dropout", arch="rnn").default`. A model field without `arch` is taken from
    the first architecture that has it (dnn first)."""
    section, _, name = path.partition(".")
    if section == "model":
        if name == "arch":
            return ARCH.at(path)
        for a in [ARCH.check(arch, "model.arch")] if arch is not None else ARCHS:
            found = _limits_of(MODEL_CONFIGS[a]).get(name)
            if found:
                return found.at(path)
    else:
        cls = {"data": DataConfig, "train": TrainConfig}.get(section)
        if section == "data" and name.startswith("augment."):
            cls, name = Augment, name.removeprefix("augment.")
        found = _limits_of(cls).get(name) if cls else None
        if found:
            return found.at(path)
    raise ConfigError(f"{path}: no such config field" + (f" for arch {arch!r}" if arch else ""))


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
    except RecursionError:      # the parser gives up after about a thousand levels
        raise ConfigError(f"config file {str(p)!r} is {DEPTH_PROBLEM}") from None
    if nested_too_deeply(raw):
        raise ConfigError(f"config file {str(p)!r} is {DEPTH_PROBLEM}")
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
    """{"train": {"lr": 0.1}} -> {"train.lr": 0.1}; without recursion, as a run's config.json
    may nest as deeply as its parser allowed."""
    out, todo = {}, [(prefix, iter(cfg.items()))]
    while todo:
        path, items = todo[-1]
        for k, v in items:
            if isinstance(v, dict):
                todo.append((f"{path}{k}.", iter(v.items())))
                break
            out[f"{path}{k}"] = v
        else:
            todo.pop()
    return out
