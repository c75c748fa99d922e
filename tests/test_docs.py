"""Every Python block of the pages listed here runs, in order, in one namespace per page
(a page's later blocks build on its earlier ones), as a reader would paste them. A page
whose blocks continue the README's library example runs that example first.

docs/training.md's first block runs here; its others are module files and recipes, which
tests/test_training.py runs as written (a task, an algorithm, an option, an experiment).
"""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = (
    "docs/privacy.md",
    "docs/pretrained.md",
    "docs/portable_generator.md",
    "docs/compression.md",
    "docs/remote_workers.md",
    "docs/features.md",
)
AFTER_README = ("docs/compression.md", "docs/remote_workers.md")


def python_blocks(path: str) -> list[str]:
    with open(os.path.join(ROOT, path)) as f:
        return re.findall(r"^```python\n(.*?)^```", f.read(), flags=re.S | re.M)


def test_the_training_layers_step_by_step_block_runs():
    """docs/training.md's first block (the training layer step by step), as written."""
    namespace = {"__name__": "__docs__"}
    exec(compile(python_blocks("docs/training.md")[0], "docs/training.md", "exec"), namespace)  # noqa: S102
    assert [row["round"] for row in namespace["result"].rows] == list(range(1, 11))


@pytest.mark.parametrize("page", PAGES)
def test_every_python_block_runs(page):
    blocks = python_blocks(page)
    assert blocks, f"{page} has no Python block"
    namespace = {"__name__": "__docs__"}
    if page in AFTER_README:
        exec(compile(python_blocks("README.md")[0], "README.md", "exec"), namespace)  # noqa: S102
    for block in blocks:
        exec(compile(block, page, "exec"), namespace)  # noqa: S102
