"""How well a latency table predicts the schedules a search timed on the target: the table the search used
against one profiled now (merging blocks fitted to the pairs that merge, every merging pair of the grid).

    python benchmarks/merge_table_fit.py --supernet SUPERNET --search SEARCH_JSON --old-tables DIR
                                         [--batch 32] [--threads 1]

Reads every schedule ``search.json`` timed on the target (the picks, those passed over as timed over their
budget, the training-free deployables), with the latency the search predicted and the one it timed; profiles a
table for each precision among them (same target: OpenVINO on this CPU at the search's batch size and threads)
and prints, per schedule and as medians, the relative error of the old and the new prediction against the
timing. The timings are the search's (same machine, earlier): a ratio of errors, not a timing claim.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys


def timed_entries(doc: dict):
    """(counts, reducers, precision, timed ms) of every schedule the search timed, once each."""
    seen = {}

    def add(d):
        if d and d.get("counts") and d.get("latency_measured_ms"):
            key = (tuple(d["counts"]), tuple(d.get("reducers") or ()), d.get("precision") or "fp32")
            seen.setdefault(key, d["latency_measured_ms"])

    for b in doc["budgets"]:
        add(b.get("best"))
        for d in b.get("timed_over_budget") or ():
            add(d)
        for d in (b.get("training_free") or {}).values():
            add(d)
    return seen


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--supernet", required=True)
    ap.add_argument("--search", required=True, help="the search.json whose timed schedules are predicted")
    ap.add_argument("--old-tables", required=True, help="the folder of the tables that search used")
    ap.add_argument("--batch", type=int, default=32, help="the target's batch size (the search's)")
    ap.add_argument("--threads", type=int, default=None, help="the target's OpenVINO threads (the search's)")
    ap.add_argument("--out", default=os.path.join("runs", "merge-table-fit"))
    args = ap.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import tavt_kit
    from tavt_kit import DeploymentTarget, TokenSchedule
    from tavt_kit.bench import LatencyTable
    from tavt_kit.search.objective import profiled_table, table_file_name

    with open(args.search) as f:
        doc = json.load(f)
    model = tavt_kit.load_checkpoint(args.supernet).eval()
    entries = timed_entries(doc)
    lines, summary = [], {}
    for p in sorted({k[2] for k in entries}):
        target = DeploymentTarget(backend="openvino", device="cpu", precision=p, batch_size=args.batch,
                                  threads=args.threads)
        old = LatencyTable.load(os.path.join(args.old_tables, table_file_name(target)))
        new = profiled_table(model, target, os.path.join(args.out, "tables"), reducers=("drop", "merge"),
                             log=lambda s: print(s, flush=True))
        errs = {"old": [], "new": [], "new, parts only": []}
        for (counts, reducers, prec), ms in entries.items():
            if prec != p:
                continue
            s = TokenSchedule(counts, model.num_patches, reducers=tuple(r or None for r in reducers) or None)
            o, n = old.predict(s), new.predict(s)
            pp = new.predict_parts(s)
            parts = pp["embed"] + sum(pp["blocks"]) + pp["head"]  # the new table's parts, no calibration
            errs["old"].append((o - ms) / ms)
            errs["new"].append((n - ms) / ms)
            errs["new, parts only"].append((parts - ms) / ms)
            merges = sum(r == "merge" for r in reducers)
            lines.append(f"{p:5s} {','.join(map(str, counts)):28s} merging blocks {merges}  timed {ms:7.2f} ms  "
                         f"old {o:7.2f} ({100 * (o - ms) / ms:+6.1f} %)  new {n:7.2f} ({100 * (n - ms) / ms:+6.1f} %)  "
                         f"new parts {parts:7.2f} ({100 * (parts - ms) / ms:+6.1f} %)")
        summary[p] = {k: (statistics.median(abs(e) for e in v), statistics.median(v), len(v)) for k, v in errs.items()}
    print("\n".join(lines))
    for p, s in summary.items():
        for k, (mae, bias, n) in s.items():
            print(f"{p} {k} table: median |error| {100 * mae:.1f} %, median error {100 * bias:+.1f} % "
                  f"({n} timed schedules)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
