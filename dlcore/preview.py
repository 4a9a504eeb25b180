"""What the Data page shows: raw samples and an augmented mini-batch, as pictures and shapes."""
from __future__ import annotations

import numpy as np
import torch

from .augment import augment_batch, normalize
from .config import resolve_config
from .display import image_grid
from .splits import load_splits


def raw_samples(data_cfg: dict, n: int = 32, seed: int = 0, data_root=None) -> dict:
    """n training images, evenly over the classes where possible: grid picture and labels."""
    data_cfg = resolve_config({"data": data_cfg})["data"]
    splits = load_splits(data_cfg, 0, data_root)
    y = splits.train_y.numpy()
    rng = np.random.default_rng(seed)
    k = len(splits.classes)
    per = max(1, n // k)
    picks = []
    for c in range(k):
        idx = np.flatnonzero(y == c)
        picks.extend(rng.choice(idx, size=min(per, len(idx)), replace=False).tolist())
    picks = picks[:n]
    x = splits.train_x[torch.as_tensor(picks, dtype=torch.long)]
    return {"image": image_grid(x.numpy(), ncols=min(8, max(1, len(picks)))),
            "labels": [splits.classes[int(y[i])] for i in picks],
            "shape": list(splits.info.shape), "mean": splits.mean, "std": splits.std}


def augmented_batch(data_cfg: dict, batch_size: int = 32, seed: int = 0, data_root=None,
                    show: int = 32) -> dict:
    """One training mini-batch as the loop makes it: augmented, then normalised.

    Returns the picture of the first `show` images (normalised images are stretched to
    0..255 for display), the batch tensor's shape and dtype, and its value statistics.
    """
    data_cfg = resolve_config({"data": data_cfg})["data"]
    splits = load_splits(data_cfg, 0, data_root)
    gen = torch.Generator().manual_seed(int(seed))
    n = len(splits.train_y)
    batch_size = max(1, min(int(batch_size), n))
    idx = torch.randperm(n, generator=gen)[:batch_size]
    x = splits.train_x[idx].float().div_(255.0)
    x = augment_batch(x, data_cfg["augment"], gen)
    if data_cfg["normalize"]:
        x = normalize(x, splits.mean, splits.std)
    # normalised images are stretched to 0..255 each, plain ones are shown as they are
    picture = image_grid(x[:show] * (1 if data_cfg["normalize"] else 255), ncols=8,
                         stretch=data_cfg["normalize"])
    return {"image": picture,
            "labels": [splits.classes[int(i)] for i in splits.train_y[idx][:show]],
            "shape": list(x.shape), "dtype": str(x.dtype).replace("torch.", ""),
            "label_shape": [batch_size],
            "min": float(x.min()), "max": float(x.max()),
            "mean": float(x.mean()), "std": float(x.std()),
            "channel_mean": list(splits.mean), "channel_std": list(splits.std),
            "batches_per_epoch": int(np.ceil(n / batch_size)), "train_size": n}
