"""The five architectures, built from a resolved `model` config through one registry.

Input shape and class count come from the dataset. `init_weights` applies the tutorials'
init methods. Sizes come without building: `meta_model` builds on the meta device (no memory,
no weights), `model_summary` gives the per-layer table of `python -m dlcore summary` from it.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .config import ConfigError, INITS, check_path
from .pretrained import Pretrained, check_weights, weights_source
from .checkpoints import CheckpointError

ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "gelu": nn.GELU,
               "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


class DNN(nn.Module):
    """Fully connected: flatten, then Linear [BatchNorm] act [Dropout] per hidden layer."""

    def __init__(self, cfg, in_shape, num_classes):
        super().__init__()
        width = in_shape[0] * in_shape[1] * in_shape[2]
        self.net = nn.Sequential(*_fc_head(width, cfg["hidden_dims"], num_classes, cfg))

    def forward(self, x):
        return self.net(x)


class CNN(nn.Module):
    """VGG-style: blocks of conv-act-conv-act-maxpool, then fully connected layers."""

    def __init__(self, cfg, in_shape, num_classes):
        super().__init__()
        c, h, w = in_shape
        if len(cfg["blocks"]) > 0 and min(h, w) >> len(cfg["blocks"]) < 1:
            fit = max(min(h, w).bit_length() - 1, 0)
            raise ConfigError(f"model.blocks: {len(cfg['blocks'])} blocks halve a {h}x{w} image "
                              f"below one pixel; at most {fit} blocks fit this dataset")
        act, bn = ACTIVATIONS[cfg["activation"]], cfg["batchnorm"]
        layers = []
        for hidden, out in cfg["blocks"]:
            for a, b in ((c, hidden), (hidden, out)):
                layers.append(nn.Conv2d(a, b, 3, padding=1))
                if bn:
                    layers.append(nn.BatchNorm2d(b))
                layers.append(act())
            layers.append(nn.MaxPool2d(2))
            c, h, w = out, h // 2, w // 2
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(*_fc_head(c * h * w, cfg["fc_dims"], num_classes, cfg))

    def forward(self, x):
        return self.classifier(self.features(x))


def _fc_head(width, dims, num_classes, cfg) -> list:
    """Flatten, a fully connected block per width in `dims`, then the output layer."""
    layers = [nn.Flatten()]
    for d in dims:
        layers += _fc_block(width, d, cfg)
        width = d
    return layers + [nn.Linear(width, num_classes)]


def _fc_block(n_in, n_out, cfg):
    layers = [nn.Linear(n_in, n_out)]
    if cfg["batchnorm"]:
        layers.append(nn.BatchNorm1d(n_out))
    layers.append(ACTIVATIONS[cfg["activation"]]())
    if cfg["dropout"] > 0:
        layers.append(nn.Dropout(cfg["dropout"]))
    return layers


class BasicBlock(nn.Module):
    def __init__(self, n_in, n_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(n_in, n_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(n_out)
        self.conv2 = nn.Conv2d(n_out, n_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(n_out)
        self.relu = nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or n_in != n_out:
            self.shortcut = nn.Sequential(nn.Conv2d(n_in, n_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(n_out))

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet with basic blocks and a small-image stem (3x3 conv, no max-pool)."""

    def __init__(self, cfg, in_shape, num_classes):
        super().__init__()
        width = cfg["base_width"]
        self.stem = nn.Sequential(nn.Conv2d(in_shape[0], width, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        stages, n_in = [], width
        for i, n in enumerate(cfg["stage_blocks"]):
            n_out = width * 2 ** i
            blocks = [BasicBlock(n_in if j == 0 else n_out, n_out, 2 if (i > 0 and j == 0) else 1)
                      for j in range(n)]
            stages.append(nn.Sequential(*blocks))
            n_in = n_out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(n_in, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.stages(self.stem(x))))


class RNN(nn.Module):
    """Reads an image row by row: a sequence of H steps of C*W features; classifies the last."""
    CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}

    def __init__(self, cfg, in_shape, num_classes):
        super().__init__()
        c, h, w = in_shape
        self.rnn = self.CELLS[cfg["cell"]](
            c * w, cfg["hidden_size"], num_layers=cfg["num_layers"], batch_first=True,
            bidirectional=cfg["bidirectional"],
            dropout=cfg["dropout"] if cfg["num_layers"] > 1 else 0.0)
        self.dropout = nn.Dropout(cfg["dropout"])
        self.fc = nn.Linear(cfg["hidden_size"] * (2 if cfg["bidirectional"] else 1), num_classes)

    def forward(self, x):
        b, c, h, w = x.shape
        seq = x.permute(0, 2, 1, 3).reshape(b, h, c * w)
        out, _ = self.rnn(seq)
        return self.fc(self.dropout(out[:, -1]))


