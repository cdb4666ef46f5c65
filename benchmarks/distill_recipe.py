"""Does distillation keep the parent's accuracy?  Distill recipes on cluttered-digits, paired to the parent.

    python benchmarks/distill_recipe.py [--seeds 0,1,2] [--variants old,parent-kd-lr1e-4,...]
                                        [--mixes 0.8,0.7,0.6] [--out runs/distill-recipe]

For each seed it runs the commands a user runs:

1. ``fgvc-kit train --dataset cluttered-digits --seed N`` (the demo's model and recipe): the *parent*;
2. ``fgvc-kit distill --checkpoint parent --seed N`` once per recipe variant (every setting that differs
   between variants is given on the command line, so the figures do not depend on the current defaults);
3. test top-1 (3000 images) of the parent at the full schedule and of the supernet at the full, middle and
   smallest schedule of its space, each with its 95 % Wilson interval, and the paired difference to the
   parent: at the full schedule for the full one, and to the parent *run at the same schedule*
   (``model(x, drop=schedule)``) for the middle and smallest ones (what distillation gained there).

Then the mean over the seeds each variant ran on (interval of the mean of independent paired differences).
Every (seed, variant) result is a file of its own (written atomically, with the command line that made
it): a second run skips finished work, and a variant whose settings changed runs again.
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from harness import DISTILL_VARIANTS, add_seeds, combine, command, read_json, test_scores, write_json, write_text

#: the demo's distillation length and space; shared by every variant. Each variant is the distilled weights
#: themselves (--parent-mix 1); the mix with the parent is measured afterwards, on those same weights, by
#: tavt_kit.distill.mix_with_parent (what distill --parent-mix A does at the end of a run): --mixes
COMMON = ["--steps", "150", "--warmup-steps", "15", "--bound", "0.3", "--parent-mix", "1"]
#: results written before --parent-mix existed ran without it, which is --parent-mix 1
NO_MIX = ["--parent-mix", "1"]
#: name -> the distill options of that recipe (the demo's before this benchmark: ``old``)
VARIANTS = DISTILL_VARIANTS
PROBES = ("full", "middle", "smallest")
#: --mixes auto: the weight distill --parent-mix auto would choose on the held-out images
AUTO = "auto"


def bits(hits) -> str:
    return "".join("1" if h else "0" for h in hits)


def unbits(s: str):
    return [c == "1" for c in s]


def stochastic_layers(model) -> list:
    """Modules that behave randomly in training mode (dropout, drop path / stochastic depth) with a rate > 0."""
    active = []
    for name, m in model.named_modules():
        rate = getattr(m, "drop_prob", None) if "DropPath" in type(m).__name__ else \
            getattr(m, "p", None) if isinstance(m, torch.nn.modules.dropout._DropoutNd) else None
        if rate:
            active.append(f"{name} ({type(m).__name__} {rate})")
    return active


class Seed:
    """One seed's parent (trained once) and its test images; the parent's hits per schedule are cached."""

    def __init__(self, seed: int, out: str):
        from tavt_kit.data import build_dataset, cached_tensors
        from tavt_kit.models import load_checkpoint, weights_digest

        self.seed, self.out = seed, out
        self.d_parent = os.path.join(out, "parent")
        if not os.path.isfile(os.path.join(self.d_parent, "results.json")):
            t0 = time.perf_counter()
            command("train", ["--dataset", "cluttered-digits", "--seed", str(seed), "--out", self.d_parent,
                              "--no-progress"] + (["--overwrite"] if os.path.isdir(self.d_parent) else []))
            print(f"seed {seed}: parent trained in {time.perf_counter() - t0:.0f} s", flush=True)
        self.checkpoint = os.path.join(self.d_parent, "best.safetensors")
        self.model = load_checkpoint(self.checkpoint).eval()
        self.digest = weights_digest(self.model)
        test = build_dataset("cluttered-digits", split="test", model=self.model, augment=False)
        self.images, self.labels = cached_tensors(test)
        self.cache_path = os.path.join(out, "parent_hits.json")
        cached = read_json(self.cache_path) if os.path.isfile(self.cache_path) else {}
        # the parent's hits per schedule, valid for these weights only
        self.cache = cached.get("hits", {}) if cached.get("weights_sha256") == self.digest else {}

    def holdout_score(self, tracked: dict):
        """held-out top-1 at the tracked schedules and their mean, as distill scores them (choose_parent_mix)."""
        from tavt_kit.data import build_dataset, cached_tensors

        if not hasattr(self, "holdout"):
            held = build_dataset("cluttered-digits", split="holdout", model=self.model, augment=False)
            self.holdout = cached_tensors(held)
        names = list(tracked)

        def score(m) -> dict:
            sc = test_scores(m, [tracked[k] for k in names], *self.holdout)
            out = {f"top1_{k}": float(sc.hits[i].float().mean()) for i, k in enumerate(names)}
            return {**out, "top1_mean": sum(out.values()) / len(out)}

        return score

    def hits(self, schedule) -> list:
        key = ",".join(str(c) for c in schedule.counts)
        if key not in self.cache:
            self.cache[key] = bits(test_scores(self.model, [schedule], self.images, self.labels).hits[0].tolist())
            write_json({"weights_sha256": self.digest, "hits": self.cache}, self.cache_path)
        return unbits(self.cache[key])


def distill_argv(s: Seed, name: str) -> list:
    return ["--checkpoint", s.checkpoint, "--seed", str(s.seed), "--out", os.path.join(s.out, name),
            "--no-progress"] + COMMON + VARIANTS[name]


def _without(argv: list, pair: list) -> list:
    for i in range(len(argv) - 1):
        if argv[i:i + 2] == pair:
            return argv[:i] + argv[i + 2:]
    return argv


def mixed_probes(s: Seed, name: str, res: dict, alphas) -> dict:
    """The variant's supernet mixed with its parent at each alpha (``mix_with_parent``, as distill --parent-mix
    does), scored like the variant at the same probes; cached in the variant's result under ``mixes``."""
    from tavt_kit.distill import choose_parent_mix, fixed_schedules, mix_with_parent
    from tavt_kit.models import load_checkpoint
    from tavt_kit.search.pipeline import space_of
    from tavt_kit.stats import paired_difference, wilson_interval

    mixes = res.setdefault("mixes", {})
    todo = [a for a in alphas if (a if a == AUTO else f"{a:g}") not in mixes]
    if not todo:
        return mixes
    path = os.path.join(s.out, name, "best.safetensors")
    tracked = fixed_schedules(space_of(load_checkpoint(path)))
    n = len(s.labels)
    for a in todo:
        extra = {}
        if a == AUTO:  # distill --parent-mix auto: the weight chosen on the held-out images
            choice = choose_parent_mix(load_checkpoint(path).eval(), s.model, s.holdout_score(tracked))
            extra = {"alpha": choice.alpha, "choice": choice.to_dict()}
            print(f"seed {s.seed} {name}: --parent-mix auto chose {choice.alpha:g} ({choice.reason()})", flush=True)
        m = mix_with_parent(load_checkpoint(path).eval(), s.model, extra.get("alpha", a))
        sc = test_scores(m, [tracked[p] for p in PROBES], s.images, s.labels)
        mixes[a if a == AUTO else f"{a:g}"] = {
            **extra, **{p: {"top1": int(sc.hits[i].sum()) / n,
                            "interval": list(wilson_interval(int(sc.hits[i].sum()), n)),
                            "parent_top1": sum(s.hits(tracked[p])) / n,
                            "vs_parent": paired_difference(sc.hits[i].tolist(), s.hits(tracked[p]))}
                        for i, p in enumerate(PROBES)}}
    write_json(res, os.path.join(s.out, f"{name}.json"))
    return mixes


