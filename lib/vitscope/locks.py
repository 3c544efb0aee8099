"""Advisory file locks: one process computes or writes a thing while the others wait, then find it done.

``fcntl.flock`` locks are advisory and reliable on local filesystems; a lock held by a process that dies is released
by the system. Where flock is unavailable (no ``fcntl``, or a filesystem that refuses it) the caller proceeds
unlocked, and its atomic writes (temporary file, then rename) keep every file whole.
"""
from __future__ import annotations

import functools
import os
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:      # not on Windows
    fcntl = None

#: Seconds a process waits for another holder before it gives up: long enough for the paper profile's longest
#: extraction on a CPU.
LOCK_TIMEOUT_S = 6 * 3600.0


@contextmanager
def file_lock(path: Path, timeout: float = LOCK_TIMEOUT_S):
    """Hold an exclusive ``fcntl.flock`` on ``path`` (created if absent) for the ``with`` block; yields whether
    the lock is held (``False`` where flock is unavailable: the caller then proceeds unlocked).

    Waits up to ``timeout`` seconds for another holder, then raises ``TimeoutError`` naming the lock file.
    """
    if fcntl is None:
        yield False
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline, pause = time.monotonic() + timeout, 0.01
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"Waited {timeout:g} s for the lock file {path}: another process is computing this entry "
                        "(or hangs while holding it). Wait for it to finish, stop it, or pass a longer timeout "
                        "(FeatureStore's lock_timeout). A lock held by a process that died is released by the "
                        "system, so the file itself never needs deleting.") from None
                time.sleep(pause)
                pause = min(2 * pause, 0.5)
            except OSError as err:    # ENOLCK / EOPNOTSUPP: a filesystem without flock (some network mounts)
                warnings.warn(f"Cannot lock {path} ({err}): computing without a lock; concurrent processes may "
                              "compute the same entry (the atomic writes keep it whole).", stacklevel=3)
                held = False
                break
        try:
            yield held
        finally:
            if held:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def one_writer_at_a_time(write):
    """Decorator for a function whose first argument is a folder it fills (a synthetic twin): concurrent calls for
    one folder run one after the other, under the lock ``<parent>/.<folder>.lock``, so a book building two pages
    at once never reads a twin another page is still writing (the later call finds the folder complete)."""
    @functools.wraps(write)
    def locked(root, *args, **kwargs):
        root = Path(root)
        with file_lock(root.parent / f".{root.name}.lock"):
            return write(root, *args, **kwargs)
    return locked
