"""``fgvc-kit report``: the latency-budget report (Markdown + HTML) from search.json, bench.json and export.json."""
from __future__ import annotations

import os


def add_arguments(p) -> None:
    p.add_argument("search", metavar="SEARCH_JSON", help="search.json from fgvc-kit search")
    p.add_argument("--bench", metavar="BENCH_JSON", help="bench.json from fgvc-kit bench (latency per schedule)")
    p.add_argument("--export", action="append", default=[], metavar="EXPORT_JSON",
                   help="export.json from fgvc-kit export (repeatable)")
    p.add_argument("--out", help="output folder (default: beside search.json, report/)")


def run(args) -> int:
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.search)), "report")
    from ..report import build_report

    paths = build_report(args.search, out, args.bench, args.export)
    print(f"wrote {paths['markdown']} and {paths['html']}")
    return 0