def run_variant(s: Seed, name: str) -> dict:
    from tavt_kit.distill import fixed_schedules
    from tavt_kit.models import load_checkpoint
    from tavt_kit.models.checkpoint import load_parent
    from tavt_kit.search.pipeline import space_of
    from tavt_kit.stats import paired_difference, wilson_interval

    d = os.path.join(s.out, name)
    argv = distill_argv(s, name)
    t0 = time.perf_counter()
    started = os.path.join(s.out, f"{name}.argv.json")
    if os.path.isfile(os.path.join(d, "train_state.safetensors")) and os.path.isfile(started) \
            and read_json(started) == argv:
        command("distill", argv + ["--resume"])  # a killed run of the same settings continues
    else:
        write_json(argv, started)
        command("distill", argv + (["--overwrite"] if os.path.isdir(d) else []))
    seconds = time.perf_counter() - t0
    supernet = load_checkpoint(os.path.join(d, "best.safetensors")).eval()
    load_parent(supernet)  # the recorded parent is the checkpoint given, with the same weights (or an error)
    tracked = fixed_schedules(space_of(supernet))
    scheds = [tracked[p] for p in PROBES]
    sc = test_scores(supernet, scheds, s.images, s.labels)
    n = len(s.labels)
    parent_full = s.hits(tracked["full"])
    out = {"seed": s.seed, "variant": name, "argv": argv, "seconds": seconds, "test_images": n,
           "stochastic_layers_in_training": stochastic_layers(supernet),
           "best_step": supernet.spec["training"]["best_step"],
           "parent": {"top1": sum(parent_full) / n, "interval": list(wilson_interval(sum(parent_full), n)),
                      "weights_sha256": s.digest},
           "probes": {}}
    for i, p in enumerate(PROBES):
        hits = sc.hits[i].tolist()
        ref = s.hits(tracked[p])
        out["probes"][p] = {"counts": list(tracked[p].counts), "top1": sum(hits) / n,
                            "interval": list(wilson_interval(sum(hits), n)),
                            "parent_top1": sum(ref) / n, "vs_parent": paired_difference(hits, ref),
                            "hits": bits(hits)}
    return out


