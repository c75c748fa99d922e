"""Process checks shared by the tests."""

import subprocess
import time


def _orphan_workers():
    out = subprocess.run(["pgrep", "-f", "worker_binary"], capture_output=True, text=True)
    orphans = set()
    for pid in out.stdout.split():
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = f.read().rsplit(")", 1)[1].split()[1]
            with open(f"/proc/{ppid}/cmdline", "rb") as f:
                parent = f.read()
        except OSError:
            continue
        if b"python" not in parent:
            orphans.add(pid)
    return orphans


def leaked_workers():
    """TFF workers whose parent is not a live Python process: leaked ones (a worker of
    another Python process running beside the tests is not counted). Asked twice, a
    second apart: a worker whose parent has just died (another test's, with tests run in
    parallel) is reaped by its death signal within that time and is not counted."""
    first = _orphan_workers()
    if not first:
        return first
    time.sleep(1.0)
    return first & _orphan_workers()
