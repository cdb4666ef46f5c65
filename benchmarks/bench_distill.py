"""In-place distillation on the demo: accuracy before/after, and its step time against the ideal ratio.

    python benchmarks/bench_distill.py [--out runs/bench_distill] [--train-steps 300] [--distill-steps 150]

1. fine-tunes the demo model (fgvc_tiny on the built-in digits) with the demo recipe;
2. evaluates the full model and the smallest schedule of the search space on
   the held-out and test splits (the undistilled model);
3. distils it in place (TAVT's step: full + smallest + ``--sandwich`` random
   sub-networks, KL to the full model's predictions) and evaluates again;
4. times a plain fine-tuning step and a distillation step on the same batch
   (round-robin, median), next to the ideal ratio 1 + sum(sub-network MACs) /
   full MACs of the sub-networks actually drawn.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch


def accuracy(model, dataset, schedule, batch_size=256):
    from tavt_kit.train import evaluate

    return evaluate(model, dataset, drop=schedule, batch_size=batch_size, num_workers=0, device="cpu").top1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join("runs", "bench_distill"))
    ap.add_argument("--train-steps", type=int, default=300)
    ap.add_argument("--distill-steps", type=int, default=150)
    ap.add_argument("--bound", type=float, default=0.3)
    ap.add_argument("--sandwich", type=int, default=2)
    ap.add_argument("--timing-steps", type=int, default=15)
    args = ap.parse_args()

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
    before = {name: (accuracy(model, hold, s), accuracy(model, test, s)) for name, s in (("full", full),
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
    after = {name: (accuracy(model, hold, s), accuracy(model, test, s)) for name, s in (("full", full),
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


if __name__ == "__main__":
    main()
