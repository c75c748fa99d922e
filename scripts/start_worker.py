"""Starts one TFF worker (TFF's C++ executor service) for --workers runs.

    python scripts/start_worker.py --port=8000                    # loopback only
    python scripts/start_worker.py --port=8000 --address=10.0.0.5 # one interface
    python scripts/start_worker.py --port=8000 --address=0.0.0.0  # every interface

Stops the worker on SIGTERM / SIGINT (Ctrl-C) and exits; the worker also dies if this
launcher is killed. TFF workers speak unauthenticated plaintext gRPC: serve beyond
loopback only on a trusted network.
"""

from fedpt_cli import entry

import os
import signal
import sys

from absl import flags

from tff_fedpt import remote

flags.DEFINE_integer("port", None, "TCP port to serve on.", lower_bound=1, upper_bound=65535)
flags.DEFINE_string("address", remote.LOOPBACK, "Interface address (0.0.0.0 or :: for all).")
flags.DEFINE_integer(
    "max_concurrent_computation_calls", -1, "Parallel calls per computation (<= 0: no limit)."
)
flags.DEFINE_bool("worker_logs", False, "Show the worker's own log output.")
flags.mark_flag_as_required("port")
FLAGS = flags.FLAGS


def main():
    stopping = []

    def stop(signum, frame):
        stopping.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logs = None if FLAGS.worker_logs else open(os.devnull, "wb")
    try:
        worker = remote.start_worker(
            FLAGS.port,
            address=FLAGS.address,
            max_concurrent_computation_calls=FLAGS.max_concurrent_computation_calls,
            stdout=logs,
            stderr=logs,
        )
    except (ValueError, RuntimeError) as e:
        raise entry.ScriptError(str(e), code=1) from None
    except KeyboardInterrupt:
        return 0
    print(
        f"TFF worker serving on {FLAGS.address}:{FLAGS.port} (pid {worker.pid}); use "
        f"--workers={worker.target} in the training binaries. Stop with Ctrl-C or SIGTERM.",
        flush=True,
    )
    try:
        code = worker.process.wait()
        print(f"The TFF worker exited by itself with code {code}.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        worker.stop()
        name = signal.Signals(stopping[0]).name if stopping else "SIGINT"
        print(f"Stopped the TFF worker on {worker.target} ({name}).", flush=True)
        return 0


if __name__ == "__main__":
    entry.run(main, local_runtime=False)
