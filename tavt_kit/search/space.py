"""The search space a search runs in: the one the checkpoint was distilled for, and the reducers its blocks use.

Merging needs no training (ToMe), so a supernet distilled to drop also searches a per-block choice of drop or
merge where the model can merge and the latency objective can price it (:func:`default_reducers`).
"""
from __future__ import annotations

from typing import Callable, Dict

from torch import nn

from ..errors import ConfigError, TavtKitError
from ..schedules.families import tome_schedule
from ..schedules.space import SearchSpace
from .objective import LatencyObjective


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
                     log: Callable[[str], None] = print) -> tuple:
    """The reducers a search gives its blocks when none are asked for: the supernet's, and merging too where
    the supernet drops and the model can merge (a timm ViT without EViT's fuse).

    Merging needs no training (ToMe): on a supernet distilled to drop, a per-block choice of drop or merge
    reaches accuracy that neither reaches alone at 2.5x fewer MACs and beyond (benchmarks/reference_benchmark.py).
    A latency objective that cannot price a merging block (a table profiled for drop only) keeps the search
    to dropping, said in the log; ``reducers=("drop",)`` is TAVT's space.
    """
    from ..models.token_drop import TokenDropMixin

    own = tuple(space.reducers)
    if own != ("drop",) or not isinstance(model, TokenDropMixin) or getattr(model, "fuse", False):
        return own
    probe = tome_schedule(1, space.depth, space.num_patches, space.min_tokens)
    for precision, objective in objectives.items():
        try:
            objective(probe)
        except TavtKitError as e:
            log(f"note: the search drops tokens only, the {precision} latency objective cannot price merging "
                f"blocks: {e}")
            return own
    return ("drop", "merge")


def _check_reducers(model, reducers) -> tuple:
    """``reducers`` as a tuple of drop/merge; merging needs a timm ViT without EViT's fuse."""
    from ..models.token_drop import TokenDropMixin

    names = tuple(dict.fromkeys(str(r).strip() for r in ([reducers] if isinstance(reducers, str) else reducers)))
    if not names or any(r not in ("drop", "merge") for r in names):
        raise ConfigError(f"reducers={reducers!r}: expected drop, merge or both")
    if "merge" in names and (not isinstance(model, TokenDropMixin) or getattr(model, "fuse", False)):
        raise ConfigError(f"reducers={','.join(names)}: this model ({type(model).__name__}"
                          f"{', fusing dropped tokens' if getattr(model, 'fuse', False) else ''}) cannot merge "
                          "tokens; merge works for timm ViTs without EViT's fuse")
    return names
