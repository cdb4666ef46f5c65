"""What does the GPU's scorer cost in accuracy? TAVT's significance score against EViT's class-row score, at the
same token schedules, on cluttered-digits (3000 test images).

    python benchmarks/scorer_accuracy.py [--seeds 0,1,2] [--out runs/scorer-accuracy] [--parents DIR]

Why: on a GPU the ``tavt`` score needs the whole attention matrix and gives up the fused attention kernel; with
``cls`` (EViT's score: the class token's attention row, computed again beside the fused kernel) dropping
schedules realise 0.80-0.82 of their MAC reduction at batch 32 on an H200, against 0.64 with ``tavt``
(``docs/benchmarks/gpu.md``). The scorer decides which tokens a block keeps, so it is chosen before
distillation (``fgvc-kit distill --scorer``). Per seed:

1. your model: ``fgvc-kit train --dataset cluttered-digits --seed N`` (the demo's model and recipe; reused from
   ``--parents`` when there);
2. two supernets distilled from it with distill's defaults and ``--bound 0.5``, one per scorer;
3. test top-1 at the full schedule and at the uniform and EViT-style drop schedules fitted to 1.5x, 2x, 2.5x, 3x
   and 4x fewer MACs (the same schedules for both scorers): your model with each scorer (no training), and each
   supernet with its own scorer; the paired differences ``cls - tavt`` on the same images.

Then the mean over seeds of each difference, with the interval of the mean (independent seeds). Each seed's
result is a file of its own; a re-run skips finished work.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fitness_benchmark import combine, command  # noqa: E402
from reference_benchmark import REDUCTIONS, RECIPES, parent_checkpoint, read_json, test_hits  # noqa: E402

from tavt_kit.train.trainer import STATE_FILE  # noqa: E402  (a killed run resumes from it)

SCORERS = ("tavt", "cls", "tavt-sampled")  # tavt first: the others are compared with it
FAMILIES = ("uniform", "evit")


def supernet(seed: int, parent: str, scorer: str, args) -> str:
    d = os.path.join(args.out, f"seed{seed}", f"default-bound{args.bound}-{scorer}")
    if not os.path.isfile(os.path.join(d, "results.json")):
        resume = ["--resume"] if os.path.isfile(os.path.join(d, STATE_FILE)) else []
        command("distill", resume + ["--checkpoint", parent, "--seed", str(seed), "--out", d, "--scorer", scorer,
                                     "--bound", str(args.bound), "--steps", str(args.steps),
                                     "--warmup-steps", str(max(1, args.steps // 10))] + RECIPES["default"])
    return os.path.join(d, "best.safetensors")


def run_seed(seed: int, args) -> dict:
    import torch

    import tavt_kit
    from tavt_kit.search.baselines import baseline_schedules
    from tavt_kit.search.data import search_data
    from tavt_kit.stats import paired_difference

    path = os.path.join(args.out, f"seed{seed}-bound{args.bound}.json")
    done = read_json(path) if os.path.isfile(path) else None
    if done is not None and set(done["supernet_full"]) >= set(SCORERS):
        return done  # a file from before tavt-sampled is made again (the supernets are reused)
    parent_path = parent_checkpoint(seed, args.out, args.parents)
    nets = {s: tavt_kit.load_checkpoint(supernet(seed, parent_path, s, args)).eval() for s in SCORERS}
    parent = tavt_kit.load_checkpoint(parent_path).eval()
    data = search_data(nets["tavt"], None, cache_dir=os.path.join(args.out, f"seed{seed}", "cache"),
                       log=lambda s: None)
    full = tavt_kit.count_macs(parent).total()
    limits = {f"{r}x": full / r for r in REDUCTIONS}
    base = baseline_schedules(parent.depth, parent.num_patches, lambda s: tavt_kit.count_macs(parent, s).total(),
                              limits)
    rows = []
    with torch.inference_mode():
        ref = test_hits(parent, parent.full_schedule(), data.test)
        for s in SCORERS:
            assert nets[s].scorer == s, (s, nets[s].scorer)
        full_hits = {s: test_hits(nets[s], nets[s].full_schedule(), data.test) for s in SCORERS}
        for r in REDUCTIONS:
            for fam in FAMILIES:
                sched = base[f"{r}x"].get(fam)
                if sched is None:
                    continue
                hits = {}
                for s in SCORERS:
                    parent.scorer = s  # your model, no training: the scorer is a forward-time choice
                    hits["parent", s] = test_hits(parent, sched, data.test)
                    hits["supernet", s] = test_hits(nets[s], sched, data.test)
                row = {"reduction": r, "family": fam, "counts": list(sched.counts),
                       "macs": tavt_kit.count_macs(parent, sched).total()}
                for who in ("parent", "supernet"):
                    for s in SCORERS:
                        h = hits[who, s]
                        row[f"{who}_{s}"] = {"test_accuracy": sum(h) / len(h), "vs_parent": paired_difference(h, ref)}
                    for s in SCORERS[1:]:
                        row[f"{who}_{s}_minus_tavt"] = paired_difference(hits[who, s], hits[who, "tavt"])
                rows.append(row)
    out = {"seed": seed, "parent_accuracy": sum(ref) / len(ref), "test_images": len(ref), "rows": rows,
           "supernet_full": {s: {"test_accuracy": sum(h) / len(h), "vs_parent": paired_difference(h, ref)}
                             for s, h in full_hits.items()}}
    from tavt_kit.files import write_json

    write_json(out, path)
    return out


def _vs(v) -> str:
    return f"{100 * v['difference']:+.2f} [{100 * v['interval'][0]:+.2f}, {100 * v['interval'][1]:+.2f}]"


def _mean(vs) -> str:
    m, lo, hi = combine(vs)
    return f"{100 * m:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]" + (" *" if lo > 0 or hi < 0 else "")


def report(results) -> str:
    seeds = [r["seed"] for r in results]
    lines = [f"cluttered-digits, {results[0]['test_images']} test images, seeds {seeds}; your model "
             + ", ".join(f"{100 * r['parent_accuracy']:.2f}" for r in results) + " %",
             "supernet full schedule vs your model: "
             + "; ".join(f"{s} {_mean([r['supernet_full'][s]['vs_parent'] for r in results])}" for s in SCORERS),
             "",
             "mean over seeds, paired on the same images (* = the interval excludes 0)"]
    columns = ([(f"supernet {s} vs yours", lambda p, s=s: p[f"supernet_{s}"]["vs_parent"]) for s in SCORERS]
               + [(f"supernet {s} - tavt", lambda p, s=s: p[f"supernet_{s}_minus_tavt"]) for s in SCORERS[1:]]
               + [(f"yours: {s} - tavt", lambda p, s=s: p[f"parent_{s}_minus_tavt"]) for s in SCORERS[1:]])
    lines.append(f"{'schedule':<14} " + " ".join(f"{c:>30}" for c, _ in columns))
    for i, row in enumerate(results[0]["rows"]):
        per = [r["rows"][i] for r in results]
        lines.append(f"{row['family']} {row['reduction']}x".ljust(14) + " "
                     + " ".join(f"{_mean([get(p) for p in per]):>30}" for _, get in columns))
    for s in SCORERS[1:]:
        lines += ["", f"per seed, supernet {s} - tavt:"]
        for r in results:
            lines.append(f"  seed {r['seed']}: " + "; ".join(f"{x['family']} {x['reduction']}x "
                                                              f"{_vs(x[f'supernet_{s}_minus_tavt'])}" for x in r["rows"]))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--bound", type=float, default=0.5)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--out", default=os.path.join("runs", "scorer-accuracy"))
    ap.add_argument("--parents", default=os.path.join("runs", "distill-recipe"))
    ap.add_argument("--report-only", action="store_true", help="report the seeds already finished")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.report_only:
        results = [read_json(os.path.join(args.out, f"seed{s}-bound{args.bound}.json")) for s in seeds]
    else:
        results = [run_seed(s, args) for s in seeds]
    text = report(results)
    print(text)
    from tavt_kit.files import write_text

    write_text(os.path.join(args.out, f"report-bound{args.bound}-seeds{'+'.join(map(str, seeds))}.txt"), text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
