"""A stop request for this process: SIGTERM (the app's Stop button) ends training at its next
batch. Installed by the command line before torch is imported, so a stop that comes while
the data is still loading ends the run `stopped`, not killed."""
from __future__ import annotations

import contextlib
import signal
import threading

_sigterm = threading.Event()


def _on_sigterm(signum, frame):
    _sigterm.set()


def stop_requested() -> bool:
    """Whether SIGTERM asked this process to stop (inside stop_on_sigterm)."""
    return _sigterm.is_set()


@contextlib.contextmanager
def stop_on_sigterm():
    """Turn SIGTERM into a stop request for as long as the block runs."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGTERM) is _on_sigterm:
        yield        # a thread cannot take signals; an outer caller already listens
        return
    _sigterm.clear()
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
