"""The paper's claims measured on Fashion-MNIST (real 28x28 images), side by side: the grid
behind the README's headline and docs/fashion_mnist.md.

Sections (each resumable):

  a  communication against accuracy: FedAvg, FedPT with each preset and trainable
     fraction, the small model of FedPT's cost, PVT; client learning rate tuned per
     algorithm on `learning_rates`; extra seeds for FedAvg and FedPT dense-128
  b  overparameterization: FedPT with the dense layer frozen at `widths`
  c  DP at a realistic population: `dp_clients` clients, Poisson sampling, noise for
     each of `epsilons` at delta 1/population, DP-FedPT (dense-128 and `dp_widths`)
     against DP-FedAvg; clip tuned per algorithm on `clips`
  c_control  c's population, sampling and rates without DP (what the setting itself costs)
  c_long  DP-FedPT and DP-FedAvg at the smallest epsilon over `dp_long_rounds` rounds
  long  the headline runs (FedAvg and FedPT dense-128 at their best rate, every seed, and
     FedPT at the widest of `widths`) continued from their last round to `long_rounds`
     (each continues a copy of the finished run: the same trajectory)

`report(params, store)` writes the tables and plots from whatever runs exist.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Optional

import numpy as np

from experiments import grid
from experiments.grid import Run, Section, Store
from tff_fedpt import reporting
from tff_fedpt.options import option


@dataclasses.dataclass(frozen=True)
class Params:
    """The experiment's parameters (scripts/fashion_experiments.py: one flag each)."""

    output_dir: str = option("output/fashion", "Checkpoints, metrics and reports.")
    docs_dir: str = option("docs/fashion_mnist", "Where the report's tables and plots go.")
    data_dir: Optional[str] = option(None, "Fashion-MNIST IDX files (default: Debian's, Keras').")
    num_clients: int = option(1000, "Clients of sections a and b.")
    dirichlet_alpha: float = option(0.5, "Label skew of the split.")
    rounds: int = option(100, "Rounds of every run in sections a and b.")
    clients_per_round: int = option(10, "Clients per round in sections a and b.")
    learning_rates: tuple[float, ...] = option((0.05, 0.2, 0.5), "Client SGD learning rate grid.")
    fedpt_extra_rates: tuple[float, ...] = option(
        (1.0,), "FedPT's grid adds these (its best rate was at the top of the common grid)."
    )
    presets: tuple[str, ...] = option(("dense", "all_but_output", "convs"), "FedPT presets tuned.")
    untuned_presets: tuple[str, ...] = option(
        ("trainable_0.1", "trainable_0.5", "trainable_0.02"),
        "FedPT presets run at dense's best learning rate only (skipped, and reported as such, "
        "when they freeze the same layers as a preset already run).",
    )
    baselines: bool = option(True, "Section a: also tune the small model and PVT.")
    seeds: tuple[int, ...] = option(
        (0, 1, 2), "Seeds for FedAvg and FedPT dense at their best rate."
    )
    early_rounds: int = option(4, "Rounds of the every-round-evaluated FedAvg/PVT runs.")
    widths: tuple[int, ...] = option((512, 2048), "Frozen dense widths of section b (128 is in a).")
    dp_clients: int = option(3000, "Population of section c.")
    dp_clients_per_round: int = option(100, "Expected clients per round (Poisson), c.")
    dp_rounds: int = option(30, "Rounds of section c.")
    epsilons: tuple[float, ...] = option((2.0, 5.0, 10.0), "Target epsilons of section c.")
    clips: tuple[float, ...] = option(
        (0.1, 0.5, 1.0, 2.0), "Clip grid of section c (tuned at the middle epsilon)."
    )
    dp_widths: tuple[int, ...] = option(
        (2048,),
        "Section c: DP-FedPT also with the dense layer frozen at these widths (at the clip "
        "tuned for dense-128 and the width's best rate from section b).",
    )
    long_rounds: int = option(300, "Rounds the long section continues runs to.")
    dp_long_rounds: int = option(100, "Rounds of the c_long section's DP runs.")


COMMON = dict(
    task="fashion_mnist",
    client_epochs_per_round=1,
    client_batch_size=20,
    server_learning_rate=1.0,
    rounds_per_eval=10,
)
DP_LABELS = {"fedpt": "DP-FedPT (dense frozen)", "fedavg": "DP-FedAvg"}
HEADLINE = (("fedavg", "none", "FedAvg"), ("fedpt", "dense", "FedPT"))


