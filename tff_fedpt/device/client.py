"""A device file run in TensorFlow Lite's full interpreter (`DeviceClient`)."""

from __future__ import annotations

import os

import tensorflow as tf

from fedpt_device import Client
from tff_fedpt.device.files import read_tflite


class DeviceClient(Client):
    """One device: a `.tflite` client run in `tf.lite.Interpreter` (with the Flex delegate
    where the file needs it). `fedpt_device.SlimDeviceClient` is its twin on the slim
    runtime, without TensorFlow.

    Args:
      tflite_model: The file's bytes or path (from `export_tflite`).

    Raises:
      DeviceError: for a file that is missing, empty, truncated, not TensorFlow Lite, or
        lacks the FedPT signatures (checked by `read_tflite` before the interpreter
        loads it).
    """

    def __init__(self, tflite_model: bytes | str | os.PathLike):
        super().__init__(tf.lite.Interpreter(model_content=read_tflite(tflite_model)))
