"""``fgvc-kit distill --drop FILE``: one schedule of a supernet (a pick) fine-tuned toward your model.

The supernet's weights serve every schedule of its space; at the schedules fast enough to matter on a CPU that
costs accuracy. This trains the student at the one schedule in ``--drop`` only, from ``--checkpoint`` (a supernet
of ``fgvc-kit distill``), toward the frozen model it was distilled from (its recorded parent), with distillation's
recipe (:func:`tavt_kit.distill.distill_schedule`). The checkpoint written carries the schedule as its own and
the parent's record, so ``evaluate``, ``export`` and ``bench`` run it at that schedule and the report compares it
with your model. Measured: ``docs/benchmarks/pick_finetune.md``.
"""
from __future__ import annotations

import argparse
import functools
import os
from typing import Any, Dict

from .common import pct

RUN_FORMAT = "fgvc-kit/distill-schedule-run"
#: in-place distillation's options, which a run at one schedule has no use for (refused when given)
NOT_WITH_DROP = ("bound", "drop_blocks", "min_tokens", "reducers", "sandwich", "sub_label_weight", "sub_aux",
                 "teacher", "full_label_weight", "full_kd_weight", "parent_mix")


def _resolve(args: argparse.Namespace, resolve_distill) -> Dict[str, Any]:
    """The run's settings: distillation's (``resolve_distill``: its data and recipe), less the search space's
    options; the schedule is read once the model is loaded (:func:`run_schedule_distill`)."""
    from ..errors import ConfigError

    for flag in NOT_WITH_DROP:
        if getattr(args, flag, None) is not None:
            raise ConfigError(f"--{flag.replace('_', '-')}: not used with --drop (one schedule, trained toward your "
                              "model; the search space's options are in-place distillation's)")
    r = resolve_distill(args)
    for k in NOT_WITH_DROP:
        r.pop(k, None)
    return r


def run_schedule_distill(args: argparse.Namespace, resolve_distill, default_out: str, log=None) -> int:
    """``fgvc-kit distill --drop``; ``resolve_distill``, ``default_out`` and ``log``: distill's own (this module
    sits below ``cli.distill``, which dispatches here)."""
    from ..data import build_dataset, make_eval_loader
    from ..distill import distill_schedule
    from ..errors import CheckpointError, ConfigError
    from ..files import write_json
    from ..models import load_checkpoint
    from ..models.checkpoint import load_parent, parent_of
    from ..stats import paired_difference
    from ..train import LAST_FILE, per_image_hits
    from ..train.build import check_model_fits
    from ..train import STATE_FILE
    from ..train.recipes import (RESULT_KEYS, RESULTS_FORMAT, RESULTS_VERSION, RESUMABLE_CHANGES, data_spec,
                                 fit_batch, train_config)
    from ..train.run_dir import open_run
    from .common import parse_drop
    from .train import explicit_args

    log = log or (lambda line: print(line, flush=True))
    out, resume = args.out or default_out, bool(args.resume)
    run_path, r = open_run(out, resume, bool(args.overwrite), RUN_FORMAT, STATE_FILE, explicit_args(args),
                           functools.partial(_resolve, args, resolve_distill), RESULT_KEYS, RESUMABLE_CHANGES, log,
                           "distill")
    if not os.path.exists(r["checkpoint"]):
        raise CheckpointError(f"--checkpoint {r['checkpoint']}: checkpoint not found")
    model = load_checkpoint(os.path.join(out, LAST_FILE) if resume else r["checkpoint"])
    # --drop as the other commands read it (a drop config or counts), checked against the model before anything
    # is written; a resumed run keeps the schedule it stored
    given = parse_drop(args.drop, None, model)
    if not resume:
        r["drop"] = given.to_dict()
    sched = model.make_schedule(r["drop"])
    if given != sched:
        raise ConfigError(f"--drop {args.drop}: not the schedule the run in {out} trains ({list(sched.counts)}); "
                          "resume with the same schedule or start another --out")
    record = parent_of(model)
    if record is None:
        raise CheckpointError(f"--checkpoint {r['checkpoint']}: no parent recorded; --drop fine-tunes a schedule of a "
                              "supernet from fgvc-kit distill toward the model it was distilled from")
    parent = load_parent(model)
    model.spec.pop("search_space", None)  # its weights now serve one schedule: no search runs on them
    dspec = data_spec(r)
    train_set = build_dataset(dspec, split="train", model=model)
    check_model_fits(model, train_set, r["checkpoint"])
    holdout_set = build_dataset(dspec, split="holdout", model=model) if dspec.holdout > 0 else None
    cfg = fit_batch(r, train_config(r, args.workers, args.progress), explicit_args(args), len(train_set), 1, resume,
                    log)
    if not resume:
        os.makedirs(out, exist_ok=True)
        write_json({"format": RUN_FORMAT, "version": 1, "args": r, "data": dspec.to_dict(), "train": cfg.to_dict()},
                   run_path)
    extra = {"data": dspec.to_dict(),
             "distillation": {**(model.spec.get("distillation") or {}), "parent": record,
                              "schedule_finetune": {"schedule": sched.to_dict(), "steps": cfg.steps,
                                                    "from": r["checkpoint"]}}}
    print(f"distill: {list(sched.counts)} only, toward your model ({record['path']}), {cfg.steps} steps"
          + (f"; resuming {out}" if resume else ""), flush=True)
    result = distill_schedule(model, parent, sched, train_set, cfg, holdout_set=holdout_set, out_dir=out,
                              resume=resume, kd_temperature=r["kd_temperature"], checkpoint_extra=extra,
                              device=args.device)
    best = os.path.join(out, "best.safetensors")
    final = load_checkpoint(best) if os.path.isfile(best) else model
    summary: Dict[str, Any] = {"format": RESULTS_FORMAT, "version": RESULTS_VERSION, "steps": result.steps,
                               "time_s": result.time_s, "schedule": sched.to_dict(), "holdout": result.last_eval,
                               "best_step": result.best_step, "test": {}}
    if r.get("test", True):
        test_set = build_dataset(dspec, split="test", model=model)
        mine, yours = (per_image_hits(m, make_eval_loader(test_set, cfg.eval_batch_size, cfg.num_workers)).tolist()
                       for m in (final, parent))
        d = paired_difference(mine, yours)
        summary["test"] = {"top1": sum(mine) / len(mine), "your_model_top1": sum(yours) / len(yours),
                           "vs_parent": d}
        print(f"test: {pct(summary['test']['top1'])} at {list(sched.counts)}, your model "
              f"{pct(summary['test']['your_model_top1'])}: {100 * d['difference']:+.2f} points "
              f"[{100 * d['interval'][0]:+.2f}, {100 * d['interval'][1]:+.2f}] on {len(mine)} images, paired")
    write_json(summary, os.path.join(out, "results.json"))
    print(f"fine-tuned at its schedule: {best}")
    return 0

