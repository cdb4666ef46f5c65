"""Which deployable a budget ships: your model's weights unless the supernet's are better beyond noise.

The options of a budget are the supernet's pick (distilled weights) and the deployables on your model's own
weights: your model, ToMe on it and the schedule searched on it (:mod:`~.parent_search`), each at every precision
searched. The choice has two steps, both on the images the recommendation compares on (the selection images where
the search set some aside, :mod:`~.selection`; else the held-out images the evolution chose on):

1. **Among your model's weights**, what needs no choosing comes first: your model and ToMe on it (each at every
   precision) were fitted to the budget, not selected on these images, and the best score among them wins (NLL
   for the nll/kl fitnesses, else accuracy). A schedule *searched* on your model's weights (``searched_parent``,
   or the pick of a search run on your model itself) replaces it only where it leads beyond noise, paired per
   image, after what the winner's-curse correction took off its fitness (:mod:`~.shrinkage`).
2. **The supernet's pick replaces that only where it wins beyond noise** in the same way.

"Beyond noise": better on the same images by more than ``z`` standard errors of the paired difference; ``z`` is
the one-sided normal quantile of ``ship_confidence`` (0.95: 1.645; 0.5: the point estimate decides). On selection
images that the evolution never scored (:mod:`~.selection`) no searched option carries the winner's curse, and
step 1 takes the best score as it is; step 2 keeps its margin (distillation chose the supernet's weights on the
held-out images too).

Why margins at all: the held-out images chose the searched schedules, the fittest of hundreds of candidates there,
and for the supernet its weights too (distillation keeps its best step on them). The shrinkage corrects only the
first, and only for the noise it can see. Measured on the latency benchmark's seed 0
(``docs/benchmarks/ship_gate.md``), the supernet's pick looked better on the held-out images at every budget
(paired z 0.1 to 0.8), yet lost 0.8 to 1.1 points on the test images (resolved); on seed 1 a schedule searched on
your model led ToMe on it by 0.8 points on the held-out images (NLL within noise) and lost 0.57 points to it on
the test images (``docs/benchmarks/own_gate.md``). Your model is the reference, and what needs no choosing is
the baseline: a chosen option ships on evidence, not on a lead within noise.

:class:`PairedEvidence` scores each compared deployable once per image (cross-entropy and hit) with the weights
and at the precision it ships with (int8 on the deployed model).
"""
from __future__ import annotations

import math
from statistics import NormalDist
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import nn

from ..errors import ConfigError
from ..schedules.schedule import TokenSchedule
from .parent_search import FAMILY

#: the default one-sided confidence at which the supernet's pick must beat your model's weights to ship
DEFAULT_SHIP_CONFIDENCE = 0.95


