"""Pretrained FedPT on Fashion-MNIST, with and without DP: the grid of
`experiments.pretrained` (docs/fashion_pretrained.md), one flag per parameter.
Sections runs, seeds, long, dp, dp_long (see that module), then report; each resumable.

  .venv/bin/python scripts/pretrained_experiments.py --sections=runs,seeds,dp,dp_long,long,report
"""

from fedpt_cli import entry, experiment_binary

import os

from experiments import pretrained

experiment_binary.define(pretrained)


def _check_pretrained(params, section):
    if not os.path.exists(params.pretrained):
        raise entry.ScriptError(
            f"--pretrained={params.pretrained} does not exist; make it with "
            f"scripts/pretrain.py --public_fraction={params.public_fraction:g} "
            f"--output={params.pretrained}."
        )


if __name__ == "__main__":
    entry.run(lambda: experiment_binary.main(pretrained, _check_pretrained))
