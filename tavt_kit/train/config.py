"""Training settings: :class:`TrainConfig` (the seeds' fine-tuning recipe by default), checked with one-line errors."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional, Tuple

from ..errors import ConfigError

OPTIMIZERS = ("sgd", "adamw")
LR_SCHEDULES = ("cosine", "linear", "constant")
AMP_MODES = ("auto", "bf16", "fp16")


# --------------------------------------------------------------------- config
@dataclass
class TrainConfig:
    """Optimisation settings. Defaults are the seeds' fine-tuning recipe (TAVT/FFVT/TransFG).

    ``steps`` counts optimiser steps; each takes ``accum_steps`` micro-batches
    of ``batch_size`` images per process.
    """

    steps: int = 10000
    batch_size: int = 16
    accum_steps: int = 1
    optimizer: str = "sgd"
    lr: float = 3e-2
    weight_decay: float = 0.0
    momentum: float = 0.9
    betas: Tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 500
    lr_schedule: str = "cosine"
    min_lr: float = 0.0
    label_smoothing: float = 0.0
    clip_grad: float = 1.0
    amp: Optional[str] = None
    seed: int = 0
    eval_every: int = 500
    save_every: int = 500
    log_every: int = 20
    eval_batch_size: int = 64
    num_workers: Optional[int] = None
    find_unused_parameters: bool = False
    select_metric: str = "top1"
    progress: Optional[bool] = None

    def validate(self) -> "TrainConfig":
        def need(cond, name, expected, value):
            if not cond:
                raise ConfigError(f"{name}={value!r}: expected {expected}")

        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        need(is_int(self.steps) and self.steps > 0, "steps", "a positive number of steps", self.steps)
        need(is_int(self.batch_size) and self.batch_size > 0, "batch_size", "a positive batch size",
             self.batch_size)
        need(is_int(self.accum_steps) and self.accum_steps > 0, "accum_steps",
             "a positive number of micro-batches per step", self.accum_steps)
        need(self.optimizer in OPTIMIZERS, "optimizer", f"one of {', '.join(OPTIMIZERS)}", self.optimizer)
        need(self.lr > 0 and math.isfinite(self.lr), "lr", "a positive learning rate", self.lr)
        need(self.weight_decay >= 0, "weight_decay", "a non-negative weight decay", self.weight_decay)
        need(0 <= self.momentum < 1, "momentum", "a value in [0, 1)", self.momentum)
        need(is_int(self.warmup_steps) and self.warmup_steps >= 0, "warmup_steps",
             "a non-negative number of steps", self.warmup_steps)
        if self.warmup_steps >= self.steps and self.warmup_steps > 0:
            raise ConfigError(f"warmup_steps={self.warmup_steps}: not below steps={self.steps}; "
                              "expected fewer warm-up steps than steps")
        need(self.lr_schedule in LR_SCHEDULES, "lr_schedule", f"one of {', '.join(LR_SCHEDULES)}",
             self.lr_schedule)
        need(0 <= self.min_lr <= self.lr, "min_lr", f"a value in [0, lr={self.lr}]", self.min_lr)
        need(0 <= self.label_smoothing < 1, "label_smoothing", "a value in [0, 1)", self.label_smoothing)
        need(self.clip_grad >= 0, "clip_grad", "a non-negative max gradient norm (0 = off)", self.clip_grad)
        need(self.amp in (None,) + AMP_MODES, "amp", f"one of {', '.join(AMP_MODES)}", self.amp)
        need(is_int(self.eval_every) and self.eval_every >= 0, "eval_every",
             "a non-negative number of steps (0 = at the end only)", self.eval_every)
        need(is_int(self.save_every) and self.save_every >= 0, "save_every",
             "a non-negative number of steps (0 = at the end only)", self.save_every)
        need(is_int(self.log_every) and self.log_every > 0, "log_every", "a positive number of steps",
             self.log_every)
        need(is_int(self.eval_batch_size) and self.eval_batch_size > 0, "eval_batch_size",
             "a positive batch size", self.eval_batch_size)
        need(self.num_workers is None or (is_int(self.num_workers) and self.num_workers >= 0), "num_workers",
             "a non-negative number of processes", self.num_workers)
        return self

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d
