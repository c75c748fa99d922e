"""Pretrained FedPT on Fashion-MNIST (docs/fashion_pretrained.md): a model pretrained on a
public split's classes 0-4, then federated training of every setting in `GRID` at equal
rounds and megabytes, with and without DP.

Sections (each resumable):

  runs     every setting at each of its client learning rates, `rounds` rounds
  seeds    the two settings that decide the headline again, with `seeds`
  long     the settings of `LONG_SETTINGS` at their best rate for `long_rounds` rounds
  dp       user-level DP at `dp_clients` clients, Poisson sampling: each setting of
           `DP_SETTINGS` at its best rate, each of `epsilons` and each of `dp_clips`
  dp_long  the noise-bound regime: `DP_LONG_SETTINGS` at `dp_long_epsilon` over
           `dp_long_rounds` rounds

`report(params, store)` writes the tables and the accuracy/megabytes plot.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
from typing import Optional

from experiments import fashion, grid
from experiments.grid import ExperimentError, Run, Section, Store
from tff_fedpt import reporting
from tff_fedpt.options import option


@dataclasses.dataclass(frozen=True)
class Params:
    """The experiment's parameters (scripts/pretrained_experiments.py: one flag each)."""

    output_dir: str = option("output/fashion_pretrained", "Checkpoints and metrics.")
    docs_dir: str = option("docs/fashion_pretrained", "Where the report goes.")
    data_dir: Optional[str] = option(None, "Fashion-MNIST IDX files (default: Debian's, Keras').")
    pretrained: str = option(
        "output/pretrained/fashion_cnn.npz",
        "Pretrained weights (scripts/pretrain.py --public_fraction=0.2 "
        "--public_classes=0,1,2,3,4).",
    )
    public_fraction: float = option(0.2, "The held-out public fraction it was trained on.")
    num_clients: int = option(1000, "Clients of the runs without DP.")
    rounds: int = option(100, "Rounds of each run without DP.")
    only: tuple[str, ...] = option((), "Run only the grid entries with these names (default: all).")
    max_rates: int = option(
        0, "Use only the first N rates of each setting's grid (0: all; for quick checks)."
    )
    seeds: tuple[int, ...] = option(
        (1, 2), "Extra seeds of the seeds section (seed 0 is the grid's)."
    )
    long_rounds: int = option(300, "Rounds of the long section.")
    long_seeds: tuple[int, ...] = option(
        (1, 2), "Extra seeds of the long section (for the settings of the seeds section)."
    )
    long_rates: tuple[float, ...] = option(
        (0.2,), "Rates the long section also runs for the head (besides its best over `rounds`)."
    )
    dp_long_rounds: int = option(300, "Rounds of the dp_long section.")
    dp_long_epsilon: float = option(2.0, "Target epsilon of the dp_long section.")
    dp_long_seeds: tuple[int, ...] = option((), "Extra seeds of the dp_long section.")
    dp_clients: int = option(3000, "Population of the DP runs.")
    dp_clients_per_round: int = option(100, "Expected clients per round (Poisson).")
    dp_rounds: int = option(30, "Rounds of the DP runs.")
    epsilons: tuple[float, ...] = option(
        (1.0, 2.0, 5.0), "Target epsilons of the DP runs (delta 1/population)."
    )
    dp_clips: tuple[float, ...] = option(
        (0.3, 1.0, 3.0, 10.0),
        "L2 clips of the dp section (the grid per setting; 1 was the first pass, 10 brackets "
        "epsilon 5).",
    )

    def check(self) -> None:
        unknown = set(self.only) - {s.name for s in GRID}
        if unknown:
            raise ExperimentError(
                f"only: unknown {sorted(unknown)}; valid: {[s.name for s in GRID]}."
            )
        for field in ("seeds", "long_seeds", "dp_long_seeds"):
            if 0 in getattr(self, field):
                raise ExperimentError(
                    f"{field}: seed 0 is the grid's own run; name the extra seeds."
                )
        if not self.dp_clips or min(self.dp_clips) <= 0:
            raise ExperimentError(f"dp_clips: expected positive clips, got {list(self.dp_clips)}.")


COMMON = {**fashion.COMMON, "clients_per_round": 10}  # docs/fashion_mnist.md's setup


