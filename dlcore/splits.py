"""Splits and statistics: train/val from the training set (`val_fraction`, drawn with the run's
seed), test = the official test set, or a fixed stratified 20% (seed 0) where there is none;
per-channel mean and std of the training split, counted in bounded memory, once per split.
"""
from __future__ import annotations

import math
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import ConfigError
from .datasets import DatasetInfo, dataset_info, default_data_root, load_arrays

@dataclass
class Splits:
    train_x: torch.Tensor   # uint8 [N, C, H, W]
    train_y: torch.Tensor   # int64 [N]
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    info: DatasetInfo
    mean: tuple             # per channel, in 0..1, computed on train_x
    std: tuple

    @property
    def classes(self):
        return self.info.classes


TEST_FRACTION = 0.2   # held out, stratified, with TEST_SEED, where there is no official test set
TEST_SEED = 0


@dataclass(frozen=True)
class FixedTestSplit:
    """A dataset's fixed test split and the training pool that train/val are drawn from.

    Holds the raw arrays of load_arrays (not copies) and row indices into them; images are
    copied only when asked for, so taking a few test images costs a few images.
    """
    x: np.ndarray                 # training images as load_arrays gives them
    y: np.ndarray
    pool: np.ndarray              # rows of x forming the training pool, in split order
    source_x: np.ndarray          # where the test images are: the official test set, or x
    source_y: np.ndarray
    rows: np.ndarray | None       # rows of source_x forming the test split; None: all of them

    @property
    def official(self) -> bool:
        return self.rows is None

    @property
    def n_test(self) -> int:
        return len(self.source_y) if self.rows is None else len(self.rows)

    @property
    def pool_y(self) -> np.ndarray:
        return self.y if self.official else self.y[self.pool]

    @property
    def test_y(self) -> np.ndarray:
        return self.source_y if self.rows is None else self.source_y[self.rows]

    def test_x(self, indices=None) -> np.ndarray:
        """Test images (all, or those at `indices` of the test split) as uint8 [N, C, H, W]."""
        if indices is None:
            return (np.ascontiguousarray(self.source_x) if self.rows is None
                    else self.source_x[self.rows])
        idx = np.asarray(list(indices), dtype=np.int64).reshape(-1)
        bad = idx[(idx < 0) | (idx >= self.n_test)]
        if len(bad):
            raise IndexError(f"test image {int(bad[0])} does not exist: the test split has "
                             f"{self.n_test} images (0..{self.n_test - 1})")
        return self.source_x[idx if self.rows is None else self.rows[idx]]


def held_out_rows(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pool, test) rows of a training set without an official test set: the fixed stratified
    TEST_FRACTION held out with TEST_SEED, the same for every run so that runs compare."""
    strat = _strat(y)
    k = len(np.unique(y))
    if strat is not None and not _stratifiable(len(y), k, TEST_FRACTION):
        n_test = math.ceil(TEST_FRACTION * len(y))
        raise ConfigError(f"data.root: {len(y)} images for {k} classes are too few for the fixed "
                          f"stratified {TEST_FRACTION:.0%} test split ({n_test} test images, fewer "
                          f"than one per class); allowed: at least "
                          f"{_fewest(k, TEST_FRACTION, 2 * k)} images")
    return split_indices(len(y), TEST_SEED, test_size=TEST_FRACTION, stratify=strat)


def split_indices(n: int, seed: int, test_size=None, train_size=None, stratify=None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Positions 0..n-1 in two shuffled parts, (train, test), as scikit-learn's train_test_split
    draws them with `seed` (stratified by the labels `stratify` when given): every split here
    (test, the `limit` subset, validation) is this one draw, so indices stay as runs had them."""
    from sklearn.model_selection import train_test_split

    return tuple(train_test_split(np.arange(n), test_size=test_size, train_size=train_size,
                                  random_state=seed, stratify=stratify))


# ---------------------------------------------------------------- stratified splits that fit
# sklearn's stratified train_test_split of n samples of k classes holds out ceil(fraction * n)
# and needs at least k on each side (one sample per class); these say so before it raises.

def _stratifiable(n: int, k: int, fraction: float) -> bool:
    n_out = math.ceil(fraction * n)
    return n_out >= k and n - n_out >= k


