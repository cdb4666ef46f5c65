"""The one search pipeline: evolution per precision, choice per budget, your model beside the picks, one result.

:func:`search_schedules` is the whole search a Python user (and ``fgvc-kit search``) runs. Precision is one
more dimension of the same search: the schedules of every precision are scored by one evaluator on one
held-out subset, their MACs counted once, their latencies cached in one :class:`LatencyObjective` each and
journalled in one journal; each budget's choice is made over every (schedule, precision) pair
(:mod:`~tavt_kit.search.pairs`), the test split is used once at the end, and ``search.json`` is
completed once at the end: until then it says ``"status": "running"`` (from the start, and with the figures
of the stages done before the slow ones: the parent's and the precisions'), so a search stopped on the way
never leaves a file that reads as its result. Fitness is measured on the held-out split (accuracy, NLL or KL to
the full model); every accuracy comes with its 95 % Wilson interval, each baseline with its paired difference to
the searched pick on the same test images (``vs_searched``). The fp32 evolution's document is
:mod:`~.document`'s, the writing of ``search.json`` :mod:`~.writer`'s.

Two halves: :func:`search_schedules` resolves what the search runs on (the model, the space, the latency
objectives, the images, your model) into one frozen :class:`~.context.SearchContext`; :func:`run_search` then runs
:data:`STAGES` in order, each a function of the context and the :class:`SearchRun` so far (what one stage hands
the next: the journal, the evolution, the document)."""
from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..data import Normalize
from ..errors import ConfigError
from ..models.checkpoint import is_own_model, weights_digest
from ..models import count_macs
from ..schedules import SearchSpace
from ..progress import Heartbeat
from .data import SearchData, search_data, shard, take_subset, _dist
from .evaluate import CandidateEvaluator, evaluation_device
from .evolution import Budget, EvolutionSearch, EvolutionSettings, Journal
from .objective import LatencyObjective, latency_objectives, tables_by_precision
from .context import SearchContext
from .document import document
from .timed import TargetCheck
from .precisions import resolve_precisions
from .reuse import Reused
from .ship import ShipPolicy
from .options import as_budgets, model_arg, resolve_fractions
from .settings import EvaluationOptions, LatencyOptions, SpaceOptions, given_or_default
from .selection import set_aside
from .finetune import PickFinetune, check_finetune, finetune_picks
from .parent import resolve_parent
from .space import priced_space, searched_space, space_of  # noqa: F401 (space_of: public here too)
from .outcome import SearchResult
from .writer import mark_running, write_result, write_search


