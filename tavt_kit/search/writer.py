"""``search.json`` as a search writes it: marked ``"status": "running"`` from the start (:func:`mark_running`)
and rewritten with the figures of each stage done (:func:`write_search`), so a search stopped on the way never
leaves a file that reads as its result; finished by :func:`write_result` with the drop configs, ``schedules.json``
and the plots. Every write is checked as the reader checks it and made from the typed values
(:meth:`SearchResult.to_dict`: one schema for writing and reading)."""
from __future__ import annotations

import os
from typing import Optional

from ..files import write_json
from ..machine import brief
from ..models import token_drop_record
from .context import SearchContext
from .evolution import EvolutionSearch, entry_gene
from .outcome import SearchResult
from .result import SEARCH_FORMAT, SEARCH_VERSION, schedules_index, validate_search


#: the index of the per-budget drop configs a search writes beside search.json
SCHEDULES_INDEX = "schedules.json"


def mark_running(ctx: SearchContext) -> None:
    """Before any stage: search.json says this search is running (a search.json left in the folder by an
    earlier search is not this one's result; a search stopped before its end leaves it marked so)."""
    doc = {"format": SEARCH_FORMAT, "version": SEARCH_VERSION, "status": "running",
           "model": _model_info(ctx), "source": ctx.source or {}, "space": ctx.space.to_dict(),
           "settings": _settings(ctx), "budgets": []}
    write_search(ctx, doc)


def write_search(ctx: SearchContext, doc: dict, result: Optional[SearchResult] = None) -> None:
    """``search.json`` checked as the reader checks it (:func:`~.result.validate_search`), so a search never writes
    a file that ``SearchResult.load`` would refuse, and written from the typed values (:meth:`SearchResult.to_dict`:
    one schema for writing and reading; ``result``: the values of ``doc`` already read, whose sections beyond the
    picks and budgets follow ``doc``)."""
    if ctx.rank == 0:
        path = os.path.join(ctx.out_dir, "search.json")
        validate_search(doc, path)
        result = result if result is not None else SearchResult(doc, path)
        write_json(result.to_dict(), path)  # written from the values (search.pick's schema)


def _model_info(ctx: SearchContext) -> dict:
    spec = ctx.model.spec or {}
    return {**{k: spec.get(k) for k in ("backbone", "img_size", "depth", "num_patches", "num_classes")},
            "weights_sha256": ctx.digest, "token_drop": token_drop_record(ctx.model)}


def _settings(ctx: SearchContext) -> dict:
    out = {**ctx.settings.to_dict(), "fitness": ctx.fitness, "subset": ctx.subset,
           "holdout_images": ctx.n_holdout, "test_images": ctx.n_test,
           "batch_size": ctx.batch_size, "world_size": ctx.world,
           "selection_images": ctx.selection.n if ctx.selection is not None else 0}
    if ctx.selection is not None:
        out["selection_sha256"] = ctx.selection.images.digest()
    if ctx.calibration is not None:
        out["calibration_images"] = ctx.calibration_images
        out["front_time_limit"] = ctx.front_time_limit
        out["calibration"] = ctx.calibration
    return out


def header(ctx: SearchContext, search: EvolutionSearch, objective: str, search_seconds: float) -> dict:
    return {
        # "running" until write_result completes the file (a search stopped in a later stage leaves it so)
        "format": SEARCH_FORMAT, "version": SEARCH_VERSION, "status": "running", "objective": objective,
        "model": _model_info(ctx), "source": ctx.source or {}, "space": ctx.space.to_dict(),
        "settings": _settings(ctx),
        "latency": ctx.latency.info if ctx.latency is not None else None,
        "machine": brief(),
        "timing": {"search_seconds": search_seconds, "evaluations": search.evaluations,
                   "candidates": len(search.evaluated),
                   "from_journal": len(search.evaluated) - search.evaluations,
                   "candidates_per_minute": (search.evaluations / search.eval_seconds * 60)
                   if search.eval_seconds else None,
                   "block_runs": ctx.evaluator.stats.block_runs,
                   "block_runs_naive": ctx.evaluator.stats.block_runs_naive},
    }


def write_result(ctx: SearchContext, doc: dict, precision_plot: bool) -> SearchResult:
    """Drop configs, ``schedules.json`` and plots first, then ``search.json``, finished (naming the plots)."""
    result = SearchResult(doc, os.path.join(ctx.out_dir, "search.json"))  # read once: plotted, written, returned
    if ctx.rank == 0:
        for row in doc["budgets"]:
            best = row.get("best")
            if best is None or not row.get("schedule_file"):
                continue
            info = {**doc["model"], "budget": row["label"]}
            if "precision" in best and "best_fp32" in row:
                info["precision"] = best["precision"]
            ctx.schedule(entry_gene(best)).save(os.path.join(ctx.out_dir, row["schedule_file"]), model_info=info)
        write_json(schedules_index(doc, with_precision=len(ctx.precisions) > 1),
                   os.path.join(ctx.out_dir, SCHEDULES_INDEX))
        plots = []
        try:
            from .plot import plot_precision_fronts, plot_search

            plots = plot_search(result, ctx.out_dir)  # what ships ringed: BudgetResult.shipped
            if precision_plot:
                plots.append(plot_precision_fronts(result, ctx.out_dir))
        except ImportError:  # matplotlib is optional for the library
            pass
        if plots:
            doc["plots"] = plots
    doc["status"] = "finished"
    write_search(ctx, doc, result)
    return result
