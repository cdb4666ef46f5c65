"""The report's result tables: the reference points and, per budget, the pick beside its baselines."""
from __future__ import annotations

from typing import List, Optional

from ..search import SearchResult
from ..search.pick import Pick
from ..search.plot import mac_unit
from .cells import ms_text, pct_ci, schedule_text, top1_text, vs_searched_text
from .evidence import PickEvidence


class ResultTables:
    """The report's result tables: a row per pick with its accuracy, MACs, latency and exported files."""

    def __init__(self, result: SearchResult, ev: PickEvidence, full_lat: Optional[float], out_dir: str) -> None:
        self.ev, self.full_lat, self.out_dir = ev, full_lat, out_dir
        full = result.full
        #: the full model's latency of each kind: a pick's speed-up is over the full model's figure of its own kind
        self.table_search = result.latency_source == "table"
        self.full_of = {"measured": full.latency_measured_ms if self.table_search or
                        full.records("latency_measured_ms") else full.latency_ms,
                        "predicted": full.latency_ms if self.table_search else None}
        self.mscale, munit = mac_unit(full.macs)
        self.head = ["", "schedule (patch tokens per block; m = merged)", "holdout top-1 [95 %]", "test top-1 [95 %]",
                     "searched minus this, test [paired 95 %]", munit, "MAC reduction", "p50 ms", "p90 ms",
                     "speed-up", "exported"]
        self.n_hold = result.settings.get("holdout_images") or 0
        self.n_test = result.settings.get("test_images") or 0
        self.full_macs = full.macs

    def lat_cols(self, p: Pick) -> List[str]:
        """Measured latency (bench.json) when there is one, else the search's figure marked as such."""
        r = self.ev.bench_row(p)
        if r is not None and self.full_lat is not None:
            lat = r.get("latency_ms") or {}
            p50, p90 = lat.get("p50"), lat.get("p90")
            return [ms_text(p50), ms_text(p90), f"{self.full_lat / p50:.2f}x" if p50 else "–"]
        if p.latency_measured_ms is not None or (p.latency_ms is not None and not self.table_search):
            p50 = p.latency_measured_ms if p.latency_measured_ms is not None else p.latency_ms
            kind, tag = "measured", ""
        elif p.latency_ms is not None:
            p50, kind, tag = p.latency_ms, "predicted", " (pred.)"
        else:
            return ["–", "–", "–"]
        ref = self.full_of[kind]  # a prediction over a prediction, a measurement over a measurement
        return [ms_text(p50) + tag, "–", f"{ref / p50:.2f}x{tag}" if ref and p50 else "–"]

    def export_col(self, p: Pick) -> str:
        """The exported file that stands for a pick (verified, with its precision and top-1), and every other file
        of its schedule with why it does not."""
        found = self.ev.exports(p)
        parts = [f"{rec.format} {rec.path} ({rec.precision}, top-1 {top1_text(rec.top1)}, verified)"
                 for _, rec in reversed(found.verified)]  # the one shipped first
        parts += [f"{rec.format} {rec.path} (not shipped: {why})" for _, rec, why in found.rejected]
        return "; ".join(parts) or "–"

    def row(self, label, p: Optional[Pick]) -> str:
        """One pick's row (None: a budget nothing in the search space meets)."""
        if p is None:
            return "| " + " | ".join([label, "nothing in the search space meets this budget"] + ["–"] * 9) + " |"
        cells = [label, schedule_text(p), pct_ci(p, "holdout", self.n_hold), pct_ci(p, "test", self.n_test),
                 vs_searched_text(p), f"{p.macs / self.mscale:.4g}", f"{self.full_macs / p.macs:.2f}x"] + \
            self.lat_cols(p) + [self.export_col(p)]
        return "| " + " | ".join(cells) + " |"

    def table(self, rows) -> List[str]:
        """Rows under the table's header."""
        return ["| " + " | ".join(self.head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * 8 + ["---"]) + "|"] + rows


def result_sections(result: SearchResult, tables: ResultTables) -> List[str]:
    """The reference points, then a table per budget (the Pareto front when the search had no budget)."""
    md = ["## Reference points"] + tables.table([tables.row("full model", result.full),
                                                 tables.row("smallest of the space", result.smallest)])
    md.append("")
    for b in result.budgets.values():
        md.append(f"## Budget {b.label}")
        if b.searched_pairs:  # a search of (schedule, precision) pairs
            rows = [tables.row("**searched pair**", b.best), tables.row("searched, fp32 only", b.best_fp32)]
        else:
            rows = [tables.row("**searched**", b.best)]
        rows += [tables.row(f"baseline: {k}", p) for k, p in b.baselines.items()]
        md += tables.table(rows)
        vs = b.vs_fp32
        if vs:
            md.append("")
            md.append("The pair minus the fp32-only pick, both run on the deployed runtime on the same test images: "
                      "{:+.2f} points [{:+.2f}, {:+.2f}]{}. Baselines are compared with the fp32-only pick.".format(
                          100 * vs.difference, *(100 * v for v in vs.interval),
                          "" if vs.resolved else ", within noise: this data cannot tell them apart"))
        ties = [k for k, p in b.baselines.items() if p is not None and p.vs_searched is not None
                and p.vs_searched.resolved is False]
        if ties:
            md.append("")
            md.append(f"The searched pick and {', '.join(ties)} differ by less than the 95 % interval of their "
                      "paired difference on the test images: this data cannot tell them apart.")
        if b.schedule_file:
            md.append("")
            md.append(f"Drop config: `{b.schedule_file}`")
        md.append("")
    if not result.budgets:
        md.append("## Pareto front")
        md += tables.table([tables.row(f"#{i}", p) for i, p in enumerate(result.front)])
        md.append("")
    return md
