"""Data page: pick a dataset, see its classes and samples, and set the split, augmentation
and normalisation that training will use (written to the working config's `data` section).
"""
import json
import os

import streamlit as st

import dlcore.datasets as datasets
from dlcore.splits import class_counts
from dlcore.config import ConfigError, resolve_config
from dlcore.figures import class_counts_figure
from dlcore.images import ImageError
from dlcore.preview import augmented_batch, raw_samples
from dlcore.summaries import batch_text, dataset_tiles, label_rows, split_text
from pages.common import config, data_root, route_through_app

route_through_app()

BATCH_SIZES = (8, 16, 32, 64, 128, 256)
SHOWN = 32          # images drawn from a mini-batch; bigger batches only change the shape
PROBLEMS = (ConfigError, datasets.DatasetUnavailable, ImageError)


# ---------------------------------------------------------------- cached engine calls
# Arguments are JSON strings of only the settings a result depends on, so that moving an
# augmentation slider does not reload the class counts or the raw samples.

@st.cache_data(show_spinner="Counting images per class...", max_entries=16)
def _class_counts(source_json: str, root: str) -> dict:
    return class_counts(json.loads(source_json), root)


@st.cache_data(show_spinner="Loading samples...", max_entries=16)
def _raw_samples(split_json: str, root: str) -> dict:
    return raw_samples(json.loads(split_json), n=SHOWN, seed=0, data_root=root)


@st.cache_data(show_spinner="Drawing a mini-batch...", max_entries=32)
def _augmented(data_json: str, root: str, batch_size: int, seed: int) -> dict:
    batch = augmented_batch(json.loads(data_json), batch_size, seed, data_root=root, show=SHOWN)
    batch["split_text"] = split_text(json.loads(data_json), batch["label_shape"][0],
                                     batch["batches_per_epoch"], root)
    return batch


# ---------------------------------------------------------------- widgets

def _start_widgets(data: dict) -> None:
    """Widgets start from the working config; Streamlit forgets them when the page is left."""
    aug = data["augment"]
    for key, value in (("data_dataset", data["dataset"]), ("data_folder", data.get("root") or ""),
                       ("data_image_size", int(data["image_size"])),
                       ("data_val_fraction", float(data["val_fraction"])),
                       ("data_limit", int(data.get("limit") or 0)),
                       ("data_crop", int(aug["crop_padding"])), ("data_hflip", bool(aug["hflip"])),
                       ("data_rotation", int(round(aug["rotation"]))),
                       ("data_normalize", bool(data["normalize"]))):
        st.session_state.setdefault(key, value)
    batch = config()["train"].get("batch_size", 32)
    st.session_state.setdefault("data_batch", batch if batch in BATCH_SIZES else 32)
    st.session_state.setdefault("data_seed", 0)


def _dataset_label(name: str, available: dict) -> str:
    if name == "folder":
        return "Your image folder · folder"
    title = datasets.BUILTIN[name].title
    return f"{title} · {name}" + ("" if available[name][0] else " (not on this machine)")


def _download(name: str) -> None:
    with st.spinner(f"Downloading {name}..."):
        try:
            where = datasets.download(name, data_root())
        except PROBLEMS as e:
            st.error(f"Download failed. {e}")
            return
    st.session_state["data_flash"] = f"{name} downloaded to {where}"
    st.rerun()


def _source_controls(available: dict) -> tuple[str, str | None, int]:
    """Dataset picker, the folder's path and image size, and how to get a missing dataset."""
    name = st.selectbox("Dataset", datasets.dataset_names(), key="data_dataset",
                        format_func=lambda n: _dataset_label(n, available))
    root, size = None, int(st.session_state["data_image_size"])
    if name == "folder":
        root = st.text_input("Image folder", key="data_folder",
                             placeholder="/path/to/images (one sub-folder per class)").strip() or None
        size = st.number_input("Image size (pixels, square)", 8, 256, step=4, key="data_image_size",
                               help="Every image is resized to this width and height.")
    ok, where = available[name]
    if flash := st.session_state.pop("data_flash", None):
        st.success(flash)
    if ok:
        st.caption(f"From: {where}")
    else:
        st.warning(f"**{datasets.BUILTIN[name].title}** is not on this machine. To get it: "
                   f"{datasets.how_to_get(name, data_root(), on_data_page=True)}. The data "
                   f"folder ($DLCORE_DATA) is `{os.path.abspath(data_root())}`.")
        if st.button(f"Download {name}", icon=":material/download:",
                     help="Needs an internet connection."):
            _download(name)
    return name, root, size


def _split_controls() -> tuple[float, int | None]:
    vf = st.slider("Validation fraction", 0.05, 0.5, step=0.05, key="data_val_fraction",
                   help="Share of the training set held out to pick the best epoch.")
    limit = st.number_input("Use at most this many training images (0 = all)", 0, None, step=500,
                            key="data_limit", help="Quick experiments on a stratified subset.")
    return float(vf), (int(limit) if limit else None)


