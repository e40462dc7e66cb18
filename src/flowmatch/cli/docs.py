"""Generate the configuration reference of docs/cli.md from the registries and option records.

``python -m flowmatch.cli.docs`` prints the reference; ``--write docs/cli.md`` replaces the
block between the ``<!-- config-reference -->`` markers (a test fails when it is stale). Each
section and each registered component lists its options with type, default, range and the
one-line description given in its ``option(doc=...)``: a field is described in one place.
"""

from __future__ import annotations

import argparse
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

from flowmatch.config.schema import RunConfig
from flowmatch.registry import ComponentConfig, Registry, registries
from flowmatch.utils.options import Options, field_docs

BEGIN, END = "<!-- config-reference:begin -->", "<!-- config-reference:end -->"

# Where each registry's kinds are chosen in a run config.
KEYS = {
    "path": "path.kind",
    "coupling": "coupling.kind",
    "time sampler": "time.kind",
    "source": "source.kind",
    "objective": "objective.kind",
    "model": "model.kind",
    "sampler": "sample.solver / eval.reference (kind)",
    "grid": "sample.grid (kind)",
    "metric": "eval.metrics (names)",
}


def _rows(cls: type[Options], skip: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    return [
        f"| `{name}` | {tp} | `{default}` | {doc} |"
        for name, tp, default, doc in field_docs(cls)
        if name not in skip
    ]


def _section(name: str, cls: type[Options]) -> list[str]:
    hints = typing.get_type_hints(cls)
    lines = [f"### `[{name}]`", "", "| key | type | default | meaning |", "|---|---|---|---|"]
    lines += _rows(cls)
    nested = [
        f.name
        for f in fields(cls)
        if isinstance(hints.get(f.name), type) and issubclass(hints[f.name], ComponentConfig)
    ]
    if nested:
        lines += [
            "",
            "Component keys: "
            + ", ".join(f"`{name}.{n}`" for n in nested)
            + " (a name, or a table with `kind` and that kind's options; see below).",
        ]
    return [*lines, ""]


def _registry(concept: str, reg: Registry[Any, Any]) -> list[str]:
    lines = [f"### {concept}s (`{KEYS.get(concept, concept)}`)", ""]
    base = reg.base
    shared = {n for n, *_ in field_docs(base)}
    if shared:
        lines += [
            f"Options of every {concept}:",
            "",
            "| key | type | default | meaning |",
            "|---|---|---|---|",
            *_rows(base),
            "",
        ]
    lines += ["| kind | what it is | its own options |", "|---|---|---|"]
    for entry in sorted(reg.entries(), key=lambda e: e.name):
        if not entry.module.startswith("flowmatch."):
            continue  # the reference documents flowmatch's own components, not plugins
        own = [
            f"`{n}` ({tp}, default `{d}`{': ' + doc if doc else ''})"
            for n, tp, d, doc in field_docs(entry.config)
            if n not in shared
        ]
        default = " (default)" if reg.default == entry.name else ""
        lines.append(f"| `{entry.name}`{default} | {entry.help} | {'; '.join(own) or '-'} |")
    return [*lines, ""]


def reference() -> str:
    """The markdown reference of every section and registered component."""
    lines = [
        "## Configuration reference",
        "",
        "Generated from the registries and option records "
        "(`python -m flowmatch.cli.docs --write docs/cli.md`).",
        "",
    ]
    for f in fields(RunConfig):
        cls = typing.get_type_hints(RunConfig)[f.name]
        if (
            isinstance(cls, type)
            and issubclass(cls, Options)
            and not issubclass(cls, ComponentConfig)
        ):
            lines += _section(f.name, cls)
    for concept, reg in sorted(registries().items()):
        if concept in KEYS:
            lines += _registry(concept, reg)
    return "\n".join(lines).rstrip() + "\n"


def update(path: Path) -> bool:
    """Replace the marked block of ``path`` with :func:`reference`; return whether it changed.

    Raises:
        ValueError: the markers are missing.
    """
    text = path.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{path} has no {BEGIN} ... {END} block")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{reference()}{END}{tail}"
    if new != text:
        path.write_text(new)
    return new != text


def main() -> None:
    """``python -m flowmatch.cli.docs [--write FILE]``."""
    p = argparse.ArgumentParser(description="print or update the configuration reference")
    p.add_argument("--write", type=Path, default=None, help="update the marked block of FILE")
    args = p.parse_args()
    if args.write is None:
        print(reference(), end="")
    else:
        print(f"{args.write}: {'updated' if update(args.write) else 'up to date'}")


if __name__ == "__main__":  # pragma: no cover
    main()
