"""The documentation's Python: every ```python block of the README, examples/README.md and docs/ is valid Python
(signatures are shown in ```text blocks). The guides' runnable parts run elsewhere: the testing guide's steps in
tests/test_examples.py, the examples themselves, and the seed README's snippets in tests/test_seed_compat.py."""

from __future__ import annotations

import re
import textwrap

import pytest

from .servers import ROOT

PAGES = [ROOT / "README.md", ROOT / "examples" / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCKS = [
    pytest.param(match.group(1), id=f"{page.relative_to(ROOT)}#{n}")
    for page in PAGES
    for n, match in enumerate(re.finditer(r"```python\n(.*?)```", page.read_text(), re.S))
]


def test_every_page_has_been_read() -> None:
    assert len(PAGES) >= 6 and len(BLOCKS) >= 10


@pytest.mark.parametrize("code", BLOCKS)
def test_python_blocks_compile(code: str) -> None:
    compile(textwrap.dedent(code), "<docs>", "exec")


def test_links_between_pages_resolve() -> None:
    broken = [
        f"{page.relative_to(ROOT)} -> {target}"
        for page in PAGES
        for target in re.findall(r"\]\(([^)#\s]+)", page.read_text())
        if not target.startswith(("http://", "https://")) and not (page.parent / target).exists()
    ]
    assert broken == []
