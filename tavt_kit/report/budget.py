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
import shlex
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..errors import ConfigError
from ..files import atomic_path
from .evidence import ExportEvidence, ExportSource, bench_evidence, export_evidence, wanted
from ..search.plot import mac_unit, save_accuracy_plot
from ..bench.ratio import ratio_of_bench_rows
from .advice import export_command, over_budget_advice
from .html import to_html
from ..stats import wilson_interval
from ..search.deployable import parent_entry
from ..search import SearchResult
from ..search.result import front_latency_ms


class _Evidence:
    """What the report may name for a pick: the bench.json row that measured it and the exported file that stands
    for it, each checked (:mod:`tavt_kit.report.evidence`), with the reasons for what it does not name."""

    def __init__(self, search: dict, bench: Optional[dict], sources: Sequence[ExportSource]) -> None:
        self.search, self.bench_doc, self.sources = search, bench, list(sources)
        self.full_counts = tuple(int(c) for c in search["full"]["counts"])
        self._cache: Dict[tuple, Any] = {}

    def _memo(self, key: tuple, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def bench(self, d: Optional[dict], weights: str = "supernet") -> Tuple[Optional[dict], List[str]]:
        """The bench.json row of a pick (None: none measured it) and why rows of its counts were not used.
        A deployable of your model (``weights="parent"``) may take a row timed on the supernet's weights: the
        same architecture at the same schedule and precision runs the same operations, so its latency is the
        same (``bench --search`` times it so)."""
        if not d or not self.bench_doc:
            return None, []
        want = wanted(d, self.search, weights)
        if weights in ("parent", "finetuned"):  # a fine-tuned pick too: the pick's graph, other weights
            want = want.also_timed_as((self.search.get("model") or {}).get("weights_sha256"))
        return self._memo(("bench", id(d), weights), lambda: bench_evidence(self.bench_doc, want, self.full_counts))

    def bench_row(self, d: Optional[dict]) -> Optional[dict]:
        return self.bench(d)[0]

    def exports(self, d: dict, weights: str = "supernet") -> ExportEvidence:
        """The exported file to ship for a pick, and why the other files of its counts are not shipped."""
        return self._memo(("export", id(d), weights),
                          lambda: export_evidence(self.sources, wanted(d, self.search, weights)))


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def _pct_ci(d: dict, split: str, n: int) -> str:
    """An accuracy with its 95 % interval: ``93.10 [92.18, 93.93]``."""
    acc = d.get(f"{split}_accuracy")
    if acc is None:
        return "–"
    ci = d.get(f"{split}_interval") or (list(wilson_interval(int(round(acc * n)), n)) if n else None)
    return _pct(acc) + ("" if not ci else " [{:.2f}, {:.2f}]".format(100 * ci[0], 100 * ci[1]))


def _versus(d: Optional[dict]) -> str:
    """The searched pick minus this baseline on the same test images, with the paired 95 % interval."""
    vs = (d or {}).get("vs_searched")
    if not vs:
        return "–"
    lo, hi = vs["interval"]
    return f"{100 * vs['difference']:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]" + (
        "" if vs["resolved"] else " (within noise)")


def schedule_text(d: dict) -> str:
    """Counts per block, ``m`` after a block that merges its tokens (ToMe) instead of dropping them."""
    reducers = d.get("reducers") or [None] * len(d["counts"])
    text = ",".join(f"{c}{'m' if r == 'merge' else ''}" for c, r in zip(d["counts"], reducers))
    return text + (f" @ {d['precision']}" if d.get("precision") else "")


def _ms(x) -> str:
    return "–" if x is None else f"{x:.2f}"


def _plots(search: dict, ev: _Evidence, out_dir: str) -> List[str]:
    """Accuracy against MACs, and against latency when the search has latency figures.

    One axis holds one kind of latency: the search's own (predicted from a table, or measured by the
    search), with bench.json's measurements as separate, labelled points. The Pareto front is drawn on
    the axis of the objective it was computed for only.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale, unit = mac_unit(search["full"]["macs"])
    kind = "predicted from the latency table" if (search.get("latency") or {}).get("source") == "table" \
        else "measured by the search"
    files = []
    axes = [("macs", f"{unit} per image", lambda d: d["macs"] / scale)]
    if any(d.get("latency_ms") is not None for d in search.get("candidates", [])):
        axes.append(("latency", f"latency p50 (ms), {kind}", lambda d: d.get("latency_ms")))
    for axis, xlabel, x_of in axes:
        fig, ax = plt.subplots(figsize=(8.6, 4.4), dpi=110)
        cands = [c for c in search.get("candidates", []) if x_of(c) is not None]
        ax.scatter([x_of(c) for c in cands], [100 * c["accuracy"] for c in cands], s=7, c="#c8c8c8",
                   label=f"candidates ({len(cands)})")
        front = [p for p in search.get("pareto_front", []) if x_of(p) is not None]
        if front and axis == search.get("objective"):
            ax.step([x_of(p) for p in front], [100 * p["holdout_accuracy"] for p in front], where="post",
                    c="#1f77b4", lw=1.4)
            ax.scatter([x_of(p) for p in front], [100 * p["holdout_accuracy"] for p in front], s=14, c="#1f77b4",
                       label="Pareto front (holdout)")
            tested = [p for p in front if p.get("test_accuracy") is not None]
            ax.plot([x_of(p) for p in tested], [100 * p["test_accuracy"] for p in tested], ls=":", c="#9467bd",
                    lw=1.2, label="front, test accuracy")
        seen = set()
        for b in search.get("budgets", []):
            for name, d in (b.get("baselines") or {}).items():
                if x_of(d) is None or d.get("holdout_accuracy") is None:
                    continue
                ax.scatter([x_of(d)], [100 * d["holdout_accuracy"]], marker={"uniform": "s", "evit": "^"}.get(name, "x"),
                           s=36, c="#d62728", label=None if name in seen else f"baseline fitted to a budget: {name}")
                seen.add(name)
            if b["objective"] == axis:
                limit = b["limit"] / scale if axis == "macs" else b["limit"] * 1e3
                ax.axvline(limit, ls="--", c="#2ca02c", lw=1)
                ax.annotate(f"budget {b['label']}", (limit, 1), xycoords=("data", "axes fraction"), rotation=90,
                            va="top", ha="right", fontsize=7, color="#2ca02c")
            best = b.get("best")
            if best and x_of(best) is not None:
                from ..search.plot import PICK_COLOURS

                colour = PICK_COLOURS[search["budgets"].index(b) % len(PICK_COLOURS)]
                ax.scatter([x_of(best)], [100 * best["holdout_accuracy"]], marker="*", s=170, c=colour, zorder=5,
                           edgecolors="black", linewidths=0.5, label=f"pick @ {b['label']}")
        full = search.get("full")
        if full and x_of(full) is not None:
            ax.scatter([x_of(full)], [100 * full["holdout_accuracy"]], marker="D", s=30, c="black", label="full model")
        if axis == "latency":  # bench.json's measurements: labelled as such, never mixed into the search's figures
            pts = [(r["latency_ms"]["p50"], d) for d in [search.get("full")] + [b.get("best") for b in
                                                                                    search.get("budgets", [])]
                   if d and (r := ev.bench_row(d)) and (r.get("latency_ms") or {}).get("p50")]
            if pts:
                ax.scatter([p for p, _ in pts], [100 * d["holdout_accuracy"] for _, d in pts], marker="o",
                           facecolors="none", edgecolors="#ff7f0e", s=60, label="measured by fgvc-kit bench")
        files.append(save_accuracy_plot(fig, ax, xlabel, "top-1 (%)",
                                        f"accuracy vs {'MACs' if axis == 'macs' else 'latency'}", out_dir,
                                        f"accuracy_vs_{axis}.png"))
    if (search.get("precisions") or {}).get("candidates"):  # a search of (schedule, precision) pairs
        from ..search.plot import plot_precision_fronts

        files.append(plot_precision_fronts(search, out_dir))
    return files


def _ship_section(result: SearchResult, ev: _Evidence, extra_budgets: Sequence[str], out_dir: str) -> List[str]:
    """Per budget: the file to ship, its latency against the budget (measured or predicted, said which),
    pass or fail with the margin, and its accuracy against the full model's. A file is named only when it stands
    for the pick (:mod:`tavt_kit.report.evidence`); the notes say why each other file of its schedule is not."""
    search, search_path = result.doc, result.path
    rows = list(search.get("budgets") or [])
    labels = {str(r.get("label")).replace(" ", "").lower() for r in rows}
    for text in extra_budgets:  # any budget: answered from the search's Pareto front
        row = result.budget(text).entry
        if str(row["label"]).replace(" ", "").lower() not in labels:
            rows.append(row)
    if not rows:
        return []
    full = search["full"]
    full_test = full.get("test_accuracy")
    scale, unit = mac_unit(full["macs"])
    parent = search.get("parent")
    versus = "vs your model" if parent else "vs the supernet's full schedule"
    table_search = (search.get("latency") or {}).get("source") == "table"
    md = ["## What to ship", "",
          f"| budget | ship | latency p50 vs budget | verdict | margin | test top-1 ({versus}) | schedule |",
          "|---|---|---|---|---:|---:|---|"]
    notes = []
    for b in rows:
        label = b["label"] + (" (from the front)" if b.get("source") == "front" else "")
        d = b.get("best") or {}  # none met it: what it recommends on your model may still ship (_shipped)
        if not d and not parent_entry(b):
            md.append(f"| {label} | nothing in the search space fits | – | **FAIL** | – | – | – |")
            continue
        if d.get("origin"):
            notes.append(f"{b['label']}: the pick is the {d['origin']} schedule: no searched schedule was fitter on "
                         "the held-out images within this budget")
        d, weights = _shipped(b, d, search, notes)
        r, unused = ev.bench(d, weights)
        for why in unused:
            notes.append(f"{b['label']}: bench.json's measurement of this schedule is not used ({why}); the "
                         "latency shown is the search's")
        lat, kind = ((r.get("latency_ms") or {}).get("p50"), "measured") if r and (r.get("latency_ms") or {}).get(
            "p50") is not None else front_latency_ms(d, search)
        predicted = d.get("latency_ms") if table_search else None
        if b["objective"] == "latency":
            limit_ms, share = _limit_ms(b, d, r, ev, search)
            ok = lat is not None and lat <= limit_ms
            paired = ratio_of_bench_rows(r, ev.bench(search["full"])[0]) if b.get("fraction") and r else None
            if paired is not None:  # judged as the search judges a share: the top of the ratio's interval
                ok = paired.within(b["fraction"])
                share += f"; {paired.ratio:.3f} [{paired.low:.3f}, {paired.high:.3f}] of it"
                if not ok and lat <= limit_ms:
                    notes.append(f"{b['label']}: its median is within the budget, but rotation by rotation it ran "
                                 f"at up to {paired.high:.3f} of your model (95 % interval over {paired.rounds} "
                                 "rotations): measure it again on an idle machine, or ship a lower budget's pick")
            lat_cell = f"{lat:.3g} ms {kind} / {limit_ms:.3g} ms{share}" if lat is not None else "–"
            if kind == "measured" and predicted is not None:
                lat_cell += f" (predicted {predicted:.3g} ms)"
            margin = f"{limit_ms - lat:+.3g} ms" if lat is not None else "–"
            if kind == "predicted":
                notes.append(f"{b['label']}: the latency is predicted from the table; measure it on the search's "
                             f"target before shipping: `fgvc-kit bench --search "
                             f"{shlex.quote(os.path.abspath(search_path))}`, then give its bench.json to the report")
        else:
            ok = d["macs"] <= b["limit"]
            lat_cell = (f"{lat:.3g} ms {kind}; " if lat is not None else "") + \
                f"{d['macs'] / scale:.4g} / {b['limit'] / scale:.4g} {unit}"
            margin = f"{(b['limit'] - d['macs']) / scale:+.3g} {unit}"
        verdict = "pass" if ok else "**FAIL**"
        if not ok and lat is not None and kind == "measured" and b["objective"] == "latency" and lat > limit_ms:
            notes.append(f"{b['label']}: " + over_budget_advice(search, lat, predicted, limit_ms))
        test = d.get("test_accuracy")
        acc = "–" if test is None else _pct_ci(d, "test", search["settings"].get("test_images") or 0) + " %" + (
            f" ({_paired(d['vs_parent'])})" if parent and d.get("vs_parent") else
            f" ({100 * (test - full_test):+.2f} points)" if full_test is not None and not parent else "")
        ship, exported = _ship_cell(b, d, ev, search, out_dir, notes, weights)
        if not exported and ok:  # a pick over its budget is not worth exporting: the advice above says what to do
            notes.append(f"{b['label']}: export it with `{export_command(search, search_path, b['label'])}`")
        md.append(f"| {label} | {ship} | {lat_cell} | {verdict} | {margin} | {acc} | "
                  f"{schedule_text(d)} |")
    md += ["", *_reference_line(parent, full, f"{full['macs'] / scale:.4g} {unit}")]
    md += [f"- {n}" for n in notes]
    md.append("")
    return md + _reference_section(search, scale, unit)


def _limit_ms(b: dict, d: dict, bench_row: Optional[dict], ev: _Evidence, search: dict) -> Tuple[float, str]:
    """A latency budget's limit in ms, and for a share of your model's latency what it is a share of: your model
    timed beside the pick (in bench.json's run, or in the search's final round), so that a machine faster or
    slower than when the budget was placed moves both sides alike; the search's prediction where neither was."""
    frac = b.get("fraction")
    if frac is None:
        return b["limit"] * 1e3, ""
    full_row = ev.bench(search["full"])[0] if bench_row is not None else None
    full_p50 = ((full_row or {}).get("latency_ms") or {}).get("p50")
    if full_p50 is not None:
        ref, how = float(full_p50), "measured in the same run"
    elif bench_row is None and d.get("measured_fraction_of_full") and d.get("latency_measured_ms"):
        ref, how = d["latency_measured_ms"] / d["measured_fraction_of_full"], "timed in the search's final round"
    else:
        ref, how = b["limit"] * 1e3 / frac, "predicted"
    return frac * ref, f" ({b['label']} of your model's {ref:.3g} ms, {how})"


def _reference_line(parent: Optional[dict], full: dict, macs: str) -> List[str]:
    """What every "vs" of the report is against: your model (and the supernet's full schedule beside it)."""
    full_test = full.get("test_accuracy")
    if parent and parent.get("searched_weights") and parent.get("test_accuracy") is not None:
        return [f"Your model (the checkpoint searched, no supernet: every schedule ran on its own weights): test "
                f"top-1 {100 * parent['test_accuracy']:.2f} %, {macs}."]
    if parent and parent.get("test_accuracy") is not None:
        return [f"Your model (the checkpoint distillation started from): test top-1 {100 * parent['test_accuracy']:.2f}"
                f" %, {macs}; the supernet's full schedule "
                + (f"{100 * full_test:.2f} % ({_paired(full['vs_parent'])})." if full.get("vs_parent") else "–.")]
    if full_test is not None:
        return [f"Full model: test top-1 {100 * full_test:.2f} %, {macs}. This supernet records no parent (the model "
                "it was distilled from), so nothing is compared with your own model."]
    return []


def _shipped(b: dict, d: dict, search: dict, notes: List[str]) -> Tuple[dict, str]:
    """What a budget ships, and whose weights: its recommendation when that is a training-free deployable of your
    model (the parent's weights: ToMe on it, or it as it is, at a precision) whose figures the search recorded,
    else the searched pick (the supernet's weights). Its row's latency, verdict, accuracy and file are then all of
    that deployable; a note says what it won against."""
    from ..search.deployable import parent_recommendation
    from ..search.result import describe_family, family_entry

    rec_d = parent_recommendation(b) or {}
    fam = rec_d.get("family")
    entry = family_entry(b, fam)  # "searched": a search of your own model, its pick on your model's weights
    if (b.get("recommended") or {}).get("weights") == "finetuned" and b.get("finetuned"):  # search/finetune.py
        ft, was = b["finetuned"], f" (the supernet's: {_paired(d['vs_parent'])})" if d.get("vs_parent") else ""
        notes.append(f"{b['label']}: ships {describe_family('finetuned', ft)} (`{ft.get('checkpoint')}` in the "
                     f"search's folder): {b['recommended'].get('why')}{was}; its latency is the pick's (one graph)")
        return dict(ft), "finetuned"
    if not entry or not entry.get("counts"):
        return d, "supernet"
    subject = dict(entry)
    subject.setdefault("precision", rec_d.get("precision"))
    searched = "" if d.get("test_accuracy") is None or entry is d else (
        f" (the searched schedule: {_pct(d['test_accuracy'])} % test top-1"
        + (f", {_paired(d['vs_parent'])}" if d.get("vs_parent") else "") + ")")
    notes.append(f"{b['label']}: ships {describe_family(fam, entry)}: {rec_d.get('why') or 'the recommendation'}"
                 f"{searched}; every figure in its row is its own")
    return subject, "parent"


def _ship_cell(b: dict, d: dict, ev: _Evidence, search: dict, out_dir: str, notes: List[str],
               weights: str = "supernet") -> Tuple[str, bool]:
    """The file to ship for a budget's deployable ``d`` (``weights``: the supernet's for a searched pick, the
    parent's for a training-free deployable of your model), and whether any file of it was exported; each file
    of its schedule that is not shipped gets a note saying why."""
    found = ev.exports(d, weights)
    for src, rec, why in found.rejected:
        notes.append(f"{b['label']}: `{found.file(src, rec, out_dir)}` is not shipped: {why}")
    if found.chosen:
        src, rec = found.chosen
        also = [f"`{found.file(s, r, out_dir)}` ({r.format})" for s, r in reversed(found.verified[:-1])]
        what = ""
        if weights == "parent":
            from ..search.result import describe_family

            fam = (b.get("recommended") or {}).get("family") or "parent"
            what = f"the recommendation, {describe_family(fam, d)}: "
        return (f"`{found.file(src, rec, out_dir)}` ({what}{rec.format}, {rec.precision}, verified top-1 "
                f"{_top1(rec.top1)} %)" + (f"; also verified: {', '.join(also)}" if also else "")), True
    from ..search.deployable import parent_recommendation

    rec_d = parent_recommendation(b)
    if weights == "supernet" and rec_d is not None:
        # a recommendation on your model whose figures the search did not record: its file, the searched figures
        from ..search.result import describe_family

        alt = ev.exports(rec_d, "parent")
        if alt.chosen:
            src, rec = alt.chosen
            free = (b.get("training_free") or {}).get(rec_d.get("family")) or {}
            return (f"`{alt.file(src, rec, out_dir)}` (the recommendation, "
                    f"{describe_family(rec_d['family'], free)}: {rec.format}, {rec.precision}, verified top-1 "
                    f"{_top1(rec.top1)} %; latency and accuracy in this row are the searched schedule's)"), True
    if found.rejected:
        return "nothing verified of this pick (see the notes)", True
    return "not exported yet", False


def _top1(x) -> str:
    """A top-1 recorded in % (export.json), as the report prints it."""
    return "–" if x is None else f"{x:.2f}"


def _paired(v: dict) -> str:
    """``-0.93 [-1.75, -0.12] points`` (``, within noise`` when the interval holds 0)."""
    return "{:+.2f} [{:+.2f}, {:+.2f}] points{}".format(100 * v["difference"], *(100 * x for x in v["interval"]),
                                                       "" if v.get("resolved") else ", within noise")


def _reference_section(search: dict, scale: float, unit: str) -> List[str]:
    """Per budget: your model, what needs no training on it (ToMe; at each precision searched), the searched
    pick, and the recommendation, each with its test top-1 and paired difference to your model."""
    from ..search.result import describe_family

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
            vs = _paired(d["vs_parent"]) if d.get("vs_parent") else ("reference" if fam == "parent" else "–")
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
    ev = _Evidence(search, bench, sources)
    ship = _ship_section(result, ev, budgets, out_dir)  # a budget nothing meets: first
    plots = _plots(search, ev, out_dir)
    # the budgets are for the search's target; bench.json's is named too when it measured another one
    target = (search.get("latency") or {}).get("target") or (bench or {}).get("target") or {}
    full_lat = ((ev.bench_row(search["full"]) or {}).get("latency_ms") or {}).get("p50")  # measured, same run
    model = search.get("model") or {}
    name = (model.get("backbone") or {}).get("name", "model")
    tables = _ResultTables(search, ev, full_lat, out_dir)
    md = _intro(search, model, name, target) + ship
    for p in plots:
        md.append(f"![{p}]({p})")
    md.append("")
    md += _result_sections(search, tables)
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


class _ResultTables:
    """The report's result tables: a row per pick with its accuracy, MACs, latency and exported files."""

    def __init__(self, search: dict, ev: _Evidence, full_lat: Optional[float], out_dir: str) -> None:
        self.ev, self.full_lat, self.out_dir = ev, full_lat, out_dir
        self.full_pred = search["full"].get("latency_measured_ms", search["full"].get("latency_ms"))
        self.mscale, munit = mac_unit(search["full"]["macs"])
        self.head = ["", "schedule (patch tokens per block; m = merged)", "holdout top-1 [95 %]", "test top-1 [95 %]",
                     "searched minus this, test [paired 95 %]", munit, "MAC reduction", "p50 ms", "p90 ms",
                     "speed-up", "exported"]
        self.n_hold = search["settings"].get("holdout_images") or 0
        self.n_test = search["settings"].get("test_images") or 0
        self.full_macs = search["full"]["macs"]

    def lat_cols(self, d) -> List[str]:
        """Measured latency (bench.json) when there is one, else the search's figure marked as such."""
        r = self.ev.bench_row(d)
        if r is not None and self.full_lat is not None:
            lat = r.get("latency_ms") or {}
            p50, p90 = lat.get("p50"), lat.get("p90")
            return [_ms(p50), _ms(p90), f"{self.full_lat / p50:.2f}x" if p50 else "–"]
        p50 = d.get("latency_measured_ms", d.get("latency_ms"))
        if p50 is None:
            return ["–", "–", "–"]
        tag = "" if "latency_measured_ms" in d else " (pred.)"
        return [_ms(p50) + tag, "–", f"{self.full_pred / p50:.2f}x{tag}" if self.full_pred else "–"]

    def export_col(self, d) -> str:
        """The exported file that stands for a pick (verified, with its precision and top-1), and every other file
        of its schedule with why it does not."""
        found = self.ev.exports(d)
        parts = [f"{rec.format} {rec.path} ({rec.precision}, top-1 {_top1(rec.top1)}, verified)"
                 for _, rec in reversed(found.verified)]  # the one shipped first
        parts += [f"{rec.format} {rec.path} (not shipped: {why})" for _, rec, why in found.rejected]
        return "; ".join(parts) or "–"

    def row(self, label, d) -> str:
        """One pick's row (``d`` None: a budget nothing in the search space meets)."""
        if d is None:
            return "| " + " | ".join([label, "nothing in the search space meets this budget"] + ["–"] * 9) + " |"
        cells = [label, schedule_text(d), _pct_ci(d, "holdout", self.n_hold), _pct_ci(d, "test", self.n_test),
                 _versus(d), f"{d['macs'] / self.mscale:.4g}", f"{self.full_macs / d['macs']:.2f}x"] + \
            self.lat_cols(d) + [self.export_col(d)]
        return "| " + " | ".join(cells) + " |"

    def table(self, rows) -> List[str]:
        """Rows under the table's header."""
        return ["| " + " | ".join(self.head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * 8 + ["---"]) + "|"] + rows


def _scorer_text(model: dict) -> str:
    """The scorer the search's drops ranked tokens by (recorded since ``search --scorer``; older searches: none)."""
    scorer = (model.get("token_drop") or {}).get("scorer")
    return f", tokens ranked by the `{scorer}` scorer" if scorer else ""


def _intro(search: dict, model: dict, name: str, target: dict) -> List[str]:
    """The title, what model was searched how, and where its latency comes from."""
    from ..search.result import search_status

    md: List[str] = [f"# Latency-budget report: {name}", ""]
    if search_status(search) != "finished":
        md += ["> **Unfinished search.** Its search.json is marked "
               f"`{search.get('status')}`: the search stopped (or is still running) before it completed the file, "
               "so the figures below are those of the stages it finished, not its result. Run the same `fgvc-kit "
               "search` again (it resumes from its journal), then this report.", ""]
    md.append(f"Model **{name}** at {model.get('img_size')}, {model.get('depth')} blocks, {model.get('num_patches')} "
              f"patch tokens, {model.get('num_classes')} classes{_scorer_text(model)}. "
              f"Search objective: **{search.get('objective')}**; "
              f"{len(search.get('candidates') or []) or search['timing']['evaluations']} candidates; fitness "
              f"**{search['settings'].get('fitness', 'accuracy')}** on {search['settings']['holdout_images']} "
              f"held-out images, test accuracy on {search['settings']['test_images']} test images (reported only). "
              "Accuracies carry their 95 % Wilson interval; a baseline's difference to the searched pick is paired "
              "on the same test images, and called *within noise* when its 95 % interval contains 0.")
    if target:
        threads = target.get("threads")
        lat = search.get("latency") or {}
        how = {"table": " (predicted from a latency table" + (
            ", profiled by the search for this target" if lat.get("profiled_for_search") else "")
            + "; the picks measured on it where the search could)", "measured": " (measured by the search)"}.get(
            lat.get("source"), "")
        md.append(f"Latency budgets are for backend **{target.get('backend')}** on **{target.get('device')}**, batch "
                  f"{target.get('batch_size')}, {threads or 'default'} thread{'' if threads == 1 else 's'}{how}; a "
                  "verdict uses a measurement on this runtime and batch only.")
    md.append("")
    return md


def _result_sections(search: dict, tables: _ResultTables) -> List[str]:
    """The reference points, then a table per budget (the Pareto front when the search had no budget)."""
    md = ["## Reference points"] + tables.table([tables.row("full model", search["full"]),
                                                 tables.row("smallest of the space", search["smallest"])])
    md.append("")
    for b in search.get("budgets", []):
        md.append(f"## Budget {b['label']}")
        if "best_fp32" in b:  # a search of (schedule, precision) pairs
            rows = [tables.row("**searched pair**", b.get("best")),
                    tables.row("searched, fp32 only", b.get("best_fp32"))]
        else:
            rows = [tables.row("**searched**", b.get("best"))]
        rows += [tables.row(f"baseline: {k}", d) for k, d in (b.get("baselines") or {}).items()]
        md += tables.table(rows)
        vs = b.get("vs_fp32")
        if vs:
            md.append("")
            md.append("The pair minus the fp32-only pick, both run on the deployed runtime on the same test images: "
                      "{:+.2f} points [{:+.2f}, {:+.2f}]{}. Baselines are compared with the fp32-only pick.".format(
                          100 * vs["difference"], *(100 * v for v in vs["interval"]),
                          "" if vs["resolved"] else ", within noise: this data cannot tell them apart"))
        ties = [k for k, d in (b.get("baselines") or {}).items() if (d.get("vs_searched") or {}).get("resolved") is False]
        if ties:
            md.append("")
            md.append(f"The searched pick and {', '.join(ties)} differ by less than the 95 % interval of their "
                      "paired difference on the test images: this data cannot tell them apart.")
        if b.get("schedule_file"):
            md.append("")
            md.append(f"Drop config: `{b['schedule_file']}`")
        md.append("")
    if not search.get("budgets"):
        md.append("## Pareto front")
        md += tables.table([tables.row(f"#{i}", p) for i, p in enumerate(search.get("pareto_front", []))])
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
