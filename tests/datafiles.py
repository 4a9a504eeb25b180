"""Small dataset files in the real on-disk formats: MNIST idx, CIFAR-10 python and binary, folders."""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


def idx_bytes(a: np.ndarray) -> bytes:
    """The idx format: 0, 0, type 0x08 (ubyte), ndim, big-endian dims, then the bytes."""
    a = np.ascontiguousarray(a, dtype=np.uint8)
    return bytes([0, 0, 8, a.ndim]) + b"".join(struct.pack(">I", d) for d in a.shape) + a.tobytes()


def digit_like_images(n, seed=0, size=28):
    """Images whose class is visible: class k lights up row band k (learnable, not random)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 10
    x = rng.integers(0, 40, size=(n, size, size), dtype=np.uint8)
    band = size // 10
    for i, k in enumerate(y):
        x[i, k * band:(k + 1) * band, :] = 250
    return x, y.astype(np.uint8)


def write_mnist(folder: Path, n_train=200, n_test=100, gz=True):
    """folder/MNIST/raw/*-ubyte[.gz] as torchvision's download leaves them."""
    raw = Path(folder) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    xtr, ytr = digit_like_images(n_train, 1)
    xte, yte = digit_like_images(n_test, 2)
    for stem, a in (("train-images-idx3-ubyte", xtr), ("train-labels-idx1-ubyte", ytr),
                    ("t10k-images-idx3-ubyte", xte), ("t10k-labels-idx1-ubyte", yte)):
        data = idx_bytes(a)
        if gz:
            (raw / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (raw / stem).write_bytes(data)
    return raw


def cifar_like(n, seed):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 10
    x = rng.integers(0, 60, size=(n, 3, 32, 32), dtype=np.uint8)
    for i, k in enumerate(y):
        x[i, k % 3, (k * 3):(k * 3) + 3, :] = 240
    return x, y


def write_cifar_python(folder: Path, per_batch=40, n_test=50):
    """folder/cifar-10-batches-py with pickled dicts, as in cifar-10-python.tar.gz."""
    d = Path(folder) / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        x, y = cifar_like(per_batch, i)
        _pickle_batch(d / f"data_batch_{i}", x, y, f"training batch {i} of 5")
    x, y = cifar_like(n_test, 99)
    _pickle_batch(d / "test_batch", x, y, "testing batch 1 of 1")
    return d


def _pickle_batch(path, x, y, label):
    obj = {b"batch_label": label.encode(), b"labels": [int(v) for v in y],
           b"data": x.reshape(len(x), -1), b"filenames": [f"img{i}.png".encode() for i in range(len(x))]}
    path.write_bytes(pickle.dumps(obj, protocol=2))


def write_cifar_binary(folder: Path, per_batch=40, n_test=50):
    """folder/cifar-10-batches-bin: records of one label byte and 3072 pixel bytes."""
    d = Path(folder) / "cifar-10-batches-bin"
    d.mkdir(parents=True, exist_ok=True)

    def records(x, y):
        return b"".join(bytes([int(k)]) + img.tobytes() for img, k in zip(x, y))

    for i in range(1, 6):
        (d / f"data_batch_{i}.bin").write_bytes(records(*cifar_like(per_batch, i)))
    (d / "test_batch.bin").write_bytes(records(*cifar_like(n_test, 99)))
    return d


def write_folder(root: Path, classes=("cat", "dog"), per_class=12, size=20, mode="L"):
    from PIL import Image

    root = Path(root)
    for k, c in enumerate(classes):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            a = np.full((size, size, 3), 30 + 100 * k, dtype=np.uint8)
            a[i % size] = 255
            Image.fromarray(a).convert(mode).save(root / c / f"{i}.png")
    return root
