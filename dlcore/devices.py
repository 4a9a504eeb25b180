"""Devices: which one to train on, and the settings that make each fast.

`auto` picks CUDA, then Apple MPS, then the CPU. On CUDA: bf16 autocast, channels_last
convolutions, cudnn autotuning and TF32 matmuls.
"""
from __future__ import annotations

import contextlib

import torch

from .config import ConfigError


def pick_device(pref: str = "auto") -> torch.device:
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if pref == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if pref == "cuda" and not cuda:
        raise ConfigError("train.device: cuda was asked for but no CUDA GPU is available; "
                          f"available: {', '.join(available_devices())}")
    if pref == "mps" and not mps:
        raise ConfigError("train.device: mps was asked for but Apple MPS is not available; "
                          f"available: {', '.join(available_devices())}")
    return torch.device(pref)


def available_devices() -> list[str]:
    found = ["auto", "cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return found


def device_report() -> dict:
    """What this machine offers, for the Train page and `datasets`-style listings."""
    cuda = torch.cuda.is_available()
    return {"auto": str(pick_device("auto")),
            "cuda": torch.cuda.get_device_name(0) if cuda else None,
            "mps": "mps" in available_devices(),
            "cpu_threads": torch.get_num_threads(),
            "torch": torch.__version__}


def autocast_dtype(precision: str, device: torch.device):
    """bf16 where it is asked for, or by default on a CUDA GPU that has it; None means fp32."""
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def autocast(device, dtype):
    """Mixed precision for `dtype`, or nothing at all for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def uses_channels_last(arch: str, device: torch.device) -> bool:
    """Convolutions on a CUDA GPU run faster on NHWC tensors (tensor cores); not worth it on CPU."""
    return device.type == "cuda" and arch in ("cnn", "resnet", "pretrained")


def tune_for(device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True          # fixed shapes: autotune once, reuse
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


def place_model(model, arch: str, compile_model: bool, device: torch.device):
    """The model on its device, the module that runs the steps (compiled when asked: the
    checkpoints keep the plain module's weights), and whether inputs go channels-last."""
    tune_for(device)
    channels_last = uses_channels_last(arch, device)
    model = model.to(device, memory_format=torch.channels_last) if channels_last \
        else model.to(device)
    return model, torch.compile(model) if compile_model else model, channels_last
