"""Fine-tuning as one call: :func:`fine_tune` runs a whole job (settings, run folder, model, data, Trainer, test).

What ``fgvc-kit train`` does, from Python: the settings a run is given (:class:`FineTuneSettings`, None = the
recipe's), a run folder that resumes exactly, held-out model selection, the test figures of the last and best
checkpoints, and ``results.json``; :class:`FineTuneResult` holds what it wrote.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

from ..errors import ConfigError
from .recipes import (RESULT_KEYS, RESULTS_FILE, RESULTS_FORMAT, RESULTS_VERSION, RESUMABLE_CHANGES, RUN_FORMAT,
                      FineTuneSettings, data_spec, fit_batch, fit_steps, resolve_settings, stored_settings,
                      train_config)
from .run_dir import open_run

DEFAULT_OUT = os.path.join("runs", "train")
Log = Callable[[str], None]


@dataclass(frozen=True)
class RunResult:
    """What a fine-tuning or distillation run wrote: ``results`` is ``results.json``'s content."""

    out: str  #: the run folder
    results: Dict[str, Any]
    best_checkpoint: Optional[str]  #: best.safetensors (held-out selection), None when there was no selection
    last_checkpoint: Optional[str]  #: last.safetensors

    @property
    def test(self) -> Dict[str, Any]:
        """The test figures (empty with ``test=False``)."""
        return self.results.get("test") or {}

    @property
    def results_file(self) -> str:
        return os.path.join(self.out, RESULTS_FILE)


FineTuneResult = RunResult


def _quiet(line: str) -> None:
    pass


def image_size_lines(size: int, choice, given: bool, command: str = "train"):
    """The line naming the size chosen and why when ``img_size`` was not given; a warning line when the size gives
    far more tokens than the model was made for."""
    from .sizing import token_warning

    if not given:
        yield f"{command}: image size {size} ({choice.reason}; img_size= to change)"
    warning = token_warning(choice.made_for, size, suggest=choice.size)
    if warning:
        yield f"{command}: warning: {warning}"


def estimate_logger(command: str, resume: bool, log: Log):
    """The ``on_estimate`` of a run's Trainer: its ETA in one line, and when that is over an hour, the setting that
    shortens it (a resumed run keeps its steps)."""
    def show(estimate) -> None:
        hint = None if resume else f"steps= to shorten (about {estimate.units_in()} steps take an hour here)"
        log(estimate.line(command, hint))

    return show


def warn_oversubscribed(command: str, log: Log) -> None:
    """One warning line when other jobs keep the machine's cores busy while torch uses several threads."""
    from ..machine import oversubscription

    warning = oversubscription()
    if warning:
        log(f"{command}: warning: {warning}")


def skipped_lines(skipped: Dict[str, Any], results_path: str):
    for split, bad in skipped.items():
        yield (f"skipped {len(bad)} unreadable {split} image{'s' if len(bad) != 1 else ''} "
               f"(skip_bad_images=True): " + ", ".join(b["path"] for b in bad[:5])
               + (" ..." if len(bad) > 5 else "") + f"; all in {results_path}")


def _check(r: Dict[str, Any], spec) -> None:
    for name in ("img_size", "num_classes"):
        v = r.get(name)
        if v is not None and v < 1:
            raise ConfigError(f"{name}={v}: expected a positive number")
    if not spec.info.builtin and r["pretrained"] is None and r["model"] is None:
        raise ConfigError(f"pretrained=: fine-tuning on {spec.name} needs weights to start from (ViT-B_16.npz, a "
                          "timm .pth, a seeds' .bin or an fgvc-kit checkpoint), or model= to train from scratch")


def _check_classes(r: Dict[str, Any], spec, class_names) -> None:
    if r["num_classes"] is not None and r["num_classes"] != len(class_names):
        raise ConfigError(f"num_classes={r['num_classes']}: dataset {spec.name} has {len(class_names)} classes")


