"""Every Python block of the pages listed here runs, in order, in one namespace per page
(a page's later blocks build on its earlier ones), as a reader would paste them."""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ("docs/privacy.md",)


def python_blocks(path: str) -> list[str]:
    with open(path) as f:
        return re.findall(r"^```python\n(.*?)^```", f.read(), flags=re.S | re.M)


@pytest.mark.parametrize("page", PAGES)
def test_every_python_block_runs(page):
    blocks = python_blocks(os.path.join(ROOT, page))
    assert blocks, f"{page} has no Python block"
    namespace = {"__name__": "__docs__"}
    for block in blocks:
        exec(compile(block, page, "exec"), namespace)  # noqa: S102
