"""experiments/: the grids are declared once (every run named once, a valid config each),
later stages read what earlier ones stored, and a report never replaces one with more runs.
The drivers themselves train tiny grids in test_fashion_experiments.py and
test_pretrained_experiments.py."""

import dataclasses
import json
import os

import pytest

from experiments import fashion, grid, pretrained
from experiments.grid import Run, Store
from tff_fedpt import reporting
from tff_fedpt.training import config as config_lib
from tff_fedpt.training import outputs


def _store_run(root, name, accuracies, total_rounds=None, **hparams):
    """A stored run: metrics.csv with one evaluation per round, and its hparams.csv."""
    results = os.path.join(root, "results", name)
    os.makedirs(results, exist_ok=True)
    rows = [
        {
            "round": i + 1,
            "eval/accuracy": acc,
            "round_seconds": 1.0,
            "cumulative_megabytes": i + 1.0,
            "broadcast_bytes_per_client": 10,
            "upload_bytes_per_client": 10,
            "round_broadcast_bytes": 10,
            "round_upload_bytes": 10,
        }
        for i, acc in enumerate(accuracies)
    ]
    outputs.write_csv_atomic(os.path.join(results, outputs.METRICS), rows)
    hparams.setdefault("total_rounds", total_rounds or len(accuracies))
    outputs.write_csv_atomic(
        os.path.join(results, outputs.HPARAMS),
        [{"name": k, "value": v} for k, v in hparams.items()],
    )


def _declared(sections, params, store):
    return {s.name: s.runs(params, store) for s in sections}


def _check_declarations(runs_by_section, root):
    names = [run.name for runs in runs_by_section.values() for run in runs]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    for runs in runs_by_section.values():
        for run in runs:
            config = run.config(root)  # every value is a config field
            config_lib.check_choices(config)
            assert config.experiment_name == run.name
            assert run.task["name"] == "fashion_mnist"


def test_fashion_grid_declares_each_run_once(tmp_path):
    params = fashion.Params(output_dir=str(tmp_path))
    runs = _declared(fashion.SECTIONS, params, Store(str(tmp_path)))
    _check_declarations(runs, str(tmp_path))
    counts = {name: len(r) for name, r in runs.items()}
    # a: FedAvg 3 rates, FedPT 4, FedAvg's early run, 2 extra seeds each, the small model
    # 3, two more presets 4 each, the untuned presets that freeze other layers, PVT 3 and
    # its early run. b: two rates at each of two widths. c: 4 clips x 2 at the middle
    # epsilon, 3 epsilons x 2 at the best clip (the middle one is in the clip grid), 3
    # epsilons at dense-2048.
    untuned = len(params.untuned_presets) - len(fashion.untuned_duplicates(params))
    assert counts["a"] == 3 + 4 + 1 + 4 + 3 + 8 + untuned + 3 + 1
    assert counts == {**counts, "b": 4, "c": 8 + 6 - 2 + 3, "c_control": 2, "c_long": 2, "long": 7}
    # The long section continues finished runs of a and b (forks; nothing else forks).
    declared = {run.name for name in ("a", "b") for run in runs[name]}
    assert all(run.fork_of in declared for run in runs["long"])
    assert not [run for name in ("a", "b", "c") for run in runs[name] if run.fork_of]


def test_fashion_later_stages_read_the_stored_results(tmp_path):
    root = str(tmp_path)
    params = fashion.Params(output_dir=root, seeds=(0, 1))
    store = Store(root)
    assert fashion.best_lr(params, store, "fedavg", "none") == 0.05  # nothing stored: first
    _store_run(root, fashion.a_name("fedavg", "none", 0.05), [0.5, 0.6])
    _store_run(root, fashion.a_name("fedavg", "none", 0.2), [0.5, 0.8])
    _store_run(root, fashion.dp_name("fedpt", 5.0, 0.5), [0.3, 0.7])
    assert fashion.best_lr(params, store, "fedavg", "none") == 0.2
    assert fashion.best_clip(params, store, "fedpt") == 0.5
    section_a = _declared(fashion.SECTIONS, params, store)["a"]
    early = next(r for r in section_a if r.name == "a_fedavg_none_early")
    assert early.values["client_learning_rate"] == 0.2 and early.values["rounds_per_eval"] == 1
    seeds = [r for r in section_a if r.settings.get("seed") == 1]
    assert {r.name for r in seeds} == {"a_fedavg_none_lr0.2_s1", "a_fedpt_dense_lr0.05_s1"}
    assert all(r.values["frozen_seed"] == 1 for r in seeds)
    long = fashion.SECTIONS[-1].runs(params, store)
    assert (
        long[0].fork_of == "a_fedavg_none_lr0.2_s0" and long[0].name == "l_a_fedavg_none_lr0.2_s0"
    )
    assert long[0].values["total_rounds"] == params.long_rounds
    c_long = dict((r.settings["algorithm"], r) for r in fashion._c_long(params, store))
    assert c_long["fedpt"].name == "c_fedpt_eps2_clip0.5_r100"
    assert c_long["fedpt"].values["target_epsilon"] == 2.0


