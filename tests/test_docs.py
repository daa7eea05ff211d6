"""The documentation's code blocks run, in order, and their assertions hold."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = ["from-formula-to-code.md"]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


@pytest.mark.parametrize("page", PAGES)
def test_code_blocks_execute(page):
    blocks = python_blocks((DOCS / page).read_text())
    assert len(blocks) >= 4, f"{page}: expected its code blocks, found {len(blocks)}"
    namespace: dict[str, object] = {}
    for k, block in enumerate(blocks):
        try:
            exec(compile(block, f"{page}[block {k}]", "exec"), namespace)
        except Exception as exc:  # name the block that went stale
            raise AssertionError(f"{page}, code block {k} failed: {exc!r}\n{block}") from exc


@pytest.mark.slow
def test_readme_python_blocks_run(tmp_path, monkeypatch):
    """The README's quick starts run as written (in a fresh directory: they write runs/)."""
    blocks = python_blocks((DOCS.parent / "README.md").read_text())
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    for k, block in enumerate(blocks):
        try:
            exec(compile(block, f"README.md[block {k}]", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"README.md, code block {k} failed: {exc!r}\n{block}") from exc
    assert (tmp_path / "runs" / "py" / "probe.json").is_file()
