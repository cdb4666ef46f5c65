"""The latency half of "the user's model is the reference": speed-up over your model at a loss you accept.

    python benchmarks/latency_reference.py [--seeds 0,1,2] [--batches 32,1] [--fractions 0.5,0.4,0.3,0.2]
                                           [--precisions fp32,int8] [--train-steps 1000] [--device cpu]
                                           [--out runs/latency-reference]

The model is the one where token reduction turns into OpenVINO latency on a 2-core CPU
(``docs/benchmarks/reduction_latency.md``): fgvc_tiny at 64 px with patch 4, i.e. 256 patch tokens at width 96
(249M MACs per image); at batch 32 patch drop and ToMe realise 0.9-1.1 of their MAC reduction in fp32 and int8
(the demo's 64-token model realises 0.34-0.63 at batch 1, so it cannot show what a schedule is worth).

Per seed, on cluttered-digits (3000 test images):

1. *your model* (the parent): a freshly initialised p4w96 fgvc_tiny fine-tuned by ``fgvc-kit train
   --checkpoint init.safetensors --steps --train-steps`` (``--device cuda`` trains on a GPU; latency is always
   measured on this machine's CPU);
2. a supernet: ``fgvc-kit distill`` from it with the built-in recipe and ``--bound`` (0.5: at most half of a
   block's tokens, ToMe's reach; above 0.5 a merging block runs several bipartite rounds);
3. per batch size: ``tavt_kit.search_schedules`` under latency budgets of ``--fractions`` of your model's fp32
   latency, given as shares (``50%``: the search places them on its latency table and judges every option by its
   ratio to your model timed in the same round; ``--budgets-as ms``: placed in ms from one timing of your model
   here, as the runs before shares), on OpenVINO at that batch, searching (schedule, precision) pairs over
   ``--precisions`` (int8: NNCF PTQ, verified on the deployed runtime), with your model as the reference: ToMe on
   it, the schedule the same evolution finds on your model's own weights (merging, no training;
   ``searched_parent``, off with ``--no-parent-search``) and your model itself, at every precision, compete for
   each budget's recommendation;
4. every deployable of that batch timed round-robin in one process (``measure_schedules``): your model at every
   precision, and per budget the searched pick and each training-free deployable; test top-1 of each with its
   paired difference to your model (lower precisions: run in OpenVINO on the test images). A deployable is
   within its budget when this round timed it at no more than the budget's fraction of your model's fp32 latency
   in the same round (ratios of one run: the machine may have run slower or faster when the budgets were placed).

Printed per batch, and as the mean over seeds: each deployable's speed-up over your model's fp32 latency
(measured in the same round-robin), its realised speed-up (over the full model at its precision, divided by its
MAC reduction) and its paired difference, and the headline -- the largest speed-up at <= 0.5 points loss (paired
point estimate) of the searched picks, of the schedules searched on your model, of what each budget recommends,
and of the best training-free deployable (ToMe on your model or your model, at any precision). Every stage
writes its own files; a re-run skips finished work (a killed train or distill resumes).
"""
from __future__ import annotations

import argparse
import os
from typing import Callable, Dict, List, Sequence

from harness import (RECIPES, add_seeds, command, fmt_mean, fmt_vs, openvino_target, parent_at, read_json,
                     schedule_of, test_hits, timing_policy, write_json, write_text)
from tavt_kit.models.token_drop import SCORERS
from tavt_kit.train.trainer import STATE_FILE  # a killed run resumes from it
from tavt_kit.search import EvaluationOptions, LatencyOptions, ShipPolicy, SpaceOptions

#: the models (``--model``): fgvc_tiny overrides, and what it is. p4w96 realises 0.9-1.1 of a MAC reduction at
#: batch 32; at batch 1 dropping on it realises 0.76-0.85 in fp32 and 0.61-0.76 in int8. c96p4w96 with a scorer
#: that keeps the fused attention (``tavt-sampled``, or EViT's ``cls`` at a larger accuracy cost) is the one whose
#: dropping realises >= 0.8 at batch 1 in fp32 and int8 on the AMX Xeon
#: (``docs/benchmarks/reduction_latency.md``, "Which model meets the precondition at batch 1"); cluttered-digits'
#: 64 px images are resized to its 96 px.
MODELS = {"p4w96": (dict(patch_size=4), "fgvc_tiny p4w96 (64 px, 256 patch tokens, width 96)"),
          "c96p4w96": (dict(img_size=96, patch_size=4), "fgvc_tiny c96p4w96 (96 px, 576 patch tokens, width 96)")}
#: the model and scorer of the runs before ``--model``/``--scorer`` (their folders have no record of them)
DEFAULT_MODEL = {"model": "p4w96", "scorer": "tavt"}
#: the loss the headline accepts (points, paired point estimate against your model)
ACCEPTED_LOSS = 0.5
#: --smoke: a few images and steps, to check the whole flow in minutes
SMOKE_DATA = ["--dataset-option", "train=256", "--dataset-option", "holdout=96", "--dataset-option", "test=96"]


