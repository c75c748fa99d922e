"""Does pretrained FedPT reach FedAvg at a fraction of the traffic? Fashion-MNIST with a
public pretraining split, as a declarative grid of runs plus a report.

Setup: 20% of the training set is the server's public data (`--public_fraction`); the
model is pretrained centrally on its classes 0-4 (`scripts/pretrain.py`, `--pretrained`);
the 1,000 clients hold the other 80% (all classes, Dirichlet(0.5)). Each entry of the
grid is one algorithm setting, run at every client learning rate of its grid; the report
takes each setting's best rate.

Sections (resumable: finished runs are read back, a half-finished run resumes):
  runs     the grid without DP (`GRID`), `--rounds` rounds, evaluated every 10
  seeds    `SEED_SETTINGS` again at their best rate with each of `--seeds`
  long     `LONG_SETTINGS` at their best rate for `--long_rounds` rounds
  dp       DP at `--dp_clients` clients, Poisson `--dp_clients_per_round` per round,
           `--dp_rounds` rounds, noise for each of `--epsilons` (`DP_SETTINGS`)
  dp_long  the noise-bound regime: `DP_LONG_SETTINGS` at `--dp_long_epsilon` over
           `--dp_long_rounds` rounds
  report   tables (Markdown + JSON) and plots under `--docs_dir` from whatever runs exist;
           it refuses to replace results that hold more runs than it found

  .venv/bin/python scripts/pretrain.py --output=output/pretrained/fashion_cnn.npz
  .venv/bin/python scripts/pretrained_experiments.py --sections=runs,dp,report
"""

import entry

import dataclasses
import json
import os
import statistics
import time

from absl import flags

from tff_fedpt import reporting, training
from tff_fedpt.tasks import load_task
from tff_fedpt.training import outputs

SECTIONS = ("runs", "seeds", "long", "dp", "dp_long", "report")
flags.DEFINE_list("sections", list(SECTIONS), f"Which sections to run: {SECTIONS}.")
flags.DEFINE_string("output_dir", "output/fashion_pretrained", "Checkpoints and metrics.")
flags.DEFINE_string("docs_dir", "docs/fashion_pretrained", "Where the report goes.")
flags.DEFINE_string("data_dir", None, "Fashion-MNIST IDX files (default: Debian's, Keras').")
flags.DEFINE_string(
    "pretrained", "output/pretrained/fashion_cnn.npz", "scripts/pretrain.py's weights file."
)
flags.DEFINE_float("public_fraction", 0.2, "The held-out public fraction it was trained on.")
flags.DEFINE_integer("num_clients", 1000, "Clients of the runs without DP.")
flags.DEFINE_integer("rounds", 100, "Rounds of each run without DP.")
flags.DEFINE_list("only", [], "Run only the grid entries with these names (default: all).")
flags.DEFINE_integer(
    "max_rates", 0, "Run each setting at its first this many rates only (0: its whole grid)."
)
flags.DEFINE_list("seeds", ["1", "2"], "Extra seeds of the seeds section (seed 0 is the grid's).")
flags.DEFINE_integer("long_rounds", 300, "Rounds of the long section.")
flags.DEFINE_integer("dp_long_rounds", 300, "Rounds of the dp_long section.")
flags.DEFINE_float("dp_long_epsilon", 2.0, "Target epsilon of the dp_long section.")
flags.DEFINE_integer("dp_clients", 3000, "Population of the DP runs.")
flags.DEFINE_integer("dp_clients_per_round", 100, "Expected clients per round (Poisson).")
flags.DEFINE_integer("dp_rounds", 30, "Rounds of the DP runs.")
flags.DEFINE_list(
    "epsilons", ["1", "2", "5"], "Target epsilons of the DP runs (delta 1/population)."
)
flags.DEFINE_list(
    "dp_clips", ["1"], "L2 clips of the dp section (the grid per setting; 1 is the first pass)."
)
FLAGS = flags.FLAGS

COMMON = dict(
    task="fashion_mnist",
    client_epochs_per_round=1,
    client_batch_size=20,
    server_learning_rate=1.0,
    rounds_per_eval=10,
    clients_per_round=10,
)


