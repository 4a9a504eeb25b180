"""Every split (the held-out test set, the `limit` subset, validation) is one draw,
splits.split_indices, and it gives the rows that runs were trained and tested on before."""
import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from dlcore.datasets import load_arrays
from dlcore.splits import TEST_FRACTION, TEST_SEED, _strat, held_out_rows, split_indices, split_rows


def rows_before(data_cfg, y, seed):
    """split_rows as it was written before split_indices, straight on scikit-learn."""
    idx = np.arange(len(y))
    limit = data_cfg.get("limit")
    if limit and limit < len(idx):
        strat = _strat(y) if len(idx) - limit >= len(np.unique(y)) else None
        idx, _ = train_test_split(idx, train_size=limit, random_state=seed, stratify=strat)
    tr, va = train_test_split(idx, test_size=data_cfg["val_fraction"], random_state=seed,
                              stratify=_strat(y[idx]))
    return np.sort(tr), np.sort(va)


@pytest.fixture(scope="module")
def labels():
    return {name: load_arrays(name, "unused")[1] for name in ("mnist-5k", "digits")}


def test_the_held_out_test_rows_are_the_same_as_before(labels):
    for y in labels.values():
        pool, test = train_test_split(np.arange(len(y)), test_size=TEST_FRACTION,
                                      random_state=TEST_SEED, stratify=y)
        got_pool, got_test = held_out_rows(y)
        assert np.array_equal(got_pool, pool) and np.array_equal(got_test, test)


@pytest.mark.parametrize("cfg", [{"val_fraction": 0.2}, {"val_fraction": 0.1, "limit": 300},
                                 {"val_fraction": 0.5, "limit": 40},
                                 {"val_fraction": 0.2, "limit": 3995}],
                         ids=["whole-pool", "limit", "small-limit", "limit-leaves-too-few-out"])
@pytest.mark.parametrize("seed", [0, 42])
def test_train_and_val_rows_are_the_same_as_before(labels, cfg, seed):
    for name, y in labels.items():
        pool_y = y[held_out_rows(y)[0]]
        if cfg.get("limit", 0) >= len(pool_y):
            continue
        tr, va = split_rows(cfg, pool_y, seed)
        old_tr, old_va = rows_before(cfg, pool_y, seed)
        assert np.array_equal(tr, old_tr) and np.array_equal(va, old_va), name


def test_a_split_is_a_partition_drawn_again_the_same_for_the_same_seed():
    y = np.repeat([0, 1], 10)
    a, b = split_indices(20, 3, test_size=0.3, stratify=y)
    assert sorted([*a, *b]) == list(range(20)) and np.bincount(y[b]).tolist() == [3, 3]
    again = split_indices(20, 3, test_size=0.3, stratify=y)
    assert np.array_equal(a, again[0]) and np.array_equal(b, again[1])
    assert not np.array_equal(b, split_indices(20, 4, test_size=0.3, stratify=y)[1])
