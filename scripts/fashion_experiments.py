"""The paper's claims measured on Fashion-MNIST (real 28x28 images), side by side.

Sections (each resumable: rerun the same command and finished runs are read back, a
half-finished run resumes from its checkpoint):

  a  communication against accuracy: FedAvg, FedPT with each preset and trainable
     fraction, the small model of FedPT's cost, PVT; client learning rate tuned per
     algorithm on --learning_rates; extra seeds for FedAvg and FedPT dense-128
  b  overparameterization: FedPT with the dense layer frozen at --widths
  c  DP at a realistic population: --dp_clients clients, Poisson sampling, noise for
     each of --epsilons at delta 1/population, DP-FedPT (dense-128 and --dp_widths)
     against DP-FedAvg; clip tuned per algorithm on --clips
  c_control  c's population, sampling and rates without DP (what the setting itself costs)
  c_long  DP-FedPT and DP-FedAvg at the smallest epsilon over --dp_long_rounds rounds
  long  the headline runs (FedAvg and FedPT dense-128 at their best rate, every seed, and
     FedPT at the widest --widths) continued from their last round to --long_rounds, to see
     whether the curves flatten (each continues a copy of the finished run: same trajectory)
  report  tables (Markdown + JSON) and plots from whatever runs exist

  .venv/bin/python scripts/fashion_experiments.py --sections=a,b,c,report
"""

import entry

import functools
import json
import os
import sys
import time

import numpy as np
from absl import flags

from tff_fedpt import reporting, training
from tff_fedpt.tasks import load_task
from tff_fedpt.training import outputs

SECTIONS = ("a", "b", "c", "c_control", "c_long", "long", "report")
flags.DEFINE_list("sections", list(SECTIONS), f"Which sections to run: {SECTIONS}.")
flags.DEFINE_string("output_dir", "output/fashion", "Checkpoints, metrics and reports.")
flags.DEFINE_string("docs_dir", "docs/fashion_mnist", "Where the report's tables and plots go.")
flags.DEFINE_string("data_dir", None, "Fashion-MNIST IDX files (default: Debian's, Keras').")
flags.DEFINE_integer("num_clients", 1000, "Clients of sections a and b.")
flags.DEFINE_float("dirichlet_alpha", 0.5, "Label skew of the split.")
flags.DEFINE_integer("rounds", 100, "Rounds of every run in sections a and b.")
flags.DEFINE_integer("clients_per_round", 10, "Clients per round in sections a and b.")
flags.DEFINE_list("learning_rates", ["0.05", "0.2", "0.5"], "Client SGD learning rate grid.")
flags.DEFINE_list(
    "fedpt_extra_rates",
    ["1.0"],
    "FedPT's grid adds these (its best rate was at the top of the common grid).",
)
flags.DEFINE_list("presets", ["dense", "all_but_output", "convs"], "FedPT presets tuned.")
flags.DEFINE_list(
    "untuned_presets",
    ["trainable_0.1", "trainable_0.5", "trainable_0.02"],
    "FedPT presets run at dense's best learning rate only (skipped, and reported as such, "
    "when they freeze the same layers as a preset already run).",
)
flags.DEFINE_bool("baselines", True, "Section a: also tune the small model and PVT.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds for FedAvg and FedPT dense at their best rate.")
flags.DEFINE_integer("early_rounds", 4, "Rounds of the every-round-evaluated FedAvg/PVT runs.")
flags.DEFINE_list("widths", ["512", "2048"], "Frozen dense widths of section b (128 is in a).")
flags.DEFINE_integer("dp_clients", 3000, "Population of section c.")
flags.DEFINE_integer("dp_clients_per_round", 100, "Expected clients per round (Poisson), c.")
flags.DEFINE_integer("dp_rounds", 30, "Rounds of section c.")
flags.DEFINE_list("epsilons", ["2", "5", "10"], "Target epsilons of section c.")
flags.DEFINE_list(
    "clips",
    ["0.1", "0.5", "1.0", "2.0"],
    "Clip grid of section c (tuned at the middle epsilon).",
)
flags.DEFINE_list(
    "dp_widths",
    ["2048"],
    "Section c: DP-FedPT also with the dense layer frozen at these widths (at the clip "
    "tuned for dense-128 and the width's best rate from section b).",
)
flags.DEFINE_integer("long_rounds", 300, "Rounds the long section continues runs to.")
flags.DEFINE_integer("dp_long_rounds", 100, "Rounds of the c_long section's DP runs.")
FLAGS = flags.FLAGS

