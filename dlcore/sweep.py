"""The init comparison: the same model trained once per init method, one run after another.

`python -m dlcore init-sweep` runs it in one worker process; each init becomes its own run,
named "<name> · init=<init>" and carrying the sweep's id and its init as `sweep` and `trial`
in meta.json: that, not the name (which the user may change), is how the pages find them.
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


def new_sweep_id() -> str:
    import os
    import time
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


def init_sweep(cfg: dict, runs_dir, name: str, data_root=None, inits=None, log=print,
               sweep_id: str | None = None) -> list:
    """Train `cfg` once per init (one after another); a run that fails does not stop the rest,
    a stop (SIGTERM) ends the sweep. Returns [(init, run_dir or None, error or None)]."""
    from .signals import stop_on_sigterm, stop_requested
    from .train import train
    from .trainer import TrainingFailed

    cfg = resolve_config(cfg)
    sweep_id = sweep_id or new_sweep_id()
    out = []
    with stop_on_sigterm():
        for init in check_inits(inits):
            if stop_requested():
                break
            c = copy.deepcopy(cfg)
            c["model"]["init"] = init
            log(f"init-sweep: training init={init}")
            try:
                run_dir = train(c, runs_dir=runs_dir, name=run_name(name, init),
                                data_root=data_root, progress=False, log=log,
                                sweep=sweep_id, trial=init)
                out.append((init, run_dir, None))
            except TrainingFailed as e:     # e.g. gaussian init diverging: that is a finding too
                log(f"init-sweep: init={init} failed: {e}")
                out.append((init, None, str(e)))
    return out


def sweep_runs(runs, sweep_id: str, inits=SWEEP_INITS) -> dict:
    """{init: the sweep's RunInfo for it, or None} among `runs` (RunStore.list())."""
    found = {init: None for init in inits}
    for r in runs:                           # newest first: keep the first match
        if r.sweep == sweep_id and r.trial in found and found[r.trial] is None:
            found[r.trial] = r
    return found
