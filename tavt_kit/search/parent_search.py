"""Schedules searched on your model's own weights: what needs no training, beyond ToMe's constant r.

ToMe with a constant r is one member of a larger space that needs no training either: how many tokens each block
merges. :class:`ParentSearch` runs the search's own evolution on the parent's weights in that space -- the
supernet's per-block bounds (so it reaches as deep as the supernet), merging as every block's reducer (dropping
tokens costs accuracy that the supernet's distillation bought back; merging them does not need it) -- on the same
held-out images, with the same fitness, settings, latency objective and target checks as the supernet's search.
Its candidates are journalled in :data:`PARENT_JOURNAL` beside the search's own (a killed search resumes without
evaluating them again; a search that reuses earlier ones takes theirs, :mod:`~.reuse`) and corrected for the
winner's curse as the supernet's are (:mod:`~.shrinkage`).

Each budget's fittest candidate joins the budget's training-free deployables as ``searched_parent``
(:class:`~.parent.ParentStage`); at each precision searched, the fittest whose latency at that precision meets
the budget. It then competes for the recommendation with the supernet's pick, ToMe on your model and your model.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Optional

from torch import nn

from ..schedules.space import SearchSpace
from .data import shard
from .evaluate import CandidateEvaluator
from .evolution import Budget, Candidate, EvolutionSearch, Journal
from .reuse import Reused, journal_file
from .space import can_merge

#: the journal of the evolution on your model's weights, beside the search's own
PARENT_JOURNAL = "parent.journal.jsonl"
#: the family name of its picks among a budget's training-free deployables
FAMILY = "searched_parent"


def merge_space(space: SearchSpace, model: nn.Module) -> Optional[SearchSpace]:
    """``space`` with merging as every block's reducer; None where the model cannot merge (EViT's fuse, not a
    token-reducing timm ViT) or the space reduces nowhere."""
    if not can_merge(model) or not any(space.bounds):
        return None
    return dataclasses.replace(space, reducers=("merge",))


class ParentSearch:
    """The evolution on the parent's weights for a :class:`~.context.SearchContext` (see the module docstring)."""

    def __init__(self, ctx, parent: nn.Module, space: SearchSpace):
        self.ctx, self.parent, self.space = ctx, parent, space
        self.search: Optional[EvolutionSearch] = None

    def run(self) -> EvolutionSearch:
        from ..models.checkpoint import weights_digest

        ctx = self.ctx
        shared = next((i for i, b in enumerate(self.space.bounds) if b > 0), self.space.depth)
        evaluator = CandidateEvaluator(self.parent, shard(ctx.holdout).images, shard(ctx.holdout).labels,
                                       ctx.batch_size, transform=ctx.transform, shared_blocks=shared,
                                       device=ctx.device)
        settings = ctx.journal_settings(self.space, weights_digest(self.parent))
        journal = Journal(os.path.join(ctx.out_dir, PARENT_JOURNAL) if ctx.rank == 0 else None,
                          {"format": "fgvc-kit/search-journal", "settings": settings})
        metrics = lambda s: ctx.metrics(s, evaluator)  # noqa: E731
        # the searches named by reuse= evaluated your model's candidates too: taken, not evaluated again
        earlier = [p for p in (os.path.join(os.path.dirname(journal_file(r)), PARENT_JOURNAL)
                               for r in ctx.reuse_paths) if os.path.isfile(p)]
        reused = Reused(earlier, settings) if earlier else None
        if reused is not None:
            metrics = reused.wrap("fp32", metrics)
        self.search = EvolutionSearch(self.space, metrics, ctx.macs, ctx.settings, ctx.latency, ctx.budgets,
                                      journal, ctx.log, fitness=ctx.fitness)
        self.search.run()
        if reused is not None:
            ctx.log("on your model's weights: " + reused.line())
        if ctx.ship.shrinkage:
            self.search.shrink()
        return self.search

    def pick(self, budget: Budget, precision: str = "fp32") -> Optional[Candidate]:
        """The fittest candidate (corrected fitness) whose cost at ``precision`` meets ``budget``; under a latency
        budget predicted by a table that can be checked, the fittest that also meets it timed on the target (as
        the supernet's pick, :class:`~.timed.TargetCheck`)."""
        if self.search is None:
            return None
        ctx = self.ctx
        if budget.objective == "macs":
            return self.search.best_within(budget)
        cost = ctx.objectives[precision]  # cached per schedule: fp32's are the evolution's own predictions
        priced = [(c, float(cost(ctx.schedule(c.gene)))) for c in self.search.evaluated.values()]
        ranked = sorted((x for x in priced if x[1] <= budget.limit), key=lambda x: (x[0].score, x[1], x[0].gene),
                        reverse=True)
        check = ctx.target_check.within(budget.limit, [], budget.fraction)
        return next((c for c, t in ranked if check is None or check(c.gene, precision, t)), None)

    @staticmethod
    def fields(c: Candidate) -> dict:
        """What a pick brings to the recommendation beyond its held-out figures: its fitness as measured and
        corrected for the winner's curse (it was selected on these images, as the supernet's pick was)."""
        out = {"origin": FAMILY, "generation": c.generation}
        if c.measured_fitness is not None:
            out.update(fitness_measured=c.measured_fitness, fitness_shrunk=c.score)
        return out