def check_ship_confidence(value, name: str = "ship_confidence") -> float:
    """``value`` as a float in [0.5, 1); a ConfigError naming ``name`` otherwise."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and 0.5 <= value < 1
    if not ok:
        raise ConfigError(f"{name}={value!r}: expected a one-sided confidence in [0.5, 1) (0.95: a chosen option "
                          "ships only where it beats what it challenges at 95 %, paired per image; 0.5: any lead)")
    return float(value)


def required_z(confidence: float) -> float:
    """The one-sided normal quantile a paired lead must exceed, in standard errors."""
    return NormalDist().inv_cdf(confidence)


def shift(entry: dict) -> float:
    """What the winner's-curse correction took off an entry's held-out fitness (0: not corrected)."""
    m, s = entry.get("fitness_measured"), entry.get("fitness_shrunk")
    return max(0.0, float(m) - float(s)) if m is not None and s is not None else 0.0


Values = Tuple[torch.Tensor, torch.Tensor]  # per image: cross-entropy (float64), hit (float64)


class PairedEvidence:
    """Per-image cross-entropy and hits of deployables on one image set, once per (weights, schedule, precision).

    fp32 runs the weights in PyTorch, bf16/fp16 under autocast (as the search scores them), int8 on the model
    quantised and deployed by the :class:`~.precision.DeployedScorer` given (no second quantisation)."""

    def __init__(self, images, batch_size: int, transform, device: Optional[str] = None):
        self.images, self.batch_size, self.transform = images, int(batch_size), transform
        self.device = device  # where fp32/bf16/fp16 models run (None: where each model is)
        self._cache: Dict[tuple, Values] = {}
        self._evaluators: Dict[tuple, object] = {}

    @property
    def n(self) -> int:
        return len(self.images.labels)

    def values(self, weights: str, model: nn.Module, sched: TokenSchedule, precision: str = "fp32",
               deployed=None) -> Values:
        """Each image's cross-entropy and hit of ``model`` (named ``weights``: ``supernet`` or ``parent``) at
        ``sched`` and ``precision``; ``deployed``: the DeployedScorer for int8."""
        from .evolution import gene_of

        key = (weights, gene_of(sched), precision)
        if key not in self._cache:
            if precision == "int8":
                if deployed is None:
                    raise ConfigError("an int8 deployable is scored on the deployed model; no deployed scorer was "
                                      "given")
                sc = deployed.scores(sched, "int8", self.images.images, self.images.labels)[0]
            else:
                sc = self._evaluator(weights, model, precision).scores([sched], per_image=True)
            self._cache[key] = (sc.losses[0].double(), sc.hits[0].double())
        return self._cache[key]

    def _evaluator(self, weights: str, model: nn.Module, precision: str):
        """One evaluator per weights and precision: its first blocks' outputs and the full model's reference on
        these images are computed once for every schedule scored."""
        from .deployed import AUTOCAST
        from .evaluate import CandidateEvaluator

        key = (weights, id(model), precision)
        if key not in self._evaluators:
            self._evaluators[key] = CandidateEvaluator(model, self.images.images, self.images.labels,
                                                       self.batch_size, transform=self.transform,
                                                       autocast=AUTOCAST.get(precision), device=self.device)
        return self._evaluators[key]

    def metrics(self, weights: str, model: nn.Module, sched: TokenSchedule, precision: str = "fp32",
                deployed=None) -> Dict[str, float]:
        """Accuracy and mean NLL of :meth:`values`."""
        losses, hits = self.values(weights, model, sched, precision, deployed)
        return {"accuracy": float(hits.mean()), "nll": float(losses.mean())}


def paired_lead(a: Values, b: Values, metric: str) -> Tuple[float, float]:
    """``(mean, standard error)`` of ``a``'s per-image lead over ``b`` (lower cross-entropy, or more hits)."""
    d = (b[0] - a[0]) if metric == "NLL" else (a[1] - b[1])
    n = len(d)
    se = float(d.std(unbiased=True)) / math.sqrt(n) if n > 1 else 0.0
    return float(d.mean()), se


