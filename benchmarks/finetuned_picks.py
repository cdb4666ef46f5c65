"""The latency benchmark's headline with the supernet's picks fine-tuned toward your model: does it ship more speed?

``latency_reference.py`` left the batch-1 headline (speed-up over your model's fp32 latency at <= 0.5 points loss)
level: what fgvc-kit shipped 2.93x against 2.91x for the best training-free stack over three seeds. Its picks at
0.3 of your model's latency were the fastest deployables (3.7x-4.4x in int8) but lost 0.6-1.9 points there, the
cost of weights shared by every schedule of the supernet's space. ``fgvc-kit distill --drop`` fine-tunes one
schedule from the supernet's weights toward your model (:func:`tavt_kit.distill.distill_schedule`).

For each seed of a finished ``latency_reference.py`` run and each budget asked (``--fractions``) this

1. fine-tunes the budget's supernet pick (its schedule, reducers and precision as the run recorded them) for
   ``--steps`` steps toward your model (resumable: a killed run continues from its checkpoint);
2. scores it as deployed (int8: NNCF on 300 training images and OpenVINO, as the search's int8 stage deploys) on the
   held-out and the test images, paired per image with your model;
3. lets it compete for the budget as the search does (:func:`tavt_kit.search.recommend.recommend`: the fine-tuned
   pick takes the supernet pick's place; it ships only where it beats the best deployable on your model's weights
   beyond noise on the held-out images, paired per image, 95 %);
4. times, round-robin in one process on OpenVINO (batch 1, ``--threads``), your model in fp32, every budget's
   shipped deployable before and after, the fine-tuned picks, and the training-free deployables the run's
   headline found within 0.5 points (ToMe on your model in its sweep, every precision; your model in int8);

and prints per seed and over the seeds the headline of what ships with and without the fine-tune, and of the best
training-free stack, all timed in that round. Results: ``--out``/``seed{S}.json`` and ``report.txt``.

    python benchmarks/finetuned_picks.py --runs runs/latency-reference-c96p4w96-tavt-sampled \
        --results docs/benchmarks/latency_reference/b1-c96-tavt-sampled --seeds 0,1,2 --fractions 0.3 \
        --steps 150 --threads 1 --out runs/pick-ft
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from latency_reference import ACCEPTED_LOSS, _policy, _schedule, _target  # noqa: E402
from pick_finetune import finetune_config  # noqa: E402

#: the results of latency_reference.py read here (the tag of the run whose picks are fine-tuned)
DEFAULT_TAG = "b1-f0.5+0.4+0.3+0.2-pfp32+int8-t1-bound0.7"
#: the training-free sweep points within the accepted loss timed again in this round, fastest first
SWEEP_TIMED = 3


def _folder(out: str, seed: int, fraction: float) -> str:
    return os.path.join(out, f"seed{seed}-p0{repr(float(fraction)).split('.')[1]}")


def _entry_key(d: dict) -> tuple:
    return tuple(d["counts"]), tuple(d.get("reducers") or ()), d.get("precision", "fp32")


class Seed:
    """One seed's models, images, deployed scorers and the run's results."""

    def __init__(self, seed: int, args):
        import tavt_kit
        from tavt_kit.data import DataSpec, Normalize
        from tavt_kit.export.quantize import calibration_images
        from tavt_kit.search.data import search_data

        self.seed, self.args = seed, args
        root = os.path.join(args.runs, f"seed{seed}")
        self.parent_path = os.path.join(root, "parent", "best.safetensors")
        self.supernet_path = os.path.join(root, f"supernet-bound{args.bound:g}", "best.safetensors")
        for p in (self.parent_path, self.supernet_path):
            if not os.path.isfile(p):
                raise SystemExit(f"seed {seed}: {p} is missing (train it with latency_reference.py --train-only)")
        name = f"seed{seed}-{args.tag}-ship0.95.json"
        self.result = json.load(open(os.path.join(args.results, name)))
        sweep = os.path.join(args.results, f"seed{seed}-{args.tag}-tome.json")
        self.sweep = json.load(open(sweep))["points"] if os.path.isfile(sweep) else []
        self.parent = tavt_kit.load_checkpoint(self.parent_path).eval()
        self.data = search_data(self.parent, None, cache_dir=os.path.join(args.out, f"seed{seed}-cache"),
                                log=lambda s: None)
        self.spec = DataSpec("cluttered-digits", holdout=0.1, split_seed=0)
        self.transform = Normalize.from_model(self.parent)
        calib = calibration_images(self.parent, self.spec, split="train", n=300, seed=0)
        self.calib = lambda: calib

    def scorer(self, model):
        from tavt_kit.search.precision import DeployedScorer

        return DeployedScorer(model.eval(), self.transform, self.calib, threads=self.args.threads)


def per_image(model, scorer, sched, precision: str, images, labels):
    """(losses, hits) per image of ``model`` at ``sched`` deployed at ``precision`` (fp32: PyTorch)."""
    from tavt_kit.search.evaluate import CandidateEvaluator

    if precision == "fp32":
        ev = CandidateEvaluator(model, images, labels, 100, transform=scorer.transform)
        sc = ev.scores([sched], per_image=True)
    else:
        sc = scorer.scores(sched, precision, images, labels)[0]
    return sc.losses[0].double(), sc.hits[0].double()


def finetune_pick(s: Seed, fraction: float, pick: dict) -> dict:
    """The budget's pick fine-tuned (resumed where a run was cut) and scored deployed; cached in its folder."""
    import tavt_kit
    from safetensors.torch import load_file, save_file
    from tavt_kit.distill import distill_schedule
    from tavt_kit.data import build_dataset
    from tavt_kit.search.finetune import finished

    out = _folder(s.args.out, s.seed, fraction)
    values = os.path.join(out, "values.safetensors")
    done = os.path.join(out, "last.safetensors")
    state = os.path.join(out, "train_state.safetensors")
    say = lambda m: print(f"[seed {s.seed}, {fraction:g}] {m}", flush=True)  # noqa: E731
    model = tavt_kit.load_checkpoint(s.supernet_path)
    sched = _schedule(model, pick)
    if not finished(out, s.args.steps):
        say(f"fine-tuning the pick {list(sched.counts)} {list(sched.reducers or ())} for {s.args.steps} steps")
        t0 = time.perf_counter()
        distill_schedule(model, s.parent, sched, build_dataset(s.spec, split="train", model=model),
                         finetune_config(s.args.steps, seed=0), out_dir=out, resume=os.path.isfile(state))
        say(f"fine-tuned in {time.perf_counter() - t0:.0f} s")
    if not os.path.isfile(values):
        model = tavt_kit.load_checkpoint(done)
        scorer = s.scorer(model)
        try:
            t = {}
            for split, ev in (("holdout", s.data.holdout), ("test", s.data.test)):
                losses, hits = per_image(model, scorer, sched, pick["precision"], ev.images, ev.labels)
                t[f"{split}_losses"], t[f"{split}_hits"] = losses, hits
        finally:
            scorer.close()
        save_file({k: v.contiguous() for k, v in t.items()}, values)
    return {k: v for k, v in load_file(values).items()}


