"""The supernet's weights moved part of the way back to the parent's: weight-space interpolation.

In-place distillation trains one set of weights for every schedule, so the sub-networks' losses pull the
shared weights away from the parent, and the full schedule loses accuracy the user had (on cluttered-digits,
0.3-0.8 points after 150 steps even with a frozen-parent teacher). Interpolating the weights,
``alpha * distilled + (1 - alpha) * parent`` (WiSE-FT, Wortsman et al. 2022: fine-tuned and starting weights
of one network lie in one basin, so the mix is itself a good network), gives back most of that while keeping
most of what distillation taught the small schedules: docs/benchmarks/distill_recipe.md measures it.
How far to mix depends on how far the weights drifted: :func:`choose_parent_mix` picks the weight on
held-out images (``distill --parent-mix auto``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Sequence

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError


def mix_with_parent(model: nn.Module, parent: nn.Module, alpha: float) -> nn.Module:
    """Set ``model``'s floating-point weights to ``alpha * model + (1 - alpha) * parent``, in place.

    ``alpha`` in (0, 1]: 1 leaves the distilled weights as they are. Both models must have the same state
    layout (the supernet is the parent's architecture). Integer buffers (indices, counters) are the model's.
    Returns ``model``.
    """
    if not 0 < float(alpha) <= 1:
        raise ConfigError(f"parent_mix={alpha}: expected a weight in (0, 1] for the distilled weights")
    if float(alpha) == 1.0:
        return model
    own, theirs = model.state_dict(), parent.state_dict()
    missing = sorted(set(own) ^ set(theirs))
    if missing:
        raise CheckpointError(f"parent: its weights differ in layout from the supernet's ({missing[0]} is in one "
                              "only); give the checkpoint distillation started from")
    mixed = {}
    for k, v in own.items():
        p = theirs[k]
        if p.shape != v.shape:
            raise CheckpointError(f"parent: {k} has shape {tuple(p.shape)}, the supernet's {tuple(v.shape)}")
        mixed[k] = torch.lerp(p.to(v), v, float(alpha)) if v.is_floating_point() else v
    model.load_state_dict(mixed)
    return model


#: the weights ``choose_parent_mix`` tries by default, most distilled first
MIX_GRID = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)
#: how far below the parent's held-out top-1 the full schedule may fall and still count as keeping it (the
#: issue's goal: the supernet's full schedule at least the parent's - 0.2 points)
KEEP_TOLERANCE = 0.002


@dataclass(frozen=True)
class MixChoice:
    """The parent mix chosen on held-out images, with every weight tried and why this one.

    ``scores`` maps each alpha to the held-out metrics of the mixed supernet (``top1_<schedule>`` for each
    tracked schedule and their mean ``top1_mean``, as :func:`make_schedule_eval` returns them);
    ``parent_full`` is the parent's held-out top-1 (its full schedule)."""

    alpha: float
    parent_full: float
    scores: Dict[float, Dict[str, float]]
    tolerance: float
    kept: bool  # whether the chosen mix keeps the parent's full-schedule accuracy within the tolerance

    def reason(self) -> str:
        s = self.scores[self.alpha]
        full = 100 * (s["top1_full"] - self.parent_full)
        if self.kept:
            return (f"the most accurate over the tracked schedules ({100 * s['top1_mean']:.2f} % mean) of the mixes "
                    f"whose full schedule keeps your model's held-out top-1 (within {100 * self.tolerance:.1f} "
                    f"points; this one {full:+.2f})")
        return (f"no mix kept your model's held-out top-1 within {100 * self.tolerance:.1f} points; the one closest "
                f"to it ({full:+.2f})")

    def to_dict(self) -> dict:
        return {"alpha": self.alpha, "parent_top1_full": self.parent_full, "tolerance": self.tolerance,
                "kept": self.kept, "reason": self.reason(),
                "tried": {f"{a:g}": dict(v) for a, v in self.scores.items()}}


def choose_parent_mix(model: nn.Module, parent: nn.Module, score: Callable[[nn.Module], Dict[str, float]],
                      alphas: Sequence[float] = MIX_GRID, tolerance: float = KEEP_TOLERANCE) -> MixChoice:
    """The parent mix for ``model`` (the distilled supernet) chosen on held-out images by ``score``.

    A fixed mix is a guess at how far the shared weights drifted: where distillation kept the full schedule
    (wider spaces teach the small schedules most, and the mix then takes it back from them) the mix only costs,
    and where it drifted a lot 0.7 may not be enough. So each weight of ``alphas`` is tried: among the mixes
    whose full schedule is within ``tolerance`` of the parent's held-out top-1, the one with the best mean over
    the tracked schedules (what picks distillation's best step; ties: the more distilled); if none is, the one
    whose full schedule is most accurate. ``score(m)`` returns held-out metrics with ``top1_full`` and
    ``top1_mean`` (:func:`make_schedule_eval`). ``model`` is left with its own (distilled) weights: the caller
    mixes with the chosen ``alpha``.
    """
    grid = sorted({float(a) for a in alphas}, reverse=True)
    if not grid or not all(0 < a <= 1 for a in grid):
        raise ConfigError(f"alphas={list(alphas)}: expected weights in (0, 1] for the distilled weights")
    if tolerance < 0:
        raise ConfigError(f"tolerance={tolerance}: expected a non-negative fraction of top-1")
    distilled = {k: v.detach().clone() for k, v in model.state_dict().items()}
    parent_full = float(score(parent)["top1_full"])
    scores: Dict[float, Dict[str, float]] = {}
    try:
        for a in grid:
            model.load_state_dict(distilled)
            scores[a] = {k: float(v) for k, v in score(mix_with_parent(model, parent, a)).items()}
    finally:
        model.load_state_dict(distilled)
    keep = [a for a in grid if scores[a]["top1_full"] >= parent_full - tolerance]
    if keep:
        alpha = max(keep, key=lambda a: (scores[a]["top1_mean"], a))
    else:
        alpha = max(grid, key=lambda a: (scores[a]["top1_full"], a))
    return MixChoice(alpha, parent_full, scores, float(tolerance), bool(keep))