def test_pretrained_grid_names_and_checks(tmp_path):
    root = str(tmp_path)
    params = pretrained.Params(
        output_dir=root, dp_clips=(0.3, 1.0), long_seeds=(1,), dp_long_seeds=(1,), epsilons=(2.0,)
    )
    runs = _declared(pretrained.SECTIONS, params, Store(root))
    _check_declarations(runs, root)
    dp = {r.name for r in runs["dp"]}
    # The first pass (clip 1.0) keeps its name; the other clips say theirs.
    assert {"dp_eps2_fedpt_head_lr0.2", "dp_eps2_fedpt_head_lr0.2_clip0.3"} <= dp
    assert len(dp) == 2 * len(pretrained.DP_SETTINGS)
    long = {r.name: r for r in runs["long"]}
    assert "fedavg_finetune_lr0.05_r300_seed1" in long and "fedpt_head_lr0.2_r300" in long
    assert "fedpt_head_lr0.2_r300_seed1" not in long  # the head is not a seeds setting
    assert long["fedavg_finetune_lr0.05_r300_seed1"].values["seed"] == 1
    dp_long = {r.name: r for r in runs["dp_long"]}
    assert dp_long["dp_eps2_fedpt_head_lr0.2_r300_seed1"].values["clip"] == 1.0
    for bad, field in (
        (dict(only=("nope",)), "only"),
        (dict(long_seeds=(0,)), "long_seeds"),
        (dict(dp_clips=(0.0,)), "dp_clips"),
    ):
        with pytest.raises(grid.ExperimentError, match=f"^{field}: "):
            dataclasses.replace(params, **bad).check()


def test_pretrained_seeds_are_summarized_over_complete_runs(tmp_path):
    root = str(tmp_path)
    params = pretrained.Params(output_dir=root, only=("fedpt_head",), dp_long_seeds=(1, 2))
    store = Store(root)
    head = pretrained.GRID[2]
    for seed, last in ((0, 0.7), (1, 0.8), (2, 0.75)):
        name = pretrained.dp_long_name(params, head, 0.2, seed)
        accuracies = [0.5] * 299 + [last] if seed < 2 else [0.5]  # seed 2 unfinished
        _store_run(root, name, accuracies, total_rounds=300)
    rows = pretrained._over_seeds(grid.finished(pretrained._dp_long(params, store), store))
    (row,) = rows
    assert row["seeds"] == 2 and row["mean test acc"] == 0.75
    assert row["mean of the last 5 evaluations"] == round((0.5 * 4 + 0.75) / 5, 4)


def _read(path):
    with open(path) as f:
        return f.read()


def test_write_report_refuses_fewer_runs_and_writes_nothing(tmp_path):
    docs = str(tmp_path / "docs")
    drawn = []
    full = grid.Report(["# two"], {"sections": {"x": [1, 2], "about": [1]}}, not_runs=("about",))
    grid.write_report(full, docs, "runs")
    before = {p: _read(os.path.join(docs, p)) for p in ("results.json", "results.md")}
    assert json.loads(before["results.json"])["sections"]["x"] == [1, 2]
    plot = [lambda: drawn.append(1)]
    fewer = grid.Report(["# one"], {"sections": {"x": [1]}}, plot, not_runs=("about",))
    with pytest.raises(reporting.FewerRunsError, match="section x: 1 run rows"):
        grid.write_report(fewer, docs, "runs")
    assert not drawn
    assert {p: _read(os.path.join(docs, p)) for p in before} == before
    more = grid.Report(["# three"], {"sections": {"x": [1, 2, 3]}}, plot, not_runs=("about",))
    grid.write_report(more, docs, "runs")
    assert drawn == [1] and _read(os.path.join(docs, "results.md")) == "# three\n"


