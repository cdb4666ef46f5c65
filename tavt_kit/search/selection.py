"""The selection split: held-out images the evolution never scores, on which each budget's deployable is chosen.

Why: the evolution keeps the fittest of hundreds of schedules on the held-out images, so the pick's held-out score
carries the winner's curse (it was chosen *because* it scored high on those images), while ToMe on your model
and your model itself are fitted to the budget, not selected on accuracy. Comparing them on the images the
evolution chose on favours the searched pick: measured on the 256-token cluttered-digits model, the pick that
won two budgets by 0.5-0.7 points on the held-out images was 1.0 point below your model on the test images
(``docs/benchmarks/latency_reference.md``). Setting part of the held-out split aside, and choosing among the
families only there, makes that comparison unbiased (every option is scored once, on images no choice has
seen); its cost is a smaller split for the evolution's fitness. Measured on cluttered-digits (3 seeds, MAC
budgets, ``docs/benchmarks/selection_split.md``) that cost was the larger one: the evolution on half the images
found picks 0.1-0.2 points weaker, and the choice on the full split had no regret to remove, so the split is
not the default (``selection=0``); it is there for a held-out split large enough to halve.

:func:`resolve_selection` turns the ``selection`` option into a fraction (``"auto"``: half, where a
recommendation is made and the split is large enough for both halves); :func:`split_selection` cuts the split
(seeded, like ``subset``); :func:`set_aside` does both; :class:`SelectionScorer` scores a deployable on the
selection images with the weights and at the precision it ships with, once per (weights, schedule, precision).
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple, Union

import torch
from torch import nn

from ..data.splits import SMALL_SPLIT_IMAGES
from ..errors import ConfigError
from ..schedules.schedule import TokenSchedule
from ..stats import wilson_interval
from .data import EvalSet
from .recommend import PairedEvidence

#: the fraction of the held-out images ``selection="auto"`` sets aside
AUTO_SELECTION = 0.5


def resolve_selection(selection: Union[str, float, None], holdout_images: int, recommends: bool,
                      log: Callable[[str], None]) -> float:
    """The fraction of ``holdout_images`` set aside for the choice among families.

    ``"auto"``: :data:`AUTO_SELECTION` where a recommendation is made (``recommends``: a parent to compare with)
    and both parts keep at least :data:`~tavt_kit.data.splits.SMALL_SPLIT_IMAGES` images, else 0 (said in one
    ``note:`` line when a recommendation is made); a number in [0, 1): that fraction (0: none, the families are
    compared on the images the evolution chose on)."""
    selection = check_selection(selection)
    if selection == "auto":
        if not recommends:
            return 0.0
        if holdout_images * min(AUTO_SELECTION, 1 - AUTO_SELECTION) < SMALL_SPLIT_IMAGES:
            log(f"note: the held-out split ({holdout_images} images) is too small to set part of it aside for "
                "choosing among the searched pick and the training-free deployables; they are compared on the "
                "images the evolution chose on, which favours the searched pick (give more held-out images)")
            return 0.0
        return AUTO_SELECTION
    if selection > 0:
        n_sel = int(round(holdout_images * selection))
        if n_sel < 1 or holdout_images - n_sel < 1:
            raise ConfigError(f"selection={selection}: {holdout_images} held-out images leave "
                              f"{n_sel} for the selection and {holdout_images - n_sel} for the evolution; both "
                              "need at least one")
    return float(selection)


def check_selection(selection: Union[str, float, None]) -> Union[str, float]:
    """``selection`` as ``"auto"`` or a float in [0, 1) (None: 0); a ConfigError naming it otherwise."""
    if selection is None:
        return 0.0
    if isinstance(selection, str) and selection != "auto":
        try:
            selection = float(selection)
        except ValueError:
            pass
    if selection == "auto":
        return selection
    if isinstance(selection, bool) or not isinstance(selection, (int, float)) or not 0 <= selection < 1:
        raise ConfigError(f"selection={selection!r}: expected 'auto' or a fraction of the held-out images in [0, 1)")
    return float(selection)


def split_selection(holdout: EvalSet, fraction: float, seed: int) -> Tuple[EvalSet, Optional[EvalSet]]:
    """``(search part, selection part)`` of ``holdout``: ``round(n * fraction)`` images drawn with ``seed`` are
    the selection part (None when ``fraction`` is 0); both keep the images' order."""
    n = len(holdout.labels)
    k = int(round(n * fraction))
    if k <= 0:
        return holdout, None
    g = torch.Generator().manual_seed(int(seed) + 7919)  # not the subset's draw: another cut of the same images
    perm = torch.randperm(n, generator=g)
    sel, rest = perm[:k].sort().values, perm[k:].sort().values
    return (EvalSet(holdout.images[rest], holdout.labels[rest], holdout.name),
            EvalSet(holdout.images[sel], holdout.labels[sel], f"{holdout.name}-selection"))


def set_aside(held: EvalSet, selection, recommends: bool, seed: int, batch_size: int, transform,
              log: Callable[[str], None], device: Optional[str] = None
              ) -> Tuple[EvalSet, Optional["SelectionScorer"]]:
    """``(the evolution's images, a SelectionScorer on the rest or None)`` for the ``selection`` option
    (``device``: where it runs the models it scores)."""
    search, chosen_on = split_selection(held, resolve_selection(selection, len(held.labels), recommends, log), seed)
    return search, None if chosen_on is None else SelectionScorer(chosen_on, batch_size, transform, device)


class SelectionScorer(PairedEvidence):
    """Scores deployables on the selection images: ``(weights, schedule, precision)`` once each, per image (the
    recommendation pairs them, :mod:`~.recommend`).

    fp32 runs the weights in PyTorch; bf16/fp16 under autocast (as the search scores those precisions); int8 on
    the deployed model through the :class:`~tavt_kit.search.deployed.DeployedScorer` that quantised it for the
    held-out and test images (no second quantisation)."""

    def fields(self, weights: str, model: nn.Module, sched: TokenSchedule, precision: str = "fp32",
               deployed=None) -> dict:
        """The entry fields of ``search.json``: ``selection_accuracy``, its 95 % interval, ``selection_nll``."""
        m = self.metrics(weights, model, sched, precision, deployed)
        return {"selection_accuracy": m["accuracy"],
                "selection_interval": list(wilson_interval(int(round(m["accuracy"] * self.n)), self.n)),
                "selection_nll": m["nll"]}
