"""The supernet's weights moved part of the way back to the parent's: weight-space interpolation.

In-place distillation trains one set of weights for every schedule, so the sub-networks' losses pull the
shared weights away from the parent, and the full schedule loses accuracy the user had (on cluttered-digits,
0.3-0.8 points after 150 steps even with a frozen-parent teacher). Interpolating the weights,
``alpha * distilled + (1 - alpha) * parent`` (WiSE-FT, Wortsman et al. 2022: fine-tuned and starting weights
of one network lie in one basin, so the mix is itself a good network), gives back most of that while keeping
most of what distillation taught the small schedules: docs/benchmarks/distill_recipe.md measures it.
"""
from __future__ import annotations

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
