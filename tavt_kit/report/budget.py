"""Latency-budget reports (``fgvc-kit report``): what meets which budget, on which device, verified.

From a ``search.json`` (and, when present, ``bench.json`` latency measurements and ``export.json``
verification records) writes ``report.md`` and a self-contained ``report.html`` (plots embedded) with:

* accuracy against MACs and against latency: every candidate, the Pareto
  front, the baselines and the budgets;
* one table per budget: schedule, holdout and test accuracy, MACs, p50/p90
  latency on the named device and backend, speed-up over the full model, the
  exported files and their verified accuracy;
* the machine and library versions the figures come from.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

from ..errors import ConfigError
from ..files import atomic_path
from ..search import SearchResult
from .evidence import ExportSource, PickEvidence
from .html import to_html
from .plots import accuracy_plots
from .ship import ship_section
from .tables import ResultTables, result_sections


def build_report(search_path: str, out_dir: str, bench_path: Optional[str] = None,
                 export_paths: Sequence[str] = (), budgets: Sequence[str] = ()) -> Dict[str, str]:
    """Write ``report.md`` and ``report.html`` (plots embedded) into ``out_dir``; returns their paths.

    ``budgets``: more budgets to answer (``12ms``, ``25M MACs``) from the search's Pareto front.
    A result file without the fields fgvc-kit writes is a one-line :class:`ConfigError`.
    """
    try:
        return _build(search_path, out_dir, bench_path, export_paths, budgets)
    except (KeyError, TypeError, AttributeError, IndexError) as e:
        raise ConfigError(f"{search_path}: malformed search, bench or export record ({type(e).__name__}: {e}); "
                          "expected the files fgvc-kit search, bench and export write") from None


def _build(search_path: str, out_dir: str, bench_path: Optional[str], export_paths: Sequence[str],
           budgets: Sequence[str]) -> Dict[str, str]:
    """Write ``report.md``, ``report.html`` and the PNG plots into ``out_dir``; returns their paths."""
    from ..bench.record import read_bench
    result = SearchResult.load(search_path)
    search = result.doc
    if not result.finished and not (search.get("full") and search.get("budgets") is not None):
        result.check_finished(search_path)  # stopped before its first results: nothing to report
    bench = read_bench(bench_path) if bench_path else None
    sources = [ExportSource.load(p) for p in export_paths]
    os.makedirs(out_dir, exist_ok=True)
    ev = PickEvidence(result, bench, sources)
    ship = ship_section(result, ev, budgets, out_dir)  # a budget nothing meets: first
    plots = accuracy_plots(result, ev, out_dir)
    # the budgets are for the search's target; bench.json's is named too when it measured another one
    target = result.latency_target or (bench or {}).get("target") or {}
    full_lat = ((ev.bench_row(result.full) or {}).get("latency_ms") or {}).get("p50")  # measured, same run
    model = result.model_info
    name = (model.get("backbone") or {}).get("name", "model")
    tables = ResultTables(result, ev, full_lat, out_dir)
    md = _intro(result, model, name, target) + ship
    for p in plots:
        md.append(f"![{p}]({p})")
    md.append("")
    md += result_sections(result, tables)
    md += _machine_section(search, bench, search_path, bench_path, export_paths)
    text = "\n".join(md) + "\n"
    md_path = os.path.join(out_dir, "report.md")
    html_path = os.path.join(out_dir, "report.html")
    html_bytes = to_html(text, out_dir, name).encode("utf-8")
    # both written in full before either replaces its old version: a full disk leaves the earlier pair as it was
    with atomic_path(md_path, needed=len(text.encode("utf-8"))) as tmp_md, \
            atomic_path(html_path, needed=len(html_bytes)) as tmp_html:
        with open(tmp_md, "w", encoding="utf-8") as f:
            f.write(text)
        with open(tmp_html, "wb") as f:
            f.write(html_bytes)
    return {"markdown": md_path, "html": html_path, **{p: os.path.join(out_dir, p) for p in plots}}


def _scorer_text(model: dict) -> str:
    """The scorer the search's drops ranked tokens by (recorded since ``search --scorer``; older searches: none)."""
    scorer = (model.get("token_drop") or {}).get("scorer")
    return f", tokens ranked by the `{scorer}` scorer" if scorer else ""


def _intro(result: SearchResult, model: dict, name: str, target: dict) -> List[str]:
    """The title, what model was searched how, and where its latency comes from."""
    md: List[str] = [f"# Latency-budget report: {name}", ""]
    if not result.finished:
        md += ["> **Unfinished search.** Its search.json is marked "
               f"`{result.status}`: the search stopped (or is still running) before it completed the file, "
               "so the figures below are those of the stages it finished, not its result. Run the same `fgvc-kit "
               "search` again (it resumes from its journal), then this report.", ""]
    settings = result.settings
    md.append(f"Model **{name}** at {model.get('img_size')}, {model.get('depth')} blocks, {model.get('num_patches')} "
              f"patch tokens, {model.get('num_classes')} classes{_scorer_text(model)}. "
              f"Search objective: **{result.doc.get('objective')}**; "
              f"{result.evaluations} candidates; fitness "
              f"**{settings.get('fitness', 'accuracy')}** on {settings['holdout_images']} "
              f"held-out images, test accuracy on {settings['test_images']} test images (reported only). "
              "Accuracies carry their 95 % Wilson interval; a baseline's difference to the searched pick is paired "
              "on the same test images, and called *within noise* when its 95 % interval contains 0.")
    if target:
        threads = target.get("threads")
        how = {"table": " (predicted from a latency table" + (
            ", profiled by the search for this target" if result.latency_profiled_here else "")
            + "; the picks measured on it where the search could)", "measured": " (measured by the search)"}.get(
            result.latency_source, "")
        md.append(f"Latency budgets are for backend **{target.get('backend')}** on **{target.get('device')}**, batch "
                  f"{target.get('batch_size')}, {threads or 'default'} thread{'' if threads == 1 else 's'}{how}; a "
                  "verdict uses a measurement on this runtime and batch only.")
    md.append("")
    return md


def _machine_section(search: dict, bench: Optional[dict], search_path: str, bench_path: Optional[str],
                     export_paths: Sequence[str]) -> List[str]:
    """The machine the figures come from, bench.json's warnings and the files the report was made from."""
    from ..machine import describe

    md = ["## Machine"]
    mach = (bench or {}).get("machine") or search.get("machine") or {}
    md.append(describe(mach) if bench else ", ".join(f"{k} {v}" for k, v in mach.items()))
    if bench and bench.get("warnings"):
        md.append("")
        md.append("Warnings: " + "; ".join(bench["warnings"][:8]))
    md.append("")
    md.append(f"Sources: `{os.path.basename(search_path)}`" + (f", `{os.path.basename(bench_path)}`" if bench_path else "")
              + "".join(f", `{os.path.basename(p)}`" for p in export_paths))
    return md
