"""Micro-benchmarks: one question each about where time goes, on this machine, mostly with random weights.

    python benchmarks/micro.py SUBCOMMAND [options]        # python benchmarks/micro.py SUBCOMMAND --help

Each subcommand was a script of its own (``benchmarks/bench_<name>.py``) until the suite was gathered; the
figures they made are quoted, with their dates, in ``docs/benchmarks/README.md``.

* ``latency-table``: latency tables on this CPU: predictor error against direct measurement, and OpenVINO (f32)
  against torch eager;
* ``search-eval``: candidates per minute: fgvc-kit's candidate evaluation against evaluating each candidate from
  the images up;
* ``merge-speed``: does token merging realise its MAC reduction as speed? Merge against drop at the same counts,
  torch eager and OpenVINO;
* ``precision``: what each precision buys on this CPU: ViT-B/16 at 448, OpenVINO f32 / bf16 / int8 at three
  schedules, one run;
* ``patch-drop``: patch drop on ViT-B/16 at 448: MAC reduction against latency speed-up, and the cost of scoring;
* ``heads``: FGVC heads under patch drop: MACs and CPU latency per head, full against a dropped schedule;
* ``vitae``: patch drop on ViTAE: MACs against measured latency (CPU, torch eager);
* ``distill``: in-place distillation on the demo: accuracy before and after, and its step time against the ideal
  ratio.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time

import torch

import tavt_kit
from tavt_kit import TokenSchedule
from tavt_kit.bench import TimingPolicy, machine_info, measure_round_robin, profile_latency
from tavt_kit.bench.backends import openvino_runner, quantized_for_latency
from tavt_kit.bench.identity import short_counts
from tavt_kit.bench.profile import profile_policy
from tavt_kit.bench.runners import ModelRunners, make_input, torch_threads
from tavt_kit.machine import describe
from tavt_kit.models import count_macs
from tavt_kit.models.token_drop import TokenState, drop_block_forward
from tavt_kit.schedules import evit_schedule, uniform_schedule
from tavt_kit.target import DeploymentTarget

from harness import one_generation, time_round_robin


# -- latency-table (was benchmarks/bench_latency_table.py) ----------------------------------------------------------

TABLE_DOC = """Latency tables on this CPU: predictor error vs direct measurement, and OpenVINO (f32) vs torch eager.

    python benchmarks/micro.py latency-table [--models tiny vitb] [--backends torch openvino]
        [--n-random 20] [--threads 1] [--grid N] [--statistic min|median] [--quick] [--json out.json]

For each model (the demo model fgvc_tiny; ViT-B/16 at 448 with 200 classes, random
weights) and backend (torch eager, OpenVINO f32): build a latency table
(``profile_latency``, i.e. ``fgvc-kit bench profile``), then measure N random
TAVT-style schedules (keep ratio per block drawn uniformly in [0.8, 1]) directly
and compare with the table's prediction. Goal: median absolute error <= 5 %.

Then OpenVINO (f32) vs torch eager at batch 1 on the same schedules (full, and
TAVT-style 0.9 and 0.8 per block), timed round-robin in one run so that the
ratio holds on a busy machine; also the max |logit| difference between the two
(f32 inference keeps it ~1e-5; bf16 would be ~1e-2).

Settings, chosen for a 2-core machine shared with other jobs:
* one thread (a second one mostly waits for a core another job holds);
* ``--statistic min``: tables hold, and the validation compares, the fastest of
  the repeats; the median of a run on a core that another process takes half of
  for seconds at a time measures that process (``--statistic median`` for a
  dedicated machine);
* measured whole-model times are also rescaled to the machine speed of the
  table by a reference block timed with them; both errors are printed;
* the TorchScript exporter (same OpenVINO speed as the dynamo exporter on these
  models, a quarter of the export time); whole-model exports are not re-verified
  against PyTorch here (the tests and fgvc-kit export do that);
* grid: 13 token counts per axis for the demo model, 7 for ViT-B (its curves are
  smooth: 7 points predict as well as 13 on this CPU).
