"""Plots of a search result: holdout accuracy against MACs (and latency), front, baselines, budgets, and what each
budget ships (ringed; under latency its measured latency apart from the predicted one)."""
from __future__ import annotations

import os
from typing import Dict, List, Tuple

from ..files import save_figure


def mac_unit(macs: float) -> Tuple[float, str]:
    """The scale and unit a model's MACs read best in (GMACs for a ViT-B, MMACs for the demo model)."""
    for scale, unit in ((1e9, "GMACs"), (1e6, "MMACs"), (1e3, "KMACs")):
        if macs >= scale:
            return scale, unit
    return 1.0, "MACs"


def plot_search(result, out_dir: str) -> List[str]:
    """Write ``pareto_macs.png`` (and ``pareto_latency.png`` with a latency objective) of a
    :class:`~.outcome.SearchResult`; returns file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    scale, unit = mac_unit(result.full.macs)
    objective = result.doc.get("objective")
    axes = [("macs", unit, lambda p: p.macs / scale)]
    if objective == "latency":
        axes.append(("latency", "latency (ms)", lambda p: p.latency_ms))
    for key, xlabel, xof in axes:
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
        cands = [c for c in result.candidates if c is not None and xof(c) is not None]
        ax.scatter([xof(c) for c in cands], [100 * c.accuracy for c in cands], s=8, c="#bbbbbb",
                   label=f"candidates ({len(cands)})")
        front = [p for p in result.front if p is not None and xof(p) is not None]
        if front and key == (objective or "macs"):  # the front of the objective it was computed for
            xs, ys = [xof(p) for p in front], [100 * p.holdout_accuracy for p in front]
            ax.step(xs, ys, where="post", c="#1f77b4", lw=1.5)
            ax.scatter(xs, ys, s=16, c="#1f77b4", label="Pareto front (holdout)")
        markers: Dict[str, str] = {"uniform": "s", "evit": "^", "evit 0.7": "v"}
        seen = set()
        rows = [("fixed", result.baselines.get("fixed", {}))] + [(b.label, b.baselines)
                                                                 for b in result.budgets.values()]
        for row_label, row in rows:
            for name, d in row.items():
                if d is None or xof(d) is None or d.holdout_accuracy is None:
                    continue
                text = f"baseline: {name} (fixed ratio)" if row_label == "fixed" else \
                    f"baseline: {name} (fitted to a budget)"
                ax.scatter([xof(d)], [100 * d.holdout_accuracy], marker=markers.get(name, "x"), s=40,
                           c="#d62728", label=None if name in seen else text)
                seen.add(name)
        for i, b in enumerate(result.budgets.values()):
            if b.objective == key:
                limit = b.limit / scale if key == "macs" else b.limit * 1e3
                ax.axvline(limit, ls="--", c="#2ca02c", lw=1)
                if b.best is not None:
                    colour = PICK_COLOURS[i % len(PICK_COLOURS)]
                    ax.scatter([xof(b.best)], [100 * b.best.holdout_accuracy], marker="*", s=160,
                               c=colour, edgecolors="black", linewidths=0.5, zorder=5, label=f"pick @ {b.label}")
        mark_what_ships(ax, result, key, xof)
        name = result.model_info.get("backbone") or {}
        files.append(save_accuracy_plot(fig, ax, xlabel, "holdout top-1 (%)",
                                        f"token-schedule search: {name.get('name', '')}", out_dir, f"pareto_{key}.png"))
    return files


def shipped_points(result, xof) -> List[dict]:
    """What each budget of a :class:`~.outcome.SearchResult` ships, as points to mark: ``label``, ``x`` (its cost
    on the axis ``xof`` reads from a pick: a latency as predicted), ``measured_x`` (its latency measured on the
    target, where it was, else None) and ``y`` (held-out top-1 %); a budget whose deployable has no figure on this
    axis is left out."""
    from .result import describe_family

    out = []
    for i, b in enumerate(result.budgets.values()):
        ship = b.shipped  # the one rule of what a budget ships
        if ship is None:
            continue
        d = ship.pick
        if xof(d) is None or d.holdout_accuracy is None:
            continue
        measured = d.latency_measured_ms if xof(d) == d.latency_ms else None
        out.append({"label": f"ships @ {b.label}: {describe_family(ship.family, d.raw, short=True)}", "x": xof(d),
                    "measured_x": measured, "y": 100 * d.holdout_accuracy,
                    "colour": PICK_COLOURS[i % len(PICK_COLOURS)]})
    return out


def mark_what_ships(ax, result, key: str, xof) -> None:
    """Ring what each budget ships; under latency, its measured latency beside the predicted one, told apart."""
    said = False
    for p in shipped_points(result, xof):
        ax.scatter([p["x"]], [p["y"]], marker="o", s=300, facecolors="none", edgecolors=p["colour"], linewidths=2,
                   zorder=6, label=p["label"])
        if key == "latency" and p["measured_x"] is not None:
            ax.plot([p["x"], p["measured_x"]], [p["y"], p["y"]], c=p["colour"], lw=1, ls=":", zorder=6)
            ax.scatter([p["measured_x"]], [p["y"]], marker="D", s=40, c=p["colour"], edgecolors="black", zorder=7,
                       label=None if said else "measured on the target (dotted: from its prediction)")
            said = True


def save_accuracy_plot(fig, ax, xlabel: str, ylabel: str, title: str, out_dir: str, name: str) -> str:
    """Label, grid and legend an accuracy-vs-cost axes the same way in every plot, save it, return its file name."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    lo, hi = ax.get_ylim()
    if ylabel.endswith("(%)") and hi > 100:  # accuracy ends at 100 %: no axis room above it
        ax.set_ylim(lo, 100.5)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)  # off the data
    fig.tight_layout()
    save_figure(fig, os.path.join(out_dir, name))
    plt.close(fig)
    return name


