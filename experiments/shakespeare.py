"""FedPT on federated Shakespeare (docs/shakespeare.md), at equal rounds and at equal
megabytes, in TFF's baseline setup (10 clients per round, 1 epoch, batch 4): FedAvg from
scratch against FedPT with each seeded freeze preset (`GRID`), and, from the public plays'
model (`scripts/pretrain.py --task=shakespeare`), FedAvg fine-tuning against FedPT with the
pretrained part frozen, head only and with LoRA on the head (`PRETRAINED_GRID`).

Sections (each resumable):

  runs   every setting of `GRID` at each of its client learning rates, `rounds` rounds
  seeds  the pairs that decide the model's headlines (`SEED_SETTINGS`) at their best
         rates, `seeds`

`report(params, store)` writes the tables and the accuracy plots (against rounds and
against megabytes).
"""

from __future__ import annotations

import dataclasses
import os
import statistics
from typing import Optional

from experiments import grid
from experiments.grid import ExperimentError, Run, Section, Store
from tff_fedpt import reporting
from tff_fedpt.options import option
from tff_fedpt.tasks import shakespeare


@dataclasses.dataclass(frozen=True)
class Params:
    """The experiment's parameters (scripts/shakespeare_experiments.py: one flag each)."""

    output_dir: str = option("output/shakespeare", "Checkpoints and metrics.")
    docs_dir: str = option("docs/shakespeare", "Where the report goes.")
    cache_dir: Optional[str] = option(None, "Directory of shakespeare.sqlite (default: found).")
    unit: str = option("chars", "The task's unit (its model).", choices=("chars", "words"))
    public_plays: tuple[str, ...] = option(
        shakespeare.PUBLIC_PLAYS, "Plays held by the server (not clients)."
    )
    clients_per_round: int = option(10, "Clients per round (TFF's baseline: 10).")
    rounds: int = option(300, "Rounds of each run.")
    rounds_per_eval: int = option(10, "Rounds between evaluations.")
    only: tuple[str, ...] = option((), "Run only the grid entries with these names (default: all).")
    max_rates: int = option(
        0, "Use only the first N rates of each setting's grid (0: all; the first is TFF's)."
    )
    seeds: tuple[int, ...] = option((1, 2), "Extra seeds of the seeds section.")
    pretrained: str = option(
        "",
        "The public plays' model (scripts/pretrain.py --task=shakespeare) of the pretrained "
        "settings (default: output/pretrained/shakespeare_<unit>.npz).",
    )
    last_evals: int = option(5, "Evaluations averaged next to the final one.")

    @property
    def pretrained_file(self) -> str:
        """`pretrained`, or where docs/shakespeare.md's pretraining command puts `unit`'s model."""
        return self.pretrained or f"output/pretrained/shakespeare_{self.unit}.npz"

    def check(self) -> None:
        unknown = set(self.only) - {s.name for s in GRID}
        if unknown:
            raise ExperimentError(
                f"only: unknown {sorted(unknown)}; valid: {[s.name for s in GRID]}."
            )
        if 0 in self.seeds:
            raise ExperimentError("seeds: seed 0 is the grid's own run; name the extra seeds.")
        for field in ("rounds", "rounds_per_eval", "last_evals"):
            if getattr(self, field) < 1:
                raise ExperimentError(f"{field}: must be >= 1; received {getattr(self, field)}.")


def check_pretrained(p: Params, section: Optional[Section] = None) -> None:
    """Before a section trains: the public plays' model of the selected pretrained
    settings exists (the report reads stored runs only and needs no file)."""
    needing = [s.name for s in selected(p) if s.pretrained]
    if needing and not os.path.exists(p.pretrained_file):
        raise ExperimentError(
            f"pretrained: {p.pretrained_file} does not exist, and {needing} start from it; "
            f"make it with scripts/pretrain.py --task=shakespeare --unit={p.unit} "
            f"--output={p.pretrained_file}, or leave those settings out (--only)."
        )