def search_schedules(
    model: Union[nn.Module, str],
    data,
    budgets: Union[Budget, str, Sequence[Union[Budget, str]]] = (),
    *,
    latency: Optional[LatencyOptions] = None,
    evolution: Optional[EvolutionSettings] = None,
    ship: Optional[ShipPolicy] = None,
    evaluation: Optional[EvaluationOptions] = None,
    space: Optional[SpaceOptions] = None,
    parent: Union[str, nn.Module, None] = "auto",
    finetune: Optional[PickFinetune] = None,
    out: Optional[str] = None,
    log: Callable[[str], None] = print,
    source: Optional[dict] = None,
) -> SearchResult:
    """Search token schedules (and, under latency budgets, precisions) of ``model``; returns a :class:`SearchResult`.

    Args:
        model: the supernet or your trained model, loaded (:func:`~tavt_kit.load_checkpoint`) or its checkpoint.
        data: held-out and test images: a :class:`~tavt_kit.data.DataSpec`, a dataset name, a ``(holdout, test)``
            pair (datasets, :class:`~tavt_kit.search.data.EvalSet`) or a :class:`SearchData`; None: the dataset
            the checkpoint records. The model's normalisation is applied here.
        budgets: a budget or a list: ``Budget``s or texts (``"15ms"``, ``"20G MACs"``, ``"50%"``); none: the front.
        latency: where and how latency is obtained, a :class:`~.settings.LatencyOptions` (target, table,
            precisions, source, table cache and profile, remeasure).
        evolution: the evolution's settings (TAVT's defaults): an :class:`EvolutionSettings` or a dict of its fields.
        ship: how each budget chooses what ships, a :class:`~.ship.ShipPolicy` (None: its defaults).
        evaluation: how candidates are scored, an :class:`~.settings.EvaluationOptions` (fitness, subset,
            batch size, int8 pairs verified, calibration images, device, earlier searches reused).
        space: the schedules searched beyond what the checkpoint records, a :class:`~.settings.SpaceOptions`
            (reducers, bound, token multiple).
        parent: the reference, your model: ``"auto"`` loads the checkpoint the supernet records it was distilled
            from (your trained model is its own reference); a model or a path; None: no reference.
        finetune: a :class:`~.finetune.PickFinetune`: each budget's pick fine-tuned toward your model competes.
        out: folder for ``search.json``, the journal, ``schedules.json``, drop configs and plots (None: temporary).
        log: where progress and notes are said (``print``).
        source: recorded in ``search.json`` (the checkpoint and data the search ran on; a path ``model``: that path).
    """
    latency = given_or_default(LatencyOptions, latency, "latency")
    evaluation = given_or_default(EvaluationOptions, evaluation, "evaluation")
    ship = given_or_default(ShipPolicy, ship, "ship")
    space_options = given_or_default(SpaceOptions, space, "space")
    settings = EvolutionSettings.of(evolution, "evolution")
    if finetune is not None and not isinstance(finetune, PickFinetune):
        raise ConfigError(f"finetune={finetune!r}: expected a PickFinetune (the training images and steps) or None")
    budgets, (model, source) = as_budgets(budgets), model_arg(model, source)
    latency_budget = any(b.objective == "latency" for b in budgets)
    own = isinstance(parent, str) and parent == "auto" and is_own_model(model)  # your trained model, not a supernet
    space = searched_space(model, space_options, own, budgets, log)  # an unreachable budget refused before any work
    given = space_options.reducers is not None
    precisions = resolve_precisions(latency.precisions, latency.target, latency_budget, log,
                                    measured_here=latency.objectives is None and latency.table is None, model=model,
                                    tables=tables_by_precision(latency.table) if latency.table is not None else None)
    if len(precisions) > 1 and not latency_budget:
        raise ConfigError(f"latency.precisions={','.join(precisions)}: precisions are chosen by latency; give a "
                          "latency budget (a MAC count does not change with the precision)")
    objectives = latency.objectives
    if objectives is None and (latency_budget or latency.table is not None):
        objectives = _latency_objectives(model, precisions, latency, out, space.reducers if given else None,
                                         space_options.token_multiple, log)
    budgets = resolve_fractions(budgets, (objectives or {}).get("fp32"), space.full(), log)
    space = space if given else priced_space(space, objectives or {}, log)
    out = out if out is not None else tempfile.mkdtemp(prefix="fgvc-kit-search-")
    sdata = search_data(model, data, cache_dir=os.path.join(out, "cache"), log=log)
    parent = resolve_parent(model, parent, log)
    ctx = build_context(model, sdata, out, settings=settings, budgets=budgets, objectives=objectives or {},
                        precisions=precisions, space=space, evaluation=evaluation, ship=ship, log=log,
                        remeasure=latency.remeasure, recommends=parent is not None, source=source,
                        finetune=check_finetune(finetune, parent, model))
    with torch.inference_mode():
        return run_search(ctx, parent)


def _latency_objectives(model, precisions, latency: LatencyOptions, out, reducers, token_multiple: int, log):
    """The search's latency objectives made from ``latency``'s target or table (see :func:`latency_objectives`)."""
    cache = latency.table_cache or (os.path.join(out, "cache") if out else None)
    return latency_objectives(model, precisions if len(precisions) > 1 else ("fp32",), latency.target, latency.table,
                              remeasure=latency.remeasure, require=latency.require, latency_source=latency.source,
                              table_cache=cache, reducers=reducers, log=log, table_profile=latency.table_profile,
                              token_multiple=token_multiple)


