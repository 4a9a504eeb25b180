"""Model page: choose and size an architecture; the per-layer table and parameter count follow
every change. The valid model goes into the working config's `model` section.
"""
import json
import re

import streamlit as st

from dlcore.config import (ACTIVATIONS, ARCHS, CELLS, FREEZES, INITS, PRETRAINED_BACKBONES,
                           ConfigError, resolve_config)
from dlcore.datasets import BUILTIN, DatasetUnavailable, dataset_info
from dlcore.export import config_code
from dlcore.figures import layer_params_figure
from dlcore.models import build_model, summarize
from pages.common import config, data_root, route_through_app

route_through_app()

ARCH_LABELS = {"dnn": "DNN", "cnn": "CNN", "resnet": "ResNet", "rnn": "RNN",
               "pretrained": "Pretrained (transfer)"}
WEIGHT_KINDS = {"imagenet": "ImageNet (torchvision)", "file": "Local file", "none": "Random init"}
FREEZE_LABELS = {"backbone": "Backbone (train the new head only)", "none": "Nothing (fine-tune all)"}
INIT_HELP = ("default: PyTorch's own; gaussian: normal, std 1; xavier: xavier_normal_; "
             "kaiming: kaiming_normal_; zeros: every weight zero (it cannot learn). "
             "Biases start at zero except with default.")
# name: (model section, dataset whose input shape the tutorial used, its parameter count there)
PRESETS = {
    "Tutorial DNN": ({"arch": "dnn", "hidden_dims": [512, 256, 128], "batchnorm": True,
                      "dropout": 0.2, "activation": "relu", "init": "kaiming"}, "mnist", 569_226),
    "Tutorial CNN": ({"arch": "cnn", "blocks": [[16, 32], [64, 128], [128, 256]],
                      "fc_dims": [2048, 256], "batchnorm": False, "dropout": 0.2,
                      "activation": "relu", "init": "kaiming"}, "cifar10", 9_457_962),
}
# Building happens inside the web server: refuse what would take gigabytes of memory.
MAX_PARAMS = 100_000_000


# ---------------------------------------------------------------- text <-> lists

def _widths(text: str, what: str, example: str) -> list[int]:
    out = []
    for part in re.split(r"[,\s]+", text.strip().strip("[]")):
        if not part:
            continue
        if not part.isdigit() or int(part) < 1:
            raise ValueError(f"{what}: {part!r} is not a positive whole number; write widths "
                             f"separated by commas, e.g. {example}")
        out.append(int(part))
    return out


def _blocks(text: str) -> list[list[int]]:
    pairs = []
    for part in (p for p in text.replace("],", ";").split(";") if p.strip(" []")):
        pair = _widths(part, "CNN blocks", "16, 32; 64, 128")
        if len(pair) != 2:
            raise ValueError(f"CNN blocks: {part.strip()!r} is not a [hidden, out] channel pair; "
                             "write pairs separated by semicolons, e.g. 16, 32; 64, 128; 128, 256")
        pairs.append(pair)
    return pairs


def _join(xs) -> str:
    return ", ".join(map(str, xs))


def _widget_values(section: dict) -> dict:
    """The widgets' values that show a resolved model section."""
    a = section["arch"]
    v = {}
    if a in ("dnn", "cnn"):
        v.update({f"model_{a}_batchnorm": section["batchnorm"],
                  f"model_{a}_dropout": float(section["dropout"]),
                  f"model_{a}_activation": section["activation"]})
    if a == "dnn":
        v["model_dnn_hidden"] = _join(section["hidden_dims"])
    elif a == "cnn":
        v["model_cnn_blocks"] = "; ".join(_join(b) for b in section["blocks"])
        v["model_cnn_fc"] = _join(section["fc_dims"])
    elif a == "resnet":
        v["model_resnet_stages"] = _join(section["stage_blocks"])
        v["model_resnet_width"] = section["base_width"]
    elif a == "rnn":
        v.update({"model_rnn_cell": section["cell"], "model_rnn_hidden": section["hidden_size"],
                  "model_rnn_layers": section["num_layers"],
                  "model_rnn_bidirectional": section["bidirectional"],
                  "model_rnn_dropout": float(section["dropout"])})
    elif a == "pretrained":
        w = section["weights"]
        v.update({"model_pretrained_backbone": section["backbone"],
                  "model_pretrained_weights": w if w in ("imagenet", "none") else "file",
                  "model_pretrained_path": "" if w in ("imagenet", "none") else w,
                  "model_pretrained_freeze": section["freeze"],
                  "model_pretrained_size": section["input_size"],
                  "model_pretrained_dropout": float(section["dropout"])})
    return v