@dataclasses.dataclass(frozen=True)
class Setting:
    """One algorithm setting of the grid, run at each of `rates`."""

    name: str
    label: str
    rates: tuple[float, ...]
    options: tuple[tuple[str, object], ...] = ()
    pretrained: bool = True

    def config(self, rate: float, **extra) -> dict:
        values = {**COMMON, **dict(self.options), "client_learning_rate": rate, **extra}
        if self.pretrained:
            values["pretrained_weights"] = FLAGS.pretrained
        return values


def _adapters(rank, mode):
    return (
        ("algorithm", "fedpt"),
        ("freeze", "convs"),
        ("adapter_layers", "dense128"),
        ("adapter_rank", rank),
        ("adapter_mode", mode),
    )


# The comparison (issue: "Evidence for pretrained FedPT"). Rates bracket each setting's
# best where the earlier Fashion-MNIST tuning (docs/fashion_mnist.md) did not settle it.
GRID = (
    Setting(
        "fedavg_scratch",
        "FedAvg from scratch",
        (0.2,),
        (("algorithm", "fedavg"), ("freeze", "none")),
        pretrained=False,
    ),
    Setting(
        "fedavg_finetune",
        "FedAvg fine-tuning every weight from the pretrained model",
        (0.05, 0.2),
        (("algorithm", "fedavg"), ("freeze", "none")),
    ),
    Setting(
        "fedpt_head",
        "FedPT, pretrained convs + dense frozen, output layer trained",
        (0.2, 0.5, 1.0),
        (("algorithm", "fedpt"), ("freeze", "all_but_output")),
    ),
    Setting(
        "fedpt_lora4",
        "FedPT head + LoRA r4 on dense (A, B trained)",
        (0.2, 0.5),
        _adapters(4, "lora"),
    ),
    Setting(
        "fedpt_lora16",
        "FedPT head + LoRA r16 on dense (A, B trained)",
        (0.2, 0.5),
        _adapters(16, "lora"),
    ),
    Setting(
        "fedpt_ffa16",
        "FedPT head + FFA-LoRA r16 on dense (A seeded, B trained)",
        (0.2, 0.5, 1.0),
        _adapters(16, "ffa"),
    ),
    Setting(
        "fedpt_random",
        "FedPT, random (seeded) dense frozen, from scratch",
        (0.5,),
        (("algorithm", "fedpt"), ("freeze", "dense")),
        pretrained=False,
    ),
)
DP_SETTINGS = ("fedavg_finetune", "fedpt_head", "fedpt_ffa16")
# The two that decide the headline (the strong baseline, the adapter closest to it at
# 30x less traffic), run with more seeds; the long runs add the head alone.
SEED_SETTINGS = ("fedavg_finetune", "fedpt_lora4")
LONG_SETTINGS = ("fedavg_finetune", "fedpt_lora4", "fedpt_head")
# Noise-bound DP: the best pretrained pair, and random-frozen FedPT against FedAvg from
# scratch (the open question of docs/fashion_mnist.md).
DP_LONG_SETTINGS = ("fedavg_finetune", "fedpt_head", "fedavg_scratch", "fedpt_random")
DP_OPTIONS = dict(dp=True, sampling="poisson", client_weighting="uniform", clip=1.0)


def _rates(setting: Setting) -> tuple[float, ...]:
    return setting.rates[: FLAGS.max_rates] if FLAGS.max_rates > 0 else setting.rates


def _name(setting: Setting, rate: float, prefix: str = "", suffix: str = "") -> str:
    return f"{prefix}{setting.name}_lr{rate:g}{suffix}"


def _seeds() -> list[int]:
    try:
        seeds = [int(s) for s in FLAGS.seeds]
    except ValueError:
        raise entry.ScriptError(f"--seeds: expected integers, got {FLAGS.seeds}.") from None
    if 0 in seeds:
        raise entry.ScriptError("--seeds: seed 0 is the grid's own run; name the extra seeds.")
    return seeds


def _selected(among=None):
    """The grid entries named by --only (default all), restricted to `among`."""
    unknown = set(FLAGS.only) - {s.name for s in GRID}
    if unknown:
        raise entry.ScriptError(
            f"--only: unknown {sorted(unknown)}; valid: {[s.name for s in GRID]}."
        )
    return [
        s
        for s in GRID
        if (not FLAGS.only or s.name in FLAGS.only) and (among is None or s.name in among)
    ]


