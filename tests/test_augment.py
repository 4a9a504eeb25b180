"""Batched augmentations agree with torchvision's per-image transforms."""
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from dlcore.augment import (augment_batch, crop_at, normalize, random_crop,
                            random_hflip, rotate)
from dlcore.preview import augmented_batch, raw_samples


def batch(b=6, c=3, h=12, w=12, seed=0):
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(seed))


def test_crop_matches_torchvision_pad_then_crop():
    x = batch()
    dy = torch.tensor([0, 1, 2, 3, 4, 2])
    dx = torch.tensor([4, 3, 2, 1, 0, 0])
    out = crop_at(x, 2, dy, dx)
    for i in range(len(x)):
        ref = TF.crop(TF.pad(x[i], [2, 2, 2, 2]), int(dy[i]), int(dx[i]), 12, 12)
        assert torch.equal(out[i], ref)


def test_random_crop_keeps_shape_and_zero_padding_is_identity():
    x = batch()
    assert random_crop(x, 3).shape == x.shape
    assert torch.equal(random_crop(x, 0), x)


def test_hflip_flips_about_half_of_the_batch_like_torchvision():
    x = batch(b=200, c=1, h=4, w=4)
    out = random_hflip(x, torch.Generator().manual_seed(1))
    flipped = [torch.equal(out[i], TF.horizontal_flip(x[i])) for i in range(len(x))]
    kept = [torch.equal(out[i], x[i]) for i in range(len(x))]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 60 < sum(flipped) < 140


def test_positive_angles_rotate_counter_clockwise_like_torchvision():
    x = torch.zeros(3, 1, 9, 9)
    x[:, 0, 1, 4] = 1.0                                   # one bright pixel above the centre (4, 4)
    out = rotate(x, torch.tensor([90.0, -90.0, 0.0]))
    left, right = torch.zeros(9, 9), torch.zeros(9, 9)
    left[4, 1] = 1.0                                      # +90: counter-clockwise, up goes left
    right[4, 7] = 1.0                                     # -90: clockwise, up goes right
    assert torch.allclose(out[0, 0], left, atol=1e-5)
    assert torch.allclose(out[1, 0], right, atol=1e-5)
    assert torch.allclose(out[2], x[2], atol=1e-6)
    assert torch.equal(TF.rotate(x[0], 90.0)[0], left)    # torchvision's convention, pinned


@pytest.mark.parametrize("size", [9, 12, 28])
def test_rotation_matches_torchvision_bilinear_for_each_image_angle(size):
    angles = [90.0, -90.0, 30.0, -45.0, 7.5, 180.0]
    x = batch(b=len(angles), c=3, h=size, w=size, seed=size)
    out = rotate(x, torch.tensor(angles))                 # every image its own angle, in one call
    for i, a in enumerate(angles):
        ref = TF.rotate(x[i], a, interpolation=TF.InterpolationMode.BILINEAR)
        assert torch.allclose(out[i], ref, atol=1e-5), a


def test_augment_batch_is_reproducible_with_a_seeded_generator():
    x = batch()
    aug = {"crop_padding": 2, "hflip": True, "rotation": 10}
    a = augment_batch(x, aug, torch.Generator().manual_seed(5))
    b = augment_batch(x, aug, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, x)


def test_normalize_uses_per_channel_statistics():
    x = torch.ones(2, 3, 2, 2)
    out = normalize(x, (0.5, 0.25, 0.0), (0.5, 0.25, 2.0))
    assert out[:, 0].eq(1).all() and out[:, 1].eq(3).all() and out[:, 2].eq(0.5).all()


def test_data_page_previews_show_batch_shapes():
    s = raw_samples({"dataset": "mnist-5k"}, n=20)
    assert s["image"].ndim == 3 and len(s["labels"]) == 20
    a = augmented_batch({"dataset": "mnist-5k", "augment": {"rotation": 15}}, batch_size=32, seed=1)
    b = augmented_batch({"dataset": "mnist-5k", "augment": {"rotation": 15}}, batch_size=32, seed=2)
    assert a["shape"] == [32, 1, 28, 28] and a["dtype"] == "float32"
    assert a["mean"] == pytest.approx(0.0, abs=0.3)        # normalised
    assert (a["image"] != b["image"]).any()
