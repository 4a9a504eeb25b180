"""Datasets: embedded ones work offline, full ones load from their real on-disk formats."""
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from dlcore.config import resolve_config
from dlcore.datasets import (DatasetUnavailable, FASHION_SYSTEM_DIR, availability, channel_stats,
                             class_counts, dataset_info, load_arrays, load_splits, read_idx)
from datafiles import (write_cifar_binary, write_cifar_python, write_folder, write_mnist)


def data_cfg(**kw):
    return resolve_config({"data": kw})["data"]


def test_mnist_5k_is_5000_real_digits_500_per_class():
    x, y, tx, ty = load_arrays("mnist-5k", "unused")
    assert x.shape == (5000, 1, 28, 28) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [500] * 10
    assert tx is None
    assert 0 < x.mean() < 80      # light digits on a black background


def test_mnist_5k_test_split_is_fixed_and_stratified_for_every_seed():
    a = load_splits(data_cfg(), seed=1)
    b = load_splits(data_cfg(), seed=2)
    assert torch.equal(a.test_x, b.test_x) and len(a.test_y) == 1000
    assert np.bincount(a.test_y.numpy()).tolist() == [100] * 10
    assert len(a.train_y) == 3200 and len(a.val_y) == 800
    assert not torch.equal(a.val_x, b.val_x)         # val drawn with the run's seed
    c = load_splits(data_cfg(), seed=1)
    assert torch.equal(a.val_x, c.val_x) and torch.equal(a.train_y, c.train_y)


def test_limit_caps_the_training_pool():
    s = load_splits(data_cfg(limit=300, val_fraction=0.2), seed=0)
    assert len(s.train_y) + len(s.val_y) == 300
    assert len(s.test_y) == 1000


def test_digits_are_8x8_from_scikit_learn():
    s = load_splits(data_cfg(dataset="digits"), seed=0)
    assert s.train_x.shape[1:] == (1, 8, 8) and s.train_x.dtype == torch.uint8
    assert s.train_x.max() == 255
    assert len(s.train_y) + len(s.val_y) + len(s.test_y) == 1797


def test_normalisation_statistics_are_computed_from_the_training_split():
    s = load_splits(data_cfg(), seed=0)
    x = s.train_x.numpy().astype(np.float64) / 255
    assert s.mean[0] == pytest.approx(x.mean(), abs=1e-5)
    assert s.std[0] == pytest.approx(x.std(ddof=1), abs=1e-5)
    m, sd = channel_stats(torch.zeros(4, 3, 2, 2, dtype=torch.uint8))
    assert m == (0.0, 0.0, 0.0) and all(v > 0 for v in sd)


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "plain"])
def test_mnist_loads_from_idx_files(tmp_path, gz):
    write_mnist(tmp_path, n_train=200, n_test=100, gz=gz)
    assert availability("mnist", tmp_path)[0]
    s = load_splits(data_cfg(dataset="mnist", val_fraction=0.1), seed=0, data_root=tmp_path)
    assert s.train_x.shape[1:] == (1, 28, 28)
    assert len(s.train_y) + len(s.val_y) == 200 and len(s.test_y) == 100
    assert s.classes == tuple("0123456789")


def test_missing_dataset_says_how_to_get_it(tmp_path):
    ok, how = availability("mnist", tmp_path)
    assert not ok and "download" in how
    with pytest.raises(DatasetUnavailable, match="not on this machine"):
        load_arrays("mnist", str(tmp_path))


def test_truncated_idx_file_is_a_clear_error(tmp_path):
    raw = write_mnist(tmp_path, gz=False)
    p = raw / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:1000])
    with pytest.raises(DatasetUnavailable, match="truncated"):
        read_idx(p)


@pytest.mark.parametrize("writer", [write_cifar_python, write_cifar_binary],
                         ids=["python-pickles", "binary"])
def test_cifar10_loads_from_both_distributed_formats(tmp_path, writer):
    writer(tmp_path, per_batch=40, n_test=50)
    assert availability("cifar10", tmp_path)[0]
    x, y, tx, ty = load_arrays("cifar10", str(tmp_path))
    assert x.shape == (200, 3, 32, 32) and tx.shape == (50, 3, 32, 32)
    assert y[:10].tolist() == list(range(10))
    assert dataset_info("cifar10").classes[0] == "airplane"