def _model(r: Dict[str, Any], spec, class_names, out: str, resume: bool, rank: int, log: Log):
    from ..models import load_checkpoint
    from .build import build_model
    from .sizing import default_img_size
    from .trainer import LAST_FILE

    if resume:
        return load_checkpoint(os.path.join(out, LAST_FILE))
    from ..models import read_spec

    ckpt_spec = read_spec(r["pretrained"], required=False) if r["pretrained"] is not None else None
    choice = default_img_size(spec.name, r["model"], ckpt_spec, r["pretrained"])
    img_size = r["img_size"]
    if img_size is None and choice.source != "checkpoint":  # a checkpoint is built at its own size
        img_size = choice.size
    known = img_size or choice.size  # said before a large model is built, when known
    if rank == 0 and known:
        for line in image_size_lines(known, choice, given=r["img_size"] is not None):
            log(line)
    model = build_model(num_classes=len(class_names), class_names=class_names, model=r["model"],
                        pretrained=r["pretrained"], img_size=img_size, head=r["head"], scorer=r["scorer"],
                        drop_path=r["drop_path"])
    if rank == 0 and not known:  # the model's own size, known once its weights are read
        for line in image_size_lines(int(model.spec["img_size"][0]), choice, given=False):
            log(line)
    for arg, used in (getattr(getattr(model, "fgvc_head", None), "fitted", None) or {}).items():
        if rank == 0:
            log(f"train: head {model.head_name}: {arg} not given: {used}")
    return model


def _start_folder(out: str, run_path: str, r, spec, cfg) -> None:
    from ..files import write_json
    from .trainer import BEST_FILE, LAST_FILE, METRICS_FILE, STATE_FILE

    os.makedirs(out, exist_ok=True)
    for name in (STATE_FILE, LAST_FILE, BEST_FILE, RESULTS_FILE, METRICS_FILE):
        if os.path.exists(os.path.join(out, name)):
            os.remove(os.path.join(out, name))
    write_json({"format": RUN_FORMAT, "version": 1, "args": r, "data": spec.to_dict(), "train": cfg.to_dict()},
               run_path)


def _test(trainer, result, spec, cfg, model, out: str) -> Dict[str, Any]:
    """Test figures of the last weights, and of the best when they differ."""
    from ..data import build_dataset
    from ..models import load_checkpoint
    from .evaluate import evaluate
    from .trainer import BEST_FILE

    test_set = build_dataset(spec, split="test", model=model)
    kw = dict(batch_size=cfg.eval_batch_size, num_workers=cfg.num_workers, device=trainer.device,
              amp_dtype=trainer.amp_dtype)
    test = {"last": {"step": result.steps, **evaluate(trainer.model, test_set, **kw).summary()}}
    best_path = os.path.join(out, BEST_FILE)
    if result.best_step is not None and result.best_step != result.steps and os.path.isfile(best_path):
        best = load_checkpoint(best_path).to(trainer.device)
        test["best"] = {"step": result.best_step, **evaluate(best, test_set, **kw).summary()}
    elif result.best_step is not None:
        test["best"] = test["last"]
    return test