Default run: about 16 min on a quiet 2-core machine, 25-30 min on a busy one (most
of it exporting 26 ViT-B/16 models for OpenVINO); ``--quick`` about 2 min,
``--models tiny`` about 3, ``--compare-only`` (OpenVINO vs torch) about 2.
"""


TABLE_MODELS = {
    "tiny": ("fgvc_tiny", {}),
    "vitb": ("vit_base_patch16_224", {"img_size": 448, "num_classes": 200}),
}


#: default token counts per table axis: ViT-B's curves are smooth (7 points predict as well as 13 on this CPU)
TABLE_GRID = {"tiny": 13, "vitb": 7}


def table_build(key):
    name, kw = TABLE_MODELS[key]
    torch.manual_seed(0)
    return tavt_kit.create_model(name, **kw).eval()


def table_run_table(model, backend, args, grid):
    t0 = time.perf_counter()
    policy = profile_policy()
    if args.quick:
        policy = TimingPolicy(warmup=1, min_repeats=3, budget_s=0.3, rel_ci=0.02)
    say = (lambda s: print(f"    .. {s}", flush=True)) if args.verbose else None
    table = profile_latency(model, target=DeploymentTarget(backend=backend, threads=args.threads), grid=grid,
                            policy=policy,
                            validate=args.n_random, seed=args.seed, exporter=args.exporter,
                            verify_exports=False, statistic=args.statistic, progress=say)
    return table, time.perf_counter() - t0


def table_compare_backends(model, args):
    """OpenVINO f32 vs torch eager at batch 1, round-robin in one run."""
    L, N = model.depth, model.num_patches
    scheds = {"full": model.full_schedule(),
              "tavt 0.9": tavt_kit.TokenSchedule.from_ratios([0.9] * L, L, N),
              "tavt 0.8": tavt_kit.TokenSchedule.from_ratios([0.8] * L, L, N)}
    x = make_input(1, model.patch_embed.img_size, args.seed)
    tb = ModelRunners(model, DeploymentTarget(backend="torch", threads=args.threads))
    ov = ModelRunners(model, DeploymentTarget(backend="openvino", threads=args.threads), exporter=args.exporter,
                      verify_exports=False)
    try:
        runners, diffs, prec = {}, {}, {}
        for label, s in scheds.items():
            runners[(label, "torch")] = tb.runner(s.counts, x)
            r = ov.runner(s.counts, x)
            runners[(label, "openvino")] = r
            prec[label] = r.info.get("precision_used")
            from tavt_kit.export.openvino import compile_openvino

            compiled, _ = compile_openvino(r.info["openvino_ir"], threads=args.threads, shape=list(x.shape))
            out = compiled(x.numpy())[compiled.output(0)]
            with torch.no_grad():
                ref = model(x, drop=s).numpy()
            diffs[label] = float(abs(out - ref).max())
        policy = TimingPolicy(warmup=2, min_repeats=5, budget_s=2.0 if not args.quick else 0.5)
        with torch.inference_mode():
            stats = measure_round_robin({k: r.fn for k, r in runners.items()}, policy)
    finally:
        ov.close()
    rows = []
    for label, s in scheds.items():
        t, o = stats[(label, "torch")], stats[(label, "openvino")]
        rows.append({"schedule": label, "counts": list(s.counts),
                     "gmacs": tavt_kit.count_macs(model, s).total() / 1e9,
                     "torch_ms": t.p50 * 1e3, "torch_ci": t.ci95_rel, "openvino_ms": o.p50 * 1e3,
                     "openvino_ci": o.ci95_rel, "speedup_openvino": t.p50 / o.p50,
                     "openvino_precision": prec[label], "max_abs_logit_diff": diffs[label]})
    return rows


def table_main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="micro.py latency-table", description=TABLE_DOC.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["tiny", "vitb"], choices=list(TABLE_MODELS))
    ap.add_argument("--backends", nargs="+", default=["torch", "openvino"],
                    choices=["torch", "onnxruntime", "openvino"])
    ap.add_argument("--n-random", type=int, default=20, help="random schedules measured directly (default 20)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--grid", type=int, help="token counts per table axis (default 13 for tiny, 7 for vitb)")
    ap.add_argument("--exporter", default="torchscript", choices=["auto", "dynamo", "torchscript"])
    ap.add_argument("--statistic", default="min", choices=["min", "median"],
                    help="what tables hold and validation compares: the fastest run (default; robust when other "
                         "jobs share the cores) or the median")
    ap.add_argument("--no-compare", action="store_true", help="skip OpenVINO vs torch")
    ap.add_argument("--compare-only", action="store_true", help="only OpenVINO vs torch (no tables)")
    ap.add_argument("--quick", action="store_true", help="grid 7, 8 random schedules, short timing")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write all figures to this JSON file")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.grid = min(args.grid or 7, 7)
        args.n_random = min(args.n_random, 8)
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    m = machine_info("cpu", args.threads)
    print(f"# {describe(m)}; torch {torch.__version__}, " + ", ".join(
        f"{k} {v.split('-')[0]}" for k, v in m["libraries"].items() if k in ("onnxruntime", "openvino")))
    print(f"# load average at start {m['load_average']}; {args.n_random} random schedules per table, keep ratio "
          f"per block in [0.8, 1]; grid {args.grid or TABLE_GRID} token counts; exporter {args.exporter}; statistic "
          f"{args.statistic}")
    out = {"machine": m, "args": vars(args), "tables": [], "compare": {}}
    summary = []
    with torch_threads(args.threads):
        for mk in args.models:
            model = table_build(mk)
            name = f"{TABLE_MODELS[mk][0]}@{model.patch_embed.img_size[0]}"
            print(f"\n## {name}: {model.depth} blocks, width {model.embed_dim}, {model.num_patches} patches, "
                  f"{tavt_kit.count_macs(model).total() / 1e9:.2f} GMACs full")
            for backend in ([] if args.compare_only else args.backends):
                table, secs = table_run_table(model, backend, args, args.grid or TABLE_GRID[mk])
                d = table.to_dict()
                v = d["validation"]
                sep = d["separability"]
                print(f"\n### {name} / {backend}: table in {secs:.0f} s  (precision {table.precision}, "
                      f"separable fit rms {100 * sep['rms_rel']:.2f}% max {100 * sep['max_abs_rel']:.1f}% over "
                      f"{sep['pairs']} pairs, offset {d['offset_ms']:+.3f} ms)")
                print(f"{'schedule (patch tokens kept per block)':<62} {'measured':>10} {'at table':>10} "
                      f"{'predicted':>10} {'error':>7} {'raw err':>7}")
                for r in v["schedules"]:
                    print(f"{short_counts(r['schedule']):<62} {r['measured_ms']:8.2f}ms "
                          f"{r['measured_ms_table_speed']:8.2f}ms {r['predicted_ms']:8.2f}ms "
                          f"{100 * r['error_rel']:+6.1f}% {100 * r['error_raw_rel']:+6.1f}%")
                print(f"median |error| {100 * v['median_abs_error_rel']:.2f}%  max |error| "
                      f"{100 * v['max_abs_error_rel']:.2f}%  mean error {100 * v['mean_error_rel']:+.2f}%; against raw "
                      f"times (no speed correction) median {100 * v['median_abs_error_raw_rel']:.2f}% max "
                      f"{100 * v['max_abs_error_raw_rel']:.2f}%; machine speed drift parts -> whole models "
                      f"{100 * v['reference_drift']:+.1f}% (per group: "
                      + ", ".join(f"{100 * g:+.1f}%" for g in v["group_drifts"]) + ")")
                summary.append((name, backend, v["median_abs_error_rel"], v["max_abs_error_rel"],
                                v["median_abs_error_raw_rel"], secs))
                out["tables"].append(d)
            if args.compare_only or (not args.no_compare and "openvino" in args.backends):
                rows = table_compare_backends(model, args)
                out["compare"][name] = rows
                print(f"\n### {name}: OpenVINO vs torch eager, batch 1, {args.threads} thread(s), round-robin")
                print(f"{'schedule':<10} {'GMACs':>7} {'torch ms':>10} {'openvino ms':>12} {'OV speed-up':>11} "
                      f"{'OV precision':>12} {'max|dlogit|':>11}")
                for r in rows:
                    print(f"{r['schedule']:<10} {r['gmacs']:7.2f} {r['torch_ms']:10.2f} {r['openvino_ms']:12.2f} "
                          f"{r['speedup_openvino']:10.2f}x {r['openvino_precision']:>12} "
                          f"{r['max_abs_logit_diff']:11.2e}")
    if not summary:
        print(f"\ntotal {time.perf_counter() - start:.0f} s")
        return
    print("\n## summary: latency-table predictor vs direct measurement "
          f"({args.n_random} random TAVT-style schedules, batch 1, {args.threads} thread(s))")
    print(f"{'model':<28} {'backend':<10} {'median |err|':>12} {'max |err|':>10} {'raw median':>10} "
          f"{'table+check s':>13}")
    for name, backend, med, mx, rmed, secs in summary:
        flag = "ok" if med <= 0.05 else "ABOVE GOAL"
        print(f"{name:<28} {backend:<10} {100 * med:11.2f}% {100 * mx:9.2f}% {100 * rmed:9.2f}% {secs:13.0f}  {flag}")
    print("(error: prediction vs measurement rescaled to the machine speed of the table by a reference block timed "
          "with both; raw: vs the measured times as they are)")
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


# -- search-eval (was benchmarks/bench_search_eval.py) --------------------------------------------------------------

SEARCH_EVAL_DOC = """Candidates per minute: fgvc-kit's candidate evaluation vs evaluating each candidate from the images up.

    python benchmarks/micro.py search-eval [--checkpoint SUPERNET] [--candidates 80] [--space tavt|evit]
                                           [--jpeg 0] [--model fgvc_tiny] [--img-size 64]

"From the images up" is what TAVT does: for every candidate, iterate the
held-out loader (decode, resize, crop, normalise) and run the whole model at
that schedule. fgvc-kit decodes and preprocesses once, caches the patch
embeddings (and the blocks no schedule drops at), walks a prefix tree of the
generation's schedules per image batch. Both paths run the same arithmetic in
the same batches, so the accuracies must be identical; the script checks it.

