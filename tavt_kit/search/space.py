"""The search space a search runs in: the one the checkpoint was distilled for, and the reducers its blocks use.

Merging needs no training (ToMe), so a supernet distilled to drop also searches a per-block choice of drop or
merge where the model can merge and the latency objective can price it (:func:`searched_space`, :func:`priced_space`).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Sequence

from torch import nn

from ..errors import ConfigError, TavtKitError, UnreachableBudgetError
from ..schedules.families import evit_schedule, tome_schedule, uniform_schedule
from ..schedules.space import SearchSpace
from .evolution import Budget
from .objective import LatencyObjective
from .settings import SpaceOptions


#: the per-block bound of the space searched on your trained model, which records none: at most half of a block's
#: tokens merged, one bipartite round per block -- ToMe's own reach (any constant r is a member)
OWN_MODEL_BOUND = 0.5


def searched_space(model: nn.Module, options: SpaceOptions, own: bool, budgets: Sequence[Budget] = (),
                   log: Callable[[str], None] = print) -> SearchSpace:
    """The space :func:`~tavt_kit.search.search_schedules` searches ``model`` in, with the reducers it wants, and every
    MAC budget checked against what it can reach (before any work).

    On your trained model (``own``) every block reduces up to ``options.bound`` of its tokens (default
    :data:`OWN_MODEL_BOUND`) by merging, which needs no training; a model that cannot merge (EViT's fuse, a backbone
    without merging) drops instead, said in the log (dropping without distillation costs accuracy). On a supernet:
    the space it was distilled for (:func:`space_of`; ``options.bound`` is then a ConfigError), or TAVT's with
    ``options.bound`` for a model that records none; merging is added to a supernet that drops where the model can
    merge (ToMe needs no training; :func:`priced_space` takes it back where a latency objective cannot price it).
    ``options.reducers`` given replace those (merge only where the model can). With ``options.token_multiple``
    above 1 only the members whose reducing blocks leave sequence lengths of that multiple (said in the log)."""
    merges, bound = can_merge(model), options.bound  # (SpaceOptions checked both of its own)
    recorded = (getattr(model, "spec", None) or {}).get("search_space")
    if own:
        if not merges:
            log(f"note: this model ({type(model).__name__}) cannot merge tokens; the search drops them, which without "
                "distillation costs accuracy (fgvc-kit distill trains a supernet that drops well)")
        space = SearchSpace.for_model(model, bound=OWN_MODEL_BOUND if bound is None else bound,
                                      reducers=("merge",) if merges else ("drop",))
    elif recorded and bound is not None:
        raise ConfigError(f"bound={bound!r}: a supernet is searched in the space it was distilled for (bounds "
                          f"{list(space_of(model).bounds)}); bound= sets the space of a model that records none")
    else:
        space = space_of(model) if bound is None else SearchSpace.for_model(model, bound=bound)
    space = space.aligned(options.token_multiple)
    if space.multiple > 1:
        log(f"search: only schedules whose reducing blocks leave sequence lengths (tokens and class token) that are "
            f"multiples of {space.multiple}; the smallest: {list(space.smallest().counts)}")
    if options.reducers is not None:
        reducers = options.reducers
        if "merge" in reducers and not merges:
            raise ConfigError(f"reducers={','.join(reducers)}: this model ({type(model).__name__}"
                              f"{', fusing dropped tokens' if getattr(model, 'fuse', False) else ''}) cannot merge "
                              "tokens; merge works for timm ViTs without EViT's fuse")
    elif not own and space.reducers == ("drop",) and merges:
        reducers = ("drop", "merge")
    else:
        reducers = tuple(space.reducers)
    space = dataclasses.replace(space, reducers=reducers)
    _check_reachable(model, space, budgets, merges)
    return space


def can_merge(model: nn.Module) -> bool:
    """Whether the model merges tokens: a patched timm ViT without EViT's fuse."""
    from ..models.token_drop import TokenDropMixin

    return isinstance(model, TokenDropMixin) and not getattr(model, "fuse", False)


def _check_reachable(model, space: SearchSpace, budgets: Sequence[Budget], merges: bool) -> None:
    """A MAC budget below every schedule a search can return for it refused in one line naming it
    (:class:`~tavt_kit.errors.UnreachableBudgetError`) with the MACs reachable: the space's schedules and the
    baselines fitted to a budget (uniform and EViT keep ratios down to 2 %, ToMe where the model merges), which a
    budget below the space still gets (the search warns)."""
    from ..models import count_macs

    low = None
    for b in budgets:
        if b.objective != "macs":
            continue
        if low is None:
            d, n, m = space.depth, space.num_patches, space.min_tokens
            floor = [space.smallest(), uniform_schedule(0.02, d, n, m), evit_schedule(0.02, d, n, m)]
            floor += [tome_schedule(max(1, n // 2), d, n, m)] if merges else []
            low = min(count_macs(model, s).total() for s in floor)
        if b.limit < low:
            high = count_macs(model, space.full()).total()
            reason = f"below every schedule the search can return; achievable: {low / 1e6:.4g}M to " \
                     f"{high / 1e6:.4g}M MACs"
            raise UnreachableBudgetError(f"budgets={b.label!r}: {reason}", b, reason)


def space_of(model: nn.Module) -> SearchSpace:
    """The search space the checkpoint was distilled for (its spec's ``search_space``), else the model's default."""
    d = (getattr(model, "spec", None) or {}).get("search_space")
    if d:
        space = SearchSpace.from_dict(d)
        if space.depth != model.depth or space.num_patches != model.num_patches:
            raise ConfigError(f"the checkpoint's search space ({space.depth} blocks, {space.num_patches} tokens) "
                              f"does not fit the model ({model.depth} blocks, {model.num_patches} tokens)")
        return space
    return SearchSpace.for_model(model)


def priced_space(space: SearchSpace, objectives: Dict[str, LatencyObjective],
                 log: Callable[[str], None] = print) -> SearchSpace:
    """``space`` without merging where a latency objective cannot price a merging block (a table profiled for drop
    only), said in the log; as it is otherwise. Merging needs no training (ToMe): on a supernet distilled to drop, a
    per-block choice of drop or merge reaches accuracy that neither reaches alone at 2.5x fewer MACs and beyond
    (benchmarks/reference_benchmark.py); ``reducers=("drop",)`` is TAVT's space."""
    if "merge" not in space.reducers or can_price_merging(space, objectives, log):
        return space
    return dataclasses.replace(space, reducers=("drop",))


def can_price_merging(space: SearchSpace, objectives: Dict[str, LatencyObjective],
                      log: Callable[[str], None] = print) -> bool:
    """Whether every latency objective prices a merging block (a table profiled for drop only does not: said)."""
    probe = tome_schedule(1, space.depth, space.num_patches, space.min_tokens)
    for precision, objective in objectives.items():
        try:
            objective(probe)
        except TavtKitError as e:
            log(f"note: the search drops tokens only, the {precision} latency objective cannot price merging "
                f"blocks: {e}")
            return False
    return True
