"""``fgvc-kit distill``: in-place distillation with patch drop, from a fine-tuned checkpoint to a supernet.

Same engine as ``fgvc-kit train`` (data, AMP, torchrun, atomic checkpoints,
exact resume, progress, metrics.jsonl); the step is TAVT's
(:class:`~tavt_kit.distill.inplace.InplaceDistillStep`), the held-out split is
evaluated at the full, smallest, middle and EViT schedules, and the search
space goes into the supernet's spec for ``fgvc-kit search``.
"""
from __future__ import annotations

import argparse
import json
import os
from types import SimpleNamespace
from typing import Any, Dict, List, Optional

from .common import RESULTS_FORMAT, RESULTS_VERSION, check_can_merge, parse_reducers, pct

DEFAULT_OUT = os.path.join("runs", "distill")
RUN_FORMAT = "fgvc-kit/distill-run"
#: --parent-mix auto: the weight chosen on the held-out images (tavt_kit.distill.choose_parent_mix)
MIX_AUTO = "auto"
#: TAVT's distillation settings on top of the seeds' fine-tuning recipe, except the teacher: the sub-networks
#: learn a frozen copy of the parent (--checkpoint), and the full model is held to the parent by a distillation
#: loss as strong as the sub-networks' together (3 = sandwich + 1) instead of training on the labels; TAVT's
#: moving full-model teacher let the full schedule drift (docs/benchmarks/distill_recipe.md)
DISTILL_DEFAULTS: Dict[str, Any] = dict(bound=0.2, drop_blocks=None, min_tokens=1, reducers=None, sandwich=2,
                                        kd_temperature=1.0,
                                        sub_label_weight=0.0, sub_aux=False, teacher="parent", full_label_weight=0.0,
                                        full_kd_weight=3.0, parent_mix=0.7)
#: what a run stored before these options existed did (resumed as it started)
LEGACY_DISTILL: Dict[str, Any] = dict(teacher="full", full_label_weight=1.0, full_kd_weight=0.0, parent_mix=1.0)
#: the demo: a short run on the digits (the trained demo model is its teacher and starting point); AdamW restarted
#: at 5e-4 with weight decay on the converged model cost the full schedule 1.4-1.7 points, 2e-4 without decay
#: keeps it (docs/benchmarks/distill_recipe.md)
DEMO_DISTILL: Dict[str, Any] = dict(steps=150, lr=2e-4, warmup_steps=15, weight_decay=0.0, label_smoothing=0.0,
                                    eval_every=50, save_every=50, bound=0.3)
DISTILL_KEYS = tuple(DISTILL_DEFAULTS) + ("checkpoint",)


