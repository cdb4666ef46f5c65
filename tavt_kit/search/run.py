"""A whole search: data, objectives, evolution, baselines, test-split report, files.

:func:`run_search` is what ``fgvc-kit search`` calls. Fitness is measured on
the held-out split (accuracy, NLL or KL to the full model); the test split is
used once at the end, to report the chosen schedules, the Pareto front and the
baselines. Every accuracy comes with its 95 % Wilson interval, and each
baseline at a budget with the paired difference to the searched pick on the
same test images (``vs_searched``: is the difference resolved or noise?).
"""
from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from ..errors import ConfigError, TavtKitError
from ..files import write_json
from ..machine import brief
from ..models.checkpoint import weights_digest
from ..models.macs import count_macs
from ..schedules.schedule import TokenSchedule
from ..schedules.space import SearchSpace
from ..stats import paired_difference, wilson_interval
from ..schedules.families import tome_schedule
from .baselines import baseline_schedules
from .evaluate import CandidateEvaluator, ScheduleScores
from .evolution import (Budget, EvolutionSearch, EvolutionSettings, Journal, front_area, gene_of, pareto_front,
                        schedule_of)
from .fitness import DEFAULT_FITNESS, FITNESSES
from .result import SEARCH_FORMAT

#: the index of the per-budget drop configs a search writes beside search.json
SCHEDULES_INDEX = "schedules.json"


@dataclass
class EvalSet:
    """Decoded, preprocessed images of one split (uint8) with labels."""

    images: torch.Tensor
    labels: torch.Tensor
    name: str


def _dist():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def shard(evalset: EvalSet) -> EvalSet:
    """This rank's share of the images (every world_size-th); counts are summed across ranks."""
    rank, world = _dist()
    if world == 1:
        return evalset
    return EvalSet(evalset.images[rank::world], evalset.labels[rank::world], evalset.name)


def _all_reduce(values: List, dtype=torch.long) -> List:
    rank, world = _dist()
    if world == 1 or not values:
        return values
    t = torch.tensor(values, dtype=dtype)
    torch.distributed.all_reduce(t)
    return t.tolist()


def _reduce_scores(sc: ScheduleScores, n: int) -> ScheduleScores:
    """Sums over every rank's shard (hits per image are only kept on a single process)."""
    return ScheduleScores(n, _all_reduce(sc.correct), _all_reduce(sc.nll, torch.float64),
                          _all_reduce(sc.kl, torch.float64), sc.hits if _dist()[1] == 1 else None)


def take_subset(holdout: EvalSet, subset: Optional[int], seed: int) -> EvalSet:
    """``subset`` images of ``holdout`` (seeded, in their order); all of them when ``subset`` is None or larger."""
    if subset is None:
        return holdout
    if subset < 1:
        raise ConfigError(f"--subset: expected a positive number of images, got {subset}")
    if subset >= len(holdout.labels):
        return holdout
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(holdout.labels), generator=g)[:subset].sort().values
    return EvalSet(holdout.images[idx], holdout.labels[idx], holdout.name)


def space_of(model: nn.Module) -> SearchSpace:
    d = (getattr(model, "spec", None) or {}).get("search_space")
    if d:
        space = SearchSpace.from_dict(d)
        if space.depth != model.depth or space.num_patches != model.num_patches:
            raise ConfigError(f"the checkpoint's search space ({space.depth} blocks, {space.num_patches} tokens) "
                              f"does not fit the model ({model.depth} blocks, {model.num_patches} tokens)")
        return space
    return SearchSpace.for_model(model)


