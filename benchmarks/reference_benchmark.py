"""Is what fgvc-kit hands back better than the user's own model and what needs no training?

    python benchmarks/reference_benchmark.py [--seeds 0,1,2] [--recipe parent-kd-lr1e-4] [--bound 0.5]
                                             [--out runs/reference] [--parents runs/distill-recipe]

On cluttered-digits (3000 test images), per seed:

1. the *parent*: ``fgvc-kit train --dataset cluttered-digits --seed N`` (the demo's model and recipe; the
   parents of ``benchmarks/distill_recipe.py`` are reused when ``--parents`` holds them);
2. a supernet: ``fgvc-kit distill`` from the parent with the recipe's options and ``--bound`` (the widest
   per-block drop ratio: 0.3 ends the demo's space at 2.4x fewer MACs, 0.5 reaches past 4x);
3. ``tavt_kit.search_schedules`` (the Python API) at 1.5x, 2x, 2.5x, 3x and 4x fewer MACs than the full
   model, with the parent as the reference: the parent, ToMe on the parent (constant r fitted to the
   budget, no training), the supernet's full schedule, the searched pick and the recommended deployable
   (chosen on held-out images among the pick and the training-free ones), each with its test top-1 and the
   paired difference to the parent.

Then the mean over seeds of each paired difference, with the interval of the mean (independent seeds), and
the pick minus the best training-free deployable. Every (seed) result is a file of its own; a re-run skips
finished work.
"""
from __future__ import annotations

import argparse
import os

from harness import (RECIPES, add_seeds, command, fmt_mean, fmt_vs, parent_at, read_json, test_hits, write_json,
                     write_text)
from tavt_kit.train.trainer import STATE_FILE  # a killed run resumes from it
from tavt_kit.search import EvaluationOptions, SpaceOptions

REDUCTIONS = (1.5, 2.0, 2.5, 3.0, 4.0)


def parent_checkpoint(seed: int, out: str, parents: str) -> str:
    reuse = os.path.join(parents, f"seed{seed}", "parent", "best.safetensors")
    if os.path.isfile(reuse):
        return reuse
    d = os.path.join(out, f"seed{seed}", "parent")
    if not os.path.isfile(os.path.join(d, "results.json")):
        command("train", ["--dataset", "cluttered-digits", "--seed", str(seed), "--out", d])
    return os.path.join(d, "best.safetensors")


