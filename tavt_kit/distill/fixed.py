"""Distillation at one schedule: a pick fine-tuned toward your model after the search.

The supernet's weights serve every schedule of its space, and at the schedules that realise their MAC reduction
on a CPU (drop-heavy, 0.3 of your model's latency) that costs accuracy: on the c96p4w96 latency benchmark the
picks there lost 0.6-1.9 points to your model. :class:`ScheduleDistillStep` trains the student at one fixed
schedule only, toward the frozen parent's soft predictions, from the supernet's weights. Measured on seed 1's pick
at 0.3 (3.7x faster than your model on OpenVINO int8), deployed in int8: −1.27 → −0.03 points against your model
after 150 steps (``docs/benchmarks/pick_finetune.md``).

The weights that come out are for that schedule: they no longer serve the rest of the space, and the model
carries the schedule as its own (``model.schedule``, saved with its reducers in the checkpoint's spec). The step
is a trainer ``step_fn`` (:class:`~tavt_kit.train.Trainer`), like :class:`~.inplace.InplaceDistillStep`;
:func:`distill_schedule` runs it.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..schedules import TokenSchedule
from .inplace import _frozen_copy, _split


class ScheduleDistillStep:
    """One optimiser step of the student at ``schedule``: KL to the frozen ``parent``'s soft predictions (full
    schedule, eval mode) at ``kd_temperature`` (scaled by T²), plus ``label_weight`` times the cross-entropy on the
    labels (0: the parent's predictions only). The step keeps its own frozen copy of ``parent``."""

    def __init__(self, schedule: TokenSchedule, parent: nn.Module, kd_temperature: float = 1.0,
                 label_weight: float = 0.0):
        if not isinstance(schedule, TokenSchedule):
            raise ConfigError(f"schedule: expected a TokenSchedule, got {type(schedule).__name__}")
        if parent is None:
            raise ConfigError("parent=None: distillation at one schedule learns your model's predictions; give the "
                              "model the supernet was distilled from")
        if not kd_temperature > 0:
            raise ConfigError(f"kd_temperature={kd_temperature}: expected a positive temperature")
        if not label_weight >= 0:
            raise ConfigError(f"label_weight={label_weight}: expected a non-negative weight")
        self.schedule = schedule
        self.parent = _frozen_copy(parent)
        self.T = float(kd_temperature)
        self.label_weight = float(label_weight)
        self.trainer = None

    def bind(self, trainer) -> None:
        self.trainer = trainer
        self.parent.to(trainer.device)

    def __call__(self, model, images: torch.Tensor, labels: torch.Tensor):
        with torch.no_grad():
            self.parent.eval()  # whatever a caller did to the module: the teacher never trains
            target = F.softmax(_split(self.parent(images))[0].float() / self.T, dim=-1)
        # the heads' auxiliary losses stay out, as for the sub-networks of in-place distillation
        logits = _split(model(images, drop=self.schedule, labels=labels))[0].float()
        kd = F.kl_div(F.log_softmax(logits / self.T, dim=-1), target, reduction="batchmean") * self.T ** 2
        loss = kd
        if self.label_weight:
            loss = loss + self.label_weight * F.cross_entropy(logits, labels)
        if self.trainer is not None:
            self.trainer.backward(loss)
        else:
            loss.backward()
        metrics: Dict[str, torch.Tensor] = {"kd": kd.detach(),
                                            "acc": (logits.detach().argmax(1) == labels).float().mean()}
        return loss.detach(), metrics


def distill_schedule(model: nn.Module, parent: nn.Module, schedule, train_set, config, *, holdout_set=None,
                     out_dir: Optional[str] = None, resume: bool = False, kd_temperature: float = 1.0,
                     label_weight: float = 0.0, checkpoint_extra: Optional[dict] = None,
                     device: Optional[str] = None):
    """Fine-tune ``model`` (the supernet's weights) at ``schedule`` toward ``parent`` for ``config.steps`` steps
    (a :class:`~tavt_kit.train.TrainConfig`) on ``train_set``; returns the trainer's
    :class:`~tavt_kit.train.TrainResult`.

    ``model.schedule`` becomes ``schedule`` first, so the held-out evaluations (``holdout_set``) run at it and
    every checkpoint written to ``out_dir`` records it. ``resume``: continue
    the run in ``out_dir`` where it stopped; ``checkpoint_extra``: spec entries every checkpoint carries (as
    :class:`~tavt_kit.train.Trainer` takes them). ``best.safetensors`` in ``out_dir`` is the best step on the
    held-out images (the last without them); ``model`` ends at the last step."""
    from ..train import Trainer

    model.schedule = schedule  # validated against the model (its reducers, its head)
    step = ScheduleDistillStep(model.schedule, parent, kd_temperature, label_weight)
    trainer = Trainer(model, train_set, config, holdout_set=holdout_set, step_fn=step, out_dir=out_dir,
                      class_names=getattr(train_set, "class_names", None), checkpoint_extra=checkpoint_extra,
                      device=device)
    return trainer.fit(resume=resume)