def compete(s: Seed, row: dict, ft: dict, ref_test) -> dict:
    """The budget's recommendation with the fine-tuned pick in the supernet pick's place (recommend(), held-out
    NLL, paired per image, 95 %); the fine-tuned entry and the recommendation."""
    from tavt_kit.search.recommend import paired_lead, recommend
    from tavt_kit.stats import paired_difference

    pick = row["pick"]
    entry = {k: pick[k] for k in ("counts", "reducers", "precision", "macs") if k in pick}
    entry.update(holdout_accuracy=float(ft["holdout_hits"].mean()), holdout_nll=float(ft["holdout_losses"].mean()),
                 test_accuracy=float(ft["test_hits"].mean()),
                 vs_parent=paired_difference(ft["test_hits"].tolist(), ref_test.tolist()))
    if "measured_within_budget" in pick:  # the same graph as the pick's: timed as it was
        entry["measured_within_budget"] = pick["measured_within_budget"]
    values = {"searched": (ft["holdout_losses"], ft["holdout_hits"])}
    scorer = s.scorer(s.parent)

    def of(family: str, d: dict):
        if family not in values:  # a deployable on your model's weights, deployed as the search deploys it
            values[family] = per_image(s.parent, scorer, _schedule(s.parent, d), d.get("precision", "fp32"),
                                       s.data.holdout.images, s.data.holdout.labels)
        return values[family]

    try:
        rec = recommend({"best": entry}, row["free"], fitness="nll", confidence=0.95,
                        evidence=lambda a, da, b, db: paired_lead(of(a, da), of(b, db), "NLL"),
                        searched_name="the pick fine-tuned toward your model")
    finally:
        scorer.close()
    if rec.get("family") == "searched":
        rec.update(family="finetuned", weights="finetuned")
    return {"finetuned": entry, "recommended": rec}


