"""Does a short fine-tune of a shipped schedule, toward your model, win back what the supernet lost there?

The supernet's picks realise most of their MAC reduction on the deployed runtime
(docs/benchmarks/latency_reference.md) but lose 0.3-1.9 points against your model at 0.4-0.3 of its latency. This
measures one lever: from the supernet's weights, train the student at one fixed schedule only (the pick's), toward
the frozen parent's soft predictions (KL, T = 1; :func:`tavt_kit.distill.distill_schedule`), with the
distillation's own optimiser settings. It prints, paired with your model on the test images (and the held-out
ones, with --holdout-cache) with 95 % intervals, the supernet at that schedule before and after, in fp32 (PyTorch).

    python benchmarks/pick_finetune.py --parent P/best.safetensors --supernet S/best.safetensors \
        --counts 276,186,75,59,40,32 --reducers drop,merge,merge,drop,drop,merge --steps 150 \
        --test-cache SEARCH/cache/cluttered-digits-test-*.safetensors --out runs/pick-ft
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

import torch


def hits_of(model, schedule, images, labels, batch: int = 100) -> torch.Tensor:
    from tavt_kit.train import per_image_hits

    chunks = ((images[i:i + batch], labels[i:i + batch]) for i in range(0, len(labels), batch))
    return per_image_hits(model, chunks, drop=schedule)


def int8_hits(model, schedule, images, labels, spec) -> torch.Tensor:
    """Per-image hits of ``model`` at ``schedule`` deployed in int8 as the search deploys it."""
    from tavt_kit.data import Normalize
    from tavt_kit.export.quantize import calibration_images
    from tavt_kit.search.precision import DeployedScorer

    calib = calibration_images(model, spec, split="train", n=300, seed=0)
    scorer = DeployedScorer(model.eval(), Normalize.from_model(model), lambda: calib, threads=1)
    try:
        return scorer.scores(schedule, "int8", images, labels)[0].hits[0].bool()
    finally:
        scorer.close()


def finetune_config(steps: int, *, lr: float = 2e-4, batch_size: int = 64, seed: int = 0):
    """The fine-tune's trainer settings: AdamW, no weight decay, a tenth of the steps warm-up, a checkpoint every
    25 steps (a killed run resumes there; checkpoints do not change what is trained)."""
    from tavt_kit.train import TrainConfig

    return TrainConfig(steps=steps, batch_size=batch_size, optimizer="adamw", lr=lr, weight_decay=0.0,
                       warmup_steps=max(1, steps // 10), eval_every=0, save_every=min(steps, 25), log_every=10,
                       seed=seed, progress=False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parent", required=True)
    ap.add_argument("--supernet", required=True)
    ap.add_argument("--counts", required=True, help="tokens kept after each block, comma-separated")
    ap.add_argument("--reducers", help="drop/merge per block, comma-separated")
    ap.add_argument("--test-cache", required=True, help="the search's cached test tensors (.safetensors)")
    ap.add_argument("--holdout-cache", help="the search's cached held-out tensors: also score before and after there")
    ap.add_argument("--int8", action="store_true",
                    help="also deploy both at the schedule in int8 (NNCF on 300 training images, OpenVINO), as the "
                         "search's int8 stage does, and score them on the test images")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--label-weight", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    from safetensors.torch import load_file

    from tavt_kit.data import DataSpec, build_dataset
    from tavt_kit.models import load_checkpoint
    from tavt_kit.schedules import TokenSchedule
    from tavt_kit.stats import paired_difference
    from tavt_kit.distill import distill_schedule

    torch.manual_seed(args.seed)
    parent = load_checkpoint(args.parent)
    model = load_checkpoint(args.supernet)
    reducers = tuple(args.reducers.split(",")) if args.reducers else None
    sched = TokenSchedule(tuple(int(c) for c in args.counts.split(",")), model.num_patches, reducers=reducers)
    tensors = load_file(args.test_cache)
    images, labels = tensors["images"], tensors["labels"]

    t0 = time.perf_counter()
    ref = hits_of(parent, None, images, labels)
    before = hits_of(model, sched, images, labels)
    model_before = copy.deepcopy(model) if args.holdout_cache or args.int8 else None
    print(f"scored your model and the supernet at the schedule on {len(labels)} test images "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)

    spec = DataSpec("cluttered-digits", holdout=0.1, split_seed=0)
    train_set = build_dataset(spec, split="train", model=model)
    cfg = finetune_config(args.steps, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    t0 = time.perf_counter()
    distill_schedule(model, parent, sched, train_set, cfg, out_dir=args.out, label_weight=args.label_weight,
                     resume=os.path.exists(os.path.join(args.out, "train_state.safetensors")))
    train_s = time.perf_counter() - t0
    after = hits_of(model, sched, images, labels)

    rows = {"your model": ref, "supernet at the schedule": before,
            f"fine-tuned at the schedule ({args.steps} steps)": after}
    out = {"schedule": sched.to_dict(), "steps": args.steps, "lr": args.lr, "label_weight": args.label_weight,
           "train_seconds": round(train_s, 1), "images": int(len(labels)), "rows": {}}
    for name, hits in rows.items():
        d = paired_difference(hits.tolist(), ref.tolist())
        out["rows"][name] = {"accuracy": float(hits.float().mean()), "vs_parent": d}
        lo, hi = d["interval"]
        print(f"{name:45s} {100 * float(hits.float().mean()):6.2f} %  "
              f"{100 * d['difference']:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]")
    if args.holdout_cache:
        held = load_file(args.holdout_cache)
        hx, hy = held["images"], held["labels"]
        h_ref, h_before = hits_of(parent, None, hx, hy), hits_of(model_before, sched, hx, hy)
        h_after = hits_of(model, sched, hx, hy)
        out["holdout"] = {}
        for name, hits in (("supernet at the schedule", h_before), ("fine-tuned at the schedule", h_after)):
            d = paired_difference(hits.tolist(), h_ref.tolist())
            out["holdout"][name] = {"accuracy": float(hits.float().mean()), "vs_parent": d}
            print(f"held-out ({len(hy)} images) {name:30s} {100 * float(hits.float().mean()):6.2f} %  "
                  f"{100 * d['difference']:+.2f} [{100 * d['interval'][0]:+.2f}, {100 * d['interval'][1]:+.2f}]")
    if args.int8:
        for name, m in (("supernet at the schedule, int8", model_before), ("fine-tuned at the schedule, int8", model)):
            hits = int8_hits(m, sched, images, labels, spec)
            d = paired_difference(hits.tolist(), ref.tolist())
            out["rows"][name] = {"accuracy": float(hits.float().mean()), "vs_parent": d}
            print(f"{name:45s} {100 * float(hits.float().mean()):6.2f} %  "
                  f"{100 * d['difference']:+.2f} [{100 * d['interval'][0]:+.2f}, {100 * d['interval'][1]:+.2f}]")
    d = paired_difference(after.tolist(), before.tolist())
    print(f"fine-tuned - supernet at the schedule: {100 * d['difference']:+.2f} "
          f"[{100 * d['interval'][0]:+.2f}, {100 * d['interval'][1]:+.2f}]  (train {train_s:.0f} s)")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "pick_finetune.json"), "w") as f:
        json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