def same_model(args) -> None:
    """Record ``--model`` and ``--scorer`` in ``--out`` on its first run; refuse a run that asks for others there
    (its parents, supernets and searches would be taken for the other model's)."""
    from tavt_kit.files import write_json

    path, want = os.path.join(args.out, "model.json"), {"model": args.model, "scorer": args.scorer}
    if os.path.isfile(path) or os.path.isdir(args.out) and any(d.startswith("seed") for d in os.listdir(args.out)):
        had = folder_model(args.out)  # without a record: a folder from before it
    else:
        had = want
    if had != want:
        raise SystemExit(f"--out {args.out}: holds --model {had['model']} --scorer {had['scorer']}, not "
                         f"--model {args.model} --scorer {args.scorer}; expected another --out")
    if not os.path.isfile(path):
        write_json(want, path)


def folder_model(out: str) -> dict:
    """The ``--model`` and ``--scorer`` a folder of this script holds (its record, or the defaults of before it)."""
    path = os.path.join(out, "model.json")
    return read_json(path) if os.path.isfile(path) else DEFAULT_MODEL


def reuse_parent(seed: int, d: str, args) -> str:
    """``--parents``: seed ``seed``'s finished parent from another folder of the same ``--model``, copied to ``d``
    with ``--scorer`` as the scorer it carries. A parent trains at the full schedule, where no scorer runs, so its
    weights are the same whatever the scorer; the copy keeps them (and their sha256) and the training record."""
    import tavt_kit
    from tavt_kit.files import write_text

    src = os.path.join(args.parents, f"seed{seed}", "parent")
    if not os.path.isfile(os.path.join(src, "results.json")):
        raise SystemExit(f"--parents {args.parents}: seed {seed} has no finished parent ({src}); expected a folder "
                         "of this script whose --train-only run finished")
    had = folder_model(args.parents)["model"]
    if had != args.model:
        raise SystemExit(f"--parents {args.parents}: holds --model {had}, not --model {args.model}")
    model = tavt_kit.load_checkpoint(os.path.join(src, "best.safetensors"))
    model.scorer = args.scorer
    os.makedirs(d, exist_ok=True)
    tavt_kit.save_checkpoint(model, os.path.join(d, "best.safetensors"))
    for name in ("config.json", "metrics.jsonl", "results.json"):  # results.json last: it marks the copy done
        if os.path.isfile(os.path.join(src, name)):
            with open(os.path.join(src, name), encoding="utf-8") as f:
                write_text(os.path.join(d, name), f.read())  # atomic: a kill leaves no half results.json
    return os.path.join(d, "best.safetensors")


def parent_checkpoint(seed: int, args) -> str:
    import torch

    import tavt_kit

    d = os.path.join(args.out, f"seed{seed}", "parent")
    if os.path.isfile(os.path.join(d, "results.json")):
        return os.path.join(d, "best.safetensors")
    if args.parents:
        return reuse_parent(seed, d, args)
    init = os.path.join(args.out, f"seed{seed}", "init.safetensors")
    if not os.path.isfile(init):
        torch.manual_seed(seed)
        tavt_kit.save_checkpoint(tavt_kit.create_model("fgvc_tiny", num_classes=10, scorer=args.scorer,
                                                       **MODELS[args.model][0]), init)
    resume = ["--resume"] if os.path.isfile(os.path.join(d, STATE_FILE)) else []
    command("train", resume + ["--checkpoint", init, "--dataset", "cluttered-digits", "--seed", str(seed),
                               "--steps", str(args.train_steps), "--out", d, "--device", args.device]
            + (SMOKE_DATA + ["--batch-size", "16"] if args.smoke else []))
    return os.path.join(d, "best.safetensors")