MODELS = {"dnn": DNN, "cnn": CNN, "resnet": ResNet, "rnn": RNN, "pretrained": Pretrained}


def list_models() -> list[str]:
    return list(MODELS)


MAX_PARAMETERS = 200_000_000   # 0.8 GB of fp32 weights, ~3 GB with Adam's state and gradients


def meta_model(model_cfg: dict, in_shape, num_classes: int, check_weights_file: bool = True
               ) -> nn.Module:
    """The model of a resolved `model` config on the meta device: exact sizes and shapes in
    milliseconds, no memory, no weights downloaded or loaded. Refuses an oversized model, and
    a pretrained backbone's weights file that does not fit (read as names and shapes only)."""
    arch = model_cfg.get("arch")
    if arch not in MODELS:
        raise ConfigError(f"model.arch: unknown architecture {arch!r}; allowed: {', '.join(MODELS)}")
    with torch.device("meta"):
        if arch == "pretrained":
            model = Pretrained(model_cfg, tuple(in_shape), num_classes, load_weights=False)
        else:
            model = MODELS[arch](model_cfg, tuple(in_shape), num_classes)
    n = sum(count_parameters(model))
    if n > MAX_PARAMETERS:
        raise ConfigError(f"model: {n:,} parameters for a {'x'.join(map(str, in_shape))} "
                          f"input is too large; at most {MAX_PARAMETERS:,} (use fewer or narrower layers)")
    if arch == "pretrained":
        if check_weights_file:
            check_weights(model, model_cfg)
        model.weights_source = weights_source(model_cfg)
    return model


def model_summary(model_cfg: dict, in_shape, num_classes: int) -> dict:
    """`summarize` of the meta model: what the Model page and `summary` show, nothing built."""
    return summarize(meta_model(model_cfg, in_shape, num_classes), in_shape)


def build_model(model_cfg: dict, in_shape, num_classes: int, load_weights: bool = True) -> nn.Module:
    """Build and initialise the model of a resolved `model` config.

    `load_weights=False` skips a pretrained backbone's weights, for a checkpoint to replace.
    """
    arch = model_cfg.get("arch")
    meta_model(model_cfg, in_shape, num_classes, check_weights_file=False)   # refuses the oversized
    if arch == "pretrained":
        if load_weights and model_cfg.get("weights") not in ("imagenet", "none"):
            check_path("model.weights", model_cfg.get("weights"))   # else an OSError, not a message
        model = Pretrained(model_cfg, tuple(in_shape), num_classes, load_weights=load_weights)
        init_weights(model.head, model_cfg.get("init", "default"))   # the backbone keeps its weights
        return model
    model = MODELS[arch](model_cfg, tuple(in_shape), num_classes)
    init_weights(model, model_cfg.get("init", "default"))
    return model


def init_weights(model: nn.Module, method: str) -> None:
    """The tutorials' inits on every linear, conv and recurrent weight; biases zeroed.

    `default` keeps PyTorch's own initialisation (biases included).
    """
    if method not in INITS:
        raise ConfigError(f"model.init: unknown value {method!r}; allowed: {', '.join(INITS)}")
    if method == "default":
        return
    fill = {"gaussian": lambda t: nn.init.normal_(t, 0.0, 1.0),
            "xavier": nn.init.xavier_normal_,
            "kaiming": nn.init.kaiming_normal_,
            "zeros": nn.init.zeros_}[method]
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                fill(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.RNNBase):
                for name, p in m.named_parameters():
                    if name.startswith("weight"):
                        fill(p)
                    elif name.startswith("bias"):
                        nn.init.zeros_(p)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, frozen) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return trainable, frozen


