"""The init comparison: the same model trained once per init method, one run after another.

`python -m dlcore init-sweep` runs it in one worker process; each init becomes its own run,
named "<name> · init=<init>", so the pages find the sweep's runs by name.
"""
from __future__ import annotations

import copy

from .config import INITS, ConfigError, resolve_config

SWEEP_INITS = ("default", "gaussian", "xavier", "kaiming", "zeros")
SEP = " · init="


def run_name(name: str, init: str) -> str:
    return f"{name}{SEP}{init}"


def sweep_config(cfg: dict, epochs: int = 3, limit: int | None = 1000) -> dict:
    """The working config made short: `epochs` each, at most `limit` training images, the
    layer statistics on (they are what the comparison is about), no early stop."""
    cfg = copy.deepcopy(cfg)
    cfg.setdefault("data", {})
    cfg.setdefault("train", {})
    cfg["data"]["limit"] = limit
    cfg["train"].update(epochs=int(epochs), layer_stats=True, patience=0)
    return resolve_config(cfg)


def check_inits(inits) -> list[str]:
    inits = list(inits or SWEEP_INITS)
    bad = [i for i in inits if i not in INITS]
    if bad:
        raise ConfigError(f"--inits: unknown init {bad[0]!r}; allowed: {', '.join(INITS)}")
    return inits


def init_sweep(cfg: dict, runs_dir, name: str, data_root=None, inits=None, log=print) -> list:
    """Train `cfg` once per init (one after another); a run that fails does not stop the rest.

    Returns [(init, run_dir or None, error or None)]."""
    from .train import TrainingFailed, train

    cfg = resolve_config(cfg)
    out = []
    for init in check_inits(inits):
        c = copy.deepcopy(cfg)
        c["model"]["init"] = init
        log(f"init-sweep: training init={init}")
        try:
            run_dir = train(c, runs_dir=runs_dir, name=run_name(name, init), data_root=data_root,
                            progress=False, log=log)
            out.append((init, run_dir, None))
        except TrainingFailed as e:     # e.g. gaussian init diverging: that is a finding too
            log(f"init-sweep: init={init} failed: {e}")
            out.append((init, None, str(e)))
    return out


def sweep_runs(runs, name: str, inits=SWEEP_INITS) -> dict:
    """{init: the newest RunInfo named for it, or None} among `runs` (RunStore.list())."""
    found = {init: None for init in inits}
    for r in runs:                           # newest first: keep the first match
        for init in inits:
            if r.name == run_name(name, init) and found[init] is None:
                found[init] = r
    return found
