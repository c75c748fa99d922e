"""Training tasks: federated data, preprocessing, Keras models and freeze presets."""

from tff_fedpt.tasks.base import DatasetError, DatasetNotFoundError, Preprocessing, Task

TASKS = ("digits", "emnist", "fashion_mnist", "stackoverflow")


def load_task(name: str, **kwargs) -> Task:
    """Loads a task by name (one of TASKS)."""
    if name == "digits":
        from tff_fedpt.tasks import digits

        return digits.load(**kwargs)
    if name == "emnist":
        from tff_fedpt.tasks import emnist

        return emnist.load(**kwargs)
    if name == "fashion_mnist":
        from tff_fedpt.tasks import fashion_mnist

        return fashion_mnist.load(**kwargs)
    if name == "stackoverflow":
        from tff_fedpt.tasks import stackoverflow

        return stackoverflow.load(**kwargs)
    raise ValueError(f"task: unknown task {name!r}; valid tasks: {list(TASKS)}.")


__all__ = ["TASKS", "DatasetError", "DatasetNotFoundError", "Preprocessing", "Task", "load_task"]
