"""The results tables as data: headings, paragraphs and tables, rendered as markdown (results.md) and as HTML (the
report) from the same blocks, so neither is parsed back from the other (a `|` in a cell is markdown's escape, not
two HTML cells)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Heading:
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str
    strong: str = ""  # a lead-in set in bold


@dataclass(frozen=True)
class Table:
    header: Sequence[str]
    rows: Sequence[Sequence[str]]


Block = Heading | Paragraph | Table


def to_markdown(blocks: Sequence[Block]) -> str:
    """Each block then a blank line; the file ends with one newline."""
    return "\n\n".join(_markdown(b) for b in blocks) + "\n"


def _markdown(block: Block) -> str:
    if isinstance(block, Heading):
        return f"### {block.text}"
    if isinstance(block, Paragraph):
        return f"**{block.strong}** {block.text}" if block.strong else block.text
    lines = [_markdown_row(block.header), "|---" * len(block.header) + "|"]
    return "\n".join([*lines, *(_markdown_row(row) for row in block.rows)])


def _markdown_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def to_html(blocks: Sequence[Block]) -> str:
    return "\n".join(_html(b) for b in blocks)


def _html(block: Block) -> str:
    if isinstance(block, Heading):
        return f"<h3>{html.escape(block.text)}</h3>"
    if isinstance(block, Paragraph):
        strong = f"<strong>{html.escape(block.strong)}</strong> " if block.strong else ""
        return f"<p>{strong}{html.escape(block.text)}</p>"
    head = "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in block.header) + "</tr>"
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in block.rows)
    return f"<table>{head}{body}</table>"
