"""FedPT's device half without TensorFlow: the portable frozen-weight generator's NumPy
reference (`generator`) and a client for the slim TensorFlow Lite runtime (`client`)."""

from fedpt_device.client import Client, SlimDeviceClient
from fedpt_device.protocol import DeviceError, DeviceUpdate

__all__ = ["Client", "DeviceError", "DeviceUpdate", "SlimDeviceClient"]
