"""Run FedPT device clients on the slim runtime, from files (no TensorFlow):

    python -m fedpt_device --model client.tflite --round round.npz --updates updates.npz

round.npz holds the broadcast (`trainable_000`.., `frozen_seed`, optionally
`frozen_fingerprint`), `batch_size`, and each client's data (`x_000`, `y_000`, ...);
updates.npz receives each client's upload (`delta_000_000`.., `weight_000`,
`num_examples_000`). With --check_no_tensorflow it fails if TensorFlow was imported.
"""

import argparse
import sys

import numpy as np

from fedpt_device.client import FINGERPRINT_SIGNATURE, SEED, DeviceError, SlimDeviceClient


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fedpt_device", description=__doc__)
    parser.add_argument("--model", required=True, help="the builtin-only .tflite file")
    parser.add_argument("--round", required=True, help="the broadcast and the clients' data")
    parser.add_argument("--updates", required=True, help="where the uploads go (.npz)")
    parser.add_argument("--check_no_tensorflow", action="store_true")
    args = parser.parse_args(argv)
    try:
        with np.load(args.round) as f:
            data = dict(f)
    except (OSError, ValueError) as e:
        print(f"fedpt_device: cannot read --round={args.round}: {e}", file=sys.stderr)
        return 2
    trainable = [data[k] for k in sorted(k for k in data if k.startswith("trainable_"))]
    clients = sorted(k[2:] for k in data if k.startswith("x_"))
    out = {}
    try:
        for c in clients:
            client = SlimDeviceClient(args.model)
            client.start_round(trainable, data[SEED], data.get(FINGERPRINT_SIGNATURE))
            update = client.train(
                data[f"x_{c}"], data[f"y_{c}"], batch_size=int(data["batch_size"])
            )
            for i, d in enumerate(update.delta):
                out[f"delta_{c}_{i:03d}"] = d
            out[f"weight_{c}"] = np.float32(update.weight)
            out[f"num_examples_{c}"] = np.int64(update.num_examples)
    except DeviceError as e:
        print(f"fedpt_device: {e}", file=sys.stderr)
        return 2
    np.savez(args.updates, **out)
    if args.check_no_tensorflow and "tensorflow" in sys.modules:
        print("fedpt_device: TensorFlow was imported", file=sys.stderr)
        return 1
    print(f"fedpt_device: {len(clients)} clients trained on the slim runtime")
    return 0


if __name__ == "__main__":
    sys.exit(main())
