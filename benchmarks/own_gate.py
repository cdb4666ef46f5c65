"""Step 1 of the recommendation, replayed: does a schedule searched on your model ship over ToMe on it on a lead
within noise, or only on evidence? (``tavt_kit/search/recommend.py``)

    python benchmarks/own_gate.py [--out runs/lr-shrink] [--seeds 0,1]
        [--tag -b32-f0.5+0.4+0.3+0.2-pfp32+int8-t1-bound0.7-ship0.95] [--confidences 0.5,0.8,0.9,0.95]
    python benchmarks/own_gate.py --macs [--out runs/reference] [--seeds 0,1,2]

Reads finished runs and decides every budget's recommendation again, with the searches' own candidates, timings
and test figures: nothing is searched or timed again. The latency half: ``latency_reference.py``'s runs (each
seed's result and its search's ``search.json``). ``--macs``: ``parent_search_benchmark.py``'s runs with the ship
gate (the demo's 64-token model under MAC budgets of 1.5x to 4x fewer MACs; the supernets of
``reference_benchmark.py``). The per-image evidence is made again on the search's held-out images (checked
against the digest the search recorded): each compared deployable is scored with the weights and at the precision
it ships with (int8 quantised with NNCF on the search's calibration images and run on OpenVINO).

Rules compared, by step 1's one-sided confidence (step 2, the supernet's gate, stays at 0.95):

* ``0.5``: any lead of the searched schedule's corrected score ships it (the rule before the gate);
* ``0.8``, ``0.9``, ``0.95``: it ships only on a paired lead of more than z standard errors.

Printed per rule: each budget's recommendation, its test difference to your model (paired, 95 % interval; 3000
images), the regret against the test-best deployable on your model's weights, and the latency benchmark's report
with what ships under that rule, headline included.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

TAG = "-b32-f0.5+0.4+0.3+0.2-pfp32+int8-t1-bound0.7-ship0.95"


def _evidence_for(doc: dict, supernet, parent, cache_dir: str):
    """The ``evidence`` callable of ``recommend`` for this search: paired per-image leads on its held-out images;
    and the deployed scorers it quantises on (to close)."""
    from latency_reference import _schedule
    from tavt_kit.data.transforms import Normalize
    from tavt_kit.search.data import search_data
    from tavt_kit.search.precision import DeployedScorer
    from tavt_kit.search.recommend import PairedEvidence, paired_lead

    data = search_data(supernet, None, cache_dir=cache_dir, log=lambda s: None)
    settings = doc["settings"]
    if settings.get("selection_images"):
        raise SystemExit("this search chose on selection images; step 1 has no gate there")
    if len(data.holdout.labels) != settings["holdout_images"]:
        raise SystemExit(f"held-out images: {len(data.holdout.labels)}, the search recorded "
                         f"{settings['holdout_images']}")
    transform = Normalize.from_model(supernet)
    batch = settings["batch_size"]
    evidence = PairedEvidence(data.holdout, batch, transform)
    cal = settings.get("calibration") or {}  # none: a search without int8, nothing to quantise
    scorers = {name: DeployedScorer(m, transform, lambda: data.calibration(cal["images"], cal["seed"]), batch, 1)
               for name, m in (("parent", parent), ("supernet", supernet))}
    models = {"parent": parent, "supernet": supernet}

    def values(family, entry):
        w = "supernet" if family == "searched" else "parent"
        return evidence.values(w, models[w], _schedule(supernet, entry), entry.get("precision", "fp32"), scorers[w])

    def lead(fam, d, other, o):
        return paired_lead(values(fam, d), values(other, o), "NLL")

    return lead, scorers


def replay(res: dict, doc: dict, lead, parent_confidence: float) -> dict:
    """``res`` (one seed's latency result) with each budget's recommendation decided again at
    ``parent_confidence``; ``why`` and step 1's evidence under ``rule``."""
    from tavt_kit.search.recommend import recommend

    out = copy.deepcopy(res)
    for row, b in zip(out["rows"], doc["budgets"]):
        if b.get("objective") != "latency" or "training_free" not in b:
            continue
        rec = recommend(b, b["training_free"], fitness=doc["settings"]["fitness"], evidence=lead,
                        confidence=0.95, parent_confidence=parent_confidence)
        fam = rec["family"]
        row["recommended"] = fam
        row["shipped"] = row.get("pick") if fam == "searched" else row["free"].get(fam)
        row["rule"] = {"why": rec["why"], "evidence_parent": rec.get("evidence_parent")}
    return out


MACS_RESULT = "parent-search-search-selection-bound0.5-p16g6-sel0.0-ship0.95-s{seed}.json"
MACS_SEARCH = os.path.join("seed{seed}", "search-parent-search-p16g6-ship0.95", "search.json")
#: a family of the recommendation -> its entry in a parent-search result row
MACS_ROW = {"searched": "pick", "tome_parent": "tome", "searched_parent": "searched_parent"}


def replay_macs(args, confidences) -> None:
    """The MAC half: per budget and rule, what ships and its paired test difference to your model, then the
    means over seeds (``combine``: the mean of independent paired differences, with its interval)."""
    import tavt_kit
    from fitness_benchmark import combine
    from latency_reference import _vs
    from reference_benchmark import read_json
    from tavt_kit.search.recommend import recommend

    seeds = [int(v) for v in args.seeds.split(",")]
    shipped = {c: {} for c in confidences}  # rule -> budget -> [vs_parent per seed]
    regrets = {c: [] for c in confidences}
    for s in seeds:
        res = read_json(os.path.join(args.out, MACS_RESULT.format(seed=s)))
        path = os.path.join(args.out, MACS_SEARCH.format(seed=s))
        doc = read_json(path)
        supernet = tavt_kit.load_checkpoint(os.path.join(args.out, f"seed{s}", args.supernet)).eval()
        parent = tavt_kit.load_checkpoint(doc["parent"]["path"]).eval()
        lead, scorers = _evidence_for(doc, supernet, parent, os.path.join(os.path.dirname(path), "cache"))
        for row, b in zip(res["rows"], doc["budgets"]):
            options = {f: row.get(k) for f, k in MACS_ROW.items() if row.get(k) and row[k].get("vs_parent")}
            best_test = max(d["test_accuracy"] for d in options.values())
            for c in confidences:
                rec = recommend(b, b["training_free"], fitness=doc["settings"]["fitness"], evidence=lead,
                                confidence=0.95, parent_confidence=c)
                d = options[rec["family"]]
                shipped[c].setdefault(row["label"], []).append(d["vs_parent"])
                regrets[c].append(100 * (best_test - d["test_accuracy"]))
                ev = rec.get("evidence_parent")
                print(f"[seed {s}] step 1 at {c:g}: {row['reduction']:g}x ({row['label']}) ships {rec['family']} "
                      f"{_vs(d['vs_parent'])}, regret {regrets[c][-1]:.2f}"
                      + (f" (searched lead z = {ev['z']:.2f})" if ev and ev.get("z") is not None else ""),
                      flush=True)
        for sc in scorers.values():
            sc.close()
    for c in confidences:
        print(f"\n# step 1 at confidence {c:g}: mean regret {sum(regrets[c]) / len(regrets[c]):.2f} points over "
              f"{len(regrets[c])} (budget, seed) cells (worst {max(regrets[c]):.2f}); what ships, mean over "
              f"{len(seeds)} seed(s), vs your model:")
        for label, vs in shipped[c].items():
            print("  {:<14} {:+.2f} [{:+.2f}, {:+.2f}]".format(label, *(100 * x for x in combine(vs))))


def regret(row: dict) -> float:
    """Test-best on your model's weights (or the pick) minus what ships, in points."""
    ds = [d for d in list(row["free"].values()) + [row.get("pick")] if d and d.get("within_budget", True)]
    shipped = row.get("shipped")
    if not ds or not shipped:
        return 0.0
    return 100 * (max(d["test_accuracy"] for d in ds) - shipped["test_accuracy"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--macs", action="store_true", help="the MAC half (parent_search_benchmark.py's runs)")
    ap.add_argument("--out", default=None, help="runs/lr-shrink; with --macs runs/reference")
    ap.add_argument("--seeds", default=None, help="0,1; with --macs 0,1,2")
    ap.add_argument("--tag", default=TAG)
    ap.add_argument("--sweep-tag", default=None, help="the ToMe sweep's file tag (default: --tag without -ship…)")
    ap.add_argument("--supernet", default=None, help="the supernet, in each seed's folder (default: "
                    "supernet-bound0.7/best.safetensors; with --macs default-bound0.5/best.safetensors)")
    ap.add_argument("--confidences", default="0.5,0.8,0.9,0.95")
    args = ap.parse_args(argv)
    import torch

    import tavt_kit
    from latency_reference import _vs, report
    from reference_benchmark import read_json

    torch.set_num_threads(1)
    confidences = [float(v) for v in args.confidences.split(",")]
    args.out = args.out or os.path.join("runs", "reference" if args.macs else "lr-shrink")
    args.seeds = args.seeds or ("0,1,2" if args.macs else "0,1")
    args.supernet = args.supernet or os.path.join("default-bound0.5" if args.macs else "supernet-bound0.7",
                                                  "best.safetensors")
    if args.macs:
        replay_macs(args, confidences)
        return 0
    sweep_tag = args.sweep_tag or args.tag.split("-ship")[0]
    by_rule = {c: [] for c in confidences}
    for s in (int(v) for v in args.seeds.split(",")):
        res = read_json(os.path.join(args.out, f"seed{s}{args.tag}.json"))
        sweep = os.path.join(args.out, f"seed{s}{sweep_tag}-tome.json")
        if os.path.isfile(sweep):
            res["tome_sweep"] = read_json(sweep)["points"]
        doc = read_json(res["search"])
        say = lambda m: print(f"[seed {s}] {m}", flush=True)  # noqa: E731
        supernet = tavt_kit.load_checkpoint(os.path.join(args.out, f"seed{s}", args.supernet)).eval()
        parent = tavt_kit.load_checkpoint(doc["parent"]["path"]).eval()
        lead, scorers = _evidence_for(doc, supernet, parent, os.path.join(os.path.dirname(res["search"]), "cache"))
        try:
            for c in confidences:
                r = replay(res, doc, lead, c)
                by_rule[c].append(r)
                for row in r["rows"]:
                    sh = row.get("shipped")
                    ev = row["rule"]["evidence_parent"]
                    say(f"step 1 at {c:g}: {row['fraction']:g} budget ships {row['recommended']} "
                        + (f"{sh['speedup']:.2f}x {_vs(sh['vs_parent'])}" if sh else "-")
                        + f", regret {regret(row):.2f}"
                        + (f" (searched lead z = {ev['z']:.2f})" if ev and ev.get("z") is not None else ""))
        finally:
            for sc in scorers.values():
                sc.close()
    for c in confidences:
        rs = by_rule[c]
        regrets = [regret(row) for r in rs for row in r["rows"] if row.get("shipped")]
        print(f"\n# step 1 at confidence {c:g}: mean regret {sum(regrets) / max(1, len(regrets)):.2f} points over "
              f"{len(regrets)} budgets (worst {max(regrets, default=0):.2f})")
        print(report(rs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
