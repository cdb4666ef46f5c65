"""The space of token schedules a supernet is trained for and searched over.

TAVT's space: after every block, a drop ratio in ``[0, bound]`` (bound 0.2) of
the tokens entering it, rounded up; its smallest member drops ``bound`` at every
block. Lengths follow TAVT's rule on the whole sequence, prefix tokens
included — ``l_i = ceil(l_{i-1} * (1 - r_i))`` — so that for ViT-B/16 at 448
the smallest member is exactly TAVT's (628, 503, ..., 56) with the class token.
The space is stored in a supernet checkpoint's spec (``spec["search_space"]``).

A space distilled with several reducers (``fgvc-kit distill --reducers
drop,merge``) also chooses, per reducing block, how the tokens are removed:
dropped (top-k by the scorer) or merged (ToMe's bipartite matching; a block
merging more than half of its tokens runs several rounds, so ``bound`` above
0.5 reaches past ToMe's one halving per block). Its members carry per-block
``reducers``; a space with one reducer leaves them to the model.

A space with ``multiple`` > 1 (``fgvc-kit search --token-multiple 8``) holds
only the members whose every reducing block leaves a sequence (patch and prefix
tokens) that is a multiple of it: runtimes tile the sequence axis, and such
lengths run a few percent faster per MAC than their neighbours
(``docs/benchmarks/token_alignment.md``). A supernet distilled on the whole
space covers them; only the search restricts itself.
"""
from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from ..errors import ConfigError
from .schedule import REDUCER_NAMES, TokenSchedule, aligned_below, ceil_count

SPACE_FORMAT = "fgvc-kit/search-space"


