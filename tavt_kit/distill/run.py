"""In-place distillation as one call: :func:`distill` turns a fine-tuned checkpoint into a supernet.

What ``fgvc-kit distill`` does, from Python: the run's settings (:class:`DistillSettings`), a run folder that
resumes exactly, the frozen parent, TAVT's step in the generic Trainer, the held-out split tracked at the full,
smallest, middle and EViT schedules, the parent mix at the end, the test figures and ``results.json``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Dict, List, Optional

from ..errors import CheckpointError, ConfigError
from ..train.recipes import RESULT_KEYS, RESULTS_FILE, RESULTS_FORMAT, RESULTS_VERSION, RESUMABLE_CHANGES
from ..train.run import RunResult, estimate_logger, warn_oversubscribed
from ..train.run_dir import open_run
from .settings import (LEGACY_DISTILL, MIX_AUTO, RUN_FORMAT, DistillSettings, check_drop_blocks,
                       check_full_weights, distill_given, resolve_distill, search_space)

DEFAULT_OUT = os.path.join("runs", "distill")
CURVES_FILE = "distill_curves.png"


@dataclass(frozen=True)
class DistillResult(RunResult):
    """What a distillation run wrote; ``best_checkpoint`` is the supernet."""

    curves: Optional[str] = None  #: distill_curves.png (None without matplotlib)
    mix_reason: Optional[str] = None  #: why parent_mix='auto' chose its weight

    @property
    def parent_mix(self):
        """The weight of the distilled weights in the shipped ones (None: not mixed)."""
        return self.results.get("parent_mix")


def _mixed_already(best_path: str) -> bool:
    from ..models import read_spec

    return ((read_spec(best_path, required=False) or {}).get("distillation") or {}).get("parent_mix") is not None


def _needs_parent_mix(best_path: str, alpha) -> bool:
    if not os.path.isfile(best_path) or (alpha != MIX_AUTO and alpha >= 1):
        return False
    return not _mixed_already(best_path)


def apply_parent_mix(best_path: str, alpha: float):
    """``best.safetensors`` interpolated toward its recorded parent (once: the spec records ``parent_mix``, so a
    resumed or repeated end of a run does not mix twice; a weight of 1, which ``auto`` may choose, is recorded
    too); returns the model, or None where nothing was done."""
    from ..models import load_checkpoint, save_checkpoint
    from ..models.checkpoint import load_parent
    from .mix import mix_with_parent

    if not os.path.isfile(best_path) or _mixed_already(best_path):
        return None
    model = load_checkpoint(best_path)
    mix_with_parent(model, load_parent(model), alpha)
    model.spec.setdefault("distillation", {})["parent_mix"] = alpha
    save_checkpoint(model, best_path)
    return model


def _host(model, trainer):
    return SimpleNamespace(model=model, device=trainer.device, amp_dtype=trainer.amp_dtype,
                           normalize=trainer.normalize, config=trainer.config)


def _choose_mix(best_path: str, holdout_set, tracked, cfg, trainer):
    """``parent_mix='auto'``: the weight chosen on the held-out images at the tracked schedules."""
    from ..models import load_checkpoint
    from ..models.checkpoint import load_parent
    from .inplace import make_schedule_eval
    from .mix import choose_parent_mix

    distilled = load_checkpoint(best_path).to(trainer.device).eval()
    parent = load_parent(distilled).to(trainer.device)
    held_out = make_schedule_eval(holdout_set, tracked, cfg.eval_batch_size)
    return choose_parent_mix(distilled, parent, lambda m: held_out(_host(m, trainer)))


def plot_distill_curves(metrics_path: str, png_path: str) -> Optional[str]:
    """Held-out top-1 of each tracked schedule against the step, from metrics.jsonl."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    series: Dict[str, List] = {}
    with open(metrics_path, encoding="utf-8") as f:
        for line in f:
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                continue
            if ev.get("event") != "eval":
                continue
            for k, v in ev.items():
                if k.startswith("top1_") and k != "top1_mean":
                    series.setdefault(k[5:], []).append((ev["step"], 100 * v))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=110)
    for name, pts in series.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("holdout top-1 (%)")
    ax.set_title("in-place distillation: accuracy per schedule")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    from ..files import save_figure

    try:
        save_figure(fig, png_path)
    finally:
        plt.close(fig)
    return png_path


def _parent(model, r: Dict[str, Any], out: str, resume: bool):
    """The parent's record and, where the run needs it, the frozen parent: the checkpoint as it was when
    distillation started (a resumed run keeps its record and checks that the file still holds those weights)."""
    from ..models import load_checkpoint
    from ..models.checkpoint import load_parent, parent_of, parent_record
    from ..train import LAST_FILE

    record = parent_of(model) if resume else parent_record(r["checkpoint"], model)
    r["parent"] = record
    needs_parent = r["teacher"] == "parent" or r["full_kd_weight"] > 0
    if needs_parent and record is None:
        raise CheckpointError(f"{os.path.join(out, LAST_FILE)}: no parent recorded to resume "
                              f"teacher='{r['teacher']}' with")
    parent = None
    if needs_parent:
        parent = load_parent(model) if resume else load_checkpoint(r["checkpoint"])
    return record, parent


