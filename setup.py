"""tff_fedpt: Federated learning of Partially Trainable networks on TensorFlow Federated."""

import setuptools

setuptools.setup(
    name="tff_fedpt",
    version="0.1.0",
    description=(
        "FedPT: federated learning of partially trainable networks "
        "(frozen-from-seed layers) for TensorFlow Federated"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(
        include=[
            "tff_fedpt",
            "tff_fedpt.*",
            "fedpt_device",
            "baselines",
            "benchmarks",
            "experiments",
            "fedpt_cli",
        ]
    ),
    # Built on first use by tff_fedpt.remote.start_worker (binds TFF's worker to one address).
    package_data={"tff_fedpt.remote": ["_bind_shim.c"]},
    python_requires=">=3.9,<3.12",
    install_requires=[
        # TFF 0.87.0 itself is installed with --no-deps: its jaxlib==0.4.14 pin has no
        # Linux wheel on PyPI. See requirements.lock and the Makefile.
        "tensorflow-federated==0.87.0",
        "tensorflow==2.14.*",
        "tensorflow-privacy==0.9.0",
        "dp-accounting==0.4.3",
        "absl-py>=1.0,<2",
        "numpy~=1.25",
    ],
    extras_require={"plots": ["matplotlib"]},
)
