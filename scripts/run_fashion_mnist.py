"""Trains FedPT or a baseline on federated Fashion-MNIST (real 28x28 images, offline once
the four IDX files are on disk: `make data`). Task flags: `fashion_mnist.DataOptions`."""

from fedpt_cli import training_flags

if __name__ == "__main__":
    training_flags.main("fashion_mnist", __doc__)