# ---------------------------------------------------------------- state

def _drafts() -> dict:
    """The last valid section of every architecture, so switching back and forth keeps edits."""
    return st.session_state.setdefault("model_drafts", {})


def _section_for(arch: str) -> dict:
    current = config()["model"]
    if current.get("arch") == arch:
        return current
    return _drafts().get(arch) or resolve_config({"model": {"arch": arch}})["model"]


def _start_widgets() -> None:
    """Widgets start from the working config; Streamlit forgets them when they are not drawn."""
    st.session_state.setdefault("model_arch", config()["model"].get("arch", "dnn"))
    st.session_state.setdefault("model_init", config()["model"].get("init", "kaiming"))
    for key, value in _widget_values(_section_for(st.session_state["model_arch"])).items():
        st.session_state.setdefault(key, value)


def _use_preset(name: str) -> None:
    section = resolve_config({"model": PRESETS[name][0]})["model"]
    config()["model"] = section
    _drafts()[section["arch"]] = section
    st.session_state["model_arch"] = section["arch"]
    st.session_state["model_init"] = section["init"]
    st.session_state.update(_widget_values(section))


# ---------------------------------------------------------------- controls

def _controls(arch: str) -> dict:
    """The arch's widgets as a model section (unvalidated); ValueError for unreadable text."""
    if arch in ("dnn", "cnn"):
        if arch == "dnn":
            text = st.text_input("Hidden layer widths", key="model_dnn_hidden",
                                 help="One fully connected layer per number, e.g. 512, 256, 128. "
                                      "Empty: no hidden layer (logistic regression).")
        else:
            blocks = st.text_input("Convolution blocks ([hidden, out] channels)", key="model_cnn_blocks",
                                   help="Each pair is conv-act-conv-act-maxpool, halving the image, "
                                        "e.g. 16, 32; 64, 128; 128, 256.")
            fc = st.text_input("Fully connected widths", key="model_cnn_fc",
                               help="Hidden layers after the convolutions, e.g. 2048, 256.")
        c = st.columns(2)
        act = c[0].selectbox("Activation", ACTIVATIONS, key=f"model_{arch}_activation")
        dropout = c[1].slider("Dropout", 0.0, 0.9, step=0.05, key=f"model_{arch}_dropout",
                              help="After every hidden fully connected layer.")
        bn = st.toggle("Batch normalisation", key=f"model_{arch}_batchnorm",
                       help="After every convolution and hidden fully connected layer.")
        section = {"arch": arch, "batchnorm": bn, "dropout": dropout, "activation": act}
        if arch == "dnn":
            section["hidden_dims"] = _widths(text, "Hidden layer widths", "512, 256, 128")
        else:
            section["blocks"] = _blocks(blocks)
            section["fc_dims"] = _widths(fc, "Fully connected widths", "2048, 256")
        return section
    if arch == "resnet":
        stages = st.text_input("Blocks per stage", key="model_resnet_stages",
                               help="Residual blocks in each stage; every stage after the first "
                                    "halves the image and doubles the width, e.g. 2, 2, 2, 2.")
        width = st.number_input("Base width (channels of the first stage)", 4, 512, step=4,
                                key="model_resnet_width")
        return {"arch": arch, "stage_blocks": _widths(stages, "Blocks per stage", "2, 2, 2, 2"),
                "base_width": int(width)}
    if arch == "pretrained":
        return _pretrained_controls()
    c = st.columns(2)
    cell = c[0].selectbox("Cell", CELLS, key="model_rnn_cell", format_func=str.upper)
    hidden = c[1].number_input("Hidden size", 1, 4096, step=16, key="model_rnn_hidden")
    layers = c[0].number_input("Layers", 1, 8, key="model_rnn_layers")
    dropout = c[1].slider("Dropout", 0.0, 0.9, step=0.05, key="model_rnn_dropout",
                          help="Between stacked layers and before the output layer.")
    bi = st.toggle("Bidirectional", key="model_rnn_bidirectional")
    return {"arch": arch, "cell": cell, "hidden_size": int(hidden), "num_layers": int(layers),
            "bidirectional": bi, "dropout": dropout}