def _fewest(k: int, fraction: float, start: int) -> int:
    """The fewest samples (at least `start`) whose stratified split by `fraction` fits k classes."""
    n = max(start, 2 * k, int((k - 1) / fraction) - 1)
    while not _stratifiable(n, k, fraction):
        n += 1
    return n


def _smallest_val_fraction(n: int, k: int) -> float | None:
    """The smallest val_fraction (3 decimals) that fits, if any: every larger one up to the
    allowed 0.5 fits too, since n >= 2k leaves half of n, at least k, for training."""
    if n < 2 * k:
        return None
    return next(f / 1000 for f in range(max(1, math.floor(1000 * (k - 1) / n)), 501)
                if _stratifiable(n, k, f / 1000))


def _check_val_split(data_cfg: dict, n: int, k: int, n_pool: int) -> None:
    """ConfigError saying which field to change when the stratified train/val split cannot fit."""
    vf = data_cfg["val_fraction"]
    if _stratifiable(n, k, vf):
        return
    n_val = math.ceil(vf * n)
    short = (f"{n_val} for validation" if n_val < k else f"{n - n_val} for training")
    least_vf = _smallest_val_fraction(n, k)
    limited = bool(data_cfg.get("limit")) and n < n_pool
    if limited:
        fewest = _fewest(k, vf, n + 1)
        fixes = [f"at least {fewest}"] if fewest <= n_pool else []
        if least_vf is not None:
            fixes.append(f"data.val_fraction of at least {least_vf:g}")
        if fixes:
            raise ConfigError(f"data.limit: {n} images for {k} classes leave {short} "
                              f"(data.val_fraction {vf:g}), fewer than one per class for a "
                              f"stratified split; allowed: {', or '.join(fixes)}")
    elif least_vf is not None:
        raise ConfigError(f"data.val_fraction: {vf:g} of {n} training images leaves {short}, "
                          f"fewer than one per class ({k} classes) for a stratified split; "
                          f"allowed: at least {least_vf:g}")
    field = "data.root" if data_cfg.get("dataset") == "folder" else "data.limit"
    raise ConfigError(f"{field}: {n} training images for {k} classes are too few for a "
                      f"stratified train/validation split; allowed: at least "
                      f"{_fewest(k, vf, 2 * k)} training images")


