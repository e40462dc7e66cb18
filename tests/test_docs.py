"""The ```python examples of every docs/*.md page run as written.

Each page's blocks are executed in order in one namespace (a later block may use the names of
an earlier one), inside a fresh temporary working directory (examples write small files).
"""

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(DOCS.glob("*.md"))


def _blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


def test_docs_have_python_examples():
    assert PAGES, f"no markdown pages in {DOCS}"
    assert sum(len(_blocks(page)) for page in PAGES) >= 10


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_docs_python_examples_run(page: Path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for k, block in enumerate(_blocks(page)):
        # the file name and block index appear in any traceback
        exec(compile(block, f"{page.name}[python block {k}]", "exec"), namespace)  # noqa: S102


def test_cli_reference_is_generated_from_the_registries():
    # docs/cli.md's configuration reference is generated; regenerate it with
    # `python -m flowmatch.cli.docs --write docs/cli.md` after adding a component or option.
    from flowmatch.cli.docs import BEGIN, END, reference

    text = (DOCS / "cli.md").read_text()
    block = text.split(BEGIN, 1)[1].split(END, 1)[0]
    assert block == "\n" + reference(), (
        "docs/cli.md is stale: run python -m flowmatch.cli.docs --write docs/cli.md"
    )
