"""Portable model files from a run's best checkpoint: ONNX, and safetensors with a JSON config.

The ONNX graph takes float images in 0..1 ([N, C, H, W], any N) and applies the run's
normalisation itself; it outputs `logits` and softmax `probabilities`. The safetensors file
holds the state_dict; the JSON beside it holds what rebuilds the model and prepares its input.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import torch
from torch import nn

from .config import ConfigError
from .export_code import generate_code
from .models import checked_checkpoint
from .runfiles import read_json
from .checkpoints import CheckpointError, load_checkpoint
from .runs import write_bytes_atomic

FORMATS = ("onnx", "safetensors")
# the oldest opset torch.export's ONNX exporter writes; onnxruntime runs it since 1.14
ONNX_OPSET = 18
CONFIG_FORMAT = "dlcore-safetensors-1"


class Portable(nn.Module):
    """The run's model with its input normalisation and a softmax, for other runtimes."""

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, image):
        logits = self.model((image - self.mean) / self.std)
        return logits, torch.softmax(logits, dim=1)


def _model(ckpt: dict) -> nn.Module:
    from .checkpoints import load_model
    model, _ = load_model(ckpt)
    return model.float().eval()


def export_onnx_bytes(run_dir) -> bytes:
    """The best checkpoint as an ONNX model (opset 18, any batch size), as bytes."""
    try:
        importlib.import_module("onnx")
        importlib.import_module("onnxscript")     # torch's exporter builds the graph with it
    except ImportError as e:
        raise ConfigError(f"--format onnx: the {e.name or 'onnx'} package is not installed; "
                          f"pip install onnx onnxscript") from None
    ckpt = run_checkpoint(run_dir)
    wrapped = Portable(_model(ckpt), ckpt["mean"], ckpt["std"]).eval()
    example = (torch.rand(2, *ckpt["input_shape"]),)
    batch = ({0: torch.export.Dim("batch")},)
    try:
        with torch.no_grad():
            # strict (TorchDynamo) capture: the non-strict one sees nn.RNN/LSTM/GRU's own
            # bookkeeping of its flat weights as module state changed during export and warns
            program = torch.export.export(wrapped, example, dynamic_shapes=batch, strict=True)
            onnx_program = torch.onnx.export(
                program, example, input_names=["image"], output_names=["logits", "probabilities"],
                opset_version=ONNX_OPSET, dynamic_shapes=batch, dynamo=True, verbose=False)
    except Exception as e:   # an exporter limitation is one clear line, not a traceback
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise ConfigError(f"--format onnx: this {ckpt['config']['model']['arch']} model cannot be "
                          f"exported to ONNX ({e.__class__.__name__}: {first})") from None
    return _with_metadata(onnx_program.model_proto, ckpt, Path(run_dir).name)


def _with_metadata(model, ckpt: dict, run_id: str) -> bytes:
    """Classes and preprocessing as ONNX metadata, so the file explains its own input."""
    for key, value in _description(ckpt, run_id).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    return model.SerializeToString()


def _description(ckpt: dict, run_id: str) -> dict:
    return {"run": run_id, "classes": list(ckpt["classes"]),
            "input_shape": list(ckpt["input_shape"]), "mean": list(ckpt["mean"]),
            "std": list(ckpt["std"]), "epoch": ckpt.get("epoch"),
            "input": "float32 images in 0..1, [N, C, H, W]; the graph normalises with mean/std",
            "outputs": "logits and softmax probabilities, [N, classes]"}


def export_safetensors_bytes(run_dir) -> tuple[bytes, bytes]:
    """(safetensors weights, JSON config) of the best checkpoint."""
    from safetensors.torch import save

    ckpt = run_checkpoint(run_dir)
    state = {k: v.detach().contiguous().clone() for k, v in ckpt["model_state"].items()}
    weights = save(state, metadata={"format": CONFIG_FORMAT, "run": Path(run_dir).name})
    meta = {"format": CONFIG_FORMAT, **_description(ckpt, Path(run_dir).name),
            "input": "float32 images in 0..1, [N, C, H, W], normalised as (x - mean) / std",
            "outputs": "logits, [N, classes]", "config": ckpt["config"],
            "val_loss": ckpt.get("val_loss")}
    return weights, (json.dumps(meta, indent=2) + "\n").encode()