def _start_folder(out: str, run_path: str, r, dspec, cfg, space) -> None:
    from ..files import write_json
    from ..train import BEST_FILE, METRICS_FILE

    os.makedirs(out, exist_ok=True)
    for name in (BEST_FILE, RESULTS_FILE, METRICS_FILE):
        if os.path.exists(os.path.join(out, name)):
            os.remove(os.path.join(out, name))
    write_json({"format": RUN_FORMAT, "version": 1, "args": r, "data": dspec.to_dict(), "train": cfg.to_dict(),
                "space": space.to_dict()}, run_path)


def distill(checkpoint: Optional[str] = None, settings: Optional[DistillSettings] = None, out: str = DEFAULT_OUT,
            resume: bool = False, overwrite: bool = False, device: Optional[str] = None,
            log=None) -> DistillResult:
    """In-place distillation of ``checkpoint`` (a fine-tuned model) into a supernet in ``out``.

    ``settings``: what differs from the defaults (None fields: TAVT's settings on the recipe; the data the
    checkpoint records). ``resume`` continues the run in ``out`` (its stored settings; ``checkpoint`` may be
    omitted), ``overwrite`` starts again in a folder that holds a run. ``device``: cpu, cuda or cuda:N. ``log``
    receives one line per event; nothing is printed without it. Returns the supernet and the figures.
    """
    import dataclasses

    import torch
    import torch.distributed as dist

    from ..models import load_checkpoint
    from ..train import LAST_FILE, STATE_FILE, init_distributed
    from ..train.recipes import train_config

    log = log or (lambda line: None)
    settings = settings or DistillSettings()
    check_drop_blocks(settings.drop_blocks)
    given = distill_given(settings)
    if checkpoint is not None:
        given["checkpoint"] = os.path.abspath(checkpoint)
    elif not resume:
        raise ConfigError("checkpoint=: expected the fine-tuned model to distil (a .safetensors file)")
    run_path, r = open_run(out, resume, overwrite, RUN_FORMAT, STATE_FILE, given,
                           lambda: resolve_distill(given, checkpoint), RESULT_KEYS,
                           RESUMABLE_CHANGES, log, "distill")
    if not os.path.exists(r["checkpoint"]):
        raise CheckpointError(f"checkpoint='{r['checkpoint']}': checkpoint not found")
    cfg = dataclasses.replace(train_config(r, settings.workers, settings.progress), select_metric="top1_mean")
    rank, world, _ = init_distributed(device)
    try:
        torch.manual_seed(r["seed"])
        model = load_checkpoint(os.path.join(out, LAST_FILE) if resume else r["checkpoint"])
        for k, v in LEGACY_DISTILL.items():
            r.setdefault(k, v)
        check_full_weights(r)
        return _run(model, r, cfg, given, out, run_path, resume, device, rank, world, log)
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _run(model, r, cfg, given, out, run_path, resume, device, rank, world, log) -> DistillResult:
    from ..data import build_dataset
    from ..models import describe_backbone
    from ..train import Trainer
    from ..train.build import check_model_fits
    from ..train.recipes import data_spec, fit_batch, fit_steps
    from .inplace import InplaceDistillStep, fixed_schedules, make_schedule_eval

    parent_rec, parent = _parent(model, r, out, resume)
    if r.get("scorer") and not resume:
        from ..models.token_drop import check_scorer

        check_scorer(model, r["scorer"])  # as create_model/patch would (cls needs a class token)
        model.scorer = r["scorer"]
    dspec = data_spec(r)
    if dspec.holdout <= 0:
        raise ConfigError(f"holdout={dspec.holdout}: distillation evaluates sub-networks on a held-out split; "
                          "expected > 0")
    space = search_space(model, r)
    train_set = build_dataset(dspec, split="train", model=model)
    quiet = log if rank == 0 else (lambda line: None)
    cfg = fit_steps(r, fit_batch(r, cfg, given, len(train_set), world, resume, quiet), given, len(train_set), world,
                    resume, quiet)
    holdout_set = build_dataset(dspec, split="holdout", model=model)
    check_model_fits(model, train_set, r["checkpoint"])
    tracked = fixed_schedules(space)
    step = InplaceDistillStep(space, r["sandwich"], r["kd_temperature"], r["sub_label_weight"], r["sub_aux"],
                              cfg.label_smoothing, r["seed"], teacher=r["teacher"], parent=parent,
                              full_label_weight=r["full_label_weight"], full_kd_weight=r["full_kd_weight"])
    del parent  # the step keeps its own frozen copy
    if rank == 0 and not resume:
        _start_folder(out, run_path, r, dspec, cfg, space)
    extra = {"data": dspec.to_dict(), "search_space": space.to_dict(),
             "distillation": {"parent": parent_rec, "teacher": r["teacher"], "sandwich": r["sandwich"],
                              "kd_temperature": r["kd_temperature"], "sub_label_weight": r["sub_label_weight"],
                              "full_label_weight": r["full_label_weight"], "full_kd_weight": r["full_kd_weight"],
                              "steps": cfg.steps, "world_size": world,
                              "tracked": {k: list(v.counts) for k, v in tracked.items()}}}
    trainer = Trainer(model, train_set, cfg, holdout_set=holdout_set, step_fn=step,
                      eval_fn=make_schedule_eval(holdout_set, tracked, cfg.eval_batch_size), out_dir=out,
                      class_names=train_set.class_names, checkpoint_extra=extra, device=device,
                      log_extra={"data": train_set.describe(), "space": space.to_dict()},
                      on_estimate=estimate_logger("distill", resume, log))
    if rank == 0:
        log(f"distill: {describe_backbone(model.spec)} {model.spec['img_size'][0]}px, {dspec.name} "
            f"{len(train_set)} train / {len(holdout_set)} held-out images, smallest schedule "
            f"{list(space.smallest().counts)}, {r['sandwich'] + 1} sub-networks per step, {cfg.steps} steps"
            + (f"; resuming {out}" if resume else ""))
        warn_oversubscribed("distill", log)
    result = trainer.fit(resume=resume)
    sets = SimpleNamespace(train=train_set, holdout=holdout_set, spec=dspec, tracked=tracked)
    return _finish(trainer, result, model, r, cfg, sets, out, rank, world, log)


