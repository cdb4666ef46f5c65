"""Does the deployed runtime's latency move smoothly with the number of tokens?

A latency table profiles each block at a grid of token counts and interpolates between them; a ToMe fit and the
schedule search assume that fewer tokens never cost more. This times one model at every token count in a range
(each block keeping the same count, dropped once after the first block: ``[n] * depth``), at each precision,
all deployed with OpenVINO and timed round-robin in one process beside the full model in fp32, and prints each
one's share of the full model with its 95 % interval over the rotations, the largest reversal (a count that runs
slower than a larger one), how far the counts lie off the straight line a table interpolates, and by the sequence
length's residue (the tokens kept and the class token), which lengths run fastest for their size.

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/token_alignment.py --model c96p4w96 --tokens 112:144 \\
        --precisions fp32,int8 --threads 1 --out docs/benchmarks/token_alignment/c96-b1.json

Latency only: the weights are random (a timing does not depend on them).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

MODELS = {"p4w96": dict(patch_size=4), "c96p4w96": dict(img_size=96, patch_size=4)}


def time_beside_full(model, items: dict, args):
    """``items`` ({key: (schedule, precision)}) and the full model in fp32 (key ``("full", "fp32")``), deployed
    with OpenVINO on this CPU (``args.batch``, ``args.threads``) and timed round-robin in one process (at least
    ``args.rounds`` rotations); returns every timing and the full model's."""
    from tavt_kit import DeploymentTarget, TokenSchedule
    from tavt_kit.bench import TimingPolicy
    from tavt_kit.bench.measure import measure_schedules

    items = {("full", "fp32"): (TokenSchedule.full(model.depth, model.num_patches), "fp32"), **items}
    target = DeploymentTarget(backend="openvino", device="cpu", precision="fp32", batch_size=args.batch,
                              threads=args.threads)
    print(f"timing {len(items)} deployed models round-robin (batch {args.batch}, {args.threads} thread(s))",
          flush=True)
    measured = measure_schedules(model, items, target=target, policy=TimingPolicy(min_rounds=args.rounds),
                                 progress=lambda s: print(s, flush=True))
    return measured, measured[("full", "fp32")][0]


def add_run_arguments(ap: argparse.ArgumentParser) -> None:
    """The options every timing script here shares: the deployment, the rotations, and its JSON file."""
    ap.add_argument("--precisions", default="fp32,int8")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=20, help="rotations at least (each pairs a ratio)")
    ap.add_argument("--out", help="write the measurements here (JSON); with --report, read them from here")
    ap.add_argument("--report", action="store_true", help="print the report of --out; time nothing")


def measure_or_report(args, measure, report) -> int:
    """``--report``: print ``report`` of ``--out``; else ``measure(args)``, written to ``--out`` atomically, and
    its report printed."""
    args.precisions = [p.strip() for p in args.precisions.split(",")]
    if args.report:
        if not args.out or not os.path.isfile(args.out):
            raise SystemExit(f"--report: --out {args.out!r} is not a file this script wrote")
        with open(args.out) as f:
            doc = json.load(f)
    else:
        doc = measure(args)
        if args.out:
            from tavt_kit.files import write_json

            write_json(doc, args.out)  # atomic
    print(report(doc))
    return 0


def measure(args) -> dict:
    import tavt_kit
    from tavt_kit import TokenSchedule
    from tavt_kit.bench import paired_ratio

    model = tavt_kit.create_model("fgvc_tiny", num_classes=10, scorer=args.scorer, **MODELS[args.model]).eval()
    lo, hi = (int(v) for v in args.tokens.split(":"))
    items = {(n, p): (TokenSchedule((n,) * model.depth, model.num_patches), p)
             for p in args.precisions for n in range(lo, hi + 1)}
    measured, den = time_beside_full(model, items, args)
    rows = []
    for (n, p), (stats, *_) in measured.items():
        if n == "full":
            continue
        r = paired_ratio(stats, den)
        rows.append({"tokens": n, "precision": p, "ms": 1e3 * stats.p50, "share": r.ratio,
                     "interval": [r.low, r.high], "rounds": r.rounds})
    return {"model": args.model, "scorer": args.scorer, "batch": args.batch, "threads": args.threads,
            "full_ms": 1e3 * den.p50, "num_patches": model.num_patches, "depth": model.depth, "rows": rows}


def report(doc: dict) -> str:
    lines = [f"{doc['model']} ({doc['num_patches']} patch tokens, depth {doc['depth']}), batch {doc['batch']}, "
             f"{doc['threads']} thread(s): your model {doc['full_ms']:.3f} ms in fp32; share of it per token count"]
    for p in sorted({r["precision"] for r in doc["rows"]}):
        rows = sorted((r for r in doc["rows"] if r["precision"] == p), key=lambda r: r["tokens"])
        lines.append(f"\n## {p}")
        for r in rows:
            lines.append(f"  {r['tokens']:4d} tokens: {r['ms']:7.3f} ms  {r['share']:.3f} "
                         f"[{r['interval'][0]:.3f}, {r['interval'][1]:.3f}]")
        # a reversal: a count whose interval lies wholly above that of a larger count
        worst = max(((a, b) for i, a in enumerate(rows) for b in rows[i + 1:] if a["interval"][0] > b["interval"][1]),
                    key=lambda ab: ab[0]["share"] / ab[1]["share"], default=None)
        if worst is None:
            lines.append("  no resolved reversal: fewer tokens never ran slower beyond the intervals")
        else:
            a, b = worst
            n_rev = sum(1 for i, x in enumerate(rows) for y in rows[i + 1:] if x["interval"][0] > y["interval"][1])
            lines.append(f"  {n_rev} resolved reversal(s); the largest: {a['tokens']} tokens at {a['share']:.3f} "
                         f"of your model, {b['tokens']} tokens at {b['share']:.3f} "
                         f"({100 * (a['share'] / b['share'] - 1):.0f} % slower with fewer tokens)")
        # each count against the straight line through all of them (least squares): what a table interpolates
        n = len(rows)
        mx, my = sum(r["tokens"] for r in rows) / n, sum(r["share"] for r in rows) / n
        sxx = sum((r["tokens"] - mx) ** 2 for r in rows)
        slope = sum((r["tokens"] - mx) * (r["share"] - my) for r in rows) / sxx if sxx else 0.0
        off = {r["tokens"]: r["share"] / (my + slope * (r["tokens"] - mx)) - 1 for r in rows}
        lines.append(f"  against the straight line through all counts: {100 * min(off.values()):+.1f} % to "
                     f"{100 * max(off.values()):+.1f} %")
        # the runtime sees the sequence: the tokens kept and the class token
        for m in (4, 8, 16):
            by = {k: [v for t, v in off.items() if (t + 1) % m == k] for k in range(m)}
            lines.append(f"  sequence length (tokens + class token) mod {m}, mean off the line: " + ", ".join(
                f"{k}: {100 * sum(v) / len(v):+.1f} %" for k, v in by.items() if v))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=tuple(MODELS), default="c96p4w96")
    ap.add_argument("--scorer", default="tavt-sampled")
    ap.add_argument("--tokens", default="112:144", help="the token counts timed, LOW:HIGH inclusive")
    add_run_arguments(ap)
    return measure_or_report(ap.parse_args(argv), measure, report)


if __name__ == "__main__":
    sys.exit(main())
