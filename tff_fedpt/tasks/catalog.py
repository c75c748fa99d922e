"""Every registered task's models without their data: builders, input specs and freeze
presets (`ModelSpec`), keyed "task/model".

For what needs a task's model but not its data (the device export, byte counts in
benchmarks), including tasks whose data cannot be downloaded here. Each task module owns
its entries (its `CATALOG`); this module only gathers them from the task registry.
"""

from __future__ import annotations

from tff_fedpt.tasks import task_module, task_names
from tff_fedpt.tasks.base import ModelSpec


def models() -> dict[str, ModelSpec]:
    """ "task/model" -> ModelSpec for every registered task."""
    return {
        f"{task}/{model}": spec
        for task in task_names()
        for model, spec in task_module(task).CATALOG.items()
    }


MODELS: dict[str, ModelSpec] = models()  # the tasks registered at import


def model_spec(task: str, model: str) -> ModelSpec:
    known = models()
    key = f"{task}/{model}"
    if key not in known:
        raise ValueError(f"unknown task/model {key!r}; valid: {sorted(known)}.")
    return known[key]