def timed_round(s: Seed, items: dict) -> dict:
    """{key: speed-up over your model's fp32} for ``items`` ({key: entry}), timed round-robin with it."""
    import tavt_kit
    from tavt_kit.bench.measure import measure_schedules
    from tavt_kit.bench.ratio import paired_ratio

    supernet = tavt_kit.load_checkpoint(s.supernet_path).eval()
    runs = {"full": (supernet.full_schedule(), "fp32")}
    keys = {}
    for name, d in items.items():
        k = _entry_key(d)
        keys[name] = k
        runs.setdefault(k, (_schedule(supernet, d), d.get("precision", "fp32")))
    print(f"[seed {s.seed}] timing {len(runs)} deployables round-robin (OpenVINO, batch 1, "
          f"{s.args.threads or 'all'} thread(s))", flush=True)
    with torch.inference_mode():
        measured = measure_schedules(supernet, runs, target=_target(1, s.args.threads), policy=_policy(s.args))
    full = measured["full"][0]
    out = {"parent_ms": 1e3 * full.p50}
    for name, k in keys.items():
        r = paired_ratio(measured[k][0], full)
        out[name] = {"speedup": 1.0 / r.ratio, "ms": 1e3 * measured[k][0].p50,
                     "speedup_interval": [1.0 / r.interval[1], 1.0 / r.interval[0]]}
    return out


