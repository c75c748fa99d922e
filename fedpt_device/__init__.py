"""FedPT's device half without TensorFlow: the portable frozen-weight generator's NumPy
reference (`generator`) and a client for the slim TensorFlow Lite runtime (`client`)."""

from fedpt_device.client import Client, DeviceError, DeviceUpdate, SlimDeviceClient

__all__ = ["Client", "DeviceError", "DeviceUpdate", "SlimDeviceClient"]
