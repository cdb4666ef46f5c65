"""The report's plots: accuracy against MACs and against latency, the budgets and what each picks."""
from __future__ import annotations

from typing import List

from ..search.plot import PICK_COLOURS, mac_unit, mark_what_ships, plot_precision_fronts, save_accuracy_plot
from ..search import SearchResult
from .evidence import PickEvidence


def accuracy_plots(result: SearchResult, ev: PickEvidence, out_dir: str) -> List[str]:
    """Accuracy against MACs, and against latency when the search has latency figures, with what each budget ships
    ringed (:func:`~tavt_kit.search.plot.mark_what_ships`).

    One axis holds one kind of latency: the search's own (predicted from a table, or measured by the
    search), with bench.json's measurements as separate, labelled points. The Pareto front is drawn on
    the axis of the objective it was computed for only.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    full, objective = result.full, result.doc.get("objective")
    scale, unit = mac_unit(full.macs)
    kind = "predicted from the latency table" if result.latency_source == "table" else "measured by the search"
    files = []
    axes = [("macs", f"{unit} per image", lambda p: p.macs / scale)]
    if any(c is not None and c.latency_ms is not None for c in result.candidates):
        axes.append(("latency", f"latency p50 (ms), {kind}", lambda p: p.latency_ms))
    for axis, xlabel, x_of in axes:
        fig, ax = plt.subplots(figsize=(8.6, 4.4), dpi=110)
        cands = [c for c in result.candidates if c is not None and x_of(c) is not None]
        ax.scatter([x_of(c) for c in cands], [100 * c.accuracy for c in cands], s=7, c="#c8c8c8",
                   label=f"candidates ({len(cands)})")
        front = [p for p in result.front if p is not None and x_of(p) is not None]
        if front and axis == objective:
            ax.step([x_of(p) for p in front], [100 * p.holdout_accuracy for p in front], where="post",
                    c="#1f77b4", lw=1.4)
            ax.scatter([x_of(p) for p in front], [100 * p.holdout_accuracy for p in front], s=14, c="#1f77b4",
                       label="Pareto front (holdout)")
            tested = [p for p in front if p.test_accuracy is not None]
            ax.plot([x_of(p) for p in tested], [100 * p.test_accuracy for p in tested], ls=":", c="#9467bd",
                    lw=1.2, label="front, test accuracy")
        seen = set()
        for i, b in enumerate(result.budgets.values()):
            for name, d in b.baselines.items():
                if d is None or x_of(d) is None or d.holdout_accuracy is None:
                    continue
                ax.scatter([x_of(d)], [100 * d.holdout_accuracy], marker={"uniform": "s", "evit": "^"}.get(name, "x"),
                           s=36, c="#d62728", label=None if name in seen else f"baseline fitted to a budget: {name}")
                seen.add(name)
            if b.objective == axis:
                limit = b.limit / scale if axis == "macs" else b.limit * 1e3
                ax.axvline(limit, ls="--", c="#2ca02c", lw=1)
                ax.annotate(f"budget {b.label}", (limit, 1), xycoords=("data", "axes fraction"), rotation=90,
                            va="top", ha="right", fontsize=7, color="#2ca02c")
            best = b.best
            if best is not None and x_of(best) is not None:
                colour = PICK_COLOURS[i % len(PICK_COLOURS)]
                ax.scatter([x_of(best)], [100 * best.holdout_accuracy], marker="*", s=170, c=colour, zorder=5,
                           edgecolors="black", linewidths=0.5, label=f"pick @ {b.label}")
        mark_what_ships(ax, result, axis, x_of)  # ringed: what each budget ships (the pick, or ToMe on your model)
        if full is not None and x_of(full) is not None:
            ax.scatter([x_of(full)], [100 * full.holdout_accuracy], marker="D", s=30, c="black", label="full model")
        if axis == "latency":  # bench.json's measurements: labelled as such, never mixed into the search's figures
            pts = [(r["latency_ms"]["p50"], p) for p in [full] + [b.best for b in result.budgets.values()]
                   if p is not None and (r := ev.bench_row(p)) and (r.get("latency_ms") or {}).get("p50")]
            if pts:
                ax.scatter([x for x, _ in pts], [100 * p.holdout_accuracy for _, p in pts], marker="o",
                           facecolors="none", edgecolors="#ff7f0e", s=60, label="measured by fgvc-kit bench")
        files.append(save_accuracy_plot(fig, ax, xlabel, "top-1 (%)",
                                        f"accuracy vs {'MACs' if axis == 'macs' else 'latency'}", out_dir,
                                        f"accuracy_vs_{axis}.png"))
    if result.precision_candidates:  # a search of (schedule, precision) pairs
        files.append(plot_precision_fronts(result, out_dir))
    return files
