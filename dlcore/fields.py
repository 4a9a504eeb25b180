"""One config field: its default, bounds and choices (`Limits`), and the check that names it.

The config's dataclasses (dlcore.config) declare a `Limits` per field; pages read the same
object through `dlcore.config.limits` for their widgets, so no bound is written twice. Layer
lists are typed into a form as text: `parse_widths` and `widths_text` convert both ways.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, replace


class ConfigError(ValueError):
    """Invalid config or argument; the message is one line meant for the user."""


MAX_PATH_BYTES = 4096   # Linux's PATH_MAX; a longer path is an OSError, not a missing file
MAX_NAME_BYTES = 255    # NAME_MAX: one folder or file name
MAX_WIDTH = 65536       # channels or units of one layer


@dataclass(frozen=True)
class Limits:
    """What a field takes. `kind`: int, float, bool, choice, ints (a list of integers), blocks
    (a list of [hidden, out] pairs), path, weights ("imagenet", "none" or a path).

    lo/hi bound a number, or each integer of a list (whose length is min_len..max_len);
    lo_open: lo itself is not allowed (train.lr must be more than 0). optional: null allowed.
    """
    kind: str
    default: object = None
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    choices: tuple = ()
    min_len: int | None = None
    max_len: int | None = None
    optional: bool = False
    path: str = ""

    @property
    def min_value(self):
        """The smallest allowed value, as a number widget's min_value (None: no minimum)."""
        if self.lo is None:
            return None
        if self.kind == "float":
            return math.nextafter(float(self.lo), math.inf) if self.lo_open else float(self.lo)
        return int(self.lo) + 1 if self.lo_open else int(self.lo)

    @property
    def max_value(self):
        if self.hi is None:
            return None
        return float(self.hi) if self.kind == "float" else int(self.hi)

    @property
    def bounds(self) -> tuple:
        """(min_value, max_value): `st.number_input(label, *limits(path).bounds, ...)`."""
        return self.min_value, self.max_value

    def at(self, path: str) -> Limits:
        return replace(self, path=path)

    def check(self, v, path: str | None = None):
        """The value as the config keeps it (a float for a float field), or ConfigError."""
        path = path or self.path
        if self.optional and v is None:
            return None
        return _CHECKS[self.kind](self, path, v)

    def allows(self, v) -> bool:
        try:
            self.check(v)
        except ConfigError:
            return False
        return True

    def or_default(self, v):
        """The value if it is allowed, else the default: to seed a widget from any config."""
        return self.check(v) if self.allows(v) else self.check(self.default)


# ---------------------------------------------------------------- checks, one per kind

def type_name(v) -> str:
    return "null" if v is None else type(v).__name__


def _int(lim, path, v):
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"{path}: expected an integer, got {type_name(v)} {v!r}")
    if (lim.lo is not None and v < lim.lo) or (lim.hi is not None and v > lim.hi):
        raise ConfigError(f"{path}: {v} is out of range; allowed: {_range(lim.lo, lim.hi)}")
    return v


def _float(lim, path, v):
    lo, hi, lo_open = lim.lo, lim.hi, lim.lo_open
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"{path}: expected a number, got {type_name(v)} {v!r}")
    v = float(v)
    if not math.isfinite(v):
        raise ConfigError(f"{path}: {v} is not a finite number; allowed: {_range(lo, hi, lo_open)}")
    if (lo is not None and (v < lo or (lo_open and v == lo))) or (hi is not None and v > hi):
        raise ConfigError(f"{path}: {v:g} is out of range; allowed: {_range(lo, hi, lo_open)}")
    return v


def _range(lo, hi, lo_open=False) -> str:
    if lo is not None and hi is not None:
        return f"{'more than' if lo_open else 'from'} {lo:g} {'and at most' if lo_open else 'to'} {hi:g}"
    if lo is not None:
        return f"{'more than' if lo_open else 'at least'} {lo:g}"
    return f"at most {hi:g}"


def _bool(lim, path, v):
    if not isinstance(v, bool):
        raise ConfigError(f"{path}: expected true or false, got {type_name(v)} {v!r}")
    return v


def _choice(lim, path, v):
    if not isinstance(v, str) or v not in lim.choices:
        raise ConfigError(f"{path}: unknown value {v!r}; allowed: {', '.join(lim.choices)}")
    return v


