"""Options: a group of settings is a frozen dataclass owned by the module that uses it.

Each field is declared once with `option(default, help, choices=, resumable=)`: its
default, its help text (the binaries' flag help) and its allowed values. The training
configuration (`tff_fedpt.training.ExperimentConfig`) is the union of the groups, so a
new option is one field in its owner's group: the config field, the binaries' flag, the
run record and `hparams.csv` follow from it. `group_of(config, Group)` gives a module its
own group back.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from typing import Any, Optional, TypeVar

G = TypeVar("G")


def option(default, help: str, *, choices: Optional[Sequence] = None, resumable: bool = False):
    """A field of an options group with its flag help text and allowed values.

    `resumable` fields may change between a run and its resumption (they do not change
    what the run computes, only how long it runs or where it writes).
    """
    metadata = {"help": help, "choices": tuple(choices) if choices else None}
    metadata["resumable"] = resumable
    return dataclasses.field(default=default, metadata=metadata)


def value_type(hint) -> type:
    """The value type (bool, int, float or str) of a field's type hint, Optional stripped."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def group_of(values: Any, group: type[G]) -> G:
    """The `group` dataclass holding the same-named fields of `values` (a config)."""
    return group(**{f.name: getattr(values, f.name) for f in dataclasses.fields(group)})