def _run(values: dict, name: str, task) -> None:
    config = training.ExperimentConfig(
        **values,
        root_output_dir=FLAGS.output_dir,
        experiment_name=name,
        rounds_per_checkpoint=max(1, min(25, values["total_rounds"] // 4)),
    )
    start = time.time()

    def on_round_end(round_num, row):
        if round_num % 10 == 0 or round_num == config.total_rounds:
            acc = row.get("eval/accuracy", "")
            shown = f", test acc {acc:.4f}" if acc != "" else ""
            print(
                f"  {name}: round {round_num}/{config.total_rounds}{shown}, "
                f"{time.time() - start:.0f} s",
                flush=True,
            )

    try:
        training.run_experiment(config, task, on_round_end=on_round_end)
    except outputs.RunInProgressError:
        print(f"  {name}: running in another process; skipped here", flush=True)


def _task(num_clients):
    return load_task(
        "fashion_mnist",
        data_dir=FLAGS.data_dir,
        num_clients=num_clients,
        alpha=0.5,
        public_fraction=FLAGS.public_fraction,
    )


def _check_pretrained():
    if not os.path.exists(FLAGS.pretrained):
        raise entry.ScriptError(
            f"--pretrained={FLAGS.pretrained} does not exist; make it with "
            f"scripts/pretrain.py --public_fraction={FLAGS.public_fraction:g} "
            f"--output={FLAGS.pretrained}."
        )


def section_runs():
    _check_pretrained()
    task = _task(FLAGS.num_clients)
    for setting in _selected():
        for rate in _rates(setting):
            _run(setting.config(rate, total_rounds=FLAGS.rounds), _name(setting, rate), task)


def section_seeds():
    _check_pretrained()
    task = _task(FLAGS.num_clients)
    for setting in _selected(SEED_SETTINGS):
        rate = _best_rate(setting)
        for seed in _seeds():
            values = setting.config(rate, total_rounds=FLAGS.rounds, seed=seed)
            _run(values, _name(setting, rate, suffix=f"_seed{seed}"), task)


def section_long():
    _check_pretrained()
    task = _task(FLAGS.num_clients)
    for setting in _selected(LONG_SETTINGS):
        rate = _best_rate(setting)
        values = setting.config(rate, total_rounds=FLAGS.long_rounds)
        _run(values, _name(setting, rate, suffix=f"_r{FLAGS.long_rounds}"), task)


def _dp_values(setting, rate, epsilon, rounds, clip=DP_OPTIONS["clip"]):
    return setting.config(
        rate,
        total_rounds=rounds,
        clients_per_round=FLAGS.dp_clients_per_round,
        target_epsilon=epsilon,
        **{**DP_OPTIONS, "clip": clip},
    )


def _dp_clips() -> list[float]:
    try:
        clips = [float(c) for c in FLAGS.dp_clips]
    except ValueError:
        raise entry.ScriptError(f"--dp_clips: expected numbers, got {FLAGS.dp_clips}.") from None
    if not clips or min(clips) <= 0:
        raise entry.ScriptError(f"--dp_clips: expected positive clips, got {FLAGS.dp_clips}.")
    return clips


def _dp_name(setting, rate, epsilon, clip):
    # The first pass (clip 1.0) keeps its name; the clip grid's other runs say their clip.
    suffix = "" if clip == DP_OPTIONS["clip"] else f"_clip{clip:g}"
    return _name(setting, rate, f"dp_eps{epsilon:g}_", suffix)


def section_dp():
    _check_pretrained()
    task = _task(FLAGS.dp_clients)
    for epsilon in map(float, FLAGS.epsilons):
        for setting in _selected(DP_SETTINGS):
            rate = _best_rate(setting)
            for clip in _dp_clips():
                values = _dp_values(setting, rate, epsilon, FLAGS.dp_rounds, clip)
                _run(values, _dp_name(setting, rate, epsilon, clip), task)


def _dp_long_name(setting, rate):
    return _name(setting, rate, f"dp_eps{FLAGS.dp_long_epsilon:g}_", f"_r{FLAGS.dp_long_rounds}")


def section_dp_long():
    _check_pretrained()
    task = _task(FLAGS.dp_clients)
    for setting in _selected(DP_LONG_SETTINGS):
        rate = _best_rate(setting)
        values = _dp_values(setting, rate, FLAGS.dp_long_epsilon, FLAGS.dp_long_rounds)
        _run(values, _dp_long_name(setting, rate), task)


# ---------------------------------------------------------------------------
# The report.


def _rows(name):
    return outputs.run_metrics(FLAGS.output_dir, name)


def _final(rows):
    evals = [float(r["eval/accuracy"]) for r in rows if r.get("eval/accuracy", "") != ""]
    return evals[-1] if evals else None


def _best_rate(setting: Setting) -> float:
    finals = {rate: _final(_rows(_name(setting, rate))) for rate in _rates(setting)}
    done = {rate: acc for rate, acc in finals.items() if acc is not None}
    return max(done, key=done.get) if done else setting.rates[0]


def _accuracy_within(rows, megabytes):
    points = [
        float(r["eval/accuracy"])
        for r in rows
        if r.get("eval/accuracy", "") != "" and float(r["cumulative_megabytes"]) <= megabytes
    ]
    return max(points) if points else None


def _summaries():
    out = []
    for setting in _selected():
        rate = _best_rate(setting)
        rows = _rows(_name(setting, rate))
        if not rows or _final(rows) is None:
            continue
        summary = reporting.summarize(f"{setting.label}, lr {rate:g}", rows)
        summary.update(
            name=setting.name,
            complete=summary["rounds"] >= FLAGS.rounds,
            train_minutes=_minutes(rows),
            lr_grid={f"{r:g}": _final(_rows(_name(setting, r))) for r in _rates(setting)},
        )
        out.append((summary, rows))
    return out


def _minutes(rows):
    return round(sum(float(r["round_seconds"]) for r in rows) / 60, 1)


def _dp_row(label, epsilon, rate, rows, clip=DP_OPTIONS["clip"]):
    return {
        "run": f"DP: {label}",
        "target epsilon": epsilon,
        "clip": clip,
        "epsilon reached": round(float(rows[-1]["privacy/epsilon"]), 3),
        "noise multiplier": round(float(rows[-1]["privacy/noise_multiplier"]), 3),
        "client lr": rate,
        "rounds": int(rows[-1]["round"]),
        "test acc": _final(rows),
        "bytes/client/round": int(rows[-1]["broadcast_bytes_per_client"])
        + int(rows[-1]["upload_bytes_per_client"]),
        "train min": _minutes(rows),
    }


def _dp_rows():
    out = []
    for setting in _selected(DP_SETTINGS):
        for epsilon in map(float, FLAGS.epsilons):
            for rate in _rates(setting):
                for clip in _dp_clips():
                    rows = _rows(_dp_name(setting, rate, epsilon, clip))
                    if rows and _final(rows) is not None:
                        out.append(_dp_row(setting.label, epsilon, rate, rows, clip))
    return out


def _dp_long_rows():
    out = []
    for setting in _selected(DP_LONG_SETTINGS):
        rate = _best_rate(setting)
        rows = _rows(_dp_long_name(setting, rate))
        if rows and _final(rows) is not None:
            out.append(_dp_row(setting.label, FLAGS.dp_long_epsilon, rate, rows))
    return out


def _seed_rows():
    out = []
    for setting in _selected(SEED_SETTINGS):
        rate = _best_rate(setting)
        names = [_name(setting, rate)] + [
            _name(setting, rate, suffix=f"_seed{seed}") for seed in _seeds()
        ]
        finals = [a for a in (_final(_rows(n)) for n in names) if a is not None]
        if len(finals) > 1:
            out.append(
                {
                    "run": f"{setting.label}, lr {rate:g}",
                    "seeds": len(finals),
                    "mean test acc": round(statistics.mean(finals), 4),
                    "std": round(statistics.stdev(finals), 4),
                    "min": round(min(finals), 4),
                    "max": round(max(finals), 4),
                }
            )
    return out


def _long_rows():
    out = []
    for setting in _selected(LONG_SETTINGS):
        rate = _best_rate(setting)
        rows = _rows(_name(setting, rate, suffix=f"_r{FLAGS.long_rounds}"))
        if rows and _final(rows) is not None:
            summary = reporting.summarize(f"{setting.label}, lr {rate:g}", rows)
            out.append(
                {
                    "run": summary["run"],
                    "rounds": summary["rounds"],
                    "test acc": round(summary["test_accuracy"], 4),
                    f"acc at round {FLAGS.rounds}": _accuracy_at(rows, FLAGS.rounds),
                    "total MB": round(summary["total_megabytes"], 1),
                    "train min": _minutes(rows),
                }
            )
    return out


def _accuracy_at(rows, round_num):
    points = [
        float(r["eval/accuracy"])
        for r in rows
        if r.get("eval/accuracy", "") != "" and int(r["round"]) == round_num
    ]
    return round(points[0], 4) if points else "—"


def _counts(report):
    return {k: len(v) for k, v in report.get("sections", {}).items()}


def report():
    summaries = _summaries()
    lines, result = [], {"sections": {}}
    if summaries:
        reference = next((s for s, _ in summaries if s["name"] == "fedavg_finetune"), None)
        table = []
        for summary, _ in summaries:
            ratio = (
                reference["bytes_per_client_round"] / summary["bytes_per_client_round"]
                if reference
                else None
            )
            table.append(
                {
                    "run": summary["run"],
                    "test acc": round(summary["test_accuracy"], 4),
                    "rounds": summary["rounds"],
                    "bytes/client/round": summary["bytes_per_client_round"],
                    "less traffic than fine-tuning": f"{ratio:.1f}x" if ratio else "",
                    "total MB": round(summary["total_megabytes"], 1),
                    "train min": summary["train_minutes"],
                    "lr grid (acc)": ", ".join(
                        f"{k}: {v:.3f}" for k, v in summary["lr_grid"].items() if v is not None
                    ),
                }
            )
        result["sections"]["runs"] = table
        lines += ["## Without DP: equal rounds\n", reporting.table(table)]
        budget_of = min(s["total_megabytes"] for s, _ in summaries)
        budgets = [budget_of * f for f in (1, 10, 100)]
        equal = [
            {
                "run": s["run"],
                **{
                    f"within {b:,.0f} MB": (
                        round(a, 4) if (a := _accuracy_within(rows, b)) is not None else "—"
                    )
                    for b in budgets
                },
            }
            for s, rows in summaries
        ]
        result["sections"]["equal_megabytes"] = equal
        lines += [
            "\n## Without DP: equal megabytes (best evaluation within each budget)\n",
            reporting.table(equal),
        ]
    extra = (
        ("seeds", "Without DP: seeds (final test accuracy over seeds)", _seed_rows()),
        ("long", f"Without DP: {FLAGS.long_rounds} rounds", _long_rows()),
        ("dp", "DP (user-level, DP-FedAvg aggregation)", _dp_rows()),
        (
            "dp_long",
            f"DP in the noise-bound regime: epsilon {FLAGS.dp_long_epsilon:g} over "
            f"{FLAGS.dp_long_rounds} rounds",
            _dp_long_rows(),
        ),
    )
    for key, title, rows in extra:
        if rows:
            result["sections"][key] = rows
            lines += [f"\n## {title}\n", reporting.table(rows)]
    path = os.path.join(FLAGS.docs_dir, "results.json")
    try:
        reporting.refuse_fewer_runs(path, _counts(result), _counts, runs_dir=FLAGS.output_dir)
    except reporting.FewerRunsError as e:
        raise entry.ScriptError(f"{e} (--output_dir, --docs_dir)") from None
    os.makedirs(FLAGS.docs_dir, exist_ok=True)
    if summaries:
        reporting.plot_accuracy_vs_megabytes(
            {s["run"]: rows for s, rows in summaries},
            os.path.join(FLAGS.docs_dir, "accuracy_vs_megabytes.png"),
            "Fashion-MNIST, pretrained on public classes 0-4",
        )
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(FLAGS.docs_dir, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    if not FLAGS.sections:
        raise entry.ScriptError(f"--sections is empty; name at least one of {list(SECTIONS)}.")
    unknown = set(FLAGS.sections) - set(SECTIONS)
    if unknown:
        raise entry.ScriptError(f"--sections: unknown {sorted(unknown)}; valid: {list(SECTIONS)}.")
    steps = {
        "runs": section_runs,
        "seeds": section_seeds,
        "long": section_long,
        "dp": section_dp,
        "dp_long": section_dp_long,
        "report": report,
    }
    for section in SECTIONS:
        if section in FLAGS.sections:
            print(f"\n# section {section}", flush=True)
            steps[section]()


if __name__ == "__main__":
    entry.run(main)
