"""Training tasks: federated data, preprocessing, Keras models and freeze presets.

Tasks are registered by name (`register_task`), like algorithms: a task is a module with
`load(**kwargs) -> Task` and `CATALOG`, its models without data (model name ->
`ModelSpec`); a module whose models take settings of their own (`MODEL_SETTINGS`,
`build_models(**settings)`) lets `with_model_settings` change them without reloading data.
The built-in tasks register themselves below; a new one is one module and one
`register_task` call (docs/training.md, "Adding a task").
"""

import dataclasses
import importlib
import types

from tff_fedpt.tasks.base import (
    DatasetError,
    DatasetNotFoundError,
    ModelSpec,
    Preprocessing,
    Task,
)

_REGISTRY: dict[str, str] = {}


def register_task(name: str, module: str) -> None:
    """Registers the task `name`, implemented by the importable `module` (imported on
    first use): it defines `load(**kwargs) -> Task` and `CATALOG` (model name ->
    `ModelSpec`).

    Raises:
      ValueError: for a name that is taken or not an identifier.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"register_task: name must be an identifier; received {name!r}.")
    if name in _REGISTRY and _REGISTRY[name] != module:
        raise ValueError(
            f"register_task: task {name!r} is already registered (by {_REGISTRY[name]})."
        )
    _REGISTRY[name] = module


def task_names() -> tuple[str, ...]:
    """The registered tasks, in registration order."""
    return tuple(_REGISTRY)


def task_module(name: str) -> types.ModuleType:
    """The module of a registered task (imported now)."""
    if name not in _REGISTRY:
        raise ValueError(f"task: unknown task {name!r}; valid tasks: {list(_REGISTRY)}.")
    return importlib.import_module(_REGISTRY[name])


def load_task(name: str, **kwargs) -> Task:
    """Loads a registered task by name (`task_names()`)."""
    return task_module(name).load(**kwargs)


def model_settings(name: str) -> tuple[str, ...]:
    """The `load` arguments of task `name` that change its models only (its module's
    `MODEL_SETTINGS`; e.g. fashion_mnist's `dense_units`), not its data."""
    return tuple(getattr(task_module(name), "MODEL_SETTINGS", ()))


def with_model_settings(task: Task, **settings) -> Task:
    """`task` with its models built with `settings` (its module's `build_models`): the
    same data, not reloaded or re-split; `task.settings` (the run record) says them.

    Raises:
      ValueError: for a setting that is not one of the task's model settings.
    """
    known = model_settings(task.name)
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise ValueError(
            f"with_model_settings: {unknown} are not model settings of task {task.name!r}; "
            f"valid: {list(known)}."
        )
    if not settings:
        return task
    current = {k: task.settings[k] for k in known if k in task.settings}
    models = task_module(task.name).build_models(**{**current, **settings})
    return dataclasses.replace(
        task, models={**task.models, **models}, settings={**task.settings, **settings}
    )


for _name in ("digits", "emnist", "fashion_mnist", "stackoverflow", "shakespeare"):
    register_task(_name, f"tff_fedpt.tasks.{_name}")
TASKS = task_names()  # the built-in tasks

__all__ = [
    "TASKS",
    "DatasetError",
    "DatasetNotFoundError",
    "ModelSpec",
    "Preprocessing",
    "Task",
    "load_task",
    "model_settings",
    "register_task",
    "task_module",
    "task_names",
    "with_model_settings",
]