def test_a_fork_waits_for_its_source(tmp_path):
    root = str(tmp_path)
    _store_run(root, "src", [0.5], total_rounds=3)  # 1 of 3 rounds
    lines = []
    run = Run("l_src", {"total_rounds": 5}, {"name": "no-such-task"}, fork_of="src")
    grid.execute([run, dataclasses.replace(run, fork_of="missing")], root, lines.append)
    assert lines == ["  src: not finished; run its section first"] + [
        "  missing: not finished; run its section first"
    ]
    assert not os.path.exists(os.path.join(root, "results", "l_src", "metrics.csv"))


def test_report_tables_write_numbers_for_people():
    rows = [{"run": "a", "MB": 28797.4, "acc": 0.86241, "bytes": 9599060, "eps": float("inf")}]
    assert reporting.table(rows).splitlines()[-1] == "| a | 28,797 | 0.8624 | 9,599,060 | inf |"
    plain = reporting.table(rows, ["run", "MB"], markdown=False).splitlines()
    assert plain == ["run      MB", "---  ------", "a    28,797"]


def test_write_report_refuses_a_short_grid_over_a_long_one(tmp_path):
    # The same runs, each 4 rounds instead of 100: as many rows, far fewer rounds.
    docs = str(tmp_path / "docs")
    long = [{"run": "a", "rounds": 100}, {"run": "b", "rounds": 100}]
    grid.write_report(grid.Report(["# long"], {"sections": {"x": long}}), docs, "runs")
    short = [{"run": "a", "rounds": 4}, {"run": "b", "rounds": 4}]
    with pytest.raises(reporting.FewerRunsError, match=r"8 rounds in all \(saved: 200\)"):
        grid.write_report(grid.Report(["# short"], {"sections": {"x": short}}), docs, "runs")
    assert _read(os.path.join(docs, "results.md")) == "# long\n"
    longer = [{"run": "a", "rounds": 300}, {"run": "b", "rounds": 100}]
    grid.write_report(grid.Report(["# longer"], {"sections": {"x": longer}}), docs, "runs")
    assert _read(os.path.join(docs, "results.md")) == "# longer\n"


def test_summarize_seeds_gives_mean_and_spread_of_final_and_last_five(tmp_path):
    """scripts/summarize_seeds.py: per setting, the mean and sample SD over its runs of the
    final accuracy and of the mean of the last five evaluations; a run without evaluations
    is one line naming it."""
    import sys

    from tests import scripts

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    _store_run(tmp_path, "a_s1", [0.1, 0.5, 0.5, 0.5, 0.5, 0.7])  # last 5: 0.54
    _store_run(tmp_path, "a_s2", [0.2, 0.6, 0.6, 0.6, 0.6, 0.5])  # last 5: 0.58
    _store_run(tmp_path, "b_s1", [0.3])
    out = tmp_path / "summary.json"
    script = [sys.executable, os.path.join(root, "scripts", "summarize_seeds.py")]
    result = scripts.run(
        [*script, f"--root_output_dir={tmp_path}", "--groups=A=a_s1,a_s2;B=b_s1", f"--output={out}"]
    )
    assert result.returncode == 0, result.stderr
    a, b = json.loads(out.read_text())
    assert (a["label"], a["seeds"], b["seeds"]) == ("A", 2, 1)
    assert a["final_mean"] == pytest.approx(0.6) and a["final_sd"] == pytest.approx(
        0.1414, abs=1e-4
    )
    assert a["last5_mean"] == pytest.approx(0.56) and b["final_sd"] == 0.0
    assert "| A | 2 | 0.6000 ± 0.1414 | 0.5600 ± 0.0283 |" in result.stdout
    result = scripts.run(
        [*script, f"--root_output_dir={tmp_path}", "--groups=A=nope", f"--output={out}"]
    )
    assert result.returncode == 2 and "run 'nope' has no evaluation" in result.stderr
    # At equal rounds: each run cut at round 5 (a_s1's last five then 0.42), and a run
    # with fewer rounds named.
    args = [*script, f"--root_output_dir={tmp_path}", f"--output={out}", "--rounds=5"]
    result = scripts.run([*args, "--groups=A=a_s1"])
    assert result.returncode == 0, result.stderr
    (a,) = json.loads(out.read_text())
    assert a["runs"][0]["rounds"] == 5 and a["last5_mean"] == pytest.approx(0.42)
    result = scripts.run([*args, "--groups=B=b_s1"])
    assert result.returncode == 2 and "--rounds=5: run 'b_s1' has reached round 1" in result.stderr