The candidates are one TAVT generation: a population of random members of the
space plus mutants and crossovers of it. ``--space evit`` restricts drops to
blocks L/4, L/2, 3L/4 (the first L/4 blocks are then shared by every schedule).
``--jpeg N`` uses a folder of N synthetic JPEG photos (500x375, like CUB's)
instead of the in-memory demo digits, so that decoding costs what it costs on
real datasets.
"""


def search_eval_make_jpegs(root: str, n: int, classes: int = 10) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", classes), ("test", n)):
        for i in range(count):
            c = i % classes
            d = os.path.join(root, split, f"class_{c:02d}")
            os.makedirs(d, exist_ok=True)
            base = rng.integers(0, 255, size=(47, 63, 3), dtype=np.uint8)
            img = Image.fromarray(base).resize((500, 375), Image.BICUBIC)
            img.save(os.path.join(d, f"{i:05d}.jpg"), quality=90)


def search_eval_main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="micro.py search-eval", description=SEARCH_EVAL_DOC.split("\n")[0])
    ap.add_argument("--checkpoint", help="supernet (default: a random fgvc_tiny / --model)")
    ap.add_argument("--model", default="fgvc_tiny")
    ap.add_argument("--img-size", type=int, default=None)
    ap.add_argument("--candidates", type=int, default=80)
    ap.add_argument("--space", choices=("tavt", "evit"), default="tavt")
    ap.add_argument("--bound", type=float, default=0.3)
    ap.add_argument("--jpeg", type=int, default=0, help="use N synthetic JPEG photos instead of the demo digits")
    ap.add_argument("--batch-size", type=int, default=128, help="fgvc-kit's evaluation batch")
    ap.add_argument("--naive-batch", type=int, default=16, help="TAVT's eval batch size (its README: 16)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    import tavt_kit
    from tavt_kit.data import DataSpec, Normalize, build_dataset, cached_tensors, make_eval_loader
    from tavt_kit.schedules import SearchSpace
    from tavt_kit.schedules import evit_blocks
    from tavt_kit.search.evaluate import CandidateEvaluator

    torch.manual_seed(0)
    if args.checkpoint:
        model = tavt_kit.load_checkpoint(args.checkpoint)
    else:
        kw = {"img_size": args.img_size} if args.img_size else {}
        model = tavt_kit.create_model(args.model, **kw)
    model.eval()
    tmp = None
    if args.jpeg:
        tmp = tempfile.mkdtemp(prefix="fgvc-jpeg-")
        search_eval_make_jpegs(tmp, args.jpeg, classes=model.num_classes)
        dataset = build_dataset(DataSpec("folder", root=tmp, holdout=0.0), split="test", model=model, augment=False)
    else:
        dataset = build_dataset(DataSpec("demo"), split="test", model=model, augment=False)
    drop_blocks = evit_blocks(model.depth) if args.space == "evit" else None
    space = SearchSpace.for_model(model, bound=args.bound, drop_blocks=drop_blocks)
    shared = next((i for i, b in enumerate(space.bounds) if b > 0), space.depth)

    scheds = one_generation(space, args.candidates)
    norm = Normalize.from_model(model)
    n_img = len(dataset)
    workers = 0 if not args.jpeg else min(2, os.cpu_count() or 1)

    # from the images up, one candidate at a time (TAVT's batch, then fgvc-kit's batch for a like-for-like view)
    def from_images_up(batch):
        t0 = time.perf_counter()
        out = []
        with torch.inference_mode():
            for s in scheds:
                correct = 0
                for x, y in make_eval_loader(dataset, batch, num_workers=workers):
                    correct += int((model(norm(x), drop=s).argmax(-1) == y).sum())
                out.append(correct)
        return out, time.perf_counter() - t0

    naive, t_naive = from_images_up(args.naive_batch)
    same_batch, t_same = from_images_up(args.batch_size)

    # fgvc-kit: decode once, cache embeddings and shared blocks, prefix tree per batch
    t0 = time.perf_counter()
    images, labels = cached_tensors(dataset)
    t_cache = time.perf_counter() - t0
    ev = CandidateEvaluator(model, images, labels, args.batch_size, transform=norm, shared_blocks=shared)
    t0 = time.perf_counter()
    fast = ev.correct(scheds)
    t_fast = time.perf_counter() - t0

    print(f"# {model.spec['backbone']['name']} {model.spec['img_size'][0]}px, {n_img} "
          f"{'JPEG' if args.jpeg else 'demo'} images, {len(scheds)} candidates of one TAVT generation, "
          f"space {args.space} (bound {args.bound}, {shared} shared blocks), batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads")
    print(f"from the images up, batch {args.naive_batch:>3} (TAVT): {t_naive:8.2f} s  "
          f"{len(scheds) / t_naive * 60:8.1f} candidates/min")
    print(f"from the images up, batch {args.batch_size:>3}       : {t_same:8.2f} s  "
          f"{len(scheds) / t_same * 60:8.1f} candidates/min")
    print(f"fgvc-kit, batch {args.batch_size:>3}                 : {t_fast:8.2f} s  "
          f"{len(scheds) / t_fast * 60:8.1f} candidates/min (+ {t_cache:.2f} s decoding once for the whole search)")
    print(f"speed-up over TAVT's way {t_naive / t_fast:.2f}x, over the same batch {t_same / t_fast:.2f}x per "
          f"generation; block runs {ev.stats.block_runs} of {ev.stats.block_runs_naive}")
    print(f"identical accuracies: same batch {same_batch == fast}, TAVT batch {naive == fast}")
    if same_batch != fast:
        raise SystemExit("accuracies differ")


# -- merge-speed (was benchmarks/bench_merge_speed.py) --------------------------------------------------------------

MERGE_SPEED_DOC = """Does token merging realise its MAC reduction as speed? Merge vs drop at the same counts, torch eager and OpenVINO.

    python benchmarks/micro.py merge-speed [--batches 1,8] [--batch8-schedules 2.0] [--backends torch,openvino]
                                           [--reductions 1.5,2.0,2.4] [--repeats 3] [--threads N] [--out FILE]

ViT-B/16 at 448x448 (``vit_base_patch16_224`` with ``img_size=448``: 784 patch
tokens, 12 blocks; random weights, latency does not depend on them). For each
MAC reduction asked for (default about 1.5x, 2x and 2.4x fewer MACs) a
ToMe-style constant ``r`` is fitted: ``counts[i] = 784 - r * (i + 1)`` (ToMe's
clamp where a block would merge more than half of its tokens: r > 60 at 784
tokens and 12 blocks, needed for ~2.4x), and the
same counts are timed with every reducing block merging (ToMe, proportional
attention on) and with every reducing block dropping (TAVT scorer), beside the
full model, round-robin per batch size and backend (the project's runners:
``tavt_kit.bench.runners.ModelRunners``; OpenVINO runs the project's own
ONNX export converted to IR, f32). Printed per row: MACs reduction, speed-up
over the full model, and ``realised`` = speed-up / MAC reduction (the fraction
of the MAC reduction realised as speed; the issue's goal for merge is >= 0.85),
plus the merge/drop latency ratio at the same counts. The cost of matching is
also timed alone: bipartite matching + size-weighted merge of block 0 (785 ->
785 - r tokens) in torch, against the whole merge model.

Batch 8 at 448 is heavy on a small CPU: by default only the ~2x schedule is
timed at batch 8 (``--batch8-schedules``). The repeat policy is small
(``--repeats`` timed runs after one warm-up, time-boxed), so figures carry a
few percent of noise on a shared machine.
"""


def merge_speed_tome_counts(r: int, depth: int, n: int):
    """``counts[i] = n - r * (i + 1)``, with ToMe's clamp: a block merges at most half of its tokens."""
    out, prev = [], n
    for _ in range(depth):
        prev -= min(r, prev // 2)
        out.append(prev)
    return tuple(out)


def merge_speed_fit_r(model, reduction: float) -> int:
    """The constant r whose drop-MAC reduction is closest to ``reduction``."""
    depth, n = model.depth, model.num_patches
    full = count_macs(model, model.full_schedule()).total()
    best = None
    for r in range(1, n // 2 + 1):
        s = TokenSchedule(merge_speed_tome_counts(r, depth, n), n, reducers=("merge",) * depth)
        red = full / count_macs(model, s).total()
        if best is None or abs(red - reduction) < abs(best[1] - reduction):
            best = (r, red)
    return best[0]


def merge_speed_matching_ms(model, r: int, batch: int, repeats: int) -> float:
    """Milliseconds of block 0's bipartite matching + size-weighted merge (keys given), torch eager."""
    from tavt_kit.models.token_merge import match, merge_wavg

    L, C = model.num_patches + model.num_prefix_tokens, model.embed_dim
    x = torch.randn(batch, L, C)
    metric = torch.randn(batch, L, C // model.blocks[0].attn.num_heads)
    with torch.inference_mode():
        for _ in range(2):
            merge_wavg(match(metric, r, model.num_prefix_tokens), x, None)
        t = []
        for _ in range(max(5, repeats * 3)):
            t0 = time.perf_counter()
            merge_wavg(match(metric, r, model.num_prefix_tokens), x, None)
            t.append(time.perf_counter() - t0)
    return 1e3 * sorted(t)[len(t) // 2]


def merge_speed_main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="micro.py merge-speed", description=MERGE_SPEED_DOC.splitlines()[0])
    p.add_argument("--batches", default="1,8")
    p.add_argument("--batch8-schedules", default="2.0", help="reductions timed at batch > 1 ('all' for every one)")
    p.add_argument("--backends", default="torch,openvino")
    p.add_argument("--reductions", default="1.5,2.0,2.4")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--budget", type=float, default=4.0, help="seconds of timed runs per row at most (after min)")
    p.add_argument("--threads", type=int, default=1,
                   help="intra-op threads (default 1: on a shared 2-core machine, 2 torch threads spin against "
                        "other jobs and run several times slower)")
    p.add_argument("--img-size", type=int, default=448)
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    model = tavt_kit.create_model("vit_base_patch16_224", num_classes=200, img_size=args.img_size).eval()
    depth, n = model.depth, model.num_patches
    full = model.full_schedule()
    macs_full = count_macs(model, full).total()
    reductions = [float(v) for v in args.reductions.split(",")]
    rs = {red: merge_speed_fit_r(model, red) for red in reductions}
    big = [float(v) for v in args.batch8_schedules.split(",")] if args.batch8_schedules != "all" else reductions
    policy = TimingPolicy(warmup=1, warmup_s=0.0, min_repeats=args.repeats, max_repeats=max(args.repeats, 50),
                          budget_s=args.budget, rel_ci=0.02, chunk_s=0.0)
    rows = []
    print(f"ViT-B/16 at {args.img_size}: {n} patch tokens, {depth} blocks, {macs_full / 1e9:.1f} GMACs; "
          f"{args.threads} threads; r per target reduction: {rs}", flush=True)
    for backend in args.backends.split(","):
        builder = ModelRunners(model, DeploymentTarget(backend=backend, threads=args.threads), verify_exports=False,
                               progress=lambda s: print(f"  [{backend}] {s}", file=sys.stderr, flush=True))
        try:
            for b in (int(v) for v in args.batches.split(",")):
                x = make_input(b, (args.img_size, args.img_size), 0)
                scheds = {"full": full}
                for red, r in rs.items():
                    if b > 1 and not any(abs(red - v) < 1e-9 for v in big):
                        continue
                    counts = merge_speed_tome_counts(r, depth, n)
                    scheds[f"merge r={r}"] = TokenSchedule(counts, n, reducers=("merge",) * depth)
                    scheds[f"drop r={r}"] = TokenSchedule(counts, n, reducers=("drop",) * depth)
                t0 = time.perf_counter()
                with torch_threads(args.threads):
                    runners = {k: builder.runner(s, x) for k, s in scheds.items()}
                    ctx = torch.inference_mode() if backend == "torch" else torch.no_grad()
                    with ctx:
                        stats = measure_round_robin({k: rr.fn for k, rr in runners.items()}, policy)
                base = stats["full"].p50
                for k, s in scheds.items():
                    macs = count_macs(model, s).total()
                    speed, mred = base / stats[k].p50, macs_full / macs
                    row = {"backend": backend, "batch": b, "label": k, "ms": 1e3 * stats[k].p50,
                           "repeats": stats[k].n, "gmacs": macs / 1e9, "mac_reduction": mred, "speedup": speed,
                           "realised": speed / mred if k != "full" else None,
                           "saved_fraction": (1 - stats[k].p50 / base) / (1 - macs / macs_full) if k != "full"
                           else None}
                    if k.startswith("merge"):
                        row["merge_over_drop"] = stats[k].p50 / stats[k.replace("merge", "drop")].p50
                    rows.append(row)
                print(f"  [{backend}] batch {b}: {len(scheds)} rows in {time.perf_counter() - t0:.0f} s",
                      file=sys.stderr, flush=True)
                runners.clear()
        finally:
            builder.close()
    print()
    print(f"{'backend':<9} {'batch':>5} {'schedule':<11} {'GMACs':>6} {'MACs red.':>9} {'ms':>9} {'speed-up':>8} "
          f"{'realised':>8} {'saved':>6} {'merge/drop':>10} {'n':>3}")
    for r in rows:
        opt = lambda v, f: format(v, f) if v is not None else format("-", f[:-2].replace(".", "") or ">1")  # noqa
        print(f"{r['backend']:<9} {r['batch']:>5} {r['label']:<11} {r['gmacs']:>6.1f} {r['mac_reduction']:>8.2f}x "
              f"{r['ms']:>9.1f} {r['speedup']:>7.2f}x {opt(r['realised'], '>8.2f')} "
              f"{opt(r['saved_fraction'], '>6.2f')} {opt(r.get('merge_over_drop'), '>10.3f')} {r['repeats']:>3}")
    print()
    with torch_threads(args.threads):
        for red, r in rs.items():
            ms = merge_speed_matching_ms(model, r, 1, args.repeats)
            merge_ms = next((x["ms"] for x in rows if x["backend"] == "torch" and x["batch"] == 1
                             and x["label"] == f"merge r={r}"), None)
            share = f", x{depth} blocks ~ {100 * ms * depth / merge_ms:.1f}% of the merge model" if merge_ms else ""
            print(f"matching + merge of block 0 (r={r}, batch 1, torch): {ms:.2f} ms{share}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"rows": rows, "r": rs, "threads": args.threads}, f, indent=2)
    return 0


# -- precision (was benchmarks/bench_precision.py) ------------------------------------------------------------------

PRECISION_DOC = """What each precision buys on this CPU: ViT-B/16 at 448, OpenVINO f32 / bf16 / int8 at three schedules, one run.

    python benchmarks/micro.py precision [--img-size 448] [--batch 1] [--threads N] [--repeats 5] [--budget 6]
                                         [--out docs/benchmarks/precision_benchmark.md] [--quick]

``vit_base_patch16_224`` at ``--img-size`` (448: 784 patch tokens, 12 blocks;
random weights — latency does not depend on them) at the full schedule,
EViT's 0.7 keep rate at blocks 3, 6 and 9 and TAVT's 0.8 per block. Each
schedule is exported once with the project's ONNX exporter and converted to
OpenVINO IR (f32 weights); the same IR is compiled with the f32 and the bf16
inference hints (bf16 only where OpenVINO reports BF16), and an int8 copy is
made with NNCF (transformer model type, calibrated on seeded random inputs:
only the time is measured here — ``"calibration": "random inputs (latency
only)"`` in the JSON; accuracy with real calibration is
``benchmarks/precision_search_benchmark.py``'s) and compiled with the f32 hint
(int8 kernels where quantised), as ``fgvc-kit bench --precision int8`` does.
All of them are timed round-robin in one process
(``tavt_kit.bench.timing.measure_round_robin``, the bench layer's timing), so
a machine whose speed drifts slows them alike. Printed per row: median and
fastest ms, the speed-up over f32 at the full schedule and over the same
precision's full model, the schedule's MAC reduction and ``realised`` =
speed-up over the same precision's full model / MAC reduction (the fraction of
the MAC reduction realised as speed). The table is written as markdown to
``--out`` and as JSON beside it (same name, ``.json``).

``--quick`` checks the script: one warm-up, 3 timed runs, a 1 s budget per
model, and nothing written unless ``--out`` is given (``--img-size 224
--quick`` took 2 minutes on 2 shared cores, most of it exporting and
quantising). The full run at 448 (three ViT-B/16 exports and NNCF
quantisations, nine models timed for at least ``--repeats`` runs and at most
``--budget`` seconds each) took about 3 minutes on 2 shared cores (105 s
exporting and quantising, 60 s timing).
"""


def _precision_all_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def precision_main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="micro.py precision", description=PRECISION_DOC.splitlines()[0])
    p.add_argument("--img-size", type=int, default=448)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=_precision_all_cores(), help="OpenVINO threads (default: all cores)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs of each model at least")
    p.add_argument("--budget", type=float, default=6.0, help="seconds of timed runs per model at most")
    p.add_argument("--out", default=None, help="markdown table (JSON beside it); default "
                                               "docs/benchmarks/precision_benchmark.md, none with --quick")
    p.add_argument("--quick", action="store_true",
                   help="a check of the script: 1 warm-up, 3 runs, 1 s per model, no file unless --out")
    args = p.parse_args(argv)
    if args.out is None:
        args.out = "" if args.quick else os.path.join("docs", "benchmarks", "precision_benchmark.md")
    if args.quick:
        args.repeats, args.budget = min(args.repeats, 3), min(args.budget, 1.0)
    from tavt_kit.errors import BackendError
    from tavt_kit.export.openvino import device_capabilities
    from tavt_kit.export.quantize import require_nncf

    start = time.perf_counter()
    torch.manual_seed(0)
    model = tavt_kit.create_model("vit_base_patch16_224", num_classes=200, img_size=args.img_size).eval()
    depth, n = model.depth, model.num_patches
    scheds = {"full": model.full_schedule(), "EViT 0.7 @3,6,9": evit_schedule(0.7, depth, n),
              "TAVT 0.8/block": uniform_schedule(0.8, depth, n)}
    macs = {k: count_macs(model, s).total() for k, s in scheds.items()}
    precisions = ["fp32"] + (["bf16"] if "BF16" in device_capabilities() else [])
    try:
        require_nncf()
        precisions.append("int8")
    except BackendError as e:
        print(f"no int8 rows: {e}")
    x = make_input(args.batch, (args.img_size, args.img_size), 0)
    print(f"ViT-B/16 at {args.img_size}: {n} patch tokens, {depth} blocks; batch {args.batch}, {args.threads} "
          f"threads; precisions {', '.join(precisions)}; CPU reports {', '.join(device_capabilities())}", flush=True)
    tmp = tempfile.TemporaryDirectory(prefix="bench-precision-")
    builder = ModelRunners(model, DeploymentTarget(backend="openvino", threads=args.threads, batch_size=args.batch),
                           workdir=tmp.name, verify_exports=False,
                           progress=lambda s: print(f"  {s}", file=sys.stderr, flush=True))
    runners = {}
    t0 = time.perf_counter()
    for label, s in scheds.items():
        xml = builder.exported_file(s)
        for prec in precisions:
            path = xml
            if prec == "int8":
                print(f"  quantising {label} (NNCF)", file=sys.stderr, flush=True)
                path = quantized_for_latency(xml, xml[:-4] + ".int8.xml", list(x.shape))
            runners[(prec, label)] = openvino_runner(path, x.numpy(), args.threads, prec)
    prep = time.perf_counter() - t0
    policy = TimingPolicy(warmup=1 if args.quick else 2, warmup_s=0.0, min_repeats=args.repeats,
                          max_repeats=max(args.repeats, 100), budget_s=args.budget, rel_ci=0.01, chunk_s=0.0)
    t0 = time.perf_counter()
    stats = measure_round_robin({k: r.fn for k, r in runners.items()}, policy)
    timed = time.perf_counter() - t0
    base = stats[("fp32", "full")].p50
    rows = []
    for prec in precisions:  # precision by precision, the schedules in their order
        own = stats[(prec, "full")].p50
        for label in scheds:
            st = stats[(prec, label)]
            red = macs["full"] / macs[label]
            rows.append({"precision": prec, "schedule": label, "counts": list(scheds[label].counts),
                         "used": runners[(prec, label)].info.get("precision_used"), "ms": 1e3 * st.p50,
                         "min_ms": 1e3 * min(st.samples), "repeats": st.n, "ci95_rel": st.ci95_rel,
                         "speedup_vs_f32_full": base / st.p50, "speedup_vs_own_full": own / st.p50,
                         "gmacs": macs[label] / 1e9, "mac_reduction": red,
                         "realised": (own / st.p50) / red if label != "full" else None})
    total = time.perf_counter() - start
    lines = [f"# Precision × schedule on this CPU: ViT-B/16 at {args.img_size}, OpenVINO, batch {args.batch}", "",
             f"{args.threads} threads; CPU reports {', '.join(device_capabilities())}; all {len(rows)} models timed "
             f"round-robin in one run ({prep:.0f} s to export/quantise, {timed:.0f} s timing, {total:.0f} s in all"
             f"{'; --quick' if args.quick else ''}). int8: NNCF PTQ calibrated on random inputs (latency only), "
             "f32 hint. `realised` = speed-up over the same precision's full model / MAC reduction.", "",
             "| precision (used) | schedule | GMACs | MAC red. | ms (median) | ms (min) | vs fp32 full | vs own full "
             "| realised | n |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['precision']} ({r['used']}) | {r['schedule']} | {r['gmacs']:.1f} | "
                     f"{r['mac_reduction']:.2f}x | {r['ms']:.1f} | {r['min_ms']:.1f} | "
                     f"{r['speedup_vs_f32_full']:.2f}x | {r['speedup_vs_own_full']:.2f}x | "
                     f"{'' if r['realised'] is None else format(r['realised'], '.2f')} | {r['repeats']} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text)
        info = {"model": "vit_base_patch16_224 (random weights)", "img_size": args.img_size, "batch": args.batch,
                "backend": "openvino", "threads": args.threads, "capabilities": list(device_capabilities()),
                "int8": {"quantized_with": "NNCF PTQ (transformer)", "calibration": "random inputs (latency only)",
                         "compiled_with": "the f32 inference hint"},
                "policy": policy.to_dict(), "quick": args.quick, "seconds": {"prepare": prep, "timing": timed,
                                                                             "total": total},
                "machine": machine_info("cpu", args.threads), "rows": rows}
        with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
            json.dump(info, f, indent=1)
    builder.close()
    tmp.cleanup()
    return 0


# -- patch-drop (was benchmarks/bench_patch_drop.py) ----------------------------------------------------------------

PATCH_DROP_DOC = """Patch drop on ViT-B/16 at 448: MAC reduction vs latency speed-up, and the cost of scoring.

    python benchmarks/micro.py patch-drop [--batch 1 8] [--repeats 7] [--threads N]

Random weights, torch eager, CPU. Schedules: full; EViT/DynamicViT-style keep
0.7 at blocks 3, 6, 9; TAVT-style drop ratio 0.2 after every block (TAVT's
length rule, class token counted). Each schedule's latency is the median of
repeated runs, measured round-robin so that drift of a noisy machine hits all
schedules alike. "realised" = latency speed-up / MAC reduction (goal >= 0.9).

Then one block at the full 785 tokens: timm's own block vs the same block
with a scorer that computes scores and selects (keeping every token), i.e. the
overhead of scoring + top-k + gather.
"""


def patch_drop_tavt_lengths(num_tokens: int, depth: int, bound: float = 0.2):
    """TAVT's smallest length configuration: l_i = ceil(l_{i-1} * (1 - bound)), class token counted."""
    out, n = [], num_tokens
    for _ in range(depth):
        n = math.ceil(round(n * (1 - bound), 9))
        out.append(n)
    return out


def patch_drop_main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="micro.py patch-drop", description=PATCH_DROP_DOC.split("\n")[0])
    ap.add_argument("--model", default="vit_base_patch16_224")
    ap.add_argument("--img-size", type=int, default=448)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = tavt_kit.create_model(args.model, img_size=args.img_size, num_classes=200).eval()
    L, Np = model.depth, model.num_patches
    schedules = {
        "full": model.full_schedule(),
        "evit 0.7@3,6,9": TokenSchedule.from_ratios({3: 0.7, 6: 0.7, 9: 0.7}, L, Np),
        "tavt 0.2/block": TokenSchedule.from_tavt_lengths(patch_drop_tavt_lengths(Np + 1, L), Np),
    }
    print(f"# {args.model} at {args.img_size}, {Np} patches, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    macs = {k: tavt_kit.count_macs(model, s).total() for k, s in schedules.items()}
    for k, s in schedules.items():
        print(f"{k:<16} {macs[k] / 1e9:7.2f} GMACs  counts {list(s.counts)}")

    for batch in args.batch:
        x = torch.randn(batch, 3, args.img_size, args.img_size)
        fns = {}
        for scorer in ("tavt", "cls"):
            for k, s in schedules.items():
                if k == "full" and scorer == "cls":
                    continue
                fns[(k, scorer)] = (lambda s=s, sc=scorer: (setattr(model, "scorer", sc), model(x, drop=s)))
        res = time_round_robin(fns, args.repeats)
        base = res[("full", "tavt")][0]
        print(f"\nbatch {batch}: schedule, scorer, latency p50, spread, MAC reduction, latency speed-up, realised")
        for (k, scorer), (med, spread) in res.items():
            mac_red = macs["full"] / macs[k]
            speed = base / med
            print(f"  {k:<16} {scorer:<5} {med * 1e3:9.1f} ms  ±{100 * spread:4.1f}%  {mac_red:5.2f}x  "
                  f"{speed:5.2f}x  {speed / mac_red:5.2f}")

    # cost of scoring one block at the full token count
    model.scorer = "tavt"
    blk = model.blocks[0]
    for batch in args.batch:
        x = torch.randn(batch, 1 + Np, model.embed_dim)

        def scored(sc):
            return drop_block_forward(blk, x, Np, TokenState(1, Np, False), sc, False)

        res = time_round_robin({"plain": lambda: blk(x), "cls": lambda: scored("cls"),
                                "tavt": lambda: scored("tavt")}, args.repeats * 3)
        plain = res["plain"][0]
        print(f"\nblock at {1 + Np} tokens, batch {batch}: timm block {plain * 1e3:.2f} ms; "
              f"cls scoring +{100 * (res['cls'][0] / plain - 1):.1f}%; "
              f"tavt scoring (explicit attention) +{100 * (res['tavt'][0] / plain - 1):.1f}%")


# -- heads (was benchmarks/bench_heads.py) --------------------------------------------------------------------------

HEADS_DOC = """FGVC heads under patch drop: MACs and CPU latency per head, full vs a dropped schedule.

    python benchmarks/micro.py heads [--model vit_small_patch16_224] [--img-size 224] [--batch 8]
                                     [--repeats 7] [--threads N]

Random weights, torch eager, CPU, eval mode (what a deployment runs). Heads:
linear (timm's class-token classifier), FFVT (num_token 12), Mix-ViT (its
branch is training-only, so inference is the backbone), PIM (last four blocks
tapped, 32 tokens selected per block, FPN width 512). Schedules: full and an
EViT-style keep 0.7 after blocks 3, 6, 9. Latency is the median of repeated
runs measured round-robin (drift of a shared machine hits every entry alike);
"spread" is (max - min) / median. MACs are per image (fgvc-kit's analytic
count, which agrees with fvcore); "head GMACs" are the head's own parts
(classifier; FFVT: + MAWS scoring; PIM: FPN + per-token classifiers +
combiner, no classifier of the backbone); FFVT's fusion block is counted with
the blocks (it is the backbone's last block, run on 1 + 11 x 12 tokens), so
"vs linear" (total MACs relative to the linear head at the same schedule)
shows the whole effect of a head.
"""


HEADS_HEADS = {
    "linear": {},
    "ffvt": {"num_token": 12},
    "mixvit": {"mask_topk": 0.05},
    "pim": {"num_selects": 32, "fpn_size": 512},
}


def heads_head_macs(count) -> int:
    """MACs of the head's own parts."""
    parts = count.by_part()
    return sum(parts.get(p, 0) for p in ("maws", "fpn", "combiner", "head"))


def heads_main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="micro.py heads", description=HEADS_DOC.split("\n")[0])
    ap.add_argument("--model", default="vit_small_patch16_224")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--classes", type=int, default=200)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    models = {h: tavt_kit.create_model(args.model, img_size=args.img_size, num_classes=args.classes, head=h,
                                       **kw).eval() for h, kw in HEADS_HEADS.items()}
    ref = models["linear"]
    L, Np = ref.depth, ref.num_patches
    schedules = {"full": ref.full_schedule(),
                 "keep 0.7@3,6,9": TokenSchedule.from_ratios({3: 0.7, 6: 0.7, 9: 0.7}, L, Np)}
    x = torch.randn(args.batch, 3, args.img_size, args.img_size)
    print(f"{args.model} at {args.img_size} ({Np} patches, {L} blocks), {args.classes} classes, batch {args.batch}, "
          f"torch {torch.__version__.split('+')[0]}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    for name, s in schedules.items():
        print(f"  schedule {name}: {list(s.counts)}")

    fns = {}
    for h, m in models.items():
        for sname, s in schedules.items():
            fns[(h, sname)] = (lambda m=m, s=s: m(x, drop=s))
    timing = time_round_robin(fns, args.repeats)

    print()
    print(f"{'head':<8} {'schedule':<15} {'GMACs':>8} {'head GMACs':>11} {'vs linear':>10} "
          f"{'ms/batch':>9} {'spread':>7} {'MAC red.':>9} {'speed-up':>9}")
    for h, m in models.items():
        full_macs = tavt_kit.count_macs(m, schedules["full"]).total()
        full_ms = timing[(h, "full")][0]
        for sname, s in schedules.items():
            count = tavt_kit.count_macs(m, s)
            lin = tavt_kit.count_macs(ref, s).total()
            ms, spread = timing[(h, sname)]
            print(f"{h:<8} {sname:<15} {count.total() / 1e9:>8.3f} {heads_head_macs(count) / 1e9:>11.4f} "
                  f"{count.total() / lin:>9.3f}x {1e3 * ms:>9.1f} {100 * spread:>6.1f}% "
                  f"{full_macs / count.total():>8.2f}x {full_ms / ms:>8.2f}x")


# -- vitae (was benchmarks/bench_vitae.py) --------------------------------------------------------------------------

VITAE_DOC = """Patch drop on ViTAE: MACs against measured latency (CPU, torch eager).

ViTAE_basic_Small at 448x448 (784 tokens in its 14 normal cells), random
weights. For the full schedule and two dropped ones it prints MACs (analytic,
fvcore's conventions), the median latency over repeated runs at batch 1 and 8,
and the ratios to the full model. It also prints the share of the full model's
MACs that patch drop can reach at all -- attention, MLP and norms of the normal
cells, the work that scales with the token count -- as opposed to the reduction
cells and every normal cell's convolution branch, which always run on the whole
grid; and how much of each schedule's MAC saving the latency realises.

    python benchmarks/micro.py vitae [--model ViTAE_basic_Small] [--img-size 448]
                                     [--batches 1 8] [--repeats 7] [--threads N]
"""


def vitae_schedules(model) -> dict:
    d, n = model.depth, model.num_patches
    return {
        "full": model.full_schedule(),
        # EViT's recipe: keep 70 % of the tokens at three evenly spaced cells
        "keep 0.7 @ cells 3,6,9": TokenSchedule.from_ratios({3: 0.7, 6: 0.7, 9: 0.7}, d, n),
        # TAVT's smallest sub-network shape: drop 20 % of the tokens after every cell but the first
        "keep 0.8 per cell": TokenSchedule.from_ratios([1.0] + [0.8] * (d - 1), d, n),
    }


def vitae_droppable_share(macs, model) -> float:
    """MACs of the drop stage's normal cells that scale with tokens (all but their conv branch) / total."""
    prefix = f"layers.{model.drop_stage}.NC."
    reach = sum(m for mod, part, m in macs.rows if mod.startswith(prefix) and part != "conv")
    return reach / macs.total()


@torch.inference_mode()
def vitae_latencies(model, scheds: dict, batch: int, repeats: int, warmup: int = 2) -> dict:
    """Median seconds per forward; schedules interleaved within each round so drift hits all alike."""
    size = model.img_size
    x = torch.randn(batch, 3, size[0], size[1])
    for sched in scheds.values():
        for _ in range(warmup):
            model(x, drop=sched)
    times = {name: [] for name in scheds}
    for _ in range(repeats):
        for name, sched in scheds.items():
            t0 = time.perf_counter()
            model(x, drop=sched)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def vitae_main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="micro.py vitae", description=VITAE_DOC.splitlines()[0])
    ap.add_argument("--model", default="ViTAE_basic_Small")
    ap.add_argument("--img-size", type=int, default=448)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = tavt_kit.create_model(args.model, img_size=args.img_size).eval()
    scheds = vitae_schedules(model)

    print(f"{args.model} @ {args.img_size}: {model.depth} normal cells on a {model.grid_size[0]}x"
          f"{model.grid_size[1]} grid ({model.num_patches} tokens), random weights")
    print(f"torch {torch.__version__.split('+')[0]} eager, CPU {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats} runs after 2 warm-up runs")
    print(f"load average at start (1/5/15 min): {_vitae_load()}  (other processes on the CPU inflate latency)")
    macs = {name: tavt_kit.count_macs(model, s) for name, s in scheds.items()}
    full = macs["full"]
    share = vitae_droppable_share(full, model)
    print()
    print("full model, GMACs by part:", ", ".join(f"{p} {m / 1e9:.2f}" for p, m in full.by_part().items()))
    print(f"share patch drop can reach (normal cells' attention + MLP + norms): {100 * share:.1f} % of "
          f"{full.gmacs:.2f} GMACs; the rest (reduction cells {100 * _vitae_rc_share(full):.1f} %, normal cells' conv "
          f"branch {100 * _vitae_nc_conv_share(full):.1f} %, head) runs at full size whatever the schedule")
    for name, s in scheds.items():
        if name != "full":
            print(f"  {name}: {list(s.counts)}")

    for batch in args.batches:
        lat = vitae_latencies(model, scheds, batch, args.repeats)
        print()
        print(f"batch {batch}")
        print(f"  {'schedule':<24}{'GMACs/img':>10}{'MAC ratio':>11}{'ms/batch':>10}{'lat ratio':>11}"
              f"{'MAC saving':>12}{'lat saving':>12}{'realised':>10}")
        for name in scheds:
            mr = macs[name].total() / full.total()
            lr = lat[name] / lat["full"]
            realised = (1 - lr) / (1 - mr) if mr < 1 else float("nan")
            print(f"  {name:<24}{macs[name].gmacs:>10.2f}{mr:>11.3f}{1000 * lat[name]:>10.1f}{lr:>11.3f}"
                  f"{100 * (1 - mr):>11.1f}%{100 * (1 - lr):>11.1f}%"
                  + (f"{100 * realised:>9.0f}%" if mr < 1 else f"{'-':>10}"))
    print()
    print(f"load average at end: {_vitae_load()}")
    print("realised = latency saving / MAC saving. The MAC saving is bounded by the reachable share above.")


def _vitae_load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def _vitae_rc_share(macs) -> float:
    return sum(m for mod, _, m in macs.rows if ".RC" in mod) / macs.total()


def _vitae_nc_conv_share(macs) -> float:
    return sum(m for mod, part, m in macs.rows if ".NC." in mod and part == "conv") / macs.total()


# -- distill (was benchmarks/bench_distill.py) ----------------------------------------------------------------------

DISTILL_DOC = """In-place distillation on the demo: accuracy before/after, and its step time against the ideal ratio.

    python benchmarks/micro.py distill [--out runs/bench_distill] [--train-steps 300] [--distill-steps 150]

1. fine-tunes the demo model (fgvc_tiny on the built-in digits) with the demo recipe;
2. evaluates the full model and the smallest schedule of the search space on
   the held-out and test splits (the undistilled model);
3. distils it in place (TAVT's step: full + smallest + ``--sandwich`` random
   sub-networks, KL to the full model's predictions) and evaluates again;
4. times a plain fine-tuning step and a distillation step on the same batch
   (round-robin, median), next to the ideal ratio 1 + sum(sub-network MACs) /
   full MACs of the sub-networks actually drawn.
"""


def distill_accuracy(model, dataset, schedule, batch_size=256):
    from tavt_kit.train import evaluate

    return evaluate(model, dataset, drop=schedule, batch_size=batch_size, num_workers=0, device="cpu").top1


def distill_main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="micro.py distill", description=DISTILL_DOC.split("\n")[0])
    ap.add_argument("--out", default=os.path.join("runs", "bench_distill"))
    ap.add_argument("--train-steps", type=int, default=300)
    ap.add_argument("--distill-steps", type=int, default=150)
    ap.add_argument("--bound", type=float, default=0.3)
    ap.add_argument("--sandwich", type=int, default=2)
    ap.add_argument("--timing-steps", type=int, default=15)
    args = ap.parse_args(argv)

    import tavt_kit
    from tavt_kit.data import DataSpec, Normalize, build_dataset
    from tavt_kit.train import ClassificationStep, TrainConfig, Trainer
    from tavt_kit.distill.inplace import InplaceDistillStep, make_schedule_eval, fixed_schedules
    from tavt_kit.schedules import SearchSpace

    torch.manual_seed(0)
    spec = DataSpec("demo")
    model = tavt_kit.create_model("fgvc_tiny")
    train = build_dataset(spec, split="train", model=model)
    hold = build_dataset(spec, split="holdout", model=model, augment=False)
    test = build_dataset(spec, split="test", model=model, augment=False)
    common = dict(batch_size=64, optimizer="adamw", weight_decay=0.05, clip_grad=1.0, eval_batch_size=256,
                  progress=False, num_workers=0, log_every=25)

    t0 = time.perf_counter()
    cfg = TrainConfig(steps=args.train_steps, lr=2e-3, warmup_steps=30, label_smoothing=0.1,
                      eval_every=args.train_steps, save_every=args.train_steps, **common)
    Trainer(model, train, cfg, holdout_set=hold, out_dir=os.path.join(args.out, "train"), device="cpu").fit()
    train_s = time.perf_counter() - t0
    space = SearchSpace.for_model(model, bound=args.bound)
    full, small = space.full(), space.smallest()
    macs_full = tavt_kit.count_macs(model, full).total()
    macs_small = tavt_kit.count_macs(model, small).total()
    before = {name: (distill_accuracy(model, hold, s), distill_accuracy(model, test, s)) for name, s in (("full", full),
                                                                                       ("smallest", small))}

    teacher_state = {k: v.clone() for k, v in model.state_dict().items()}
    step = InplaceDistillStep(space, sandwich=args.sandwich, seed=0)
    t0 = time.perf_counter()
    cfg_d = TrainConfig(steps=args.distill_steps, lr=5e-4, warmup_steps=15, eval_every=args.distill_steps // 3,
                        save_every=args.distill_steps, select_metric="top1_mean", **common)
    Trainer(model, train, cfg_d, holdout_set=hold, step_fn=step,
            eval_fn=make_schedule_eval(hold, fixed_schedules(space), 256),
            out_dir=os.path.join(args.out, "distill"), device="cpu").fit()
    distill_s = time.perf_counter() - t0
    after = {name: (distill_accuracy(model, hold, s), distill_accuracy(model, test, s)) for name, s in (("full", full),
                                                                                      ("smallest", small))}

    # step time: plain fine-tuning step vs distillation step, same batch, round-robin
    norm = Normalize.from_model(model)
    idx = list(range(64))
    x = norm(torch.stack([train[(i, 0)][0] for i in idx]))
    y = torch.tensor([train[(i, 0)][1] for i in idx])
    plain = ClassificationStep()
    model.train()
    times = {"finetune": [], "distill": []}
    drawn_macs = []
    for k in range(args.timing_steps + 2):
        for name in times:
            model.zero_grad(set_to_none=True)
            t = time.perf_counter()
            if name == "finetune":
                loss, _ = plain(model, x, y)
                loss.backward()
            else:
                step.trainer = None
                step._micro_key = (None, 0)
                step(model, x, y)
            dt = time.perf_counter() - t
            if k >= 2:
                times[name].append(dt)
        drawn_macs.append(sum(tavt_kit.count_macs(model, s).total() for s in step.schedules(0, 0)))
    ratio = statistics.median(times["distill"]) / statistics.median(times["finetune"])
    ideal = 1 + statistics.mean(drawn_macs) / macs_full
    model.load_state_dict(teacher_state)  # leave nothing half-changed behind

    print(f"# demo: fgvc_tiny, digits; fine-tune {args.train_steps} steps ({train_s:.0f} s), distil "
          f"{args.distill_steps} steps ({distill_s:.0f} s), space bound {args.bound}, sandwich {args.sandwich}")
    print(f"smallest schedule {list(small.counts)}: {macs_small / 1e6:.2f} of {macs_full / 1e6:.2f} MMACs "
          f"({macs_full / macs_small:.2f}x fewer)")
    print(f"{'':<22}{'holdout':>10}{'test':>10}")
    for when, res in (("before distillation", before), ("after distillation", after)):
        for name in ("full", "smallest"):
            h, t = res[name]
            print(f"{when[:6] + ' ' + name:<22}{100 * h:>9.2f}%{100 * t:>9.2f}%")
    gap = 100 * (after["full"][1] - after["smallest"][1])
    gain = 100 * (after["smallest"][1] - before["smallest"][1])
    print(f"after: smallest is {gap:.2f} points below full on test; distillation raised the smallest by "
          f"{gain:.2f} points")
    print(f"step time: fine-tune {1e3 * statistics.median(times['finetune']):.1f} ms, distill "
          f"{1e3 * statistics.median(times['distill']):.1f} ms -> {ratio:.2f}x (ideal 1 + sum(sub MACs)/full = "
          f"{ideal:.2f}x)")


#: subcommand -> (its main, its first line)
SUBCOMMANDS = {
    "latency-table": table_main,
    "search-eval": search_eval_main,
    "merge-speed": merge_speed_main,
    "precision": precision_main,
    "patch-drop": patch_drop_main,
    "heads": heads_main,
    "vitae": vitae_main,
    "distill": distill_main,
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        print(__doc__)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"unknown subcommand {argv[0]!r}; expected one of {', '.join(SUBCOMMANDS)}", file=sys.stderr)
            return 2
        return 0
    rc = SUBCOMMANDS[argv[0]](argv[1:])
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    raise SystemExit(main())