def run_seed(seed: int, args) -> dict:
    path = os.path.join(args.out, f"seed{seed}.json")
    if os.path.isfile(path) and not args.retime:
        return json.load(open(path))
    from reference_benchmark import test_hits

    s = Seed(seed, args)
    with torch.inference_mode():
        ref = torch.tensor(test_hits(s.parent, s.parent.full_schedule(), s.data.test), dtype=torch.float64)
    rows, items = [], {}
    for row in s.result["rows"]:
        out = {"fraction": row["fraction"], "shipped": row.get("shipped"), "pick": row.get("pick")}
        if row.get("pick") and any(abs(row["fraction"] - f) < 1e-9 for f in args.fractions):
            ft = finetune_pick(s, row["fraction"], row["pick"])
            with torch.inference_mode():
                out.update(compete(s, row, ft, ref))
            fam = out["recommended"]["family"]
            out["shipped_ft"] = out["finetuned"] if fam == "finetuned" else row["free"][fam]
        else:
            out["shipped_ft"] = row.get("shipped")
        rows.append(out)
        f = row["fraction"]
        for name in ("shipped", "shipped_ft", "finetuned"):
            d = out.get(name)
            if d and d.get("vs_parent") and 100 * d["vs_parent"]["difference"] >= -ACCEPTED_LOSS:
                items[f"{name}@{f:g}"] = d
        for name, d in row.get("free", {}).items():  # what needs no training, at this budget
            if not name.startswith("searched_parent") and 100 * d["vs_parent"]["difference"] >= -ACCEPTED_LOSS:
                items[f"free:{name}@{f:g}"] = d
    for p, d in s.result.get("parent_at", {}).items():
        if 100 * d["vs_parent"]["difference"] >= -ACCEPTED_LOSS:
            items[f"free:parent@{p}"] = {"counts": list(s.parent.full_schedule().counts), "precision": p,
                                         "vs_parent": d["vs_parent"]}
    ok = sorted((d for d in s.sweep if 100 * d["vs_parent"]["difference"] >= -ACCEPTED_LOSS),
                key=lambda d: -d["speedup"])[:SWEEP_TIMED]
    for d in ok:
        items[f"free:ToMe r={d['r']}@{d['precision']} (sweep)"] = d
    timing = timed_round(s, items)
    res = {"seed": seed, "parent_test_accuracy": float(ref.mean()), "steps": args.steps, "rows": rows,
           "timed": {k: {**timing[k], "vs_parent": items[k]["vs_parent"]} for k in items},
           "parent_ms": timing["parent_ms"]}
    os.makedirs(args.out, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(res, fh, indent=1)
    os.replace(tmp, path)
    return res


def headline(res: dict, prefix: str) -> tuple:
    """(speed-up, vs_parent, name) of the fastest timed option named ``prefix``... within the accepted loss."""
    ok = [(d["speedup"], d["vs_parent"], k) for k, d in res["timed"].items() if k.startswith(prefix)]
    return max(ok, key=lambda o: o[0]) if ok else (1.0, None, "your model")


FAMILIES = (("shipped@", "what fgvc-kit ships (supernet picks as searched)"),
            ("shipped_ft@", "what fgvc-kit ships, the pick fine-tuned toward your model and competing"),
            ("finetuned@", "fine-tuned picks (no gate)"),
            ("free:", "best training-free (ToMe on your model fitted or swept, your model; every precision)"))


def _vs(v) -> str:
    if v is None:
        return "+0.00"
    return f"{100 * v['difference']:+.2f} [{100 * v['interval'][0]:+.2f}, {100 * v['interval'][1]:+.2f}]"


def report(results) -> str:
    lines = [f"batch 1, OpenVINO; speed-up over your model's fp32 latency, every option of a seed timed round-robin "
             f"in one process; vs parent: paired difference on the 3000 test images (points, 95 %); headline: the "
             f"fastest within {ACCEPTED_LOSS} points (paired point estimate)"]
    for res in results:
        lines.append(f"seed {res['seed']}: your model {100 * res['parent_test_accuracy']:.2f} % at "
                     f"{res['parent_ms']:.2f} ms")
        for row in res["rows"]:
            if "finetuned" not in row:
                continue
            ft, pk, rec = row["finetuned"], row["pick"], row["recommended"]
            lines.append(f"  {row['fraction']:g} of your model: pick {pk['counts']} @ {pk['precision']}: supernet "
                         f"{_vs(pk['vs_parent'])} -> fine-tuned {_vs(ft['vs_parent'])}; ships {rec['family']} "
                         f"({rec['why']})")
        for prefix, what in FAMILIES:
            sp, v, name = headline(res, prefix)
            lines.append(f"  headline, {what}: {sp:.2f}x {_vs(v)} ({name})")
    if len(results) > 1:
        lines.append(f"mean over {len(results)} seeds:")
        for prefix, what in FAMILIES:
            hs = [headline(r, prefix) for r in results]
            mean = sum(h[0] for h in hs) / len(hs)
            loss = sum(100 * (h[1]["difference"] if h[1] else 0.0) for h in hs) / len(hs)
            lines.append(f"  headline, {what}: {mean:.2f}x at {loss:+.2f} points (per seed: "
                         + ", ".join(f"{h[0]:.2f}x {_vs(h[1])}" for h in hs) + ")")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", required=True, help="latency_reference.py's --out (the seeds' parents and supernets)")
    ap.add_argument("--results", required=True, help="the folder of its results (seed{S}-{tag}-ship0.95.json)")
    ap.add_argument("--tag", default=DEFAULT_TAG)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--fractions", default="0.3", help="the budgets whose pick is fine-tuned")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--bound", type=float, default=0.7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--finetune-only", action="store_true", help="fine-tune and score; time nothing")
    ap.add_argument("--retime", action="store_true", help="time a seed again though its result file exists")
    ap.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    args.fractions = [float(f) for f in args.fractions.split(",")]
    seeds = [int(x) for x in args.seeds.split(",")]
    os.makedirs(args.out, exist_ok=True)
    if args.finetune_only:
        for seed in seeds:
            s = Seed(seed, args)
            for row in s.result["rows"]:
                if row.get("pick") and any(abs(row["fraction"] - f) < 1e-9 for f in args.fractions):
                    finetune_pick(s, row["fraction"], row["pick"])
        return 0
    results = [run_seed(seed, args) for seed in seeds]
    text = report(results)
    print(text)
    with open(os.path.join(args.out, "report.txt"), "w") as fh:
        fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