def summarize(model: nn.Module, in_shape) -> dict:
    """Per-layer rows {name, type, output_shape, params} from one forward pass of a dummy batch
    (on the model's own device: the meta device costs nothing); the counts and weight memory."""
    rows, hooks = [], []

    def hook(name):
        def fn(module, inputs, output):
            out = output[0] if isinstance(output, tuple) else output
            rows.append({"name": name, "type": module.__class__.__name__,
                         "output_shape": [-1, *list(out.shape[1:])],
                         "params": sum(p.numel() for p in module.parameters(recurse=False))})
        return fn

    for name, m in model.named_modules():
        if name and (not list(m.children()) or isinstance(m, nn.RNNBase)):
            hooks.append(m.register_forward_hook(hook(name)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(2, *in_shape, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    trainable, frozen = count_parameters(model)
    out = {"rows": rows, "trainable": trainable, "frozen": frozen,
           "input_shape": [-1, *list(in_shape)],
           "layers_with_params": sum(1 for r in rows if r["params"]),
           "weights_mb": 4 * (trainable + frozen) / 1e6}     # float32, without optimiser state
    if getattr(model, "weights_source", None):
        out["weights"] = model.weights_source
    return out


def summary_rows(summary: dict) -> list[dict]:
    """The per-layer table as rows for a page: the input first, then every layer."""
    rows = [{"layer": "input", "type": "", "output shape": str(summary["input_shape"]),
             "parameters": 0}]
    return rows + [{"layer": r["name"], "type": r["type"], "output shape": str(r["output_shape"]),
                    "parameters": r["params"]} for r in summary["rows"]]


# The seed tutorials' models, and the dataset whose input shape each was written for.
TUTORIAL_MODELS = {
    "Tutorial DNN": ({"arch": "dnn", "hidden_dims": [512, 256, 128], "batchnorm": True,
                      "dropout": 0.2, "activation": "relu", "init": "kaiming"}, "mnist"),
    "Tutorial CNN": ({"arch": "cnn", "blocks": [[16, 32], [64, 128], [128, 256]],
                      "fc_dims": [2048, 256], "batchnorm": False, "dropout": 0.2,
                      "activation": "relu", "init": "kaiming"}, "cifar10"),
}


def tutorial_counts(model_cfg: dict, in_shape) -> list[tuple[str, object, int]]:
    """(name, DatasetInfo, trainable parameters there) of each tutorial model that `model_cfg`
    is, counted on the tutorial's own input when `in_shape` is another one."""
    from .config import resolve_config
    from .datasets import BUILTIN

    out = []
    for name, (section, dataset) in TUTORIAL_MODELS.items():
        info = BUILTIN[dataset]
        if resolve_config({"model": section})["model"] == model_cfg and tuple(in_shape) != info.shape:
            out.append((name, info, model_summary(model_cfg, info.shape, len(info.classes))["trainable"]))
    return out


def format_summary(summary: dict) -> str:
    lines = [f"{'layer':<28} {'type':<14} {'output shape':<22} {'params':>12}"]
    lines.append(f"{'input':<28} {'':<14} {str(summary['input_shape']):<22} {0:>12,}")
    for r in summary["rows"]:
        lines.append(f"{r['name']:<28} {r['type']:<14} {str(r['output_shape']):<22} {r['params']:>12,}")
    if summary.get("weights"):
        lines.append(f"weights: {summary['weights']}")
    if summary["frozen"]:
        lines.append(f"frozen parameters: {summary['frozen']}")
    lines.append(f"trainable parameters: {summary['trainable']}")
    return "\n".join(lines)


# ---------------------------------------------------------------- checkpoints

MAX_CLASS_NAME = 1000


def checked_checkpoint(ckpt, name: str = "checkpoint") -> dict:
    """A loaded checkpoint whose rebuild values are checked: the config (resolved by the config's
    own rules), classes, input shape, mean and std. A checkpoint travels (shared, copied, restored),
    so a bad value is a CheckpointError naming the field, never something later code trips on."""
    from .config import resolve_config

    def damaged(what):
        return CheckpointError(f"{name}: damaged checkpoint: {what}")

    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("config"), dict):
        raise damaged("it holds no config (a dictionary of data, model and train)")
    try:
        cfg = resolve_config(ckpt["config"])
    except ConfigError as e:
        raise damaged(f"its config is invalid: {e}") from None
    classes = ckpt.get("classes")
    if (not isinstance(classes, (list, tuple)) or len(classes) < 2
            or not all(isinstance(c, str) and len(c) <= MAX_CLASS_NAME for c in classes)):
        raise damaged(f"classes must be a list of at least 2 names (text of at most "
                      f"{MAX_CLASS_NAME} characters), got {_short(classes)}")
    shape = ckpt.get("input_shape")
    if (not isinstance(shape, (list, tuple)) or len(shape) != 3
            or not all(type(s) is int and 1 <= s <= 4096 for s in shape) or shape[0] > 16):
        raise damaged(f"input_shape must be [channels, height, width] (1 to 16 channels, sides "
                      f"of 1 to 4096 pixels), got {_short(shape)}")
    stats = {}
    for key in ("mean", "std"):
        v = ckpt.get(key)
        ok = (isinstance(v, (list, tuple)) and len(v) == shape[0]
              and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                      for x in v))
        if not ok or (key == "std" and min(v) <= 0):
            raise damaged(f"{key} must be {shape[0]} finite number(s), one per channel"
                          f"{' (more than 0)' if key == 'std' else ''}, got {_short(v)}")
        stats[key] = [float(x) for x in v]
    return {**ckpt, "config": cfg, "classes": list(classes), "input_shape": list(shape), **stats}


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
