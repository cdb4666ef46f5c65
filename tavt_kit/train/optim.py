"""The optimiser and its learning-rate schedule: SGD/AdamW, weight decay on matrices only, warm-up then decay."""
from __future__ import annotations

import math

import torch
from torch import nn

from .config import TrainConfig


class WarmupDecay:
    """LR multiplier: linear warm-up from 0, then cosine / linear decay to ``min_ratio`` (the seeds' schedule)."""

    def __init__(self, warmup: int, total: int, kind: str = "cosine", min_ratio: float = 0.0):
        self.warmup, self.total, self.kind, self.min_ratio = int(warmup), int(total), kind, float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return step / max(1, self.warmup)
        if self.kind == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        f = 0.5 * (1.0 + math.cos(math.pi * progress)) if self.kind == "cosine" else 1.0 - progress
        return self.min_ratio + (1.0 - self.min_ratio) * f


def param_groups(model: nn.Module, weight_decay: float):
    """Weight decay on weight matrices only (not biases, norms, position embeddings, class tokens)."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name in skip or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))