def add_distill_arguments(p: argparse.ArgumentParser) -> None:
    from .train import DEMO_RECIPE, add_train_arguments

    p.add_argument("--checkpoint", required=True, metavar="FILE",
                   help="fine-tuned model (fgvc-kit train's best.safetensors or any file load_checkpoint reads)")
    p.add_argument("--drop", metavar="FILE|COUNTS",
                   help="fine-tune one schedule instead: a drop-config JSON file (a search's pick, e.g. the "
                        "budget's file beside search.json) or comma-separated patch-token counts, of --checkpoint "
                        "(a supernet), toward the model it was distilled from; the result runs at that schedule only")
    g = p.add_argument_group("in-place distillation (TAVT's defaults)")
    g.add_argument("--bound", type=float, metavar="FRACTION",
                   help="largest drop ratio per block of the search space (default: 0.2; demo "
                        f"{DEMO_DISTILL['bound']}); above 0.5 a merging block runs several bipartite rounds, past "
                        "ToMe's halving per block")
    g.add_argument("--drop-blocks", metavar="LIST", help="blocks that may drop, e.g. 3,6,9 (default: every block)")
    g.add_argument("--min-tokens", type=int, metavar="N", help="fewest patch tokens at any block (default: 1)")
    g.add_argument("--reducers", metavar="LIST",
                   help="how sub-networks remove tokens: drop (patch drop, TAVT), merge (ToMe token merging) or "
                        "drop,merge (each sub-network's blocks draw one; the search then picks per block) "
                        "(default: the model's reducer, drop)")
    g.add_argument("--sandwich", type=int, metavar="N",
                   help="random sub-networks per step besides the smallest (TAVT's num_sandwich; default: 2)")
    g.add_argument("--kd-temperature", type=float, metavar="T",
                   help="temperature of the distillation loss (default: 1)")
    g.add_argument("--sub-label-weight", type=float, metavar="W",
                   help="weight of a label loss on each sub-network (default: 0, TAVT)")
    g.add_argument("--sub-aux", action="store_true", default=None,
                   help="add the heads' auxiliary losses of the sub-networks too")
    g.add_argument("--teacher", choices=("parent", "full"),
                   help="whose soft predictions the sub-networks learn: parent (a frozen copy of --checkpoint) or "
                        f"full (the full model as it trains, TAVT's) (default: {DISTILL_DEFAULTS['teacher']})")
    g.add_argument("--full-label-weight", type=float, metavar="W",
                   help="weight of the full model's label loss (default: "
                        f"{DISTILL_DEFAULTS['full_label_weight']:g}; TAVT's 1)")
    g.add_argument("--full-kd-weight", type=float, metavar="W",
                   help="weight of a distillation loss of the full model toward the parent (--checkpoint) "
                        f"(default: {DISTILL_DEFAULTS['full_kd_weight']:g}; TAVT's 0)")
    g.add_argument("--parent-mix", type=parse_parent_mix, metavar="A",
                   help="the supernet's weights at the end: A x distilled + (1 - A) x the parent's (weight-space "
                        "interpolation, WiSE-FT), which gives back the full schedule's accuracy and keeps most of "
                        "what the small schedules learnt; 1 keeps the distilled weights; auto chooses A on the held-out "
                        "images (1 down to 0.5): the best over the tracked schedules among the mixes whose full "
                        "schedule keeps your model's accuracy "
                        f"(default: {DISTILL_DEFAULTS['parent_mix']:g})")
    add_train_arguments(p, demo_recipe={**DEMO_RECIPE, **DEMO_DISTILL}, model_options=False, default_out=DEFAULT_OUT)


def _resolve(args: argparse.Namespace) -> Dict[str, Any]:
    from ..errors import ConfigError
    from .train import NOT_WITH_A_MODEL, SEEDS_RECIPE, explicit_args, fit_warmup, resolve_train_args

    for flag in NOT_WITH_A_MODEL:
        if getattr(args, flag, None) is not None:
            raise ConfigError(f"--{flag.replace('_', '-')}: not used by distill; the model, its size, classes and "
                              "head come from --checkpoint")
    # the data the checkpoint was trained on, unless told otherwise
    from ..data import dataset_info
    from ..models import read_spec

    from .data_args import _recorded, check_no_training_images, merged_options

    spec = read_spec(args.checkpoint, required=False) if os.path.isfile(args.checkpoint) else None
    recorded = (spec or {}).get("data") or {}
    trained = _recorded(recorded) if isinstance(recorded, dict) else None
    if trained is not None and (args.dataset is None or dataset_info(args.dataset).name == trained.name):
        args.dataset = recorded["name"]
        for flag, key in (("data", "root"), ("holdout", "holdout"), ("split_seed", "split_seed"),
                          ("resize", "resize"), ("train_crop", "train_crop"), ("dataset_options", "options")):
            if flag == "holdout" and dataset_info(args.dataset).own_holdout:
                continue  # the dataset's own held-out split
            if flag == "dataset_options" and args.dataset_options is not None:  # given ones win, key by key
                args.dataset_options = merged_options(recorded.get(key), args.dataset_options)
            elif getattr(args, flag, None) is None and recorded.get(key) is not None:
                setattr(args, flag, recorded[key])
    else:
        trained = None
    r = resolve_train_args(args)
    if trained is not None:  # the parent's held-out and test images must not be ones it trained on
        from .train import data_spec

        check_no_training_images(trained, data_spec(r))
    given = explicit_args(args)
    demo = dataset_info(r["dataset"]).builtin
    for k, v in DISTILL_DEFAULTS.items():
        r[k] = getattr(args, k) if getattr(args, k, None) is not None else v
    if demo:
        for k, v in DEMO_DISTILL.items():
            if k not in given and getattr(args, k, None) is None:
                r[k] = v
    r.pop("notes", None)  # the warm-up is fitted to distillation's recipe, not fine-tuning's
    if "warmup_steps" not in given:
        r["warmup_steps"] = (DEMO_DISTILL if demo else SEEDS_RECIPE)["warmup_steps"]
    r["notes"] = fit_warmup(r, given, DEMO_DISTILL if demo else SEEDS_RECIPE)
    r["checkpoint"] = os.path.abspath(args.checkpoint)
    return r


