"""Drop, merge, ToMe off the shelf and the searched mixed schedule at equal MACs, on cluttered-digits, over seeds.

    python benchmarks/merge_benchmark.py [--seeds 0,1,2] [--out runs/fitness-benchmark]
                                         [--budgets 0.667,0.5,0.417] [--generations 6 --population 12]

Shares ``--out`` with ``benchmarks/fitness_benchmark.py``: each seed's
fine-tuned model (``train/``) and drop supernet (``distill/``) are reused when
that benchmark made them, else made here the same way. Then, per seed, with
the commands a user runs:

* ``fgvc-kit distill --reducers drop,merge`` (the same teacher, seed, steps): the mixed supernet;
* ``fgvc-kit search`` with MAC budgets at ``--budgets`` times the full model's
  (about 1.5x, 2x and 2.4x fewer MACs), selection on the held-out images:

  - **drop**: the drop supernet, ``--reducers drop``;
  - **merge**: the mixed supernet, ``--reducers merge``;
  - **mixed**: the mixed supernet, ``--reducers drop,merge`` (the searched schedule);
  - **ToMe off the shelf**: the ``tome`` baseline (constant r, merge everywhere) of a
    search on the *fine-tuned* model (no distillation, no search).

It prints test top-1 per budget (mean over seeds, each with its 95 % Wilson
interval per seed) and the paired difference of the mixed pick to the best
single reducer, and writes ``merge_benchmark.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fitness_benchmark import combine, command, per_seed  # noqa: E402

METHODS = ("drop", "merge", "mixed", "tome_off_the_shelf")


def search(ckpt, out, fractions, full_macs, seed, args, reducers=None):
    if not os.path.isfile(os.path.join(out, "search.json")):
        argv = ["--checkpoint", ckpt, "--seed", str(seed), "--out", out, "--population", str(args.population),
                "--generations", str(args.generations), "--mutations", str(args.population),
                "--crossovers", str(args.population)]
        if reducers:
            argv += ["--reducers", reducers]
        for f in fractions:
            argv += ["--macs-budget", f"{f * full_macs:.6g}"]
        command("search", argv)
    with open(os.path.join(out, "search.json"), encoding="utf-8") as fh:
        return json.load(fh)


def run_seed(seed, args, out):
    from tavt_kit.models import count_macs, load_checkpoint
    from tavt_kit.stats import paired_difference

    d_train, d_drop, d_mixed = (os.path.join(out, d) for d in ("train", "distill", "distill-mixed"))
    steps = ["--steps", str(args.distill_steps)] if args.distill_steps else []
    if not os.path.isfile(os.path.join(d_train, "results.json")):
        command("train", ["--dataset", "cluttered-digits", "--seed", str(seed), "--out", d_train, "--no-progress",
                          "--overwrite"] + (["--steps", str(args.train_steps)] if args.train_steps else []))
    teacher = os.path.join(d_train, "best.safetensors")
    for d, extra in ((d_drop, []), (d_mixed, ["--reducers", "drop,merge"])):
        if not os.path.isfile(os.path.join(d, "results.json")):
            command("distill", ["--checkpoint", teacher, "--seed", str(seed), "--out", d, "--no-progress",
                                "--overwrite"] + steps + extra)
    drop_net, mixed_net = os.path.join(d_drop, "best.safetensors"), os.path.join(d_mixed, "best.safetensors")
    full_macs = count_macs(load_checkpoint(drop_net)).total()
    fr = [float(f) for f in args.budgets.split(",")]
    res = {
        "drop": search(drop_net, os.path.join(out, "search-m-drop"), fr, full_macs, seed, args, "drop"),
        "merge": search(mixed_net, os.path.join(out, "search-m-merge"), fr, full_macs, seed, args, "merge"),
        "mixed": search(mixed_net, os.path.join(out, "search-m-mixed"), fr, full_macs, seed, args, "drop,merge"),
    }
    n = res["mixed"]["settings"]["test_images"]
    rows = []
    for j, f in enumerate(fr):
        row = {"budget": f, "reduction": 1 / f}
        for name in ("drop", "merge", "mixed"):
            best = res[name]["budgets"][j]["best"] or {}
            row[name] = {"test": best.get("test_accuracy"), "interval": best.get("test_interval"),
                         "holdout": best.get("holdout_accuracy"), "counts": best.get("counts"),
                         "reducers": best.get("reducers"), "macs": best.get("macs")}
        rows.append(row)
    from tavt_kit.data import build_dataset, cached_tensors
    from tavt_kit.schedules import TokenSchedule
    from tavt_kit.search.baselines import fit_tome
    from tavt_kit.stats import wilson_interval
    from fitness_benchmark import test_scores

    mixed_model = load_checkpoint(mixed_net).eval()
    drop_model = load_checkpoint(drop_net).eval()
    ds = build_dataset(mixed_model.spec["data"]["name"], split="test", model=mixed_model, augment=False)
    images, labels = cached_tensors(ds)
    # ToMe off the shelf: the fine-tuned model (no distillation, no search), constant r fitted to each budget
    finetuned = load_checkpoint(teacher).eval()
    for row in rows:
        s = fit_tome(finetuned.depth, finetuned.num_patches, lambda x: count_macs(finetuned, x).total(),
                     row["budget"] * full_macs)
        if s is None:
            row["tome_off_the_shelf"] = {"test": None}
            continue
        k = test_scores(finetuned, [s], images, labels).correct[0]
        row["tome_off_the_shelf"] = {"test": k / len(labels), "interval": list(wilson_interval(k, len(labels))),
                                     "counts": list(s.counts), "macs": count_macs(finetuned, s).total()}
    # the mixed pick against the better single reducer, paired on the same test images
    for row in rows:
        if not all(row[k]["counts"] for k in ("drop", "merge", "mixed")):
            continue
        single = max(("drop", "merge"), key=lambda k: row[k]["test"])
        net = drop_model if single == "drop" else mixed_model

        def sched(d):
            return TokenSchedule(tuple(d["counts"]), mixed_model.num_patches, reducers=d.get("reducers"))

        a = test_scores(mixed_model, [sched(row["mixed"])], images, labels).hits[0]
        b = test_scores(net, [sched(row[single])], images, labels).hits[0]
        row["mixed_vs_best_single"] = {"single": single, **paired_difference(a.tolist(), b.tolist())}
    return {"seed": seed, "test_images": n, "rows": rows,
            "full_test_accuracy": res["drop"]["full"]["test_accuracy"]}


def report(results, out):
    lines = [f"cluttered-digits, seeds {[r['seed'] for r in results]}, {results[0]['test_images']} test images; "
             "test top-1 (%), mean over seeds, at equal MAC budgets (selection on held-out images)"]
    head = f"{'budget':>16} " + " ".join(f"{m:>20}" for m in METHODS) + "   mixed - best single [paired 95 %]"
    lines.append(head)
    summary = []
    for j, row in enumerate(results[0]["rows"]):
        cells, rec = [], {"reduction": row["reduction"]}
        for m in METHODS:
            vals = [r["rows"][j][m]["test"] for r in results]
            if any(v is None for v in vals):
                cells.append(f"{'n/a':>20}")
                continue
            rec[m] = float(np.mean(vals))
            cells.append(f"{100 * rec[m]:>20.2f}")
        vs = [r["rows"][j].get("mixed_vs_best_single") for r in results]
        tail = ""
        if all(vs):
            d, lo, hi = combine(vs)
            rec["mixed_minus_best_single"] = {"difference": d, "interval": [lo, hi]}
            tail = f"   {100 * d:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]" + (
                "" if lo > 0 or hi < 0 else " (within noise)")
        lines.append(f"{row['reduction']:>9.2f}x fewer " + " ".join(cells) + tail)
        summary.append(rec)
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(out, "merge_benchmark.md"), "w", encoding="utf-8") as f:
        f.write(text + "\n")
    return summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", default=os.path.join("runs", "fitness-benchmark"))
    p.add_argument("--budgets", default="0.667,0.5,0.417")
    p.add_argument("--generations", type=int, default=6)
    p.add_argument("--population", type=int, default=12)
    p.add_argument("--train-steps", type=int)
    p.add_argument("--distill-steps", type=int)
    p.add_argument("--threads", type=int, help="torch threads (default: every core)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads or max(1, os.cpu_count() or 1))
    results = per_seed(args, run_seed, "merge.json")
    summary = report(results, args.out)
    with open(os.path.join(args.out, "merge_benchmark.json"), "w", encoding="utf-8") as f:
        json.dump({"seeds": results, "summary": summary}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
