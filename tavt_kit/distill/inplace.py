"""In-place distillation with patch drop: one set of weights for every schedule of a space (TAVT).

Per batch (one optimiser step):

1. the full model learns the labels (cross-entropy, plus its head's auxiliary losses);
2. ``sandwich + 1`` sub-networks — the smallest schedule of the space first,
   then ``sandwich`` random members (a per-block drop ratio drawn in
   ``[0, bound]``; in a space of several reducers, each reducing block's
   reducer drawn too, and the smallest member's one reducer drawn per step) — each learn the full model's detached soft predictions
   (KL divergence at ``kd_temperature``, scaled by T²), optionally plus a
   label loss and their heads' auxiliary losses;
3. every loss is divided by ``sandwich + 2`` (the number of passes), as TAVT does.

Each pass is back-propagated right away (through the trainer), so only one
sub-network's graph is alive at a time. The schedules of a step are drawn from
``(seed, step, micro-batch)``: every rank of a ``torchrun`` job draws the same
ones, and a resumed run draws what the killed run would have.
"""
from __future__ import annotations

import random
from contextlib import nullcontext
from typing import Dict, List

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..schedules import SearchSpace, TokenSchedule, evit_schedule


def _split(out):
    if isinstance(out, (tuple, list)):
        return out[0], dict(out[1] or {})
    return out, {}


class InplaceDistillStep:
    """The TAVT step, pluggable into :class:`~tavt_kit.train.Trainer` as ``step_fn``.

    Args:
        space: the schedules the supernet is trained for.
        sandwich: random sub-networks per step besides the smallest (TAVT's ``num_sandwich``, 2).
        kd_temperature: softmax temperature of the distillation loss (TAVT: 1).
        sub_label_weight: weight of a cross-entropy on the labels for each sub-network (TAVT: 0).
        sub_aux: add the heads' auxiliary losses of the sub-networks too.
        label_smoothing: of the full model's (and sub-networks') label loss.
        seed: schedule draws.
    """

    def __init__(self, space: SearchSpace, sandwich: int = 2, kd_temperature: float = 1.0,
                 sub_label_weight: float = 0.0, sub_aux: bool = False, label_smoothing: float = 0.0, seed: int = 0):
        if sandwich < 0:
            raise ConfigError(f"--sandwich: expected a non-negative number of random sub-networks, got {sandwich}")
        if kd_temperature <= 0:
            raise ConfigError(f"--kd-temperature: expected a positive temperature, got {kd_temperature}")
        if sub_label_weight < 0:
            raise ConfigError(f"--sub-label-weight: expected a non-negative weight, got {sub_label_weight}")
        self.space = space
        self.sandwich = int(sandwich)
        self.T = float(kd_temperature)
        self.sub_label_weight = float(sub_label_weight)
        self.sub_aux = bool(sub_aux)
        self.label_smoothing = float(label_smoothing)
        self.seed = int(seed)
        self.trainer = None
        self._micro_key = (None, 0)

    def bind(self, trainer) -> None:
        self.trainer = trainer

    def schedules(self, step: int, micro: int = 0) -> List[TokenSchedule]:
        """The sub-networks of a step: the smallest, then ``sandwich`` random members."""
        rng = random.Random(f"{self.seed}:{step}:{micro}")
        # a space of several reducers: the smallest member with one reducer everywhere, drawn per step
        smallest = self.space.smallest(rng.choice(self.space.reducers)) if self.space.mixed else self.space.smallest()
        return [smallest] + [self.space.sample(rng) for _ in range(self.sandwich)]

    def _backward(self, loss: torch.Tensor) -> None:
        if self.trainer is not None:
            self.trainer.backward(loss)
        else:
            loss.backward()

    def __call__(self, model, images: torch.Tensor, labels: torch.Tensor):
        step = self.trainer.step if self.trainer is not None else 0
        last_step, micro = self._micro_key
        micro = micro + 1 if last_step == step else 0
        self._micro_key = (step, micro)
        subs = self.schedules(step, micro)
        passes = len(subs) + 1
        ddp = hasattr(model, "no_sync")
        metrics: Dict[str, torch.Tensor] = {}

        # 1. the full model on the labels
        with (model.no_sync() if ddp else nullcontext()):
            logits, aux = _split(model(images, labels=labels))
            ce = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
            loss = ce + sum(aux.values(), torch.zeros((), device=ce.device))
            self._backward(loss / passes)
        teacher = F.softmax(logits.detach().float() / self.T, dim=-1)
        total = loss.detach()
        metrics["loss_full"] = ce.detach()
        metrics["acc_full"] = (logits.detach().argmax(1) == labels).float().mean()
        for name, v in aux.items():
            metrics[f"aux_{name}"] = v.detach()

        # 2. sub-networks learn the full model's soft predictions
        for j, sched in enumerate(subs):
            last = j == len(subs) - 1
            with (model.no_sync() if ddp and not last else nullcontext()):
                s_logits, s_aux = _split(model(images, drop=sched, labels=labels))
                log_p = F.log_softmax(s_logits.float() / self.T, dim=-1)
                kd = F.kl_div(log_p, teacher, reduction="batchmean") * (self.T ** 2)
                sub_loss = kd
                if self.sub_label_weight:
                    sub_loss = sub_loss + self.sub_label_weight * F.cross_entropy(
                        s_logits.float(), labels, label_smoothing=self.label_smoothing)
                if self.sub_aux:
                    sub_loss = sub_loss + sum(s_aux.values(), torch.zeros((), device=kd.device))
                self._backward(sub_loss / passes)
            total = total + sub_loss.detach()
            key = "smallest" if j == 0 else "random"
            metrics[f"kd_{key}"] = metrics.get(f"kd_{key}", 0) + kd.detach() / (1 if j == 0 else self.sandwich)
            if j == 0:
                metrics["acc_smallest"] = (s_logits.detach().argmax(1) == labels).float().mean()
        return total / passes, metrics


def fixed_schedules(space: SearchSpace) -> Dict[str, TokenSchedule]:
    """Schedules tracked during distillation: full, smallest, the middle of the space, EViT 0.7."""

    mid = space.from_drop_ratios([b / 2 for b in space.bounds])
    out = {"full": space.full(), "smallest": space.smallest(), "middle": mid}
    evit = evit_schedule(0.7, space.depth, space.num_patches, space.min_tokens)
    if space.contains(evit):
        out["evit0.7"] = evit
    return out


def make_schedule_eval(holdout_set, schedules: Dict[str, TokenSchedule], batch_size: int = 64):
    """``eval_fn`` for the trainer: holdout top-1 at each tracked schedule; selects on their mean."""
    from ..train.evaluate import evaluate

    def eval_fn(trainer) -> Dict[str, float]:
        out: Dict[str, float] = {}
        for name, sched in schedules.items():
            res = evaluate(trainer.model, holdout_set, drop=sched, batch_size=batch_size, device=trainer.device,
                           amp_dtype=trainer.amp_dtype, normalize=trainer.normalize,
                           num_workers=trainer.config.num_workers)
            out[f"top1_{name}"] = res.top1
        out["top1"] = out["top1_full"]
        out["top1_mean"] = sum(out[f"top1_{n}"] for n in schedules) / len(schedules)
        return out

    return eval_fn