@dataclasses.dataclass(frozen=True)
class Setting:
    """One algorithm setting, run at each of `rates` (the character model's; the first:
    TFF's baseline rate); the words model's are `WORD_RATES`."""

    name: str
    label: str
    rates: tuple[float, ...]
    options: tuple[tuple[str, object], ...] = ()
    pretrained: bool = False  # starts from the public plays' model (every layer it holds)
    units: tuple[str, ...] = shakespeare.UNITS  # the models it applies to


def _fedpt(preset: str) -> tuple[tuple[str, object], ...]:
    return (("algorithm", "fedpt"), ("freeze", preset))


# Client SGD rates: TFF's Shakespeare baseline uses 1 (server SGD 1); each grid brackets it.
# The words model from scratch: TFF's StackOverflow baseline's client rate, about 0.3. From
# the public plays' words model, 0.5 (fine-tuning) and 1 (LoRA on the output layer) made
# the training loss diverge within three rounds, and 0.1 did best of {0.1, 0.02} over 10 rounds
# (docs/shakespeare.md). Keyed by `Setting.pretrained`.
WORD_RATES = {False: (0.3, 0.1, 1.0), True: (0.1, 0.5, 0.02)}
GRID = (
    Setting("fedavg", "FedAvg", (1.0, 0.5, 2.0), (("algorithm", "fedavg"), ("freeze", "none"))),
    Setting("fedpt_embedding", "FedPT, embedding frozen", (1.0, 0.5, 2.0), _fedpt("embedding")),
    Setting("fedpt_lstm1", "FedPT, first LSTM frozen", (1.0, 0.5, 2.0), _fedpt("lstm1")),
    Setting("fedpt_recurrent", "FedPT, every LSTM frozen", (1.0, 0.5, 2.0), _fedpt("recurrent")),
    Setting(
        "fedpt_all_but_output",
        "FedPT, all but the output layer frozen",
        (1.0, 0.5, 2.0),
        _fedpt("all_but_output"),
    ),
)
PRETRAINED_GRID = (
    Setting(
        "fedavg_finetune",
        "FedAvg fine-tuning every weight from the public plays' model",
        (0.5, 1.0, 0.2),
        (("algorithm", "fedavg"), ("freeze", "none")),
        pretrained=True,
    ),
    Setting(
        "fedpt_pre_recurrent",
        "FedPT, the pretrained LSTMs frozen",
        (1.0, 0.5, 2.0),
        _fedpt("recurrent"),
        pretrained=True,
    ),
    Setting(
        "fedpt_pre_head",
        "FedPT, all but the output layer pretrained and frozen",
        (1.0, 0.5, 2.0),
        _fedpt("all_but_output"),
        pretrained=True,
    ),
    Setting(
        "fedpt_pre_lstm_lora8",
        "FedPT, the pretrained LSTMs frozen + LoRA r8 on both",
        (1.0, 0.5, 2.0),
        (
            *_fedpt("none"),
            ("adapter_layers", "lstm1,lstm2"),
            ("adapter_rank", 8),
            ("adapter_mode", "lora"),
        ),
        pretrained=True,
        units=("chars",),  # the words model has one LSTM
    ),
    Setting(
        "fedpt_pre_lora8",
        "FedPT, all pretrained and frozen + LoRA r8 on the output layer",
        (1.0, 0.5, 2.0),
        (
            *_fedpt("all_but_output"),
            ("adapter_layers", "logits"),
            ("adapter_rank", 8),
            ("adapter_mode", "lora"),
        ),
        pretrained=True,
    ),
)
GRID = GRID + PRETRAINED_GRID
# The pairs that decide each model's headlines: from scratch, FedAvg against every LSTM
# frozen; from the public plays' model, fine-tuning against the adapter that came nearest.
SEED_SETTINGS = {
    "chars": ("fedavg", "fedpt_recurrent", "fedavg_finetune", "fedpt_pre_lstm_lora8"),
    "words": ("fedavg", "fedpt_recurrent", "fedavg_finetune", "fedpt_pre_lora8"),
}
COMMON = dict(
    task="shakespeare",
    client_epochs_per_round=1,
    client_batch_size=4,
    client_optimizer="sgd",
    server_optimizer="sgd",
    server_learning_rate=1.0,
)