def _values(p: Params, **kwargs) -> dict:
    values = {**COMMON, "clients_per_round": p.clients_per_round, **kwargs}
    values.setdefault("rounds_per_checkpoint", values["total_rounds"] // 4 or 1)
    return values


def _task(p: Params, num_clients: int, **extra) -> dict:
    return dict(
        name="fashion_mnist",
        data_dir=p.data_dir,
        num_clients=num_clients,
        alpha=p.dirichlet_alpha,
        **extra,
    )


# ---------------------------------------------------------------------------
# Names (built here only; the report never parses them).


def a_name(algorithm: str, freeze: str, lr: float, seed: int = 0) -> str:
    return f"a_{algorithm}_{freeze}_lr{lr:g}_s{seed}"


def b_name(width: int, lr: float) -> str:
    return f"b_fedpt_dense{width}_lr{lr:g}"


def dp_name(algorithm: str, epsilon: Optional[float], clip, width: int = 128) -> str:
    if epsilon is None:
        return f"c_{algorithm}_nodp"
    dense = "" if width == 128 else f"_dense{width}"
    return f"c_{algorithm}{dense}_eps{epsilon:g}_clip{clip:g}"


# ---------------------------------------------------------------------------
# What the stored runs decided so far.


def rates(p: Params, algorithm: str) -> list[float]:
    return [*p.learning_rates, *(p.fedpt_extra_rates if algorithm == "fedpt" else ())]


def best_lr(p: Params, store: Store, algorithm: str, freeze: str) -> float:
    candidates = {lr: a_name(algorithm, freeze, lr) for lr in rates(p, algorithm)}
    return store.best(candidates, p.learning_rates[0])


def best_width_lr(p: Params, store: Store, width: int) -> float:
    """Section b's best rate at `width` (dense-128's when b has no run at it)."""
    candidates = {lr: b_name(width, lr) for lr in rates(p, "fedpt")}
    return store.best(candidates, best_lr(p, store, "fedpt", "dense"))


def middle_epsilon(p: Params) -> float:
    return p.epsilons[len(p.epsilons) // 2]


def best_clip(p: Params, store: Store, algorithm: str) -> float:
    candidates = {clip: dp_name(algorithm, middle_epsilon(p), clip) for clip in p.clips}
    return store.best(candidates, p.clips[0])


@functools.cache
def _freeze_report(preset: str):
    from tff_fedpt import frozen
    from tff_fedpt.tasks import fashion_mnist

    return frozen.resolve_freeze(fashion_mnist.cnn(), fashion_mnist.PRESETS["cnn"][preset])


def untuned_duplicates(p: Params) -> dict[str, str]:
    """{untuned preset: the earlier preset freezing exactly the same layers}."""
    seen, duplicates = {}, {}
    for preset in [*p.presets, *p.untuned_presets]:
        layers = _freeze_report(preset).frozen_layer_names
        if layers in seen and preset in p.untuned_presets:
            duplicates[preset] = seen[layers]
        seen.setdefault(layers, preset)
    return duplicates


# ---------------------------------------------------------------------------
# The grid. Most important first in section a: FedAvg and FedPT dense tuned, FedAvg's
# early rounds, the extra seeds, the small model, the other presets, then PVT (a run that
# stops early loses the least).


def _a_run(p, algorithm, freeze, lr, seed=0, **extra) -> Run:
    values = _values(
        p,
        total_rounds=p.rounds,
        algorithm=algorithm,
        freeze=freeze,
        client_learning_rate=lr,
        **({"seed": seed, "frozen_seed": seed} if seed else {}),
        **extra,
    )
    settings = dict(algorithm=algorithm, freeze=freeze, lr=lr, seed=seed)
    return Run(a_name(algorithm, freeze, lr, seed), values, _task(p, p.num_clients), settings)


def _a_grid(p, algorithm, freeze) -> list[Run]:
    return [_a_run(p, algorithm, freeze, lr) for lr in rates(p, algorithm)]


def _a_early(p, store, algorithm, freeze) -> Run:
    """Evaluated every round (the equal-megabyte comparison's first points)."""
    lr = best_lr(p, store, algorithm, freeze)
    values = _values(
        p,
        total_rounds=p.early_rounds,
        rounds_per_eval=1,
        algorithm=algorithm,
        freeze=freeze,
        client_learning_rate=lr,
    )
    return Run(f"a_{algorithm}_{freeze}_early", values, _task(p, p.num_clients))


def _a_seeds(p, store, algorithm, freeze) -> list[Run]:
    lr = best_lr(p, store, algorithm, freeze)
    return [_a_run(p, algorithm, freeze, lr, seed) for seed in p.seeds[1:]]


def _a_tuned(p, store):
    return _a_grid(p, "fedavg", "none") + _a_grid(p, "fedpt", "dense")


def _a_rest(p, store):
    runs = [_a_early(p, store, "fedavg", "none")]
    runs += _a_seeds(p, store, "fedavg", "none") + _a_seeds(p, store, "fedpt", "dense")
    if p.baselines:
        runs += _a_grid(p, "small_model", "dense")
    for preset in p.presets:
        if preset != "dense":
            runs += _a_grid(p, "fedpt", preset)
    best = best_lr(p, store, "fedpt", "dense")
    duplicates = untuned_duplicates(p)
    runs += [
        _a_run(p, "fedpt", preset, best) for preset in p.untuned_presets if preset not in duplicates
    ]
    if p.baselines:
        runs += _a_grid(p, "pvt", "none")
    return runs


def _a_pvt_early(p, store):
    return [_a_early(p, store, "pvt", "none")] if p.baselines else []


def _b(p, store):
    """The two best rates of dense-128 at each wider frozen dense layer."""
    finals = {lr: store.final(a_name("fedpt", "dense", lr)) or 0 for lr in rates(p, "fedpt")}
    best_two = sorted(finals, key=lambda lr: -finals[lr])[:2]
    return [
        Run(
            b_name(width, lr),
            _values(
                p,
                total_rounds=p.rounds,
                algorithm="fedpt",
                freeze="dense",
                client_learning_rate=lr,
            ),
            _task(p, p.num_clients, dense_units=width),
            dict(width=width, lr=lr),
        )
        for width in p.widths
        for lr in best_two
    ]


def _dp_run(p, store, algorithm, freeze, epsilon, clip, width=128, **changes) -> Run:
    if width == 128:
        lr = best_lr(p, store, algorithm, freeze)
    else:
        lr = best_width_lr(p, store, width)
    values = _values(
        p,
        total_rounds=p.dp_rounds,
        algorithm=algorithm,
        freeze=freeze,
        client_learning_rate=lr,
        clients_per_round=p.dp_clients_per_round,
        dp=True,
        target_epsilon=epsilon,
        clip=1.0 if clip is None else clip,
        sampling="poisson",
        client_weighting="uniform",
    )
    values.update(changes)
    extra = {} if width == 128 else {"dense_units": width}
    settings = dict(algorithm=algorithm, epsilon=epsilon, clip=clip, width=width)
    return Run(
        dp_name(algorithm, epsilon, clip, width), values, _task(p, p.dp_clients, **extra), settings
    )


def _c_clip_grid(p, store):
    """The clip grid at the middle epsilon."""
    return [
        _dp_run(p, store, algorithm, freeze, middle_epsilon(p), clip)
        for algorithm, freeze in (("fedpt", "dense"), ("fedavg", "none"))
        for clip in p.clips
    ]


def _c_epsilons(p, store):
    runs = []
    for algorithm, freeze in (("fedpt", "dense"), ("fedavg", "none")):
        clip = best_clip(p, store, algorithm)
        runs += [_dp_run(p, store, algorithm, freeze, e, clip) for e in p.epsilons]
    clip = best_clip(p, store, "fedpt")
    runs += [
        _dp_run(p, store, "fedpt", "dense", e, clip, width)
        for width in p.dp_widths
        for e in p.epsilons
    ]
    return runs


def dp_long_name(p: Params, store: Store, algorithm: str) -> str:
    epsilon = min(p.epsilons)
    return dp_name(algorithm, epsilon, best_clip(p, store, algorithm)) + f"_r{p.dp_long_rounds}"


def _c_long(p, store):
    """DP-FedPT (dense-128) and DP-FedAvg at their tuned clips and the smallest epsilon
    over `dp_long_rounds` rounds: the same privacy spread over more rounds (a larger noise
    multiplier), towards the noise-bound regime the paper's DP claim is about."""
    runs = []
    for algorithm, freeze in (("fedpt", "dense"), ("fedavg", "none")):
        run = _dp_run(p, store, algorithm, freeze, min(p.epsilons), best_clip(p, store, algorithm))
        values = {**run.values, "total_rounds": p.dp_long_rounds}
        runs.append(dataclasses.replace(run, name=dp_long_name(p, store, algorithm), values=values))
    return runs


def _c_control(p, store):
    """The control of c: the same population, sampling, weighting and rates without DP
    (no clip, no noise), so what DP costs each algorithm can be told from what the setting
    (`dp_rounds` rounds of one local step) costs it."""
    return [
        _dp_run(p, store, algorithm, freeze, None, None, dp=False, target_epsilon=None)
        for algorithm, freeze in (("fedpt", "dense"), ("fedavg", "none"))
    ]


def _long(p, store):
    """The headline runs continued (forks of the finished runs, to `long_rounds`)."""
    runs = []
    for algorithm, freeze, label in HEADLINE:
        lr = best_lr(p, store, algorithm, freeze)
        for seed in p.seeds:
            source = _a_run(p, algorithm, freeze, lr, seed)
            runs.append(
                _continued(p, source, dict(label=f"{label} dense-128, lr {lr:g}", seed=seed))
            )
    if p.widths:
        width = max(p.widths)
        lr = best_width_lr(p, store, width)
        source = Run(
            b_name(width, lr),
            _values(
                p, total_rounds=p.rounds, algorithm="fedpt", freeze="dense", client_learning_rate=lr
            ),
            _task(p, p.num_clients, dense_units=width),
        )
        runs.append(_continued(p, source, dict(label=f"FedPT dense-{width}, lr {lr:g}", seed=None)))
    return runs


def _continued(p: Params, source: Run, settings: dict) -> Run:
    values = {**source.values, "total_rounds": p.long_rounds}
    values["rounds_per_checkpoint"] = p.long_rounds // 4 or 1
    return Run(f"l_{source.name}", values, source.task, settings, fork_of=source.name)


SECTIONS = (
    Section("a", (_a_tuned, _a_rest, _a_pvt_early)),
    Section("b", (_b,)),
    Section("c", (_c_clip_grid, _c_epsilons)),
    Section("c_control", (_c_control,)),
    Section("c_long", (_c_long,)),
    Section("long", (_long,)),
)


# ---------------------------------------------------------------------------
# The report.


def _curve(rows, x_key):
    """[(x, accuracy)] at evaluation rounds; x cumulative (MB or client seconds)."""
    points, seconds = [], 0.0
    for r in rows:
        seconds += float(r["round_seconds"])
        if r.get("eval/accuracy", "") != "":
            x = float(r["cumulative_megabytes"]) if x_key == "mb" else seconds
            points.append((x, float(r["eval/accuracy"])))
    return points


def _best_accuracy_within(points, budget):
    """The best accuracy reached within `budget` (None when the first eval is beyond it)."""
    within = [acc for x, acc in points if x <= budget]
    return max(within) if within else None


def _summary(store: Store, label, names, total):
    finals = [(store.final(n), store.rows(n)) for n in names if store.rows(n)]
    finals = [(a, r) for a, r in finals if a is not None]
    if not finals:
        return None
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
        "train_minutes": grid.train_minutes(rows),
        "curve_mb": _curve(rows, "mb"),
        "curve_seconds": _curve(rows, "seconds"),
        "runs": names,
    }


def _section_a_summaries(p: Params, store: Store):
    summaries = []
    tuned = [("fedavg", "none", "FedAvg")]
    tuned += [("fedpt", preset, f"FedPT ({preset} frozen)") for preset in p.presets]
    tuned += [("small_model", "dense", "small model (FedAvg)"), ("pvt", "none", "PVT")]
    headline = [(algorithm, freeze) for algorithm, freeze, _ in HEADLINE]
    for algorithm, freeze, label in tuned:
        lr = best_lr(p, store, algorithm, freeze)
        seeds = p.seeds if (algorithm, freeze) in headline else (0,)
        names = [a_name(algorithm, freeze, lr, seed) for seed in seeds]
        summary = _summary(store, f"{label}, lr {lr:g}", names, p.rounds)
        early = store.rows(f"a_{algorithm}_{freeze}_early")
        if summary and early:  # the same trajectory (same seeds), evaluated every round
            first = summary["curve_mb"][0][0] if summary["curve_mb"] else float("inf")
            points = [point for point in _curve(early, "mb") if point[0] < first]
            summary["curve_mb"] = points + summary["curve_mb"]
        if summary:
            summary["lr_grid"] = {
                f"{x:g}": store.final(a_name(algorithm, freeze, x)) for x in rates(p, algorithm)
            }
            summaries.append(summary)
    best = best_lr(p, store, "fedpt", "dense")
    for preset in p.untuned_presets:
        label = f"FedPT ({preset} frozen), lr {best:g} (dense's)"
        summary = _summary(store, label, [a_name("fedpt", preset, best)], p.rounds)
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
    rows = []
    for s in summaries:
        row = {"run": s["run"]}
        for fraction in (0.1, 0.25, 0.5, 1.0):
            acc = _best_accuracy_within(s[curve], fraction * budget)
            row[f"{fraction:g} x budget"] = f"{acc:.4f}" if acc is not None else "—"
        rows.append(row)
    unit = "MB" if key == "mb" else "s of round time"
    return rows, f"{budget:.1f} {unit}"


def _plot(curves, path, xlabel, title, log_x=False, minor_grid=True):
    """Test accuracy curves [(label, [(x, acc)])] to a PNG."""
    ylabel = "test accuracy (10,000 test images)"
    reporting.plot_curves(
        dict(curves),
        path,
        title,
        xlabel,
        log_x=log_x,
        minor_grid=minor_grid,
        small=True,
        ylabel=ylabel,
    )


def _dp_row(store: Store, name, label, total_rounds, epsilon=None, clip=None):
    """Section c's table row of run `name` (None when it has no evaluation yet)."""
    rows = store.rows(name)
    if not rows or store.final(name) is None:
        return None
    dp = epsilon is not None
    return {
        "run": label,
        "target epsilon": epsilon if dp else "—",
        "clip": clip if dp else "—",
        "client lr": store.hparams(name).get("client_learning_rate", ""),
        "epsilon reached": float(rows[-1]["privacy/epsilon"]) if dp else "—",
        "noise multiplier": float(rows[-1]["privacy/noise_multiplier"]) if dp else "—",
        "rounds": int(rows[-1]["round"]),
        "test acc": store.final(name),
        "train min": round(grid.train_minutes(rows), 1),
        "complete": int(rows[-1]["round"]) >= total_rounds,
    }


def _c_rows(p: Params, store: Store):
    c = []
    dp_runs = [("fedpt", 128), *(("fedpt", width) for width in p.dp_widths), ("fedavg", 128)]
    for algorithm, width in dp_runs:
        label = DP_LABELS[algorithm]
        if width != 128:
            label = label.replace("dense", f"dense-{width}")
        for epsilon in p.epsilons:
            for clip in p.clips:
                name = dp_name(algorithm, epsilon, clip, width)
                c.append(_dp_row(store, name, label, p.dp_rounds, epsilon, clip))
    for run in _c_long(p, store):
        algorithm = run.settings["algorithm"]
        label = f"{DP_LABELS[algorithm]}, {p.dp_long_rounds} rounds"
        epsilon, clip = run.settings["epsilon"], run.settings["clip"]
        c.append(_dp_row(store, run.name, label, p.dp_long_rounds, epsilon, clip))
    for run in _c_control(p, store):
        label = DP_LABELS[run.settings["algorithm"]].replace("DP-", "") + ", no DP (control)"
        c.append(_dp_row(store, run.name, label, p.dp_rounds))
    return [row for row in c if row]


def _smoothed(evals, round_num):
    """Mean test accuracy of the evaluations at round_num - 20, - 10 and round_num."""
    window = [evals[r] for r in range(round_num - 20, round_num + 1) if r in evals]
    return float(np.mean(window))


def _long_rows(p: Params, store: Store):
    long_rows, curves, groups = [], [], {}
    for run in _long(p, store):
        label, seed = run.settings["label"], run.settings["seed"]
        rows = store.rows(run.name)
        evals = {int(r["round"]): float(r["eval/accuracy"]) for r in rows if r["eval/accuracy"]}
        if not evals:
            continue
        last = max(evals)
        marks = sorted({100, 200, p.long_rounds, last})
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
                "train min (all rounds)": f"{grid.train_minutes(rows):.1f}",
                "complete": last >= p.long_rounds,
            }
        )
        curves.append((long_rows[-1]["run"], sorted(evals.items())))
        groups.setdefault(label, []).append(evals)
    for label, runs in groups.items():
        complete = [e for e in runs if max(e) >= p.long_rounds]
        if len(complete) > 1:
            gains = [
                _smoothed(e, p.long_rounds) - _smoothed(e, p.long_rounds - 100) for e in complete
            ]
            long_rows.append(
                {
                    "run": f"{label} (mean of {len(complete)} seeds)",
                    "rounds": p.long_rounds,
                    **{
                        f"acc @{r}": f"{np.mean([_smoothed(e, r) for e in complete]):.4f}"
                        for r in (100, 200, p.long_rounds)
                    },
                    "gain over the last 100 rounds": f"{np.mean(gains):+.4f}",
                    "complete": True,
                }
            )
    return long_rows, curves


