"""The weights a budget ships, beside the search's: your model's (ToMe on it, it as it is, a schedule searched on
it: the parent checkpoint the supernet records) or the pick fine-tuned toward your model (:mod:`~.finetune`: a
checkpoint in the search's folder, its digest checked). :func:`~.outcome.deployable_from_search` loads what a
budget ships with these."""
from __future__ import annotations

import os
from typing import Any, Dict, Optional

from ..schedules import TokenSchedule
from .result import FINETUNED


def finetuned_deployable(budget, shipped, source: Dict[str, Any], folder: str):
    """``(model, schedule, source)`` of a budget that ships its pick fine-tuned toward your model: the checkpoint
    the search wrote in its folder, its weights checked against the digest the search recorded."""
    from ..errors import CheckpointError
    from ..models import load_checkpoint
    from ..models.checkpoint import weights_digest

    path = os.path.join(folder, shipped.checkpoint or "")
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: the fine-tuned pick the search recommends for budget {budget.label} is "
                              "missing (the search folder was moved without it?)")
    model = load_checkpoint(path).eval()
    if shipped.weights_sha256 and weights_digest(model) != shipped.weights_sha256:
        raise CheckpointError(f"{path}: not the weights the search scored for budget {budget.label} (their digest "
                              "differs from search.json's finetuned.weights_sha256)")
    p = shipped.pick
    sched = model.make_schedule(TokenSchedule(p.counts, model.num_patches, reducers=p.reducers))
    out = {**source, "recommended": FINETUNED, "weights": FINETUNED, "checkpoint": path, "why": budget.why,
           "search_holdout_accuracy": p.holdout_accuracy, "search_test_accuracy": p.test_accuracy,
           "precision": budget.recommended.precision if budget.recommended is not None and
           budget.recommended.records("precision") else p.precision}
    return model, sched, {k: v for k, v in out.items() if v is not None}


def shipped_checkpoint(source: Dict[str, Any], searched: Optional[str]) -> Optional[str]:
    """The checkpoint whose weights a budget ships (``source``: :func:`deployable_from_search`'s): your model's for a
    deployable of it, the fine-tuned one for a fine-tuned pick, else ``searched`` (the model searched)."""
    if source.get("weights") == "parent":
        return source.get("parent") or searched
    if source.get("weights") == "finetuned":
        return source.get("checkpoint") or searched
    return searched
