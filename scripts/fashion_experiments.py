"""The paper's claims measured on Fashion-MNIST, side by side: the grid of
`experiments.fashion` (docs/fashion_mnist.md, the README's headline), one flag per
parameter. Sections a, b, c, c_control, c_long, long (see that module), then report.
Each is resumable: rerun the same command and finished runs are read back, a
half-finished run resumes from its checkpoint.

  .venv/bin/python scripts/fashion_experiments.py --sections=a,b,c,report
"""

from fedpt_cli import entry, experiment_binary

from experiments import fashion

experiment_binary.define(fashion)


def _note_duplicates(params, section):
    if section.name == "a":
        for preset, same in fashion.untuned_duplicates(params).items():
            entry.log(f"  {preset}: freezes the same layers as {same}; not run again")


if __name__ == "__main__":
    entry.run(lambda: experiment_binary.main(fashion, _note_duplicates))