def check_full_weights(r: Dict[str, Any]) -> None:
    """The full model's losses: non-negative weights, at least one positive (said with the flags)."""
    from ..errors import ConfigError

    a, b = r["full_label_weight"], r["full_kd_weight"]
    if a < 0 or b < 0 or a + b <= 0:
        raise ConfigError(f"--full-label-weight {a:g}, --full-kd-weight {b:g}: expected non-negative weights, at "
                          "least one positive (the full model needs a loss)")
    mix = r["parent_mix"]
    if mix != MIX_AUTO and not 0 < mix <= 1:
        raise ConfigError(f"--parent-mix {mix:g}: expected a weight in (0, 1] for the distilled weights "
                          f"(1 keeps them as they are), or {MIX_AUTO}")


def parse_parent_mix(value):
    """``--parent-mix``: a weight (float) or ``auto``."""
    if str(value).strip().lower() == MIX_AUTO:
        return MIX_AUTO
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a weight in (0, 1] or {MIX_AUTO}, got {value!r}") from None


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
    from ..distill import mix_with_parent
    from ..models import load_checkpoint, save_checkpoint
    from ..models.checkpoint import load_parent

    if not os.path.isfile(best_path) or _mixed_already(best_path):
        return None
    model = load_checkpoint(best_path)
    mix_with_parent(model, load_parent(model), alpha)
    model.spec.setdefault("distillation", {})["parent_mix"] = alpha
    save_checkpoint(model, best_path)
    return model


def _choose_mix(best_path: str, holdout_set, tracked, cfg, trainer):
    """``--parent-mix auto``: the weight chosen on the held-out images at the tracked schedules."""
    from ..distill import choose_parent_mix
    from ..distill.inplace import make_schedule_eval
    from ..models import load_checkpoint
    from ..models.checkpoint import load_parent

    distilled = load_checkpoint(best_path).to(trainer.device).eval()
    parent = load_parent(distilled).to(trainer.device)
    held_out = make_schedule_eval(holdout_set, tracked, cfg.eval_batch_size)

    def score(m):
        return held_out(SimpleNamespace(model=m, device=trainer.device, amp_dtype=trainer.amp_dtype,
                                        normalize=trainer.normalize, config=trainer.config))

    return choose_parent_mix(distilled, parent, score)


def _space(model, r):
    from ..errors import ConfigError
    from ..schedules.space import SearchSpace

    blocks = None
    if r["drop_blocks"]:
        try:
            blocks = [int(b) for b in str(r["drop_blocks"]).split(",")]
        except ValueError:
            raise ConfigError(f"--drop-blocks: expected comma-separated block indices, got {r['drop_blocks']!r}") \
                from None
    if not 0 < r["bound"] < 1:
        raise ConfigError(f"--bound: expected a drop ratio in (0, 1), got {r['bound']}")
    reducers = parse_reducers(r["reducers"], "--reducers") if r.get("reducers") is not None else None
    if reducers and "merge" in reducers:
        check_can_merge(model, "--reducers " + ",".join(reducers))
    return SearchSpace.for_model(model, bound=r["bound"], drop_blocks=blocks, min_tokens=r["min_tokens"],
                                 reducers=reducers)


