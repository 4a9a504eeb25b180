"""Transfer learning: a torchvision backbone with ImageNet weights and a new head for our classes.

The model resizes, repeats gray to three channels and applies ImageNet normalisation itself,
so it expects 0..1 images: the Trainer feeds it un-normalised data (mean 0, std 1).
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import PRETRAINED_BACKBONES, ConfigError

# backbone: (module path of its ImageNet classifier layer, that layer's input width); parameter
# counts come from the model built on the meta device (dlcore.models.meta_model)
BACKBONES = {
    "resnet18": ("fc", 512),
    "resnet50": ("fc", 2048),
    "vgg16": ("classifier.6", 4096),
    "mobilenet_v3_small": ("classifier.3", 1024),
    "mobilenet_v3_large": ("classifier.3", 1280),
    "efficientnet_b0": ("classifier.1", 1280),
}
assert tuple(BACKBONES) == PRETRAINED_BACKBONES
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_FAILED_DOWNLOADS: dict[str, tuple[float, str]] = {}   # url -> (when, why): no retry every rerun
RETRY_AFTER_S = 60


def _imagenet_weights(backbone: str):
    from torchvision.models import get_model_weights
    return get_model_weights(backbone).DEFAULT


def _cache_path(weights) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def weights_source(model_cfg: dict) -> str:
    """Where this config's backbone weights come from, in words, without loading them."""
    w = model_cfg.get("weights", "imagenet")
    if w == "none":
        return "random init (no pretrained weights)"
    if w != "imagenet":
        return f"local file {w}"
    weights = _imagenet_weights(model_cfg["backbone"])
    label = f"torchvision {type(weights).__name__}.{weights.name}"
    path = _cache_path(weights)
    if path.exists():
        return f"ImageNet ({label}, from the torch hub cache at {path})"
    return f"ImageNet ({label}, to be downloaded from {weights.url} into {path})"


def _how_to_get(backbone: str, weights) -> str:
    return (f"download {weights.url} and either put it at {_cache_path(weights)} (the torch hub "
            f"cache; TORCH_HOME moves it) or set model.weights to its path (\"Local file\" on "
            f"the Model page); or set model.weights to \"none\" (\"Random init\") to train "
            f"{backbone} from a random init")


def load_imagenet_state(backbone: str) -> dict:
    """torchvision's ImageNet state_dict, from the hub cache or downloaded into it."""
    weights = _imagenet_weights(backbone)
    path = _cache_path(weights)
    if path.exists():
        return _read_state_file(path, "model.weights (ImageNet, cached)")
    failed = _FAILED_DOWNLOADS.get(weights.url)
    if failed and time.monotonic() - failed[0] < RETRY_AFTER_S:
        why = failed[1]
    else:
        try:
            return weights.get_state_dict(progress=False, check_hash=True)
        except Exception as e:     # no network, proxy, bad hash: all end the same way for the user
            why = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
            _FAILED_DOWNLOADS[weights.url] = (time.monotonic(), why)
    raise ConfigError(f"model.weights: the ImageNet weights of {backbone} are not in the torch "
                      f"hub cache and could not be downloaded ({why}); {_how_to_get(backbone, weights)}")


def _read_state_file(path, what: str, map_location="cpu") -> dict:
    p = Path(path).expanduser()
    try:
        is_file = p.is_file()
    except OSError as e:        # a folder on the way that cannot be searched, say
        raise ConfigError(f"{what}: {str(p)!r} cannot be read ({e.strerror or e})") from None
    if not is_file:
        raise ConfigError(f"{what}: {str(p)!r} does not exist; give the path of a .pth state_dict "
                          "saved by torch.save(model.state_dict(), path), \"imagenet\" or \"none\"")
    try:
        # weights_only: a file that would run code when unpickled is refused, not executed
        state = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{what}: {str(p)!r} is not a weights file torch can load safely "
                          f"(a state_dict saved with torch.save): {first}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{what}: {str(p)!r} holds no state_dict (a mapping of names to tensors); "
                          "save one with torch.save(model.state_dict(), path)")
    return state


