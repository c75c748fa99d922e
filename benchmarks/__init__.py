"""Benchmarks: communication, client speed, overhead, memory, scaling, remote workers, the
TFLite device clients and the Fashion-MNIST workload, each both sides in one invocation
with medians and ratios (`suite.SECTIONS`). No flags: scripts/benchmark.py maps one flag
to each field of `suite.Params`. The child processes they measure are modules
(`python -m benchmarks.memory_probe`, `python -m fedpt_device.measure`)."""
