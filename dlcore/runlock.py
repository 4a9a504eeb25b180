"""The run lock: one process writes a run, and a run is alive exactly while its lock is held.

An `flock` on RUN_DIR/.lock, which the kernel drops when the holder dies however it dies; the
file holds the holder's pid for Stop. Reading whether a run is locked changes nothing.
"""
from __future__ import annotations

import errno
import os
import time
from pathlib import Path

from .config import ConfigError

LOCK_FILE = ".lock"
LOCK_FD_ENV = "DLCORE_RUN_LOCK_FD"   # a lock handed to a worker by the process that made its run

def run_is_locked(run_dir) -> bool:
    """Whether a live process holds the run's lock; reading it changes nothing.

    A shared lock is tried and dropped at once; a writer taking its exclusive lock waits the
    moment that takes (see RunLock.acquire)."""
    import fcntl

    try:
        fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDONLY)
    except OSError:       # never locked (or unreadable): no process can be writing it
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)      # closing drops the shared lock, if we got it
    return False


def lock_holder(run_dir) -> int | None:
    """The pid of the process holding the run's lock, or None when no process holds it."""
    if not run_is_locked(run_dir):
        return None
    try:
        text = (Path(run_dir) / LOCK_FILE).read_text(errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


class RunLock:
    """An exclusive lock on a run directory, held by the one process that writes into it.

    The process that creates a run may hand its held lock to the worker it starts (the open
    file is inherited; LOCK_FD_ENV names it), so the run is locked from its first file on."""

    def __init__(self, run_dir: Path):
        self.path, self.fd = Path(run_dir) / LOCK_FILE, None

    def acquire(self, wait: float = 2.0) -> "RunLock":
        import fcntl

        fd = self._inherited()
        if fd is None:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                    raise
                raise ConfigError(f"run {self.path.parent.name}: {self.path} cannot be written "
                                  f"({e.strerror.lower()}): the runs directory is read-only "
                                  "here; choose another one") from None
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    # readers hold a shared lock for a moment; a writer holds it for good
                    if time.monotonic() >= deadline:
                        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                        os.close(fd)
                        raise ConfigError(f"run {self.path.parent.name} is being written by "
                                          f"another process (pid {holder}); stop it first") from None
                    time.sleep(0.01)
        self.fd = fd
        self.write_holder(os.getpid())
        return self

    def _inherited(self) -> int | None:
        value = os.environ.get(LOCK_FD_ENV, "")
        if not value.isdigit():
            return None
        fd = int(value)
        try:
            mine, there = os.fstat(fd), os.stat(self.path)
        except OSError:
            return None
        if (mine.st_dev, mine.st_ino) != (there.st_dev, there.st_ino):
            return None
        del os.environ[LOCK_FD_ENV]     # taken: children of this worker do not inherit it
        os.set_inheritable(fd, False)
        return fd

    def write_holder(self, pid: int) -> None:
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(pid).encode(), 0)

    def release(self) -> None:
        """Close this process's handle. The lock ends when no process has the file open
        (a worker that inherited it keeps it held)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        if self.fd is None:
            self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()      # the file stays, harmlessly
