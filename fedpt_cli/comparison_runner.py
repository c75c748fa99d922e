"""Shared by demo.py, compare_algorithms.py and compare_compression.py: train several
runs on one task, then write a table (Markdown + JSON) and a plot."""

import json
import os
import shutil
import sys

import baselines
from tff_fedpt import reporting, training
from tff_fedpt.tasks import digits

baselines.register()

# The digits task's tuned settings, the same for every algorithm (rounds set per run).
DIGITS = {"task": "digits", **{k: v for k, v in digits.RECOMMENDED.items() if k != "total_rounds"}}


def run_and_report(task, runs, *, total_rounds, clients_per_round, output_dir, resume, title):
    """Trains every run (label -> ExperimentConfig overrides) and writes the report."""
    from tqdm import tqdm

    if not resume:
        for sub in ("checkpoints", "results", "logdir"):
            shutil.rmtree(os.path.join(output_dir, sub), ignore_errors=True)
    results = {}
    for label, overrides in runs.items():
        config = training.ExperimentConfig(
            **{**DIGITS, **overrides},
            total_rounds=total_rounds,
            clients_per_round=clients_per_round,
            rounds_per_checkpoint=total_rounds,
            root_output_dir=output_dir,
            experiment_name=label.replace(" ", "_").replace("(", "").replace(")", ""),
        )
        bar = tqdm(total=config.total_rounds, desc=label, unit="round", file=sys.stderr)

        def on_round_end(round_num, row, bar=bar):
            bar.set_postfix(
                loss=f"{row['train/loss']:.3f}", MB=f"{row['cumulative_megabytes']:.0f}"
            )
            bar.update(round_num - bar.n)

        results[label] = training.run_experiment(config, task, on_round_end=on_round_end)
        bar.close()
    summaries = [reporting.summarize(label, r.rows) for label, r in results.items()]
    baseline = next(label for label in runs if runs[label]["algorithm"] == "fedavg")
    os.makedirs(output_dir, exist_ok=True)
    plot = reporting.plot_accuracy_vs_megabytes(
        {label: r.rows for label, r in results.items()},
        os.path.join(output_dir, "accuracy_vs_megabytes.png"),
        title=title,
    )
    with open(os.path.join(output_dir, "comparison.json"), "w") as f:
        json.dump(summaries, f, indent=2)
    with open(os.path.join(output_dir, "comparison.md"), "w") as f:
        f.write(reporting.markdown_table(summaries, baseline=baseline) + "\n")
    return results, reporting.comparison_table(summaries, baseline=baseline), plot
