"""In-place distillation with patch drop: one set of weights for every schedule of a space (TAVT).

Per batch (one optimiser step):

1. the full model learns the labels (cross-entropy, plus its head's auxiliary losses) and/or, with
   ``full_kd_weight``, the parent's soft predictions;
2. ``sandwich + 1`` sub-networks — the smallest schedule of the space first,
   then ``sandwich`` random members (a per-block drop ratio drawn in
   ``[0, bound]``; in a space of several reducers, each reducing block's
   reducer drawn too, and the smallest member's one reducer drawn per step) — each learn the
   teacher's soft predictions: the full model's own, detached (``teacher="full"``, TAVT), or
   those of a frozen copy of the *parent*, the model distillation started from
   (``teacher="parent"``) (KL divergence at ``kd_temperature``, scaled by T²), optionally plus a
   label loss and their heads' auxiliary losses;
3. every loss is divided by ``sandwich + 2`` (the number of passes), as TAVT does.

With ``teacher="full"`` the targets move with the full model, which itself keeps training on the labels: on a
converged model that restarts an optimiser, the full schedule drifts away from the parent (measured on
cluttered-digits: docs/benchmarks/distill_recipe.md). ``teacher="parent"`` keeps every target fixed.

Each pass is back-propagated right away (through the trainer), so only one
sub-network's graph is alive at a time. The schedules of a step are drawn from
``(seed, step, micro-batch)``: every rank of a ``torchrun`` job draws the same
ones, and a resumed run draws what the killed run would have.
"""
from __future__ import annotations

import copy
import random
from contextlib import nullcontext
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..schedules import SearchSpace, TokenSchedule, evit_schedule


TEACHERS = ("parent", "full")


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
        teacher: whose soft predictions the sub-networks learn: ``"full"`` (the full model of the same step,
            detached; TAVT) or ``"parent"`` (a frozen eval-mode copy of ``parent``, never trained).
        parent: the model distillation starts from (e.g. the loaded checkpoint before training, or
            :func:`tavt_kit.models.checkpoint.load_parent`); needed by ``teacher="parent"`` and
            ``full_kd_weight``. The step keeps its own frozen copy.
        full_label_weight: weight of the full model's label loss (cross-entropy; TAVT: 1).
        full_kd_weight: weight of a distillation loss of the full model toward the parent (KL at
            ``kd_temperature``; needs ``parent``).
    """

    def __init__(self, space: SearchSpace, sandwich: int = 2, kd_temperature: float = 1.0,
                 sub_label_weight: float = 0.0, sub_aux: bool = False, label_smoothing: float = 0.0, seed: int = 0,
                 teacher: str = "full", parent: Optional[nn.Module] = None, full_label_weight: float = 1.0,
                 full_kd_weight: float = 0.0):
        if sandwich < 0:
            raise ConfigError(f"sandwich={sandwich}: expected a non-negative number of random sub-networks")
        if kd_temperature <= 0:
            raise ConfigError(f"kd_temperature={kd_temperature}: expected a positive temperature")
        if sub_label_weight < 0:
            raise ConfigError(f"sub_label_weight={sub_label_weight}: expected a non-negative weight")
        if teacher not in TEACHERS:
            raise ConfigError(f"teacher={teacher!r}: expected parent or full")
        if full_label_weight < 0 or full_kd_weight < 0 or full_label_weight + full_kd_weight <= 0:
            raise ConfigError(f"full_label_weight={full_label_weight}, full_kd_weight={full_kd_weight}: expected "
                              "non-negative weights, at least one positive")
        if parent is None and (teacher == "parent" or full_kd_weight > 0):
            need = "teacher='parent'" if teacher == "parent" else f"full_kd_weight={full_kd_weight}"
            raise ConfigError(f"parent=None: {need} needs the model distillation starts from")
        self.teacher = teacher
        self.full_label_weight = float(full_label_weight)
        self.full_kd_weight = float(full_kd_weight)
        self.parent = _frozen_copy(parent) if parent is not None else None
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
        if self.parent is not None:
            self.parent.to(trainer.device)

    @torch.no_grad()
    def parent_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen parent's logits at the full schedule (eval mode, no gradient)."""
        parent = self.parent
        if next(parent.parameters()).device != images.device:
            parent.to(images.device)
        parent.eval()  # whatever a caller did to the module: the teacher never trains
        return _split(parent(images))[0].detach().float()

    def _kd(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float() / self.T, dim=-1)
        return F.kl_div(log_p, target, reduction="batchmean") * (self.T ** 2)

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

        parent_probs = None
        if self.parent is not None:
            parent_probs = F.softmax(self.parent_logits(images) / self.T, dim=-1)

        # 1. the full model on the labels (and/or toward the parent)
        with (model.no_sync() if ddp else nullcontext()):
            logits, aux = _split(model(images, labels=labels))
            ce = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
            loss = sum(aux.values(), torch.zeros((), device=ce.device))
            if self.full_label_weight:
                loss = loss + self.full_label_weight * ce
            if self.full_kd_weight:
                kd_full = self._kd(logits, parent_probs)
                loss = loss + self.full_kd_weight * kd_full
                metrics["kd_full"] = kd_full.detach()
            self._backward(loss / passes)
        if self.teacher == "parent":
            teacher = parent_probs
        else:
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
                kd = self._kd(s_logits, teacher)
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


def _frozen_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` that no optimiser sees: eval mode, no gradients (unwrapped from DDP)."""
    model = getattr(model, "module", model)
    frozen = copy.deepcopy(model).eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    return frozen


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