def split_rows(data_cfg: dict, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) rows of the training pool with labels `y`: the `limit` subset and the
    val split, both stratified; ConfigError when they cannot be (too few images per class)."""
    idx = np.arange(len(y))
    k = len(np.unique(y))
    limit = data_cfg.get("limit")
    if limit and limit < len(idx):
        strat = _strat(y)
        if strat is not None and limit < k:
            _check_val_split(data_cfg, limit, k, len(idx))     # raises: fewer than 2 per class
        if len(idx) - limit < k:   # too few left out to stratify them: a plain random subset
            strat = None
        idx, _ = split_indices(len(idx), seed, train_size=limit, stratify=strat)
    strat = _strat(y[idx])
    if strat is not None:
        _check_val_split(data_cfg, len(idx), len(np.unique(y[idx])), len(y))
    tr, va = split_indices(len(idx), seed, test_size=data_cfg["val_fraction"], stratify=strat)
    return np.sort(idx[tr]), np.sort(idx[va])


def fixed_test_split(data_cfg: dict, data_root=None) -> FixedTestSplit:
    """The test split of a resolved `data` config: the one place it is derived."""
    root = str(Path(data_root or default_data_root()))
    x, y, tx, ty = load_arrays(data_cfg["dataset"], root, data_cfg.get("root"),
                               int(data_cfg.get("image_size", 32)))
    if tx is not None:
        return FixedTestSplit(x, y, np.arange(len(y)), tx, ty, None)
    pool, test = held_out_rows(y)
    return FixedTestSplit(x, y, pool, x, y, test)


def load_splits(data_cfg: dict, seed: int, data_root=None) -> Splits:
    """Train/val/test splits of a resolved `data` config; val drawn with `seed`."""
    root = str(Path(data_root or default_data_root()))
    info = dataset_info(data_cfg, root)
    ts = fixed_test_split(data_cfg, root)
    y = ts.pool_y
    limit = data_cfg.get("limit")
    tr, va = split_rows(data_cfg, y, seed)
    # rows of the raw arrays: no copy of the whole pool, only of the train and val images
    train_x = torch.from_numpy(ts.x[ts.pool[tr]])
    key = (data_cfg["dataset"], root, data_cfg.get("root"), int(data_cfg.get("image_size", 32)),
           limit, data_cfg["val_fraction"], seed)
    mean, std = _cached_stats(key, ts.x, train_x)
    return Splits(train_x, torch.from_numpy(y[tr]), torch.from_numpy(ts.x[ts.pool[va]]),
                  torch.from_numpy(y[va]), torch.from_numpy(ts.test_x()),
                  torch.from_numpy(ts.test_y), info, mean, std)


def split_sizes(data_cfg: dict, data_root=None) -> dict:
    """Sizes of the train, val and test splits that load_splits makes, without making them."""
    ts = fixed_test_split(data_cfg, data_root)
    tr, va = split_rows(data_cfg, ts.pool_y, 0)   # labels only: cheap, and the same checks
    return {"train": len(tr), "val": len(va), "test": ts.n_test}


def _strat(y):
    """Stratify only when every class has at least two samples."""
    _, counts = np.unique(y, return_counts=True)
    return y if counts.min() >= 2 else None


STATS_CHUNK = 1 << 18   # pixels of one channel counted at a time (about 2.4 MB of scratch)


def channel_stats(x) -> tuple[tuple, tuple]:
    """Per-channel mean and (unbiased) std of uint8 images [N, C, H, W], in 0..1 units.

    Counted as exact per-channel histograms of the 256 byte values, a bounded chunk at a time,
    so the extra memory is a few megabytes whatever the size of `x` (no float copy of the
    data). Same values as a float64 torch computation: std like torch.std, at least 1e-6,
    both rounded to 6 decimals.
    """
    a = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.dtype != np.uint8 or a.ndim != 4:
        raise ValueError(f"channel_stats needs uint8 images [N, C, H, W], got {a.dtype} {a.shape}")
    n_img, channels = a.shape[:2]
    per_img = int(np.prod(a.shape[2:]))
    step = max(1, STATS_CHUNK // max(per_img, 1))
    values = np.arange(256, dtype=np.int64)
    means, stds = [], []
    for c in range(channels):
        hist = np.zeros(256, dtype=np.int64)
        for i in range(0, n_img, step):
            hist += np.bincount(a[i:i + step, c].reshape(-1), minlength=256)
        n = int(hist.sum())
        s1 = int(hist @ values)               # exact: integers all the way
        s2 = int(hist @ (values * values))
        mean = s1 / n / 255.0 if n else 0.0
        var = (n * s2 - s1 * s1) / (n * (n - 1)) / (255.0 * 255.0) if n > 1 else 0.0
        means.append(round(mean, 6))
        stds.append(round(max(math.sqrt(var), 1e-6), 6))
    return tuple(means), tuple(stds)


_STATS: dict = {}          # split key -> (weak reference to the raw training array, mean, std)
_STATS_LOCK = threading.Lock()
_STATS_MAX = 64


def _cached_stats(key: tuple, source: np.ndarray, train_x) -> tuple[tuple, tuple]:
    """channel_stats(train_x), computed once per training split and process.

    `key` is everything that decides the training split; the entry also remembers which raw
    array it came from, so a dataset loaded again (a download, an evicted cache) is counted
    again rather than served stale numbers.
    """
    with _STATS_LOCK:
        hit = _STATS.get(key)
    if hit is not None and hit[0]() is source:
        return hit[1], hit[2]
    mean, std = channel_stats(train_x)
    with _STATS_LOCK:
        while len(_STATS) >= _STATS_MAX:
            _STATS.pop(next(iter(_STATS)))
        _STATS[key] = (weakref.ref(source), mean, std)
    return mean, std


def class_counts(data_cfg: dict, data_root=None) -> dict:
    """Number of training and test images per class, for the Data page."""
    root = str(Path(data_root or default_data_root()))
    info = dataset_info(data_cfg, root)
    ts = fixed_test_split(data_cfg, root)
    k = len(info.classes)
    return {"classes": list(info.classes),
            "train": np.bincount(ts.pool_y, minlength=k).tolist(),
            "test": np.bincount(ts.test_y, minlength=k).tolist()}
