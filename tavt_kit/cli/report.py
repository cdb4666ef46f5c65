"""``fgvc-kit report``: the latency-budget report (Markdown + HTML) from search.json, bench.json and export.json."""
from __future__ import annotations

import argparse
import os


def add_arguments(p) -> None:
    p.add_argument("--search", metavar="SEARCH_JSON", help="search.json from fgvc-kit search (required)")
    p.add_argument("search_positional", nargs="?", help=argparse.SUPPRESS)
    p.add_argument("--bench", metavar="BENCH_JSON", help="bench.json from fgvc-kit bench (latency per schedule)")
    p.add_argument("--export", action="append", default=[], metavar="EXPORT_JSON",
                   help="export.json from fgvc-kit export (repeatable)")
    p.add_argument("--budget", action="append", default=[], metavar="BUDGET",
                   help="also answer this budget (15ms, '25M MACs'; repeatable): the most accurate schedule of the "
                        "search's Pareto front within it")
    p.add_argument("--no-remeasure", dest="remeasure", action="store_false",
                   help="without --bench, do not measure the chosen schedules here (by default they are, on the "
                        "search's latency target, when its checkpoint is on this machine)")
    p.add_argument("--time-budget", type=float, default=1.0, metavar="SECONDS",
                   help="seconds of timing per schedule when measuring here (default 1)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: report/ beside search.json)")


def output_folder(args):
    """The folder the report is written to (held as its one writer while it runs; see tavt_kit.lock); None
    without a search.json (run says what is missing)."""
    search = args.search or args.search_positional
    if not search:
        return None
    return args.out or os.path.join(os.path.dirname(os.path.abspath(search)), "report")


def run(args) -> int:
    from ..errors import ConfigError
    from .common import positional_deprecated

    if positional_deprecated(args, "search", "--search") is None:
        raise ConfigError("--search: give the search.json to report on (fgvc-kit report --search runs/search/search.json)")
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.search)), "report")
    from ..report import build_report

    bench = args.bench
    if bench is None and args.remeasure:
        import json

        from ..report.remeasure import remeasure_picks

        try:
            with open(args.search, encoding="utf-8") as f:
                search = json.load(f)
        except (OSError, ValueError):
            search = None  # build_report says what is wrong with the file
        if isinstance(search, dict):
            bench = remeasure_picks(search, args.search, args.budget, out, args.time_budget)
    paths = build_report(args.search, out, bench, args.export, args.budget)
    print(f"wrote {paths['markdown']} and {paths['html']}")
    return 0
