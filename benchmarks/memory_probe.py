"""The benchmark's memory probe: trains one algorithm in a process of its own and
records the resident memory (Python plus its TFF worker) after every round.

    python -m benchmarks.memory_probe NAME ROUNDS OUT_DIR TASK TASK_KWARGS_JSON CONFIG_JSON

trains the `ExperimentConfig` fields of CONFIG_JSON (over the probe's defaults: 10 clients
per round, batch 20, one epoch) and writes `OUT_DIR/<NAME>_rss.json` ({round: KiB}).
`scripts/benchmark.py` runs it and samples the peak from outside; a process of its own
keeps one measurement from holding memory another one made.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import baselines  # noqa: E402
from tff_fedpt import runtime, training  # noqa: E402
from tff_fedpt.tasks import load_task  # noqa: E402

baselines.register()


def probe(
    name: str, rounds: int, out: str, task_name: str, task_kwargs: dict, config_values: dict
) -> dict:
    """Trains `rounds` rounds of `config_values`; returns and writes {round: RSS KiB after
    it}."""
    samples = {}

    def on_round_end(round_num, row):
        del row
        samples[round_num] = runtime.rss_kib([os.getpid(), *runtime.worker_pids()])

    values = dict(clients_per_round=10, client_epochs_per_round=1, client_batch_size=20)
    config = training.ExperimentConfig(
        **{**values, **config_values},
        task=task_name,
        total_rounds=rounds,
        rounds_per_eval=rounds,
        rounds_per_checkpoint=rounds,
        root_output_dir=out,
        experiment_name=name,
    )
    training.run_experiment(config, load_task(task_name, **task_kwargs), on_round_end=on_round_end)
    with open(os.path.join(out, name + "_rss.json"), "w") as f:
        json.dump(samples, f)
    return samples


def main(argv) -> None:
    name, rounds, out, task_name, task_kwargs, config_values = argv
    runtime.use_local_runtime()
    try:
        probe(name, int(rounds), out, task_name, json.loads(task_kwargs), json.loads(config_values))
    finally:
        runtime.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
