"""How a latency table's prediction holds up as schedules get deeper: a ladder of whole models, from the full
model to the smallest member of a ``--bound 0.7`` space, timed on the target against the table's parts and
prediction.

    python benchmarks/table_depth.py [--precisions fp32,int8] [--batch 32] [--threads 1] [--out runs/table-depth]
                                     [--extra-from RESULT_JSON ...]

The model is the latency benchmark's (``latency_reference.py``: fgvc_tiny at 64 px, patch 4, 256 patch tokens,
width 96, 6 blocks), randomly initialised: latency does not depend on the weights (int8 is calibrated on random
inputs either way). For each precision the table is profiled as a search profiles it (``profiled_table``,
drop and merge), then every schedule of the ladder is timed whole against the table's reference block and
rescaled to the machine speed of the table (``time_at_table_speed``), and the script prints per schedule: the
timing, the sum of the table's parts, the residual (timing minus parts), and the error of two calibrations
fitted to the same whole-model anchor runs of the table: ``offset`` (before: a constant and a term per merging
block, on the anchors near the full model: full, TAVT 0.9, EViT 0.7) and ``scaled`` (now: a scale on the
parts too, on anchors down to 0.3 per block). ``--extra-from`` adds the schedules a ``latency_reference.py``
result file timed (its picks and training-free deployables). The summary is the median error of each on the
schedules that are not anchors, deep (parts under 60 % of the full model's) and near full.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys


def ladder(depth: int, n: int):
    """(label, TokenSchedule) from the full model to the smallest member of the bound-0.7 space."""
    from tavt_kit import TokenSchedule
    from tavt_kit.schedules import evit_schedule, tome_schedule, uniform_schedule

    out = [("full", TokenSchedule.full(depth, n))]
    for k in (0.9, 0.7, 0.5, 0.35):
        out.append((f"drop {k}/block", uniform_schedule(k, depth, n)))
        out.append((f"merge {k}/block", uniform_schedule(k, depth, n).with_reducers(("merge",) * depth)))
    out.append(("evit 0.7", evit_schedule(0.7, depth, n)))
    for r in (16, 40, 96, 128):
        out.append((f"tome r={r}", tome_schedule(r, depth, n)))
    smallest, c = [], n
    for _ in range(depth):
        c = max(1, int(round(c * 0.3)))
        smallest.append(c)
    for red in ("drop", "merge"):
        out.append((f"bound-0.7 smallest {red}", TokenSchedule(tuple(smallest), n, reducers=(red,) * depth)))
    mixed = tuple("drop" if i % 2 == 0 else "merge" for i in range(depth))
    out.append(("bound-0.7 smallest mixed", TokenSchedule(tuple(smallest), n, reducers=mixed)))
    return out


def extra_schedules(paths, n: int):
    """(label, TokenSchedule, precision) of every deployable a latency_reference result file timed."""
    from tavt_kit import TokenSchedule

    out, seen = [], set()
    for path in paths:
        with open(path) as f:
            doc = json.load(f)
        for row in doc["rows"]:
            for name, d in [("pick", row.get("pick")), ("shipped", row.get("shipped"))] + \
                    list((row.get("free") or {}).items()):
                if not d or not d.get("counts"):
                    continue
                key = (tuple(d["counts"]), tuple(d.get("reducers") or ()), d.get("precision") or "fp32")
                if key in seen or all(c == n for c in d["counts"]):
                    continue
                seen.add(key)
                red = tuple(r or "drop" for r in d["reducers"]) if d.get("reducers") else None
                out.append((f"{os.path.basename(path)[:5]} {name}", TokenSchedule(key[0], n, reducers=red), key[2]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--precisions", default="int8,fp32")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--extra-from", nargs="*", default=[], help="latency_reference.py result files")
    ap.add_argument("--out", default=os.path.join("runs", "table-depth"))
    args = ap.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import torch

    import tavt_kit
    from tavt_kit import DeploymentTarget
    from tavt_kit.bench import fit_calibration, time_at_table_speed
    from tavt_kit.bench.calibration import calibrated_ms
    from tavt_kit.models.token_merge import merge_rounds
    from tavt_kit.search.objective import profiled_table

    def merge_round_count(s):
        prev, rounds = s.num_patches, 0
        for c, r in zip(s.counts, s.reducers or ("drop",) * len(s.counts)):
            rounds += len(merge_rounds(prev, c)) if r == "merge" and c < prev else 0
            prev = c
        return rounds

    torch.manual_seed(0)
    model = tavt_kit.create_model("fgvc_tiny", num_classes=10, patch_size=4).eval()
    depth, n = model.depth, model.num_patches
    os.makedirs(args.out, exist_ok=True)
    result = {"batch": args.batch, "threads": args.threads, "precisions": {}}
    near_full = ("full", "tavt 0.9", "evit 0.7", "tavt 0.9 merge", "evit 0.7 merge")
    for p in args.precisions.split(","):
        target = DeploymentTarget(backend="openvino", device="cpu", precision=p, batch_size=args.batch,
                                  threads=args.threads)
        table = profiled_table(model, target, os.path.join(args.out, "tables"), reducers=("drop", "merge"),
                               log=lambda s: print(s, flush=True))
        calib = table.data["calibration"]
        fits = {"offset": fit_calibration([c for c in calib if c["label"] in near_full], model="offset"),
                "scaled": fit_calibration(calib)}
        anchors = {(tuple(c["schedule"]), tuple(c.get("reducers") or ("drop",) * depth)) for c in calib}
        items = ladder(depth, n) + [(label, s) for label, s, prec in extra_schedules(args.extra_from, n) if prec == p]
        timed = time_at_table_speed(table, model, {i: s for i, (_, s) in enumerate(items)},
                                    progress=lambda s: print(s, flush=True))
        rows = []
        for i, (label, s) in enumerate(items):
            pp = table.predict_parts(s)
            parts = pp["embed"] + sum(pp["blocks"]) + pp["head"]
            pred = {k: calibrated_ms(f, parts, pp["merging_blocks"]) for k, f in fits.items()}
            red = tuple(r or "drop" for r in (s.reducers or ("drop",) * depth))
            rows.append({"label": label, "counts": list(s.counts), "reducers": list(red), "timed_ms": timed[i],
                         "parts_ms": parts, "predicted_ms": pred, "anchor": (tuple(s.counts), red) in anchors,
                         "merging_blocks": pp["merging_blocks"], "merge_rounds": merge_round_count(s)})
        full = rows[0]["parts_ms"]
        print(f"\n{p}, batch {args.batch}, {args.threads} thread(s); ms at the table's machine speed")
        for k, f in fits.items():
            print(f"  {k:6s} calibration: whole = {f['parts_scale']:.3f} x parts {f['offset_ms']:+.2f} ms "
                  f"{f['merge_block_offset_ms']:+.2f} ms per merging block (rms {100 * f['fit_rms_rel']:.1f} % "
                  "on its anchors)")
        print(f"{'schedule':27s} {'counts':24s} mb rd {'timed':>7s} {'parts':>7s} {'resid':>7s} "
              f"{'err offset':>10s} {'err scaled':>10s}")
        for r in rows:
            e = {k: 100 * (v - r["timed_ms"]) / r["timed_ms"] for k, v in r["predicted_ms"].items()}
            print(f"{r['label'][:26] + ('*' if r['anchor'] else ''):27s} {','.join(map(str, r['counts']))[:24]:24s} "
                  f"{r['merging_blocks']:2d} {r['merge_rounds']:2d} {r['timed_ms']:7.2f} {r['parts_ms']:7.2f} "
                  f"{r['timed_ms'] - r['parts_ms']:+7.2f} {e['offset']:+9.1f}% {e['scaled']:+9.1f}%")
        print("(* an anchor of the scaled calibration; the summary leaves them out)")
        held = [r for r in rows if not r["anchor"]]
        summary = {}
        for name, rs in (("deep", [r for r in held if r["parts_ms"] < 0.6 * full]),
                         ("near full", [r for r in held if r["parts_ms"] >= 0.6 * full])):
            for k in fits:
                e = [(r["predicted_ms"][k] - r["timed_ms"]) / r["timed_ms"] for r in rs]
                if e:
                    summary[f"{name} {k}"] = {"n": len(e), "median_error": statistics.median(e),
                                              "median_abs_error": statistics.median(abs(x) for x in e)}
                    print(f"{p} {name} ({len(e)}), {k:6s} calibration: median error "
                          f"{100 * statistics.median(e):+.1f} %, median |error| {100 * statistics.median(abs(x) for x in e):.1f} %")
        result["precisions"][p] = {"fits": fits, "rows": rows, "summary": summary,
                                   "table_warnings": table.data.get("warnings")}
        with open(os.path.join(args.out, "table_depth.json"), "w") as f:  # after each precision: a long run
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
