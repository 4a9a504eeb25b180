"""Datasets: embedded ones work offline, full ones load from their real on-disk formats."""
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from dlcore.config import resolve_config
import dlcore.splits as splits
from dlcore.datasets import DatasetUnavailable, FASHION_SYSTEM_DIR, availability, dataset_info, load_arrays, read_idx
from dlcore.splits import (channel_stats, class_counts, fixed_test_split, load_splits,
                           split_sizes)
from dlcore.evaluate import held_out_images
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
    assert not ok and how == ("download it with the Download button on the Data page or "
                              "`python -m dlcore download mnist` (needs internet), or put the "
                              f"four idx files in {tmp_path.resolve()}/MNIST/raw")
    assert availability("cifar10", tmp_path)[1].endswith(
        f"or unpack cifar-10-python.tar.gz into {tmp_path.resolve()}")
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
    c = data_cfg(**cfg)
    s = load_splits(c, seed=3)
    assert split_sizes(c) == {"train": len(s.train_y), "val": len(s.val_y), "test": len(s.test_y)}


# ---------------------------------------------------------------- normalisation statistics

def torch_float64_stats(x: np.ndarray):
    """The reference: a float64 copy of everything, torch's unbiased std, clamped, rounded."""
    xf = torch.from_numpy(x).to(torch.float64).div(255.0).transpose(0, 1).reshape(x.shape[1], -1)
    return (tuple(round(v, 6) for v in xf.mean(dim=1).tolist()),
            tuple(round(v, 6) for v in xf.std(dim=1).clamp_min(1e-6).tolist()))


@pytest.mark.parametrize("shape, high", [((7, 3, 5, 4), 256), ((300, 1, 28, 28), 256),
                                         ((2, 2, 3, 3), 256), ((40, 3, 32, 32), 60),
                                         ((1000, 1, 8, 8), 17)])
def test_channel_stats_equal_a_float64_torch_computation(shape, high):
    x = np.random.default_rng(sum(shape)).integers(0, high, size=shape, dtype=np.uint8)
    want = torch_float64_stats(x)
    assert channel_stats(x) == want
    assert channel_stats(torch.from_numpy(x)) == want
    assert channel_stats(torch.from_numpy(x)[::2].transpose(2, 3)) == torch_float64_stats(
        np.ascontiguousarray(x[::2].transpose(0, 1, 3, 2)))      # strided views too


def test_channel_stats_of_constant_images_are_clamped_not_zero():
    x = np.full((5, 3, 4, 4), 200, dtype=np.uint8)
    x[:, 1] = 0
    assert channel_stats(x) == torch_float64_stats(x) == ((0.784314, 0.0, 0.784314), (1e-6,) * 3)


def test_load_splits_statistics_are_those_of_the_training_split():
    s = load_splits(data_cfg(dataset="digits", val_fraction=0.3), seed=4)
    assert (s.mean, s.std) == torch_float64_stats(s.train_x.numpy())


def _status_bytes(key):
    import re
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{key}:\s+(\d+)", text).group(1)) * 1024


def test_channel_stats_extra_memory_is_a_small_fraction_of_the_images():
    """10,000 CIFAR-shaped images (30 MB): no float copies, only a bounded chunk at a time."""
    import tracemalloc

    x = np.random.default_rng(0).integers(0, 256, size=(10_000, 3, 32, 32), dtype=np.uint8)
    t = torch.from_numpy(x)
    channel_stats(t[:4])                           # first-call set-up is not the data's cost
    rss = Path("/proc/self/clear_refs").exists()
    if rss:
        try:   # reset the peak resident size (VmHWM) to the current one
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            rss = False
    before = _status_bytes("VmRSS") if rss else 0
    tracemalloc.start()
    try:
        mean, _ = channel_stats(t)
        _, peak_numpy = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    grew = _status_bytes("VmHWM") - before if rss else 0
    bound = 0.25 * x.nbytes
    assert peak_numpy < bound, f"numpy scratch peaked at {peak_numpy / 1e6:.1f} MB"
    # what tracemalloc cannot see (torch's allocator) shows in the peak resident size
    assert grew < bound, f"peak resident size grew by {grew / 1e6:.1f} MB for a 30.7 MB array"
    assert mean == pytest.approx(x.mean(axis=(0, 2, 3), dtype=np.float64) / 255, abs=1e-6)


def test_statistics_are_computed_once_per_training_split(monkeypatch):
    calls = []
    real = splits.channel_stats

    def counting(x):
        calls.append(len(x))
        return real(x)

    monkeypatch.setattr(splits, "channel_stats", counting)
    monkeypatch.setattr(splits, "_STATS", {}, raising=False)     # an empty cache
    cfg = data_cfg(limit=321, val_fraction=0.25)     # a split no other test makes
    a = load_splits(cfg, seed=97)
    b = load_splits(cfg, seed=97)
    assert len(calls) == 1 and (a.mean, a.std) == (b.mean, b.std)
    assert (a.mean, a.std) == torch_float64_stats(a.train_x.numpy())
    c = load_splits(cfg, seed=98)                    # another seed: another training split
    assert len(calls) == 2 and (c.mean, c.std) == torch_float64_stats(c.train_x.numpy())
    load_splits(data_cfg(limit=322, val_fraction=0.25), seed=97)
    load_splits(data_cfg(limit=321, val_fraction=0.2), seed=97)
    assert len(calls) == 4
    load_arrays.cache_clear()                        # the data read again: counted again
    d = load_splits(cfg, seed=97)
    assert len(calls) == 5 and (d.mean, d.std) == (a.mean, a.std)


