"""FedPT on federated Shakespeare: the grid of `experiments.shakespeare`
(docs/shakespeare.md), one flag per parameter. Sections runs, seeds, then report; each
resumable (`make data` first).

  .venv/bin/python scripts/shakespeare_experiments.py --sections=runs,seeds,report
"""

from fedpt_cli import entry, experiment_binary

from experiments import shakespeare

experiment_binary.define(shakespeare)

if __name__ == "__main__":
    entry.run(lambda: experiment_binary.main(shakespeare, shakespeare.check_pretrained))