def build_context(model: nn.Module, data: SearchData, out_dir: str, *, settings: EvolutionSettings,
                  budgets: Sequence[Budget], objectives: Dict[str, LatencyObjective], precisions: Sequence[str],
                  space: SearchSpace, evaluation: EvaluationOptions = EvaluationOptions(),
                  ship: ShipPolicy = ShipPolicy(), source: Optional[dict] = None, log: Callable[[str], None] = print,
                  remeasure: bool = False, recommends: bool = False, finetune=None) -> SearchContext:
    """The :class:`SearchContext` of one search: its settings checked, the held-out images set aside for the
    selection, the evaluator, the weights' digest, the journals of earlier searches read (``evaluation`` and
    ``ship`` checked their own fields when made)."""
    _check(data, budgets, objectives, precisions)
    rank, world = _dist()
    log = log if rank == 0 else (lambda s: None)
    device = evaluation_device(evaluation.device)  # where every evaluator of this search scores candidates
    batch_size, subset = int(evaluation.batch_size), evaluation.subset
    transform = Normalize.from_model(model)
    # the images each budget's recommendation is chosen on are never scored by the evolution (selection.py)
    holdout, chosen_on = set_aside(take_subset(data.holdout, subset, settings.seed, log=log), ship.selection,
                                   recommends and world == 1, settings.seed, batch_size, transform, log, device)
    shared = next((i for i, b in enumerate(space.bounds) if b > 0), space.depth)
    evaluator = CandidateEvaluator(model, shard(holdout).images, shard(holdout).labels, batch_size,
                                   transform=transform, shared_blocks=shared, device=device)
    ctx = SearchContext(
        model=model, space=space, budgets=tuple(budgets), objectives=dict(objectives), precisions=tuple(precisions),
        settings=settings, fitness=evaluation.fitness, out_dir=out_dir, log=log, data=data, holdout=holdout,
        selection=chosen_on, test=data.test, transform=transform, device=device, batch_size=batch_size,
        subset=subset, source=source, verify_top=evaluation.verify_top,
        calibration_images=int(evaluation.calibration_images), front_time_limit=evaluation.front_time_limit,
        remeasure_picks=remeasure, ship=ship, reuse_paths=evaluation.reuse, evaluator=evaluator,
        digest=weights_digest(model), rank=rank, world=world, finetune=finetune)
    checks = TargetCheck(ctx.objectives, ctx.schedule, log, model=model)
    reused = Reused(ctx.reuse_paths, ctx.journal_key(), ctx.calibration) if ctx.reuse_paths else None
    return ctx.replace(target_check=checks, reused=reused)


def _check(data, budgets, objectives, precisions):
    """What the options cannot check alone: the budgets against the objectives, the images, the precisions."""
    if any(b.objective == "latency" for b in budgets) and "fp32" not in objectives:
        raise ConfigError("budgets: a latency budget needs a latency objective (target= or table=)")
    if len(data.holdout.labels) == 0:
        raise ConfigError("data: the held-out split is empty; the search scores candidates on held-out images")
    if len(precisions) > 1:  # (without a latency budget search_schedules refused them already)
        missing = [p for p in precisions if p not in objectives]
        if missing:
            raise ConfigError(f"precisions: no latency objective for {missing[0]}")
        if _dist()[1] > 1:
            raise ConfigError("precisions: a search of several precisions runs on one process")