def supernet_checkpoint(seed: int, parent: str, out: str, args) -> str:
    d = os.path.join(out, f"seed{seed}", _tag(args))
    if not os.path.isfile(os.path.join(d, "results.json")):
        resume = ["--resume"] if os.path.isfile(os.path.join(d, STATE_FILE)) else []  # a killed run goes on
        command("distill", resume + ["--checkpoint", parent, "--seed", str(seed), "--out", d,
                                     "--bound", str(args.bound), "--steps", str(args.steps),
                                     "--warmup-steps", str(max(1, args.steps // 10))] +
                (["--reducers", args.reducers] if args.reducers else []) + RECIPES[args.recipe])
    return os.path.join(d, "best.safetensors")


def _tag(args) -> str:
    return f"{args.recipe}-bound{args.bound}" + (f"-{args.reducers.replace(',', '+')}" if args.reducers else "")


def _search_tag(args) -> str:
    """The supernet's tag and the reducers searched (``search-auto``: search_schedules' default)."""
    return f"{_tag(args)}-search-{args.search_reducers.replace(',', '+')}"


def seed_models(seed: int, args):
    """``(parent path, parent, supernet, MAC budgets at REDUCTIONS)`` of a seed, trained and distilled if missing."""
    import tavt_kit

    parent_path = parent_checkpoint(seed, args.out, args.parents)
    supernet = tavt_kit.load_checkpoint(supernet_checkpoint(seed, parent_path, args.out, args)).eval()
    parent = tavt_kit.load_checkpoint(parent_path).eval()
    full = tavt_kit.count_macs(supernet).total()
    return parent_path, parent, supernet, [f"{full / r / 1e6:.4g}M MACs" for r in REDUCTIONS]


def run_seed(seed: int, args) -> dict:
    import torch

    import tavt_kit
    from tavt_kit.search import EvolutionSettings
    from tavt_kit.search.data import search_data
    from tavt_kit.stats import paired_difference

    path = os.path.join(args.out, f"seed{seed}-{_search_tag(args)}.json")
    if os.path.isfile(path):
        return read_json(path)
    parent_path, parent, supernet, budgets = seed_models(seed, args)
    sdir = os.path.join(args.out, f"seed{seed}", f"search-{_search_tag(args)}")
    reducers = None if args.search_reducers == "auto" else args.search_reducers.split(",")
    res = tavt_kit.search_schedules(
        supernet, None, budgets,
        evolution=EvolutionSettings(population=args.population, generations=args.generations, seed=seed),
        evaluation=EvaluationOptions(fitness="nll"), space=SpaceOptions(reducers=reducers), parent=parent_path,
        out=sdir, log=lambda s: print(f"[seed {seed}] {s}", flush=True))
    doc = res.doc
    data = search_data(supernet, None, cache_dir=os.path.join(sdir, "cache"), log=lambda s: None)
    with torch.inference_mode():
        ref = test_hits(parent, parent.full_schedule(), data.test)
        rows = []
        for r, b in zip(REDUCTIONS, doc["budgets"]):
            free = b.get("training_free") or {}
            pick, tome = b.get("best"), free.get("tome_parent")
            rec = b.get("recommended") or {}
            row = {"reduction": r, "label": b["label"], "pick": pick, "tome": tome, "recommended": rec,
                   "recommended_entry": pick if rec.get("family") == "searched" else free.get(rec.get("family"))}
            if pick and tome:  # what training buys over the training-free deployable, paired on the same images
                ph = test_hits(supernet, supernet.make_schedule(tavt_kit.TokenSchedule(
                    tuple(pick["counts"]), supernet.num_patches, reducers=pick.get("reducers"))), data.test)
                th = test_hits(parent, parent.make_schedule(tavt_kit.TokenSchedule(
                    tuple(tome["counts"]), parent.num_patches, reducers=tome.get("reducers"))), data.test)
                row["pick_vs_tome"] = paired_difference(ph, th)
            rows.append(row)
    i8 = parent_at(parent, data, "int8", seed)  # NNCF PTQ: the one-liner a user tries first
    out = {"seed": seed, "parent": doc["parent"], "full": doc["full"], "rows": rows,
           "parent_int8": {"test_accuracy": sum(i8) / len(i8), "vs_parent": paired_difference(i8, ref)},
           "test_images": doc["settings"]["test_images"], "space": doc.get("space"), "tag": _search_tag(args)}
    write_json(out, path)
    return out


def _pct(d):
    return "   –  " if not d or d.get("test_accuracy") is None else f"{100 * d['test_accuracy']:6.2f}"


def _vs(d, key="vs_parent"):
    return fmt_vs((d or {}).get(key) if key else d, empty="")


def report(results) -> str:
    lines = [f"cluttered-digits, {results[0]['test_images']} test images, supernets {results[0]['tag']}; vs parent = "
             "paired difference to the parent (points, 95 % interval)"]
    for res in results:
        lines.append(f"\nseed {res['seed']}: parent {_pct(res['parent'])} %, parent int8 (NNCF PTQ) "
                     f"{_pct(res['parent_int8'])} ({_vs(res['parent_int8'])}), supernet full schedule "
                     f"{_pct(res['full'])} ({_vs(res['full'])})")
        lines.append(f"  {'budget':<17}{'ToMe on parent':>34}{'searched pick':>34}{'pick - ToMe':>26}   recommended")
        for row in res["rows"]:
            rec = (row.get("recommended") or {}).get("family") or "–"
            lines.append(f"  {row['reduction']:>3}x {row['label']:<12} {_pct(row['tome'])} {_vs(row['tome']):<26}"
                         f" {_pct(row['pick'])} {_vs(row['pick']):<26} {_vs(row.get('pick_vs_tome'), None):<24}"
                         f"  {rec}")
    lines.append("\nmean over seeds (interval of the mean of independent paired differences):")
    lines.append(f"  parent int8 (NNCF PTQ) vs parent:  {fmt_mean([r['parent_int8']['vs_parent'] for r in results])}")
    full = [r["full"]["vs_parent"] for r in results if r["full"].get("vs_parent")]
    if full:
        lines.append(f"  supernet full schedule vs parent:  {fmt_mean(full)}")
    for i, red in enumerate(REDUCTIONS):
        for key, name, field in (("tome", "ToMe on parent", "vs_parent"), ("pick", "searched pick", "vs_parent"),
                                 ("recommended_entry", "recommended", "vs_parent"), (None, "pick - ToMe", None)):
            if key is None:
                vs = [r["rows"][i]["pick_vs_tome"] for r in results if r["rows"][i].get("pick_vs_tome")]
            else:
                vs = [r["rows"][i][key][field] for r in results if (r["rows"][i].get(key) or {}).get(field)]
            if len(vs) == len(results):
                lines.append(f"  {red:>3}x {name:<16} {'' if key is None else 'vs parent '}{fmt_mean(vs)}")
            else:
                lines.append(f"  {red:>3}x {name:<16} missing on {len(results) - len(vs)} seed(s)")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_seeds(ap)
    ap.add_argument("--recipe", default="default", choices=sorted(RECIPES))
    ap.add_argument("--reducers", default=None, help="distill with these reducers (drop,merge)")
    ap.add_argument("--search-reducers", default="auto",
                    help="the reducers the search gives blocks: auto (search_schedules' default: the supernet's, and "
                         "merge too on a timm ViT), drop (TAVT's space), drop,merge")
    ap.add_argument("--bound", type=float, default=0.5)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--population", type=int, default=20)
    ap.add_argument("--generations", type=int, default=12)
    ap.add_argument("--out", default=os.path.join("runs", "reference"))
    ap.add_argument("--parents", default=os.path.join("runs", "distill-recipe"))
    args = ap.parse_args(argv)
    results = [run_seed(int(s), args) for s in args.seeds.split(",")]
    text = report(results)
    print(text)
    write_text(os.path.join(args.out, f"report-{_search_tag(args)}.txt"), text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