def recommend(row: dict, free: dict, *, fitness: str, selection_images: Optional[int] = None,
              evidence: Optional[Callable[[str, dict, str, dict], Tuple[float, float]]] = None,
              confidence: float = DEFAULT_SHIP_CONFIDENCE, searched_weights: str = "supernet",
              parent_confidence: Optional[float] = None, searched_name: str = "the supernet's pick") -> dict:
    """The deployable to ship for a budget (``row``: its ``search.json`` entry; ``free``: the options on your
    model's weights by family), chosen as the module docstring says.

    ``selection_images``: compared on that many selection images (their ``selection_*`` fields), else on the
    held-out ones. ``evidence(family, entry, other_family, other_entry)``: the first's paired per-image lead over
    the second, ``(mean, standard error)`` in the compared metric; None (a row assembled by hand): the point
    estimates decide, as at ``confidence`` 0.5. ``searched_weights="parent"``: the search ran on your model's own
    weights (no supernet), so its pick is one more schedule searched on them (step 1 only).
    ``parent_confidence``: step 1's confidence where it differs from step 2's (None: ``confidence``).
    ``searched_name``: what ``why`` calls the searched option (a fine-tuned pick is not the supernet's).

    The result's ``evidence`` is step 2's paired comparison, ``evidence_parent`` step 1's, where one was made."""
    split = "selection" if selection_images else "holdout"
    key = f"{split}_accuracy" if fitness == "accuracy" else f"{split}_nll"
    sign = 1 if key.endswith("_accuracy") else -1
    metric = "accuracy" if sign > 0 else "NLL"
    options = {"searched": row.get("best"), **free}
    options = {k: v for k, v in options.items() if v is not None and v.get(key) is not None}
    if not options:
        return {"family": None, "why": "nothing meets this budget"}
    # a deployable measured over the budget on the target is not recommended while another is not
    over = sorted(k for k, v in options.items() if v.get("measured_within_budget") is False)
    every = bool(over) and len(over) == len(options)
    if over and not every:
        options = {k: v for k, v in options.items() if k not in over}
    # on the held-out images a searched schedule carries the winner's curse (the others were fitted to the budget,
    # not selected on these images): its score is lowered by what the shrinkage took off its fitness, in the
    # units of the compared metric whatever the fitness (KL's shift counts as NLL's)
    cut = {k: (shift(v) if split == "holdout" else 0.0) for k, v in options.items()}
    value = {k: sign * v[key] - cut[k] for k, v in options.items()}
    corrected = sorted(k for k, v in options.items() if v.get("fitness_shrunk") is not None)
    why = (f"best {metric} on {selection_images} selection images (never scored by the evolution)"
           if split == "selection" else f"best held-out {metric}" + (
        f" ({', '.join(corrected)} corrected for the winner's curse)" if corrected else "")
           ) + " among " + ", ".join(sorted(options))
    mine = searched_weights == "parent"
    paired = _Paired(options, cut, metric, evidence)
    step1 = confidence if parent_confidence is None else check_ship_confidence(parent_confidence, "parent_confidence")
    # step 1: your model's weights; what was searched on them challenges what was fitted to the budget
    searched = [k for k in options if _searched_on_parent(k) or (mine and k == "searched")]
    fitted = [k for k in options if k != "searched" and k not in searched]
    best = max(fitted, key=lambda k: value[k]) if fitted else None
    chosen = max(searched, key=lambda k: value[k]) if searched else None
    own = ship = None
    if best is None:
        best = chosen
    elif chosen is not None and value[chosen] > value[best]:
        if evidence is None or split == "selection":  # no curse to guard against, or no per-image scores
            best = chosen
        else:
            won, own, note = paired.challenge(chosen, chosen, best, step1, f"{best} ships")
            best, why = (chosen if won else best), why + note
    best = best or "searched"
    # step 2: the supernet's weights
    if best != "searched" and "searched" in options and not mine:
        if evidence is None:  # the point estimates decide; a tie goes to your model's weights
            if value["searched"] > value[best]:
                best = "searched"
        else:
            won, ship, note = paired.challenge("searched", searched_name, best, confidence,
                                               "your model's weights ship")
            best = "searched" if won else best
            why += note if won or ship["lead"] > 0 else ""
    if list(options) == ["searched"]:
        why += f"; {searched_name} is the only option that meets this budget"
    if over:
        why += "; every option measured over the budget on the target" if every else \
            "; " + ", ".join(over) + " measured over the budget on the target"
    out = {"family": best, "weights": "supernet" if best == "searched" and not mine else "parent", "why": why,
           "counts": options[best]["counts"], "precision": options[best].get("precision", "fp32")}
    if options[best].get("reducers"):
        out["reducers"] = options[best]["reducers"]
    for key_, g in (("evidence", ship), ("evidence_parent", own)):
        if g is not None:
            out[key_] = g
    return out


class _Paired:
    """A budget's options, the winner's-curse correction of each (``cut``), and the paired per-image test of one
    against another in ``metric`` (``evidence``)."""

    def __init__(self, options: dict, cut: dict, metric: str, evidence):
        self.options, self.cut, self.metric, self.evidence = options, cut, metric, evidence

    def challenge(self, challenger: str, name: str, holder: str, confidence: float,
                  otherwise: str) -> Tuple[bool, dict, str]:
        """(whether ``challenger`` beats ``holder`` beyond noise at ``confidence``, the test as recorded, a note for
        ``why``; ``name``: the challenger as the note calls it, ``otherwise``: what the note says ships if not)."""
        need = required_z(confidence)
        mean, se = self.evidence(challenger, self.options[challenger], holder, self.options[holder])
        lead = mean - self.cut[challenger] + self.cut[holder]
        z = lead / se if se > 0 else (math.inf if lead > 0 else 0.0)
        record = {"versus": holder, "metric": self.metric, "lead": lead, "se": se,
                  "z": z if math.isfinite(z) else None, "required_z": need, "confidence": confidence}
        by = f"{_fmt(lead, self.metric)} {self.metric}"
        if z > need:
            return True, record, f"; {name} leads {holder} by {by} (z = {_z(z)} > {need:.2f}, paired per image)"
        return False, record, (f"; {name} leads {holder} by {by}, within noise (z = {_z(z)}, {need:.2f} needed at "
                               f"{confidence:.0%}): {otherwise}")


def _searched_on_parent(family: str) -> bool:
    """Whether an option of ``free`` is the schedule searched on your model's weights (at some precision)."""
    return family.split("@")[0] == FAMILY


def _fmt(lead: float, metric: str) -> str:
    return f"{100 * lead:+.2f} points of" if metric == "accuracy" else f"{lead:+.4f}"


def _z(z: float) -> str:
    return f"{z:.2f}" if math.isfinite(z) else "inf"
