"""The report as a list of blocks (headings, text, tables, code, links, plots), rendered as Markdown or HTML."""

from __future__ import annotations

import base64
import html
import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Text:
    text: str


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Code:
    text: str
    summary: str  # the HTML shows it folded under this line


@dataclass
class Link:
    text: str
    href: str


@dataclass
class Plot:
    """A drawn figure: saved to ``plots/<name>.png`` and embedded in the HTML."""

    name: str
    caption: str
    png: bytes


Block = Heading | Text | Table | Code | Link | Plot


def render_markdown(blocks: list[Block]) -> str:
    """The blocks as GitHub-flavoured Markdown; plots as links to ``plots/<name>.png``."""
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Text):
            parts.append(block.text)
        elif isinstance(block, Table):
            cells = [block.headers, ["---"] * len(block.headers), *block.rows]
            parts.append(
                "\n".join("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells)
            )
        elif isinstance(block, Code):
            parts.append(
                f"<details><summary>{html.escape(block.summary)}</summary>\n\n```yaml\n{block.text.rstrip()}\n```\n\n</details>"
            )
        elif isinstance(block, Link):
            parts.append(f"[{block.text}]({block.href})")
        elif isinstance(block, Plot):
            parts.append(f"![{block.caption}](plots/{block.name}.png)\n\n*{block.caption}*")
    return "\n\n".join(parts) + "\n"


HTML_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.8em; }
"""


def render_html(blocks: list[Block], *, title: str) -> str:
    """The blocks as one HTML page with every plot inline (``data:image/png;base64``): no external file."""
    body = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Text):
            body.append(_html_text(block.text))
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block.headers)
            rows = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in block.rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(block, Code):
            body.append(
                f"<details><summary>{html.escape(block.summary)}</summary><pre>{html.escape(block.text)}</pre></details>"
            )
        elif isinstance(block, Link):
            body.append(f'<p><a href="{html.escape(block.href)}">{html.escape(block.text)}</a></p>')
        elif isinstance(block, Plot):
            data = base64.b64encode(block.png).decode("ascii")
            body.append(
                f'<figure><img alt="{html.escape(block.caption)}" data-plot="{html.escape(block.name)}" '
                f'src="data:image/png;base64,{data}"><figcaption>{html.escape(block.caption)} '
                f"(file: plots/{html.escape(block.name)}.png)</figcaption></figure>"
            )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{HTML_STYLE}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _html_text(text: str) -> str:
    lines = text.split("\n")
    if all(line.startswith("- ") for line in lines):
        return "<ul>" + "".join(f"<li>{html.escape(line[2:])}</li>" for line in lines) + "</ul>"
    return f"<p>{html.escape(text)}</p>"