def load_safetensors(weights_path, config_path=None) -> tuple[nn.Module, dict]:
    """Rebuild the model from a safetensors file and its JSON config; returns (model, config)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .models import build_model

    weights_path = Path(weights_path)
    config_path = Path(config_path) if config_path else weights_path.with_suffix(".json")
    try:
        meta = json.loads(config_path.read_text(encoding="utf-8"))
        model_cfg = dict(meta["config"]["model"], init="default")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{config_path.name}: not a readable model config "
                              f"({e.__class__.__name__}: {str(e)[:160]})") from None
    try:
        state = load_file(str(weights_path))
    except (OSError, SafetensorError) as e:
        raise CheckpointError(f"{weights_path.name}: damaged or missing safetensors file "
                              f"({str(e)[:160]})") from None
    model = build_model(model_cfg, tuple(meta["input_shape"]), len(meta["classes"]),
                        load_weights=False)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{weights_path.name}: the weights do not fit the config's model: "
                              f"{str(e).splitlines()[0][:200]}") from None
    return model.eval(), meta


# what a run directory holds: an export never writes over one of them
RUN_FILES = ("config.json", "status.json", "metrics.jsonl", "best.pt", "last.pt", "eval.json",
             "meta.json", "layers.jsonl", "worker.log", "STOP", ".lock", "tb")


def _check_targets(run_dir: Path, fmt: str, base: Path) -> None:
    """The files an export writes never collide with each other or with the run's own files."""
    if fmt == "safetensors" and base.suffix.lower() == ".json":
        raise ConfigError(f"--out: {str(base)!r} ends in .json, the name of the config written "
                          "beside the weights; give the weights file another name, e.g. "
                          f"{str(base.with_suffix('.safetensors'))!r}")
    for path in [base] + ([base.with_suffix(".json")] if fmt == "safetensors" else []):
        refuse_run_file(run_dir, path)


def refuse_run_file(run_dir: Path, path: Path) -> None:
    """An export (or exported code) never writes over one of the run's own files."""
    if Path(path).resolve().parent == Path(run_dir).resolve() and Path(path).name in RUN_FILES:
        raise ConfigError(f"--out: {str(path)!r} would overwrite the run's own {Path(path).name}; "
                          "write the export elsewhere (by default it goes to RUN_DIR/export/)")


def export_run(run_dir, fmt: str, out=None) -> list[Path]:
    """Write the export next to the run (or at `out`); returns the files written."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format: unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")
    run_dir = Path(run_dir)
    base = Path(out) if out else run_dir / "export" / f"model.{fmt}"
    _check_targets(run_dir, fmt, base)
    if fmt == "onnx":
        files = {base: export_onnx_bytes(run_dir)}
    else:
        weights, meta = export_safetensors_bytes(run_dir)
        files = {base: weights, base.with_suffix(".json"): meta}
    for path, data in files.items():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(path, data)
        except OSError as e:
            raise ConfigError(f"--out: cannot write {str(path)!r}: {e.strerror or e}") from None
    return list(files)


def safetensors_zip(run_dir) -> bytes:
    """The safetensors weights and their JSON config in one zip, for a single download."""
    import io
    import zipfile

    weights, config = export_safetensors_bytes(run_dir)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("model.safetensors", weights)
        z.writestr("model.json", config)
    return buf.getvalue()


def config_code(cfg: dict, data_root=None) -> str:
    """The script for a config that has not been trained yet (the Model page's working one).

    Mean and std are computed from the training split as a run would; `normalize: false`
    gives 0 and 1, and a pretrained backbone normalises inside the model.
    """
    from .config import resolve_config
    from .splits import load_splits

    cfg = resolve_config(cfg)
    splits = load_splits(cfg["data"], cfg["train"]["seed"], data_root)
    plain = not cfg["data"]["normalize"] or cfg["model"]["arch"] == "pretrained"
    mean = (0.0,) * len(splits.mean) if plain else splits.mean
    std = (1.0,) * len(splits.std) if plain else splits.std
    ckpt = {"config": cfg, "classes": list(splits.classes), "input_shape": list(splits.info.shape),
            "mean": list(mean), "std": list(std)}

    return generate_code(ckpt, run_id="not trained yet", script="train_model.py")


def run_checkpoint(run_dir) -> dict:
    """The run's best checkpoint (else last), loaded weights-only and checked."""
    from .checkpoints import best_checkpoint

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise ConfigError(f"RUN_DIR: {str(run_dir)!r} is not a run directory (no config.json)")
    path = best_checkpoint(run_dir)
    return checked_checkpoint(load_checkpoint(path), path.name)


def export_code(run_dir) -> str:
    """The standalone training script of a run, as text."""
    run_dir = Path(run_dir)
    ckpt = run_checkpoint(run_dir)
    try:
        name = read_json(run_dir / "meta.json").get("name") if (run_dir / "meta.json").exists() else None
    except (OSError, ValueError):
        name = None
    name = name if isinstance(name, str) and name else run_dir.name
    slug = "".join(ch if ch.isascii() and ch.isalnum() else "_" for ch in name).strip("_")
    return generate_code(ckpt, run_id=run_dir.name, script=f"train_{slug[:40] or 'run'}.py")
