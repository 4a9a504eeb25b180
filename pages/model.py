"""Model page: choose and size an architecture; the per-layer table and parameter count follow
every change. The valid model goes into the working config's `model` section.
"""
import json

import streamlit as st

from dlcore.config import (MODEL_CONFIGS, ConfigError, config_warnings, default_config, limits,
                           resolve_config)
from dlcore.datasets import DatasetUnavailable, dataset_info
from dlcore.display import column_width
from dlcore.export import config_code
from dlcore.fields import blocks_text, parse_blocks, parse_widths, widths_text
from dlcore.figures import layer_params_figure
from dlcore.models import TUTORIAL_MODELS, model_summary, summary_rows
from dlcore.summaries import model_notes, shape_text
from pages.common import config, data_root, route_through_app

route_through_app()
ss = st.session_state
# the last valid section of every architecture, so switching back and forth keeps edits
drafts = ss.setdefault("model_drafts", {})

ARCH_LABELS = {"dnn": "DNN", "cnn": "CNN", "resnet": "ResNet", "rnn": "RNN",
               "pretrained": "Pretrained (transfer)"}
WEIGHT_KINDS = {"imagenet": "ImageNet (torchvision)", "file": "Local file", "none": "Random init"}
FREEZE_LABELS = {"backbone": "Backbone (train the new head only)", "none": "Nothing (fine-tune all)"}
INIT_HELP = ("default: PyTorch's own; gaussian: normal, std 1; xavier: xavier_normal_; kaiming: "
             "kaiming_normal_; zeros: all weights zero (cannot learn). Biases zero, except with default.")
# each model field's widget key: model_<arch>_<short name> (pretrained weights: kind and path)
SHORT = {"hidden_dims": "hidden", "hidden_size": "hidden", "fc_dims": "fc", "stage_blocks": "stages",
         "base_width": "width", "num_layers": "layers", "input_size": "size"}
KEYS = {a: {f: f"model_{a}_{SHORT.get(f, f)}" for f in c.own_fields() if f != "weights"}
        for a, c in MODEL_CONFIGS.items()}
# layer lists are typed as text: (shown as, read back with)
TEXT = {"hidden_dims": (widths_text, lambda t: parse_widths(t, "Hidden layer widths", "512, 256, 128")),
        "fc_dims": (widths_text, lambda t: parse_widths(t, "Fully connected widths", "2048, 256")),
        "stage_blocks": (widths_text, lambda t: parse_widths(t, "Blocks per stage", "2, 2, 2, 2")),
        "blocks": (blocks_text, parse_blocks)}


def _widget_values(section: dict) -> dict:
    """The widgets' values that show a resolved model section."""
    arch = section["arch"]
    v = {key: TEXT[f][0](section[f]) if f in TEXT else section[f] for f, key in KEYS[arch].items()}
    if arch == "pretrained":
        w = section["weights"]
        v["model_pretrained_weights"] = w if w in ("imagenet", "none") else "file"
        v["model_pretrained_path"] = "" if w in ("imagenet", "none") else w
    return v


def _section_of_widgets(arch: str) -> dict:
    """The drawn widgets as a model section (unvalidated); ValueError for unreadable text."""
    section = {"arch": arch}
    for f, key in KEYS[arch].items():
        section[f] = TEXT[f][1](ss[key]) if f in TEXT else ss[key]
    if arch == "pretrained":
        section["weights"] = ss["model_pretrained_weights"]
        if section["weights"] == "file":
            section["weights"] = ss["model_pretrained_path"].strip()
            if not section["weights"]:
                raise ValueError("Weights file: give the path of a .pth state_dict file, "
                                 "or choose ImageNet or Random init")
    return section


def _start_widgets() -> None:
    """Widgets start from the working config; Streamlit forgets them when they are not drawn."""
    current = config()["model"]
    arch = ss.setdefault("model_arch", current.get("arch", limits("model.arch").default))
    ss.setdefault("model_init", current.get("init", limits("model.init").default))
    section = current if current.get("arch") == arch else \
        drafts.get(arch) or default_config(arch)["model"]
    for key, value in _widget_values(section).items():
        ss.setdefault(key, value)