def _augment_controls() -> tuple[dict, bool, int]:
    c = st.columns([1.2, 1.2, 1, 1, 0.8], vertical_alignment="bottom")
    crop = c[0].slider("Random crop padding", 0, 8, key="data_crop",
                       help="Pad by this many pixels, then cut a random window of the original size.")
    rotation = c[1].slider("Rotation (± degrees)", 0, 45, key="data_rotation")
    hflip = c[2].toggle("Horizontal flip", key="data_hflip",
                        help="Mirror half the images; wrong for digits, fine for photos.")
    normalize = c[2].toggle("Normalise", key="data_normalize",
                            help="Subtract the per-channel mean and divide by the std of the training split.")
    batch = c[3].selectbox("Batch size", BATCH_SIZES, key="data_batch",
                           help="For this preview only; training uses the Train page's batch size.")
    if c[4].button("New batch", icon=":material/casino:"):
        st.session_state["data_seed"] += 1
    return {"crop_padding": int(crop), "hflip": bool(hflip), "rotation": int(rotation)}, \
        bool(normalize), int(batch)


# ---------------------------------------------------------------- rendering

def _show_counts(data: dict, root: str) -> None:
    """Class metrics, chart and table."""
    source = {k: data[k] for k in ("dataset", "root", "image_size")}
    counts = _class_counts(json.dumps(source, sort_keys=True), root)
    # tiles as wide as their text, wrapping onto a second line in a narrow column
    with st.container(horizontal=True, gap="medium"):
        for label, value in dataset_tiles(counts, datasets.dataset_info(data, root).shape):
            st.metric(label, value, width="content")
    st.plotly_chart(class_counts_figure(counts), key="data_counts_chart")
    with st.expander("Images per class"):
        st.dataframe({"class": counts["classes"], "train": counts["train"], "test": counts["test"]},
                     hide_index=True)


def _show_samples(data: dict, root: str, batch_size: int) -> None:
    split = {k: data[k] for k in ("dataset", "root", "image_size", "val_fraction", "limit")}
    seed = st.session_state["data_seed"]
    raw = _raw_samples(json.dumps(split, sort_keys=True), root)
    batch = _augmented(json.dumps(data, sort_keys=True), root, batch_size, seed)
    left, right = st.columns(2, gap="large")
    with left:
        st.markdown("**Raw training images**")
        st.image(raw["image"], width="stretch",
                 caption=f"{len(raw['labels'])} images, a few of every class, as stored")
        with st.expander("Labels"):
            st.code(label_rows(raw["labels"]), language=None)
    with right:
        st.markdown("**Augmented mini-batch** (what the training loop sees)")
        look = ("normalised values stretched to 0-255 per image for display"
                if data["normalize"] else "values 0-1")
        st.image(batch["image"], width="stretch", caption=f"batch seed {seed}: "
                 f"{len(batch['labels'])} of {batch['shape'][0]} images, {look}")
        with st.expander("Labels"):
            st.code(label_rows(batch["labels"]), language=None)
    st.markdown("**The batch as a tensor**")
    st.code(batch_text(batch, data["normalize"]), language=None)
    st.caption(batch["split_text"])


# ---------------------------------------------------------------- page

st.title("Data")
st.caption("Choose the images to learn from and how the training loop sees them. "
           "These settings go into the working config that the Train page runs.")

root = data_root()
_start_widgets(config()["data"])
available = {n: datasets.availability(n, root) for n in datasets.dataset_names()}

top_left, top_right = st.columns([1, 2], gap="large")
with top_left:
    name, folder, size = _source_controls(available)
    val_fraction, limit = _split_controls()
st.subheader("Augmentation and mini-batch preview")
augment, normalize, batch_size = _augment_controls()

data = {"dataset": name, "val_fraction": val_fraction, "augment": augment,
        "normalize": normalize, "root": folder if name == "folder" else None,
        "image_size": int(size), "limit": limit}
config()["data"] = data

problem = None
try:
    resolve_config({"data": data})
except ConfigError as e:
    problem = str(e)

if name == "folder" and not folder:
    with top_right:       # nothing is wrong yet: the path is still to be typed
        st.info("Type the path of a folder that holds one sub-folder of images per class "
                "(its name is the class).")
elif problem:
    with top_right:
        st.error(problem)
elif not available[name][0]:
    with top_right:
        st.info("Class counts and samples appear once the dataset is on this machine. "
                "The Model page still works: the input shape of every built-in dataset is known.")
else:
    try:
        with top_right:
            _show_counts(data, root)
        _show_samples(data, root, batch_size)
    except PROBLEMS as e:
        st.error(str(e))

st.page_link("pages/model.py", label="Next: build the model", icon=":material/arrow_forward:")
