"""The report's "Against your model and what needs no training": per budget every deployable that competed, with
its paired difference to your model and which one is recommended."""
from __future__ import annotations

from typing import List, Optional, Tuple

from ..search import BudgetResult, Pick, SearchResult
from ..search.result import describe_family
from .cells import paired_text


def versus_section(result: SearchResult, scale: float, unit: str) -> List[str]:
    """Per budget: your model, what needs no training on it (ToMe; at each precision searched), the searched
    pick, and the recommendation, each with its test top-1 and paired difference to your model."""
    if result.parent is None:
        return []
    md = ["## Against your model and what needs no training", "",
          "| budget | deployable | weights | precision | MACs | test top-1 | vs your model | recommended |",
          "|---|---|---|---|---:|---:|---|---|"]
    for budget in result.budgets.values():
        rec = budget.recommended.family if budget.recommended is not None else None
        for name, weights, p, fam in _options(budget):
            if p is None:
                md.append(f"| {budget.label} | {name} | {weights} | – | – | nothing meets it | – | |")
                continue
            test = "–" if p.test_accuracy is None else f"{100 * p.test_accuracy:.2f} %"
            vs = paired_text(p.vs_parent) if p.vs_parent else ("reference" if fam == "parent" else "–")
            md.append(f"| {budget.label} | {name} | {weights} | {p.precision} | {p.macs / scale:.4g} {unit} | "
                      f"{test} | {vs} | {'**yes**' if fam == rec else ''} |")
    n_sel = result.settings.get("selection_images") or 0
    md += ["", (f"The recommendation is chosen on {n_sel} held-out images the evolution never scored" if n_sel else
                "The recommendation is chosen on the held-out images the evolution chose on (favouring its pick)")
           + "; the test split only reports; a training-free deployable runs on your model's own weights."]
    over = sum(len(b.timed_over_budget) for b in result.budgets.values())
    fit = result.training_free_fit
    where = " beside your model" if "shares" in fit else ""
    md += ([f"ToMe's r was fitted to each latency budget by timing it on the target{where} (`training_free_fit`)."]
           if fit else []) + ([
        f"{over} searched candidate(s) predicted within a budget but timed over it were passed over."] if over else [])
    md.append("")
    return md


def _options(budget: BudgetResult) -> List[Tuple[str, str, Optional[Pick], str]]:
    """``(name, weights, pick or None, family)`` of every option of a budget: the searched pick (on the supernet,
    or on your model in a search of it), its fine-tune toward your model, what needs no training on your model."""
    searched = budget.options.get("searched")
    on_yours = searched is not None and searched.weights == "parent"  # a search of your own model, no supernet
    out = [("searched schedule", "your model" if on_yours else "supernet", budget.best, "searched")]
    finetuned = budget.options.get("finetuned")  # the pick fine-tuned toward your model (search/finetune.py)
    if finetuned is not None:
        out.append(("searched schedule, fine-tuned", "fine-tuned", finetuned.pick, "finetuned"))
    for fam, p in budget.training_free.items():
        out.append((describe_family(fam, p.raw if p else None, short=True), "your model", p, fam))
    return out
