"""The report's "Against your model and what needs no training": per budget every deployable that competed, with
its paired difference to your model and which one is recommended."""
from __future__ import annotations

from typing import List

from ..search.result import describe_family
from .cells import paired_text


def versus_section(search: dict, scale: float, unit: str) -> List[str]:
    """Per budget: your model, what needs no training on it (ToMe; at each precision searched), the searched
    pick, and the recommendation, each with its test top-1 and paired difference to your model."""

    if not search.get("parent"):
        return []
    md = ["## Against your model and what needs no training", "",
          "| budget | deployable | weights | precision | MACs | test top-1 | vs your model | recommended |",
          "|---|---|---|---|---:|---:|---|---|"]
    for b in search.get("budgets") or []:
        rec = (b.get("recommended") or {}).get("family")
        on_yours = (b.get("best") or {}).get("weights") == "parent"  # a search of your own model, no supernet
        options = [("searched schedule", "your model" if on_yours else "supernet", b.get("best"), "searched")]
        if b.get("finetuned"):  # the pick fine-tuned toward your model (search/finetune.py)
            options.append(("searched schedule, fine-tuned", "fine-tuned", b["finetuned"], "finetuned"))
        for fam, d in (b.get("training_free") or {}).items():
            options.append((describe_family(fam, d, short=True), "your model", d, fam))
        for name, weights, d, fam in options:
            if not d:
                md.append(f"| {b['label']} | {name} | {weights} | – | – | nothing meets it | – | |")
                continue
            test = "–" if d.get("test_accuracy") is None else f"{100 * d['test_accuracy']:.2f} %"
            vs = paired_text(d["vs_parent"]) if d.get("vs_parent") else ("reference" if fam == "parent" else "–")
            md.append(f"| {b['label']} | {name} | {weights} | {d.get('precision', 'fp32')} | "
                      f"{d['macs'] / scale:.4g} {unit} | {test} | {vs} | {'**yes**' if fam == rec else ''} |")
    n_sel = (search.get("settings") or {}).get("selection_images") or 0
    md += ["", (f"The recommendation is chosen on {n_sel} held-out images the evolution never scored" if n_sel else
                "The recommendation is chosen on the held-out images the evolution chose on (favouring its pick)")
           + "; the test split only reports; a training-free deployable runs on your model's own weights."]
    over = sum(len(b.get("timed_over_budget") or []) for b in search.get("budgets") or [])
    fit = search.get("training_free_fit") or {}
    where = " beside your model" if "shares" in fit else ""
    md += ([f"ToMe's r was fitted to each latency budget by timing it on the target{where} (`training_free_fit`)."]
           if fit else []) + ([
        f"{over} searched candidate(s) predicted within a budget but timed over it were passed over."] if over else [])
    md.append("")
    return md
