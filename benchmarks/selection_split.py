"""Does choosing each budget's deployable on a selection split (held-out images the evolution never scored) ship
better models than choosing it on the evolution's own images?

    python benchmarks/selection_split.py [--seeds 0,1,2] [--fractions 0,0.5] [--bound 0.5]
                                         [--population 16] [--generations 6] [--out runs/reference]

On cluttered-digits (1500 held-out, 3000 test images), per seed, the parent and the supernet of
``benchmarks/reference_benchmark.py`` (trained there, or here when missing: the demo's model and recipe) are
searched with ``tavt_kit.search_schedules`` at 1.5x, 2x, 2.5x, 3x and 4x fewer MACs once per ``--fractions``
value of ``selection`` (0: the families compared on the images the evolution chose on, as before; 0.5: half of the
held-out images set aside). Per budget and setting, on the 3000 test images:

* the recommended deployable's paired difference to the parent (points, 95 % interval);
* every option's test accuracy (searched pick, ToMe on the parent, the parent where it meets the budget) and the
  *regret* of the recommendation: the test-best option's accuracy minus the recommended one's (0 when the held-out
  choice was the test-best);
* how often the recommendation was the searched pick, and the searched pick's held-out (or selection) advantage over
  ToMe against its test advantage: the winner's curse is the gap between the two.

Then, per budget, the mean over seeds of the recommended deployable's difference to the parent for each setting,
and the paired difference between the settings' recommendations. Each (seed, fraction) result is a file of its own;
a re-run skips finished work.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fitness_benchmark import combine  # noqa: E402
from reference_benchmark import REDUCTIONS, read_json, seed_models, test_hits  # noqa: E402


def _hits(model, d, data):
    import tavt_kit

    return test_hits(model, model.make_schedule(tavt_kit.TokenSchedule(
        tuple(d["counts"]), model.num_patches, reducers=d.get("reducers"))), data.test)


def run(seed: int, fraction: float, args) -> dict:
    import torch

    import tavt_kit
    from tavt_kit.files import write_json
    from tavt_kit.search import EvolutionSettings
    from tavt_kit.search.data import search_data
    from tavt_kit.stats import paired_difference

    tag = f"bound{args.bound}-p{args.population}g{args.generations}-sel{fraction}"
    path = os.path.join(args.out, f"seed{seed}-selection-{tag}.json")
    if os.path.isfile(path):
        return read_json(path)
    parent_path, parent, supernet, budgets = seed_models(seed, args)
    sdir = os.path.join(args.out, f"seed{seed}", f"search-selection-{tag}")
    res = tavt_kit.search_schedules(
        supernet, None, budgets, fitness="nll", parent=parent_path, out=sdir, selection=fraction,
        settings=EvolutionSettings(population=args.population, generations=args.generations, seed=seed),
        log=lambda s: print(f"[seed {seed} selection {fraction}] {s}", flush=True))
    doc = res.doc
    data = search_data(supernet, None, cache_dir=os.path.join(sdir, "cache"), log=lambda s: None)
    split = "selection" if doc["settings"].get("selection_images") else "holdout"
    rows = []
    with torch.inference_mode():
        ref = test_hits(parent, parent.full_schedule(), data.test)
        for r, b in zip(REDUCTIONS, doc["budgets"]):
            options = {"searched": b.get("best"), **(b.get("training_free") or {})}
            options = {k: v for k, v in options.items() if v is not None}
            hits = {k: _hits(supernet if k == "searched" else parent, v, data) for k, v in options.items()}
            test = {k: sum(h) / len(h) for k, h in hits.items()}
            rec = (b.get("recommended") or {}).get("family")
            row = {"reduction": r, "label": b["label"], "recommended": rec, "options": {
                k: {"test_accuracy": test[k], "vs_parent": paired_difference(hits[k], ref),
                    "chosen_on": {"accuracy": v.get(f"{split}_accuracy"), "nll": v.get(f"{split}_nll")},
                    "counts": v["counts"], "reducers": v.get("reducers")} for k, v in options.items()}}
            if rec in hits:
                row["recommended_hits"] = hits[rec]
                row["regret"] = max(test.values()) - test[rec]
            if "searched" in options and "tome_parent" in options:
                row["pick_vs_tome_test"] = paired_difference(hits["searched"], hits["tome_parent"])
                row["pick_minus_tome_chosen_on"] = (options["searched"].get(f"{split}_accuracy") or 0) - \
                    (options["tome_parent"].get(f"{split}_accuracy") or 0)
            rows.append(row)
    out = {"seed": seed, "selection": fraction, "split": split, "settings": doc["settings"],
           "parent": doc["parent"]["test_accuracy"], "rows": rows}
    write_json(out, path)
    return out


def _v(v) -> str:
    return "{:+.2f} [{:+.2f}, {:+.2f}]".format(100 * v["difference"], *(100 * x for x in v["interval"]))


def _m(vs) -> str:
    return "{:+.2f} [{:+.2f}, {:+.2f}]".format(*(100 * x for x in combine(vs)))


def report(results: dict, seeds, fractions) -> str:
    from tavt_kit.stats import paired_difference

    lines = ["cluttered-digits, 3000 test images; every figure is the paired difference to the parent (points, 95 % "
             "interval) unless said; regret = the test-best option's top-1 minus the recommended one's"]
    for seed in seeds:
        lines.append(f"\nseed {seed}: parent {100 * results[(seed, fractions[0])]['parent']:.2f} %")
        for f in fractions:
            res = results[(seed, f)]
            st = res["settings"]
            lines.append(f"  selection {f}: evolution on {st['holdout_images']} held-out images, choice on "
                         f"{st.get('selection_images') or st['holdout_images']} ({res['split']})")
            for row in res["rows"]:
                opts = "  ".join(f"{k} {100 * o['test_accuracy']:.2f}" for k, o in sorted(row["options"].items()))
                rec = row["recommended"]
                curse = ""
                if "pick_vs_tome_test" in row:
                    curse = (f"  pick-ToMe: chosen-on {100 * row['pick_minus_tome_chosen_on']:+.2f}, test "
                             f"{100 * row['pick_vs_tome_test']['difference']:+.2f}")
                lines.append(f"    {row['reduction']:>3}x  recommended {rec or '-':<12} "
                             f"{_v(row['options'][rec]['vs_parent']) if rec in row['options'] else '-':<24} "
                             f"regret {100 * row.get('regret', 0):.2f}   ({opts}){curse}")
    lines.append("\nmean over seeds:")
    for i, red in enumerate(REDUCTIONS):
        parts = []
        for f in fractions:
            vs = [results[(s, f)]["rows"][i]["options"][results[(s, f)]["rows"][i]["recommended"]]["vs_parent"]
                  for s in seeds if results[(s, f)]["rows"][i].get("recommended") in results[(s, f)]["rows"][i]["options"]]
            regret = [results[(s, f)]["rows"][i].get("regret", 0) for s in seeds]
            searched = sum(results[(s, f)]["rows"][i].get("recommended") == "searched" for s in seeds)
            best = sum(results[(s, f)]["rows"][i].get("regret", 1) == 0 for s in seeds)
            parts.append(f"selection {f}: {_m(vs) if len(vs) == len(seeds) else 'missing':<24} regret "
                         f"{100 * sum(regret) / len(regret):.2f}, test-best {best}/{len(seeds)}, searched "
                         f"{searched}/{len(seeds)}")
        lines.append(f"  {red:>3}x  " + "   ".join(parts))
        if len(fractions) == 2:
            a, b = fractions
            diffs = [paired_difference(results[(s, b)]["rows"][i]["recommended_hits"],
                                       results[(s, a)]["rows"][i]["recommended_hits"]) for s in seeds
                     if "recommended_hits" in results[(s, a)]["rows"][i]
                     and "recommended_hits" in results[(s, b)]["rows"][i]]
            if len(diffs) == len(seeds):
                lines.append(f"        recommended at {b} minus at {a} (paired): {_m(diffs)}")
    total = {f: sum(results[(s, f)]["rows"][i].get("regret", 0) for s in seeds for i in range(len(REDUCTIONS)))
             / (len(seeds) * len(REDUCTIONS)) for f in fractions}
    lines.append("  mean regret over every budget and seed: " +
                 ", ".join(f"selection {f}: {100 * v:.2f} points" for f, v in total.items()))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--fractions", default="0,0.5", help="selection fractions compared (comma-separated)")
    ap.add_argument("--recipe", default="default")
    ap.add_argument("--reducers", default=None)
    ap.add_argument("--bound", type=float, default=0.5)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--population", type=int, default=16)
    ap.add_argument("--generations", type=int, default=6)
    ap.add_argument("--out", default=os.path.join("runs", "reference"))
    ap.add_argument("--parents", default=os.path.join("runs", "distill-recipe"))
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    fractions = [float(f) for f in args.fractions.split(",")]
    results = {(s, f): run(s, f, args) for s in seeds for f in fractions}
    text = report(results, seeds, fractions)
    print(text)
    from tavt_kit.files import write_text

    write_text(os.path.join(args.out, f"report-selection-bound{args.bound}.txt"), text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
