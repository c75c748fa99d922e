"""Process checks shared by the tests."""

import subprocess


def leaked_workers():
    """TFF workers whose parent is not a live Python process: leaked ones (a worker of
    another Python process running beside the tests is not counted)."""
    out = subprocess.run(["pgrep", "-f", "worker_binary"], capture_output=True, text=True)
    leaked = set()
    for pid in out.stdout.split():
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = f.read().rsplit(")", 1)[1].split()[1]
            with open(f"/proc/{ppid}/cmdline", "rb") as f:
                parent = f.read()
        except OSError:
            continue
        if b"python" not in parent:
            leaked.add(pid)
    return leaked
