"""`python -m dlcore bench`: the tutorial training loop against the engine's, same model and data.

The tutorial loop is the seed notebooks' code: a Dataset that turns one PIL image at a time
into a tensor (ToTensor, Normalize), a DataLoader at batch 32, fp32, `.item()` every step.
The engine keeps the dataset on the device as uint8 and slices batches from a permutation.
Both train the same architecture from the same seed on `mnist-5k`; figures are samples/s.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from .config import resolve_config
from .splits import load_splits
from .models import build_model
from .devices import autocast_dtype, describe_device, pick_device
from .loop import DeviceSplit, evaluate_split, train_one_epoch
from .trainer import Trainer

BENCH_MODELS = {   # the tutorials' DNN, and the other three at their defaults
    "dnn": {"arch": "dnn"},
    "cnn": {"arch": "cnn"},
    "resnet": {"arch": "resnet"},
    "rnn": {"arch": "rnn"},
}
TUTORIAL_BATCH = 32
DEFAULT_BATCH = 256


# ---------------------------------------------------------------- the tutorial loop

class TutorialDataset(torch.utils.data.Dataset):
    """As torchvision's MNIST: a uint8 array, one PIL image made and transformed per item."""

    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image
        a = self.images[i].numpy()
        img = Image.fromarray(a[0], mode="L") if a.shape[0] == 1 else Image.fromarray(a.transpose(1, 2, 0))
        return self.transform(img), int(self.labels[i])


def tutorial_samples_per_s(model, splits, device, batch_size, seconds, lr=1e-3) -> float:
    from torchvision import transforms

    transform = transforms.Compose([transforms.ToTensor(),
                                    transforms.Normalize(splits.mean, splits.std)])
    loader = torch.utils.data.DataLoader(TutorialDataset(splits.train_x, splits.train_y, transform),
                                         batch_size=batch_size, shuffle=True)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.to(device).train()

    def steps(limit_s, min_steps):
        done, samples, start = 0, 0, time.perf_counter()
        running_loss, correct, total = 0.0, 0, 0
        while True:
            for images, labels in loader:
                images, labels = images.to(device), labels.to(device)
                optimizer.zero_grad()
                outputs = model(images)
                loss = criterion(outputs, labels)
                loss.backward()
                optimizer.step()
                running_loss += loss.item()
                _, predicted = torch.max(outputs.data, 1)
                total += labels.size(0)
                correct += (predicted == labels).sum().item()
                done, samples = done + 1, samples + len(labels)
                if done >= min_steps and time.perf_counter() - start >= limit_s:
                    return samples / (time.perf_counter() - start)

    steps(0, 5)                                     # warm-up
    return steps(seconds, 20)


# ---------------------------------------------------------------- the engine's loop

def _epoch(trainer, max_batches: int | None = None):
    """One pass of the engine's loop on a Trainer's model, data and optimizer."""
    s = trainer.state
    return train_one_epoch(trainer.step_model, trainer.train_split, s.optimizer, s.scheduler,
                           s.batch_size, s.gen, amp_dtype=trainer.amp_dtype,
                           max_batches=max_batches)


def engine_samples_per_s(cfg, model, splits, device, seconds) -> float:
    with tempfile.TemporaryDirectory() as d:
        trainer = Trainer(cfg, Path(d), device, splits, model, progress=False, log=lambda s: None)
        bs = cfg["train"]["batch_size"]
        _epoch(trainer, 5)      # warm-up (cudnn autotuning, compile)
        samples, start, epoch = 0, time.perf_counter(), 0
        while True:
            epoch += 1
            steps = max(1, min(trainer.state.batches, 20))
            _epoch(trainer, steps)   # ends in .item(): synchronised
            samples += steps * bs
            if time.perf_counter() - start >= seconds:
                return samples / (time.perf_counter() - start)


def bench_arch(arch, device, seconds, data_root=None, compile_model=False) -> dict:
    base = {"model": BENCH_MODELS[arch],
            "train": {"device": device.type, "seed": 0, "compile": compile_model}}
    cfg = resolve_config(base)
    splits = load_splits(cfg["data"], 0, data_root)

    def fresh_model():
        torch.manual_seed(0)
        return build_model(cfg["model"], splits.info.shape, len(splits.classes))

    out = {"batch_size": TUTORIAL_BATCH, "default_batch_size": DEFAULT_BATCH}
    out["tutorial_samples_per_s"] = tutorial_samples_per_s(fresh_model(), splits, device,
                                                           TUTORIAL_BATCH, seconds)
    cfg["train"]["batch_size"] = TUTORIAL_BATCH
    out["engine_samples_per_s"] = engine_samples_per_s(cfg, fresh_model(), splits, device, seconds)
    cfg["train"]["batch_size"] = DEFAULT_BATCH
    out["engine_default_samples_per_s"] = engine_samples_per_s(cfg, fresh_model(), splits, device,
                                                               seconds)
    return out


