"""Do schedules searched on your model's own weights (no training) beat ToMe on it, and the supernet's pick?

    python benchmarks/parent_search_benchmark.py [--seeds 0,1,2] [--out runs/reference]
                                                 [--search search-selection-bound0.5-p16g6-sel0.0]

Per seed, on cluttered-digits (3000 test images), with the parent (your model) and the supernet of
``benchmarks/reference_benchmark.py`` (the demo's model, bound 0.5) and that seed's finished search ``--search``
(population 16, 6 generations, NLL fitness):

1. ``tavt_kit.search_schedules`` at 1.5x, 2x, 2.5x, 3x and 4x fewer MACs with ``parent_search=True`` (the
   default): the supernet's evolution is taken from the finished search's journal (``reuse=``; the same
   candidates, each with the paired standard error the shrinkage benchmark measured for it on the same held-out
   images, so its winner's-curse correction is the default's), the evolution on your model's weights (merging
   only, same settings and seed) is run;
2. per budget, the test top-1 of ToMe on your model (r fitted to the budget), the schedule searched on your model
   (``searched_parent``), the supernet's pick and the recommendation, each paired with your model, and the
   searched-on-your-model minus ToMe and minus the supernet's pick, paired on the same images.

Then the mean over seeds of each paired difference, with the interval of the mean (independent seeds). Writes
``<out>/parent-search-<search>-s<seed>.json`` per seed (a finished seed is not run again) and the report over
the seeds asked, ``<out>/parent-search-<search>-seeds<seeds>.json`` and ``.txt``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fitness_benchmark import combine  # noqa: E402
from reference_benchmark import REDUCTIONS, read_json, seed_models, test_hits  # noqa: E402

FAMILIES = (("tome", "ToMe on your model"), ("searched_parent", "searched on your model"),
            ("pick", "supernet's pick"), ("recommended", "recommended (shipped)"))
PAIRS = (("searched_parent", "tome"), ("searched_parent", "pick"), ("recommended", "tome"))


def journal_with_noise(seed: int, args) -> str:
    """The finished search's journal with every candidate's held-out standard errors added (from the shrinkage
    benchmark's file of this seed: the same evaluator on the same images; its NLL is checked to agree)."""
    src = os.path.join(args.out, f"seed{seed}", args.search, "search.journal.jsonl")
    noise = read_json(os.path.join(args.out, f"shrinkage-{args.search}-s{seed}.json"))[0]["candidates"]
    key = lambda d: (tuple(d["counts"]), tuple(r or "" for r in d.get("reducers") or ()))  # noqa: E731
    se = {key(c): c for c in noise}
    out = os.path.join(args.out, f"seed{seed}", f"{args.search}-with-noise", "search.journal.jsonl")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    lines = []
    with open(src) as f:
        for raw in f:
            rec = json.loads(raw)
            if rec.get("kind") == "candidate":
                c = se[key(rec)]
                assert abs(c["nll"] - rec["nll"]) < 1e-4, (rec["counts"], c["nll"], rec["nll"])
                rec.update(nll_se=c["nll_se"], accuracy_se=c["accuracy_se"])
            lines.append(json.dumps(rec))
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    return out


def run_seed(seed: int, args) -> dict:
    import torch

    import tavt_kit
    from tavt_kit.search import EvolutionSettings
    from tavt_kit.search.data import search_data
    from tavt_kit.stats import paired_difference

    path = os.path.join(args.out, f"parent-search-{args.search}{_ship_tag(args)}-s{seed}.json")
    if os.path.isfile(path):
        return read_json(path)
    parent_path, parent, supernet, budgets = seed_models(seed, argparse.Namespace(
        recipe="default", bound=0.5, reducers=None, steps=150, out=args.out, parents=args.parents))
    first = os.path.join(args.out, f"seed{seed}", f"search-parent-search-p{args.population}g{args.generations}")
    sdir = first + _ship_tag(args)
    # the evolution on your model's weights of an earlier run of this benchmark is taken too (same images, weights)
    reuse = [journal_with_noise(seed, args)] + ([first] if sdir != first and os.path.isdir(first) else [])
    res = tavt_kit.search_schedules(
        supernet, None, budgets, fitness="nll", parent=parent_path, out=sdir, parent_search=True,
        reuse=reuse, ship_confidence=args.ship_confidence,
        settings=EvolutionSettings(population=args.population, generations=args.generations, seed=seed),
        log=lambda s: print(f"[seed {seed}] {s}", flush=True))
    doc = res.doc
    data = search_data(supernet, None, cache_dir=os.path.join(sdir, "cache"), log=lambda s: None)

    def hits(model, d):
        return test_hits(model, model.make_schedule(tavt_kit.TokenSchedule(
            tuple(d["counts"]), model.num_patches, reducers=d.get("reducers"))), data.test)

    rows = []
    with torch.inference_mode():
        for r, b in zip(REDUCTIONS, doc["budgets"]):
            free = b.get("training_free") or {}
            rec = b.get("recommended") or {}
            ds = {"tome": free.get("tome_parent"), "searched_parent": free.get("searched_parent"),
                  "pick": b.get("best"),
                  "recommended": b.get("best") if rec.get("family") == "searched" else free.get(rec.get("family"))}
            h = {k: hits(supernet if k == "pick" or (k == "recommended" and rec.get("family") == "searched")
                         else parent, d) for k, d in ds.items() if d}
            row = {"reduction": r, "label": b["label"], "recommended_family": rec.get("family"),
                   "why": rec.get("why"), "evidence": rec.get("evidence"),
                   **{k: {f: d.get(f) for f in ("counts", "reducers", "macs", "test_accuracy", "vs_parent",
                                                "holdout_nll", "fitness_measured", "fitness_shrunk", "r")}
                      for k, d in ds.items() if d}}
            for a, c in PAIRS:
                if a in h and c in h:
                    row[f"{a}_vs_{c}"] = paired_difference(h[a], h[c])
            rows.append(row)
    out = {"seed": seed, "parent": {"test_accuracy": doc["parent"]["test_accuracy"]},
           "full": {"vs_parent": doc["full"].get("vs_parent")}, "rows": rows,
           "test_images": doc["settings"]["test_images"], "search": args.search,
           "parent_search": {"candidates": len(res.doc.get("candidates") or ()),
                             "journal": os.path.join(sdir, "parent.journal.jsonl")}}
    from tavt_kit.files import write_json

    write_json(out, path)
    return out


def _ship_tag(args) -> str:
    """Results of a run with the ship gate carry its confidence in their names (those without: before the gate)."""
    from tavt_kit.search.recommend import DEFAULT_SHIP_CONFIDENCE

    if args.ship_confidence is None:
        args.ship_confidence = DEFAULT_SHIP_CONFIDENCE
    return f"-ship{args.ship_confidence:g}"


def _vs(v) -> str:
    return "–" if not v else "{:+.2f} [{:+.2f}, {:+.2f}]".format(100 * v["difference"],
                                                                 *(100 * x for x in v["interval"]))


def report(results) -> str:
    lines = [f"cluttered-digits, {results[0]['test_images']} test images; every figure a paired difference in points "
             "with its 95 % interval (means over seeds: the interval of the mean of independent seeds)"]
    for res in results:
        lines.append(f"\nseed {res['seed']}: your model {100 * res['parent']['test_accuracy']:.2f} %, supernet full "
                     f"schedule {_vs(res['full']['vs_parent'])}")
        for row in res["rows"]:
            cells = [f"{what} {_vs((row.get(k) or {}).get('vs_parent'))}" for k, what in FAMILIES]
            lines.append(f"  {row['reduction']:>3}x {row['label']:<12} " + "; ".join(cells)
                         + f"; ships {row['recommended_family']}")
            sp = row.get("searched_parent") or {}
            lines.append(f"        searched on your model: {sp.get('counts')} "
                         f"{'/'.join((r or '-')[0] for r in sp.get('reducers') or ())}; " + "; ".join(
                             f"{a} - {c} {_vs(row.get(f'{a}_vs_{c}'))}" for a, c in PAIRS))
    lines.append("\nmean over seeds:")
    for i, red in enumerate(REDUCTIONS):
        parts = []
        for k, what in FAMILIES:
            vs = [(r["rows"][i].get(k) or {}).get("vs_parent") for r in results]
            parts.append(f"{what} " + ("{:+.2f} [{:+.2f}, {:+.2f}]".format(*(100 * x for x in combine(vs)))
                                       if all(vs) else "missing"))
        for a, c in PAIRS:
            vs = [r["rows"][i].get(f"{a}_vs_{c}") for r in results]
            parts.append(f"{a} - {c} " + ("{:+.2f} [{:+.2f}, {:+.2f}]".format(*(100 * x for x in combine(vs)))
                                          if all(vs) else "missing"))
        lines.append(f"  {red:>3}x: " + "; ".join(parts))
    regret = [_regret(r["rows"][i]) for r in results for i in range(len(REDUCTIONS))]
    regret = [x for x in regret if x is not None]
    if regret:
        lines.append(f"  regret of the recommendation (test-best option minus shipped, points): mean "
                     f"{100 * sum(regret) / len(regret):.2f}, worst {100 * max(regret):.2f}; test-best shipped in "
                     f"{sum(x <= 0 for x in regret)} of {len(regret)}")
    ships = [r["rows"][i]["recommended_family"] for r in results for i in range(len(REDUCTIONS))]
    lines.append("  shipped: " + ", ".join(f"{f} {ships.count(f)}" for f in sorted(set(map(str, ships)))))
    return "\n".join(lines)


def _regret(row: dict):
    """How far the shipped option is below the test-best of ToMe, the schedule searched on your model and the
    supernet's pick (0: it shipped the best)."""
    acc = {k: (row.get(k) or {}).get("test_accuracy") for k in ("tome", "searched_parent", "pick", "recommended")}
    options = [v for k, v in acc.items() if k != "recommended" and v is not None]
    return max(options) - acc["recommended"] if options and acc["recommended"] is not None else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--search", default="search-selection-bound0.5-p16g6-sel0.0",
                    help="each seed's finished search (folder under <out>/seed<N>) whose supernet evolution is reused")
    ap.add_argument("--population", type=int, default=16)
    ap.add_argument("--generations", type=int, default=6)
    ap.add_argument("--out", default=os.path.join("runs", "reference"))
    ap.add_argument("--parents", default=os.path.join("runs", "distill-recipe"))
    ap.add_argument("--ship-confidence", type=float, default=None,
                    help="the recommendation's ship_confidence (default: the library's, 0.95); files are named with it")
    args = ap.parse_args(argv)
    results = [run_seed(int(s), args) for s in args.seeds.split(",")]
    text = report(results)
    print(text)
    name = os.path.join(args.out, f"parent-search-{args.search}{_ship_tag(args)}-seeds{args.seeds.replace(',', '+')}")
    from tavt_kit.files import write_json, write_text

    write_json(results, name + ".json")
    write_text(name + ".txt", text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
