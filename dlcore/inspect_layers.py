"""Per-layer statistics while training: activation mean/std and weight-gradient norm per epoch.

Measured on one fixed probe batch (a forward and a backward pass, no optimizer step) and
appended to the run's `layers.jsonl`, one line per epoch; epoch 0 shows the initialisation.
"""
from __future__ import annotations

import contextlib
import math
from pathlib import Path

import torch
from torch import nn

from .augment import normalize
from .devices import autocast
from .runfiles import DamagedFile, layers_row, printable, read_jsonl
from .runs import append_jsonl

PROBE_SIZE = 256
LAYERS_FILE = "layers.jsonl"
LEAF_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.modules.batchnorm._BatchNorm, nn.RNNBase,
              nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.Tanh, nn.Sigmoid)


class LayerProbe:
    """Records one line of layer statistics per call to `record(epoch)`."""

    def __init__(self, model: nn.Module, x_u8: torch.Tensor, y: torch.Tensor, mean, std,
                 device, amp_dtype=None, path: Path | None = None, channels_last=False,
                 batch_size: int | None = None):
        self.model, self.device, self.amp_dtype, self.path = model, device, amp_dtype, path
        self.mean, self.std, self.channels_last = mean, std, channels_last
        # the first images of the (already shuffled) training split: the same batch every epoch
        self.all_x, self.all_y = x_u8, y
        self.resize(PROBE_SIZE if batch_size is None else batch_size)
        self.layers = [(n, m) for n, m in model.named_modules() if isinstance(m, LEAF_TYPES)]
        # cuDNN's RNN backward refuses eval mode; every other layer keeps its fast kernels
        self.cudnn = not any(isinstance(m, nn.RNNBase) for m in model.modules())

    def resize(self, batch_size: int) -> None:
        """A forward and backward pass like a training step's: at most the training batch."""
        n = max(1, min(PROBE_SIZE, batch_size))
        self.x_u8, self.y = self.all_x[:n], self.all_y[:n]

    def measure(self) -> list[dict]:
        """One forward+backward on the probe batch; the model's mode and gradients are restored."""
        model = self.model
        was_training = model.training
        saved = [(p, p.grad) for p in model.parameters()]
        for p, _ in saved:
            p.grad = None
        acts: dict[str, torch.Tensor] = {}

        def hook(name):
            def fn(module, inputs, output):
                out = output[0] if isinstance(output, tuple) else output
                if name not in acts and torch.is_tensor(out):
                    o = out.detach().float()
                    acts[name] = torch.stack([o.mean(), o.std() if o.numel() > 1 else o.sum() * 0])
            return fn

        handles = [m.register_forward_hook(hook(n)) for n, m in self.layers]
        try:
            # eval mode: no dropout noise and no update of BatchNorm's running statistics
            model.eval()
            x = self.x_u8.to(self.device).float().div_(255.0)
            x = normalize(x, self.mean, self.std)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            plain_rnn = contextlib.nullcontext() if self.cudnn else \
                torch.backends.cudnn.flags(enabled=False)
            with plain_rnn, autocast(self.device, self.amp_dtype):
                logits = model(x)
                loss = nn.functional.cross_entropy(logits.float(), self.y.to(logits.device))
            if loss.requires_grad:     # a fully frozen model has no gradient to measure
                loss.backward()
            rows, stats = [], []
            for name, m in self.layers:
                grads = [p.grad for pn, p in m.named_parameters(recurse=False)
                         if pn.startswith("weight") and p.grad is not None]
                g = torch.sqrt(sum((gr.float() ** 2).sum() for gr in grads)) if grads else None
                a = acts.get(name)
                stats.append((name, m, a, g))
            values = [v for _, _, a, g in stats for v in (a, g) if v is not None]
            flat = torch.cat([v.reshape(-1) for v in values]).tolist() if values else []
            it = iter(flat)
            for name, m, a, g in stats:
                am, asd = (next(it), next(it)) if a is not None else (None, None)
                gn = next(it) if g is not None else None
                if a is None:
                    continue    # a layer the forward pass did not reach
                rows.append({"name": name, "type": type(m).__name__, "act_mean": _num(am),
                             "act_std": _num(asd), "grad_norm": _num(gn)})
            return rows
        finally:
            for h in handles:
                h.remove()
            for p, g in saved:
                p.grad = g
            model.train(was_training)

    def record(self, epoch: int) -> dict:
        line = {"epoch": int(epoch), "layers": self.measure()}
        if self.path is not None:
            append_jsonl(self.path, line)
        return line


def _num(v):
    """JSON has no NaN or infinity: an exploded statistic becomes null (shown as a gap)."""
    if v is None or not math.isfinite(v):
        return None
    return float(f"{v:.6g}")


def read_layer_lines(run_dir) -> list[dict]:
    """The lines of RUN_DIR/layers.jsonl, each checked ([] when absent): a half-written last
    line is skipped, a damaged line elsewhere raises DamagedFile, as for metrics.jsonl."""
    return read_jsonl(Path(run_dir) / LAYERS_FILE, layers_row)


def layer_series(run_dir) -> dict:
    """Per-layer series over epochs: {epochs, layers: [{name, type, act_mean, act_std,
    grad_norm}], damaged}, each series a list aligned with `epochs` (None where a value is
    missing). A damaged layers.jsonl gives no series and says why in `damaged` (else None)."""
    try:
        lines = read_layer_lines(run_dir)
    except (OSError, DamagedFile) as e:
        why = str(e) if isinstance(e, DamagedFile) else f"{e.__class__.__name__}: {e}"
        return {"epochs": [], "layers": [],
                "damaged": printable(f"{LAYERS_FILE} is damaged ({why})")}
    by_epoch = {}
    for row in lines:
        by_epoch[row["epoch"]] = row     # a resumed epoch's newer line wins
    epochs = sorted(by_epoch)
    names: dict[str, str] = {}
    for e in epochs:
        for layer in by_epoch[e]["layers"]:
            names.setdefault(layer["name"], layer.get("type") or "")
    layers = []
    for name, typ in names.items():
        series = {"name": name, "type": typ, "act_mean": [], "act_std": [], "grad_norm": []}
        for e in epochs:
            found = next((x for x in by_epoch[e]["layers"] if x["name"] == name), {})
            for key in ("act_mean", "act_std", "grad_norm"):
                series[key].append(found.get(key))
        layers.append(series)
    return {"epochs": epochs, "layers": layers, "damaged": None}