def run_distill(args: argparse.Namespace) -> int:
    drop_blocks = getattr(args, "drop_blocks", None)
    if drop_blocks is not None and not str(drop_blocks).strip():  # an empty shell variable: not "every block"
        from ..errors import ConfigError

        raise ConfigError("--drop-blocks: empty; expected comma-separated block indices, e.g. 3,6,9 (omit "
                          "--drop-blocks for every block)")
    if getattr(args, "drop", None) is not None:  # one schedule, not a search space
        from .distill_schedule import run_schedule_distill

        return run_schedule_distill(args, _resolve, DEFAULT_OUT)
    import dataclasses

    import torch
    import torch.distributed as dist

    from ..data import build_dataset
    from ..errors import CheckpointError, ConfigError
    from ..models import load_checkpoint
    from ..models.checkpoint import load_parent, parent_of, parent_record
    from ..train.build import check_model_fits
    from .train import data_spec, estimate_printer, fit_batch, open_run, train_config, warn_oversubscribed
    from ..train import LAST_FILE, METRICS_FILE, Trainer, init_distributed
    from ..files import write_json
    from ..train.evaluate import evaluate
    from ..distill.inplace import InplaceDistillStep, fixed_schedules, make_schedule_eval

    out, resume, run_path, r = open_run(args, RUN_FORMAT, _resolve, "distill", DEFAULT_OUT)
    if not os.path.exists(r["checkpoint"]):
        raise CheckpointError(f"--checkpoint {r['checkpoint']}: checkpoint not found")
    cfg = dataclasses.replace(train_config(r, args), select_metric="top1_mean")
    rank, world, device = init_distributed(args.device)
    try:
        torch.manual_seed(r["seed"])
        model = load_checkpoint(os.path.join(out, LAST_FILE) if resume else r["checkpoint"])
        for k, v in LEGACY_DISTILL.items():
            r.setdefault(k, v)
        check_full_weights(r)
        # the parent: the checkpoint as it was when distillation started (a resumed run keeps its record and
        # checks that the file still holds those weights)
        parent_rec = parent_of(model) if resume else parent_record(r["checkpoint"], model)
        r["parent"] = parent_rec
        needs_parent = r["teacher"] == "parent" or r["full_kd_weight"] > 0
        if needs_parent and parent_rec is None:
            raise CheckpointError(f"{os.path.join(out, LAST_FILE)}: no parent recorded to resume "
                                  f"--teacher {r['teacher']} with")
        parent = None
        if needs_parent:
            parent = load_parent(model) if resume else load_checkpoint(r["checkpoint"])
        if r.get("scorer") and not resume:
            from ..models.token_drop import check_scorer

            check_scorer(model, r["scorer"])  # as create_model/patch would (cls needs a class token)
            model.scorer = r["scorer"]
        dspec = data_spec(r)
        if dspec.holdout <= 0:
            raise ConfigError("--holdout: distillation evaluates sub-networks on a held-out split; expected > 0")
        space = _space(model, r)
        train_set = build_dataset(dspec, split="train", model=model)
        cfg = fit_batch(r, cfg, args, len(train_set), world, resume)
        holdout_set = build_dataset(dspec, split="holdout", model=model)
        check_model_fits(model, train_set, r["checkpoint"])
        tracked = fixed_schedules(space)
        step = InplaceDistillStep(space, r["sandwich"], r["kd_temperature"], r["sub_label_weight"], r["sub_aux"],
                                  cfg.label_smoothing, r["seed"], teacher=r["teacher"], parent=parent,
                                  full_label_weight=r["full_label_weight"], full_kd_weight=r["full_kd_weight"])
        del parent  # the step keeps its own frozen copy
        if rank == 0 and not resume:
            os.makedirs(out, exist_ok=True)
            for name in ("best.safetensors", "results.json", METRICS_FILE):
                if os.path.exists(os.path.join(out, name)):
                    os.remove(os.path.join(out, name))
            write_json({"format": RUN_FORMAT, "version": 1, "args": r, "data": dspec.to_dict(),
                        "train": cfg.to_dict(), "space": space.to_dict()}, run_path)
        extra = {"data": dspec.to_dict(), "search_space": space.to_dict(),
                 "distillation": {"parent": parent_rec, "teacher": r["teacher"], "sandwich": r["sandwich"],
                                  "kd_temperature": r["kd_temperature"], "sub_label_weight": r["sub_label_weight"],
                                  "full_label_weight": r["full_label_weight"],
                                  "full_kd_weight": r["full_kd_weight"],
                                  "steps": cfg.steps, "world_size": world,
                                  "tracked": {k: list(v.counts) for k, v in tracked.items()}}}
        trainer = Trainer(model, train_set, cfg, holdout_set=holdout_set, step_fn=step,
                          eval_fn=make_schedule_eval(holdout_set, tracked, cfg.eval_batch_size), out_dir=out,
                          class_names=train_set.class_names, checkpoint_extra=extra, device=args.device,
                          log_extra={"data": train_set.describe(), "space": space.to_dict()},
                          on_estimate=estimate_printer("distill", resume))
        if rank == 0:
            print(f"distill: {model.spec['backbone']['name']} {model.spec['img_size'][0]}px, {dspec.name} "
                  f"{len(train_set)} train / {len(holdout_set)} held-out images, smallest schedule "
                  f"{list(space.smallest().counts)}, {r['sandwich'] + 1} sub-networks per step, {cfg.steps} steps"
                  + (f"; resuming {out}" if resume else ""), flush=True)
            warn_oversubscribed("distill")
        result = trainer.fit(resume=resume)
        summary: Dict[str, Any] = {"format": RESULTS_FORMAT, "version": RESULTS_VERSION, "steps": result.steps,
                                   "time_s": result.time_s,
                                   "images_per_s": result.images_per_s, "holdout": result.last_eval,
                                   "best_step": result.best_step, "best_score": result.best_score, "test": {}}
        best_path = os.path.join(out, "best.safetensors")
        if world > 1:
            dist.barrier()  # every rank decides on the same file: before rank 0 mixes it
        final = None  # the shipped weights, loaded once for the held-out and test figures
        alpha, choice = r["parent_mix"], None
        if alpha == MIX_AUTO and _needs_parent_mix(best_path, alpha):
            choice = _choose_mix(best_path, holdout_set, tracked, cfg, trainer)  # every rank: sharded evaluation
            alpha = choice.alpha
            summary["parent_mix_choice"] = choice.to_dict()
        if _needs_parent_mix(best_path, alpha) or choice is not None:
            if rank == 0:
                final = apply_parent_mix(best_path, alpha)
            if world > 1:
                dist.barrier()
            if final is None:  # the other ranks read what rank 0 wrote
                final = load_checkpoint(best_path)
            final = final.to(trainer.device).eval()
            # the held-out figures of what is shipped, not of the weights before the mix (every rank: the
            # evaluation is sharded)
            host = SimpleNamespace(model=final, device=trainer.device, amp_dtype=trainer.amp_dtype,
                                   normalize=trainer.normalize, config=trainer.config)
            summary["holdout_before_parent_mix"] = summary["holdout"]
            summary["holdout"] = choice.scores[alpha] if choice is not None else \
                make_schedule_eval(holdout_set, tracked, cfg.eval_batch_size)(host)
            summary["parent_mix"] = alpha
        if r.get("test", True):
            test_set = build_dataset(dspec, split="test", model=model)
            if final is None:
                final = load_checkpoint(best_path).to(trainer.device) if os.path.isfile(best_path) else trainer.model
            for name, sched in tracked.items():
                res = evaluate(final, test_set, drop=sched, batch_size=cfg.eval_batch_size,
                               num_workers=cfg.num_workers, device=trainer.device, amp_dtype=trainer.amp_dtype)
                summary["test"][name] = {"schedule": list(sched.counts), **res.summary()}
        if rank == 0:
            skipped = {s.split: s.meta["skipped_images"] for s in (train_set, holdout_set)
                       if s.meta.get("skipped_images")}
            if skipped:
                summary["skipped_images"] = skipped
                for split, bad in skipped.items():
                    print(f"skipped {len(bad)} unreadable {split} image{'s' if len(bad) != 1 else ''} "
                          f"(--skip-bad-images); all in {os.path.join(out, 'results.json')}")
            write_json(summary, os.path.join(out, "results.json"))
            png = plot_distill_curves(os.path.join(out, METRICS_FILE), os.path.join(out, "distill_curves.png"))
            print(f"distilled {result.steps} steps in {result.time_s:.1f} s -> {out}")
            if summary.get("parent_mix") is not None:
                print(f"weights: {summary['parent_mix']:g} x distilled + {1 - summary['parent_mix']:g} x your model's "
                      + (f"(--parent-mix auto: {choice.reason()})" if choice is not None else "(--parent-mix)"))
            if summary["holdout"]:
                print("holdout: " + "  ".join(f"{k[5:]} {pct(v)}" for k, v in summary["holdout"].items()
                                              if k.startswith("top1_") and k != "top1_mean"))
            if summary["test"]:
                print("test:    " + "  ".join(f"{k} {pct(v['top1'])}" for k, v in summary["test"].items()))
            print(f"supernet: {os.path.join(out, 'best.safetensors')}" + (f"; curves: {png}" if png else ""))
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    return 0


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


def output_folder(args) -> str:
    """The folder this command writes (held as its one writer while it runs; see tavt_kit.lock)."""
    return args.out or DEFAULT_OUT


add_arguments = add_distill_arguments
run = run_distill