def _pretrained_controls() -> dict:
    c = st.columns(2)
    backbone = c[0].selectbox("Backbone", PRETRAINED_BACKBONES, key="model_pretrained_backbone",
                              help="A torchvision ImageNet model; its classifier is replaced by a "
                                   "new one for this dataset's classes.")
    size = c[1].number_input("Input size (pixels)", 32, 512, step=16, key="model_pretrained_size",
                             help="Images are resized to this square inside the model: 224 as "
                                  "in ImageNet, 64-96 trains much faster on a CPU.")
    kind = st.radio("Weights", WEIGHT_KINDS, key="model_pretrained_weights", horizontal=True,
                    format_func=WEIGHT_KINDS.get,
                    help="ImageNet: torchvision's own, from the torch hub cache or downloaded. "
                         "Local file: a .pth state_dict in torchvision's format.")
    weights = kind
    if kind == "file":
        weights = st.text_input("Weights file (.pth state_dict)", key="model_pretrained_path",
                                placeholder="/path/to/resnet18-f37072fd.pth").strip()
        if not weights:
            raise ValueError("Weights file: give the path of a .pth state_dict file, "
                             "or choose ImageNet or Random init")
    c = st.columns(2)
    freeze = c[0].selectbox("Freeze", FREEZES, key="model_pretrained_freeze",
                            format_func=FREEZE_LABELS.get,
                            help="Frozen weights are not trained; frozen BatchNorm keeps "
                                 "ImageNet's statistics.")
    dropout = c[1].slider("Dropout", 0.0, 0.9, step=0.05, key="model_pretrained_dropout",
                          help="Before the new classifier.")
    return {"arch": "pretrained", "backbone": backbone, "weights": weights, "freeze": freeze,
            "input_size": int(size), "dropout": dropout}


# ---------------------------------------------------------------- summary

def _rough_params(m: dict, shape, k: int) -> int:
    """Weights of the big layers only; enough to refuse a model too large to build here."""
    c, h, w = shape
    if m["arch"] == "pretrained":
        return 0    # a fixed list of backbones, the largest (vgg16) 0.55 GB
    if m["arch"] == "dnn":
        dims = [c * h * w, *m["hidden_dims"], k]
        return sum(a * b for a, b in zip(dims, dims[1:]))
    if m["arch"] == "cnn":
        n = 0
        for hidden, out in m["blocks"]:
            n, c, h, w = n + 9 * (c * hidden + hidden * out), out, h // 2, w // 2
        dims = [c * h * w, *m["fc_dims"], k]
        return n + sum(a * b for a, b in zip(dims, dims[1:]))
    if m["arch"] == "resnet":
        width = m["base_width"]
        n, n_in = 9 * c * width, width
        for i, blocks in enumerate(m["stage_blocks"]):
            out = width * 2 ** i
            n, n_in = n + 9 * n_in * out + 9 * out * out * (2 * blocks - 1) + n_in * out, out
        return n + n_in * k
    gates, dirs = {"rnn": 1, "lstm": 4, "gru": 3}[m["cell"]], 2 if m["bidirectional"] else 1
    n, n_in = 0, c * w
    for _ in range(m["num_layers"]):
        n, n_in = n + dirs * gates * m["hidden_size"] * (n_in + m["hidden_size"]), m["hidden_size"] * dirs
    return n + n_in * k


@st.cache_data(show_spinner="Building the model...", max_entries=64)
def _summary(model_json: str, shape_json: str, num_classes: int) -> dict:
    section, shape = json.loads(model_json), tuple(json.loads(shape_json))
    return summarize(build_model(section, shape, num_classes), shape)


def _validated(section: dict, info) -> tuple[dict, dict]:
    """(resolved section, summary) or ConfigError naming what is wrong."""
    resolved = resolve_config({"model": section})["model"]
    rough = _rough_params(resolved, info.shape, len(info.classes))
    if rough > MAX_PARAMS:
        raise ConfigError(f"this model would have about {rough:,} parameters; the page builds "
                          f"models of up to {MAX_PARAMS:,}: make the layers fewer or narrower")
    summary = _summary(json.dumps(resolved, sort_keys=True), json.dumps(list(info.shape)),
                       len(info.classes))
    return resolved, summary


def _shape(s) -> str:
    return "×".join(map(str, s))


