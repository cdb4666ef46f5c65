"""The report's "What to ship": per budget the deployable it ships, its file, its latency against the budget and
its accuracy against your model, with a note for every file and figure it does not use."""
from __future__ import annotations

import os
import shlex
from typing import List, Optional, Sequence, Tuple

from ..bench.ratio import ratio_of_bench_rows
from ..search import BudgetResult, Pick, SearchResult
from ..search.plot import mac_unit
from ..search.result import describe_family
from .advice import export_command, over_budget_advice
from .cells import paired_text, pct, pct_ci, schedule_text, top1_text
from .evidence import PickEvidence
from .versus import versus_section


def ship_section(result: SearchResult, ev: PickEvidence, extra_budgets: Sequence[str], out_dir: str) -> List[str]:
    """Per budget: the file to ship, its latency against the budget (measured or predicted, said which),
    pass or fail with the margin, and its accuracy against the full model's. A file is named only when it stands
    for the pick (:mod:`tavt_kit.report.evidence`); the notes say why each other file of its schedule is not."""
    search, search_path = result.doc, result.path
    budgets = _budgets(result, extra_budgets)
    if not budgets:
        return []
    full, parent = result.full, result.parent
    full_test = full.test_accuracy
    scale, unit = mac_unit(full.macs)
    versus = "vs your model" if parent else "vs the supernet's full schedule"
    table_search = result.latency_source == "table"
    md = ["## What to ship", "",
          f"| budget | ship | latency p50 vs budget | verdict | margin | test top-1 ({versus}) | schedule |",
          "|---|---|---|---|---:|---:|---|"]
    notes = []
    for budget in budgets:
        label = budget.label + (" (from the front)" if budget.picked_from == "front" else "")
        d = budget.best  # none met it: what it recommends on your model may still ship (_shipped)
        if d is None and budget.shipped is None:
            md.append(f"| {label} | nothing in the search space fits | – | **FAIL** | – | – | – |")
            continue
        if d is not None and d.origin:
            notes.append(f"{budget.label}: the pick is the {d.origin} schedule: no searched schedule was fitter on "
                         "the held-out images within this budget")
        d, weights = _shipped(budget, d, notes)
        r, unused = ev.bench(d, weights)
        for why in unused:
            notes.append(f"{budget.label}: bench.json's measurement of this schedule is not used ({why}); the "
                         "latency shown is the search's")
        lat, kind = ((r.get("latency_ms") or {}).get("p50"), "measured") if r and (r.get("latency_ms") or {}).get(
            "p50") is not None else result.latency_of(d)
        predicted = d.latency_ms if table_search else None
        if budget.objective == "latency":
            limit_ms, share = _limit_ms(budget, d, r, ev, result)
            ok = lat is not None and lat <= limit_ms
            paired = ratio_of_bench_rows(r, ev.bench(full)[0]) if budget.fraction and r else None
            if paired is not None:  # judged as the search judges a share: the top of the ratio's interval
                ok = paired.within(budget.fraction)
                share += f"; {paired.ratio:.3f} [{paired.low:.3f}, {paired.high:.3f}] of it"
                if not ok and lat <= limit_ms:
                    notes.append(f"{budget.label}: its median is within the budget, but rotation by rotation it ran "
                                 f"at up to {paired.high:.3f} of your model (95 % interval over {paired.rounds} "
                                 "rotations): measure it again on an idle machine, or ship a lower budget's pick")
            lat_cell = f"{lat:.3g} ms {kind} / {limit_ms:.3g} ms{share}" if lat is not None else "–"
            if kind == "measured" and predicted is not None:
                lat_cell += f" (predicted {predicted:.3g} ms)"
            margin = f"{limit_ms - lat:+.3g} ms" if lat is not None else "–"
            if kind == "predicted":
                notes.append(f"{budget.label}: the latency is predicted from the table; measure it on the search's "
                             f"target before shipping: `fgvc-kit bench --search "
                             f"{shlex.quote(os.path.abspath(search_path))}`, then give its bench.json to the report")
        else:
            ok = d.macs <= budget.limit
            lat_cell = (f"{lat:.3g} ms {kind}; " if lat is not None else "") + \
                f"{d.macs / scale:.4g} / {budget.limit / scale:.4g} {unit}"
            margin = f"{(budget.limit - d.macs) / scale:+.3g} {unit}"
        verdict = "pass" if ok else "**FAIL**"
        if not ok and lat is not None and kind == "measured" and budget.objective == "latency" and lat > limit_ms:
            notes.append(f"{budget.label}: " + over_budget_advice(search, lat, predicted, limit_ms))
        test = d.test_accuracy
        acc = "–" if test is None else pct_ci(d, "test", result.settings.get("test_images") or 0) + " %" + (
            f" ({paired_text(d.vs_parent)})" if parent and d.vs_parent else
            f" ({100 * (test - full_test):+.2f} points)" if full_test is not None and not parent else "")
        ship, exported = _ship_cell(budget, d, ev, out_dir, notes, weights)
        if not exported and ok:  # a pick over its budget is not worth exporting: the advice above says what to do
            notes.append(f"{budget.label}: export it with `{export_command(search, search_path, budget.label)}`")
        md.append(f"| {label} | {ship} | {lat_cell} | {verdict} | {margin} | {acc} | "
                  f"{schedule_text(d)} |")
    md += ["", *_reference_line(parent, full, f"{full.macs / scale:.4g} {unit}")]
    md += [f"- {n}" for n in notes]
    md.append("")
    return md + versus_section(result, scale, unit)