def supernet_checkpoint(seed: int, parent: str, args) -> str:
    d = os.path.join(args.out, f"seed{seed}", "supernet" + _bound_tag(args))
    if not os.path.isfile(os.path.join(d, "results.json")):
        resume = ["--resume"] if os.path.isfile(os.path.join(d, STATE_FILE)) else []
        command("distill", resume + ["--checkpoint", parent, "--seed", str(seed), "--out", d,
                                     "--bound", str(args.bound), "--scorer", args.scorer,
                                     "--steps", str(args.steps), "--warmup-steps", str(max(1, args.steps // 10)),
                                     "--device", args.device] + RECIPES["default"]
                + (["--batch-size", "16"] if args.smoke else []))
    return os.path.join(d, "best.safetensors")


def _policy(args):
    return timing_policy(smoke=args.smoke)


def _bound_tag(args) -> str:
    """The supernet space's part of stage and file names (none for the default 0.5, as runs before --bound)."""
    return f"-bound{args.bound:g}" if args.bound != 0.5 else ""


def _tag(batch: int, args) -> str:
    return f"b{batch}-f" + "+".join(f"{f:g}" for f in args.fractions) + "-p" + "+".join(args.precisions) + \
        (f"-t{args.threads}" if args.threads else "") + _bound_tag(args)


def _ship_tag(args) -> str:
    """A run with ``--ship-confidence`` has its own files and search folder (runs without it: the library's default
    of their time; the ship gate came after the first runs); a run whose budgets are shares of your model's latency
    (``--budgets-as share``, the default) has its own too (the runs before it placed them in ms), and so has a
    search of aligned schedules (``--token-multiple``)."""
    return (f"-ship{args.ship_confidence:g}" if args.ship_confidence is not None else "") + \
        ("-share" if args.budgets_as == "share" else "") + \
        (f"-m{args.token_multiple}" if getattr(args, "token_multiple", 1) > 1 else "")


# -- ToMe on your model at fixed r, at every precision: the training-free frontier measured, not fitted ----------
# The search fits ToMe to each budget from its latency table; where the table under-predicts (the int8 table: 2-40 %
# on the last-measured runs, most at the smallest schedules) the fitted r is milder than the budget allows. This
# sweep scores ToMe at every r of ``TOME_R`` on the test images (fp32 in PyTorch, lower precisions on the deployed
# runtime, int8 quantised with NNCF as the search's own pairs are) and times each point round-robin with your model
# in one process. Test hits do not depend on the batch size: kept per seed (``seed<S>/tome-sweep-hits.json``,
# written after every point, so a killed sweep resumes); the timing per batch (``seed<S>-<tag>-tome.json``).

#: the constant r of the sweep (256 patch tokens, 6 blocks: r >= 128 halves every block, ToMe's own clamp)
TOME_R = (16, 32, 48, 64, 72, 80, 88, 96, 112, 128)


def sweep_r(num_patches: int) -> tuple:
    """``TOME_R`` for a model of ``num_patches`` tokens: scaled with them above 256, so that the sweep reaches the
    same reductions (at 576 tokens r=128 merges only about half of the MACs away; ToMe's own clamp, half a block,
    is at r=288)."""
    if num_patches <= 256:
        return TOME_R
    return tuple(int(round(r * num_patches / 256)) for r in TOME_R)


def sweep_hits(seed: int, parent, data, precisions: Sequence[str], scheds: Dict[int, object], path: str,
               log: Callable[[str], None]) -> Dict[str, List[int]]:
    """Per-image test hits of ToMe at each r of ``scheds`` and precision (``"<r>@<precision>"``), resumed from
    ``path``."""
    import torch

    from tavt_kit.data import Normalize
    from tavt_kit.search.pairs import DeployedScorer

    hits = read_json(path) if os.path.isfile(path) else {}
    scorer = None
    try:
        for p in precisions:
            for r, sched in scheds.items():
                key = f"{r}@{p}"
                if key in hits:
                    continue
                log(f"ToMe sweep: r={r} at {p} on the test images")
                if p == "fp32":
                    with torch.inference_mode():
                        hits[key] = test_hits(parent, sched, data.test)
                else:
                    if scorer is None:
                        scorer = DeployedScorer(parent, Normalize.from_model(parent),
                                                lambda: data.calibration(300, seed), 100)
                    sc, _ = scorer.scores(sched, p, data.test.images, data.test.labels)
                    hits[key] = sc.hits[0].tolist()
                write_json(hits, path)
    finally:
        if scorer is not None:
            scorer.close()
    return hits


def tome_frontier(seed: int, parent, data, ref_hits: List[int], precisions: Sequence[str], target, policy,
                  hits_path: str, out_path: str, log: Callable[[str], None], rs: Sequence[int] = TOME_R) -> list:
    """Every (r, precision) point of the sweep with its test accuracy, paired difference to your model, latency
    and speed-up over your model's fp32 latency (all timed round-robin in one process, with your model at every
    precision); written to ``out_path``."""
    import tavt_kit
    from tavt_kit.bench.measure import measure_schedules
    from tavt_kit.schedules import tome_schedule
    from tavt_kit.stats import paired_difference

    full = parent.full_schedule()
    scheds = {r: parent.make_schedule(tome_schedule(r, parent.depth, parent.num_patches)) for r in rs}
    hits = sweep_hits(seed, parent, data, precisions, scheds, hits_path, log)
    items = {("full", p): (full, p) for p in dict.fromkeys(["fp32", *precisions])}
    items.update({(r, p): (scheds[r], p) for p in precisions for r in rs})
    log(f"ToMe sweep: timing {len(items)} deployables round-robin")
    timed = measure_schedules(parent, items, target=target, policy=policy, progress=log)
    ms = {k: v[0].p50 * 1e3 for k, v in timed.items()}
    ref_ms, full_macs = ms[("full", "fp32")], tavt_kit.count_macs(parent, full).total()
    macs_of = {r: tavt_kit.count_macs(parent, sched).total() for r, sched in scheds.items()}
    points = []
    for (r, p), t in ms.items():
        if r == "full":
            continue
        h, macs = hits[f"{r}@{p}"], macs_of[r]
        points.append({"r": r, "precision": p, "counts": list(scheds[r].counts), "reducers": ["merge"] * parent.depth,
                       "macs": macs, "test_accuracy": sum(h) / len(h), "vs_parent": paired_difference(h, ref_hits),
                       "ms": t, "speedup": ref_ms / t,
                       "realised": (ms[("full", p)] / t) / (full_macs / macs) if macs < full_macs else None})
    write_json({"seed": seed, "batch": target.batch_size, "parent_ms": ref_ms, "points": points}, out_path)
    return points


def with_frontier(res: dict, seed: int, batch: int, parent_path: str, supernet_path: str, args) -> dict:
    """``res`` with the ToMe sweep of this (seed, batch) (:func:`tome_frontier`): the training-free frontier
    measured at fixed r, which the headline's training-free side also reads."""
    if args.no_tome_sweep:
        return res
    import torch

    import tavt_kit
    from tavt_kit.search.data import search_data

    out_path = os.path.join(args.out, f"seed{seed}-{_tag(batch, args)}-tome.json")
    if os.path.isfile(out_path):
        res["tome_sweep"] = read_json(out_path)["points"]
        return res
    if args.report_only:
        raise SystemExit(f"--report-only: {out_path} is missing; run without --report-only (or with "
                         "--no-tome-sweep) to make it")
    say = lambda s: print(f"[seed {seed}, batch {batch}] {s}", flush=True)  # noqa: E731
    parent = tavt_kit.load_checkpoint(parent_path).eval()
    supernet = tavt_kit.load_checkpoint(supernet_path).eval()
    cache = os.path.join(args.out, f"seed{seed}", f"search-{_tag(batch, args)}", "cache")
    data = search_data(supernet, None, cache_dir=cache, log=lambda s: None)
    with torch.inference_mode():
        ref = test_hits(parent, parent.full_schedule(), data.test)
    rs = [int(v) for v in args.tome_r.split(",")] if args.tome_r else (64, 128) if args.smoke else \
        sweep_r(parent.num_patches)
    res["tome_sweep"] = tome_frontier(
        seed, parent, data, ref, args.tome_precisions.split(",") if args.tome_precisions else args.precisions,
        openvino_target(batch, args.threads), _policy(args),
        os.path.join(args.out, f"seed{seed}", "tome-sweep-hits.json"),
        out_path, say, rs=rs)
    return res


def _budgets_in_ms(parent, full, target, sdir: str, batch: int, say, args) -> list:
    """``--budgets-as ms`` (the runs before shares): the fractions of your model's fp32 latency timed once here,
    placed in ms. Kept in the search folder, so that a killed stage resumes its search (whose journal is keyed on
    the budgets) instead of starting over. A machine faster or slower then than in the search's own timing moves
    the limits: the tool then judges its options against ms that are not the fraction any more."""
    from tavt_kit.bench.measure import measure_schedules

    measured = os.path.join(sdir, "parent-latency.json")
    if os.path.isfile(measured):
        parent_ms = read_json(measured)["ms"]
    else:
        base = measure_schedules(parent, {"parent": (full, "fp32")}, target=target, policy=_policy(args))
        parent_ms = base["parent"][0].p50 * 1e3
        write_json({"ms": parent_ms, "batch": batch, "threads": args.threads}, measured)
    budgets = [f"{f * parent_ms:.4g}ms" for f in args.fractions]
    say(f"your model: {parent_ms:.3f} ms per batch of {batch}; budgets {', '.join(budgets)}")
    return budgets


def run_batch(seed: int, batch: int, parent_path: str, supernet_path: str, args) -> dict:
    """Search under latency budgets at ``batch`` and time every deployable round-robin; one file per (seed, batch)."""
    import torch

    import tavt_kit
    from tavt_kit.bench.measure import measure_schedules
    from tavt_kit.search import EvolutionSettings
    from tavt_kit.search.data import search_data
    from tavt_kit.stats import paired_difference

    tag = _tag(batch, args)
    # the search folder is shared: a run with the parent search after one without takes the supernet's journal
    path = os.path.join(args.out, f"seed{seed}-{tag}{'-no-parent-search' if args.no_parent_search else ''}"
                                  f"{_ship_tag(args)}.json")
    if os.path.isfile(path):
        return read_json(path)
    if args.report_only:
        raise SystemExit(f"--report-only: {path} is missing; run without --report-only to make it")
    say = lambda s: print(f"[seed {seed}, batch {batch}] {s}", flush=True)  # noqa: E731
    supernet = tavt_kit.load_checkpoint(supernet_path).eval()
    parent = tavt_kit.load_checkpoint(parent_path).eval()
    full = supernet.full_schedule()
    target = openvino_target(batch, args.threads)
    sdir = os.path.join(args.out, f"seed{seed}", f"search-{tag}")
    if args.budgets_as == "share":  # the search places them on its table and judges them by the ratio
        sdir += _ship_tag(args)
        budgets = [f"{100 * f:g}%" for f in args.fractions]
        say(f"budgets {', '.join(budgets)} of your model's fp32 latency on the target, per batch of {batch}")
    else:
        if args.ship_confidence is not None:  # its own folder; the budgets of the run without it (same timing)
            first, sdir = sdir, sdir + _ship_tag(args)
            if os.path.isfile(os.path.join(first, "parent-latency.json")) and not os.path.isdir(sdir):
                import shutil

                os.makedirs(sdir)
                shutil.copy(os.path.join(first, "parent-latency.json"), sdir)
        budgets = _budgets_in_ms(parent, full, target, sdir, batch, say, args)
    # a candidate's held-out metrics (and its int8 model's) do not depend on the batch size: what this seed's
    # searches at other batch sizes evaluated is taken, not evaluated again (the result is the same)
    seed_dir = os.path.join(args.out, f"seed{seed}")
    reuse = [os.path.join(seed_dir, d) for d in sorted(os.listdir(seed_dir)) if d.startswith("search-")
             and d != os.path.basename(sdir) and os.path.isfile(os.path.join(seed_dir, d, "search.journal.jsonl"))]
    profile = dict(grid=3, warmup=1, min_repeats=3, budget_s=0.02) if args.smoke else None
    ship = ShipPolicy(parent_search=not args.no_parent_search) if args.ship_confidence is None else \
        ShipPolicy(parent_search=not args.no_parent_search, confidence=args.ship_confidence)
    res = tavt_kit.search_schedules(
        supernet, None, budgets,
        evolution=EvolutionSettings(population=args.population, generations=args.generations, seed=seed),
        latency=LatencyOptions(target=target, precisions=args.precisions, table_profile=profile,
                               table_cache=os.path.join(args.out, f"seed{seed}", "latency-tables")),
        evaluation=EvaluationOptions(fitness="nll", reuse=reuse), ship=ship,
        space=SpaceOptions(token_multiple=args.token_multiple), parent=parent_path, out=sdir, log=say)
    doc = res.doc
    # every deployable of this batch, timed round-robin in one process (the same weights' architecture: a
    # schedule's latency does not depend on the weights' values)
    items = {("full", p): (full, p) for p in args.precisions}
    rows = []

    def add(d):
        p = d.get("precision", "fp32")
        key = (tuple(d["counts"]), tuple(d.get("reducers") or ()), p)
        if tuple(d["counts"]) == tuple(full.counts):  # nothing reduced: the reducers do not matter
            key = ("full", p)
        items.setdefault(key, (schedule_of(supernet, d), p))
        out = {k: d.get(k) for k in ("counts", "reducers", "precision", "macs", "test_accuracy", "vs_parent",
                                     "holdout_accuracy", "holdout_nll", "latency_ms", "latency_measured_ms", "r",
                                     "origin")}
        out["precision"], out["key"] = p, key
        return out

    for f, b in zip(args.fractions, doc["budgets"]):
        rec = b.get("recommended") or {}
        row = {"fraction": f, "label": b["label"], "limit_ms": b["limit"] * 1e3, "recommended": rec.get("family"),
               "free": {}}
        if b.get("best"):
            row["pick"] = add(b["best"])
        for name, d in (b.get("training_free") or {}).items():
            if d and d.get("counts"):
                row["free"][name] = add(d)
        rows.append(row)
    say(f"timing {len(items)} deployables round-robin")
    timed = measure_schedules(supernet, items, target=target, policy=_policy(args), progress=say)
    ms = {k: v[0].p50 * 1e3 for k, v in timed.items()}
    ref_ms = ms[("full", "fp32")]
    full_macs = tavt_kit.count_macs(supernet, full).total()
    for row in rows:
        for d in [row.get("pick")] + list(row["free"].values()):
            if d:
                k = tuple(d.pop("key"))
                # the budget is a fraction of your model's fp32 latency: judged against your model in this same
                # round, so that a machine slower or faster than when the budgets were placed (another process on
                # the other core, clock drift) moves both sides alike; the fixed limit in ms is kept beside it
                d.update(ms=ms[k], speedup=ref_ms / ms[k], within_budget=ms[k] <= row["fraction"] * ref_ms,
                         within_limit_ms=ms[k] <= row["limit_ms"])
                # realised: the speed-up over the full model at the same precision / the MAC reduction
                if d.get("macs"):
                    d["realised"] = (ms[("full", d["precision"])] / ms[k]) / (full_macs / d["macs"]) \
                        if d["macs"] < full_macs else None
        fam = row["recommended"]
        row["shipped"] = row.get("pick") if fam == "searched" else row["free"].get(fam)
    data = search_data(supernet, None, cache_dir=os.path.join(sdir, "cache"), log=lambda s: None)
    with torch.inference_mode():
        ref = test_hits(parent, parent.full_schedule(), data.test)
    full_precisions = {}
    for p in args.precisions[1:]:
        # your model at each lower precision, scored on the deployed runtime (the training-free one-liner)
        known = next((d for row in rows for n, d in row["free"].items() if n == f"parent@{p}"), None)
        if known is None:
            hits = parent_at(parent, data, p, seed)
            known = {"test_accuracy": sum(hits) / len(hits), "vs_parent": paired_difference(hits, ref)}
        full_precisions[p] = {"test_accuracy": known["test_accuracy"], "vs_parent": known["vs_parent"],
                              "ms": ms[("full", p)], "speedup": ref_ms / ms[("full", p)]}
    out = {"seed": seed, "batch": batch, "threads": args.threads,
           "model": MODELS[args.model][1], "scorer": args.scorer,
           "precisions": args.precisions,
           "parent": {"test_accuracy": doc["parent"]["test_accuracy"], "ms": ref_ms},
           "parent_at": full_precisions,
           "full": {"test_accuracy": doc["full"].get("test_accuracy"), "vs_parent": doc["full"].get("vs_parent")},
           "rows": rows, "test_images": doc["settings"]["test_images"], "machine": doc.get("machine"),
           "search": os.path.join(sdir, "search.json"), "reuse": doc.get("reuse")}
    write_json(out, path)
    return out


def _best(ds):
    """The most accurate on the test images among ``ds``, preferring those measured within the budget (a
    baseline gets the benefit of the doubt: chosen on the test split, it is an upper bound of what it ships)."""
    ds = [d for d in ds if d and d.get("vs_parent")]
    if not ds:
        return None
    return max(ds, key=lambda d: (d["within_budget"], d["test_accuracy"]))


def families(row: dict) -> dict:
    """One budget's deployables by family: ``tome`` (ToMe on your model, its best precision), ``parent`` (your
    model at a lower precision that meets the budget), ``pick`` (the searched pick), ``shipped`` (what the
    budget recommends)."""
    free = row["free"]
    return {"tome": _best([d for n, d in free.items() if n.startswith("tome_parent")]),
            "parent": _best([d for n, d in free.items() if n.startswith("parent")]),
            # the search on your model's weights: the tool's own pick, not a baseline (the most accurate precision)
            "searched_parent": _best([d for n, d in free.items() if n.startswith("searched_parent")]),
            "pick": row.get("pick"), "shipped": row.get("shipped")}


def headline(res: dict, family: str) -> tuple:
    """(speed-up, paired difference, what) of the fastest deployable of ``family`` within ``ACCEPTED_LOSS`` points of
    your model (``pick``: the searched picks; ``shipped``: what the budgets recommend; ``free``: ToMe on your model
    and your model, at every precision, fitted to the budgets or at each r of the sweep; ``free_budgets``: the same
    without the sweep, on the grid of budgets the tool had); (1.0, None, "your model") when none is."""
    options = []
    for row in res["rows"]:
        if family in ("free", "free_budgets"):  # what a user has without fgvc-kit's searches
            options += [(d["speedup"], d["vs_parent"], n) for n, d in row["free"].items() if d.get("vs_parent")
                        and not n.startswith("searched_parent")]
        else:
            d = families(row)[family] if family == "searched_parent" else row.get(family)
            if d and d.get("vs_parent"):
                options.append((d["speedup"], d["vs_parent"], f"{row['fraction']:g} budget"))
    if family in ("free", "free_budgets"):
        options += [(d["speedup"], d["vs_parent"], f"parent@{p}") for p, d in res["parent_at"].items()]
    if family == "free":  # the sweep's r chosen on the test images, among more points than there are budgets
        options += [(d["speedup"], d["vs_parent"], f"ToMe r={d['r']} @ {d['precision']} (sweep)")
                    for d in res.get("tome_sweep") or ()]
    ok = [o for o in options if 100 * o[1]["difference"] >= -ACCEPTED_LOSS]
    return max(ok, key=lambda o: o[0]) if ok else (1.0, None, "your model")


def _cell(d) -> str:
    if not d:
        return "nothing meets it"
    from tavt_kit.report.cells import schedule_text

    real = f", realised {d['realised']:.2f}" if d.get("realised") else ""
    return (f"{d['speedup']:.2f}x {fmt_vs(d['vs_parent'])} [{schedule_text(d)}]{real}"
            + ("" if d["within_budget"] else " (over the budget)"))


NAMES = (("tome", "ToMe on your model"), ("parent", "your model, lower precision"), ("pick", "searched pick"),
         ("searched_parent", "searched on your model"), ("shipped", "shipped (recommended)"))
FAMILIES = (("pick", "searched picks"), ("searched_parent", "schedules searched on your model (no training)"),
            ("shipped", "what fgvc-kit ships"),
            ("free", "best training-free (ToMe on your model fitted or swept, your model; every precision)"),
            ("free_budgets", "best training-free at the same budgets (ToMe on your model fitted to each budget, "
                             "your model; every precision; no sweep)"))


RULES = {"held-out NLL": lambda d: (-d["holdout_nll"],),
         "held-out accuracy (NLL on ties)": lambda d: (d["holdout_accuracy"], -d["holdout_nll"])}


def rule_check(results) -> list:
    """How each way of choosing among a budget's deployables (searched pick, ToMe on your model and your model at
    every precision) on the held-out images fares on the test images: per rule, the budgets where it chose the
    test-best and the mean test points it gave up (regret) against the test-best."""
    lines = []
    # the recommendation itself (the search's rule, both evidence gates included), on the same budgets
    for name, key in {**RULES, "the recommendation (what ships)": None}.items():
        hit, regret, n = 0, [], 0
        for r in results:
            for row in r["rows"]:
                ds = [d for d in [row.get("pick")] + list(row["free"].values())
                      if d and d.get("holdout_nll") is not None and d.get("test_accuracy") is not None]
                if len(ds) < 2 or (key is None and not row.get("shipped")):
                    continue
                n += 1
                chosen = row["shipped"] if key is None else max(ds, key=key)
                top = max(d["test_accuracy"] for d in ds)
                hit += chosen["test_accuracy"] == top
                regret.append(100 * (top - chosen["test_accuracy"]))
        if n:
            what = name if key is None else f"choosing by {name}"
            lines.append(f"  {what}: the test-best in {hit} of {n} budgets, mean regret "
                         f"{sum(regret) / n:.2f} points (worst {max(regret):.2f})")
    return lines


def report(results) -> str:
    """Per batch size: each seed's deployables, then the means over seeds and the headline."""
    import statistics

    first = results[0]
    threads = first.get("threads")
    lines = [f"{first['model']}, cluttered-digits, {first['test_images']} test images; OpenVINO on this CPU "
             f"({f'{threads} thread(s)' if threads else 'all cores'}), "
             f"precisions {','.join(first['precisions'])}; vs parent = paired difference to your model (points, "
             "95 % interval); speed-up over your model's fp32 latency, timed round-robin in one process"]
    for batch in sorted({r["batch"] for r in results}):
        rs = [r for r in results if r["batch"] == batch]
        lines.append(f"\n## batch {batch}")
        for r in rs:
            lines.append(f"seed {r['seed']}: your model {100 * r['parent']['test_accuracy']:.2f} % at "
                         f"{r['parent']['ms']:.2f} ms; " + "; ".join(
                             f"in {p} {d['speedup']:.2f}x {fmt_vs(d['vs_parent'])}" for p, d in r["parent_at"].items())
                         + f"; supernet full schedule {fmt_vs(r['full']['vs_parent'])}")
            sweep = sorted(r.get("tome_sweep") or (), key=lambda d: (d["precision"], d["r"]))
            if sweep:
                lines.append("  ToMe on your model at fixed r (sweep, timed in its own round): " + "; ".join(
                    f"r={d['r']}@{d['precision']} {d['speedup']:.2f}x {fmt_vs(d['vs_parent'])}" for d in sweep))
            for row in r["rows"]:
                fam = families(row)
                lines.append(f"  {row['fraction']:.2f} of your model ({row['label']}), recommended "
                             f"{row['recommended']}:")
                for name, what in NAMES:
                    lines.append(f"    {what:<28} {_cell(fam[name])}")
        lines.append(f"mean over {len(rs)} seed(s):")
        for p in rs[0]["parent_at"]:
            lines.append(f"  your model in {p}: {statistics.mean(r['parent_at'][p]['speedup'] for r in rs):.2f}x, "
                         f"{fmt_mean([r['parent_at'][p]['vs_parent'] for r in rs])}")
        full = [r["full"]["vs_parent"] for r in rs if r["full"]["vs_parent"]]
        lines.append(f"  supernet full schedule: {fmt_mean(full)}")
        for i, f in enumerate(rs[0]["rows"]):
            for name, what in NAMES:
                ds = [families(r["rows"][i])[name] for r in rs]
                if all(d and d.get("vs_parent") for d in ds):
                    lines.append(f"  {f['fraction']:.2f}: {what:<28} {statistics.mean(d['speedup'] for d in ds):.2f}x,"
                                 f" {fmt_mean([d['vs_parent'] for d in ds])}")
        for family, what in FAMILIES:
            hs = [headline(r, family) for r in rs]
            lines.append(f"  headline, speed-up at <= {ACCEPTED_LOSS} points loss, {what}: "
                         f"{statistics.mean(h[0] for h in hs):.2f}x (per seed: "
                         + ", ".join(f"{h[0]:.2f}x {fmt_vs(h[1])} ({h[2]})" for h in hs) + ")")
    check = rule_check(results)
    if check:
        lines += ["\n## choosing among a budget's deployables on the held-out images (all seeds and batches)"] + check
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_seeds(ap)
    ap.add_argument("--batches", default="32,1")
    ap.add_argument("--fractions", default="0.5,0.4,0.3,0.2",
                    help="latency budgets as fractions of your model's fp32 latency (the issue's 0.5, 0.3, 0.2, and "
                         "0.4; above 0.5 your model in int8 already meets them where the CPU has int8 dot products)")
    ap.add_argument("--precisions", default="fp32,int8",
                    help="precisions searched with the schedules, and at which the training-free deployables run "
                         "(fp32 first)")
    ap.add_argument("--threads", type=int, default=None,
                    help="OpenVINO inference threads of the target (default: all cores); with 1, pin the process "
                         "to one core (taskset -c N) to measure beside other work")
    ap.add_argument("--train-steps", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=150, help="distillation steps")
    ap.add_argument("--bound", type=float, default=0.5,
                    help="the supernet's largest drop ratio per block (above 0.5 merging blocks run several "
                         "bipartite rounds: a space past ToMe's halving per block)")
    ap.add_argument("--population", type=int, default=10)
    ap.add_argument("--generations", type=int, default=5)
    ap.add_argument("--device", default="cpu", help="where to train and distil (cpu, cuda); latency is this CPU's")
    ap.add_argument("--smoke", action="store_true", help="a few images and steps: the whole flow in minutes")
    ap.add_argument("--report-only", action="store_true",
                    help="print the report from the result files in --out (the seeds' and their ToMe sweeps'); "
                         "train, search, time and write nothing")
    ap.add_argument("--train-only", action="store_true",
                    help="train the parents and supernets only (they need no idle machine; the latency stages do)")
    ap.add_argument("--no-tome-sweep", action="store_true",
                    help="skip ToMe on your model at fixed r (every precision), scored and timed beside your model: "
                         "the training-free frontier measured rather than fitted to the budgets from the table")
    ap.add_argument("--tome-r", help="the sweep's constant r, comma-separated (default: TOME_R, scaled "
                    "with the tokens above 256)")
    ap.add_argument("--tome-precisions", help="the sweep's precisions (default: --precisions)")
    ap.add_argument("--no-parent-search", action="store_true",
                    help="the search does not also search schedules on your model's own weights (searched_parent)")
    ap.add_argument("--budgets-as", choices=("share", "ms"), default="share",
                    help="share: the search takes each budget as a share of your model's latency (50%%) and judges "
                         "it by the ratio to your model timed beside it; ms: placed in ms from one timing of your "
                         "model here (the runs before shares; a drifting machine moves those limits)")
    ap.add_argument("--ship-confidence", type=float, default=None,
                    help="the recommendation's ship_confidence; its files and search folder are named with it")
    ap.add_argument("--token-multiple", type=int, default=1,
                    help="the search keeps only schedules whose sequence lengths are multiples of N (its own "
                         "search folder and report: -mN); default 1")
    ap.add_argument("--model", choices=tuple(MODELS), default=DEFAULT_MODEL["model"],
                    help="the model (c96p4w96: the one whose token drop turns into latency at batch 1 in fp32 and "
                         "int8 on an AMX CPU, with --scorer tavt-sampled or cls)")
    ap.add_argument("--scorer", choices=SCORERS, default=DEFAULT_MODEL["scorer"],
                    help="the supernet's drop scorer (tavt-sampled: TAVT's from 32 query rows, and cls: EViT's class "
                         "row, keep the fused attention)")
    ap.add_argument("--parents", help="reuse the finished parents of another --out of the same --model (a parent "
                    "trains where no scorer runs; the copy carries --scorer)")
    ap.add_argument("--out", help="default: runs/latency-reference, with the model and scorer where not the defaults")
    args = ap.parse_args(argv)
    if args.out is None:
        own = {"model": args.model, "scorer": args.scorer} != DEFAULT_MODEL
        args.out = os.path.join("runs", "latency-reference" + (f"-{args.model}-{args.scorer}" if own else ""))
    same_model(args)
    args.fractions = [float(v) for v in args.fractions.split(",")]
    args.precisions = [v.strip() for v in args.precisions.split(",")]
    if args.precisions[0] != "fp32":
        raise SystemExit(f"--precisions {','.join(args.precisions)}: expected fp32 first (the budgets are fractions "
                         "of your model's fp32 latency)")
    if args.smoke:
        args.train_steps, args.steps, args.population, args.generations = 4, 2, 4, 1
    results = []
    for s in (int(v) for v in args.seeds.split(",")):
        parent = supernet = None  # --report-only: the result files hold everything the report reads
        if not args.report_only:
            parent = parent_checkpoint(s, args)
            supernet = supernet_checkpoint(s, parent, args)
        if args.train_only:
            continue
        for b in (int(v) for v in args.batches.split(",")):
            results.append(with_frontier(run_batch(s, b, parent, supernet, args), s, b, parent, supernet, args))
    if not results:
        return 0
    text = report(results)
    print(text)
    if args.report_only:
        return 0
    write_text(os.path.join(args.out, f"report{_ship_tag(args)}.txt"), text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
