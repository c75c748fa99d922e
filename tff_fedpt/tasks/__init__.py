"""Training tasks: federated data, preprocessing, Keras models and freeze presets.

Tasks are registered by name (`register_task`), like algorithms: a task is a module with
`load(**kwargs) -> Task` and `CATALOG`, its models without data (model name ->
`ModelSpec`). The built-in tasks register themselves below; a new one is one module and
one `register_task` call (docs/training.md, "Adding a task").
"""

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


for _name in ("digits", "emnist", "fashion_mnist", "stackoverflow"):
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
    "register_task",
    "task_module",
    "task_names",
]
