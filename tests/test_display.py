"""The one image grid: every picture a page shows puts the right pixels in the right place."""
import numpy as np
import pytest

from dlcore.display import image_grid, overlay, pictures

WHITE = 255


def four_gray_images():
    """Four 1x2x2 images of one value each: 10, 20, 30, 40."""
    return np.stack([np.full((1, 2, 2), v, np.uint8) for v in (10, 20, 30, 40)])


def tile(grid, row, col, side, pad):
    top, left = pad + row * (side + pad), pad + col * (side + pad)
    return grid[top:top + side, left:left + side]


def test_a_2x2_grid_puts_each_image_in_its_place_on_white():
    g = image_grid(four_gray_images(), ncols=2, size=4, pad=1)     # 2x2 images enlarged twice
    assert g.shape == (1 + 2 * (4 + 1), 1 + 2 * (4 + 1), 3) and g.dtype == np.uint8
    for k, value in enumerate((10, 20, 30, 40)):
        assert (tile(g, k // 2, k % 2, 4, 1) == value).all(), k
    border = np.ones(g.shape[:2], bool)
    for k in range(4):
        top, left = 1 + (k // 2) * 5, 1 + (k % 2) * 5
        border[top:top + 4, left:left + 4] = False
    assert (g[border] == WHITE).all()


def test_images_fill_rows_left_to_right_and_the_last_row_is_padded_white():
    g = image_grid(four_gray_images()[:3], ncols=2, size=2, pad=0)
    assert g.shape == (4, 4, 3)
    assert (g[:2, :2] == 10).all() and (g[:2, 2:] == 20).all() and (g[2:, :2] == 30).all()
    assert (g[2:, 2:] == WHITE).all()


def test_colour_images_keep_their_channels_and_gray_ones_become_rgb():
    red = np.zeros((1, 3, 2, 2), np.uint8)
    red[:, 0] = 200
    g = image_grid(red, size=2, pad=0)
    assert g.shape == (2, 2, 3) and (g[..., 0] == 200).all() and (g[..., 1:] == 0).all()
    gray = image_grid(four_gray_images()[:1], size=2, pad=0)
    assert (gray == 10).all() and gray.shape == (2, 2, 3)


def test_enlarging_is_by_a_whole_factor_and_keeps_pixels_sharp():
    img = np.array([[[0, 255], [255, 0]]], np.uint8)[None]      # a 2x2 checkerboard
    g = image_grid(img, size=7, pad=0)                            # 7 // 2 = 3 times
    assert g.shape == (6, 6, 3)
    assert (g[:3, :3] == 0).all() and (g[:3, 3:] == 255).all() and (g[3:, :3] == 255).all()
    assert image_grid(np.zeros((1, 1, 28, 28), np.uint8), size=16).shape == (28, 28, 3)


def test_stretch_maps_each_normalised_image_to_the_full_range():
    x = np.stack([np.linspace(-2, 2, 4).reshape(1, 2, 2), np.linspace(0, 0.5, 4).reshape(1, 2, 2)])
    g = image_grid(x.astype(np.float32), ncols=2, size=2, pad=0, stretch=True)
    left, right = g[:, :2, 0], g[:, 2:, 0]
    assert left.min() == 0 and left.max() == 255 and right.min() == 0 and right.max() == 255


def test_values_beyond_the_byte_range_are_clipped():
    g = image_grid(np.array([[[[-5.0, 300.0]]]]), size=1, pad=0)
    assert g[0, :, 0].tolist() == [0, 255]


def test_no_images_is_an_error_not_an_empty_picture():
    with pytest.raises(ValueError, match="B, C, H, W"):
        image_grid(np.zeros((0, 1, 2, 2), np.uint8))


def test_pictures_are_one_enlarged_image_each():
    out = pictures(four_gray_images(), size=8)
    assert [p.shape for p in out] == [(8, 8, 3)] * 4
    assert [int(p[0, 0, 0]) for p in out] == [10, 20, 30, 40]
    assert pictures(np.zeros((0, 1, 2, 2), np.uint8)) == []


def test_overlay_paints_raised_pixels_red_and_lowered_ones_blue():
    img = np.full((1, 2, 2), 100, np.uint8)
    sal = np.array([[1.0, -1.0], [0.0, 0.0]])
    g = overlay(img, sal, size=4)
    assert g.shape == (4, 4, 3)
    r, b = g[0, 0], g[0, 3]
    assert r[0] > r[2] and b[2] > b[0]
    assert len(set(g[3, 0].tolist())) == 1          # no attribution: plain (dimmed) gray


def test_a_layer_column_is_wide_enough_for_its_longest_name():
    from dlcore.display import column_width

    assert column_width(["input", "fc.0"]) == 90                    # never narrower than that
    long = "backbone.features.10.block.2.scale_activation"           # 45 characters
    assert column_width(["input", long]) == round(45 * 6.6) + 24
