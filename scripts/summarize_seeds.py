"""Mean and spread over seeds of finished runs, from their metrics.csv: the final test
accuracy, the mean of the last five evaluations, the best, and the median round time;
`--rounds=N` summarizes every run at round N (runs still in progress, compared at equal
rounds).

  .venv/bin/python scripts/summarize_seeds.py --root_output_dir=DIR \\
      --groups='DP-FedPT head=run_a,run_b;DP-FedAvg fine-tuning=run_c' --output=x.json
"""

from fedpt_cli import entry

import json
import statistics

from absl import flags

from experiments import grid

flags.DEFINE_string("root_output_dir", None, "Where the runs are (results/<name>/metrics.csv).")
flags.DEFINE_string("groups", None, "label=run,run;label=run,... (one label per setting).")
flags.DEFINE_string("output", None, "Where the JSON goes (also printed as a table).")
flags.DEFINE_integer(
    "rounds", 0, "Summarize each run at this round (0: at its last).", lower_bound=0
)
FLAGS = flags.FLAGS


def _run(store, name, rounds):
    rows = store.rows(name)
    if rounds:
        if len(rows) < rounds:
            raise entry.ScriptError(
                f"--rounds={rounds}: run {name!r} has reached round {len(rows)} under {store.root}."
            )
        rows = [r for r in rows if int(r["round"]) <= rounds]
    evals = grid.evaluations(rows)
    if not evals:
        raise entry.ScriptError(f"--groups: run {name!r} has no evaluation under {store.root}.")
    return dict(
        run=name,
        rounds=len(rows),
        final=evals[-1],
        last5=statistics.mean(evals[-5:]),
        best=max(evals),
        median_round_s=statistics.median(float(r["round_seconds"]) for r in rows),
    )


def _spread(values):
    return statistics.stdev(values) if len(values) > 1 else 0.0


def main():
    store = grid.Store(FLAGS.root_output_dir)
    summary = []
    for part in FLAGS.groups.split(";"):
        label, _, names = part.partition("=")
        runs = [_run(store, n.strip(), FLAGS.rounds) for n in names.split(",") if n.strip()]
        summary.append(
            dict(
                label=label.strip(),
                seeds=len(runs),
                final_mean=statistics.mean(r["final"] for r in runs),
                final_sd=_spread([r["final"] for r in runs]),
                last5_mean=statistics.mean(r["last5"] for r in runs),
                last5_sd=_spread([r["last5"] for r in runs]),
                runs=runs,
            )
        )
    print("| setting | seeds | final (mean ± sd) | last 5 evaluations (mean ± sd) | per run |")
    print("|---|---|---|---|---|")
    for s in summary:
        per_run = ", ".join(f"{r['final']:.4f} / {r['last5']:.4f}" for r in s["runs"])
        print(
            f"| {s['label']} | {s['seeds']} | {s['final_mean']:.4f} ± {s['final_sd']:.4f} | "
            f"{s['last5_mean']:.4f} ± {s['last5_sd']:.4f} | {per_run} |"
        )
    with open(FLAGS.output, "w") as f:
        json.dump(summary, f, indent=1)


if __name__ == "__main__":
    flags.mark_flags_as_required(["root_output_dir", "groups", "output"])
    entry.run(main)
