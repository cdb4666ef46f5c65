"""Token schedules: how many patch tokens leave each block.

A schedule for a backbone of depth L is a tuple of L integers, the number of
*patch* tokens that leave each block. Prefix tokens (class, register,
distillation) are always kept and never counted. Counts never increase and
never fall below ``min_tokens``. The schedule equal to the full grid at every
block is the unpruned model.

A schedule may also name, per block, how a reducing block removes tokens
(``reducers``: ``"drop"``, ``"merge"`` or None = the model's ``reducer``).
A drop config that carries reducers is format version 2 (see
:meth:`TokenSchedule.to_dict`); one without stays version 1, as before.

TAVT's own "length configuration" counts the class token too: its length ``l``
is ``l - 1`` patch tokens here (:meth:`TokenSchedule.from_tavt_lengths`).
"""
from __future__ import annotations

import json
import math
import numbers
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence, Union

from ..errors import ScheduleError
from ..files import write_text

SCHEDULE_FORMAT = "fgvc-kit/token-schedule"
#: drop-config versions this reader knows: 1 (counts), 2 (counts + per-block reducers)
SCHEDULE_VERSION = 2
#: per-block reducer names a schedule may carry (None = the model's reducer)
REDUCER_NAMES = ("drop", "merge")


def ceil_count(x: float) -> int:
    """A token count rounded up: the one rounding of every schedule family.

    ``round(x, 9)`` first, so that binary noise (0.7 * 10 = 7.000000000000001,
    0.8 * 785 = 628.0000000000001) does not add a token.
    """
    return math.ceil(round(x, 9))


def aligned_below(count: int, multiple: int, num_prefix: int = 1) -> int:
    """The largest count at most ``count`` whose sequence length (count and ``num_prefix``) is a multiple of
    ``multiple`` (below 1 where there is none)."""
    return (count + num_prefix) // multiple * multiple - num_prefix


