"""The Data page: dataset choice, class counts, raw and augmented grids, and the data config."""
import pytest

import dlcore.datasets as datasets
from conftest import app_page


def open_data_page():
    return app_page("data")


def tensor_text(at) -> str:
    return next(c.value for c in at.code if c.value.startswith("images: torch.Size"))


def batch_picture(at):
    image = at.image[1]
    return image.value, image.captions


def test_shows_class_counts_both_grids_and_the_batch_shape(empty_runs):
    at = open_data_page()
    assert at.get("plotly_chart"), "class counts chart"
    assert [m.value for m in at.metric][:4] == ["10", "1×28×28", "4,000", "1,000"]
    assert len(at.image) == 2, "raw samples and augmented batch"
    text = tensor_text(at)
    assert "images: torch.Size([32, 1, 28, 28])  labels: torch.Size([32])" in text
    assert "dtype: torch.float32" in text and "Normalize(mean=(0.13" in text
    assert at.session_state["config"]["data"]["dataset"] == "mnist-5k"


def test_augmentation_control_changes_the_augmented_batch(empty_runs):
    at = open_data_page()
    raw_before, (url, _) = at.image[0].value, batch_picture(at)
    at.slider(key="data_rotation").set_value(30).run()
    assert not at.exception
    assert batch_picture(at)[0] != url
    assert at.image[0].value == raw_before, "raw samples do not depend on augmentation"
    assert at.session_state["config"]["data"]["augment"]["rotation"] == 30


def test_new_batch_draws_another_seed(empty_runs):
    at = open_data_page()
    url, captions = batch_picture(at)
    assert "seed 0" in captions[0]
    next(b for b in at.button if b.label == "New batch").click().run()
    url2, captions2 = batch_picture(at)
    assert "seed 1" in captions2[0] and url2 != url


def test_settings_go_into_the_working_config(empty_runs):
    at = open_data_page()
    at.slider(key="data_val_fraction").set_value(0.1).run()
    at.slider(key="data_crop").set_value(4).run()
    at.toggle(key="data_hflip").set_value(True).run()
    at.toggle(key="data_normalize").set_value(False).run()
    at.selectbox(key="data_batch").set_value(64).run()
    assert not at.exception
    data = at.session_state["config"]["data"]
    assert data["val_fraction"] == pytest.approx(0.1)
    assert data["augment"] == {"crop_padding": 4, "hflip": True, "rotation": 0}
    assert data["normalize"] is False and data["root"] is None
    text = tensor_text(at)
    assert "torch.Size([64, 1, 28, 28])" in text and "not applied" in text
    # the page forgets its widgets when left; coming back shows the config again
    at.switch_page("pages/model.py").run()
    at.switch_page("pages/data.py").run()
    assert at.slider(key="data_crop").value == 4 and at.toggle(key="data_hflip").value is True


def test_digits_shape(empty_runs):
    at = open_data_page()
    at.selectbox(key="data_dataset").set_value("digits").run()
    assert not at.exception
    assert "torch.Size([32, 1, 8, 8])" in tensor_text(at)


def test_unavailable_dataset_says_how_to_get_it(empty_runs, tmp_path, monkeypatch):
    monkeypatch.setenv("DLCORE_DATA", str(tmp_path / "empty"))

    def offline(name, data_root=None):
        raise datasets.DatasetUnavailable(f"{name}: download failed (no network)")

    monkeypatch.setattr(datasets, "download", offline)
    at = open_data_page()
    at.selectbox(key="data_dataset").set_value("mnist").run()
    assert not at.exception
    warning = at.warning[0].value
    assert "not on this machine" in warning and "`python -m dlcore download mnist`" in warning
    # the user is on the Data page, whose Download button is right below; the variable is named
    assert "Data page" not in warning and "DATA_ROOT" not in warning
    assert f"($DLCORE_DATA) is `{tmp_path / 'empty'}`" in warning
    assert not at.image and not at.get("plotly_chart")
    assert at.session_state["config"]["data"]["dataset"] == "mnist"
    next(b for b in at.button if b.label == "Download mnist").click().run()
    assert not at.exception
    assert "download failed" in at.error[0].value


def test_folder_dataset_needs_a_path_then_reads_it(empty_runs, tmp_path):
    from PIL import Image
    for cls, shade in (("cats", 40), ("dogs", 200)):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(10):
            Image.new("L", (20, 20), shade + i).save(tmp_path / "imgs" / cls / f"{i}.png")
    at = open_data_page()
    at.selectbox(key="data_dataset").set_value("folder").run()
    assert not at.exception
    # before a path is typed nothing is wrong: a hint, no red error
    assert not at.error and "Type the path of a folder" in at.info[0].value
    at.text_input(key="data_folder").input(str(tmp_path / "nowhere")).run()
    assert not at.exception and "nowhere" in at.error[0].value
    at.text_input(key="data_folder").input(str(tmp_path / "imgs")).run()
    at.number_input(key="data_image_size").set_value(16).run()
    assert not at.exception and not at.error
    assert "torch.Size([" in tensor_text(at) and ", 1, 16, 16])" in tensor_text(at)
    data = at.session_state["config"]["data"]
    assert data["root"] == str(tmp_path / "imgs") and data["image_size"] == 16
    at.selectbox(key="data_dataset").set_value("mnist-5k").run()
    assert at.session_state["config"]["data"]["root"] is None