def _budgets(result: SearchResult, extra: Sequence[str]) -> List[BudgetResult]:
    """The search's budgets, then each of ``extra`` it does not hold, answered from its Pareto front."""
    budgets = list(result.budgets.values())
    labels = {b.label.replace(" ", "").lower() for b in budgets}
    for text in extra:
        budget = result.budget(text)
        if budget.label.replace(" ", "").lower() not in labels:
            budgets.append(budget)
    return budgets


def _limit_ms(b: BudgetResult, d: Pick, bench_row: Optional[dict], ev: PickEvidence, result: SearchResult
              ) -> Tuple[float, str]:
    """A latency budget's limit in ms, and for a share of your model's latency what it is a share of: your model
    timed beside the pick (in bench.json's run, or in the search's final round), so that a machine faster or
    slower than when the budget was placed moves both sides alike; the search's prediction where neither was."""
    frac = b.fraction
    if frac is None:
        return b.limit * 1e3, ""
    full_row = ev.bench(result.full)[0] if bench_row is not None else None
    full_p50 = ((full_row or {}).get("latency_ms") or {}).get("p50")
    if full_p50 is not None:
        ref, how = float(full_p50), "measured in the same run"
    elif bench_row is None and d.measured_fraction_of_full and d.latency_measured_ms:
        ref, how = d.latency_measured_ms / d.measured_fraction_of_full, "timed in the search's final round"
    else:
        ref, how = b.limit * 1e3 / frac, "predicted"
    return frac * ref, f" ({b.label} of your model's {ref:.3g} ms, {how})"


def _reference_line(parent: Optional[Pick], full: Pick, macs: str) -> List[str]:
    """What every "vs" of the report is against: your model (and the supernet's full schedule beside it)."""
    full_test = full.test_accuracy
    if parent is not None and parent.searched_weights and parent.test_accuracy is not None:
        return [f"Your model (the checkpoint searched, no supernet: every schedule ran on its own weights): test "
                f"top-1 {100 * parent.test_accuracy:.2f} %, {macs}."]
    if parent is not None and parent.test_accuracy is not None:
        return [f"Your model (the checkpoint distillation started from): test top-1 {100 * parent.test_accuracy:.2f}"
                f" %, {macs}; the supernet's full schedule "
                + (f"{100 * full_test:.2f} % ({paired_text(full.vs_parent)})." if full.vs_parent else "–.")]
    if full_test is not None:
        return [f"Full model: test top-1 {100 * full_test:.2f} %, {macs}. This supernet records no parent (the model "
                "it was distilled from), so nothing is compared with your own model."]
    return []