# ---------------------------------------------------------------- time to accuracy

TTA_CONFIG = {
    "data": {"dataset": "fashion-mnist", "val_fraction": 0.05,
             "augment": {"crop_padding": 2, "hflip": True, "rotation": 0}},
    "model": {"arch": "resnet", "stage_blocks": [1, 1, 1], "base_width": 32},
    "train": {"batch_size": 256, "optimizer": "adamw", "lr": 0.004, "weight_decay": 0.05,
              "schedule": "onecycle", "epochs": 12, "seed": 0},
}


def time_to_accuracy(target: float, device, data_root=None, max_epochs: int | None = None,
                     log=print) -> dict:
    """Train TTA_CONFIG and time the training until the test accuracy reaches `target`."""
    cfg = json.loads(json.dumps(TTA_CONFIG))
    cfg["train"]["device"] = device.type
    if max_epochs:
        cfg["train"]["epochs"] = max_epochs
    cfg = resolve_config(cfg)
    splits = load_splits(cfg["data"], 0, data_root)
    torch.manual_seed(0)
    model = build_model(cfg["model"], splits.info.shape, len(splits.classes))
    with tempfile.TemporaryDirectory() as d:
        trainer = Trainer(cfg, Path(d), device, splits, model, progress=False, log=lambda s: None)
        test = DeviceSplit(splits.test_x.to(device), splits.test_y.to(device),
                           trainer.val_split.norm)
        trained, acc = 0.0, 0.0
        for epoch in range(1, cfg["train"]["epochs"] + 1):
            start = time.perf_counter()
            _epoch(trainer)
            trained += time.perf_counter() - start
            _, acc = evaluate_split(trainer.model, test, 2 * trainer.state.batch_size,
                                    trainer.amp_dtype)     # not counted as training time
            log(f"  epoch {epoch}: test accuracy {acc:.4f} after {trained:.1f}s of training")
            if acc >= target:
                return {"target": target, "reached": True, "seconds": round(trained, 2),
                        "epochs": epoch, "test_accuracy": acc, "config": cfg}
    return {"target": target, "reached": False, "seconds": round(trained, 2),
            "epochs": cfg["train"]["epochs"], "test_accuracy": acc, "config": cfg}


# ---------------------------------------------------------------- the command

def run_bench(archs, seconds=3.0, json_path=None, tta=None, data_root=None, device="auto",
              compile_model=False, log=print) -> dict:
    dev = pick_device(device)
    amp = autocast_dtype("auto", dev)
    log(f"device: {describe_device(dev)}  torch {torch.__version__}  threads {torch.get_num_threads()}  "
        f"precision {'bf16 autocast' if amp else 'fp32'}  compile {compile_model}")
    log(f"data: mnist-5k training split; tutorial loop at batch {TUTORIAL_BATCH} "
        f"(PIL + ToTensor per sample, DataLoader), engine at {TUTORIAL_BATCH} and {DEFAULT_BATCH}; "
        f"about {seconds:g}s timed per figure")
    header = (f"{'arch':<8} {'tutorial/s':>11} {'engine/s':>10} {'ratio':>6} "
              f"{'engine@' + str(DEFAULT_BATCH) + '/s':>13} {'ratio':>6}")
    log(header)
    results = {"device": describe_device(dev), "torch": torch.__version__,
               "threads": torch.get_num_threads(), "precision": "bf16" if amp else "fp32",
               "compile": compile_model, "seconds_per_figure": seconds}
    for arch in archs:
        r = bench_arch(arch, dev, seconds, data_root, compile_model)
        results[arch] = r
        t, e, d = r["tutorial_samples_per_s"], r["engine_samples_per_s"], r["engine_default_samples_per_s"]
        log(f"{arch:<8} {t:>11,.0f} {e:>10,.0f} {e / t:>5.1f}x {d:>13,.0f} {d / t:>5.1f}x")
    if tta is not None:
        log(f"time to {tta:.1%} test accuracy on Fashion-MNIST:")
        results["time_to_accuracy"] = time_to_accuracy(tta, dev, data_root, log=log)
        r = results["time_to_accuracy"]
        log(f"{'reached' if r['reached'] else 'NOT reached'}: {r['test_accuracy']:.4f} after "
            f"{r['seconds']}s of training ({r['epochs']} epochs)")
    if json_path:
        from .runs import write_json_atomic
        write_json_atomic(Path(json_path), results)
    return results