def result(s: Seed, name: str) -> dict:
    from tavt_kit.models.checkpoint import parent_of, read_spec

    path = os.path.join(s.out, f"{name}.json")
    if os.path.isfile(path):
        res = read_json(path)
        rec = parent_of(read_spec(os.path.join(s.out, name, "best.safetensors"), required=False) or {})
        same = res.get("argv") in (distill_argv(s, name), _without(distill_argv(s, name), NO_MIX))
        if same and rec and rec["weights_sha256"] == s.digest:
            return res
        print(f"seed {s.seed} {name}: settings or parent changed, running again", flush=True)
    res = run_variant(s, name)
    write_json(res, path)
    print(f"seed {s.seed} {name}: done in {res['seconds']:.0f} s -> {path}", flush=True)
    return res


def pp(x) -> str:
    return f"{100 * x:.2f}"


def diff(v) -> str:
    lo, hi = v["interval"]
    return f"{100 * v['difference']:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]"


def report(results) -> str:
    lines = ["seed  variant               parent full      supernet full / paired diff        "
             "middle / diff to parent@middle      smallest / diff to parent@smallest"]
    for r in results:
        p = r["parent"]
        label = r["variant"] + (f" ({r['alpha']:g})" if r.get("alpha") is not None else "")
        cells = [f"{r['seed']:<4}  {label:<26}  {pp(p['top1'])} [{pp(p['interval'][0])}, {pp(p['interval'][1])}]"]
        for name in PROBES:
            q = r["probes"][name]
            extra = f" (parent {pp(q['parent_top1'])})" if name != "full" else ""
            cells.append(f"{pp(q['top1'])}{extra} {diff(q['vs_parent'])}")
        lines.append("  ".join(cells))
    lines.append("")
    lines.append("mean over seeds (paired difference to the parent at the same schedule, 95 % interval of the mean):")
    variants = list(dict.fromkeys(r["variant"] for r in results))
    for v in variants:
        rs = [r for r in results if r["variant"] == v]
        cells = [f"{v:<26} seeds {','.join(str(r['seed']) for r in rs):<6}"]
        for name in PROBES:
            m, lo, hi = combine([r["probes"][name]["vs_parent"] for r in rs])
            top = sum(r["probes"][name]["top1"] for r in rs) / len(rs)
            cells.append(f"{name} {pp(top)} {100 * m:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]")
        lines.append("  ".join(cells))
    active = sorted({a for r in results for a in r["stochastic_layers_in_training"]})
    lines.append("")
    lines.append("stochastic layers active in the distill runs (dropout, drop path): " + (", ".join(active) or "none"))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_seeds(ap)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, of " + ", ".join(VARIANTS))
    ap.add_argument("--out", default=os.path.join("runs", "distill-recipe"))
    ap.add_argument("--mixes", default="",
                    help="also score each variant's supernet mixed with its parent at these weights of the "
                         "distilled weights (distill --parent-mix), e.g. 0.8,0.7,0.6; auto: the weight "
                         "distill --parent-mix auto chooses on the held-out images")
    args = ap.parse_args(argv)
    alphas = [a if a == AUTO else float(a) for a in (x.strip() for x in args.mixes.split(",")) if a]
    names = [v for v in args.variants.split(",") if v]
    bad = [v for v in names if v not in VARIANTS or v == "parent"]  # seedN/parent is the parent's own run
    if bad:
        ap.error(f"unknown variant {bad[0]!r}; expected one of {', '.join(VARIANTS)}")
    results = []
    for seed in [int(x) for x in args.seeds.split(",")]:
        s = Seed(seed, os.path.join(args.out, f"seed{seed}"))
        for name in names:
            res = result(s, name)
            results.append(res)
            for a, probes in mixed_probes(s, name, res, alphas).items() if alphas else ():
                if (a if a == AUTO else float(a)) in alphas:
                    results.append({**res, "variant": f"{name} mix{a if a != AUTO else ' auto'}", "probes": probes,
                                    "alpha": probes.get("alpha")})
    text = report(results)
    print(text)
    write_text(os.path.join(args.out, "report.txt"), text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
