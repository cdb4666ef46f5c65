"""``fgvc-kit report``: the latency-budget report (Markdown + HTML) from search.json, bench.json and export.json."""
from __future__ import annotations

import os

#: report's options that take a value (an argument after one of them is its value, not the old positional)
_VALUED = ("--search", "--bench", "--export", "--budget", "--time-budget", "--out")


def add_arguments(p) -> None:
    from .common import add_timing_arguments

    p.add_argument("--search", required=True, metavar="FILE", help="search.json from fgvc-kit search")
    p.add_argument("--bench", metavar="FILE", help="bench.json from fgvc-kit bench (latency per schedule)")
    p.add_argument("--export", action="append", default=[], metavar="FILE",
                   help="export.json from fgvc-kit export (repeatable)")
    p.add_argument("--budget", action="append", default=[], metavar="BUDGET",
                   help="also answer this budget (15ms, '25M MACs'; repeatable) from the finished search: the most "
                        "accurate schedule of its Pareto front within it")
    p.add_argument("--no-remeasure", dest="remeasure", action="store_false",
                   help="without --bench, do not measure the chosen schedules here (by default they are, on the "
                        "search's latency target, when its checkpoint is on this machine)")
    add_timing_arguments(p, ("time_budget",))
    p.add_argument("--out", metavar="DIR", help="output folder (default: report/ beside search.json)")


def normalize_argv(argv):
    """The old positional search.json is ``--search FILE`` (said with a deprecation line)."""
    from .common import warn

    argv = list(argv)
    if any(a in ("-h", "--help") or a.split("=")[0] == "--search" for a in argv):
        return argv
    loose, takes_value = [], False
    for i, a in enumerate(argv):
        if takes_value:
            takes_value = False
        elif a.startswith("-") and len(a) > 1:
            takes_value = "=" not in a and any(v.startswith(a) for v in _VALUED) and len(a) > 2
        else:
            loose.append(i)
    if len(loose) != 1:
        return argv  # none (argparse says --search is required) or several (argparse names the extra ones)
    i = loose[0]
    warn(f"a positional search is deprecated; use --search {argv[i]}")
    return argv[:i] + ["--search", argv[i]] + argv[i + 1:]


def output_folder(args):
    """The folder the report is written to (held as its one writer while it runs; see tavt_kit.lock)."""
    return args.out or os.path.join(os.path.dirname(os.path.abspath(args.search)), "report")


def run(args) -> int:
    out = output_folder(args)
    from ..report import build_report

    bench = args.bench
    if bench is None and args.remeasure:
        from ..report.remeasure import remeasure_picks
        from ..search import SearchResult

        bench = remeasure_picks(SearchResult.load(args.search), args.budget, out, args.time_budget)
    paths = build_report(args.search, out, bench, args.export, args.budget)
    print(f"wrote {paths['markdown']} and {paths['html']}")
    return 0
