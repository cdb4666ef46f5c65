"""The checks of a search.json that look past one value: merges within the reach of the search's space, the MACs
of its schedules recounted on the model it records, and its lists never null.

:func:`~tavt_kit.search.result.validate_search` runs them after its field-by-field checks; each refusal is one
:class:`~tavt_kit.errors.ConfigError` line naming the file and the field, as the other checks say theirs.
"""
from __future__ import annotations

import json
import math
from typing import Any, Callable, Dict, List, Optional

from ..errors import ConfigError
from ..schedules.schedule import TokenSchedule
from ..validate import REDUCERS, Fields

#: the lists a search writes (empty, never null)
LISTS = ("candidates", "pareto_front", "budgets")


class MergeReach:
    """Every merging block of a search's schedules removes at most half of the patch tokens it receives (ToMe's
    one bipartite round; prefix tokens never merge), or no more than the search's space lets it (a space whose
    bound is above 0.5 merges in several rounds): no search writes another. ``floor(block, prev)``: the fewest
    tokens the space lets a block keep (None: the file records no space); ``default``: the reducer of a block whose
    entry names none."""

    def __init__(self, f: Fields, num_patches: Optional[int], floor: Optional[Callable[[int, int], int]],
                 default: str):
        self.f, self.n, self.floor, self.default = f, num_patches, floor, default

    def __call__(self, counts: List[int], reducers: Optional[list], field: str) -> None:
        prev = self.n
        for i, c in enumerate(counts):
            if prev is not None and c < prev:
                r = (reducers[i] if isinstance(reducers, list) and i < len(reducers) else None) or self.default
                low = self.floor(i, prev) if self.floor is not None else None
                if r == "merge" and prev - c > prev // 2 and (low is None or c < low):
                    reach = f"; this search's space keeps at least {low}" if low is not None else ""
                    self.f.fail(f"{field}.counts", counts,
                                f"a merge of at most half of the mergeable tokens of a block (block {i} merges "
                                f"{prev - c} of the {prev} patch tokens it receives, at most {prev // 2}{reach})")
            prev = c


def merge_reach(f: Fields, space: Dict[str, Any], depth: Optional[int], num_patches: Optional[int]) -> MergeReach:
    """The :class:`MergeReach` of a search.json's ``space`` (its fields checked on the way)."""
    from ..schedules.space import SearchSpace

    reducers = f.sequence(space.get("reducers"), "space.reducers") or ["drop"]
    for i, r in enumerate(reducers):
        f.choice(r, f"space.reducers[{i}]", REDUCERS, optional=False, what="a reducer")
    default = reducers[0] if len(reducers) == 1 else "drop"
    bounds = f.sequence(space.get("bounds"), "space.bounds", length=depth)
    if bounds is None or not num_patches:
        return MergeReach(f, num_patches, None, default)
    for i, b in enumerate(bounds):
        if f.number(b, f"space.bounds[{i}]", low=0.0, optional=False, expected="a per-block bound in [0, 1)") >= 1:
            f.fail(f"space.bounds[{i}]", b, "a per-block bound in [0, 1)")
    for key in ("min_tokens", "num_prefix", "multiple"):
        f.non_negative(space.get(key), f"space.{key}", integer=True)
    try:
        sp = SearchSpace.from_dict({**space, "depth": len(bounds), "num_patches": num_patches})
    except ConfigError as e:
        f.fail("space", space, f"the search space fgvc-kit search records ({e})")
    return MergeReach(f, num_patches, lambda block, prev: sp.count_range(block, prev)[0], default)


def check_whole(f: Fields, doc: Dict[str, Any]) -> None:
    """The lists of a search.json (each a list where present) and the MACs of its schedules (:func:`check_macs`)."""
    for key in LISTS:
        if key in doc:
            f.sequence(doc[key], key, optional=False)
    check_macs(f, doc)


def check_macs(f: Fields, doc: Dict[str, Any]) -> None:
    """The MACs a search.json gives its smallest schedule, its front and every schedule of its budgets, recounted
    (:func:`~tavt_kit.models.count_macs` on the model it records, built without weights): a schedule whose counts
    were changed keeps MACs that are not its own. Nothing is checked where this fgvc-kit cannot rebuild the model
    the file records, or counts other MACs for its full schedule (another head, a pruned width: not the model)."""
    full = doc.get("full")
    if not isinstance(full, dict) or full.get("macs") is None:
        return
    model = _mac_model(doc.get("model"))
    if model is None or _recount(model, full, full["macs"]) is not True:
        return
    entries = [("smallest", doc.get("smallest"))] + list(f.each(doc.get("pareto_front"), "pareto_front"))
    for field, row in f.each(doc.get("budgets"), "budgets"):
        entries += [(f"{field}.{k}", row.get(k)) for k in ("best", "best_fp32", "finetuned", "recommended")]
        for group in ("baselines", "training_free"):
            entries += [(f"{field}.{group}.{k}", p) for k, p in (row.get(group) or {}).items()]
    for field, d in entries:
        if isinstance(d, dict) and d.get("counts") is not None and d.get("macs") is not None:
            want = _recount(model, d, d["macs"])
            if want is not True and want is not None:
                f.fail(f"{field}.macs", d["macs"], f"{want}, the MACs of its schedule {list(d['counts'])} (recounted "
                       "on the model this search records; a schedule edited after the search?)")


def _recount(model, d: Dict[str, Any], macs) -> Any:
    """True where ``macs`` are the MACs of ``d``'s schedule on ``model``, else the recount (None: not countable)."""
    from ..models import count_macs

    try:
        sched = TokenSchedule(tuple(int(c) for c in d["counts"]), model.num_patches,
                              reducers=tuple(d["reducers"]) if d.get("reducers") else None)
        want = count_macs(model, model.make_schedule(sched)).total()
    except Exception:  # a schedule this model does not take: the schedule checks said what they could
        return None
    return True if math.isclose(float(macs), want, rel_tol=1e-6) else want


_MAC_MODELS: Dict[str, Any] = {}


def _mac_model(info: Any):
    """The model a search.json's ``model`` records (backbone, its arguments, scorer), built on the meta device (no
    weights, no memory) for counting MACs, once per model; None where it cannot be built."""
    if not isinstance(info, dict) or not isinstance(info.get("backbone"), dict):
        return None
    key = json.dumps([info.get("backbone"), info.get("token_drop")], sort_keys=True, default=str)
    if key not in _MAC_MODELS:
        _MAC_MODELS[key] = _build_mac_model(info)
    return _MAC_MODELS[key]


def _build_mac_model(info: Dict[str, Any]):
    import warnings

    import torch

    from ..models import create_model

    backbone, td = info["backbone"], info.get("token_drop") if isinstance(info.get("token_drop"), dict) else {}
    kwargs = backbone.get("kwargs") if isinstance(backbone.get("kwargs"), dict) else {}
    if not isinstance(backbone.get("name"), str):
        return None
    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")
            model = create_model(backbone["name"], **{k: v for k, v in kwargs.items() if k != "pretrained"})
        if td.get("scorer"):
            model.scorer = td["scorer"]
        if td.get("fuse") is not None:
            model.fuse = bool(td["fuse"])
        return model
    except Exception:  # a model this fgvc-kit cannot build (another version, a converted backbone): not checked
        return None
