"""A tiny document model rendered to markdown and to self-contained HTML (figures inlined).

Blocks are plain tuples so a report builder only lists what to say:
    ("h", level, text), ("p", text), ("table", header, rows), ("img", path, caption), ("pre", text)
Output is deterministic: the same blocks give the same bytes.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

Block = tuple[Any, ...]


def to_markdown(blocks: Sequence[Block], relative_to: Path) -> str:
    """Markdown; images are linked relative to `relative_to` (the markdown file's folder)."""
    out: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind == "h":
            out.append("#" * block[1] + " " + block[2])
        elif kind == "p":
            out.append(block[1])
        elif kind == "pre":
            out.append("```\n" + block[1].rstrip("\n") + "\n```")
        elif kind == "table":
            header, rows = block[1], block[2]
            lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
            out.append("\n".join(lines))
        elif kind == "img":
            out.append(f"![{block[2]}]({Path(block[1]).relative_to(relative_to).as_posix()})\n\n*{block[2]}*")
        else:
            raise ValueError(f"unknown block kind {kind!r}")
    return "\n\n".join(out) + "\n"


def to_html(blocks: Sequence[Block], title: str) -> str:
    """One HTML file that opens offline: figures are embedded as base64 PNG."""
    body: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind == "h":
            body.append(f"<h{block[1]}>{html.escape(block[2])}</h{block[1]}>")
        elif kind == "p":
            body.append(f"<p>{_inline(block[1])}</p>")
        elif kind == "pre":
            body.append(f"<pre>{html.escape(block[1])}</pre>")
        elif kind == "table":
            head = "".join(f"<th>{_inline(str(c))}</th>" for c in block[1])
            rows = "".join("<tr>" + "".join(f"<td>{_inline(str(c))}</td>" for c in row) + "</tr>" for row in block[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "img":
            data = base64.b64encode(Path(block[1]).read_bytes()).decode()
            body.append(f'<figure><img alt="{html.escape(block[2])}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{_inline(block[2])}</figcaption></figure>")
        else:
            raise ValueError(f"unknown block kind {kind!r}")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
             "table{border-collapse:collapse;margin:1em 0;font-size:90%}"
             "th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f3f3f3}"
             "td:first-child,th:first-child{text-align:left}img{max-width:100%}"
             "figcaption{font-size:85%;color:#444}code{background:#f3f3f3}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _inline(text: str) -> str:
    """Escape, then render `code` and **bold** spans."""
    out, code, bold = [], False, False
    for i, part in enumerate(html.escape(text).split("`")):
        if i:
            code = not code
        if code:
            out.append(f"<code>{part}</code>")
            continue
        pieces = part.split("**")
        for j, piece in enumerate(pieces):
            if j:
                bold = not bold
                out.append("<b>" if bold else "</b>")
            out.append(piece)
    return "".join(out)