# ---------------------------------------------------------------- the one test split

def test_the_held_out_test_split_is_the_one_runs_were_evaluated_on():
    """Same images in the same order as before: eval.json's indices point into it."""
    from sklearn.model_selection import train_test_split

    for name in ("mnist-5k", "digits"):
        x, y, _, _ = load_arrays(name, "unused")
        px, tx, py, ty = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
        ts = fixed_test_split(data_cfg(dataset=name))
        assert np.array_equal(ts.test_x(), tx) and np.array_equal(ts.test_y, ty)
        assert np.array_equal(ts.x[ts.pool], px) and np.array_equal(ts.pool_y, py)
        s = load_splits(data_cfg(dataset=name), seed=0)
        assert np.array_equal(s.test_x.numpy(), tx)


def test_every_reader_of_the_test_split_goes_through_one_derivation(monkeypatch, tmp_path):
    """Replace the held-out rows: load_splits, class_counts, split_sizes and the gallery follow."""
    y = load_arrays("mnist-5k", "unused")[1]
    test = np.flatnonzero(np.arange(len(y)) % 4 == 0)[::-1][:900]     # 900, in a new order
    pool = np.setdiff1d(np.arange(len(y)), test)
    monkeypatch.setattr(splits, "held_out_rows", lambda labels: (pool, test))
    cfg = data_cfg(val_fraction=0.1)
    x = load_arrays("mnist-5k", "unused")[0]
    s = load_splits(cfg, seed=0)
    assert np.array_equal(s.test_x.numpy(), x[test]) and np.array_equal(s.test_y.numpy(), y[test])
    assert len(s.train_y) + len(s.val_y) == len(pool) == 4100
    assert split_sizes(cfg) == {"train": len(s.train_y), "val": len(s.val_y), "test": 900}
    counts = class_counts(cfg)
    assert counts["test"] == np.bincount(y[test], minlength=10).tolist()
    assert counts["train"] == np.bincount(y[pool], minlength=10).tolist()
    run = write_run(tmp_path, {"data": {"val_fraction": 0.1}})
    assert np.array_equal(held_out_images(run, [0, 899, 5]), x[test[[0, 899, 5]]])


def test_class_counts_match_the_splits_made():
    for cfg in (data_cfg(), data_cfg(dataset="digits")):
        s = load_splits(cfg, seed=0)
        counts = class_counts(cfg)
        pool = np.concatenate([s.train_y.numpy(), s.val_y.numpy()])
        assert counts["train"] == np.bincount(pool, minlength=10).tolist()
        assert counts["test"] == np.bincount(s.test_y.numpy(), minlength=10).tolist()


# ---------------------------------------------------------------- gallery images

def write_run(folder: Path, cfg: dict) -> Path:
    import json
    run = Path(folder) / "run"
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps(resolve_config(cfg)))
    return run


def _no_full_split(*a, **k):
    raise AssertionError("a gallery must not build the whole split or its statistics")


@pytest.mark.parametrize("dataset, writer", [
    ("mnist-5k", None), ("digits", None),
    ("mnist", lambda root: write_mnist(root, n_train=200, n_test=100)),
    ("cifar10", lambda root: write_cifar_binary(root, per_batch=40, n_test=50)),
], ids=["mnist-5k", "digits", "mnist-official-test", "cifar10-official-test"])
def test_held_out_images_are_exactly_the_split_s_test_images(tmp_path, monkeypatch, dataset, writer):
    root = tmp_path / "data"
    if writer:
        writer(root)
    cfg = {"data": {"dataset": dataset, "limit": 150, "val_fraction": 0.3},
           "train": {"seed": 7}}
    run = write_run(tmp_path, cfg)
    full = load_splits(resolve_config(cfg)["data"], 7, root)
    n = len(full.test_y)
    indices = [0, n - 1, 17, 17, 3, n // 2]
    want = full.test_x[indices].numpy()
    monkeypatch.setattr(splits, "load_splits", _no_full_split)
    monkeypatch.setattr(splits, "channel_stats", _no_full_split)
    monkeypatch.setattr(splits, "_cached_stats", _no_full_split, raising=False)
    got = held_out_images(run, indices, root)
    assert got.dtype == np.uint8 and got.shape == want.shape and np.array_equal(got, want)
    empty = held_out_images(run, [], root)
    assert empty.shape == (0, *want.shape[1:]) and empty.dtype == np.uint8
    with pytest.raises(IndexError, match=f"test split has {n} images"):
        held_out_images(run, [n], root)
    with pytest.raises(IndexError, match="does not exist"):
        held_out_images(run, [-1], root)
