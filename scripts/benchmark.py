"""Benchmarks: communication, client speed, overhead, memory, scaling, remote workers,
the TFLite device clients and the Fashion-MNIST workload (real data: `make data`); the
sections are `benchmarks.suite.SECTIONS`, one flag per field of `benchmarks.suite.Params`.

Each comparison runs both sides in this invocation, repeats, and reports medians and
ratios. Prints tables and writes output/benchmark/benchmark.json after each section.
Absolute seconds depend on the machine; quote ratios.

  .venv/bin/python scripts/benchmark.py                      # everything (~15 min, 2 cores)
  .venv/bin/python scripts/benchmark.py --sections=communication,overhead --repeats=3
"""

from fedpt_cli import entry

import json
import os

from absl import flags

from benchmarks import suite
from benchmarks.common import BenchmarkError
from tff_fedpt import reporting

flags.DEFINE_list(
    "sections", list(suite.SECTIONS), f"Which benchmarks to run: {list(suite.SECTIONS)}."
)
entry.define_flags(suite.Params)
FLAGS = flags.FLAGS


def main():
    entry.check_sections(FLAGS.sections, suite.SECTIONS)
    params = entry.params_from_flags(suite.Params)
    os.makedirs(params.output_dir, exist_ok=True)
    path = os.path.join(params.output_dir, "benchmark.json")

    def save(name, results):
        print(reporting.table(results[name]), flush=True)
        with open(path, "w") as f:
            json.dump(results, f, indent=2)

    suite.run(params, FLAGS.sections, entry.log, save)
    print(f"\nJSON: {os.path.abspath(path)}")


if __name__ == "__main__":
    entry.run(main, errors=(BenchmarkError,))
