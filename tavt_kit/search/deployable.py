"""What ``export --search --budget`` deploys for a budget: the recommendation's weights, schedule and precision.

A budget of ``search.json`` recommends the supernet's pick (its weights), a deployable of your model (ToMe on it,
it as it is, a schedule searched on it: the parent checkpoint the supernet records), or the pick fine-tuned toward
your model (:mod:`~.finetune`: a checkpoint in the search's folder); :func:`deployable_from_search` loads the one
it names.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional

from ..errors import ConfigError
from ..schedules import TokenSchedule
from .result import FINETUNED, family_entry


def parent_recommendation(row: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """A budget's recommendation when what it ships is a deployable of your model (ToMe on it, or it as it is:
    your model's weights at the recommendation's schedule and precision); None when it ships the searched
    schedule on the supernet's weights."""
    rec = row.get("recommended") or {}
    return rec if rec.get("weights") == "parent" and rec.get("counts") else None


def parent_entry(row: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The entry (scores, schedule) of what a budget ships when it is a deployable of your model; None otherwise.
    A budget no searched schedule met may still ship one: ToMe on your model, say."""
    rec = parent_recommendation(row)
    entry = family_entry(row, rec["family"]) if rec else None
    return entry if entry and entry.get("counts") else None


def deployable_from_search(model, search, budget, pick: str = "recommended"):
    """What to export for ``budget`` of a search of ``model``: ``(model to export, schedule, source)``.

    ``search``: a :class:`~.outcome.SearchResult` or a ``search.json`` path. ``pick="recommended"`` exports what
    the budget ships (:attr:`~.outcome.BudgetResult.shipped`, the one rule): the supernet's pick on its weights,
    a deployable of your model (ToMe on it, it as it is, a schedule searched on it: the parent checkpoint the
    supernet records, its weights checked) or the pick fine-tuned toward your model (the checkpoint in the
    search's folder, its digest checked), at its schedule and precision. ``pick="searched"`` always takes the
    searched schedule on the supernet's weights.
    """
    from .outcome import SearchResult

    if pick not in ("recommended", "searched"):
        raise ConfigError(f"pick={pick!r}: expected recommended or searched")
    result = SearchResult.of(search, f"search={os.fspath(search)}" if isinstance(search, (str, os.PathLike)) else None)
    path = result.path or "search.json"
    result.check_finished()
    # a budget no searched schedule met may still ship a deployable of your model (ToMe on it)
    b = result.budget(budget, need_pick=pick == "searched")
    result.check_model(model)
    source = b.source(path)
    shipped = b.shipped if pick == "recommended" else None
    if shipped is None or shipped.family == "searched" and shipped.weights == "supernet":
        family = (b.recommended or {}).get("family") if pick == "recommended" else None
        return model, b.searched_schedule(model, path), {**source, **({"recommended": family} if family else {})}
    if shipped.weights == FINETUNED:
        return finetuned_deployable(b, shipped, source, os.path.dirname(os.path.abspath(path)))
    from ..models.checkpoint import load_parent

    # a search of your own model (no supernet) ran on the weights given, checked above
    parent = model if (result.doc.get("parent") or {}).get("searched_weights") else load_parent(model)
    p = shipped.pick
    schedule = parent.make_schedule(TokenSchedule(p.counts, parent.num_patches, reducers=p.reducers))
    source = {**source, "recommended": shipped.family, "weights": "parent",
              "parent": (result.doc.get("parent") or {}).get("path"), "why": b.why,
              "search_holdout_accuracy": p.holdout_accuracy, "search_test_accuracy": p.test_accuracy,
              "search_latency_ms": p.latency_ms}
    source.pop("schedule_file", None)  # the budget's drop config is the searched schedule, not this one
    source["precision"] = p.precision  # a training-free deployable's own precision
    return parent, schedule, {k: v for k, v in source.items() if v is not None}


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
           "precision": (budget.recommended or {}).get("precision", p.precision)}
    return model, sched, {k: v for k, v in out.items() if v is not None}


def shipped_checkpoint(source: Dict[str, Any], searched: Optional[str]) -> Optional[str]:
    """The checkpoint whose weights a budget ships (``source``: :func:`deployable_from_search`'s): your model's for a
    deployable of it, the fine-tuned one for a fine-tuned pick, else ``searched`` (the model searched)."""
    if source.get("weights") == "parent":
        return source.get("parent") or searched
    if source.get("weights") == "finetuned":
        return source.get("checkpoint") or searched
    return searched


def export_budget(model, search, budget, out_dir, formats=None, *, pick: str = "recommended", target=None,
                  verify=None, quantize=None, options=None, log=None):
    """Export what ``budget`` of a search ships, at the precision it ships at; the
    :class:`~tavt_kit.export.ExportResult`. One call from a search to a verified file.

    ``model``: the model searched (the supernet, loaded or its checkpoint); ``search``: a
    :class:`~.result.SearchResult` or a ``search.json`` path. What is exported is :func:`deployable_from_search`'s
    answer (``pick="searched"``: the searched schedule on the supernet's weights): the recommendation's weights
    (the parent checkpoint for a deployable of your model, the fine-tuned checkpoint for a fine-tuned pick) at its
    schedule; ``target``'s precision is the recommendation's unless ``target`` is given with another one.
    ``formats``, ``verify``, ``quantize``, ``options``, ``log``: as :func:`~tavt_kit.export.export_model`.
    """
    import dataclasses

    from ..export import ExportOptions, QuantizeOptions, VerifyOptions, export_model
    from ..models import load_checkpoint
    from ..models.token_drop import use_recorded_token_drop
    from ..target import DeploymentTarget
    from .outcome import SearchResult

    path = os.fspath(search) if isinstance(search, (str, os.PathLike)) else getattr(search, "path", None)
    if path is None or not os.path.isfile(path):
        raise ConfigError(f"search={path!r}: expected a search.json file or a SearchResult that was saved")
    result = SearchResult.of(search)
    checkpoint = os.fspath(model) if isinstance(model, (str, os.PathLike)) else None
    model = load_checkpoint(checkpoint).eval() if checkpoint is not None else model
    said = use_recorded_token_drop(model, result.token_drop, result.path)
    if said and log:
        log(said)
    shipped, schedule, source = deployable_from_search(model, result, budget, pick)
    checkpoint = shipped_checkpoint(source, checkpoint)
    precision = source.get("precision", "fp32")
    if target is None:  # the runtime the search's latency budgets were for, else ONNX Runtime
        backend = result.latency_backend or "onnxruntime"
        target = DeploymentTarget(backend=backend, precision=precision)
    elif target.precision == "fp32" and precision != "fp32":
        target = dataclasses.replace(target, precision=precision)
    options = options or ExportOptions()
    options = dataclasses.replace(options, checkpoint=options.checkpoint or checkpoint, schedule_source=source)
    return export_model(shipped, out_dir, schedule, formats, target=target, verify=verify or VerifyOptions(),
                        quantize=quantize or QuantizeOptions(), options=options, log=log)