@dataclasses.dataclass(frozen=True)
class Setting:
    """One algorithm setting of the grid, run at each of `rates`."""

    name: str
    label: str
    rates: tuple[float, ...]
    options: tuple[tuple[str, object], ...] = ()
    pretrained: bool = True


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
        (0.05, 0.2, 0.5),
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
        (0.1, 0.2, 0.5),
        _adapters(4, "lora"),
    ),
    Setting(
        "fedpt_lora16",
        "FedPT head + LoRA r16 on dense (A, B trained)",
        (0.1, 0.2, 0.5),
        _adapters(16, "lora"),
    ),
    Setting(
        "fedpt_ffa16",
        "FedPT head + FFA-LoRA r16 on dense (A seeded, B trained)",
        (0.2, 0.5, 1.0, 2.0, 4.0),
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
# FFA-LoRA, the only adapter at 50x or more less traffic, runs long to see whether more
# rounds close its gap; the head, which oscillates at its best rate, also at `long_rates`.
LONG_SETTINGS = ("fedavg_finetune", "fedpt_lora4", "fedpt_head", "fedpt_ffa16")
LONG_RATE_SETTINGS = ("fedpt_head",)
# Noise-bound DP: the best pretrained pair, and random-frozen FedPT against FedAvg from
# scratch (the open question of docs/fashion_mnist.md).
DP_LONG_SETTINGS = ("fedavg_finetune", "fedpt_head", "fedavg_scratch", "fedpt_random")
DP_OPTIONS = dict(dp=True, sampling="poisson", client_weighting="uniform", clip=1.0)


# ---------------------------------------------------------------------------
# Names (built here only; the report never parses them).


def name(setting: Setting, rate: float, prefix: str = "", suffix: str = "") -> str:
    return f"{prefix}{setting.name}_lr{rate:g}{suffix}"


def dp_name(setting: Setting, rate: float, epsilon: float, clip: float) -> str:
    # The first pass (clip 1.0) keeps its name; the clip grid's other runs say their clip.
    suffix = "" if clip == DP_OPTIONS["clip"] else f"_clip{clip:g}"
    return name(setting, rate, f"dp_eps{epsilon:g}_", suffix)


def seed_suffix(seed: int) -> str:
    return f"_seed{seed}" if seed else ""


def long_name(p: Params, setting: Setting, rate: float, seed: int = 0) -> str:
    return name(setting, rate, suffix=f"_r{p.long_rounds}{seed_suffix(seed)}")


def dp_long_name(p: Params, setting: Setting, rate: float, seed: int = 0) -> str:
    prefix, suffix = f"dp_eps{p.dp_long_epsilon:g}_", f"_r{p.dp_long_rounds}{seed_suffix(seed)}"
    return name(setting, rate, prefix, suffix)


# ---------------------------------------------------------------------------
# The grid.


def rates(p: Params, setting: Setting) -> tuple[float, ...]:
    return grid.capped(setting.rates, p.max_rates)


def selected(p: Params, among=None) -> list[Setting]:
    """The grid entries named by `only` (default all), restricted to `among`."""
    return grid.select(GRID, p.only, among)


def best_rate(p: Params, store: Store, setting: Setting) -> float:
    candidates = {rate: name(setting, rate) for rate in rates(p, setting)}
    return store.best(candidates, setting.rates[0])


def _run(p: Params, setting: Setting, rate: float, run_name: str, num_clients: int, **extra):
    values = {**COMMON, **dict(setting.options), "client_learning_rate": rate, **extra}
    if setting.pretrained:
        values["pretrained_weights"] = p.pretrained
    values["rounds_per_checkpoint"] = max(1, min(25, values["total_rounds"] // 4))
    task = dict(
        name="fashion_mnist",
        data_dir=p.data_dir,
        num_clients=num_clients,
        alpha=0.5,
        public_fraction=p.public_fraction,
    )
    settings = dict(setting=setting.name, label=setting.label, rate=rate, **extra)
    return Run(run_name, values, task, settings)


def _runs(p, store):
    return [
        _run(p, s, rate, name(s, rate), p.num_clients, total_rounds=p.rounds)
        for s in selected(p)
        for rate in rates(p, s)
    ]


def _seeds(p, store):
    runs = []
    for s in selected(p, SEED_SETTINGS):
        rate = best_rate(p, store, s)
        for seed in p.seeds:
            run_name = name(s, rate, suffix=f"_seed{seed}")
            runs.append(_run(p, s, rate, run_name, p.num_clients, total_rounds=p.rounds, seed=seed))
    return runs


def _long(p, store):
    """Each long setting at its best rate (the head also at `long_rates`), seed 0; the seeds
    section's settings at their best rate with `long_seeds` too."""
    runs = []
    for s in selected(p, LONG_SETTINGS):
        best = best_rate(p, store, s)
        also = p.long_rates if s.name in LONG_RATE_SETTINGS else ()
        for rate in dict.fromkeys((best, *also)):
            seeds = (0, *p.long_seeds) if rate == best and s.name in SEED_SETTINGS else (0,)
            for seed in seeds:
                extra = {"seed": seed} if seed else {}
                run_name = long_name(p, s, rate, seed)
                runs.append(
                    _run(p, s, rate, run_name, p.num_clients, total_rounds=p.long_rounds, **extra)
                )
    return runs


def _dp_run(p, setting, rate, run_name, epsilon, rounds, clip=DP_OPTIONS["clip"], **extra):
    return _run(
        p,
        setting,
        rate,
        run_name,
        p.dp_clients,
        total_rounds=rounds,
        clients_per_round=p.dp_clients_per_round,
        target_epsilon=epsilon,
        **{**DP_OPTIONS, "clip": clip},
        **extra,
    )


def _dp(p, store):
    runs = []
    for epsilon in p.epsilons:
        for s in selected(p, DP_SETTINGS):
            rate = best_rate(p, store, s)
            for clip in p.dp_clips:
                run_name = dp_name(s, rate, epsilon, clip)
                runs.append(_dp_run(p, s, rate, run_name, epsilon, p.dp_rounds, clip))
    return runs


def _dp_long(p, store):
    runs = []
    for seed in (0, *p.dp_long_seeds):
        for s in selected(p, DP_LONG_SETTINGS):
            rate = best_rate(p, store, s)
            run_name = dp_long_name(p, s, rate, seed)
            extra = {"seed": seed} if seed else {}
            runs.append(_dp_run(p, s, rate, run_name, p.dp_long_epsilon, p.dp_long_rounds, **extra))
    return runs


SECTIONS = (
    Section("runs", (_runs,)),
    Section("seeds", (_seeds,)),
    Section("long", (_long,)),
    Section("dp", (_dp,)),
    Section("dp_long", (_dp_long,)),
)


# ---------------------------------------------------------------------------
# The report.


def _minutes(rows):
    return round(grid.train_minutes(rows), 1)


def _accuracy_at_round(rows, round_num):
    accuracy = grid.accuracy_at_round(rows, round_num)
    return "—" if accuracy is None else round(accuracy, 4)


def _summaries(p: Params, store: Store):
    out = []
    for setting in selected(p):
        rate = best_rate(p, store, setting)
        rows = store.rows(name(setting, rate))
        if not rows or grid.final_accuracy(rows) is None:
            continue
        summary = reporting.summarize(f"{setting.label}, lr {rate:g}", rows)
        summary.update(
            name=setting.name,
            complete=summary["rounds"] >= p.rounds,
            train_minutes=_minutes(rows),
            lr_grid={f"{r:g}": store.final(name(setting, r)) for r in rates(p, setting)},
        )
        out.append((summary, rows))
    return out


def _seeded(label: str, run: Run) -> str:
    seed = run.settings.get("seed", 0)
    return f"{label}, seed {seed}" if seed else label


def _dp_row(run: Run, rows):
    return {
        "run": _seeded(f"DP: {run.settings['label']}", run),
        "target epsilon": run.settings["target_epsilon"],
        "clip": run.settings["clip"],
        "epsilon reached": round(float(rows[-1]["privacy/epsilon"]), 3),
        "noise multiplier": round(float(rows[-1]["privacy/noise_multiplier"]), 3),
        "client lr": run.settings["rate"],
        "rounds": int(rows[-1]["round"]),
        "test acc": grid.final_accuracy(rows),
        "bytes/client/round": int(rows[-1]["broadcast_bytes_per_client"])
        + int(rows[-1]["upload_bytes_per_client"]),
        "train min": _minutes(rows),
    }


def _dp_rows(p: Params, store: Store):
    # Every rate of the grid, not only the best (a rate changed between passes shows).
    runs = [
        _dp_run(p, s, rate, dp_name(s, rate, epsilon, clip), epsilon, p.dp_rounds, clip)
        for s in selected(p, DP_SETTINGS)
        for epsilon in p.epsilons
        for rate in rates(p, s)
        for clip in p.dp_clips
    ]
    return [_dp_row(run, rows) for run, rows in grid.finished(runs, store)]


def _seed_rows(p: Params, store: Store):
    out = []
    for setting in selected(p, SEED_SETTINGS):
        rate = best_rate(p, store, setting)
        names = [name(setting, rate)] + [
            name(setting, rate, suffix=f"_seed{seed}") for seed in p.seeds
        ]
        finals = [a for a in (store.final(n) for n in names) if a is not None]
        if len(finals) > 1:
            out.append(_seed_stats(f"{setting.label}, lr {rate:g}", finals))
    return out


def _seed_stats(label, finals) -> dict:
    return {
        "run": label,
        "seeds": len(finals),
        "mean test acc": round(statistics.mean(finals), 4),
        "std": round(statistics.stdev(finals), 4),
        "min": round(min(finals), 4),
        "max": round(max(finals), 4),
    }


def _long_rows(p: Params, store: Store):
    out = []
    for run, rows in grid.finished(_long(p, store), store):
        label = _seeded(f"{run.settings['label']}, lr {run.settings['rate']:g}", run)
        summary = reporting.summarize(label, rows)
        out.append(
            {
                "run": summary["run"],
                "rounds": summary["rounds"],
                "test acc": round(summary["test_accuracy"], 4),
                f"acc at round {p.rounds}": _accuracy_at_round(rows, p.rounds),
                "total MB": round(summary["total_megabytes"], 1),
                "train min": _minutes(rows),
            }
        )
    return out


def _last_evals(rows, count=5):
    return statistics.mean(grid.evaluations(rows)[-count:])


def _over_seeds(finished, prefix=""):
    """Final and last-five-evaluation accuracy over the seeds of each (setting, rate) of
    `finished` [(run, rows)] that has more than one complete seed."""
    groups = {}
    for run, rows in finished:
        if int(rows[-1]["round"]) >= run.values["total_rounds"]:
            key = (run.settings["label"], run.settings["rate"])
            groups.setdefault(key, []).append(rows)
    out = []
    for (label, rate), runs in groups.items():
        if len(runs) > 1:
            row = _seed_stats(
                f"{prefix}{label}, lr {rate:g}", [grid.final_accuracy(rows) for rows in runs]
            )
            last5 = statistics.mean(_last_evals(rows) for rows in runs)
            out.append({**row, "mean of the last 5 evaluations": round(last5, 4)})
    return out


def _runs_tables(p: Params, summaries):
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
    budget_of = min(s["total_megabytes"] for s, _ in summaries)
    budgets = [budget_of * f for f in (1, 10, 100)]
    equal = [
        {
            "run": s["run"],
            **{
                f"within {b:,.0f} MB": (
                    round(a, 4)
                    if (a := grid.accuracy_within_megabytes(rows, b)) is not None
                    else "—"
                )
                for b in budgets
            },
        }
        for s, rows in summaries
    ]
    return table, equal


def report(p: Params, store: Store) -> grid.Report:
    """The tables of every section and the accuracy/megabytes plot, from the stored runs."""
    summaries = _summaries(p, store)
    lines, result, plots = [], {"sections": {}}, []
    if summaries:
        table, equal = _runs_tables(p, summaries)
        result["sections"]["runs"] = table
        lines += ["## Without DP: equal rounds\n", reporting.table(table)]
        result["sections"]["equal_megabytes"] = equal
        lines += [
            "\n## Without DP: equal megabytes (best evaluation within each budget)\n",
            reporting.table(equal),
        ]
        curves = {s["run"]: rows for s, rows in summaries}
        plots.append(
            lambda: reporting.plot_accuracy_vs_megabytes(
                curves,
                os.path.join(p.docs_dir, "accuracy_vs_megabytes.png"),
                "Fashion-MNIST, pretrained on public classes 0-4",
            )
        )
    dp_long_runs = grid.finished(_dp_long(p, store), store)
    long_runs = grid.finished(_long(p, store), store)
    curves = {
        _seeded(f"{run.settings['label']}, lr {run.settings['rate']:g}", run): rows
        for run, rows in long_runs
        if not run.settings.get("seed")
    }
    curves.update(
        {
            _seeded(f"DP eps {p.dp_long_epsilon:g}: {run.settings['label']}", run): rows
            for run, rows in dp_long_runs
            if not run.settings.get("seed")
        }
    )
    if curves:
        plots.append(
            lambda: reporting.plot_accuracy_vs_rounds(
                curves,
                os.path.join(p.docs_dir, "accuracy_vs_rounds.png"),
                f"Fashion-MNIST, pretrained: {p.long_rounds} rounds (seed 0), without and with DP",
            )
        )
    dp_long = [_dp_row(run, rows) for run, rows in dp_long_runs]
    extra = (
        ("seeds", "Without DP: seeds (final test accuracy over seeds)", _seed_rows(p, store)),
        ("long", f"Without DP: {p.long_rounds} rounds", _long_rows(p, store)),
        (
            "long_seeds",
            f"Without DP: {p.long_rounds} rounds over seeds",
            _over_seeds(long_runs),
        ),
        ("dp", "DP (user-level, DP-FedAvg aggregation)", _dp_rows(p, store)),
        (
            "dp_long",
            f"DP in the noise-bound regime: epsilon {p.dp_long_epsilon:g} over "
            f"{p.dp_long_rounds} rounds",
            dp_long,
        ),
        (
            "dp_long_seeds",
            f"DP in the noise-bound regime over seeds (epsilon {p.dp_long_epsilon:g}, "
            f"{p.dp_long_rounds} rounds)",
            _over_seeds(dp_long_runs, "DP: "),
        ),
    )
    for key, title, rows in extra:
        if rows:
            result["sections"][key] = rows
            lines += [f"\n## {title}\n", reporting.table(rows)]
    return grid.Report(lines, result, plots)