def name(p: Params, setting: Setting, rate: float, seed: int = 0) -> str:
    return f"{p.unit}_{setting.name}_lr{rate:g}" + (f"_seed{seed}" if seed else "")


def unit_rates(p: Params, setting: Setting) -> tuple[float, ...]:
    """The setting's whole bracket for the task's model, its first rate first."""
    return WORD_RATES[setting.pretrained] if p.unit == "words" else setting.rates


def rates(p: Params, setting: Setting) -> tuple[float, ...]:
    return grid.capped(unit_rates(p, setting), p.max_rates)


def selected(p: Params, among=None) -> list[Setting]:
    """The settings of `p.only` (all when empty) that apply to `p.unit`."""
    return [s for s in grid.select(GRID, p.only, among) if p.unit in s.units]


def best_rate(p: Params, store: Store, setting: Setting) -> float:
    candidates = {rate: name(p, setting, rate) for rate in rates(p, setting)}
    return store.best(candidates, unit_rates(p, setting)[0])


def _run(p: Params, setting: Setting, rate: float, seed: int = 0) -> Run:
    values = {
        **COMMON,
        **dict(setting.options),
        "client_learning_rate": rate,
        "clients_per_round": p.clients_per_round,
        "total_rounds": p.rounds,
        "rounds_per_eval": p.rounds_per_eval,
        "rounds_per_checkpoint": max(1, min(10, p.rounds // 4)),
        "seed": seed,
    }
    if setting.pretrained:
        values["pretrained_weights"] = p.pretrained_file
    task = dict(name="shakespeare", unit=p.unit, public_plays=p.public_plays, cache_dir=p.cache_dir)
    settings = dict(setting=setting.name, label=setting.label, rate=rate, seed=seed)
    return Run(name(p, setting, rate, seed), values, task, settings)


def _runs(p, store):
    return [_run(p, s, rate) for s in selected(p) for rate in rates(p, s)]


def _seeds(p, store):
    return [
        _run(p, s, best_rate(p, store, s), seed)
        for s in selected(p, SEED_SETTINGS[p.unit])
        for seed in p.seeds
    ]


SECTIONS = (Section("runs", (_runs,)), Section("seeds", (_seeds,)))


# ---------------------------------------------------------------------------
# The report.


def _best_within(rows, megabytes: float) -> Optional[float]:
    best = grid.accuracy_within_megabytes(rows, megabytes)
    return None if best is None else round(best, 4)


def _row(p: Params, run: Run, rows, fedavg_bytes: Optional[int]) -> dict:
    summary = reporting.summarize(run.settings["label"], rows)
    evals = grid.evaluations(rows)
    per_client = summary["bytes_per_client_round"]
    return {
        "run": run.settings["label"],
        "client lr": run.settings["rate"],
        "seed": run.settings["seed"],
        "rounds": summary["rounds"],
        "test acc": round(evals[-1], 4),
        f"mean of last {p.last_evals}": round(statistics.mean(evals[-p.last_evals :]), 4),
        "bytes/client/round": per_client,
        "less per round": f"{fedavg_bytes / per_client:.1f}x" if fedavg_bytes else "",
        "total MB": round(summary["total_megabytes"], 1),
        "median s/round": round(summary["median_round_seconds"], 2),
    }


def report(p: Params, store: Store) -> grid.Report:
    """The grid's table (every rate), the seeds' spread, accuracy at FedPT's megabytes,
    and the plots, from the stored runs."""
    runs = grid.finished(_runs(p, store), store)
    seeds = grid.finished(_seeds(p, store), store)
    fedavg = [
        rows for run, rows in runs if run.settings["setting"] in ("fedavg", "fedavg_finetune")
    ]
    fedavg_bytes = (
        int(fedavg[0][-1]["broadcast_bytes_per_client"])
        + int(fedavg[0][-1]["upload_bytes_per_client"])
        if fedavg
        else None
    )
    table = [_row(p, run, rows, fedavg_bytes) for run, rows in runs + seeds]
    lines = [f"# Shakespeare ({p.unit}): FedAvg and FedPT", ""]
    result = {
        "params": {**dataclasses.asdict(p), "pretrained": p.pretrained_file},
        "sections": {"runs": table},
    }
    if table:
        short = [r for r in table if r["rounds"] < p.rounds]
        lines += ["Every run (client learning rate, seed):", "", reporting.table(table), ""]
        if short:
            lines += [
                f"{len(short)} of these runs are short of {p.rounds} rounds (stopped or "
                "still running: the driver resumes them).",
                "",
            ]
    best = {s.name: best_rate(p, store, s) for s in selected(p)}
    chosen = {
        run.settings["label"]: rows
        for run, rows in runs
        if run.settings["rate"] == best[run.settings["setting"]]
    }
    # The references at equal megabytes: FedAvg from scratch and, for the runs from the
    # public plays' model, fine-tuning (each at its best rate).
    references = {
        label: rows
        for setting, label in (("fedavg", "FedAvg"), ("fedavg_finetune", "FedAvg fine-tuning"))
        for s in selected(p)
        if s.name == setting
        for run, rows in runs
        if run.name == name(p, s, best[s.name])
    }
    if references:
        budget_rows = []
        for label, rows in chosen.items():
            budget = float(rows[-1]["cumulative_megabytes"])
            row = {
                "run": label,
                "its total MB": round(budget, 1),
                "its best acc": _best_within(rows, budget),
            }
            for reference, ref_rows in references.items():
                # "—": the reference had no evaluation within those megabytes
                row[f"{reference}: best acc within those MB"] = (
                    _best_within(ref_rows, budget) or "—"
                )
            budget_rows.append(row)
        result["sections"]["equal_megabytes"] = budget_rows
        lines += ["At equal megabytes (each run's total):", "", reporting.table(budget_rows), ""]
    spread = _over_seeds(p, runs + seeds)
    if spread:
        result["sections"]["seeds"] = spread
        lines += ["Over seeds:", "", reporting.table(spread), ""]
    plots = []
    if chosen:
        for kind, plot in (
            ("rounds", reporting.plot_accuracy_vs_rounds),
            ("megabytes", reporting.plot_accuracy_vs_megabytes),
        ):
            path = os.path.join(p.docs_dir, f"accuracy_vs_{kind}.png")
            plots.append(lambda plot=plot, path=path: plot(chosen, path, f"Shakespeare ({p.unit})"))
    return grid.Report(lines, result, plots, not_runs=("equal_megabytes", "seeds"))


def _over_seeds(p: Params, finished) -> list[dict]:
    groups: dict[tuple, list] = {}
    for run, rows in finished:
        if int(rows[-1]["round"]) >= run.values["total_rounds"]:
            groups.setdefault((run.settings["label"], run.settings["rate"]), []).append(rows)
    out = []
    for (label, rate), group in groups.items():
        if len(group) > 1:
            finals = [grid.evaluations(rows)[-1] for rows in group]
            lasts = [statistics.mean(grid.evaluations(rows)[-p.last_evals :]) for rows in group]
            out.append(
                {
                    "run": f"{label}, lr {rate:g}",
                    "seeds": len(group),
                    "mean test acc": round(statistics.mean(finals), 4),
                    "std": round(statistics.stdev(finals), 4),
                    f"mean of last {p.last_evals}, over seeds": round(statistics.mean(lasts), 4),
                }
            )
    return out
