"""The report's Markdown as one self-contained HTML page."""
from __future__ import annotations

import base64
import html
import os


def to_html(markdown: str, out_dir: str, title: str) -> str:
    """The report's Markdown as self-contained HTML (tables, headings, images inlined as data URIs)."""
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
           "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
           "table{border-collapse:collapse;margin:.5em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}"
           "th{background:#f3f3f3}td:nth-child(n+3){text-align:right}img{max-width:100%;margin:4px 0;display:block}"
           "code{background:#f3f3f3;padding:1px 3px}</style></head><body>"]
    lines = markdown.split("\n")
    i = 0

    def inline(s: str) -> str:
        s = html.escape(s)
        while "**" in s:
            s = s.replace("**", "<b>", 1).replace("**", "</b>", 1)
        while s.count("`") >= 2:
            s = s.replace("`", "<code>", 1).replace("`", "</code>", 1)
        return s

    while i < len(lines):
        line = lines[i]
        if line.startswith("# "):
            out.append(f"<h1>{inline(line[2:])}</h1>")
        elif line.startswith("## "):
            out.append(f"<h2>{inline(line[3:])}</h2>")
        elif line.startswith("!["):
            src = line[line.index("(") + 1:line.rindex(")")]
            with open(os.path.join(out_dir, src), "rb") as f:
                data = base64.b64encode(f.read()).decode()
            out.append(f"<img alt='{html.escape(src)}' src='data:image/png;base64,{data}'>")
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append([c.strip() for c in lines[i].strip("|").split("|")])
                i += 1
            out.append("<table><tr>" + "".join(f"<th>{inline(c)}</th>" for c in rows[0]) + "</tr>")
            for r in rows[2:]:
                out.append("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>")
            out.append("</table>")
            continue
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{inline(lines[i][2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
        i += 1
    out.append("</body></html>")
    return "\n".join(out)
