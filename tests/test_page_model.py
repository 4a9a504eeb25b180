"""The Model page: architecture controls, presets, parameter counts and clear errors."""
import pytest

from conftest import app_page
from dlcore.config import config_warnings, default_config, resolve_config


def open_model_page(dataset=None):
    state = None
    if dataset:
        cfg = default_config("dnn")
        cfg["data"]["dataset"] = dataset
        state = {"config": cfg}
    return app_page("model", state=state)


def trainable(at) -> str:
    return next(m.value for m in at.metric if m.label == "Trainable parameters")


def click(at, label):
    next(b for b in at.button if b.label == label).click().run()
    assert not at.exception, at.exception


def test_default_is_the_tutorial_dnn(empty_runs):
    at = open_model_page()
    assert trainable(at) == "569,226"
    assert at.dataframe, "per-layer table"
    assert at.get("plotly_chart"), "parameters per layer"
    assert at.session_state["config"]["model"]["hidden_dims"] == [512, 256, 128]


def test_cnn_width_changes_the_parameter_count(empty_runs):
    at = open_model_page()
    at.segmented_control(key="model_arch").set_value("cnn").run()
    before = trainable(at)
    at.text_input(key="model_cnn_blocks").input("32, 32; 64, 96").run()
    assert not at.exception
    after = trainable(at)
    assert before != after
    model = at.session_state["config"]["model"]
    assert model["arch"] == "cnn" and model["blocks"] == [[32, 32], [64, 96]]


def test_tutorial_cnn_preset_on_cifar10_shape(empty_runs):
    at = open_model_page("cifar10")
    click(at, "Tutorial CNN")
    assert trainable(at) == "9,457,962"
    assert at.text_input(key="model_cnn_fc").value == "2048, 256"
    assert at.toggle(key="model_cnn_batchnorm").value is False
    click(at, "Tutorial DNN")
    assert at.session_state["config"]["model"]["arch"] == "dnn"


def test_tutorial_cnn_on_mnist_says_which_shape_it_counts(empty_runs):
    at = open_model_page()
    click(at, "Tutorial CNN")
    assert trainable(at) != "9,457,962"
    assert any("9,457,962" in c.value and "mnist-5k" in c.value for c in at.caption)


def test_bad_layer_list_is_an_error_not_an_exception(empty_runs):
    at = open_model_page()
    at.text_input(key="model_dnn_hidden").input("512, abc").run()
    assert not at.exception
    assert "'abc'" in at.error[0].value and "Hidden layer widths" in at.error[0].value
    assert not at.metric
    assert at.session_state["config"]["model"]["hidden_dims"] == [512, 256, 128], "last valid kept"
    at.text_input(key="model_dnn_hidden").input("64, 0").run()
    assert not at.exception and at.error


def test_too_many_cnn_blocks_for_digits(empty_runs):
    at = open_model_page("digits")
    at.segmented_control(key="model_arch").set_value("cnn").run()
    at.text_input(key="model_cnn_blocks").input("8, 8; 8, 8; 8, 8; 8, 8").run()
    assert not at.exception
    assert "at most 3 blocks" in at.error[0].value


def test_huge_model_is_refused_before_building(empty_runs):
    at = open_model_page()
    at.text_input(key="model_dnn_hidden").input("65536, 65536").run()
    assert not at.exception
    assert "parameters" in at.error[0].value


def test_resnet_and_rnn_controls(empty_runs):
    at = open_model_page()
    at.segmented_control(key="model_arch").set_value("resnet").run()
    resnet = trainable(at)
    at.text_input(key="model_resnet_stages").input("1, 1").run()
    assert trainable(at) != resnet
    at.segmented_control(key="model_arch").set_value("rnn").run()
    rnn = trainable(at)
    at.toggle(key="model_rnn_bidirectional").set_value(True).run()
    at.selectbox(key="model_init").set_value("xavier").run()
    assert not at.exception and trainable(at) != rnn
    model = at.session_state["config"]["model"]
    assert model["arch"] == "rnn" and model["bidirectional"] and model["init"] == "xavier"


def test_edits_survive_switching_architecture_and_page(empty_runs):
    at = open_model_page()
    at.text_input(key="model_dnn_hidden").input("100, 50").run()
    at.segmented_control(key="model_arch").set_value("cnn").run()
    at.segmented_control(key="model_arch").set_value("dnn").run()
    assert at.text_input(key="model_dnn_hidden").value == "100, 50"
    at.switch_page("pages/data.py").run()
    at.switch_page("pages/model.py").run()
    assert not at.exception
    assert at.text_input(key="model_dnn_hidden").value == "100, 50"
    assert trainable(at) == f"{784 * 100 + 100 + 200 + 100 * 50 + 50 + 100 + 50 * 10 + 10:,}"