def test_cifar10_pickle_that_would_run_code_is_refused(tmp_path):
    d = write_cifar_python(tmp_path, per_batch=10, n_test=10)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (d / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_arrays("cifar10", str(tmp_path))
    assert not marker.exists()


@pytest.mark.skipif(not FASHION_SYSTEM_DIR.exists() and not os.environ.get("CI"),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_from_debian_package(tmp_path):
    ok, where = availability("fashion-mnist", tmp_path)
    assert ok and where == str(FASHION_SYSTEM_DIR)
    counts = class_counts(data_cfg(dataset="fashion-mnist"), tmp_path)
    assert counts["train"] == [6000] * 10 and counts["test"] == [1000] * 10
    assert counts["classes"][9] == "Ankle boot"


def test_folder_dataset_decodes_once_into_tensors(tmp_path):
    root = write_folder(tmp_path / "imgs", classes=("cat", "dog"), per_class=12, size=20)
    cfg = data_cfg(dataset="folder", root=str(root), image_size=16)
    info = dataset_info(cfg)
    assert info.classes == ("cat", "dog") and info.shape == (1, 16, 16)
    s = load_splits(cfg, seed=0)
    assert s.train_x.dtype == torch.uint8 and s.train_x.shape[1:] == (1, 16, 16)
    assert len(s.train_y) + len(s.val_y) + len(s.test_y) == 24


def test_colour_folder_has_three_channels(tmp_path):
    root = write_folder(tmp_path / "rgb", mode="RGB", per_class=6)
    assert dataset_info(data_cfg(dataset="folder", root=str(root))).shape[0] == 3


@pytest.mark.parametrize("setup, message", [
    (lambda r: None, "is not a folder"),
    (lambda r: (r / "only").mkdir(parents=True) or write_folder(r, classes=("only",)), "at least 2"),
    (lambda r: write_folder(r) and (r / "empty").mkdir(), "has no images"),
])
def test_bad_folders_get_clear_messages(tmp_path, setup, message):
    root = tmp_path / "f"
    setup(root)
    with pytest.raises(DatasetUnavailable, match=message):
        dataset_info(data_cfg(dataset="folder", root=str(root)))


def test_a_broken_image_in_a_folder_names_the_file(tmp_path):
    root = write_folder(tmp_path / "f", per_class=4)
    (root / "cat" / "broken.png").write_bytes(b"not an image at all")
    with pytest.raises(DatasetUnavailable, match="broken.png"):
        load_arrays("folder", "unused", str(root), 16)


def test_download_failure_is_one_line_saying_how_to_get_it(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    from dlcore.datasets import download

    def offline(*a, **k):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://...\n")

    monkeypatch.setattr(tvd, "MNIST", offline)
    with pytest.raises(DatasetUnavailable) as e:
        download("mnist", tmp_path)
    assert "\n" not in str(e.value) and "download failed" in str(e.value)
    assert str(tmp_path.resolve()) in str(e.value)


def test_download_fetches_with_torchvision_into_the_data_root(tmp_path, monkeypatch):
    """torchvision's own download writes the raw idx files; here it writes small real ones."""
    import torchvision.datasets as tvd

    from dlcore.datasets import download

    def fake_download(root, train, download):
        assert download is True
        write_mnist(Path(root))

    monkeypatch.setattr(tvd, "MNIST", fake_download)
    where = download("mnist", tmp_path)
    assert where == str(tmp_path / "MNIST" / "raw")
    assert load_arrays("mnist", str(tmp_path))[0].shape == (200, 1, 28, 28)


@pytest.mark.parametrize("cfg", [{}, {"limit": 333, "val_fraction": 0.15}, {"dataset": "digits"},
                                 {"dataset": "digits", "val_fraction": 0.05}])
def test_split_sizes_match_the_splits_made(cfg):
    from dlcore.datasets import split_sizes
    c = data_cfg(**cfg)
    s = load_splits(c, seed=3)
    assert split_sizes(c) == {"train": len(s.train_y), "val": len(s.val_y), "test": len(s.test_y)}