def _preset_rows(p: Params, store: Store):
    duplicates = untuned_duplicates(p)

    def ran(preset):
        return any(store.rows(a_name("fedpt", preset, lr)) for lr in rates(p, "fedpt"))

    return [
        {
            "preset": preset,
            "frozen layers": ", ".join(_freeze_report(preset).frozen_layer_names),
            "trainable": f"{100 * _freeze_report(preset).trainable_fraction:.2f}%",
            "run": (
                f"same layers as {duplicates[preset]}, not run again"
                if preset in duplicates
                else "yes"
                if ran(preset)
                else f"no run found in {p.output_dir}"
            ),
        }
        for preset in [*p.presets, *p.untuned_presets]
    ]


def _add(out, lines, key, title, table, stored=None):
    """A report section: its Markdown table under `title`; `stored` (default the table)
    under `key` in the JSON."""
    out["sections"][key] = table if stored is None else stored
    lines.append(title)
    lines.append(reporting.table(table))


def report(p: Params, store: Store) -> grid.Report:
    """Tables (Markdown and JSON) and plots from whatever runs exist."""
    out = {"machine": f"{os.cpu_count()} CPU cores, {os.uname().machine}", "sections": {}}
    lines, plots = [], []
    docs = functools.partial(os.path.join, p.docs_dir)
    a = _section_a_summaries(p, store)
    if a:
        table = [
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
        _add(out, lines, "a", "## a. Communication against accuracy\n", table, a)
        for key, what in (("mb", "megabytes"), ("seconds", "client compute (round time)")):
            budget_rows = _equal_budget_rows(a, key)
            if budget_rows:
                rows, budget = budget_rows
                lines.append(
                    f"\nBest test accuracy within a fraction of FedPT (dense)'s total {what} "
                    f"({budget}):\n"
                )
                lines.append(reporting.table(rows))
        mb = [(s["run"], s["curve_mb"]) for s in a]
        seconds = [(s["run"], s["curve_seconds"]) for s in a]
        plots.append(
            lambda: _plot(
                mb,
                docs("accuracy_vs_megabytes.png"),
                "cumulative megabytes (down + up, all clients)",
                "Fashion-MNIST: test accuracy vs communication",
                log_x=True,
            )
        )
        plots.append(
            lambda: _plot(
                seconds,
                docs("accuracy_vs_seconds.png"),
                "cumulative round time (s)",
                "Fashion-MNIST: test accuracy vs round time",
            )
        )
    b = []
    for width in p.widths:
        for lr in rates(p, "fedpt"):
            label = f"FedPT dense{width} frozen, lr {lr:g}"
            summary = _summary(store, label, [b_name(width, lr)], p.rounds)
            if summary:
                b.append(summary)
    if b:
        table = [
            {
                "run": s["run"],
                "test acc": _fmt_acc(s),
                "bytes/client/round": s["bytes_per_client_round"],
                "median s/round": f"{s['median_round_seconds']:.2f}",
                "train min": f"{s['train_minutes']:.1f}",
            }
            for s in b
        ]
        title = "\n## b. Overparameterization: wider frozen dense layers\n"
        _add(out, lines, "b", title, table, b)
    c = _c_rows(p, store)
    if c:
        _add(out, lines, "c", "\n## c. DP at a realistic population\n", c)
    long_rows, curves = _long_rows(p, store)
    if long_rows:
        out["sections"]["long"] = {"rows": long_rows, "curves": curves}
        lines.append(f"\n## Longer runs: the headline runs continued to {p.long_rounds} rounds\n")
        lines.append(
            "Accuracy at round r: the mean of the evaluations at rounds r-20, r-10 and r "
            "(single evaluations move by a point or two from one to the next).\n"
        )
        lines.append(reporting.table(long_rows))
        plots.append(
            lambda: _plot(
                curves,
                docs("accuracy_vs_rounds_long.png"),
                "round",
                "Fashion-MNIST: the headline runs continued",
                minor_grid=False,
            )
        )
    title = "\n## What each preset freezes (TFF's EMNIST CNN, 10 outputs, dense 128)\n"
    _add(out, lines, "presets", title, _preset_rows(p, store))
    return grid.Report(lines, out, plots, not_runs=("presets",))
