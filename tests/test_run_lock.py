"""One run per output directory: a second `vae-mnist run` on the same --output-dir is refused at
once, names the run that holds it, and prints nothing of that run; a killed run leaves no lock."""

import os
import re
import subprocess
import sys
import time

from pipeline.cli import EXIT_BUSY
from pipeline.run_lock import LOCK_FILE, output_dir_lock
from tests.helpers import REPO


def test_a_second_run_on_the_same_output_dir_is_refused(tmp_path, small_mnist):
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "pipeline.cli", "run", "--input-dir", small_mnist, "--output-dir", str(out)]
    argv += ["--preset", "smoke"]
    first = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while f"pid {first.pid} " not in _read(out / LOCK_FILE):
            assert first.poll() is None and time.monotonic() < deadline, "the first run never took the lock"
            time.sleep(0.1)
        second = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert first.poll() is None  # the first run was still running throughout
    finally:
        first.kill()
        first.wait()
    assert second.returncode == EXIT_BUSY
    assert second.stdout == ""  # not a word about the other run's progress or summary
    [line] = second.stderr.strip().splitlines()
    assert re.fullmatch(
        rf"vae-mnist: error: {re.escape(str(out))} is in use by another run \(pid {first.pid} on \S+, "
        r"started [0-9T:+-]+: cli\.py run .*\); let it finish, or pass another --output-dir",
        line,
    ), line
    # The kernel dropped the killed run's lock: the directory can be taken again at once.
    with output_dir_lock(str(out)):
        assert f"pid {os.getpid()} " in _read(out / LOCK_FILE)


def _read(path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""