def run_search(
    model: nn.Module,
    holdout: EvalSet,
    test: Optional[EvalSet],
    out_dir: str,
    *,
    settings: EvolutionSettings,
    budgets: Sequence[Budget] = (),
    latency_fn: Optional[Callable[[TokenSchedule], float]] = None,
    remeasure_fn: Optional[Callable[[TokenSchedule], float]] = None,
    latency_info: Optional[dict] = None,
    transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    batch_size: int = 64,
    subset: Optional[int] = None,
    space: Optional[SearchSpace] = None,
    source: Optional[dict] = None,
    log: Callable[[str], None] = print,
    fitness: str = DEFAULT_FITNESS,
) -> dict:
    """Search schedules of ``model``; writes ``search.json``, a journal and one drop config per budget.

    Args:
        latency_fn: schedule -> seconds (measured here or predicted from a table);
            required for latency budgets.
        remeasure_fn: schedule -> seconds measured directly, for the chosen schedules.
        subset: search on this many held-out images (seeded, stratified by nothing: a random subset).
        fitness: what the search maximises on the held-out images: ``accuracy``, ``nll`` (minus the mean
            cross-entropy) or ``kl`` (minus the mean KL divergence from the full model's predictions).
    """
    if fitness not in FITNESSES:
        raise ConfigError(f"--fitness: expected one of {', '.join(FITNESSES)}, got {fitness!r}")
    rank, world = _dist()
    space = space or space_of(model)
    if any(b.objective == "latency" for b in budgets) and latency_fn is None:
        raise ConfigError("a latency budget needs a latency objective (--device/--backend or --latency-table)")
    if len(holdout.labels) == 0:
        raise ConfigError("the held-out split is empty; search needs --holdout > 0")
    holdout = take_subset(holdout, subset, settings.seed)
    n_holdout = len(holdout.labels)
    shared = next((i for i, b in enumerate(space.bounds) if b > 0), space.depth)
    ev = CandidateEvaluator(model, shard(holdout).images, shard(holdout).labels, batch_size, transform=transform,
                            shared_blocks=shared)
    for b in budgets:
        if b.objective == "macs":
            cost, shown = count_macs(model, space.smallest()).total(), None
            shown = Budget("macs", cost).label
        elif latency_fn is not None:
            cost = latency_fn(space.smallest())
            shown = Budget("latency", cost).label
        if cost > b.limit:
            log(f"warning: budget {b.label} is below the smallest schedule of the search space ({shown}); "
                "no searched schedule can meet it (baselines are still reported)")

    def metrics(scheds: List[TokenSchedule], evaluator: CandidateEvaluator = ev) -> List[Dict[str, float]]:
        sc = _reduce_scores(evaluator.scores(scheds), n_holdout)
        return [sc.metrics(i) for i in range(len(scheds))]

    @functools.lru_cache(maxsize=None)
    def macs_of(gene) -> int:
        return count_macs(model, sched(gene)).total()

    def sched(gene) -> TokenSchedule:
        return schedule_of(gene, space.num_patches, space.min_tokens)

    lat_cache: Dict[tuple, float] = {}

    def latency(s: TokenSchedule) -> float:
        g = gene_of(s)
        if g not in lat_cache:
            lat_cache[g] = float(latency_fn(s))
        return lat_cache[g]

    digest = weights_digest(model)
    # keyed on the weights' content: a supernet retrained into the same path is another search
    header = {"format": "fgvc-kit/search-journal", "settings": {
        **settings.to_dict(), "fitness": fitness, "budgets": [[b.objective, b.limit] for b in budgets],
        "subset": subset,
        "holdout_images": n_holdout, "space": space.to_dict(), "weights_sha256": digest,
        "source": {k: v for k, v in (source or {}).items() if k != "checkpoint"},
        "latency": (latency_info or {}).get("identity")}}
    os.makedirs(out_dir, exist_ok=True)
    journal = Journal(os.path.join(out_dir, "search.journal.jsonl") if rank == 0 else None, header)
    if world > 1:  # every rank replays the same journal
        obj = [journal.entries]
        torch.distributed.broadcast_object_list(obj, src=0)
        journal.entries = obj[0]
    t0 = time.perf_counter()
    search = EvolutionSearch(space, metrics, lambda s: macs_of(gene_of(s)), settings,
                             latency if latency_fn is not None else None, budgets, journal,
                             log if rank == 0 else (lambda s: None), fitness=fitness)
    cands = search.run()
    search_seconds = time.perf_counter() - t0
    objective = search.objective

    # ---- choices per budget, baselines, and the test split
    full, smallest = space.full(), space.smallest()
    from ..models.token_drop import TokenDropMixin

    can_merge = isinstance(model, TokenDropMixin)  # timm ViTs merge (ToMe's baseline); ViTAE's cells do not
    tome_latency = can_merge
    if can_merge and latency_fn is not None and any(b.objective == "latency" for b in budgets):
        try:  # a latency table profiled for drop only cannot cost ToMe's schedules: that baseline is left out
            latency(tome_schedule(1, space.depth, space.num_patches, space.min_tokens))
        except TavtKitError as e:
            tome_latency = False
            log(f"note: no ToMe baseline under the latency budgets ({e})")
    cost_fn: Callable[[TokenSchedule], float] = (lambda s: macs_of(gene_of(s))) if objective == "macs" else latency
    choices = {}
    for b in budgets:
        best = search.best_within(b)
        choices[b.label] = (b, best)
    limits = {b.label: b.limit for b in budgets}
    base = {}
    for label, limit in limits.items():
        b = next(x for x in budgets if x.label == label)
        fn = (lambda s: macs_of(gene_of(s))) if b.objective == "macs" else latency
        base[label] = baseline_schedules(space.depth, space.num_patches, fn, {label: limit}, space.min_tokens,
                                         merge=can_merge if b.objective == "macs" else tome_latency)[label]
    fixed = baseline_schedules(space.depth, space.num_patches, cost_fn, {}, space.min_tokens)["fixed"]

    front = pareto_front(cands, objective)
    to_test: Dict[tuple, TokenSchedule] = {}
    for s in [full, smallest] + [sched(c.gene) for c in front]:
        to_test[gene_of(s)] = s
    for label, (b, best) in choices.items():
        if best is not None:
            to_test[best.gene] = sched(best.gene)
    for row in list(base.values()) + [fixed]:
        for s in row.values():
            to_test[gene_of(s)] = s
    hold = {c.gene: {"accuracy": c.accuracy, "nll": c.nll, "kl": c.kl} for c in search.evaluated.values()}
    holdout_extra = [s for k, s in to_test.items() if k not in hold]
    if holdout_extra:
        free = CandidateEvaluator(model, shard(holdout).images, shard(holdout).labels, batch_size,
                                  transform=transform)  # baselines may drop where the space does not
        for s, m in zip(holdout_extra, metrics(holdout_extra, free)):
            hold[gene_of(s)] = m
    test_acc: Dict[tuple, float] = {}
    test_hits: Dict[tuple, torch.Tensor] = {}
    n_test = int(len(test.labels)) if test is not None else 0
    if n_test:
        tev = CandidateEvaluator(model, shard(test).images, shard(test).labels, batch_size, transform=transform)
        scheds = list(to_test.values())
        sc = _reduce_scores(tev.scores(scheds, per_image=True), n_test)
        for i, s in enumerate(scheds):
            test_acc[gene_of(s)] = sc.correct[i] / n_test
            if sc.hits is not None:
                test_hits[gene_of(s)] = sc.hits[i]
    remeasured = {}
    if remeasure_fn is not None and rank == 0:
        for label, (b, best) in choices.items():
            if best is not None:
                remeasured[best.gene] = float(remeasure_fn(sched(best.gene)))
        remeasured.setdefault(gene_of(full), float(remeasure_fn(full)))

    def entry(gene, **extra) -> dict:
        s = sched(gene)
        h = hold.get(gene) or {}
        d = {"counts": list(gene[0]), **({"reducers": list(s.reducers)} if s.reducers else {}),
             "macs": macs_of(gene), "holdout_accuracy": h.get("accuracy"),
             "holdout_interval": _interval(h.get("accuracy"), n_holdout), "holdout_nll": h.get("nll"),
             "holdout_kl": h.get("kl"), "test_accuracy": test_acc.get(gene),
             "test_interval": _interval(test_acc.get(gene), n_test)}
        if latency_fn is not None:
            try:
                d["latency_ms"] = latency(s) * 1e3
            except TavtKitError:  # a ToMe baseline under a MAC budget, and a table profiled for drop only
                d["latency_ms"] = None
        if gene in remeasured:
            d["latency_measured_ms"] = remeasured[gene] * 1e3
        d.update(extra)
        return d

    full_macs = macs_of(gene_of(full))
    result = {
        "format": SEARCH_FORMAT,
        "version": 1,
        "objective": objective,
        "model": {**{k: (model.spec or {}).get(k) for k in ("backbone", "img_size", "depth", "num_patches",
                                                            "num_classes")}, "weights_sha256": digest},
        "source": source or {},
        "space": space.to_dict(),
        "settings": {**settings.to_dict(), "fitness": fitness, "subset": subset, "holdout_images": n_holdout,
                     "test_images": int(len(test.labels)) if test is not None else 0, "batch_size": batch_size,
                     "world_size": world},
        "latency": latency_info,
        "machine": brief(),
        "timing": {"search_seconds": search_seconds, "evaluations": search.evaluations,
                   "candidates_per_minute": (search.evaluations / search.eval_seconds * 60)
                   if search.eval_seconds else None,
                   "block_runs": ev.stats.block_runs, "block_runs_naive": ev.stats.block_runs_naive},
        "full": entry(gene_of(full)),
        "smallest": entry(gene_of(smallest)),
        "candidates": [{**c.to_dict(), "holdout_interval": _interval(c.accuracy, n_holdout)} for c in cands],
        "pareto_front": [entry(c.gene) for c in front],
        "front_area": front_area(front, objective, cost_fn(smallest), cost_fn(full)),
        "budgets": [],
        "baselines": {"fixed": {k: entry(gene_of(s)) for k, s in fixed.items()}},
    }
    for label, (b, best) in choices.items():
        row = {"label": label, "objective": b.objective, "limit": b.limit,
               "best": entry(best.gene, speedup_macs=full_macs / macs_of(best.gene)) if best else None,
               "baselines": {k: entry(gene_of(s), **_versus(best, gene_of(s), test_hits))
                             for k, s in base[label].items()}}
        if best is not None:
            path = os.path.join(out_dir, f"schedule-{_slug(label)}.json")
            if rank == 0:
                sched(best.gene).save(
                    path, model_info={**result["model"], "budget": label})
            row["schedule_file"] = os.path.basename(path)
        result["budgets"].append(row)
    if rank == 0:
        # a fixed name a script can read: budget label -> its drop config (the files are named after the budget)
        write_json({"format": "fgvc-kit/search-schedules", "search": "search.json",
                    "budgets": [{"label": r["label"], "objective": r["objective"], "limit": r["limit"],
                                 "file": r.get("schedule_file"),
                                 "counts": (r["best"] or {}).get("counts"),
                                 **({"reducers": r["best"]["reducers"]} if (r["best"] or {}).get("reducers") else {})}
                                for r in result["budgets"]]},
                   os.path.join(out_dir, SCHEDULES_INDEX))
        write_json(result, os.path.join(out_dir, "search.json"))
        try:
            from .plot import plot_search

            result["plots"] = plot_search(result, out_dir)
            write_json(result, os.path.join(out_dir, "search.json"))
        except ImportError:  # matplotlib is optional for the library
            pass
    return result


def _interval(accuracy: Optional[float], n: int) -> Optional[List[float]]:
    """The 95 % Wilson interval of an accuracy measured on ``n`` images."""
    if accuracy is None or not n:
        return None
    return list(wilson_interval(int(round(accuracy * n)), n))


def _versus(best, gene: tuple, hits: Dict[tuple, torch.Tensor]) -> dict:
    """``vs_searched``: the searched pick's test accuracy minus this schedule's, paired on the same images."""
    if best is None or best.gene not in hits or gene not in hits:
        return {}
    return {"vs_searched": paired_difference(hits[best.gene].tolist(), hits[gene].tolist())}


def _slug(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch in ".-" else "_" for ch in label).strip("_")