def _finish(trainer, result, model, r, cfg, sets, out, rank, world, log) -> DistillResult:
    """The parent mix, the test figures at the tracked schedules, results.json and the curves."""
    import torch.distributed as dist

    from ..files import write_json
    from ..train import BEST_FILE, LAST_FILE, METRICS_FILE
    from .inplace import make_schedule_eval

    summary: Dict[str, Any] = {"format": RESULTS_FORMAT, "version": RESULTS_VERSION, "steps": result.steps,
                               "time_s": result.time_s, "images_per_s": result.images_per_s,
                               "holdout": result.last_eval, "best_step": result.best_step,
                               "best_score": result.best_score, "test": {}}
    best_path = os.path.join(out, BEST_FILE)
    if world > 1:
        dist.barrier()  # every rank decides on the same file: before rank 0 mixes it
    final = None  # the shipped weights, loaded once for the held-out and test figures
    alpha, choice = r["parent_mix"], None
    if alpha == MIX_AUTO and _needs_parent_mix(best_path, alpha):
        choice = _choose_mix(best_path, sets.holdout, sets.tracked, cfg, trainer)  # every rank: sharded
        alpha = choice.alpha
        summary["parent_mix_choice"] = choice.to_dict()
    if _needs_parent_mix(best_path, alpha) or choice is not None:
        final = _mixed(best_path, alpha, rank, world, trainer)
        # the held-out figures of what is shipped, not of the weights before the mix (sharded on every rank)
        summary["holdout_before_parent_mix"] = summary["holdout"]
        summary["holdout"] = choice.scores[alpha] if choice is not None else \
            make_schedule_eval(sets.holdout, sets.tracked, cfg.eval_batch_size)(_host(final, trainer))
        summary["parent_mix"] = alpha
    if r.get("test", True):
        summary["test"] = _test(trainer, final, model, best_path, cfg, sets)
    png = None
    if rank == 0:
        skipped = {s.split: s.meta["skipped_images"] for s in (sets.train, sets.holdout)
                   if s.meta.get("skipped_images")}
        if skipped:
            summary["skipped_images"] = skipped
            for split, bad in skipped.items():
                log(f"skipped {len(bad)} unreadable {split} image{'s' if len(bad) != 1 else ''} "
                    f"(skip_bad_images=True); all in {os.path.join(out, RESULTS_FILE)}")
        write_json(summary, os.path.join(out, RESULTS_FILE))
        png = plot_distill_curves(os.path.join(out, METRICS_FILE), os.path.join(out, CURVES_FILE))
    return DistillResult(out=out, results=summary, best_checkpoint=best_path,
                         last_checkpoint=os.path.join(out, LAST_FILE), curves=png,
                         mix_reason=choice.reason() if choice is not None else None)


def _mixed(best_path: str, alpha, rank: int, world: int, trainer):
    import torch.distributed as dist

    from ..models import load_checkpoint

    final = apply_parent_mix(best_path, alpha) if rank == 0 else None
    if world > 1:
        dist.barrier()
    if final is None:  # the other ranks read what rank 0 wrote
        final = load_checkpoint(best_path)
    return final.to(trainer.device).eval()


def _test(trainer, final, model, best_path: str, cfg, sets) -> Dict[str, Any]:
    from ..data import build_dataset
    from ..models import load_checkpoint
    from ..train.evaluate import evaluate

    test_set = build_dataset(sets.spec, split="test", model=model)
    if final is None:
        final = load_checkpoint(best_path).to(trainer.device) if os.path.isfile(best_path) else trainer.model
    test = {}
    for name, sched in sets.tracked.items():
        res = evaluate(final, test_set, drop=sched, batch_size=cfg.eval_batch_size, num_workers=cfg.num_workers,
                       device=trainer.device, amp_dtype=trainer.amp_dtype)
        test[name] = {"schedule": list(sched.counts), **res.summary()}
    return test
