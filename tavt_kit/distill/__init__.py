"""TAVT in-place distillation: the step that trains one set of weights for every token schedule of a space.

:class:`InplaceDistillStep` plugs into :class:`tavt_kit.train.Trainer` (the
generic engine); :func:`fixed_schedules` and :func:`make_schedule_eval` track
the supernet's accuracy at a few members of its space while it trains;
:func:`mix_with_parent` moves the distilled weights part of the way back to the parent's, and
:func:`choose_parent_mix` chooses how far on held-out images. :func:`distill_schedule`
(:class:`ScheduleDistillStep`) fine-tunes one schedule, a pick, toward your model after the search.
:func:`distill` runs a whole distillation job (:class:`DistillSettings` in, :class:`DistillResult` out), as
``fgvc-kit distill`` does.
"""
from .fixed import ScheduleDistillStep, distill_schedule
from .inplace import InplaceDistillStep, fixed_schedules, make_schedule_eval
from .mix import MixChoice, choose_parent_mix, mix_with_parent
from .run import DistillResult, distill
from .settings import DistillSettings

__all__ = ["InplaceDistillStep", "ScheduleDistillStep", "distill_schedule", "fixed_schedules", "make_schedule_eval", "mix_with_parent", "choose_parent_mix", "MixChoice",
           "DistillResult", "DistillSettings", "distill"]
