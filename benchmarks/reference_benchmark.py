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
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fitness_benchmark import combine, command  # noqa: E402

REDUCTIONS = (1.5, 2.0, 2.5, 3.0, 4.0)
RECIPES = {  # distill options of a recipe (see benchmarks/distill_recipe.py)
    "old": ["--teacher", "full", "--full-label-weight", "1", "--full-kd-weight", "0", "--lr", "5e-4",
            "--weight-decay", "0.05"],
    "parent-kd-lr1e-4": ["--teacher", "parent", "--full-label-weight", "0", "--full-kd-weight", "1", "--lr", "1e-4",
                         "--weight-decay", "0"],
}


def read_json(path):
    with open(path) as f:
        return json.load(f)


def parent_checkpoint(seed: int, out: str, parents: str) -> str:
    reuse = os.path.join(parents, f"seed{seed}", "parent", "best.safetensors")
    if os.path.isfile(reuse):
        return reuse
    d = os.path.join(out, f"seed{seed}", "parent")
    if not os.path.isfile(os.path.join(d, "results.json")):
        command("train", ["--dataset", "cluttered-digits", "--seed", str(seed), "--out", d])
    return os.path.join(d, "best.safetensors")


def supernet_checkpoint(seed: int, parent: str, out: str, recipe: str, bound: float, steps: int) -> str:
    d = os.path.join(out, f"seed{seed}", f"{recipe}-bound{bound}")
    if not os.path.isfile(os.path.join(d, "results.json")):
        command("distill", ["--checkpoint", parent, "--seed", str(seed), "--out", d, "--bound", str(bound),
                            "--steps", str(steps), "--warmup-steps", str(max(1, steps // 10))] + RECIPES[recipe])
    return os.path.join(d, "best.safetensors")


def run_seed(seed: int, args) -> dict:
    import tavt_kit
    from tavt_kit.search import EvolutionSettings

    path = os.path.join(args.out, f"seed{seed}-{args.recipe}-bound{args.bound}.json")
    if os.path.isfile(path):
        return read_json(path)
    parent = parent_checkpoint(seed, args.out, args.parents)
    supernet = tavt_kit.load_checkpoint(supernet_checkpoint(seed, parent, args.out, args.recipe, args.bound,
                                                            args.steps)).eval()
    full = tavt_kit.count_macs(supernet).total()
    budgets = [f"{full / r / 1e6:.4g}M MACs" for r in REDUCTIONS]
    res = tavt_kit.search_schedules(
        supernet, None, budgets, fitness="nll", parent=parent, out=os.path.join(args.out, f"seed{seed}", "search"),
        settings=EvolutionSettings(population=args.population, generations=args.generations, seed=seed),
        log=lambda s: print(f"[seed {seed}] {s}", flush=True))
    doc = res.doc
    rows = []
    for r, b in zip(REDUCTIONS, doc["budgets"]):
        free = b.get("training_free") or {}
        rows.append({"reduction": r, "label": b["label"], "pick": b.get("best"), "tome": free.get("tome_parent"),
                     "recommended": b.get("recommended")})
    out = {"seed": seed, "parent": doc["parent"], "full": doc["full"], "rows": rows,
           "test_images": doc["settings"]["test_images"]}
    from tavt_kit.files import write_json

    write_json(out, path)
    return out


def _pct(d):
    return "   –  " if not d or d.get("test_accuracy") is None else f"{100 * d['test_accuracy']:6.2f}"


def _vs(d):
    v = (d or {}).get("vs_parent")
    return "" if not v else "{:+.2f} [{:+.2f}, {:+.2f}]".format(100 * v["difference"], *(100 * x for x in v["interval"]))


def report(results) -> str:
    lines = [f"cluttered-digits, {results[0]['test_images']} test images; vs parent = paired difference to the "
             "parent (points, 95 % interval)"]
    for res in results:
        lines.append(f"\nseed {res['seed']}: parent {_pct(res['parent'])} %, supernet full schedule "
                     f"{_pct(res['full'])} ({_vs(res['full'])})")
        lines.append(f"  {'budget':<16}{'ToMe on parent':>34}{'searched pick':>34}   recommended")
        for row in res["rows"]:
            rec = (row.get("recommended") or {}).get("family") or "–"
            lines.append(f"  {row['reduction']:>3}x {row['label']:<11} {_pct(row['tome'])} {_vs(row['tome']):<26}"
                         f" {_pct(row['pick'])} {_vs(row['pick']):<26}  {rec}")
    lines.append("\nmean over seeds (interval of the mean):")
    full = [r["full"]["vs_parent"] for r in results if r["full"].get("vs_parent")]
    if full:
        lines.append("  supernet full schedule vs parent: {:+.2f} [{:+.2f}, {:+.2f}]".format(
            *(100 * x for x in combine(full))))
    for i, red in enumerate(REDUCTIONS):
        for key, name in (("tome", "ToMe on parent"), ("pick", "searched pick")):
            vs = [r["rows"][i][key]["vs_parent"] for r in results if (r["rows"][i].get(key) or {}).get("vs_parent")]
            if len(vs) == len(results):
                lines.append(f"  {red}x {name:<16} vs parent {{:+.2f}} [{{:+.2f}}, {{:+.2f}}]".format(
                    *(100 * x for x in combine(vs))))
            else:
                lines.append(f"  {red}x {name:<16} nothing meets it on {len(results) - len(vs)} seed(s)")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--recipe", default="parent-kd-lr1e-4", choices=sorted(RECIPES))
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
    from tavt_kit.files import write_text

    write_text(os.path.join(args.out, f"report-{args.recipe}-bound{args.bound}.txt"), text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
