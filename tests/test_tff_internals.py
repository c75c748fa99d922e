"""The private TFF names the package reads are all in one module, and all still there."""

import ast
import functools
import os

import pytest

from tff_fedpt import _tff_internals

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(
    "module,attribute",
    _tff_internals.USED,
    ids=[f"{m.__name__.rsplit('.', 1)[-1]}.{a}" for m, a in _tff_internals.USED],
)
def test_every_private_tff_name_the_package_reads_exists(module, attribute):
    value = functools.reduce(getattr, attribute.split("."), module)
    assert value is not None


def test_private_tff_modules_are_imported_in_one_place_only():
    """Outside `_tff_internals`, no module of the package, its baselines, scripts or
    tests imports `tensorflow_federated.python`."""
    offenders = []
    for top in ("tff_fedpt", "fedpt_device", "baselines", "scripts", "tests"):
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                path = os.path.join(folder, name)
                if not name.endswith(".py") or path.endswith("_tff_internals.py"):
                    continue
                with open(path) as f:
                    tree = ast.parse(f.read())
                for node in ast.walk(tree):
                    names = []
                    if isinstance(node, ast.ImportFrom) and node.module:
                        names = [node.module]
                    elif isinstance(node, ast.Import):
                        names = [a.name for a in node.names]
                    if any(n.startswith("tensorflow_federated.python") for n in names):
                        offenders.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}")
    assert not offenders, offenders
