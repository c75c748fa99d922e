"""FedPT on the device: a TensorFlow Lite client that regenerates the frozen part itself.

`export_tflite(model_fn, client_optimizer)` writes one `.tflite` flatbuffer with four
signatures a device app calls each round:

    start_round(trainable_000.., frozen_seed)  the broadcast: trainable weights and the
                                               seed; the frozen part is regenerated on
                                               the device (stateless RNG, as in TFF)
    train(x, y) -> loss                        one optimizer step on one batch
    evaluate(x, y) -> loss, predictions        one batch, training=False
    get_update() -> delta_000.., weight        what the device uploads: initial minus
                                               trained trainable weights, and its weight
    frozen_weights() -> frozen_000..           the regenerated frozen tensors (checks)

The file holds no frozen values: every frozen tensor lives in a variable of undefined
shape that starts empty and is filled by `start_round` (the converter stores a
variable's initial value in the file, so a frozen variable of fixed shape would add its
full size). What the file does hold: the trainable variables' initial values, the tiny
optimizer and metric state, and the graph. Size ~= 4 * trainable parameters + graph.

`DeviceClient` runs the file in `tf.lite.Interpreter` as a device would (its own
batching, epochs and shuffling), and checks what crosses the boundary.
`broadcast_payload` and `apply_device_updates` are the server side: the exact broadcast
of a FedPT process's state, and the next state from a list of device updates through the
process's own aggregator and server optimizer.

    export.py   export_tflite, flex_ops (converting)
    module.py   ClientModule: the signatures the file is converted from
    state.py    FrozenStores, OptimizerState: what the file keeps between signatures
    files.py    read_tflite: a file checked before an interpreter loads it
    client.py   DeviceClient: the file in TensorFlow Lite's full interpreter
    server.py   broadcast_payload, apply_device_updates

The names both halves share (signatures, tensor names, the seed and fingerprint, the
update type) are `fedpt_device.protocol`'s. Adding a device runtime: docs/device.md,
"Adding a device runtime".
"""

from tff_fedpt.device.client import DeviceClient
from tff_fedpt.device.export import export_tflite, flex_ops
from tff_fedpt.device.files import read_tflite
from tff_fedpt.device.server import (
    MAX_ABS_DELTA,
    MAX_UPDATE_WEIGHT,
    apply_device_updates,
    broadcast_payload,
)

__all__ = [
    "MAX_ABS_DELTA",
    "MAX_UPDATE_WEIGHT",
    "DeviceClient",
    "apply_device_updates",
    "broadcast_payload",
    "export_tflite",
    "flex_ops",
    "read_tflite",
]