COMMON = dict(
    task="fashion_mnist",
    client_epochs_per_round=1,
    client_batch_size=20,
    server_learning_rate=1.0,
    rounds_per_eval=10,
)


def _config(name, **kwargs):
    values = {**COMMON, "clients_per_round": FLAGS.clients_per_round, **kwargs}
    values.setdefault("rounds_per_checkpoint", values["total_rounds"] // 4 or 1)
    return training.ExperimentConfig(
        **values, root_output_dir=FLAGS.output_dir, experiment_name=name
    )


def _run(config, task, label):
    start = time.time()
    bar_state = {"last": 0}

    def on_round_end(round_num, row):
        if round_num - bar_state["last"] >= 10 or round_num == config.total_rounds:
            bar_state["last"] = round_num
            acc = row.get("eval/accuracy", "")
            print(
                f"  {label}: round {round_num}/{config.total_rounds}"
                f"{f', test acc {acc:.4f}' if acc != '' else ''}, "
                f"{time.time() - start:.0f} s",
                flush=True,
            )

    try:
        result = training.run_experiment(config, task, on_round_end=on_round_end)
    except outputs.RunInProgressError:  # another invocation is running it: leave it there
        print(f"  {label}: running in another process; skipped here", flush=True)
        return None
    return result.final_eval.get("eval/accuracy")


_TASKS = {}


def _task(**kwargs):
    key = tuple(sorted(kwargs.items()))
    if key not in _TASKS:
        _TASKS.clear()  # one task in memory at a time
        _TASKS[key] = load_task("fashion_mnist", data_dir=FLAGS.data_dir, **kwargs)
    return _TASKS[key]


def _lr_name(lr):
    return f"lr{lr:g}"


def _rates(algorithm):
    extra = FLAGS.fedpt_extra_rates if algorithm == "fedpt" else []
    return [float(x) for x in [*FLAGS.learning_rates, *extra]]


def _final(name):
    rows = outputs.run_metrics(FLAGS.output_dir, name)
    evals = [r for r in rows if r.get("eval/accuracy", "") != ""]
    return float(evals[-1]["eval/accuracy"]) if evals else None


def _best_of(values, run_name, default):
    """The value whose run (`run_name(value)`) ended most accurate; `default` if none ran."""
    scores = {v: _final(run_name(v)) for v in values}
    scores = {v: acc for v, acc in scores.items() if acc is not None}
    return max(scores, key=scores.get) if scores else default


def _best_lr(algorithm, freeze):
    return _best_of(
        _rates(algorithm),
        lambda lr: f"a_{algorithm}_{freeze}_{_lr_name(lr)}_s0",
        float(FLAGS.learning_rates[0]),
    )


def section_a():
    """Most important first: FedAvg and FedPT dense tuned, FedAvg's early rounds, the extra
    seeds, the small model, the other presets, then PVT (a run that stops early loses the
    least)."""
    task = _task(num_clients=FLAGS.num_clients, alpha=FLAGS.dirichlet_alpha)

    def run(name, **overrides):
        overrides.setdefault("total_rounds", FLAGS.rounds)
        _run(_config(name, **overrides), task, name)

    def grid(algorithm, freeze):
        for lr in _rates(algorithm):
            name = f"a_{algorithm}_{freeze}_{_lr_name(lr)}_s0"
            run(name, algorithm=algorithm, freeze=freeze, client_learning_rate=lr)

    def early(algorithm, freeze):  # evaluated every round: the equal-megabyte comparison
        run(
            f"a_{algorithm}_{freeze}_early",
            total_rounds=FLAGS.early_rounds,
            rounds_per_eval=1,
            algorithm=algorithm,
            freeze=freeze,
            client_learning_rate=_best_lr(algorithm, freeze),
        )

    def seeds(algorithm, freeze):
        lr = _best_lr(algorithm, freeze)
        for seed in map(int, FLAGS.seeds[1:]):
            run(
                f"a_{algorithm}_{freeze}_{_lr_name(lr)}_s{seed}",
                algorithm=algorithm,
                freeze=freeze,
                client_learning_rate=lr,
                seed=seed,
                frozen_seed=seed,
            )

    grid("fedavg", "none")
    grid("fedpt", "dense")
    early("fedavg", "none")
    seeds("fedavg", "none")
    seeds("fedpt", "dense")
    if FLAGS.baselines:
        grid("small_model", "dense")
    for preset in FLAGS.presets:
        if preset != "dense":
            grid("fedpt", preset)
    best = _best_lr("fedpt", "dense")
    for preset in _distinct_untuned():
        run(
            f"a_fedpt_{preset}_{_lr_name(best)}_s0",
            algorithm="fedpt",
            freeze=preset,
            client_learning_rate=best,
        )
    if FLAGS.baselines:
        grid("pvt", "none")
        early("pvt", "none")


@functools.cache
def _freeze_report(preset):
    from tff_fedpt import freezing
    from tff_fedpt.tasks import fashion_mnist

    return freezing.resolve_freeze(fashion_mnist.cnn(), fashion_mnist.PRESETS["cnn"][preset])


def _frozen_layers(preset):
    return _freeze_report(preset).frozen_layer_names


def _trainable_fraction(preset):
    return _freeze_report(preset).trainable_fraction


def _untuned_duplicates():
    """{untuned preset: the earlier preset freezing exactly the same layers}."""
    seen, duplicates = {}, {}
    for preset in [*FLAGS.presets, *FLAGS.untuned_presets]:
        layers = _frozen_layers(preset)
        if layers in seen and preset in FLAGS.untuned_presets:
            duplicates[preset] = seen[layers]
        seen.setdefault(layers, preset)
    return duplicates


def _distinct_untuned():
    duplicates = _untuned_duplicates()
    for preset, same in duplicates.items():
        print(f"  {preset}: freezes the same layers as {same}; not run again", flush=True)
    return [p for p in FLAGS.untuned_presets if p not in duplicates]


def _best_width_lr(width):
    """Section b's best rate at `width` (dense-128's when b has no run at it)."""
    return _best_of(
        _rates("fedpt"),
        lambda lr: f"b_fedpt_dense{width}_{_lr_name(lr)}",
        _best_lr("fedpt", "dense"),
    )


def section_b():
    rates = sorted(
        _rates("fedpt"),
        key=lambda lr: -(_final(f"a_fedpt_dense_{_lr_name(lr)}_s0") or 0),
    )[:2]
    for width in map(int, FLAGS.widths):
        task = _task(num_clients=FLAGS.num_clients, alpha=FLAGS.dirichlet_alpha, dense_units=width)
        for lr in rates:
            name = f"b_fedpt_dense{width}_{_lr_name(lr)}"
            _run(
                _config(
                    name,
                    total_rounds=FLAGS.rounds,
                    algorithm="fedpt",
                    freeze="dense",
                    client_learning_rate=lr,
                ),
                task,
                name,
            )


def _long_sources():
    """[(label, source run name, task kwargs, seed or None)]: the runs the long section
    continues (the seed where the source is one of several seeds)."""
    sources = []
    for algorithm, freeze, label in (("fedavg", "none", "FedAvg"), ("fedpt", "dense", "FedPT")):
        lr = _best_lr(algorithm, freeze)
        for seed in FLAGS.seeds:
            name = f"a_{algorithm}_{freeze}_{_lr_name(lr)}_s{seed}"
            sources.append((f"{label} dense-128, lr {lr:g}", name, {}, seed))
    if FLAGS.widths:
        width = max(map(int, FLAGS.widths))
        name = f"b_fedpt_dense{width}_{_lr_name(_best_width_lr(width))}"
        sources.append(
            (
                f"FedPT dense-{width}, lr {_best_width_lr(width):g}",
                name,
                {"dense_units": width},
                None,
            )
        )
    return sources


def section_long():
    for _, source, task_kwargs, _ in _long_sources():
        if len(_rows(source)) < FLAGS.rounds:
            print(f"  {source}: not finished; run its section first", flush=True)
            continue
        task = _task(num_clients=FLAGS.num_clients, alpha=FLAGS.dirichlet_alpha, **task_kwargs)
        name = f"l_{source}"
        outputs.fork_run(FLAGS.output_dir, source, name)
        hparams = outputs.run_hparams(FLAGS.output_dir, source)
        config = _config(
            name,
            total_rounds=FLAGS.long_rounds,
            algorithm=hparams["algorithm"],
            freeze=hparams["freeze"],
            client_learning_rate=float(hparams["client_learning_rate"]),
            seed=int(hparams["seed"]),
            frozen_seed=int(hparams["frozen_seed"]),
        )
        _run(config, task, name)


DP_LABELS = {"fedpt": "DP-FedPT (dense frozen)", "fedavg": "DP-FedAvg"}


def _dp_runs():
    middle = FLAGS.epsilons[len(FLAGS.epsilons) // 2]
    runs = []
    for algorithm, freeze in (("fedpt", "dense"), ("fedavg", "none")):
        for clip in map(float, FLAGS.clips):
            runs.append((algorithm, freeze, float(middle), clip))
    return runs


def _dp_name(algorithm, epsilon, clip, width=128):
    if epsilon is None:
        return _nodp_name(algorithm)
    dense = "" if width == 128 else f"_dense{width}"
    return f"c_{algorithm}{dense}_eps{epsilon:g}_clip{clip:g}"


def _nodp_name(algorithm):
    return f"c_{algorithm}_nodp"


def _dp_config(algorithm, freeze, epsilon, clip, width=128):
    lr = _best_lr(algorithm, freeze) if width == 128 else _best_width_lr(width)
    return _config(
        _dp_name(algorithm, epsilon, clip, width),
        total_rounds=FLAGS.dp_rounds,
        algorithm=algorithm,
        freeze=freeze,
        client_learning_rate=lr,
        clients_per_round=FLAGS.dp_clients_per_round,
        dp=True,
        target_epsilon=epsilon,
        clip=1.0 if clip is None else clip,
        sampling="poisson",
        client_weighting="uniform",
    )


def section_c():
    task = _task(num_clients=FLAGS.dp_clients, alpha=FLAGS.dirichlet_alpha)
    for algorithm, freeze, epsilon, clip in _dp_runs():  # clip grid at the middle epsilon
        _run(_dp_config(algorithm, freeze, epsilon, clip), task, _dp_name(algorithm, epsilon, clip))
    for algorithm, freeze in (("fedpt", "dense"), ("fedavg", "none")):
        clip = _best_clip(algorithm)
        for epsilon in map(float, FLAGS.epsilons):
            name = _dp_name(algorithm, epsilon, clip)
            _run(_dp_config(algorithm, freeze, epsilon, clip), task, name)
    clip = _best_clip("fedpt")
    for width in map(int, FLAGS.dp_widths):
        task = _task(num_clients=FLAGS.dp_clients, alpha=FLAGS.dirichlet_alpha, dense_units=width)
        for epsilon in map(float, FLAGS.epsilons):
            name = _dp_name("fedpt", epsilon, clip, width)
            config = _dp_config("fedpt", "dense", epsilon, clip, width)
            _run(config, task, name)


def _dp_long_name(algorithm):
    epsilon = min(map(float, FLAGS.epsilons))
    return _dp_name(algorithm, epsilon, _best_clip(algorithm)) + f"_r{FLAGS.dp_long_rounds}"


def section_c_long():
    """DP-FedPT (dense-128) and DP-FedAvg at their tuned clips and the smallest epsilon over
    --dp_long_rounds rounds: the same privacy spread over more rounds (a larger noise
    multiplier), towards the noise-bound regime the paper's DP claim is about."""
    task = _task(num_clients=FLAGS.dp_clients, alpha=FLAGS.dirichlet_alpha)
    epsilon = min(map(float, FLAGS.epsilons))
    for algorithm, freeze in (("fedpt", "dense"), ("fedavg", "none")):
        clip = _best_clip(algorithm)
        name = _dp_long_name(algorithm)
        config = _dp_config(algorithm, freeze, epsilon, clip).replace(
            experiment_name=name, total_rounds=FLAGS.dp_long_rounds
        )
        _run(config, task, name)


def section_c_control():
    """The control of c: the same population, sampling, weighting and rates without DP (no
    clip, no noise), so what DP costs each algorithm can be told from what the setting
    (--dp_rounds rounds of one local step) costs it."""
    task = _task(num_clients=FLAGS.dp_clients, alpha=FLAGS.dirichlet_alpha)
    for algorithm, freeze in (("fedpt", "dense"), ("fedavg", "none")):
        name = _nodp_name(algorithm)
        config = _dp_config(algorithm, freeze, None, None).replace(
            experiment_name=name, dp=False, target_epsilon=None
        )
        _run(config, task, name)


def _best_clip(algorithm):
    middle = float(FLAGS.epsilons[len(FLAGS.epsilons) // 2])
    return _best_of(
        map(float, FLAGS.clips),
        lambda clip: _dp_name(algorithm, middle, clip),
        float(FLAGS.clips[0]),
    )


# ---------------------------------------------------------------------------
# Report.


def _hparam(name, key):
    return outputs.run_hparams(FLAGS.output_dir, name).get(key, "")


def _rows(name):
    return outputs.run_metrics(FLAGS.output_dir, name)


def _curve(rows, x_key):
    """[(x, accuracy)] at evaluation rounds; x cumulative (MB or client seconds)."""
    points, seconds = [], 0.0
    for r in rows:
        seconds += float(r["round_seconds"])
        if r.get("eval/accuracy", "") != "":
            x = float(r["cumulative_megabytes"]) if x_key == "mb" else seconds
            points.append((x, float(r["eval/accuracy"])))
    return points


def _accuracy_at(points, budget):
    """The best accuracy reached within `budget` (None when the first eval is beyond it)."""
    within = [acc for x, acc in points if x <= budget]
    return max(within) if within else None


def _train_minutes(rows):
    """Minutes of training rounds in a run (evaluation and checkpoints not included)."""
    return sum(float(r["round_seconds"]) for r in rows) / 60


def _summary(label, names, total=None):
    finals = [(_final(n), _rows(n)) for n in names if _rows(n)]
    finals = [(a, r) for a, r in finals if a is not None]
    if not finals:
        return None
    total = total or FLAGS.rounds
    accs = [a for a, _ in finals]
    rows = finals[0][1]
    last = rows[-1]
    if any(len(r) < total for _, r in finals):
        label += f" (incomplete: {min(len(r) for _, r in finals)} of {total} rounds)"
    return {
        "run": label,
        "seeds": len(accs),
        "rounds": int(last["round"]),
        "test_accuracy_mean": float(np.mean(accs)),
        "test_accuracy_std": float(np.std(accs)) if len(accs) > 1 else 0.0,
        "bytes_per_client_round": int(last["broadcast_bytes_per_client"])
        + int(last["upload_bytes_per_client"]),
        "total_megabytes": float(last["cumulative_megabytes"]),
        "median_round_seconds": float(np.median([float(r["round_seconds"]) for r in rows])),
        "train_minutes": _train_minutes(rows),
        "curve_mb": _curve(rows, "mb"),
        "curve_seconds": _curve(rows, "seconds"),
        "runs": names,
    }


def _section_a_summaries():
    summaries = []
    tuned = [("fedavg", "none", "FedAvg")]
    tuned += [("fedpt", p, f"FedPT ({p} frozen)") for p in FLAGS.presets]
    tuned += [("small_model", "dense", "small model (FedAvg)"), ("pvt", "none", "PVT")]
    for algorithm, freeze, label in tuned:
        lr = _best_lr(algorithm, freeze)
        seeds = (
            FLAGS.seeds
            if (algorithm, freeze) in (("fedavg", "none"), ("fedpt", "dense"))
            else ["0"]
        )
        names = [f"a_{algorithm}_{freeze}_{_lr_name(lr)}_s{s}" for s in seeds]
        summary = _summary(f"{label}, lr {lr:g}", names)
        early = _rows(f"a_{algorithm}_{freeze}_early")
        if summary and early:  # the same trajectory (same seeds), evaluated every round
            first = summary["curve_mb"][0][0] if summary["curve_mb"] else float("inf")
            points = [p for p in _curve(early, "mb") if p[0] < first]
            summary["curve_mb"] = points + summary["curve_mb"]
        if summary:
            summary["lr_grid"] = {
                f"{x:g}": _final(f"a_{algorithm}_{freeze}_{_lr_name(x)}_s0")
                for x in _rates(algorithm)
            }
            summaries.append(summary)
    best = _best_lr("fedpt", "dense")
    for preset in FLAGS.untuned_presets:
        summary = _summary(
            f"FedPT ({preset} frozen), lr {best:g} (dense's)",
            [f"a_fedpt_{preset}_{_lr_name(best)}_s0"],
        )
        if summary:
            summaries.append(summary)
    return summaries


def _fmt_acc(s):
    if s["seeds"] > 1:
        return f"{s['test_accuracy_mean']:.4f} ± {s['test_accuracy_std']:.4f} ({s['seeds']} seeds)"
    return f"{s['test_accuracy_mean']:.4f}"


def _equal_budget_rows(summaries, key):
    """At FedPT dense's total budget (MB or client seconds): each run's best accuracy."""
    fedpt = next((s for s in summaries if s["run"].startswith("FedPT (dense")), None)
    if fedpt is None:
        return []
    curve = "curve_mb" if key == "mb" else "curve_seconds"
    budget = fedpt[curve][-1][0]
    fractions = (0.1, 0.25, 0.5, 1.0)
    rows = []
    for s in summaries:
        row = {"run": s["run"]}
        for f in fractions:
            acc = _accuracy_at(s[curve], f * budget)
            row[f"{f:g} x budget"] = f"{acc:.4f}" if acc is not None else "—"
        rows.append(row)
    unit = "MB" if key == "mb" else "s of round time"
    return rows, f"{budget:.1f} {unit}"


def _plot(summaries, path, key, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for s in summaries:
        points = s["curve_mb" if key == "mb" else "curve_seconds"]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", markersize=2, label=s["run"])
    if key == "mb":
        ax.set_xscale("log")
        ax.set_xlabel("cumulative megabytes (down + up, all clients)")
    else:
        ax.set_xlabel("cumulative round time (s)")
    ax.set_ylabel("test accuracy (10,000 test images)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _dp_row(name, label, total_rounds, epsilon=None, clip=None):
    """Section c's table row of run `name` (None when it has no evaluation yet)."""
    rows = _rows(name)
    if not rows or _final(name) is None:
        return None
    dp = epsilon is not None
    return {
        "run": label,
        "target epsilon": epsilon if dp else "—",
        "clip": clip if dp else "—",
        "client lr": _hparam(name, "client_learning_rate"),
        "epsilon reached": float(rows[-1]["privacy/epsilon"]) if dp else "—",
        "noise multiplier": float(rows[-1]["privacy/noise_multiplier"]) if dp else "—",
        "rounds": int(rows[-1]["round"]),
        "test acc": _final(name),
        "train min": round(_train_minutes(rows), 1),
        "complete": int(rows[-1]["round"]) >= total_rounds,
    }


def _smoothed(evals, round_num):
    """Mean test accuracy of the evaluations at round_num - 20, - 10 and round_num."""
    window = [evals[r] for r in range(round_num - 20, round_num + 1) if r in evals]
    return float(np.mean(window))


def _plot_rounds(curves, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for label, points in curves:
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o", markersize=2, label=label)
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy (10,000 test images)")
    ax.set_title("Fashion-MNIST: the headline runs continued")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report():
    os.makedirs(FLAGS.docs_dir, exist_ok=True)
    out = {"machine": f"{os.cpu_count()} CPU cores, {os.uname().machine}", "sections": {}}
    lines, plots = [], []  # plots are drawn once the report may be written
    a = _section_a_summaries()
    if a:
        out["sections"]["a"] = a
        lines.append("## a. Communication against accuracy\n")
        lines.append(
            reporting.table(
                [
                    {
                        "run": s["run"],
                        "test acc": _fmt_acc(s),
                        "rounds": s["rounds"],
                        "bytes/client/round": s["bytes_per_client_round"],
                        "total MB": f"{s['total_megabytes']:.1f}",
                        "median s/round": f"{s['median_round_seconds']:.2f}",
                        "train min/run": f"{s['train_minutes']:.1f}",
                        "lr grid (acc)": ", ".join(
                            f"{k}: {v:.3f}" for k, v in s.get("lr_grid", {}).items() if v
                        ),
                    }
                    for s in a
                ]
            )
        )
        for key, what in (("mb", "megabytes"), ("seconds", "client compute (round time)")):
            budget_rows = _equal_budget_rows(a, key)
            if budget_rows:
                rows, budget = budget_rows
                lines.append(
                    f"\nBest test accuracy within a fraction of FedPT (dense)'s total {what} "
                    f"({budget}):\n"
                )
                lines.append(reporting.table(rows))
        plots.append(
            lambda: _plot(
                a,
                os.path.join(FLAGS.docs_dir, "accuracy_vs_megabytes.png"),
                "mb",
                "Fashion-MNIST: test accuracy vs communication",
            )
        )
        plots.append(
            lambda: _plot(
                a,
                os.path.join(FLAGS.docs_dir, "accuracy_vs_seconds.png"),
                "seconds",
                "Fashion-MNIST: test accuracy vs round time",
            )
        )
    b = []
    for width in map(int, FLAGS.widths):
        for lr in _rates("fedpt"):
            summary = _summary(
                f"FedPT dense{width} frozen, lr {lr:g}", [f"b_fedpt_dense{width}_{_lr_name(lr)}"]
            )
            if summary:
                b.append(summary)
    if b:
        out["sections"]["b"] = b
        lines.append("\n## b. Overparameterization: wider frozen dense layers\n")
        lines.append(
            reporting.table(
                [
                    {
                        "run": s["run"],
                        "test acc": _fmt_acc(s),
                        "bytes/client/round": s["bytes_per_client_round"],
                        "median s/round": f"{s['median_round_seconds']:.2f}",
                        "train min": f"{s['train_minutes']:.1f}",
                    }
                    for s in b
                ]
            )
        )
    c = []
    dp_runs = [("fedpt", 128), *(("fedpt", int(w)) for w in FLAGS.dp_widths), ("fedavg", 128)]
    for algorithm, width in dp_runs:
        label = DP_LABELS[algorithm]
        if width != 128:
            label = label.replace("dense", f"dense-{width}")
        for epsilon in map(float, FLAGS.epsilons):
            for clip in map(float, FLAGS.clips):
                name = _dp_name(algorithm, epsilon, clip, width)
                c.append(_dp_row(name, label, FLAGS.dp_rounds, epsilon, clip))
    for algorithm in ("fedpt", "fedavg"):
        label = f"{DP_LABELS[algorithm]}, {FLAGS.dp_long_rounds} rounds"
        epsilon, clip = min(map(float, FLAGS.epsilons)), _best_clip(algorithm)
        c.append(_dp_row(_dp_long_name(algorithm), label, FLAGS.dp_long_rounds, epsilon, clip))
    for algorithm in ("fedpt", "fedavg"):
        label = DP_LABELS[algorithm].replace("DP-", "") + ", no DP (control)"
        c.append(_dp_row(_nodp_name(algorithm), label, FLAGS.dp_rounds))
    c = [row for row in c if row]
    if c:
        out["sections"]["c"] = c
        lines.append("\n## c. DP at a realistic population\n")
        lines.append(reporting.table(c))
    long_rows, curves, groups = [], [], {}
    for label, source, _, seed in _long_sources():
        rows = _rows(f"l_{source}")
        evals = {int(r["round"]): float(r["eval/accuracy"]) for r in rows if r["eval/accuracy"]}
        if not evals:
            continue
        last = max(evals)
        marks = sorted({100, 200, FLAGS.long_rounds, last})
        long_rows.append(
            {
                "run": label if seed is None else f"{label} (seed {seed})",
                "rounds": last,
                **{f"acc @{r}": f"{_smoothed(evals, r):.4f}" for r in marks if r in evals},
                "gain over the last 100 rounds": (
                    f"{_smoothed(evals, last) - _smoothed(evals, last - 100):+.4f}"
                    if last - 100 in evals
                    else ""
                ),
                "train min (all rounds)": f"{_train_minutes(rows):.1f}",
                "complete": last >= FLAGS.long_rounds,
            }
        )
        curves.append((long_rows[-1]["run"], sorted(evals.items())))
        groups.setdefault(label, []).append(evals)
    for label, runs in groups.items():
        complete = [e for e in runs if max(e) >= FLAGS.long_rounds]
        if len(complete) > 1:
            long_rows.append(
                {
                    "run": f"{label} (mean of {len(complete)} seeds)",
                    "rounds": FLAGS.long_rounds,
                    **{
                        f"acc @{r}": f"{np.mean([_smoothed(e, r) for e in complete]):.4f}"
                        for r in (100, 200, FLAGS.long_rounds)
                    },
                    "gain over the last 100 rounds": "{:+.4f}".format(
                        np.mean(
                            [
                                _smoothed(e, FLAGS.long_rounds)
                                - _smoothed(e, FLAGS.long_rounds - 100)
                                for e in complete
                            ]
                        )
                    ),
                    "complete": True,
                }
            )
    if long_rows:
        out["sections"]["long"] = {"rows": long_rows, "curves": curves}
        lines.append(
            f"\n## Longer runs: the headline runs continued to {FLAGS.long_rounds} rounds\n"
        )
        lines.append(
            "Accuracy at round r: the mean of the evaluations at rounds r-20, r-10 and r "
            "(single evaluations move by a point or two from one to the next).\n"
        )
        lines.append(reporting.table(long_rows))
        plots.append(
            lambda: _plot_rounds(
                curves, os.path.join(FLAGS.docs_dir, "accuracy_vs_rounds_long.png")
            )
        )
    presets = [
        {
            "preset": p,
            "frozen layers": ", ".join(_frozen_layers(p)),
            "trainable": f"{100 * _trainable_fraction(p):.2f}%",
            "run": (
                f"same layers as {_untuned_duplicates()[p]}, not run again"
                if p in _untuned_duplicates()
                else "yes"
                if _preset_ran(p)
                else f"no run found in {FLAGS.output_dir}"
            ),
        }
        for p in [*FLAGS.presets, *FLAGS.untuned_presets]
    ]
    out["sections"]["presets"] = presets
    lines.append("\n## What each preset freezes (TFF's EMNIST CNN, 10 outputs, dense 128)\n")
    lines.append(reporting.table(presets))
    _refuse_fewer_runs(out)
    for plot in plots:
        plot()
    with open(os.path.join(FLAGS.docs_dir, "results.json"), "w") as f:
        json.dump(out, f, indent=1)
    with open(os.path.join(FLAGS.docs_dir, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def _preset_ran(preset):
    """Whether section a has a run of FedPT with `preset` frozen (at any rate tried)."""
    return any(_rows(f"a_fedpt_{preset}_{_lr_name(lr)}_s0") for lr in _rates("fedpt"))


def _result_rows(report):
    """{section: number of run rows} of a report (results.json's "sections")."""
    counts = {}
    for key, value in report.get("sections", {}).items():
        if key == "presets":
            continue  # describes the model, not runs
        rows = value.get("rows", []) if isinstance(value, dict) else value
        counts[key] = len(rows)
    return counts


def _refuse_fewer_runs(report):
    """Stops the report before it replaces results that hold more runs than it found
    (run from another --output_dir, or before the runs were copied back)."""
    path = os.path.join(FLAGS.docs_dir, "results.json")
    try:
        reporting.refuse_fewer_runs(
            path, _result_rows(report), _result_rows, runs_dir=FLAGS.output_dir
        )
    except reporting.FewerRunsError as e:
        raise entry.ScriptError(f"{e} (--output_dir, --docs_dir)") from None


def main():
    if not FLAGS.sections:
        raise entry.ScriptError(f"--sections is empty; name at least one of {list(SECTIONS)}.")
    unknown = set(FLAGS.sections) - set(SECTIONS)
    if unknown:
        raise entry.ScriptError(f"--sections: unknown {sorted(unknown)}; valid: {list(SECTIONS)}")
    steps = {
        "a": section_a,
        "b": section_b,
        "c": section_c,
        "c_control": section_c_control,
        "c_long": section_c_long,
        "long": section_long,
        "report": report,
    }
    for section in SECTIONS:
        if section in FLAGS.sections:
            print(f"\n# section {section}", flush=True)
            steps[section]()
            sys.stdout.flush()


if __name__ == "__main__":
    entry.run(main)
