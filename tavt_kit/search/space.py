"""The search space a search runs in: the one the checkpoint was distilled for, and the reducers its blocks use.

Merging needs no training (ToMe), so a supernet distilled to drop also searches a per-block choice of drop or
merge where the model can merge and the latency objective can price it (:func:`default_reducers`).
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

from torch import nn

from ..errors import ConfigError, TavtKitError
from ..schedules.families import tome_schedule
from ..schedules.space import SearchSpace
from .objective import LatencyObjective


#: the per-block bound of the space searched on your trained model, which records none: at most half of a block's
#: tokens merged, one bipartite round per block -- ToMe's own reach (any constant r is a member)
OWN_MODEL_BOUND = 0.5


def own_model_space(model: nn.Module, bound: Optional[float] = None, log: Callable[[str], None] = print
                    ) -> SearchSpace:
    """The space searched on your trained model (no distillation, no recorded space): every block reduces up to
    ``bound`` of its tokens (default :data:`OWN_MODEL_BOUND`; above 0.5 a block merges in several bipartite rounds)
    by merging, which needs no training. A model that cannot merge (EViT's fuse, a backbone without merging)
    drops instead, said in the log: dropping without the distillation that teaches the model to drop costs
    accuracy (``fgvc-kit distill``)."""
    bound = OWN_MODEL_BOUND if bound is None else check_bound(bound)
    merges = can_merge(model)
    if not merges:
        log(f"note: this model ({type(model).__name__}) cannot merge tokens; the search drops them, which without "
            "distillation costs accuracy (fgvc-kit distill trains a supernet that drops well)")
    return SearchSpace.for_model(model, bound=bound, reducers=("merge",) if merges else ("drop",))


def can_merge(model: nn.Module) -> bool:
    """Whether the model merges tokens: a patched timm ViT without EViT's fuse."""
    from ..models.token_drop import TokenDropMixin

    return isinstance(model, TokenDropMixin) and not getattr(model, "fuse", False)


def searched_space(model: nn.Module, bound: Optional[float] = None, own: Optional[bool] = None,
                   log: Callable[[str], None] = print, token_multiple: int = 1) -> SearchSpace:
    """The space :func:`~tavt_kit.search.search_schedules` searches ``model`` in: :func:`base_space`, with only the
    members whose reducing blocks leave sequence lengths that are multiples of ``token_multiple`` where it is
    above 1 (:meth:`SearchSpace.aligned`, said in the log)."""
    space = base_space(model, bound, own, log).aligned(token_multiple)
    if space.multiple > 1:
        log(f"search: only schedules whose reducing blocks leave sequence lengths (tokens and class token) that are "
            f"multiples of {space.multiple}; the smallest: {list(space.smallest().counts)}")
    return space


def base_space(model: nn.Module, bound: Optional[float] = None, own: Optional[bool] = None,
               log: Callable[[str], None] = print) -> SearchSpace:
    """The space a search of ``model`` starts from: on your trained model (``own``;
    None: :func:`~tavt_kit.models.checkpoint.is_own_model`) :func:`own_model_space`; else the space the supernet
    was distilled for (:func:`space_of`), or TAVT's with ``bound`` for a model that records none. ``bound`` on a
    supernet is a ConfigError: its space is the one distillation trained."""
    from ..models.checkpoint import is_own_model

    if own is None:
        own = is_own_model(model)
    if own:
        return own_model_space(model, bound, log)
    if bound is None:
        return space_of(model)
    bound = check_bound(bound)
    if (getattr(model, "spec", None) or {}).get("search_space"):
        raise ConfigError(f"bound={bound!r}: a supernet is searched in the space it was distilled for (bounds "
                          f"{list(space_of(model).bounds)}); bound= sets the space of a model that records none")
    return SearchSpace.for_model(model, bound=bound)


def check_bound(bound) -> float:
    """``bound`` as a per-block reduction ratio in (0, 1); a ConfigError naming ``bound`` otherwise."""
    ok = not isinstance(bound, bool) and isinstance(bound, (int, float)) and 0 < bound < 1
    if not ok:
        raise ConfigError(f"bound={bound!r}: expected the most of a block's tokens it may reduce, a ratio in (0, 1)")
    return float(bound)


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


def default_reducers(model: nn.Module, space: SearchSpace, objectives: Dict[str, LatencyObjective],
                     log: Callable[[str], None] = print, own: bool = False) -> tuple:
    """The reducers a search gives its blocks when none are asked for: the supernet's, and merging too where
    the supernet drops and the model can merge (a timm ViT without EViT's fuse).

    Merging needs no training (ToMe): on a supernet distilled to drop, a per-block choice of drop or merge
    reaches accuracy that neither reaches alone at 2.5x fewer MACs and beyond (benchmarks/reference_benchmark.py).
    A latency objective that cannot price a merging block (a table profiled for drop only) keeps the search
    to dropping, said in the log; ``reducers=("drop",)`` is TAVT's space. ``own``: the search of your trained
    model (:func:`own_model_space`), which merges only.
    """
    mine = tuple(space.reducers)
    if own:  # your trained model (own_model_space): merging, unless a latency objective cannot price it
        return mine if "drop" in mine or can_price_merging(space, objectives, log) else ("drop",)
    if mine != ("drop",) or not can_merge(model):
        return mine
    return ("drop", "merge") if can_price_merging(space, objectives, log) else mine


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


def reducer_names(reducers, name: str = "reducers") -> tuple:
    """``reducers`` (a name or several) as a tuple of drop/merge, each once; a ConfigError naming ``name``
    otherwise."""
    names = tuple(dict.fromkeys(str(r).strip() for r in ([reducers] if isinstance(reducers, str) else
                                                         reducers if isinstance(reducers, (list, tuple)) else ())))
    if not names or any(r not in ("drop", "merge") for r in names):
        raise ConfigError(f"{name}={reducers!r}: expected drop, merge or both")
    return names


def _check_reducers(model, reducers) -> tuple:
    """``reducers`` as a tuple of drop/merge; merging needs a timm ViT without EViT's fuse."""
    names = reducer_names(reducers)
    if "merge" in names and not can_merge(model):
        raise ConfigError(f"reducers={','.join(names)}: this model ({type(model).__name__}"
                          f"{', fusing dropped tokens' if getattr(model, 'fuse', False) else ''}) cannot merge "
                          "tokens; merge works for timm ViTs without EViT's fuse")
    return names