def _ints(lim, path, v):
    if not isinstance(v, list):
        raise ConfigError(f"{path}: expected a list of integers, got {type_name(v)} {v!r}")
    if not lim.min_len <= len(v) <= lim.max_len:
        raise ConfigError(f"{path}: has {len(v)} entries; allowed: {lim.min_len} to {lim.max_len}")
    item = Limits("int", lo=lim.lo, hi=lim.hi)
    return [_int(item, f"{path}[{i}]", x) for i, x in enumerate(v)]


def _blocks(lim, path, v):
    if not isinstance(v, list) or not lim.min_len <= len(v) <= lim.max_len:
        raise ConfigError(f"{path}: expected {lim.min_len} to {lim.max_len} [hidden, out] channel "
                          f"pairs, got {v!r}")
    pair, out = Limits("ints", lo=lim.lo, hi=lim.hi, min_len=2, max_len=2), []
    for i, b in enumerate(v):
        if not isinstance(b, list) or len(b) != 2:
            raise ConfigError(f"{path}[{i}]: expected a [hidden, out] channel pair, got {b!r}")
        out.append(_ints(pair, f"{path}[{i}]", b))
    return out


def _path(lim, path, v):
    return check_path(path, v)


def _weights(lim, path, v):
    if not isinstance(v, str) or not v.strip():
        raise ConfigError(f"{path}: expected \"imagenet\", \"none\" or the path of a "
                          f".pth state_dict file, got {type_name(v)} {v!r}")
    v = v.strip()
    return v if v in ("imagenet", "none") else check_path(path, v)


_CHECKS = {"int": _int, "float": _float, "bool": _bool, "choice": _choice, "ints": _ints,
           "blocks": _blocks, "path": _path, "weights": _weights}


def key_name(k) -> str:
    """A key as the message shows it: plain names as they are, anything else quoted (one line)."""
    return k if isinstance(k, str) and k.isascii() and k.replace("_", "a").isalnum() else repr(k)


def check_path(path, v) -> str:
    """A path the engine will open: text a file system can take, or ConfigError naming `path`.

    A path that is merely absent is fine here (the reader says so); one that no file system
    can hold (a NUL byte, a 300-character name) would be an OSError wherever it is used.
    """
    if not isinstance(v, str) or not v.strip():
        raise ConfigError(f"{path}: expected the path of a file or folder, got {type_name(v)} {v!r}")
    if "\x00" in v:
        raise ConfigError(f"{path}: the path contains a NUL byte; allowed: a file system path")
    try:
        raw = os.fsencode(v)
    except UnicodeError:
        raise ConfigError(f"{path}: the path has characters this file system cannot encode") from None
    if len(raw) > MAX_PATH_BYTES:
        raise ConfigError(f"{path}: the path is {len(raw)} bytes long; allowed: at most "
                          f"{MAX_PATH_BYTES} bytes, and {MAX_NAME_BYTES} per folder or file name")
    longest = max(raw.split(os.sep.encode()), key=len)
    if len(longest) > MAX_NAME_BYTES:
        shown = longest[:24].decode(errors="replace")
        raise ConfigError(f"{path}: the name {shown!r}... is {len(longest)} bytes long; allowed: at "
                          f"most {MAX_NAME_BYTES} bytes per folder or file name")
    return v


# ---------------------------------------------------------------- layer lists as a form's text

def parse_widths(text: str, what: str, example: str) -> list[int]:
    """'512, 256, 128' (or '[512 256]') -> [512, 256, 128]; ValueError naming `what`."""
    out = []
    for part in re.split(r"[,\s]+", text.strip().strip("[]")):
        if not part:
            continue
        if not part.isdigit() or int(part) < 1:
            raise ValueError(f"{what}: {part!r} is not a positive whole number; write widths "
                             f"separated by commas, e.g. {example}")
        out.append(int(part))
    return out


def parse_blocks(text: str, what: str = "CNN blocks") -> list[list[int]]:
    """'16, 32; 64, 128' (or '[[16, 32], [64, 128]]') -> [[16, 32], [64, 128]]."""
    pairs = []
    for part in (p for p in text.replace("],", ";").split(";") if p.strip(" []")):
        pair = parse_widths(part, what, "16, 32; 64, 128")
        if len(pair) != 2:
            raise ValueError(f"{what}: {part.strip()!r} is not a [hidden, out] channel pair; "
                             "write pairs separated by semicolons, e.g. 16, 32; 64, 128; 128, 256")
        pairs.append(pair)
    return pairs


def widths_text(widths) -> str:
    return ", ".join(map(str, widths))


def blocks_text(blocks) -> str:
    return "; ".join(widths_text(b) for b in blocks)