def fine_tune(settings: Optional[FineTuneSettings] = None, out: str = DEFAULT_OUT, resume: bool = False,
              overwrite: bool = False, device: Optional[str] = None, log: Optional[Log] = None) -> RunResult:
    """Fine-tune a model on a dataset: the whole run ``fgvc-kit train`` makes, into ``out``.

    ``settings``: what differs from the recipe (None fields take the recipe's value: the seeds' for real
    datasets, a short CPU one for the built-in ones). ``resume`` continues the run in ``out`` where it stopped
    (its stored settings; those given must agree), ``overwrite`` starts again in a folder that holds a run.
    ``device``: cpu, cuda or cuda:N (default: cuda when there is one). ``log`` receives one line per event
    (fitted defaults, ETA, warnings); nothing is printed without it. Under torchrun each process calls it.
    """
    import torch
    import torch.distributed as dist

    from ..data import class_names_of
    from .distributed import init_distributed
    from .trainer import STATE_FILE

    log = log or _quiet
    given = (settings or FineTuneSettings()).given()
    run_path, r = open_run(out, resume, overwrite, RUN_FORMAT, STATE_FILE, stored_settings(given),
                           lambda: resolve_settings(given), RESULT_KEYS, RESUMABLE_CHANGES, log, "train")
    cfg = train_config(r, given.get("workers"), given.get("progress"))
    spec = data_spec(r)
    _check(r, spec)
    class_names = class_names_of(spec)
    _check_classes(r, spec, class_names)
    rank, world, _ = init_distributed(device)
    try:
        torch.manual_seed(r["seed"])
        model = _model(r, spec, class_names, out, resume, rank, log)
        return _fit(model, r, spec, cfg, given, class_names, out, run_path, resume, device, rank, world, log)
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _fit(model, r, spec, cfg, given, class_names, out, run_path, resume, device, rank, world, log) -> RunResult:
    from ..data import build_dataset
    from ..files import write_json
    from ..models import describe_backbone
    from .trainer import BEST_FILE, LAST_FILE, Trainer

    train_set = build_dataset(spec, split="train", model=model)
    cfg = fit_batch(r, cfg, given, len(train_set), world, resume, log if rank == 0 else _quiet)
    cfg = fit_steps(r, cfg, given, len(train_set), world, resume, log if rank == 0 else _quiet)
    holdout_set = build_dataset(spec, split="holdout", model=model) if spec.holdout > 0 else None
    if rank == 0 and not resume:
        _start_folder(out, run_path, r, spec, cfg)
    extra = {"data": spec.to_dict(),
             "training": {"recipe": {k: r[k] for k in ("optimizer", "lr", "weight_decay", "steps", "batch_size",
                                                        "warmup_steps", "label_smoothing", "seed")},
                          "pretrained": r["pretrained"], "world_size": world}}
    trainer = Trainer(model, train_set, cfg, holdout_set=holdout_set, out_dir=out, class_names=class_names,
                      checkpoint_extra=extra, device=device,
                      log_extra={"data": train_set.describe(), "model": model.spec["backbone"]},
                      on_estimate=estimate_logger("train", resume, log))
    if rank == 0:
        log(f"train: {describe_backbone(model.spec)} {model.spec['img_size'][0]}px, {spec.name} "
            f"{len(train_set)} train / {len(holdout_set) if holdout_set else 0} held-out images, "
            f"{len(class_names)} classes, {cfg.steps} steps x {cfg.batch_size * cfg.accum_steps * world} "
            f"images, {world} process{'es' if world > 1 else ''} on {trainer.device}"
            + (f"; resuming {out}" if resume else ""))
        warn_oversubscribed("train", log)
    result = trainer.fit(resume=resume)
    summary: Dict[str, Any] = {"format": RESULTS_FORMAT, "version": RESULTS_VERSION, "steps": result.steps,
                               "time_s": result.time_s, "images_per_s": result.images_per_s,
                               "resumed_from": result.resumed_from, "world_size": world,
                               "holdout": result.last_eval, "best_step": result.best_step,
                               "best_score": result.best_score, "test": {}}
    if r.get("test", True):
        summary["test"] = _test(trainer, result, spec, cfg, model, out)
    skipped = {s.split: s.meta["skipped_images"] for s in (train_set, holdout_set)
               if s is not None and s.meta.get("skipped_images")}
    if skipped:
        summary["skipped_images"] = skipped
    if rank == 0:
        write_json(summary, os.path.join(out, RESULTS_FILE))
        for line in skipped_lines(skipped, os.path.join(out, RESULTS_FILE)):
            log(line)
    best = os.path.join(out, BEST_FILE)
    return RunResult(out=out, results=summary, best_checkpoint=best if result.best_step is not None else None,
                     last_checkpoint=os.path.join(out, LAST_FILE))