def _shipped(budget: BudgetResult, d: Optional[Pick], notes: List[str]) -> Tuple[Pick, str]:
    """What a budget ships (:attr:`~tavt_kit.search.BudgetResult.shipped`, the one rule export and bench follow
    too), and whose weights: a deployable of your model (ToMe on it, it as it is, at a precision) or the pick
    fine-tuned toward it, whose figures the search recorded, else the searched pick (the supernet's weights). Its
    row's latency, verdict, accuracy and file are then all of that deployable; a note says what it won against."""
    shipped, label = budget.shipped, budget.label
    if shipped is None or shipped.weights == "supernet":
        return d, "supernet"
    entry = shipped.pick
    if shipped.weights == "finetuned":  # search/finetune.py
        was = f" (the supernet's: {paired_text(d.vs_parent)})" if d is not None and d.vs_parent else ""
        notes.append(f"{label}: ships {describe_family('finetuned', entry.raw)} (`{entry.checkpoint}` in the "
                     f"search's folder): {budget.why}{was}; its latency is the pick's (one graph)")
        return entry, "finetuned"
    subject = entry.with_precision(budget.recommended.precision if budget.recommended is not None else None)
    searched = "" if d is None or d.test_accuracy is None or entry.raw == d.raw else (
        f" (the searched schedule: {pct(d.test_accuracy)} % test top-1"
        + (f", {paired_text(d.vs_parent)}" if d.vs_parent else "") + ")")
    notes.append(f"{label}: ships {describe_family(shipped.family, entry.raw)}: {budget.why or 'the recommendation'}"
                 f"{searched}; every figure in its row is its own")
    return subject, "parent"


def _ship_cell(b: BudgetResult, d: Pick, ev: PickEvidence, out_dir: str, notes: List[str],
               weights: str = "supernet") -> Tuple[str, bool]:
    """The file to ship for a budget's deployable ``d`` (``weights``: the supernet's for a searched pick, the
    parent's for a training-free deployable of your model), and whether any file of it was exported; each file
    of its schedule that is not shipped gets a note saying why."""
    found = ev.exports(d, weights)
    for src, rec, why in found.rejected:
        notes.append(f"{b.label}: `{found.file(src, rec, out_dir)}` is not shipped: {why}")
    if found.chosen:
        src, rec = found.chosen
        also = [f"`{found.file(s, r, out_dir)}` ({r.format})" for s, r in reversed(found.verified[:-1])]
        what = ""
        if weights == "parent":
            fam = (b.recommended.family if b.recommended is not None else None) or "parent"
            what = f"the recommendation, {describe_family(fam, d.raw)}: "
        return (f"`{found.file(src, rec, out_dir)}` ({what}{rec.format}, {rec.precision}, verified top-1 "
                f"{top1_text(rec.top1)} %)" + (f"; also verified: {', '.join(also)}" if also else "")), True
    on_yours = b.on_your_model
    if weights == "supernet" and on_yours is not None:
        # a recommendation on your model whose figures the search did not record: its file, the searched figures
        alt = ev.exports(Pick.from_dict(on_yours.to_dict()), "parent")
        if alt.chosen:
            src, rec = alt.chosen
            free = b.training_free.get(on_yours.family)
            return (f"`{alt.file(src, rec, out_dir)}` (the recommendation, "
                    f"{describe_family(on_yours.family, free.raw if free is not None else {})}: {rec.format}, "
                    f"{rec.precision}, verified top-1 {top1_text(rec.top1)} %; latency and accuracy in this row are "
                    "the searched schedule's)"), True
    if found.rejected:
        return "nothing verified of this pick (see the notes)", True
    return "not exported yet", False