@dataclass(frozen=True)
class SearchSpace:
    """Which blocks may drop, how much, and the floor.

    Args:
        depth: number of blocks.
        num_patches: patch tokens entering the first block.
        bounds: per block, the largest drop ratio of the tokens entering it
            (0 = the block never drops).
        min_tokens: smallest patch-token count at any block.
        num_prefix: prefix tokens counted in TAVT's length rule (class token: 1).
        scorer: the scorer the supernet is trained with.
    """

    depth: int
    num_patches: int
    bounds: Tuple[float, ...]
    min_tokens: int = 1
    num_prefix: int = 1
    scorer: str = "tavt"
    #: the reducers a reducing block may use (one: the model's; several: chosen per block by the search)
    reducers: Tuple[str, ...] = ("drop",)
    #: sequence lengths a reducing block may leave are multiples of this (1: any)
    multiple: int = 1
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        bounds = tuple(float(b) for b in self.bounds)
        if len(bounds) != self.depth:
            raise ConfigError(f"search space: {len(bounds)} drop bounds for {self.depth} blocks")
        for i, b in enumerate(bounds):
            if not 0.0 <= b < 1.0:
                raise ConfigError(f"search space: drop bound of block {i} must be in [0, 1), got {b}")
        if not 1 <= self.min_tokens <= self.num_patches:
            raise ConfigError(f"search space: min_tokens must be in [1, {self.num_patches}], got {self.min_tokens}")
        object.__setattr__(self, "bounds", bounds)
        reducers = tuple(self.reducers) if not isinstance(self.reducers, str) else (self.reducers,)
        if not reducers or len(set(reducers)) != len(reducers) or any(r not in REDUCER_NAMES for r in reducers):
            raise ConfigError(f"reducers: expected distinct names among {', '.join(REDUCER_NAMES)}, got "
                              f"{','.join(map(str, reducers)) or 'none'}")
        object.__setattr__(self, "reducers", reducers)
        object.__setattr__(self, "multiple", check_multiple(self.multiple))

    @property
    def mixed(self) -> bool:
        """Whether the search also chooses each block's reducer."""
        return len(self.reducers) > 1

    @property
    def explicit(self) -> bool:
        """Whether members name their reducers (any space that merges: its schedules say so themselves)."""
        return self.reducers != ("drop",)

    def with_reducers(self, schedule: TokenSchedule, choose) -> TokenSchedule:
        """``schedule`` with the reducer of each reducing block from ``choose(block)`` (spaces that merge)."""
        if not self.explicit:
            return schedule
        out, prev = [], self.num_patches
        for i, c in enumerate(schedule.counts):
            out.append(choose(i) if c < prev else None)
            prev = c
        return schedule.with_reducers(out if any(out) else None)

    @classmethod
    def tavt(cls, depth: int, num_patches: int, bound: float = 0.2, drop_blocks: Optional[Sequence[int]] = None,
             min_tokens: int = 1, num_prefix: int = 1, scorer: str = "tavt",
             reducers: Sequence[str] = ("drop",)) -> "SearchSpace":
        """TAVT's space: drop ratio in [0, ``bound``] after each block in ``drop_blocks`` (default all)."""
        blocks = range(depth) if drop_blocks is None else drop_blocks
        for b in blocks:
            if not 0 <= b < depth:
                raise ConfigError(f"search space: drop block {b} is outside 0..{depth - 1}")
        bounds = tuple(bound if i in set(blocks) else 0.0 for i in range(depth))
        return cls(depth, num_patches, bounds, min_tokens, num_prefix, scorer, tuple(reducers))

    @classmethod
    def for_model(cls, model, bound: float = 0.2, drop_blocks: Optional[Sequence[int]] = None,
                  min_tokens: int = 1, reducers: Optional[Sequence[str]] = None) -> "SearchSpace":
        return cls.tavt(model.depth, model.num_patches, bound, drop_blocks, min_tokens, prefix_tokens(model),
                        getattr(model, "scorer", "tavt"),
                        tuple(reducers) if reducers else (getattr(model, "reducer", "drop"),))

    # ----------------------------------------------------------------- members
    def from_drop_ratios(self, ratios: Sequence[float]) -> TokenSchedule:
        """The schedule that drops ``ratios[i]`` of the tokens entering block i (TAVT's rounding)."""
        counts, length = [], self.num_patches + self.num_prefix
        for r in ratios:
            length = ceil_count(length * (1.0 - r))
            n = max(self.min_tokens, min(self.num_patches, length - self.num_prefix))
            if counts:
                n = min(n, counts[-1])
            if self.multiple > 1:  # aligned: the next block's drop is of the length this one leaves
                n = self.snap(len(counts), counts[-1] if counts else self.num_patches, n)
                length = n + self.num_prefix
            counts.append(n)
        return TokenSchedule(tuple(counts), self.num_patches, self.min_tokens)

    def full(self) -> TokenSchedule:
        return TokenSchedule.full(self.depth, self.num_patches, self.min_tokens)

    def smallest(self, reducer: Optional[str] = None) -> TokenSchedule:
        """The member with the fewest tokens (with ``reducer`` at every reducing block of a mixed space)."""
        s = self.from_drop_ratios(self.bounds)
        return self.with_reducers(s, lambda i: reducer or self.reducers[0])

    def sample(self, rng: random.Random) -> TokenSchedule:
        """A random member: drop ratio of each block uniform in [0, bound] (TAVT); in a mixed space each
        reducing block's reducer uniform among the space's."""
        s = self.from_drop_ratios([rng.uniform(0.0, b) if b > 0 else 0.0 for b in self.bounds])
        return self.with_reducers(s, lambda i: rng.choice(self.reducers))

    def count_range(self, block: int, prev: int) -> Tuple[int, int]:
        """Allowed counts at ``block`` given ``prev`` patch tokens entering it: (lowest, highest)."""
        length = prev + self.num_prefix
        low = max(self.min_tokens, ceil_count(length * (1.0 - self.bounds[block])) - self.num_prefix)
        return min(low, prev), prev

    def snap(self, block: int, prev: int, count: float) -> int:
        """The count allowed at ``block`` (``prev`` patch tokens entering it) nearest ``count``: within
        :meth:`count_range`, and in a space with :attr:`multiple` > 1 either ``prev`` (no reduction) or one whose
        sequence length is a multiple (ties go to the larger count: fewer tokens lost)."""
        low, high = self.count_range(block, prev)
        c = int(min(high, max(low, round(count))))
        if self.multiple == 1 or c == prev:
            return c
        down = aligned_below(c, self.multiple, self.num_prefix)
        options = [v for v in (down, down + self.multiple) if low <= v < prev] + [prev]
        return min(options, key=lambda v: (abs(v - count), -v))

    def aligned(self, multiple: int) -> "SearchSpace":
        """This space with reducing blocks leaving sequence lengths that are multiples of ``multiple``."""
        return dataclasses.replace(self, multiple=check_multiple(multiple))

    def contains(self, schedule: TokenSchedule) -> bool:
        if schedule.depth != self.depth or schedule.num_patches != self.num_patches:
            return False
        prev = self.num_patches
        reducers = schedule.reducers or (None,) * self.depth
        for i, c in enumerate(schedule.counts):
            low, high = self.count_range(i, prev)
            if not low <= c <= high or (c < prev and (c + self.num_prefix) % self.multiple):
                return False
            r = reducers[i]
            if c < prev and r is not None and r not in self.reducers:
                return False
            prev = c
        return True

    # -------------------------------------------------------------------- JSON
    def to_dict(self) -> Dict[str, Any]:
        return {"format": SPACE_FORMAT, "depth": self.depth, "num_patches": self.num_patches,
                "bounds": list(self.bounds), "min_tokens": self.min_tokens, "num_prefix": self.num_prefix,
                "scorer": self.scorer, **({"reducers": list(self.reducers)} if self.reducers != ("drop",) else {}),
                **({"multiple": self.multiple} if self.multiple != 1 else {})}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SearchSpace":
        try:
            return cls(int(d["depth"]), int(d["num_patches"]), tuple(d["bounds"]), int(d.get("min_tokens", 1)),
                       int(d.get("num_prefix", 1)), str(d.get("scorer", "tavt")),
                       tuple(d.get("reducers") or ("drop",)), int(d.get("multiple", 1)))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"search space: malformed entry ({e})") from None


def prefix_tokens(model) -> int:
    """The prefix tokens TAVT's length rule counts in ``model``'s sequence (its class token; 0 without one)."""
    return int(getattr(model, "num_prefix_tokens", 0)) if getattr(model, "cls_token", None) is not None else 0


def check_multiple(multiple) -> int:
    """``multiple`` (sequence lengths a reducing block may leave are multiples of it) as an int >= 1; a ConfigError
    naming it otherwise."""
    ok = not isinstance(multiple, bool) and isinstance(multiple, int) and 1 <= multiple <= 256
    if not ok:
        raise ConfigError(f"token_multiple={multiple!r}: expected a whole number of tokens in [1, 256] that the "
                          "sequence length a reducing block leaves is a multiple of (e.g. 8; 1: any)")
    return multiple