# -------------------------------------------------------------- the run
@dataclasses.dataclass(eq=False)
class SearchRun:
    """What one search's stages hand on to the next (the :class:`SearchContext` they read is frozen): the journal,
    the fp32 evolution and its candidates, ``search.json``'s document as far as it goes, the stages that hold
    resources until the search ends (the precisions', your model's: None where the search has none) and, at the
    end, the result."""

    parent_model: Optional[nn.Module] = None  # your model, measured beside the picks (None: no reference)
    journal: Optional[Journal] = None
    fp32: Optional[EvolutionSearch] = None
    candidates: Any = None
    seconds: float = 0.0  # the fp32 evolution's
    precisions: Any = None  # a pairs.PrecisionStage where several precisions are searched
    parent: Any = None  # a parent.ParentStage where your model is measured
    doc: Optional[dict] = None
    result: Optional[SearchResult] = None

    def close(self) -> None:
        for owner in (self.parent, self.precisions):
            if owner is not None:
                owner.close()


def run_search(ctx: SearchContext, parent_model: Optional[nn.Module] = None) -> SearchResult:
    """Every stage of the search (:data:`STAGES`, in order) over ``ctx``, your model (``parent_model``) measured
    beside the picks; writes and returns the result."""
    run = SearchRun(parent_model=parent_model)
    try:
        for stage in STAGES:
            stage(ctx, run)
    finally:
        run.close()
    return run.result


def start(ctx: SearchContext, run: SearchRun) -> None:
    """The budgets no searched schedule meets said, the journal opened, ``search.json`` marked running."""
    _warn_unreachable(ctx)
    run.journal = _journal(ctx)
    mark_running(ctx)


def evolve(ctx: SearchContext, run: SearchRun) -> None:
    """The fp32 evolution (its picks shrunk for the winner's curse where the ship policy says so)."""
    t0 = time.perf_counter()
    metrics = ctx.reused.wrap("fp32", ctx.metrics) if ctx.reused is not None else ctx.metrics
    run.fp32 = EvolutionSearch(ctx.space, metrics, ctx.macs, ctx.settings, ctx.latency, ctx.budgets,
                               run.journal, ctx.log, fitness=ctx.fitness)
    if len(ctx.precisions) > 1:
        ctx.log("searching fp32 schedules")
    run.candidates = run.fp32.run()
    if ctx.ship.shrinkage:  # picks corrected for the winner's curse (shrinkage.py)
        run.fp32.shrink()
    ctx.searches["fp32"] = run.fp32
    run.seconds = time.perf_counter() - t0


def evolve_precisions(ctx: SearchContext, run: SearchRun) -> None:
    """The evolution of every precision beyond fp32 (:mod:`.pairs`), where several are searched."""
    from .pairs import PrecisionStage

    if len(ctx.precisions) > 1:
        run.precisions = PrecisionStage(ctx, run.journal)
        run.precisions.evolve()


def score_on_test(ctx: SearchContext, run: SearchRun) -> None:
    """The picks, the front and the baselines scored on the test images (:mod:`.document`); where slow stages
    follow, what is done so far written, unfinished."""
    ctx.log("scoring the picks, the front and the baselines on the test images"
            + (" and timing the picks" if run.precisions is None and ctx.latency is not None
                and ctx.latency.can_remeasure else ""))
    with Heartbeat(ctx.log, "scoring and timing the picks"):
        run.doc = document(ctx, run.fp32, run.candidates, run.seconds, remeasure=run.precisions is None)
    if run.parent_model is not None or run.precisions is not None:
        write_search(ctx, run.doc)


def measure_parent(ctx: SearchContext, run: SearchRun) -> None:
    """Your model and what needs no training on it measured beside the picks at each budget (:mod:`.parent`)."""
    if run.parent_model is None or ctx.world != 1:
        return
    from .parent import ParentStage

    run.parent = ParentStage(ctx, run.parent_model)
    ctx.log("measuring the parent (your model) and ToMe on it at each budget")
    with Heartbeat(ctx.log, "measuring the parent and ToMe on it"):
        run.parent.apply(run.doc)


