"""The :class:`Trainer`: the loop shared by fine-tuning (``fgvc-kit train``) and in-place distillation.

:class:`Trainer` owns everything around a step: data (resumable, distributed
sampling with per-sample augmentation seeds), device, mixed precision,
``DistributedDataParallel``, gradient accumulation and clipping, optimiser and
warm-up + decay schedule, held-out evaluation and best-model selection,
atomic checkpoints, exact resume, progress bar and JSONL metrics. What a step
computes is pluggable:

``step_fn(model, images, labels) -> (loss, metrics)``

``model`` is the (possibly DDP-wrapped) model in training mode, ``images``
normalised float tensors on the device, ``labels`` int64. The trainer calls
the step inside autocast and back-propagates ``loss`` (divided by the
accumulation steps, scaled for fp16) when it requires grad. A step that wants
to back-propagate several losses itself (one sub-network at a time, to save
memory) gets the trainer through ``step_fn.bind(trainer)`` (called once if
present), calls ``trainer.backward(loss)`` for each and returns a detached
total for logging. ``metrics`` maps names to scalars (tensors or floats),
averaged over the log interval and written to the JSONL log.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError
from ..files import append_text, write_text
from ..progress import Estimate, eta, timed_enough
from .config import TrainConfig
from .distributed import amp_dtype_for, barrier, init_distributed
from .evaluate import evaluate
from .optim import WarmupDecay, build_optimizer
from .sampler import ResumableBatchSampler, seeded_dataset
from .state import (capture_rng, flatten_optimizer, jsonable, load_state, restore_rng, rng_to_state, save_state,
                    unflatten_optimizer)
from .steps import ClassificationStep

_log = logging.getLogger(__name__)

#: seconds between two progress lines when stderr is not a terminal
LINE_EVERY_S = 10.0

STATE_FILE = "train_state.safetensors"
LAST_FILE = "last.safetensors"
BEST_FILE = "best.safetensors"
METRICS_FILE = "metrics.jsonl"


@dataclass
class TrainResult:
    steps: int
    time_s: float
    images_per_s: float
    last_eval: Optional[Dict[str, float]] = None
    best_step: Optional[int] = None
    best_score: Optional[float] = None
    out_dir: Optional[str] = None
    resumed_from: Optional[int] = None
    #: the run's length estimated from its first timed steps (None: it ended before there were enough)
    estimate: Optional[Estimate] = None


class Trainer:
    """Runs ``step_fn`` for ``config.steps`` optimiser steps (see the module docstring).

    Args:
        model: a token-drop model (``create_model``); moved to the device.
        train_set: a dataset of ``(uint8 image, label)`` (:func:`tavt_kit.data.build_dataset`: augmentation
            seeded per sample through ``(index, seed)`` keys; other map-style datasets are indexed plainly).
        config: :class:`TrainConfig`.
        holdout_set: evaluated every ``eval_every`` steps and at the end; the best
            model by ``select_metric`` is written to ``best.safetensors``.
        step_fn: per-batch step (default: :class:`ClassificationStep`).
        eval_fn: ``eval_fn(trainer) -> dict`` replacing the default held-out evaluation
            (e.g. several schedules); must return ``select_metric``.
        out_dir: where checkpoints, the training state and ``metrics.jsonl`` go
            (``None``: nothing is written).
        class_names, checkpoint_extra: stored in every checkpoint written.
        device: ``auto`` (CUDA if there is one), ``cpu``, ``cuda:N``.
        on_estimate: called once (main process) with the run's :class:`~tavt_kit.progress.Estimate`, from its
            first few timed steps, before the rest runs (default: a line on stderr when progress is shown).
    """

    def __init__(self, model: nn.Module, train_set, config: TrainConfig, *, holdout_set=None,
                 step_fn: Optional[Callable] = None, eval_fn: Optional[Callable] = None,
                 out_dir: Optional[str] = None, class_names=None, checkpoint_extra: Optional[Dict] = None,
                 device: Optional[str] = None, log_extra: Optional[Dict[str, Any]] = None,
                 on_estimate: Optional[Callable[[Estimate], None]] = None):
        from ..data import Normalize

        self.config = config.validate()
        self.rank, self.world_size, self.device = init_distributed(device)
        self.is_main = self.rank == 0
        self.model = model.to(self.device)
        self.train_set = train_set
        self._train_data = seeded_dataset(train_set)
        self.holdout_set = holdout_set
        self.step_fn = step_fn if step_fn is not None else ClassificationStep(config.label_smoothing)
        self.eval_fn = eval_fn
        self.out_dir = os.fspath(out_dir) if out_dir is not None else None
        self.class_names = class_names if class_names is not None else getattr(train_set, "class_names", None)
        self.checkpoint_extra = dict(checkpoint_extra or {})
        self.log_extra = dict(log_extra or {})
        self.on_estimate = on_estimate
        self.estimate: Optional[Estimate] = None
        self.normalize = Normalize.from_model(model).to(self.device)
        self.amp_dtype = amp_dtype_for(config.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        torch.manual_seed(config.seed)  # the same on every rank: identical dropout / sub-network draws
        self.optimizer = build_optimizer(self.model, config)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, WarmupDecay(config.warmup_steps, config.steps, config.lr_schedule,
                                        config.min_lr / config.lr))
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.ddp_model = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                                 find_unused_parameters=config.find_unused_parameters)
        else:
            self.ddp_model = self.model
        self.sampler = ResumableBatchSampler(len(train_set), config.batch_size, config.seed, self.rank,
                                             self.world_size)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best_score: Optional[float] = None
        self.best_step: Optional[int] = None
        self.last_eval: Optional[Dict[str, float]] = None
        self.resumed_from: Optional[int] = None
        self._accum = config.accum_steps
        if hasattr(self.step_fn, "bind"):
            self.step_fn.bind(self)

    # ------------------------------------------------------------- paths
    def path(self, name: str) -> Optional[str]:
        return os.path.join(self.out_dir, name) if self.out_dir else None

    # ---------------------------------------------------------- backward
    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def backward(self, loss: torch.Tensor) -> None:
        """Back-propagate one loss of the current micro-batch (divided by the accumulation steps)."""
        loss = loss / self._accum
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def _optimizer_step(self) -> Optional[float]:
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        grad_norm = None
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.config.clip_grad > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, self.config.clip_grad)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return grad_norm

    # -------------------------------------------------------------- data
    def _workers(self) -> int:
        from ..data import FGVCDataset, default_workers

        if self.config.num_workers is not None:
            return self.config.num_workers
        w = default_workers(self.train_set) if isinstance(self.train_set, FGVCDataset) else 0
        return max(0, w // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", self.world_size))))

    def _batches(self):
        """Micro-batches forever, tracking (epoch, batch position) for resume."""
        from torch.utils.data import DataLoader

        workers = self._workers()
        while True:
            self.sampler.set_position(self.epoch, self.batch_in_epoch)
            loader = DataLoader(self._train_data, batch_sampler=self.sampler, num_workers=workers,
                                pin_memory=self.device.type == "cuda", generator=torch.Generator(),
                                persistent_workers=False)
            for batch in loader:
                self.batch_in_epoch += 1
                yield batch
            self.epoch += 1
            self.batch_in_epoch = 0

    # -------------------------------------------------------------- eval
    def evaluate_holdout(self) -> Optional[Dict[str, float]]:
        """Evaluate (``eval_fn`` or top-1/top-5 on the held-out split); ``None`` without a held-out split."""
        if self.eval_fn is not None:
            return self.eval_fn(self)
        if self.holdout_set is None:
            return None
        res = evaluate(self.model, self.holdout_set, batch_size=self.config.eval_batch_size,
                       num_workers=self.config.num_workers, device=self.device, amp_dtype=self.amp_dtype,
                       normalize=self.normalize)
        return res.summary()

    # ------------------------------------------------------- checkpoints
    def _checkpoint_extra(self) -> Dict[str, Any]:
        extra = dict(self.checkpoint_extra)
        training = dict(extra.get("training") or {})
        training.update({"step": self.step, "steps": self.config.steps, "holdout": self.last_eval,
                         "best_step": self.best_step, "best_score": self.best_score,
                         "select_metric": self.config.select_metric})
        extra["training"] = training
        return extra

    def save_model(self, name: str) -> Optional[str]:
        from ..models import save_checkpoint

        if not (self.is_main and self.out_dir):
            return None
        return save_checkpoint(self.model, self.path(name), class_names=self.class_names,
                               extra=self._checkpoint_extra())

    def save_state(self) -> None:
        """Write the training state (model, optimiser, scheduler, scaler, sampler, RNG of every rank)."""
        rng = capture_rng()
        if self.world_size > 1:
            import torch.distributed as dist

            rngs = [None] * self.world_size
            dist.all_gather_object(rngs, rng)
        else:
            rngs = [rng]
        if self.is_main and self.out_dir:
            # last.safetensors first: wherever a training state is, a model file to rebuild the run from is too
            self.save_model(LAST_FILE)
            tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
            opt_t, opt_doc = flatten_optimizer(self.optimizer.state_dict())
            tensors.update(opt_t)
            rng_t, rng_docs = rng_to_state(rngs)
            tensors.update(rng_t)
            scalars = {
                "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "world_size": self.world_size, "batch_size": self.config.batch_size,
                "best_score": self.best_score, "best_step": self.best_step, "last_eval": self.last_eval,
                "optimizer": opt_doc, "scheduler": _scheduler_doc(self.scheduler.state_dict()),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "rng": rng_docs, "config": self.config.to_dict(),
            }
            save_state(self.path(STATE_FILE), tensors, scalars)
        barrier(self.world_size)

    def load_state(self) -> int:
        """Continue from ``out_dir``'s training state; returns the step it resumes at."""
        path = self.path(STATE_FILE)
        if path is None or not os.path.isfile(path):
            raise CheckpointError(f"{path or 'out_dir'}: no training state to resume; start the run without "
                                  "resume=True")
        tensors, doc = load_state(path)
        model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        missing, unexpected = self.model.load_state_dict(model_sd, strict=False)
        if missing or unexpected:
            raise CheckpointError(f"{path}: the saved model does not match this run's model "
                                  f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})")
        self.optimizer.load_state_dict(unflatten_optimizer(tensors, doc["optimizer"]))
        self.scheduler.load_state_dict(doc["scheduler"])
        if self.scaler is not None and doc.get("scaler"):
            self.scaler.load_state_dict(doc["scaler"])
        self.step, self.epoch, self.batch_in_epoch = int(doc["step"]), int(doc["epoch"]), int(doc["batch_in_epoch"])
        self.best_score, self.best_step, self.last_eval = doc.get("best_score"), doc.get("best_step"), \
            doc.get("last_eval")
        if doc.get("world_size") != self.world_size or doc.get("batch_size") != self.config.batch_size:
            _log.warning("%s: saved with %s processes x batch %s, resuming with %s x %s: the data order differs "
                         "from the original run", path, doc.get("world_size"), doc.get("batch_size"),
                         self.world_size, self.config.batch_size)
            global_pos = self.batch_in_epoch * doc.get("world_size", 1) * doc.get("batch_size", 1)
            self.batch_in_epoch = min(self.sampler.batches_per_epoch, global_pos // self.sampler.global_batch)
        rank = self.rank if self.rank < len(doc["rng"]) else 0
        restore_rng(tensors, doc["rng"], rank)
        self.resumed_from = self.step
        return self.step

    # --------------------------------------------------------------- log
    def _log_event(self, event: Dict[str, Any]) -> None:
        if self.is_main and self.out_dir:
            append_text(self.path(METRICS_FILE), json.dumps(event) + "\n")

    def _truncate_log(self) -> None:
        """On resume, drop log lines written after the step the run resumes from."""
        path = self.path(METRICS_FILE)
        if not (self.is_main and path and os.path.isfile(path)):
            return
        keep = []
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    ev = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by the kill
                if ev.get("step", 0) <= self.step and ev.get("event") not in ("end",):
                    keep.append(line if line.endswith("\n") else line + "\n")
        write_text(path, "".join(keep))

    def _reduce_mean(self, values: Dict[str, torch.Tensor], count: int) -> Dict[str, float]:
        if not values:
            return {}
        keys = sorted(values)
        t = torch.stack([values[k].detach().float().to(self.device) for k in keys]) / max(1, count)
        if self.world_size > 1:
            import torch.distributed as dist

            dist.all_reduce(t)
            t /= self.world_size
        return {k: float(v) for k, v in zip(keys, t.tolist())}

    def _progress(self):
        show = self.config.progress
        if show is None:
            show = sys.stderr.isatty()
        if not (show and self.is_main):
            return None
        from tqdm import tqdm

        return tqdm(total=self.config.steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True,
                    file=sys.stderr)

    def _estimate(self, t0: float, t_warm: float, now: float, start_step: int, global_batch: int, say) -> None:
        """Once the steps after the first (warm-up) one are timed enough: the whole run's estimate, reported
        through ``on_estimate`` (or ``say``) and logged."""
        timed = self.step - start_step - 1
        if self.estimate is not None or self.step >= self.config.steps or not timed_enough(timed, now - t_warm):
            return
        per_step = (now - t_warm) / timed
        total = (t_warm - t0) + per_step * (self.config.steps - start_step - 1)
        self.estimate = Estimate(total, self.config.steps - start_step, "steps", global_batch / max(1e-9, per_step))
        self._log_event({"event": "estimate", "step": self.step, **self.estimate.to_dict()})
        if not self.is_main:
            return
        if self.on_estimate is not None:
            self.on_estimate(self.estimate)
        elif say is not None:
            say(self.estimate.line("train"))

    # --------------------------------------------------------------- fit
    def fit(self, resume: bool = False) -> TrainResult:
        """Train to ``config.steps``; with ``resume`` continue from ``out_dir``'s training state."""
        cfg = self.config
        if resume:
            self.load_state()
            self._truncate_log()
        elif self.is_main and self.out_dir:
            os.makedirs(self.out_dir, exist_ok=True)
            path = self.path(METRICS_FILE)
            if os.path.exists(path):
                os.remove(path)
        barrier(self.world_size)
        if not resume:
            self._log_event({"event": "start", "step": 0, "world_size": self.world_size, "device": str(self.device),
                             "amp": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else None,
                             "config": cfg.to_dict(), "train_size": len(self.train_set),
                             "holdout_size": len(self.holdout_set) if self.holdout_set is not None else 0,
                             **self.log_extra})
        else:
            self._log_event({"event": "resume", "step": self.step, "world_size": self.world_size})
        global_batch = cfg.batch_size * cfg.accum_steps * self.world_size
        bar = self._progress()
        # without a terminal (a log file, nohup, torchrun) progress is plain lines, at most one per LINE_EVERY_S
        lines = bar is None and self.is_main and cfg.progress is None
        t_line = -math.inf
        data = self._batches()
        self.ddp_model.train()
        sums: Dict[str, torch.Tensor] = {}
        n_micro = 0
        t0 = time.perf_counter()
        t_last, step_last = t0, self.step
        start_step = self.step
        t_warm = None  # the end of the first step: the steps after it are timed for the estimate
        say = bar.write if bar is not None else (lambda text: print(text, file=sys.stderr, flush=True)) \
            if lines else None
        try:
            while self.step < cfg.steps:
                for micro in range(cfg.accum_steps):
                    images, labels = next(data)
                    images = self.normalize(images.to(self.device, non_blocking=True))
                    labels = labels.to(self.device, non_blocking=True).long()
                    sync = micro == cfg.accum_steps - 1
                    ctx = self.ddp_model.no_sync() if (self.world_size > 1 and not sync) else nullcontext()
                    with ctx:
                        with self.autocast():
                            loss, metrics = self.step_fn(self.ddp_model, images, labels)
                        if loss is not None and loss.requires_grad:
                            self.backward(loss)
                    for k, v in (("loss", loss),) + tuple((metrics or {}).items()):
                        if v is None:
                            continue
                        v = v.detach().float() if isinstance(v, torch.Tensor) else torch.tensor(float(v))
                        sums[k] = sums.get(k, 0) + v.to(self.device)
                    n_micro += 1
                grad_norm = self._optimizer_step()
                self.step += 1
                if bar is not None:
                    bar.update(1)
                if t_warm is None:
                    t_warm = time.perf_counter()
                else:
                    self._estimate(t0, t_warm, time.perf_counter(), start_step, global_batch, say)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    avg = self._reduce_mean(sums, n_micro)
                    now = time.perf_counter()
                    ips = (self.step - step_last) * global_batch / max(1e-9, now - t_last)
                    t_last, step_last = now, self.step
                    sums, n_micro = {}, 0
                    if not math.isfinite(avg.get("loss", 0.0)):
                        raise ConfigError(f"training diverged: the loss is {avg.get('loss')} at step {self.step}; "
                                          f"lower lr={cfg.lr}, clip the gradients (clip_grad={cfg.clip_grad}, 0 = "
                                          "off)" + (f" or turn off amp={cfg.amp}" if cfg.amp else ""))
                    event = {"event": "train", "step": self.step, "epoch": self.epoch,
                             "lr": self.optimizer.param_groups[0]["lr"], **avg,
                             "grad_norm": float(grad_norm) if grad_norm is not None else None,
                             "images_per_s": ips, "elapsed_s": now - t0}
                    self._log_event(event)
                    if bar is not None:
                        bar.set_postfix(loss=f"{avg.get('loss', float('nan')):.4f}",
                                        lr=f"{event['lr']:.2e}", img_s=f"{ips:.0f}")
                    if lines and (now - t_line >= LINE_EVERY_S or self.step == cfg.steps):
                        t_line = now
                        left = eta(self.step - start_step, cfg.steps - start_step, now - t0)
                        print(f"step {self.step}/{cfg.steps}  loss {avg.get('loss', float('nan')):.4f}  "
                              f"lr {event['lr']:.2e}  {ips:.0f} images/s  ETA {left}",
                              file=sys.stderr, flush=True)
                do_eval = (cfg.eval_every and self.step % cfg.eval_every == 0) or self.step == cfg.steps
                if do_eval:
                    res = self.evaluate_holdout()
                    if res is not None:
                        self.last_eval = res
                        self._log_event({"event": "eval", "step": self.step, "split": "holdout", **res})
                        score = res.get(cfg.select_metric)
                        if score is not None and (self.best_score is None or score > self.best_score):
                            self.best_score, self.best_step = float(score), self.step
                            self.save_model(BEST_FILE)
                        if bar is not None or lines:
                            text = f"step {self.step}: holdout {cfg.select_metric} {_score(score)} " \
                                   f"(best {_score(self.best_score)} at {self.best_step})"
                            bar.write(text) if bar is not None else print(text, file=sys.stderr, flush=True)
                do_save = (cfg.save_every and self.step % cfg.save_every == 0) or self.step == cfg.steps
                if do_save:
                    self.save_state()
        finally:
            data.close()
            if bar is not None:
                bar.close()
        elapsed = time.perf_counter() - t0
        done = self.step - start_step
        result = TrainResult(steps=self.step, time_s=elapsed,
                             images_per_s=done * global_batch / max(1e-9, elapsed), last_eval=self.last_eval,
                             best_step=self.best_step, best_score=self.best_score, out_dir=self.out_dir,
                             resumed_from=self.resumed_from, estimate=self.estimate)
        self._log_event({"event": "end", "step": self.step, "time_s": elapsed, "images_per_s": result.images_per_s,
                         "best_step": self.best_step, "best_score": self.best_score})
        return result


def _scheduler_doc(sd: Dict[str, Any]) -> Dict[str, Any]:
    return jsonable(sd)


def _score(x) -> str:
    """A held-out score for a progress line; an evaluation may not report the selection metric."""
    return "n/a" if x is None else f"{x:.4f}"