#: one colour per budget's pick, told apart in every plot
PICK_COLOURS = ("#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")

#: a colour per precision, the same in every precision plot
PRECISION_COLOURS = {"fp32": "#1f77b4", "bf16": "#ff7f0e", "fp16": "#9467bd", "int8": "#2ca02c"}


def plot_precision_fronts(result, out_dir: str) -> str:
    """``precision_fronts.png`` of a :class:`~.outcome.SearchResult`: each precision's candidates and Pareto front
    (held-out accuracy against latency), the latency budgets, each budget's best pair and best fp32-only schedule;
    returns the file name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    groups = {"fp32": (result.candidates, result.front)}
    groups.update({p: (cands, result.precision_fronts[p]) for p, cands in result.precision_candidates.items()})
    for p, (cands, front) in groups.items():
        colour = PRECISION_COLOURS.get(p, "#7f7f7f")
        # an int8 candidate's provisional (fp32) accuracy is not shown: only the ones measured in int8
        pts = [c for c in cands if c is not None and c.latency_ms is not None
               and (c.measured if c.records("measured") else True)]
        ax.scatter([c.latency_ms for c in pts], [100 * c.accuracy for c in pts], s=6, c=colour, alpha=0.25)
        fr = [c for c in front if c is not None and c.latency_ms is not None]
        ax.step([c.latency_ms for c in fr], [100 * c.holdout_accuracy for c in fr], where="post", c=colour, lw=1.5,
                label=f"{p} front")
    for b in result.budgets.values():
        if b.objective != "latency":
            continue
        ax.axvline(b.limit * 1e3, ls="--", c="#555555", lw=1)
        for key, marker, d in (("best", "*", b.best), ("best_fp32", "o", b.best_fp32)):
            if d is not None and d.latency_ms is not None:
                ax.scatter([d.latency_ms], [100 * d.holdout_accuracy], marker=marker, s=140 if marker == "*" else 50,
                           facecolors=PRECISION_COLOURS.get(d.precision), edgecolors="black", zorder=5,
                           label=f"{'pair' if key == 'best' else 'fp32 only'} @ {b.label}: {d.recorded_precision}")
    name = (result.model_info.get("backbone") or {}).get("name", "")
    return save_accuracy_plot(fig, ax, "latency (ms per batch, each precision's table)", "holdout top-1 (%)",
                              f"schedule x precision search: {name}", out_dir, "precision_fronts.png")
