"""Markdown tables and PNG plots of ``bench.json`` and latency tables (matplotlib, Agg)."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from ..files import save_figure
from ..machine import describe, threads_text
from .identity import short_counts


def _fmt(v: Optional[float], spec: str, none: str = "–") -> str:
    return none if v is None else format(v, spec)


def bench_markdown(d: Dict[str, Any]) -> str:
    """The results of a ``bench.json`` dict as Markdown: schedule, MACs, p50/p90, throughput, speed-up."""
    t = d.get("target") or {}
    m = d.get("model") or {}
    lines = []
    name = m.get("name") or t.get("source") or "model"
    img = m.get("img_size")
    lines.append(f"### Latency: {name}" + (f" at {img[0]}x{img[1]}" if img else ""))
    lines.append("")
    prec = t.get("precision_used")
    lines.append(f"backend **{t.get('backend')}** on **{t.get('device')}**, {threads_text(t.get('threads'))}"
                 + (f", precision {prec}" if prec else "") + (f", ONNX exporter {t['exporter']}"
                                                              if t.get("exporter") else ""))
    lines.append(f"machine: {describe(d.get('machine') or {})}")
    if m.get("weights_sha256"):  # what a report matches this bench against its search's weights by
        lines.append(f"weights sha256 {m['weights_sha256'][:12]}...")
    lines.append("")
    results = d.get("results") or []
    has_pred = any(r.get("predicted_ms") is not None for r in results)
    head = ["schedule", "tokens kept per block", "GMACs", "batch", "p50 ms", "p90 ms", "±CI", "img/s",
            "speed-up", "peak mem Δ MB"]
    if has_pred:
        stat = next((r.get("predicted_statistic") for r in results if r.get("predicted_ms") is not None), "median")
        head += ["predicted ms" + (" (min)" if stat == "min" else ""), "error"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|")
    for r in results:
        lat = r.get("latency_ms") or {}
        mem = (r.get("memory") or {}).get("delta_mb")
        row = [str(r.get("label")) + (" ⚠" if r.get("noisy") else ""), short_counts(r.get("schedule")),
               _fmt(r.get("gmacs"), ".3f"), str(r.get("batch_size")), _fmt(lat.get("p50"), ".2f"),
               _fmt(lat.get("p90"), ".2f"), "±" + _fmt(100 * lat["ci95_rel"], ".1f") + "%" if "ci95_rel" in lat
               else "–", _fmt(r.get("throughput_ips"), ".1f"),
               _fmt(r.get("speedup"), ".2f") + ("x" if r.get("speedup") is not None else ""), _fmt(mem, ".1f")]
        if has_pred:
            row += [_fmt(r.get("predicted_ms"), ".2f"),
                    _fmt(100 * r["prediction_error_rel"], "+.1f") + "%" if r.get("prediction_error_rel") is not None
                    else "–"]
        lines.append("| " + " | ".join(row) + " |")
    warns = d.get("warnings") or []
    if warns:
        lines.append("")
        for w in warns:
            lines.append(f"- ⚠ {w}")
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_bench(d: Dict[str, Any], path: str) -> str:
    """Latency (p50, bar to p90) against GMACs, one series per batch size."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    results = [r for r in d.get("results") or [] if r.get("gmacs") is not None]
    for b in sorted({r["batch_size"] for r in results}):
        rs = sorted((r for r in results if r["batch_size"] == b), key=lambda r: r["gmacs"])
        x = [r["gmacs"] for r in rs]
        y = [r["latency_ms"]["p50"] for r in rs]
        up = [r["latency_ms"]["p90"] - r["latency_ms"]["p50"] for r in rs]
        ax.errorbar(x, y, yerr=[[0] * len(up), up], marker="o", capsize=3, label=f"batch {b}")
        for r in rs:
            ax.annotate(r["label"], (r["gmacs"], r["latency_ms"]["p50"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=7)
    t = d.get("target") or {}
    m = d.get("model") or {}
    ax.set_xlabel("GMACs per image")
    ax.set_ylabel("latency per batch (ms), p50 .. p90")
    ax.set_title(f"{m.get('name', '')} — {t.get('backend')} on {t.get('device')}, {threads_text(t.get('threads'))}",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    if results:
        ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        save_figure(fig, path)
    finally:
        plt.close(fig)
    return path


def plot_table(d: Dict[str, Any], path: str) -> str:
    """Per-block latency against tokens from a latency-table dict."""
    plt = _pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=110)
    for key, label in (("plain_ms", "block keeping all tokens"), ("attn_ms", "dropping block: attention part (in)"),
                       ("mlp_ms", "dropping block: MLP part (out)"), ("head_ms", "final norm + head")):
        c = d.get(key)
        if c:
            ax.plot(c["tokens"], c["ms"], marker=".", label=label)
    ax.axhline(d.get("embed_ms", 0), color="grey", ls=":", label="patch embedding")
    ax.set_xlabel("tokens in the sequence")
    ax.set_ylabel("ms")
    ax.set_title("fitted per-part latency", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    pairs = d.get("pairs") or []
    if pairs:
        outs = sorted({p[1] for p in pairs})
        cmap = plt.get_cmap("viridis")
        for i, lo in enumerate(outs):
            pts = sorted((p for p in pairs if p[1] == lo), key=lambda p: p[0])
            col = cmap(i / max(1, len(outs) - 1))
            ax2.plot([p[0] for p in pts], [p[2] for p in pts], "o", ms=3, color=col)
            ax2.plot([p[0] for p in pts], [p[3] for p in pts], "-", lw=0.8, color=col)
        ax2.set_xlabel("tokens entering a dropping block")
        ax2.set_ylabel("ms")
        ax2.set_title("dropping block: measured (dots) vs attn(in) + mlp(out) (lines),\none line per tokens kept",
                      fontsize=9)
        ax2.grid(alpha=0.3)
    m = d.get("model") or {}
    t = d.get("target") or {}
    fig.suptitle(f"{m.get('name', '')}: {t.get('backend')} on {t.get('device')}, batch {t.get('batch_size')}, "
                 f"{threads_text(t.get('threads'))}", fontsize=10)
    fig.tight_layout()
    try:
        save_figure(fig, path)
    finally:
        plt.close(fig)
    return path


def validation_lines(rows: List[Dict[str, Any]]) -> List[str]:
    out = []
    for r in rows:
        out.append(f"{short_counts(r['schedule']):<60} measured {r['measured_ms']:9.3f} ms "
                   f"(at the table's speed {r['measured_ms_table_speed']:9.3f})  predicted {r['predicted_ms']:9.3f} ms"
                   f"  {100 * r['error_rel']:+6.1f}% (raw {100 * r['error_raw_rel']:+6.1f}%)")
    return out


def table_summary(table, path: str) -> List[str]:
    """What ``fgvc-kit bench profile`` prints about a :class:`~tavt_kit.bench.LatencyTable` saved at ``path``."""
    d, t = table.to_dict(), table.target
    mdl = d["model"]
    exporter = (d.get("target") or {}).get("exporter")
    out = [f"latency table  {path}",
           f"model          {mdl['name']}: {mdl['depth']} blocks, width {mdl['embed_dim']}, "
           f"{mdl['num_patches']} patches, {mdl['img_size'][0]}x{mdl['img_size'][1]}",
           f"target         {t.backend} on {t.device}, batch {t.batch_size}, {threads_text(t.threads)}, precision "
           f"{t.precision}" + (f", exporter {exporter}" if exporter else "")
           + f"; statistic {d.get('statistic', 'median')}",
           f"reducers       {', '.join(d.get('reducers') or ['drop'])}"]
    for key, what in (("separability", "attn(L_in) + mlp(L_out)"),
                      ("merge_separability", "merge_attn(L_in) + merge_mlp(L_out)"
                       + (f" + {d['merge_round_ms']:.3f} ms per extra round" if d.get("merge_round_ms") else ""))):
        sep = d.get(key)
        if sep:
            out.append(f"separability   {what} vs {sep['pairs']} measured pairs: rms "
                       f"{100 * sep['rms_rel']:.2f}%, max {100 * sep['max_abs_rel']:.2f}%")
    fit = d.get("calibration_fit") or {}
    out.append(f"calibration    whole = {d.get('parts_scale') or 1.0:.3f} x parts {d['offset_ms']:+.3f} ms"
               + (f" {d['merge_block_offset_ms']:+.3f} ms per merging block" if d.get("merge_block_offset_ms") else "")
               + f" (fitted on {len(d['calibration'] or [])} whole-model runs"
               + (f", rms {100 * fit['rms_rel']:.1f}% on them" if fit.get("rms_rel") is not None else "") + ")")
    v = d.get("validation")
    if v:
        out += ["  " + line for line in validation_lines(v["schedules"])]
        out.append(f"validation     {v['n']} random schedules: median |error| {100 * v['median_abs_error_rel']:.1f}%, "
                   f"max {100 * v['max_abs_error_rel']:.1f}% at the table's machine speed; against the raw times "
                   f"{100 * v['median_abs_error_raw_rel']:.1f}% / {100 * v['max_abs_error_raw_rel']:.1f}% "
                   f"(machine speed drift since profiling {100 * v['reference_drift']:+.1f}%)")
    return out


def prediction_lines(predictions) -> List[str]:
    """What ``fgvc-kit bench predict`` prints about :class:`~tavt_kit.bench.predict.Predictions`."""
    table, t = predictions.table, predictions.target
    out = [f"predicted from {table.source} ({table.model.get('name')}, {t.backend} on {t.device}, batch "
           f"{t.batch_size}, {threads_text(t.threads)}, {t.precision})"]
    for r in predictions.rows:
        sp = f"{r['speedup']:.2f}x" if r["speedup"] else ""
        out.append(f"  {r['label']:<14} {r['predicted_ms']:10.3f} ms  {sp:>7}  {short_counts(r['schedule'])}")
    return out