def _use_preset(name: str) -> None:
    section = resolve_config({"model": TUTORIAL_MODELS[name][0]})["model"]
    config()["model"] = drafts[section["arch"]] = section
    ss["model_arch"], ss["model_init"] = section["arch"], section["init"]
    ss.update(_widget_values(section))


# ---------------------------------------------------------------- controls

def _number(where, label: str, field: str, arch: str, **kw):
    where.number_input(label, *limits(f"model.{field}", arch).bounds, key=KEYS[arch][field], **kw)


def _choice(where, label: str, field: str, arch: str, **kw):
    where.selectbox(label, limits(f"model.{field}", arch).choices, key=KEYS[arch][field], **kw)


def _dropout(where, arch: str, help: str):
    where.slider("Dropout", *limits("model.dropout", arch).bounds, step=0.05,
                 key=KEYS[arch]["dropout"], help=help)


def _controls(arch: str) -> None:
    if arch == "dnn":
        st.text_input("Hidden layer widths", key="model_dnn_hidden",
                      help="One fully connected layer per number, e.g. 512, 256, 128. "
                           "Empty: no hidden layer (logistic regression).")
    elif arch == "cnn":
        st.text_input("Convolution blocks ([hidden, out] channels)", key="model_cnn_blocks",
                      help="Each pair is conv-act-conv-act-maxpool, halving the image, "
                           "e.g. 16, 32; 64, 128; 128, 256.")
        st.text_input("Fully connected widths", key="model_cnn_fc",
                      help="Hidden layers after the convolutions, e.g. 2048, 256.")
    if arch in ("dnn", "cnn"):
        c = st.columns(2)
        _choice(c[0], "Activation", "activation", arch)
        _dropout(c[1], arch, "After every hidden fully connected layer.")
        st.toggle("Batch normalisation", key=KEYS[arch]["batchnorm"],
                  help="After every convolution and hidden fully connected layer.")
    elif arch == "resnet":
        st.text_input("Blocks per stage", key="model_resnet_stages",
                      help="Residual blocks in each stage; every stage after the first "
                           "halves the image and doubles the width, e.g. 2, 2, 2, 2.")
        _number(st, "Base width (channels of the first stage)", "base_width", arch, step=4)
    elif arch == "rnn":
        c = st.columns(2)
        _choice(c[0], "Cell", "cell", arch, format_func=str.upper)
        _number(c[1], "Hidden size", "hidden_size", arch, step=16)
        _number(c[0], "Layers", "num_layers", arch)
        _dropout(c[1], arch, "Between stacked layers and before the output layer.")
        st.toggle("Bidirectional", key="model_rnn_bidirectional")
    else:
        _choice(st, "Backbone", "backbone", "pretrained",
                help="A torchvision ImageNet model; its classifier is replaced by a new one for "
                     "this dataset's classes.")
        _number(st, "Input size (pixels)", "input_size", "pretrained", step=16,
                help="Images are resized to this square inside the model: 224 as in ImageNet, "
                     "64-96 trains much faster on a CPU.")
        st.radio("Weights", WEIGHT_KINDS, key="model_pretrained_weights", horizontal=True,
                 format_func=WEIGHT_KINDS.get, on_change=_weights_changed,
                 help="ImageNet: torchvision's own, from the torch hub cache or downloaded by the "
                      "training worker. Local file: a .pth state_dict in torchvision's format.")
        if ss["model_pretrained_weights"] == "file":
            st.text_input("Weights file (.pth state_dict)", key="model_pretrained_path",
                          placeholder="/path/to/resnet18-f37072fd.pth")
        _choice(st, "Freeze", "freeze", "pretrained", format_func=FREEZE_LABELS.get,
                help="Frozen weights are not trained; frozen BatchNorm keeps ImageNet's statistics.")
        _dropout(st, "pretrained", "Before the new classifier.")


def _weights_changed() -> None:
    # a random backbone is not worth freezing: Freeze follows, as dlcore.config's default does
    if ss["model_pretrained_weights"] == "none":
        ss[KEYS["pretrained"]["freeze"]] = "none"


# ---------------------------------------------------------------- summary