def choose_pairs(ctx: SearchContext, run: SearchRun) -> None:
    """Each budget's (schedule, precision) pair chosen and verified, your model measured at every precision."""
    if run.precisions is None:
        return
    with Heartbeat(ctx.log, "choosing and verifying each budget's (schedule, precision) pair"):
        run.precisions.choose(run.doc)
    if run.parent is not None:
        ctx.log("measuring the parent and ToMe on it at every precision searched")
        with Heartbeat(ctx.log, "measuring the parent and ToMe at every precision"):
            run.parent.apply_precisions(run.doc, run.precisions)


def time_round(ctx: SearchContext, run: SearchRun) -> None:
    """Every option and your model timed round-robin on the deployed runtime, where precisions were searched or a
    budget is a share of your model's latency (judged by the ratio to it in one round), and each budget chosen
    again on those timings."""
    from .pairs import remeasure_round

    shares = run.parent is not None and any(b.fraction is not None for b in ctx.budgets)
    if run.precisions is None and not shares:
        return
    with Heartbeat(ctx.log, "timing every option and your model round-robin on the deployed runtime"):
        remeasure_round(run.doc, ctx)
    if run.parent is not None:
        run.parent.recommend_again(run.doc)


def finetune_stage(ctx: SearchContext, run: SearchRun) -> None:
    """Each budget's pick fine-tuned toward your model, competing for it (:mod:`.finetune`); last: every pick's
    figures are in."""
    if run.parent is not None and ctx.finetune is not None:
        finetune_picks(ctx, run.parent, run.doc)


def finish(ctx: SearchContext, run: SearchRun) -> None:
    """The earlier searches reused and the table's error where picks were timed recorded; ``search.json``, the
    schedule files and the plots written (:mod:`.writer`)."""
    doc = run.doc
    if ctx.reused is not None:
        doc["reuse"] = ctx.reused.summary()
        ctx.log(ctx.reused.line())
    correction = ctx.target_check.summary()
    if correction:  # how far the table was from the target where picks were timed
        doc["timed_over_predicted"] = correction
    run.result = write_result(ctx, doc, precision_plot=run.precisions is not None)


#: the search's stages, in order; each reads the frozen context and the run so far (:func:`run_search`)
STAGES: Tuple[Callable[[SearchContext, SearchRun], None], ...] = (
    start, evolve, evolve_precisions, score_on_test, measure_parent, choose_pairs, time_round, finetune_stage, finish)


def _warn_unreachable(ctx: SearchContext) -> None:
    """A budget below the space's smallest schedule (a latency at the fastest precision searched: a budget only
    fp16 or int8 meets is reachable) gets the baselines only, said; one below every baseline too was refused
    before any work (:func:`~.space.searched_space`)."""
    for b in ctx.budgets:
        if b.objective == "macs":
            cost = count_macs(ctx.model, ctx.space.smallest()).total()
        elif ctx.objectives:
            cost = min(o(ctx.space.smallest()) for o in ctx.objectives.values())
        else:
            continue
        if cost > b.limit:
            ctx.log(f"warning: budget {b.label} is below the smallest schedule of the search space "
                    f"({Budget(b.objective, cost).label}); no searched schedule can meet it (baselines are "
                    "still reported)")


def _journal(ctx: SearchContext) -> Journal:
    settings = ctx.journal_key()
    # the int8 calibration keys the deployed int8 records only (see PrecisionStage), not the whole journal
    os.makedirs(ctx.out_dir, exist_ok=True)
    journal = Journal(os.path.join(ctx.out_dir, "search.journal.jsonl") if ctx.rank == 0 else None,
                      {"format": "fgvc-kit/search-journal", "settings": settings})
    if ctx.world > 1:  # every rank replays the same journal
        obj = [journal.entries]
        torch.distributed.broadcast_object_list(obj, src=0)
        journal.entries = obj[0]
    return journal








