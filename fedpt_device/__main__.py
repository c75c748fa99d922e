"""Run FedPT device clients on the slim runtime, from files (no TensorFlow):

    python -m fedpt_device --model client.tflite --round round.npz --updates updates.npz

round.npz holds the broadcast (`trainable_000`.., `frozen_seed`, optionally
`frozen_fingerprint`), `batch_size`, and each client's data (`x_000`, `y_000`, ...);
updates.npz receives each client's upload (`delta_000_000`.., `weight_000`,
`num_examples_000`). With --check_no_tensorflow it fails if TensorFlow was imported. On a
file that trains on features, --features_batch_size=N maps each client's x through the
frozen prefix N examples per call (lower peak memory; 0: the file's batch).
"""

import argparse
import os
import sys

import numpy as np

from fedpt_device import npz
from fedpt_device.client import SlimDeviceClient
from fedpt_device.protocol import FINGERPRINT_SIGNATURE, SEED, DeviceError


def _fail(message: str) -> int:
    print(f"fedpt_device: {message}", file=sys.stderr)
    return 2


def _read_round(path: str) -> dict:
    """The round file's arrays, with every key a round needs (DeviceError otherwise)."""
    data = npz.read(path, named=f"--round={path}")
    missing = [k for k in (SEED, "batch_size") if k not in data]
    if not any(k.startswith("trainable_") for k in data):
        missing.append("trainable_000...")
    clients = sorted(k[2:] for k in data if k.startswith("x_"))
    if not clients:
        missing.append("x_000...")
    missing += [f"y_{c}" for c in clients if f"y_{c}" not in data]
    if missing:
        raise DeviceError(
            f"--round={path} lacks {', '.join(missing)} (it holds {sorted(data)}); see "
            "`python -m fedpt_device --help` for its keys."
        )
    return data


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fedpt_device", description=__doc__)
    parser.add_argument("--model", required=True, help="the builtin-only .tflite file")
    parser.add_argument("--round", required=True, help="the broadcast and the clients' data")
    parser.add_argument("--updates", required=True, help="where the uploads go (this path)")
    parser.add_argument("--check_no_tensorflow", action="store_true")
    parser.add_argument(
        "--features_batch_size",
        type=int,
        default=0,
        help="examples per call of a features signature (0: the file's batch)",
    )
    args = parser.parse_args(argv)
    if args.features_batch_size < 0:
        return _fail(f"--features_batch_size must be >= 0; received {args.features_batch_size}.")
    if os.path.isdir(args.updates):
        return _fail(f"--updates={args.updates} is a directory; name the file to write.")
    out = {}
    try:
        data = _read_round(args.round)
        trainable = [data[k] for k in sorted(k for k in data if k.startswith("trainable_"))]
        clients = sorted(k[2:] for k in data if k.startswith("x_"))
        for c in clients:
            client = SlimDeviceClient(args.model)
            client.start_round(trainable, data[SEED], data.get(FINGERPRINT_SIGNATURE))
            update = client.train(
                data[f"x_{c}"],
                data[f"y_{c}"],
                batch_size=int(data["batch_size"]),
                features_batch_size=args.features_batch_size or None,
            )
            for i, d in enumerate(update.delta):
                out[f"delta_{c}_{i:03d}"] = d
            out[f"weight_{c}"] = np.float32(update.weight)
            out[f"num_examples_{c}"] = np.int64(update.num_examples)
    except DeviceError as e:
        return _fail(str(e))
    try:
        npz.write(args.updates, out)
    except OSError as e:
        return _fail(f"cannot write --updates={args.updates}: {e}")
    if args.check_no_tensorflow and "tensorflow" in sys.modules:
        print("fedpt_device: TensorFlow was imported", file=sys.stderr)
        return 1
    print(f"fedpt_device: {len(clients)} clients trained on the slim runtime")
    return 0


if __name__ == "__main__":
    sys.exit(main())
