"""Does choosing the precision with the schedule pay?  The cluttered-digits measurement of ``search --precisions``.

    python benchmarks/precision_search_benchmark.py [--seed 0] [--out runs/fitness-benchmark]
                                                    [--budgets 0.65,0.85] [--latency-batch-size 32]

With the seed's distilled supernet (trained and distilled here when the folder
has none, as ``benchmarks/fitness_benchmark.py`` does) it runs the commands a
user runs:

1. ``fgvc-kit bench profile --backend openvino`` once per precision this CPU
   has (fp32, bf16, int8; ``--statistic min`` because the machine is shared);
2. ``fgvc-kit search --precisions fp32,bf16,int8`` with one table per precision
   and two latency budgets (``--budgets``: fractions of the full model's
   predicted fp32 latency), ``--remeasure`` so that both picks and the full model
   are timed here, round-robin in one process;
3. ``fgvc-kit export --precision auto --format openvino`` of the full model:
   every precision verified on the test images and timed, int8 through NNCF's
   accuracy control on the held-out images.

It prints, per budget, the best (schedule, precision) pair and the best
fp32-only schedule with their test accuracy on the deployed runtime (95 %
Wilson intervals over the test images), the paired difference and the
latencies measured in one process; and the int8 export's accuracy drop and
speed-up over f32. Writes ``precision_search.json`` and ``.md`` into the seed's
folder and ``--doc`` (default docs/benchmarks/precision_search.md).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import harness


def command(name, argv):
    harness.command(name, argv, echo=True)


def supernet(seed: int, out: str) -> str:
    d_train, d_dist = os.path.join(out, "train"), os.path.join(out, "distill")
    if not os.path.isfile(os.path.join(d_train, "results.json")):
        command("train", ["--dataset", "cluttered-digits", "--seed", str(seed), "--out", d_train, "--no-progress",
                          "--overwrite"])
    if not os.path.isfile(os.path.join(d_dist, "results.json")):
        command("distill", ["--checkpoint", os.path.join(d_train, "best.safetensors"), "--seed", str(seed), "--out",
                            d_dist, "--no-progress", "--overwrite"])
    return os.path.join(d_dist, "best.safetensors")


def precisions_here():
    from tavt_kit.export.openvino import device_capabilities

    caps = device_capabilities()
    out = ["fp32"] + (["bf16"] if "BF16" in caps else []) + (["fp16"] if "FP16" in caps else [])
    try:
        import nncf  # noqa: F401

        out.append("int8")
    except ImportError:
        print("nncf is not installed: no int8 (pip install nncf)")
    return out


def pct(x):
    return "n/a" if x is None else f"{100 * x:.2f}"


def as_pct(x):
    """Export records hold top-1 in percent, search records as a fraction."""
    return "n/a" if x is None else f"{x if x > 1 else 100 * x:.2f}"


def ci(iv):
    return "" if not iv else f" [{100 * iv[0]:.1f}, {100 * iv[1]:.1f}]"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join("runs", "fitness-benchmark"))
    p.add_argument("--budgets", default="0.65,0.85",
                   help="latency budgets as fractions of the full model's predicted fp32 latency")
    p.add_argument("--latency-batch-size", type=int, default=32, help="images per timed batch (default 32)")
    p.add_argument("--threads", type=int, help="OpenVINO threads (default: all cores)")
    p.add_argument("--generations", type=int, default=6)
    p.add_argument("--population", type=int, default=12)
    p.add_argument("--doc", default=os.path.join("docs", "benchmarks", "precision_search.md"))
    args = p.parse_args(argv)

    from tavt_kit.bench import LatencyTable
    from tavt_kit.models import load_checkpoint

    out = os.path.join(args.out, f"seed{args.seed}")
    ckpt = supernet(args.seed, out)
    model = load_checkpoint(ckpt)
    precs = precisions_here()
    threads = ["--threads", str(args.threads)] if args.threads else []
    t0 = time.perf_counter()
    tables = {}
    for prec in precs:
        d = os.path.join(out, f"table-{prec}-b{args.latency_batch_size}")
        if not os.path.isfile(os.path.join(d, "latency_table.json")):
            command("bench", ["profile", "--checkpoint", ckpt, "--backend", "openvino", "--precision", prec,
                              "--batch-size", str(args.latency_batch_size), "--statistic", "min", "--out", d,
                              "--quiet"] + threads)
        tables[prec] = os.path.join(d, "latency_table.json")
    t_tables = time.perf_counter() - t0
    full_ms = LatencyTable.load(tables["fp32"]).predict(model.full_schedule())
    budgets = [float(f) * full_ms for f in args.budgets.split(",")]
    d_search = os.path.join(out, "search-precision")
    argv_s = ["--checkpoint", ckpt, "--precisions", ",".join(precs), "--out", d_search, "--remeasure",
              "--generations", str(args.generations), "--population", str(args.population),
              "--mutations", str(args.population), "--crossovers", str(args.population), "--seed", str(args.seed)]
    for prec in precs:
        argv_s += ["--latency-table", tables[prec]]
    for b in budgets:
        argv_s += ["--latency-budget", f"{b:.4f}ms"]
    t0 = time.perf_counter()
    command("search", argv_s + threads)
    t_search = time.perf_counter() - t0
    from tavt_kit.search import SearchResult

    res = SearchResult.load(os.path.join(d_search, "search.json"))
    d_export = os.path.join(out, "export-auto")
    t0 = time.perf_counter()
    command("export", ["--checkpoint", ckpt, "--drop", ",".join(["64"] * model.depth), "--format", "openvino",
                       "--precision", "auto", "--latency-batch-size", str(args.latency_batch_size),
                       "--out", d_export] + threads)
    t_export = time.perf_counter() - t0
    exp = json.loads(open(os.path.join(d_export, "export.json")).read())
    int8 = {}
    if "int8" in precs:
        d_int8 = os.path.join(out, "export-int8")
        command("export", ["--checkpoint", ckpt, "--drop", ",".join(["64"] * model.depth), "--format", "openvino",
                           "--precision", "int8", "--out", d_int8] + threads)
        int8 = json.loads(open(os.path.join(d_int8, "export.json")).read())

    full_rr = res.full.latency_measured_ms

    lines = [f"# Precision chosen with the schedule: cluttered-digits, seed {args.seed}", "",
             f"Supernet `{ckpt}`; OpenVINO on this CPU, batch {args.latency_batch_size}, tables profiled at "
             f"{', '.join(precs)} (`--statistic min`). Test accuracy on the deployed runtime, "
             f"{res.settings['test_images']} test images (95 % Wilson); the difference is paired on the same "
             "images. Latency: the table's prediction, and the search's measurement (`--remeasure`: every "
             "pick and the full fp32 model deployed with OpenVINO and timed round-robin in one process, median; "
             f"the full fp32 model {full_rr:.2f} ms there). A shared machine's speed drifts between profiling "
             "and measuring; the measured fraction of the full model's latency, both timed in the same round, "
             "does not drift with it: compare it with the budget's fraction of the predicted full model.", "",
             "| budget | pick | precision | schedule | test top-1 [95 %] | predicted ms | measured ms "
             "| measured / full | budget / full (predicted) | within budget, measured |",
             "|---|---|---|---|---|---:|---:|---:|---:|---|"]
    summary = {"budgets": [], "tables_seconds": t_tables, "search_seconds": t_search, "export_seconds": t_export,
               "full_fp32_measured_ms": full_rr}
    for row in res.budgets.values():
        for name, d in (("joint", row.best), ("fp32 only", row.best_fp32)):
            if d is None:
                lines.append(f"| {row.label} | {name} | – | nothing fits | | | |")
                continue
            dep = d.deployed
            lines.append(f"| {row.label} | {name} | {d.precision} | {list(d.counts)} | "
                         f"{pct(dep and dep.test_accuracy)}{ci(dep and dep.test_interval)} | {d.latency_ms:.2f} | "
                         f"{d.latency_measured_ms:.2f} | {d.measured_fraction_of_full:.3f} | "
                         f"{row.limit * 1e3 / res.full.latency_ms:.3f} | "
                         f"{'yes' if d.measured_within_budget else 'no'} |")
        vs = row.vs_fp32
        if vs:
            lines.append(f"| | joint − fp32 only | | | {100 * vs.difference:+.2f} "
                         f"[{100 * vs.interval[0]:+.2f}, {100 * vs.interval[1]:+.2f}]"
                         f"{'' if vs.resolved else ' (within noise)'} | | | | | |")
        summary["budgets"].append({"label": row.label, "joint": row.best and row.best.to_dict(),
                                   "fp32": row.best_fp32 and row.best_fp32.to_dict(), "vs_fp32": vs and vs.to_dict()})
    int8_front = res.precision_fronts.get("int8")
    if int8_front:
        lines += ["", "## The int8 front, measured on the deployed int8 model", "",
                  f"{res.doc['precisions']['front_verifications']} schedules on the provisional int8 front (fp32 "
                  "accuracy) were quantised with NNCF and run in OpenVINO on the held-out images; the front is drawn "
                  "from the measured values.", "",
                  "| schedule | predicted int8 ms | held-out fp32 (PyTorch) | held-out int8 (OpenVINO) | int8 − fp32 |",
                  "|---|---:|---:|---:|---:|"]
        for c in int8_front:
            a32 = c.fp32_accuracy
            lines.append(f"| {list(c.counts)} | {c.latency_ms:.2f} | {pct(a32)} | {pct(c.accuracy)} | "
                         f"{'' if a32 is None else format(100 * (c.accuracy - a32), '+.2f')} |")
        summary["int8_front"] = [c.to_dict() for c in int8_front]
    lines += ["", "## `export --precision auto` of the full model (OpenVINO)", "",
              "| precision | passed | test top-1 | drop vs PyTorch fp32 (points) | agreement | ms (median) | note |",
              "|---|---|---:|---:|---:|---:|---|"]
    auto = exp.get("auto") or {}
    for a in auto.get("attempts", []):
        lat = a.get("latency_ms")
        lines.append(f"| {a.get('precision')} | {a.get('passed')} | {as_pct(a.get('accuracy'))} | "
                     f"{'' if a.get('accuracy_drop') is None else format(a['accuracy_drop'], '.2f')} | "
                     f"{'' if a.get('agreement') is None else format(a['agreement'], '.4f')} | "
                     f"{'' if lat is None else format(lat, '.2f')} | {a.get('reason') or ''} |")
    lines.append(f"\nChosen: {json.dumps(auto.get('chosen'))}")
    summary["export"] = {"attempts": auto.get("attempts"), "chosen": auto.get("chosen")}
    if "int8" in precs:
        q = (((int8.get("exports") or {}).get("openvino") or {}).get("quantization") or {})
        lines += ["", "## int8 with accuracy control (`export --precision int8 --format openvino`)", "",
                  f"mode {q.get('mode')}, max drop {q.get('max_accuracy_drop')} points on "
                  f"{(q.get('validation') or {}).get('images')} held-out images: f32 {as_pct(q.get('f32_accuracy'))}, "
                  f"plain PTQ {as_pct(q.get('ptq_accuracy'))}, with accuracy control "
                  f"{as_pct(q.get('int8_accuracy'))}; "
                  f"kept in higher precision: {q.get('kept_in_higher_precision')}; test top-1 "
                  f"{as_pct(((int8.get('verification') or {}).get('results') or {}).get('openvino', {}).get('top1_exported'))}"]
        summary["int8_accuracy_control"] = q
    text = "\n".join(lines) + "\n"
    print(text)
    with open(os.path.join(out, "precision_search.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out, "precision_search.json"), "w") as f:
        json.dump(summary, f, indent=1)
    if args.doc:
        os.makedirs(os.path.dirname(args.doc), exist_ok=True)
        with open(args.doc, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
