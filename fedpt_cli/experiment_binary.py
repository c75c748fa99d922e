"""The main of an experiment's binary (scripts/*_experiments.py): `--sections`, one flag
per parameter of the experiment (`experiments/`), each section run in order, then the
report, which never replaces one that holds more runs."""

from __future__ import annotations

from fedpt_cli import entry

from collections.abc import Callable
from typing import Any, Optional

from absl import flags

from experiments import grid
from tff_fedpt import reporting, training


def section_names(experiment) -> tuple[str, ...]:
    """The experiment's sections, then "report"."""
    return tuple(s.name for s in experiment.SECTIONS) + ("report",)


def define(experiment) -> tuple[str, ...]:
    """Defines --sections and the experiment's parameter flags; returns the section names."""
    sections = section_names(experiment)
    flags.DEFINE_list("sections", list(sections), f"Which sections to run: {sections}.")
    entry.key_flags("sections")
    entry.define_flags(experiment.Params)
    return sections


def main(experiment, before_section: Optional[Callable[[Any, Any], None]] = None) -> None:
    """Runs the sections named by --sections and then, if named, the report.

    `before_section(params, section)` runs before each section (a check or a note).
    """
    entry.check_sections(flags.FLAGS.sections, section_names(experiment))
    params = entry.params_from_flags(experiment.Params)
    _check(getattr(params, "check", lambda: None))
    store = grid.Store(params.output_dir)
    tasks = grid.Tasks()  # loaded once for every section
    for section in experiment.SECTIONS:
        if section.name in flags.FLAGS.sections:
            entry.log(f"\n# section {section.name}")
            if before_section is not None:
                _check(before_section, params, section)
            try:
                grid.run_section(section, params, store, entry.log, tasks)
            except training.RunInterrupted as e:
                raise entry.ScriptError(
                    f"Interrupted in section {section.name}: the run in progress stopped after "
                    f"round {e.round_num}, rounds 1..{e.checkpoint_round} are saved in "
                    f"{e.checkpoint_dir}; rerun the same command to resume every run where "
                    "it stopped.",
                    code=130,
                ) from None
    if "report" in flags.FLAGS.sections:
        entry.log("\n# section report")
        result = experiment.report(params, store)
        try:
            grid.write_report(result, params.docs_dir, params.output_dir)
        except reporting.FewerRunsError as e:
            raise entry.ScriptError(f"{e} (--output_dir, --docs_dir)") from None
        print("\n".join(result.lines))


def _check(call, *args) -> None:
    """Runs a check; its ExperimentError (which names a parameter) becomes one line naming
    the flag."""
    try:
        call(*args)
    except grid.ExperimentError as e:
        raise entry.ScriptError(f"--{e}") from None
