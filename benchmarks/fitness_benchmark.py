"""Does the search's pick hold on unseen images?  The cluttered-digits measurement, over seeds.

    python benchmarks/fitness_benchmark.py [--seeds 0,1,2] [--out runs/fitness-benchmark]
                                           [--budgets 0.5,0.6,0.7] [--generations 6 --population 12]

For each seed (training, distillation and search are all seeded with it; the
dataset is the default ``cluttered-digits``, the same for every seed) it runs
the commands a user runs:

1. ``fgvc-kit train`` (the built-in recipe), ``fgvc-kit distill`` (TAVT's in-place
   distillation with patch drop);
2. ``fgvc-kit search`` once per fitness (``accuracy``, ``nll``, ``kl``) with MAC
   budgets at ``--budgets`` times the full model's MACs;
3. evaluates on the test split every candidate any of the three searches
   evaluated, and reports the Spearman correlation between each fitness on the
   held-out images and test accuracy among them;
4. test accuracy of the smallest and a middle schedule of the space on the
   fine-tuned model (before) and the supernet (after distillation).

It prints the tables (accuracies with 95 % Wilson intervals; differences of
the searched pick to the best baseline with the interval of the paired
difference, averaged over seeds) and writes ``benchmark.json`` and
``picks.png``. Finished stages are reused when the script runs again.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

FITNESSES = ("accuracy", "nll", "kl")


def command(name, argv):
    from tavt_kit.cli import command_module
    from tavt_kit.cli.common import invoke

    rc = invoke(command_module(name), name, argv)
    if rc:
        raise SystemExit(f"fgvc-kit {name} failed ({rc})")


def spearman(x, y) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def middle(space):
    from tavt_kit.schedules import TokenSchedule

    full, small = space.full().counts, space.smallest().counts
    return TokenSchedule(tuple(math.ceil((a + b) / 2) for a, b in zip(full, small)), space.num_patches,
                         space.min_tokens)


def test_scores(model, scheds, images, labels):
    from tavt_kit.data import Normalize
    from tavt_kit.search.evaluate import CandidateEvaluator

    ev = CandidateEvaluator(model, images, labels, 256, transform=Normalize.from_model(model))
    with torch.inference_mode():
        return ev.scores(scheds, per_image=True)


def run_seed(seed: int, args, out: str) -> dict:
    from tavt_kit.data import build_dataset, cached_tensors
    from tavt_kit.models import count_macs, load_checkpoint
    from tavt_kit.schedules import TokenSchedule
    from tavt_kit.search import space_of
    from tavt_kit.stats import paired_difference, wilson_interval

    d_train, d_dist = os.path.join(out, "train"), os.path.join(out, "distill")
    t0 = time.perf_counter()
    if not os.path.isfile(os.path.join(d_train, "results.json")):
        argv = ["--dataset", "cluttered-digits", "--seed", str(seed), "--out", d_train, "--no-progress",
                "--overwrite"] + (["--steps", str(args.train_steps)] if args.train_steps else [])
        command("train", argv)
    if not os.path.isfile(os.path.join(d_dist, "results.json")):
        argv = ["--checkpoint", os.path.join(d_train, "best.safetensors"), "--seed", str(seed), "--out", d_dist,
                "--no-progress", "--overwrite"] + (["--steps", str(args.distill_steps)] if args.distill_steps else [])
        command("distill", argv)
    t_models = time.perf_counter() - t0
    supernet_path = os.path.join(d_dist, "best.safetensors")
    supernet = load_checkpoint(supernet_path).eval()
    finetuned = load_checkpoint(os.path.join(d_train, "best.safetensors")).eval()
    space = space_of(supernet)
    full_macs = count_macs(supernet).total()
    fractions = [float(f) for f in args.budgets.split(",")]
    searches = {}
    t0 = time.perf_counter()
    for fit in args.fitnesses.split(","):
        d = os.path.join(out, f"search-{fit}")
        if not os.path.isfile(os.path.join(d, "search.json")):
            argv = ["--checkpoint", supernet_path, "--fitness", fit, "--seed", str(seed), "--out", d,
                    "--population", str(args.population), "--generations", str(args.generations),
                    "--mutations", str(args.population), "--crossovers", str(args.population)]
            for f in fractions:
                argv += ["--macs-budget", f"{f * full_macs:.6g}"]
            command("search", argv)
        with open(os.path.join(d, "search.json"), encoding="utf-8") as fh:
            searches[fit] = json.load(fh)
    t_search = time.perf_counter() - t0

    # every candidate any search evaluated, on the test split
    test_ds = build_dataset(supernet.spec["data"]["name"], split="test", model=supernet, augment=False)
    images, labels = cached_tensors(test_ds)
    n = len(labels)
    cands = {}
    for res in searches.values():
        for c in res["candidates"]:
            cands.setdefault(tuple(c["counts"]), c)
    keys = sorted(cands)
    sc = test_scores(supernet, [TokenSchedule(k, space.num_patches, space.min_tokens) for k in keys], images, labels)
    test_acc = np.array(sc.correct) / n
    corr = {}
    for fit in FITNESSES:
        value = np.array([cands[k]["accuracy"] if fit == "accuracy" else -cands[k][fit] for k in keys])
        corr[fit] = spearman(value, test_acc)
    # before / after distillation
    probes = {"smallest": space.smallest(), "middle": middle(space)}
    before = test_scores(finetuned, list(probes.values()), images, labels)
    after = test_scores(supernet, list(probes.values()), images, labels)
    distill = {}
    for i, (name, s) in enumerate(probes.items()):
        distill[name] = {"counts": list(s.counts), "macs": count_macs(supernet, s).total(),
                         "before": before.correct[i] / n, "before_interval": list(wilson_interval(before.correct[i], n)),
                         "after": after.correct[i] / n, "after_interval": list(wilson_interval(after.correct[i], n)),
                         "gain": paired_difference(after.hits[i].tolist(), before.hits[i].tolist())}
    picks = {}
    for fit, res in searches.items():
        rows = []
        for b in res["budgets"]:
            best = b.get("best") or {}
            base = {k: {"test_accuracy": v["test_accuracy"], "vs_searched": v.get("vs_searched")}
                    for k, v in b["baselines"].items()}
            rows.append({"budget": b["limit"] / full_macs, "searched": best.get("test_accuracy"),
                         "searched_interval": best.get("test_interval"), "counts": best.get("counts"),
                         "baselines": base})
        picks[fit] = rows
    return {"seed": seed, "test_images": n, "candidates": len(keys), "spearman": corr, "distillation": distill,
            "picks": picks, "full_test_accuracy": next(iter(searches.values()))["full"]["test_accuracy"],
            "seconds": {"train_and_distill": t_models, "searches": t_search}}


def per_seed(args, run_seed, filename: str) -> list:
    """``run_seed(seed, args, out)`` for each of ``--seeds``; a seed whose ``filename`` exists is read back
    (written atomically, so a killed run starts that seed again and keeps the finished ones)."""
    from tavt_kit.files import write_json

    results = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        out = os.path.join(args.out, f"seed{seed}")
        os.makedirs(out, exist_ok=True)
        path = os.path.join(out, filename)
        if not os.path.isfile(path):
            write_json(run_seed(seed, args, out), path)
            print(f"seed {seed} done -> {path}", flush=True)
        with open(path, encoding="utf-8") as f:
            results.append(json.load(f))
    return results


def combine(vs_list):
    """Mean of per-seed paired differences, with the interval of the mean (independent seeds)."""
    ds = [v["difference"] for v in vs_list]
    halves = [(v["interval"][1] - v["interval"][0]) / 2 for v in vs_list]
    mean = sum(ds) / len(ds)
    half = math.sqrt(sum(h * h for h in halves)) / len(ds)
    return mean, mean - half, mean + half


def report(results, out: str) -> dict:
    lines = []
    seeds = [r["seed"] for r in results]
    lines.append(f"cluttered-digits, seeds {seeds}, {results[0]['test_images']} test images")
    lines.append("full model test top-1: " + ", ".join(f"{100 * r['full_test_accuracy']:.2f}" for r in results))
    lines.append("")
    lines.append("Spearman(held-out fitness, test accuracy) among all evaluated candidates:")
    summary = {"spearman": {}, "picks": {}, "distillation": {}}
    for fit in FITNESSES:
        vals = [r["spearman"][fit] for r in results]
        summary["spearman"][fit] = {"per_seed": vals, "mean": float(np.mean(vals))}
        lines.append(f"  {fit:<9} " + "  ".join(f"{v:+.3f}" for v in vals) + f"   mean {np.mean(vals):+.3f}"
                     + f"   ({', '.join(str(r['candidates']) for r in results)} candidates)")
    lines.append("")
    for fit in FITNESSES:
        have = [r for r in results if fit in r["picks"]]
        if not have:
            continue
        lines.append(f"Searched pick (fitness {fit}) vs baselines, test top-1 averaged over seeds "
                     f"{[r['seed'] for r in have]}; difference = searched - best baseline, paired 95 % interval:")
        summary["picks"][fit] = []
        for j, row in enumerate(have[0]["picks"][fit]):
            rows = [r["picks"][fit][j] for r in have]
            if any(x["searched"] is None for x in rows):
                lines.append(f"  {row['budget']:.2f}x MACs: no searched schedule meets it")
                continue
            s = float(np.mean([x["searched"] for x in rows]))
            names = sorted(rows[0]["baselines"])
            means = {k: float(np.mean([x["baselines"][k]["test_accuracy"] for x in rows])) for k in names}
            best = max(names, key=lambda k: means[k])
            d, lo, hi = combine([x["baselines"][best]["vs_searched"] for x in rows])
            lines.append(f"  {row['budget']:.2f}x MACs: searched {100 * s:.2f}  " + "  ".join(
                f"{k} {100 * means[k]:.2f}" for k in names) + f"   searched - {best}: {100 * d:+.2f} "
                f"[{100 * lo:+.2f}, {100 * hi:+.2f}]" + ("" if lo > 0 or hi < 0 else " (within noise)"))
            summary["picks"][fit].append({"budget": row["budget"], "searched": s, "baselines": means,
                                          "best_baseline": best, "difference": d, "interval": [lo, hi]})
        lines.append("")
    lines.append("Before / after distillation (test top-1, mean over seeds; gain with its paired interval):")
    for name in results[0]["distillation"]:
        rows = [r["distillation"][name] for r in results]
        b, a = np.mean([x["before"] for x in rows]), np.mean([x["after"] for x in rows])
        d, lo, hi = combine([x["gain"] for x in rows])
        lines.append(f"  {name:<9} {rows[0]['counts']}  before {100 * b:.2f}  after {100 * a:.2f}  gain "
                     f"{100 * d:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]")
        summary["distillation"][name] = {"before": float(b), "after": float(a), "gain": d, "interval": [lo, hi]}
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(out, "benchmark.md"), "w", encoding="utf-8") as f:
        f.write(text + "\n")
    try:
        plot(summary, os.path.join(out, "picks.png"))
    except ImportError:
        pass
    return summary


def plot(summary, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["picks"].get("kl") or next(iter(summary["picks"].values()))
    fig, ax = plt.subplots(figsize=(6, 3.6))
    names = ["searched (kl)"] + sorted(rows[0]["baselines"]) if rows else []
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        ys = [100 * (r["searched"] if i == 0 else r["baselines"][name]) for r in rows]
        ax.bar([j + i * width for j in range(len(rows))], ys, width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(rows))])
    ax.set_xticklabels([f"{r['budget']:.1f}x MACs" for r in rows])
    lo = min(100 * min([r["searched"]] + list(r["baselines"].values())) for r in rows) if rows else 0
    ax.set_ylim(max(0, lo - 3), 100)
    ax.set_ylabel("test top-1 (%), mean over seeds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", default=os.path.join("runs", "fitness-benchmark"))
    p.add_argument("--budgets", default="0.5,0.6,0.7", help="MAC budgets as fractions of the full model's")
    p.add_argument("--generations", type=int, default=6)
    p.add_argument("--population", type=int, default=12)
    p.add_argument("--train-steps", type=int)
    p.add_argument("--distill-steps", type=int)
    p.add_argument("--fitnesses", default=",".join(FITNESSES),
                   help="searches to run per seed (every search records all three fitnesses of each candidate, "
                        "so the correlations need only one)")
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    results = per_seed(args, run_seed, "seed.json")
    summary = report(results, args.out)
    with open(os.path.join(args.out, "benchmark.json"), "w", encoding="utf-8") as f:
        json.dump({"seeds": results, "summary": summary}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
