"""A trained model scored with another scorer at the same schedules, no training: paired differences against its own.

    python benchmarks/scorer_swap.py CHECKPOINT [CHECKPOINT ...] [--reductions 1.5,2,3,4] [--reference SCORER]
                                     [--out DIR]

The scorer only decides which tokens a dropping block keeps; the weights do not depend on it where no token drops.
So a supernet distilled with ``tavt`` can be scored with ``tavt-sampled`` (TAVT's sum over at most 32 query rows,
beside the fused attention), and a parent trained at the full schedule with any scorer. This prints, per
checkpoint, test top-1 on cluttered-digits (the checkpoint's own data settings, 3000 test images) at the uniform
and EViT-style drop schedules fitted to ``--reductions`` fewer MACs, with the checkpoint's scorer and the paired
difference of each other scorer on the same images. Where a swap is within noise, the cheaper scorer can be chosen
after training (``model.scorer = ...``). ``docs/benchmarks/scorer_accuracy.md`` quotes it.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_benchmark import test_hits  # noqa: E402

SCORERS = ("tavt", "tavt-sampled", "cls")


def swap(path: str, reductions, out: str, reference=None) -> dict:
    import torch

    import tavt_kit
    from tavt_kit.models.attention import sampled_queries
    from tavt_kit.search.baselines import baseline_schedules
    from tavt_kit.search.data import search_data
    from tavt_kit.stats import paired_difference

    model = tavt_kit.load_checkpoint(path).eval()
    own = reference or model.scorer
    data = search_data(model, None, cache_dir=os.path.join(out, "cache"), log=lambda s: None)
    full = tavt_kit.count_macs(model).total()
    base = baseline_schedules(model.depth, model.num_patches, lambda s: tavt_kit.count_macs(model, s).total(),
                              {r: full / r for r in reductions})
    others = [s for s in SCORERS if s != own and (s != "cls" or getattr(model, "cls_token", None) is not None)]
    tokens = model.num_patches + model.num_prefix_tokens
    doc = {"checkpoint": path, "scorer": own, "test_images": len(data.test.labels), "tokens": tokens,
           "sampled_queries_first_block": sampled_queries(tokens), "rows": []}
    with torch.inference_mode():
        for r in reductions:
            for fam in ("uniform", "evit"):
                sched = base[r].get(fam)
                if sched is None:
                    continue
                model.scorer = own
                ref = test_hits(model, sched, data.test)
                row = {"reduction": r, "family": fam, "counts": list(sched.counts), "accuracy": sum(ref) / len(ref)}
                for s in others:
                    model.scorer = s
                    row[s] = paired_difference(test_hits(model, sched, data.test), ref)
                model.scorer = own
                doc["rows"].append(row)
                print(line(row, own, others), flush=True)
    return doc


def line(row, own, others) -> str:
    cells = [f"{s} {100 * row[s]['difference']:+.2f} [{100 * row[s]['interval'][0]:+.2f}, "
             f"{100 * row[s]['interval'][1]:+.2f}]" for s in others]
    return f"  {row['family']} {row['reduction']:g}x  {own} {100 * row['accuracy']:.2f} %;  " + ";  ".join(cells)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--reductions", default="1.5,2,3,4")
    ap.add_argument("--out", default=os.path.join("runs", "scorer-swap"))
    ap.add_argument("--reference", choices=SCORERS,
                    help="the scorer the others are paired against (default: the checkpoint's own; a parent "
                         "trained at the full schedule has no scorer of its own that mattered)")
    args = ap.parse_args(argv)
    from tavt_kit.files import write_json

    reductions = [float(v) for v in args.reductions.split(",")]
    for path in args.checkpoints:
        if not os.path.isfile(path):
            raise SystemExit(f"{path}: checkpoint not found")
        print(f"{path}:", flush=True)
        doc = swap(path, reductions, args.out, args.reference)
        print(f"  ({doc['tokens']} tokens, {doc['sampled_queries_first_block']} query rows of tavt-sampled in the "
              f"first block; differences paired on {doc['test_images']} test images)", flush=True)
        name = os.path.splitext(os.path.relpath(path))[0].replace(os.sep, "-").strip(".-")
        write_json(doc, os.path.join(args.out, f"{name}.json"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