def _check_reducers(reducers: Any, depth: int) -> Optional[tuple]:
    if reducers is None:
        return None
    if isinstance(reducers, (str, bytes)) or not isinstance(reducers, Sequence):
        raise ScheduleError(f"reducers must be a sequence of {', '.join(REDUCER_NAMES)} or None per block, "
                            f"got {type(reducers).__name__}")
    if len(reducers) != depth:
        raise ScheduleError(f"reducers has {len(reducers)} entries, the schedule has {depth} blocks")
    for i, r in enumerate(reducers):
        if r is not None and r not in REDUCER_NAMES:
            raise ScheduleError(f"reducers[{i}] = {r!r} is not a reducer; expected one of "
                                f"{', '.join(REDUCER_NAMES)} or None")
    out = tuple(reducers)
    return None if all(r is None for r in out) else out


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ScheduleError(f"{what} must be an integer token count, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class TokenSchedule:
    """Per-block counts of kept patch tokens.

    Args:
        counts: patch tokens leaving each block (length = depth).
        num_patches: patch tokens entering the first block (the full grid).
        min_tokens: smallest count allowed at any block (default 1).
        reducers: optional reducer per block (``"drop"``, ``"merge"``, None = the model's
            ``reducer``; length = depth); all None is the same as none given.
    """

    counts: tuple
    num_patches: int
    min_tokens: int = 1
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    reducers: Optional[tuple] = None

    def __post_init__(self) -> None:
        num_patches = _as_int(self.num_patches, "num_patches")
        min_tokens = _as_int(self.min_tokens, "min_tokens")
        if num_patches < 1:
            raise ScheduleError(f"num_patches must be >= 1, got {num_patches}")
        if not 1 <= min_tokens <= num_patches:
            raise ScheduleError(f"min_tokens must be in [1, {num_patches}], got {min_tokens}")
        if isinstance(self.counts, (str, bytes)) or not isinstance(self.counts, Sequence):
            raise ScheduleError(f"a schedule must be a sequence of integers, got {type(self.counts).__name__}")
        counts = tuple(_as_int(c, f"schedule[{i}]") for i, c in enumerate(self.counts))
        if not counts:
            raise ScheduleError("a schedule needs one count per block, got an empty sequence")
        prev = num_patches
        for i, c in enumerate(counts):
            if c > num_patches:
                raise ScheduleError(
                    f"schedule[{i}] = {c} is above the grid of {num_patches} patch tokens")
            if c > prev:
                raise ScheduleError(
                    f"schedule[{i}] = {c} increases from schedule[{i - 1}] = {prev}; counts must never increase")
            if c < min_tokens:
                raise ScheduleError(f"schedule[{i}] = {c} is below the minimum of {min_tokens} tokens")
            prev = c
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "num_patches", num_patches)
        object.__setattr__(self, "min_tokens", min_tokens)
        object.__setattr__(self, "meta", dict(self.meta))
        object.__setattr__(self, "reducers", _check_reducers(self.reducers, len(counts)))

    # ------------------------------------------------------------------ builders
    @classmethod
    def full(cls, depth: int, num_patches: int, min_tokens: int = 1) -> "TokenSchedule":
        """The unpruned schedule: every block keeps the whole grid."""
        return cls((num_patches,) * _as_int(depth, "depth"), num_patches, min_tokens)

    @classmethod
    def from_ratios(
        cls,
        ratios: Union[Mapping[int, float], Sequence[float]],
        depth: int,
        num_patches: int,
        min_tokens: int = 1,
    ) -> "TokenSchedule":
        """Build from keep ratios.

        A ratio is the fraction of the tokens *entering* a block that it keeps
        (EViT's keep rate), so ``{3: 0.7, 6: 0.7, 9: 0.7}`` keeps 70 %, 49 % and
        34.3 % of the grid after blocks 3, 6 and 9 (0-based). A list gives one
        ratio per block. Counts are rounded up and clamped to ``min_tokens``.
        """
        depth = _as_int(depth, "depth")
        if isinstance(ratios, Mapping):
            per_block = [1.0] * depth
            for layer, r in ratios.items():
                layer = _as_int(layer, "ratio layer index")
                if not 0 <= layer < depth:
                    raise ScheduleError(f"keep-ratio layer {layer} is outside blocks 0..{depth - 1}")
                per_block[layer] = r
        else:
            per_block = list(ratios)
            if len(per_block) != depth:
                raise ScheduleError(f"got {len(per_block)} keep ratios, expected one per block ({depth})")
        counts, n = [], num_patches
        for i, r in enumerate(per_block):
            if isinstance(r, bool) or not isinstance(r, numbers.Real) or not 0.0 < float(r) <= 1.0:
                raise ScheduleError(f"keep ratio of block {i} must be a number in (0, 1], got {r!r}")
            n = max(min_tokens, min(n, ceil_count(n * float(r))))
            counts.append(n)
        return cls(tuple(counts), num_patches, min_tokens)

    @classmethod
    def from_tavt_lengths(cls, lengths: Sequence[int], num_patches: int, min_tokens: int = 1) -> "TokenSchedule":
        """Build from a TAVT length configuration (lengths count the class token)."""
        counts = [_as_int(v, f"length[{i}]") - 1 for i, v in enumerate(lengths)]
        return cls(tuple(counts), num_patches, min_tokens)

    def to_tavt_lengths(self) -> tuple:
        return tuple(c + 1 for c in self.counts)

    # ---------------------------------------------------------------- properties
    @property
    def depth(self) -> int:
        return len(self.counts)

    @property
    def is_full(self) -> bool:
        return all(c == self.num_patches for c in self.counts)

    def keep_ratios(self) -> tuple:
        """Fraction of the incoming tokens each block keeps."""
        out, prev = [], self.num_patches
        for c in self.counts:
            out.append(c / prev)
            prev = c
        return tuple(out)

    def __len__(self) -> int:
        return len(self.counts)

    def __iter__(self):
        return iter(self.counts)

    def __getitem__(self, i):
        return self.counts[i]

    def __str__(self) -> str:
        if self.reducers:
            return f"TokenSchedule({list(self.counts)} of {self.num_patches}, reducers {list(self.reducers)})"
        return f"TokenSchedule({list(self.counts)} of {self.num_patches})"

    def with_reducers(self, reducers: Optional[Sequence[Optional[str]]]) -> "TokenSchedule":
        """The same counts with per-block ``reducers`` (None: the model's reducer everywhere)."""
        return TokenSchedule(self.counts, self.num_patches, self.min_tokens, meta=self.meta, reducers=reducers)

    def aligned_down(self, multiple: int, num_prefix: int = 1) -> "TokenSchedule":
        """Each reducing block's count moved down to the nearest whose sequence length (count and ``num_prefix``)
        is a multiple of ``multiple`` (fewer MACs, never more); below the lowest such length, that length where
        the block still reduces, else every token entering it kept. Runtimes tile the sequence: such lengths run
        faster per MAC (``docs/benchmarks/token_alignment.md``)."""
        out, reducers, prev = [], [], self.num_patches
        for i, c in enumerate(self.counts):
            c = min(c, prev)  # a block after one moved down keeps no more than it was left
            if c < prev:
                c = max(aligned_below(c, multiple, num_prefix), min(multiple - num_prefix, prev))
                c = c if c >= self.min_tokens else prev
            reducers.append(self.reducers[i] if self.reducers and c < prev else None)
            out.append(c)
            prev = c
        return TokenSchedule(tuple(out), self.num_patches, self.min_tokens, meta=self.meta,
                             reducers=reducers if any(reducers) else None)

    # ---------------------------------------------------------------- validation
    def check_fits(self, depth: int, num_patches: int) -> "TokenSchedule":
        """Raise :class:`ScheduleError` unless this schedule fits a model."""
        if self.depth != depth:
            raise ScheduleError(f"schedule has {self.depth} counts, the model has {depth} blocks")
        if self.num_patches != num_patches:
            raise ScheduleError(
                f"schedule is for a grid of {self.num_patches} patch tokens, the model has {num_patches}")
        return self

    @classmethod
    def coerce(cls, value: Any, depth: int, num_patches: int, min_tokens: int = 1) -> "TokenSchedule":
        """Turn a schedule, a sequence of counts, or a path/dict of a drop config into a schedule."""
        if isinstance(value, TokenSchedule):
            return value.check_fits(depth, num_patches)
        if isinstance(value, (str, os.PathLike)):
            return cls.load(value).check_fits(depth, num_patches)
        if isinstance(value, Mapping):
            return cls.from_dict(value).check_fits(depth, num_patches)
        if hasattr(value, "tolist"):  # numpy array / tensor
            value = value.tolist()
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ScheduleError(
                f"drop must be a TokenSchedule or a sequence of {depth} integers, got {type(value).__name__}")
        if len(value) != depth:
            raise ScheduleError(f"schedule has {len(value)} counts, the model has {depth} blocks")
        return cls(tuple(value), num_patches, min_tokens)

    # ---------------------------------------------------------------------- JSON
    def to_dict(self) -> dict:
        """The drop config as JSON data.

        Without reducers: version 1, exactly the layout readers before reducers existed read.
        With reducers: ``"version": 2`` and ``"reducers"``; because version-1 readers ignored
        unknown keys and never checked a version, ``min_tokens`` is then written as an object
        (``{"value": n, "requires": ...}``), which a version-1 reader refuses with a message
        that names the reason instead of silently dropping the reducers.
        """
        d = {
            "format": SCHEDULE_FORMAT,
            "counts": list(self.counts),
            "num_patches": self.num_patches,
            "min_tokens": self.min_tokens,
            "keep_ratios": [round(r, 6) for r in self.keep_ratios()],
        }
        if self.reducers:
            d["version"] = 2
            d["reducers"] = list(self.reducers)
            d["min_tokens"] = {"value": self.min_tokens,
                               "requires": "drop config version 2 (per-block reducers drop/merge): read it with "
                                           "an fgvc-kit that knows token merging"}
        if self.meta:
            d["model"] = dict(self.meta)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "drop config") -> "TokenSchedule":
        if not isinstance(d, Mapping):
            raise ScheduleError(f"{source}: expected a JSON object, got {type(d).__name__}")
        if "schedule" in d and "counts" not in d:  # a file that wraps a schedule (search results)
            d = d["schedule"]
            if not isinstance(d, Mapping):
                raise ScheduleError(f"{source}: field 'schedule' must be an object")
        for key in ("counts", "num_patches"):
            if key not in d:
                raise ScheduleError(f"{source}: missing field '{key}'")
        version = d.get("version", 1)
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= SCHEDULE_VERSION:
            raise ScheduleError(f"{source}: drop config version {version!r} is not known to this fgvc-kit (it reads "
                                f"versions 1..{SCHEDULE_VERSION}); update fgvc-kit")
        min_tokens = d.get("min_tokens", 1)
        if version >= 2 and isinstance(min_tokens, Mapping):
            min_tokens = min_tokens.get("value", 1)
        if version < 2 and "reducers" in d:
            raise ScheduleError(f"{source}: field 'reducers' needs \"version\": 2")
        reducers = d.get("reducers")
        try:
            return cls(tuple(d["counts"]) if isinstance(d["counts"], list) else d["counts"],
                       d["num_patches"], min_tokens, meta=d.get("model") or {}, reducers=reducers)
        except ScheduleError as e:
            raise ScheduleError(f"{source}: {e}") from None

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)

    @classmethod
    def from_json(cls, text: str, source: str = "drop config") -> "TokenSchedule":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ScheduleError(f"{source}: not valid JSON ({e.msg} at line {e.lineno})") from None
        return cls.from_dict(d, source)

    def save(self, path: Union[str, os.PathLike], model_info: Optional[Mapping[str, Any]] = None) -> None:
        """Write a drop config; ``model_info`` records which model it belongs to."""
        sched = self if model_info is None else TokenSchedule(self.counts, self.num_patches, self.min_tokens,
                                                            meta=model_info, reducers=self.reducers)
        write_text(path, sched.to_json(indent=2) + "\n")

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "TokenSchedule":
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise ScheduleError(f"{path}: cannot read drop config ({e.strerror})") from None
        except UnicodeDecodeError:
            raise ScheduleError(f"{path}: not a drop config (not UTF-8 text); expected the JSON fgvc-kit search "
                                "or TokenSchedule.save writes") from None
        return cls.from_json(text, source=str(path))
