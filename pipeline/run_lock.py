"""One local run per output directory at a time.

Two runs on one output directory would both train, both push and each print the other's
summary (both read the newest run from the same ML Metadata). A run takes an exclusive
``flock`` on ``<output_dir>/run.lock`` before any work and holds it to the end; a second run is
refused at once with the holder's process id, host and start time. The kernel releases the lock
when the holder exits, however it exits, so a killed run never leaves a stale lock behind.
(Kubeflow runs are not local: each run has its own pipeline root and the cluster's ML Metadata.)
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import socket
import sys
from collections.abc import Iterator

LOCK_FILE = "run.lock"


class OutputDirBusy(RuntimeError):
    """Another run holds the output directory."""


@contextlib.contextmanager
def output_dir_lock(output_dir: str) -> Iterator[None]:
    """Holds ``output_dir`` for one run; raises OutputDirBusy, naming the holder, if it is taken."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 1000, 0).decode(errors="replace").strip() or "details not written yet"
            raise OutputDirBusy(
                f"{output_dir} is in use by another run ({holder}); let it finish, or pass another --output-dir"
            ) from None
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {started}: {_command()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _command() -> str:
    return " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]])[:300]