def _load_backbone(net: nn.Module, state: dict, head: str, backbone: str, what: str) -> None:
    """Every weight but the ImageNet classifier's, which the new head replaces."""
    state = {k: v for k, v in state.items() if not k.startswith(head + ".")}
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln]
        detail = lines[0] if lines else str(e).splitlines()[0]
        raise ConfigError(f"{what}: the weights do not fit torchvision's {backbone}: "
                          f"{detail[:200]}") from None
    missing = [k for k in missing if not k.startswith(head + ".")]
    if missing or unexpected:
        names = ", ".join((missing or unexpected)[:3])
        raise ConfigError(f"{what}: the weights do not fit torchvision's {backbone}: "
                          f"{len(missing)} missing and {len(unexpected)} unexpected tensors "
                          f"(e.g. {names}); use a state_dict of torchvision.models.{backbone}")


def check_weights(model: Pretrained, model_cfg: dict) -> None:
    """That the config's weights file (or the cached ImageNet file) fits the backbone, read on
    the meta device: names and shapes only, no weights in memory. ImageNet weights that are
    not cached are left to the training worker to download."""
    w, name = model_cfg["weights"], model_cfg["backbone"]
    if w == "none":
        return
    if w == "imagenet":
        path = _cache_path(_imagenet_weights(name))
        if not path.exists():
            return
        state = _read_state_file(path, "model.weights (ImageNet, cached)", map_location="meta")
    else:
        state = _read_state_file(w, "model.weights", map_location="meta")
    with warnings.catch_warnings():     # "copying into a meta parameter is a no-op": as meant
        warnings.simplefilter("ignore", UserWarning)
        _load_backbone(model.backbone, state, model.head_path, name, "model.weights")


class Pretrained(nn.Module):
    """Resize + gray-to-RGB + ImageNet normalisation, a torchvision backbone, a new head."""

    def __init__(self, cfg, in_shape, num_classes, load_weights: bool = True):
        super().__init__()
        from torchvision.models import get_model

        name = cfg["backbone"]
        if name not in BACKBONES:
            raise ConfigError(f"model.backbone: unknown value {name!r}; allowed: {', '.join(BACKBONES)}")
        if in_shape[0] not in (1, 3):
            raise ConfigError(f"model.arch: pretrained backbones take gray or RGB images; this "
                              f"dataset has {in_shape[0]} channels (allowed: 1 or 3)")
        head_path, width = BACKBONES[name]
        self.size, self.frozen = cfg["input_size"], cfg["freeze"] == "backbone"
        self.backbone = get_model(name, weights=None)
        w = cfg["weights"]
        if not load_weights:
            self.weights_source = "replaced by the checkpoint's weights"
        elif w == "none":
            self.weights_source = weights_source(cfg)
        else:
            state = load_imagenet_state(name) if w == "imagenet" else \
                _read_state_file(w, "model.weights")
            _load_backbone(self.backbone, state, head_path, name, "model.weights")
            self.weights_source = weights_source(cfg)
        if self.frozen:
            for p in self.backbone.parameters():
                p.requires_grad_(False)
        parent_path, _, attr = head_path.rpartition(".")
        parent = self.backbone.get_submodule(parent_path) if parent_path else self.backbone
        new_head = nn.Sequential(nn.Dropout(cfg["dropout"]), nn.Linear(width, num_classes))
        setattr(parent, attr, new_head)
        self.head_path = head_path
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def head(self) -> nn.Module:
        """The new classifier: the only part `init` touches, the only one trained when frozen."""
        return self.backbone.get_submodule(self.head_path)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            # frozen BatchNorm keeps ImageNet's running statistics: our batches must not move them
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x):
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.backbone((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))