def _show_summary(resolved: dict, summary: dict, info, dataset: str) -> None:
    pretrained = resolved["arch"] == "pretrained"
    with st.container(horizontal=True, gap="medium"):
        st.metric("Trainable parameters", f"{summary['trainable']:,}", width="content",
                  help=f"For the {dataset} input {shape_text(info.shape)} and {len(info.classes)} classes.")
        if pretrained:
            st.metric("Frozen parameters", f"{summary['frozen']:,}", width="content",
                      help="Backbone weights that training leaves as they are.")
        st.metric("Layers with parameters", summary["layers_with_params"], width="content")
        st.metric("Weights in memory", f"{summary['weights_mb']:.1f} MB", width="content",
                  help="float32, without optimiser state or activations")
    for text in model_notes(resolved, summary, info, dataset):
        st.caption(text)


def _layers(summary: dict) -> None:
    """Across the page, below the columns: a backbone's layer names are long."""
    tab_table, tab_chart = st.tabs(["Layers", "Where the parameters are"])
    with tab_table:
        rows = summary_rows(summary)      # layer names whole, and kept in view when scrolled
        layer = st.column_config.TextColumn(width=column_width(r["layer"] for r in rows), pinned=True)
        st.dataframe(rows, hide_index=True, column_config={
            "layer": layer, "parameters": st.column_config.NumberColumn(format="localized")})
    with tab_chart:
        st.plotly_chart(layer_params_figure(summary["rows"]), key="model_params_chart")


# ---------------------------------------------------------------- page

@st.cache_data(show_spinner=False, max_entries=16)
def _code(cfg_json: str, root: str) -> str:
    return config_code(json.loads(cfg_json), root)


def _code_view(cfg: dict) -> None:
    try:
        code = _code(json.dumps(cfg, sort_keys=True), data_root())
    except (ConfigError, DatasetUnavailable, OSError) as e:
        st.error(f"No code: {e}")
        return
    st.download_button("Download the script", data=code, file_name="train_model.py",
                       mime="text/x-python", icon=":material/download:", on_click="ignore")
    st.code(code, language="python")


def page() -> None:
    st.title("Model")
    cfg = config()
    dataset = cfg["data"].get("dataset", limits("data.dataset").default)
    try:
        info = dataset_info(cfg["data"], data_root())
    except (ConfigError, DatasetUnavailable) as e:
        st.error(f"The input shape comes from the dataset on the Data page, which has a problem: {e}")
        st.page_link("pages/data.py", label="Go to the Data page", icon=":material/dataset:")
        return
    st.caption(f"Input {shape_text(info.shape)} with {len(info.classes)} classes, from **{dataset}** "
               "on the Data page. The table and the count follow every change.")
    _start_widgets()

    # across the page, above the columns: whole labels at laptop widths
    with st.container(horizontal=True, vertical_alignment="center"):
        st.markdown("**Start from**", width="content")
        for name in TUTORIAL_MODELS:
            st.button(name, on_click=_use_preset, args=(name,), width="content")
    arch = st.segmented_control("Architecture", limits("model.arch").choices, key="model_arch",
                                required=True, format_func=ARCH_LABELS.get)
    left, right = st.columns([1, 1.6], gap="large")
    with left:
        _controls(arch)
        init = st.selectbox("Weight initialisation", limits("model.init").choices, key="model_init",
                            help=INIT_HELP)

    with right:
        try:
            resolved = resolve_config({"model": {**_section_of_widgets(arch), "init": init}})["model"]
            summary = model_summary(resolved, info.shape, len(info.classes))
        except (ValueError, RuntimeError) as e:     # ConfigError is a ValueError
            st.error(str(e))
            st.caption(f"The working config keeps the last valid model "
                       f"({ARCH_LABELS[cfg['model']['arch']]}); fix the field above to replace it.")
            return
        drafts[arch] = cfg["model"] = resolved
        for text in config_warnings({"model": resolved}):
            st.warning(text)
        _show_summary(resolved, summary, info, dataset)
    _layers(summary)
    st.page_link("pages/train.py", label="Next: train it", icon=":material/arrow_forward:")
    if st.toggle("Show the PyTorch code", key="model_show_code",
                 help="a standalone script (torch and torchvision only) with this model, its "
                      "init, the data and the training loop of the Train page's settings"):
        _code_view(cfg)


page()