def test_folder_dataset_without_a_folder_points_to_the_data_page(empty_runs):
    cfg = default_config("dnn")
    cfg["data"].update({"dataset": "folder", "root": None})
    at = app_page("model", state={"config": cfg})
    assert "Data page" in at.error[0].value and "folder" in at.error[0].value


# ---------------------------------------------------------------- pretrained (transfer)

@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty torch hub cache and no network: the page never downloads weights in a test."""
    import urllib.error

    import torchvision

    def offline(*a, **k):
        raise urllib.error.URLError("Name or service not known")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    monkeypatch.setattr("dlcore.pretrained._FAILED_DOWNLOADS", {})
    return tmp_path / "torch"


def pick_pretrained(at, weights="none"):
    at.segmented_control(key="model_arch").set_value("pretrained").run()
    at.radio(key="model_pretrained_weights").set_value(weights).run()
    at.number_input(key="model_pretrained_size").set_value(32).run()
    assert not at.exception, at.exception


def metric(at, label) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_pretrained_shows_trainable_frozen_and_where_the_weights_come_from(empty_runs, offline_hub):
    at = open_model_page()
    pick_pretrained(at)
    at.selectbox(key="model_pretrained_backbone").set_value("mobilenet_v3_small").run()
    # random weights: Freeze follows to "Nothing", as the config's default does, no warning
    assert at.selectbox(key="model_pretrained_freeze").value == "none" and not at.warning
    assert metric(at, "Trainable parameters") == "1,528,106"
    assert metric(at, "Frozen parameters") == "0"
    assert any("random init" in c.value for c in at.caption)
    model = at.session_state["config"]["model"]
    assert model["arch"] == "pretrained" and model["weights"] == "none" and model["input_size"] == 32
    assert model["freeze"] == "none"
    at.selectbox(key="model_pretrained_freeze").set_value("backbone").run()
    assert metric(at, "Trainable parameters") == "10,250"
    assert metric(at, "Frozen parameters") == "1,517,856"
    assert [w.value for w in at.warning] == config_warnings({"model": at.session_state["config"]["model"]})


def test_a_frozen_random_backbone_is_warned_about_and_fine_tuning_it_is_not(empty_runs,
                                                                           offline_hub):
    cfg = resolve_config({"model": {"arch": "pretrained", "backbone": "mobilenet_v3_small",
                                    "weights": "none", "freeze": "backbone", "input_size": 32}})
    at = app_page("model", state={"config": cfg})
    (warning,) = config_warnings(cfg)
    assert [w.value for w in at.warning] == [warning]
    assert metric(at, "Frozen parameters") == "1,517,856", "still valid: the page shows it"
    at.selectbox(key="model_pretrained_freeze").set_value("none").run()
    assert not at.exception and not at.warning
    assert at.session_state["config"]["model"]["freeze"] == "none"


def test_pretrained_imagenet_weights_are_counted_unloaded_and_say_where_they_come_from(
        empty_runs, offline_hub):
    at = open_model_page()
    pick_pretrained(at, "imagenet")
    assert not at.error, "the web process neither downloads nor loads ImageNet weights"
    assert any("to be downloaded from https://download.pytorch.org/models/resnet18" in c.value
               for c in at.caption)
    assert metric(at, "Frozen parameters") == "11,176,512"
    assert at.session_state["config"]["model"]["weights"] == "imagenet"
    assert not (offline_hub / "hub" / "checkpoints").exists()


def test_pretrained_local_weights_file_is_checked(empty_runs, offline_hub, tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a state dict")
    at = open_model_page()
    pick_pretrained(at, "file")
    assert at.error and "Weights file" in at.error[0].value
    at.text_input(key="model_pretrained_path").input(str(tmp_path / "junk.pth")).run()
    assert not at.exception
    assert "is not a weights file torch can load safely" in at.error[0].value


def test_model_page_shows_the_pytorch_code_of_the_working_config(empty_runs):
    at = open_model_page()
    at.toggle(key="model_show_code").set_value(True).run()
    assert not at.exception, at.exception
    code = at.code[0].value
    assert "class DNN(nn.Module)" in code and "[512, 256, 128]" in code
    assert any(b.proto.label == "Download the script" for b in at.get("download_button"))
