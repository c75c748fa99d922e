"""DP-FedPT against DP-FedAvg on the digits task at several noise levels.

Both use the same DP aggregator (clip, noise multiplier, uniform averaging), the same
clients and data order, and the same trainable initialization. Writes a table
(Markdown and JSON) and a PNG of final test accuracy against the noise multiplier.
"""

from fedpt_cli import entry

import json
import os
import sys

from absl import flags

import baselines
from tff_fedpt import reporting, training
from tff_fedpt.tasks import digits, load_task

baselines.register()

flags.DEFINE_list("noise_multipliers", ["0", "0.3", "1", "3"], "Noise levels to compare.")
flags.DEFINE_float("clip", 0.5, "L2 clipping norm of the client updates.")
flags.DEFINE_integer("total_rounds", 60, "Rounds per run.")
flags.DEFINE_integer("clients_per_round", 20, "Clients per round.")
flags.DEFINE_enum("sampling", "poisson", ["uniform", "poisson"], "Client sampling.")
flags.DEFINE_string("output_dir", "output/dp_comparison", "Where results go.")
FLAGS = flags.FLAGS


def main():
    task = load_task("digits")
    population = len(task.train_data.client_ids)
    from tqdm import tqdm

    rows, points = [], {"DP-FedPT (dense frozen)": [], "DP-FedAvg": []}
    for z in [float(v) for v in FLAGS.noise_multipliers]:
        for label, algorithm, freeze in (
            ("DP-FedPT (dense frozen)", "fedpt", "dense"),
            ("DP-FedAvg", "fedavg", "none"),
        ):
            config = training.ExperimentConfig(
                **{**digits.RECOMMENDED, "total_rounds": FLAGS.total_rounds},
                task="digits",
                algorithm=algorithm,
                freeze=freeze,
                dp=True,
                noise_multiplier=z,
                clip=FLAGS.clip,
                sampling=FLAGS.sampling,
                clients_per_round=FLAGS.clients_per_round,
                rounds_per_eval=FLAGS.total_rounds,
                rounds_per_checkpoint=FLAGS.total_rounds,
                root_output_dir=FLAGS.output_dir,
                experiment_name=f"{algorithm}_z{z:g}",
            )
            bar = tqdm(total=config.total_rounds, desc=f"{label} z={z:g}", file=sys.stderr)
            result = training.run_experiment(
                config, task, on_round_end=lambda r, row, bar=bar: bar.update(r - bar.n)
            )
            bar.close()
            last = result.rows[-1]
            epsilon = float(last["privacy/epsilon"])
            accuracy = float(result.final_eval["eval/accuracy"])
            points[label].append((z, epsilon, accuracy))
            rows.append(
                {
                    "run": label,
                    "noise_multiplier": z,
                    "epsilon": epsilon,
                    "delta": float(last["privacy/delta"]),
                    "test_accuracy": accuracy,
                    "noise_stddev": float(last["aggregator/noise_stddev"]),
                    "trainable_dimensions": (int(last["upload_bytes_per_client"]) - 4) // 4,
                }
            )
    table = reporting.table(
        [
            {
                "run": r["run"],
                "noise multiplier": f"{r['noise_multiplier']:g}",
                "epsilon": f"{r['epsilon']:.3g}",
                "test accuracy": f"{r['test_accuracy']:.4f}",
                "noise std on the mean": f"{r['noise_stddev']:.4g}",
                "noised dimensions": r["trainable_dimensions"],
            }
            for r in rows
        ]
    )
    print(
        f"\nDigits, {FLAGS.total_rounds} rounds, {FLAGS.clients_per_round} of {population} "
        f"clients per round ({FLAGS.sampling}), clip {FLAGS.clip}, delta = 1/{population}:\n"
    )
    print(table)
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    with open(os.path.join(FLAGS.output_dir, "dp_comparison.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(FLAGS.output_dir, "dp_comparison.json"), "w") as f:
        json.dump(rows, f, indent=2)
    plot = reporting.plot_accuracy_vs_noise(
        points,
        os.path.join(FLAGS.output_dir, "accuracy_vs_noise.png"),
        title=f"Digits: DP-FedPT vs DP-FedAvg ({FLAGS.total_rounds} rounds, clip {FLAGS.clip})",
    )
    print(f"\nPlot: {os.path.abspath(plot)}")


if __name__ == "__main__":
    entry.run(main)
