"""Measures one FedPT client file in a fresh process: peak memory of local training (its
baseline subtracted), memory after `start_round`, and the median train-step time (on a
file that trains on features: of a step on the batch's features, computed once first).

    python -m fedpt_device.measure --model F --runtime slim|tensorflow --steps 40 \\
        --shape 28,28,1 --classes 62 --batch 20 --out result.json

`--runtime=slim` loads the file with the slim runtime's builtin op resolver (no TensorFlow
in the process); `--runtime=tensorflow` with `tf.lite.Interpreter` (the Flex delegate where
the file needs it). Linux only (reads /proc/self/status). `scripts/benchmark.py
--sections=device,device_slim` runs it.
"""

import argparse
import json
import os
import sys
import time

import numpy as np


def _status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fedpt_device.measure")
    parser.add_argument("--model", required=True)
    parser.add_argument("--runtime", choices=("slim", "tensorflow"), required=True)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--shape", required=True, help="one example's shape, e.g. 28,28,1")
    parser.add_argument("--classes", type=int, required=True)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument(
        "--features_batch",
        type=int,
        default=0,
        help="examples per call of the features signature (0: the whole batch at once)",
    )
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.runtime == "slim":
        from fedpt_device.client import slim_interpreter as make
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import tensorflow as tf

        def make(content):
            return tf.lite.Interpreter(model_content=content)

    with open(args.model, "rb") as f:
        content = f.read()
    rng = np.random.default_rng(0)
    shape = [int(d) for d in args.shape.split(",")]
    x = rng.random((args.batch, *shape)).astype(np.float32)
    y = rng.integers(0, args.classes, args.batch).astype(np.int32)
    baseline = _status("VmRSS:")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak RSS (VmHWM) to the current RSS
    interpreter = make(content)
    start = interpreter.get_signature_runner("start_round")
    train = interpreter.get_signature_runner("train")
    kwargs = {
        name: (np.zeros(d["shape"], d["dtype"]) + 0.01).astype(d["dtype"])
        for name, d in start.get_input_details().items()
    }
    kwargs["frozen_seed"] = np.array(0, np.int64)
    start(**kwargs)
    features_s = None
    if "features" in interpreter.get_signature_list():  # a file that trains on features
        features = interpreter.get_signature_runner("features")
        step = args.features_batch or len(x)
        t = time.perf_counter()
        x = np.concatenate(
            [features(x=x[i : i + step])["features"] for i in range(0, len(x), step)]
        )
        features_s = time.perf_counter() - t  # once per example, not per step
    loaded = _status("VmRSS:") - baseline
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        train(x=x, y=y)
        times.append(time.perf_counter() - t)
    measured = sorted(times[3:])
    result = {
        "peak_kib": _status("VmHWM:") - baseline,
        "loaded_kib": loaded,
        "step_s": measured[len(measured) // 2],
        "features_s": features_s,
        "tensorflow_imported": "tensorflow" in sys.modules,
    }
    with open(args.out, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
