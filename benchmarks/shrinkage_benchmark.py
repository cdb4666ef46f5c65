"""Does correcting the search's pick for the winner's curse (:mod:`tavt_kit.search.shrinkage`) ship better models?

    python benchmarks/shrinkage_benchmark.py [--seeds 0,1,2] [--search search-selection-bound0.5-p16g6-sel0.0]
                                             [--out runs/reference]
    python benchmarks/shrinkage_benchmark.py --seeds 0 --out runs/lr-shrink --latency \\
        --search search-b32-f0.5+0.4+0.3+0.2-pfp32-t1-bound0.7 [--parent-dir parent --supernet-dir supernet-bound0.7]

Both rules are applied to the *same* evolution: each seed's finished search (its journal of every candidate the
evolution scored on the held-out images, and its ``search.json``) is read, every candidate is scored again on the
held-out images with its paired standard error, and per budget:

* the pick by held-out fitness as measured (what the search did before) and by the shrunk fitness;
* the recommendation among the searched pick and the training-free deployables the search measured (ToMe on your
  model, your model), each rule bringing its pick's fitness;
* on the 3000 test images: each one's paired difference to your model (points, 95 % interval), the shrunk rule's
  paired difference to the measured rule's, and the regret of each pick (the test-best feasible candidate's
  accuracy among the 20 fittest of the budget by either rule minus the pick's).

Then per budget the mean over seeds of each difference. ``--latency``: the budgets are the search's latency
budgets and a candidate meets one by its table prediction scaled by the search's ``timed_over_predicted``
correction (the search also timed its picks on the target; this script does not, so a pick it would have timed
over the budget is not passed over here). Prints the table; writes ``<out>/shrinkage-<search>.json``.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fitness_benchmark import combine  # noqa: E402
from reference_benchmark import read_json  # noqa: E402


#: how the schedule effects' spread is measured (:func:`tavt_kit.search.shrinkage.fit_shrinkage`): each a rule
SPREADS = ("bulk", "mad")
#: per budget and rule, the fittest candidates scored on the test images (the regret's reference)
TOP = 20


def _journal(path: str):
    import json

    cands = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("kind") == "candidate" and rec.get("precision", "fp32") == "fp32":
                key = (tuple(rec["counts"]), tuple(r or "" for r in rec.get("reducers") or ()))
                cands.setdefault(key, rec)
    return cands


def _schedule(model, counts, reducers):
    import tavt_kit

    return model.make_schedule(tavt_kit.TokenSchedule(tuple(counts), model.num_patches,
                                                      reducers=[r or None for r in reducers] or None))


def _pick(feasible, score):
    # the search's own rule: best fitness, then the one that uses more of the budget, then the gene
    return max(feasible, key=lambda g: (score[g], feasible[g], g)) if feasible else None


def run_seed(seed: int, args) -> dict:
    import torch

    import tavt_kit
    from tavt_kit.data import Normalize
    from tavt_kit.search.data import search_data
    from tavt_kit.search.evaluate import CandidateEvaluator
    from tavt_kit.search.shrinkage import fit_shrinkage
    from tavt_kit.stats import paired_difference

    say = lambda s: print(f"[seed {seed}] {s}", flush=True)  # noqa: E731
    sdir = os.path.join(args.out, f"seed{seed}", args.search)
    doc = read_json(os.path.join(sdir, "search.json"))
    parent = tavt_kit.load_checkpoint(os.path.join(args.out, f"seed{seed}", args.parent_dir, "best.safetensors")).eval()
    supernet = tavt_kit.load_checkpoint(os.path.join(args.out, f"seed{seed}", args.supernet_dir,
                                                     "best.safetensors")).eval()
    data = search_data(supernet, None, cache_dir=os.path.join(sdir, "cache"), log=lambda s: None)
    norm = Normalize.from_model(supernet)
    cands = _journal(os.path.join(sdir, "search.journal.jsonl"))
    genes = sorted(cands)
    say(f"{len(genes)} candidates: scoring them on {len(data.holdout.labels)} held-out and "
        f"{len(data.test.labels)} test images")
    saved = os.path.join(args.out, f"shrinkage-{args.search}-s{seed}.json")
    with torch.inference_mode():
        if args.replay and os.path.isfile(saved):  # the held-out figures an earlier run of this script kept
            say(f"held-out figures from {saved}")
            held = {(tuple(c["counts"]), tuple(c["reducers"])): c for c in read_json(saved)[0]["candidates"]}
        else:
            hev = CandidateEvaluator(supernet, data.holdout.images, data.holdout.labels, transform=norm)
            sc = hev.scores([_schedule(supernet, *g) for g in genes])
            held = {g: sc.metrics(i) for i, g in enumerate(genes)}
        pev = CandidateEvaluator(parent, data.test.images, data.test.labels, transform=Normalize.from_model(parent))
        ref = pev.scores([parent.full_schedule()], per_image=True).hits[0].tolist()
    for g in genes:  # the same images, the same scores: the journal's NLL is reproduced
        assert abs(held[g]["nll"] - cands[g]["nll"]) < 1e-4, (g, held[g]["nll"], cands[g]["nll"])
    raw = {g: -held[g]["nll"] for g in genes}
    rules, fits = {"measured": raw}, {}
    for spread in SPREADS:
        fits[spread] = fit_shrinkage([(raw[g], held[g]["nll_se"], cands[g]["macs"]) for g in genes], spread=spread)
        rules[f"shrunk-{spread}"] = {g: fits[spread].estimate(raw[g], held[g]["nll_se"], cands[g]["macs"])
                                     for g in genes}
        say(f"shrinkage ({spread}): " + ", ".join(f"{k} {v:.4g}" for k, v in fits[spread].to_dict().items()
                                                  if isinstance(v, (int, float))))
    scale = (doc.get("timed_over_predicted") or {}).get("fp32", {}).get("median", 1.0)
    feasible_of = {}
    for row in doc["budgets"]:
        if args.latency:
            feasible_of[row["label"]] = {g: cands[g]["latency"] for g in genes if cands[g].get("latency") is not None
                                         and cands[g]["latency"] * scale <= row["limit"]}
        else:
            feasible_of[row["label"]] = {g: cands[g]["macs"] for g in genes if cands[g]["macs"] <= row["limit"]}
    # on the test images: each budget's TOP fittest candidates by either rule (the picks among them); the regret
    # is measured against the test-best of those
    top = set()
    for feasible in feasible_of.values():
        for score in rules.values():
            top.update(sorted(feasible, key=lambda g: (score[g], feasible[g], g), reverse=True)[:TOP])
    top = sorted(top)
    say(f"scoring {len(top)} candidates (the {TOP} fittest of each budget by either rule) on the test images")
    with torch.inference_mode():
        tev = CandidateEvaluator(supernet, data.test.images, data.test.labels, transform=norm)
        hits = tev.scores([_schedule(supernet, *g) for g in top], per_image=True).hits
    test = {g: hits[i].tolist() for i, g in enumerate(top)}
    acc = lambda h: sum(h) / len(h)  # noqa: E731
    vs = lambda h: paired_difference(h, ref)  # noqa: E731
    rows = []
    for row in doc["budgets"]:
        feasible = feasible_of[row["label"]]
        out = {"label": row["label"], "feasible": len(feasible)}
        if not feasible:
            rows.append(out)
            continue
        best_test = max(acc(test[g]) for g in feasible if g in test)
        free = {}
        for name, d in (row.get("training_free") or {}).items():
            if d and d.get("holdout_nll") is not None and d.get("precision", "fp32") == "fp32":
                with torch.inference_mode():
                    s = _schedule(parent, d["counts"], d.get("reducers") or ())
                    free[name] = (-d["holdout_nll"], pev.scores([s], per_image=True).hits[0].tolist())
        for rule, score in rules.items():
            g = _pick(feasible, score)
            options = {"searched": (score[g], test[g]), **free}
            rec = max(options, key=lambda k: (options[k][0], k != "searched"))
            out[rule] = {"pick": {"counts": list(g[0]), "reducers": list(g[1]), "macs": cands[g]["macs"],
                                  "holdout_nll": held[g]["nll"], "fitness": score[g],
                                  "test_accuracy": acc(test[g]), "vs_parent": vs(test[g]),
                                  "regret": best_test - acc(test[g])},
                         "recommended": rec, "recommended_vs_parent": vs(options[rec][1]), "_hits": options[rec][1],
                         "_pick_hits": test[g]}
        for rule in rules:
            if rule != "measured":
                out[rule]["pick_vs_measured"] = paired_difference(out[rule]["_pick_hits"],
                                                                  out["measured"]["_pick_hits"])
                out[rule]["recommended_vs_measured"] = paired_difference(out[rule]["_hits"],
                                                                         out["measured"]["_hits"])
        for rule in rules:
            del out[rule]["_pick_hits"], out[rule]["_hits"]
        out["free"] = {k: vs(v[1]) for k, v in free.items()}
        rows.append(out)
    # every candidate's held-out figures with their noise (and test accuracy where scored): what another prior
    # can be tried on without scoring the candidates again
    every = [{"counts": list(g[0]), "reducers": list(g[1]), "macs": cands[g]["macs"], "latency": cands[g].get("latency"),
              "nll": held[g]["nll"], "nll_se": held[g]["nll_se"], "accuracy": held[g]["accuracy"],
              "accuracy_se": held[g]["accuracy_se"], "test_accuracy": acc(test[g]) if g in test else None}
             for g in genes]
    return {"seed": seed, "parent_accuracy": acc(ref), "shrinkage": {k: f.to_dict() for k, f in fits.items()},
            "budgets": rows,
            "candidates": every}


def _pm(v):
    return "–" if not v else "{:+.2f} [{:+.2f}, {:+.2f}]".format(100 * v["difference"], *(100 * x for x in v["interval"]))


def report(results) -> str:
    lines = []
    rules = [k for k in results[0]["budgets"][0] if k == "measured" or k.startswith("shrunk")] if results else []
    for r in results:
        fits = "; ".join(f"{k}: effects sd {v['schedule_effect_sd']:.4f}, kept {v['kept_at_mean_noise']:.2f}"
                         for k, v in r["shrinkage"].items())
        lines.append(f"seed {r['seed']}: your model {100 * r['parent_accuracy']:.2f} %; NLL noise sd "
                     f"{next(iter(r['shrinkage'].values()))['mean_noise_sd']:.4f}; {fits}")
        lines.append("  budget        | " + " | ".join(f"{rule}: pick vs your model, regret, MACs; recommended"
                                                      for rule in rules))
        for b in r["budgets"]:
            if "measured" not in b:
                lines.append(f"  {b['label']:<13} | nothing feasible")
                continue
            cells = []
            for rule in rules:
                p = b[rule]["pick"]
                cells.append(f"{_pm(p['vs_parent'])} {100 * p['regret']:4.2f} {p['macs'] / 1e6:6.2f}M; "
                             f"{b[rule]['recommended']} {_pm(b[rule]['recommended_vs_parent'])}")
            lines.append(f"  {b['label']:<13} | " + " | ".join(cells))
    labels = [b["label"] for b in results[0]["budgets"]] if results else []
    lines.append(f"mean over {len(results)} seeds (points, paired 95 % intervals):")
    for i, label in enumerate(labels):
        got = [r["budgets"][i] for r in results if i < len(r["budgets"]) and "measured" in r["budgets"][i]]
        if len(got) != len(results):
            continue
        mean = lambda *path: "{:+.2f} [{:+.2f}, {:+.2f}]".format(  # noqa: E731
            *(100 * x for x in combine([_get(b, *path) for b in got])))
        for rule in rules:
            regret = sum(b[rule]["pick"]["regret"] for b in got) / len(got) * 100
            changed = sum(b[rule]["pick"]["counts"] != b["measured"]["pick"]["counts"] for b in got)
            extra = "" if rule == "measured" else (f"; pick vs measured {mean(rule, 'pick_vs_measured')} "
                                                  f"({changed} of {len(got)} picks changed); recommended vs "
                                                  f"measured {mean(rule, 'recommended_vs_measured')}")
            lines.append(f"  {label:<13} {rule:<13} pick vs your model {mean(rule, 'pick', 'vs_parent')}, regret "
                         f"{regret:.2f}; recommended vs your model {mean(rule, 'recommended_vs_parent')}{extra}")
    return "\n".join(lines)


def _get(d, *path):
    for k in path:
        d = d[k]
    return d


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--search", default="search-selection-bound0.5-p16g6-sel0.0",
                    help="each seed's search folder (under <out>/seed<N>/)")
    ap.add_argument("--parent-dir", default="parent")
    ap.add_argument("--supernet-dir", default="default-bound0.5")
    ap.add_argument("--latency", action="store_true", help="the search's budgets are latency budgets")
    ap.add_argument("--replay", action="store_true",
                    help="take each candidate's held-out figures from this script's earlier one-seed result file "
                         "(shrinkage-<search>-s<seed>.json) instead of scoring them again: another correction tried "
                         "on the same evolution in minutes")
    ap.add_argument("--tag", default="", help="added to the result files' names")
    ap.add_argument("--out", default=os.path.join("runs", "reference"))
    args = ap.parse_args(argv)
    from tavt_kit.files import write_json, write_text

    results = [run_seed(int(s), args) for s in args.seeds.split(",")]
    text = report(results)
    print(text)
    name = f"shrinkage-{args.search}-s{args.seeds.replace(',', '+')}{args.tag}"
    write_json(results, os.path.join(args.out, name + ".json"))
    write_text(os.path.join(args.out, name + ".txt"), text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
