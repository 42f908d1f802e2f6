"""``report.html``: report.md as one self-contained page (images inlined as data URIs).

The MLflow artifact preview shows ``.md`` files as source text and cannot resolve relative image links;
it renders ``.html`` files, so this page shows the table and the plots there (and opens from any folder).
Covers the Markdown that ``stages.report`` writes: headings, paragraphs, pipe tables, images, `code`.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

IMAGE = re.compile(r"^!\[(?P<alt>[^\]]*)\]\((?P<src>[^)]+)\)$")
STYLE = ("body{font-family:sans-serif;max-width:60em;margin:1em auto}table{border-collapse:collapse}"
         "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}td:first-child{text-align:left}")


def _inline(text: str) -> str:
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text, quote=False))


def _image(match: re.Match, folder: Path) -> str:
    path = folder / match["src"]
    if not path.is_file():
        return f"<p>[missing image {html.escape(match['src'])}]</p>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<p><img alt="{html.escape(match["alt"])}" src="data:image/png;base64,{data}"></p>'


def _table(lines: list[str]) -> str:
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    head, body = rows[0], rows[2:]  # rows[1] is the |---| separator
    out = ["<table><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in body]
    return "\n".join(out) + "</table>"


def markdown_to_html(text: str, folder: Path) -> str:
    """The page for ``text`` (report.md) whose images lie in ``folder``."""
    parts: list[str] = []
    for block in text.strip().split("\n\n"):
        lines = block.strip().splitlines()
        if not lines:
            continue
        if lines[0].startswith("#"):
            level = len(lines[0]) - len(lines[0].lstrip("#"))
            parts.append(f"<h{level}>{_inline(lines[0][level:].strip())}</h{level}>")
        elif match := IMAGE.match(block.strip()):
            parts.append(_image(match, folder))
        elif all(line.lstrip().startswith("|") for line in lines) and len(lines) >= 2:
            parts.append(_table(lines))
        else:
            parts.append(f"<p>{_inline(' '.join(lines))}</p>")
    body = "\n".join(parts)
    head = f'<!doctype html><html><head><meta charset="utf-8"><style>{STYLE}</style></head>'
    return f"{head}<body>\n{body}\n</body></html>\n"
