"""A latency table's merging blocks fitted again from its own recorded timings, three ways (curves alone, a price
per bipartite round, the MLP tied to the dropping blocks'): how well each predicts the whole models the table timed
(anchors and random schedules).

    python benchmarks/merge_round_refit.py TABLE.json [TABLE.json ...] [--search SEARCH_JSON ...]

Nothing is timed: the table's merging pairs, calibration anchors and validation schedules were timed when it was
profiled. For each table the merging curves are fitted as before rounds were priced (``merge_attn(L_in) +
merge_mlp(L_out)``, made non-decreasing), with ``merge_round_ms`` per round after the first
(:func:`tavt_kit.bench.table.fit_separable_rounds`), and with ``merge_mlp`` tied to the dropping blocks' ``mlp``
curve (:func:`tavt_kit.bench.table.fit_tied_rounds`, what ``bench profile`` fits now); the whole-model
calibration is fitted again on the anchors for each (:func:`tavt_kit.bench.calibration.fit_calibration`), and the validation schedules are
predicted. Printed per table: the fit on the merging pairs (rms), on the anchors (rms) and the validation's
median, max and mean error. With ``--search``, the schedules those searches timed on the target (picks, those
timed over their budget, training-free deployables: :func:`merge_table_fit.timed_entries`) are predicted too,
by the table of their precision among ``TABLE.json`` (the search's own tables: its ``latency-tables`` folder).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _schedule(d: dict, row: dict):
    """The schedule of a calibration or validation row of table ``d`` (its reducers too)."""
    from tavt_kit import TokenSchedule

    reds = row.get("reducers")
    return TokenSchedule(tuple(row["schedule"]), int(d["model"]["num_patches"]), reducers=tuple(reds) if reds else None)


def refit(data: dict, rounds: bool, timed=None, tied: bool = False) -> dict:
    """``data`` (a table's dict) with its merging curves, round price and calibration fitted again; returns the
    figures."""
    from tavt_kit.bench.calibration import fit_calibration
    from tavt_kit.bench.table import (LatencyTable, extra_merge_rounds, fit_separable_rounds, fit_tied_rounds,
                                      isotonic)

    d = copy.deepcopy(data)
    P = int(d["model"]["num_prefix_tokens"])
    pairs = [(int(li), int(lo), float(t)) for li, lo, t, *_ in d["merge_pairs"]]
    extra = [extra_merge_rounds(li - P, lo - P) for li, lo, _ in pairs]
    if not rounds:  # the curves alone, as tables were fitted before rounds were priced
        extra = [0] * len(extra)
    mt = d.get("mlp_ms")
    fit = fit_tied_rounds(pairs, extra, dict(zip(mt["tokens"], mt["ms"]))) if tied and mt else None
    ins, attn, outs, mlp, round_ms = fit or fit_separable_rounds(pairs, extra)
    attn, mlp = isotonic(attn), isotonic(mlp)
    d["merge_attn_ms"] = {"tokens": ins, "ms": attn}
    d["merge_mlp_ms"] = {"tokens": outs, "ms": mlp}
    d["merge_round_ms"] = round_ms
    ai, mi = dict(zip(ins, attn)), dict(zip(outs, mlp))
    pair_rel = [(ai[li] + mi[lo] + x * round_ms - t) / t for (li, lo, t), x in zip(pairs, extra)]
    for key in ("parts_scale", "offset_ms", "merge_block_offset_ms"):
        d.pop(key, None)
    table = LatencyTable(d)
    calib = []
    for c in d["calibration"]:
        p = table.predict_parts(_schedule(d, c))
        calib.append({"parts_ms": p["embed"] + sum(p["blocks"]) + p["head"], "merging_blocks": p["merging_blocks"],
                      "measured_ms_table_speed": c["measured_ms_table_speed"]})
    fit = fit_calibration(calib)
    d.update(parts_scale=fit["parts_scale"], offset_ms=fit["offset_ms"],
             merge_block_offset_ms=fit["merge_block_offset_ms"])
    table = LatencyTable(d)
    val = (d.get("validation") or {}).get("schedules") or []
    errs = [(table.predict(_schedule(d, v)) - v["measured_ms_table_speed"]) / v["measured_ms_table_speed"]
            for v in val] or [float("nan")]
    searched = [(table.predict(_schedule(d, {"schedule": c, "reducers": [r or None for r in reds] or None})) - ms)
                / ms for c, reds, ms in timed or ()]
    return {"searched": searched, "round_ms": round_ms, "pairs_rms": math.sqrt(statistics.fmean(r * r for r in pair_rel)),
            "anchors_rms": fit["fit_rms_rel"], "merge_block_offset_ms": fit["merge_block_offset_ms"],
            "median": statistics.median(abs(e) for e in errs), "max": max(abs(e) for e in errs),
            "mean": statistics.fmean(errs), "schedules": len(val)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tables", nargs="+")
    ap.add_argument("--search", nargs="*", default=[], help="search.json files whose timed schedules are predicted "
                    "by the table of their precision")
    args = ap.parse_args(argv)
    from merge_table_fit import timed_entries

    timed = {}
    for path in args.search:
        with open(path) as f:
            for (counts, reds, prec), ms in timed_entries(json.load(f)).items():
                timed.setdefault(prec, []).append((counts, reds, ms))
    for path in args.tables:
        with open(path) as f:
            data = json.load(f)
        mine = timed.get(data["target"].get("precision"), [])
        if not data.get("merge_pairs"):
            print(f"{path}: no merging pairs; skipped")
            continue
        t = data["target"]
        print(f"{path}: {data['model']['name']} ({data['model']['num_patches']} patches), {t['backend']} on "
              f"{t['device']}, {t.get('precision')}, batch {t.get('batch_size')}")
        for rounds, tied in ((False, False), (True, False), (True, True)):
            r = refit(data, rounds, mine, tied)
            what = f"priced per round ({r['round_ms']:.3f} ms)" if rounds else "curves only (before)"
            what = f"MLP tied, per round ({r['round_ms']:.3f} ms)" if tied else what
            line = (f"  {what:32s} pairs rms {100 * r['pairs_rms']:5.1f}%  anchors rms {100 * r['anchors_rms']:5.1f}% "
                    f"({r['merge_block_offset_ms']:+.3f} ms per merging block)")
            if r["schedules"] and not math.isnan(r["median"]):
                line += (f"  {r['schedules']} random schedules: median {100 * r['median']:4.1f}%  max "
                         f"{100 * r['max']:5.1f}%  mean {100 * r['mean']:+5.1f}%")
            if r["searched"]:
                e = r["searched"]
                line += (f"  {len(e)} timed by the search: median {100 * statistics.median(abs(x) for x in e):4.1f}%"
                         f"  mean {100 * statistics.fmean(e):+5.1f}%")
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