def _show_summary(resolved: dict, summary: dict, info, dataset: str) -> None:
    n = summary["trainable"]
    pretrained = resolved["arch"] == "pretrained"
    c = st.columns(4 if pretrained else 3)
    c[0].metric("Trainable parameters", f"{n:,}",
                help=f"For the {dataset} input {_shape(info.shape)} and {len(info.classes)} classes.")
    if pretrained:
        c[1].metric("Frozen parameters", f"{summary['frozen']:,}",
                    help="Backbone weights that training leaves as they are.")
    c[-2].metric("Layers with parameters", sum(1 for r in summary["rows"] if r["params"]))
    c[-1].metric("Weights in memory", f"{4 * (n + summary['frozen']) / 1e6:.1f} MB",
                 help="float32, without optimiser state or activations")
    if pretrained:
        st.caption(f"Backbone weights: **{summary.get('weights', 'unknown')}**. Images are "
                   f"resized to {resolved['input_size']}×{resolved['input_size']}, gray repeated "
                   "to three channels and normalised with ImageNet's mean and std inside the "
                   "model; the weight initialisation applies to the new head only.")
    st.caption(f"Computed for **{dataset}**: input {_shape(info.shape)}, {len(info.classes)} "
               "classes (the dataset chosen on the Data page).")
    for name, (preset, ref, count) in PRESETS.items():
        ref_shape = BUILTIN[ref].shape
        if resolve_config({"model": preset})["model"] == resolved and tuple(info.shape) != ref_shape:
            st.caption(f"The {name} has {count:,} parameters on {BUILTIN[ref].title}'s "
                       f"{_shape(ref_shape)} input; the count above is for {dataset}'s shape.")
    rows = [{"layer": "input", "type": "", "output shape": str(summary["input_shape"]),
             "parameters": 0}]
    rows += [{"layer": r["name"], "type": r["type"], "output shape": str(r["output_shape"]),
              "parameters": r["params"]} for r in summary["rows"]]
    tab_table, tab_chart = st.tabs(["Layers", "Where the parameters are"])
    with tab_table:
        st.dataframe(rows, hide_index=True, height=min(38 + 35 * len(rows), 560),
                     column_config={"parameters": st.column_config.NumberColumn(format="localized")})
    with tab_chart:
        st.plotly_chart(layer_params_figure(summary["rows"]), key="model_params_chart")


# ---------------------------------------------------------------- page

@st.cache_data(show_spinner=False, max_entries=16)
def _code(cfg_json: str, root: str) -> str:
    return config_code(json.loads(cfg_json), root)


def page() -> None:
    st.title("Model")
    cfg = config()
    dataset = cfg["data"].get("dataset", "mnist-5k")
    try:
        info = dataset_info(cfg["data"], data_root())
    except (ConfigError, DatasetUnavailable) as e:
        st.error(f"The input shape comes from the dataset on the Data page, which has a problem: {e}")
        st.page_link("pages/data.py", label="Go to the Data page", icon=":material/dataset:")
        return
    st.caption(f"Input {_shape(info.shape)} with {len(info.classes)} classes, from **{dataset}** "
               "on the Data page. The table and the count follow every change.")
    _start_widgets()

    left, right = st.columns([1, 1.6], gap="large")
    with left:
        c = st.columns(len(PRESETS) + 1, vertical_alignment="center")
        c[0].markdown("**Start from**")
        for i, name in enumerate(PRESETS, start=1):
            c[i].button(name, on_click=_use_preset, args=(name,), width="stretch")
        arch = st.segmented_control("Architecture", ARCHS, key="model_arch", required=True,
                                    format_func=ARCH_LABELS.get)
        try:
            section = _controls(arch)
            problem = None
        except ValueError as e:
            section, problem = None, str(e)
        init = st.selectbox("Weight initialisation", INITS, key="model_init", help=INIT_HELP)

    with right:
        if problem is None:
            try:
                resolved, summary = _validated({**section, "init": init}, info)
            except (ConfigError, RuntimeError, MemoryError) as e:
                problem = str(e)
        if problem:
            st.error(problem)
            kept = cfg["model"]
            st.caption(f"The working config keeps the last valid model ({ARCH_LABELS[kept['arch']]}); "
                       "fix the field above to replace it.")
            return
        cfg["model"] = resolved
        _drafts()[arch] = resolved
        _show_summary(resolved, summary, info, dataset)
        st.page_link("pages/train.py", label="Next: train it", icon=":material/arrow_forward:")
        if st.toggle("Show the PyTorch code", key="model_show_code",
                     help="a standalone script (torch and torchvision only) with this model, its "
                          "init, the data and the training loop of the Train page's settings"):
            try:
                code = _code(json.dumps(cfg, sort_keys=True), data_root())
            except (ConfigError, DatasetUnavailable, OSError) as e:
                st.error(f"No code: {e}")
            else:
                st.download_button("Download the script", data=code, file_name="train_model.py",
                                   mime="text/x-python", icon=":material/download:",
                                   on_click="ignore")
                st.code(code, language="python")


page()
