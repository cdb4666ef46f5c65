"""The fp32 evolution's part of a search's result: each budget's pick (the baselines fitted to it competing on
the same held-out fitness), the Pareto front, the baselines, and the test split scored once for all of them; every
entry with its 95 % intervals, each baseline with its paired difference to the searched pick (``vs_searched``).
:func:`document` returns it as ``search.json``'s sections, which the later stages (your model, the precisions,
the round-robin timing, the fine-tune) complete."""
from __future__ import annotations

import functools
from typing import Dict, List

import torch

from ..errors import TavtKitError
from ..schedules import TokenSchedule, tome_schedule
from ..stats import accuracy_interval, paired_difference
from .baselines import baseline_schedules
from .context import SearchContext
from .data import shard
from .evaluate import CandidateEvaluator
from .evolution import Budget, Candidate, EvolutionSearch, front_area, gene_of, pareto_front
from .fitness import fitness_of
from .options import fraction_field
from .result import schedule_file_name
from .writer import header


def document(ctx: SearchContext, search: EvolutionSearch, cands, search_seconds: float, remeasure: bool) -> dict:
    objective = search.objective
    full, smallest = ctx.space.full(), ctx.space.smallest()
    over: Dict[str, List[dict]] = {b.label: [] for b in ctx.budgets}
    checks = {b.label: ctx.target_check.within(b.limit, over[b.label], b.fraction) for b in ctx.budgets
              if remeasure and b.objective == "latency"}
    choices = {b.label: (b, _best_within(search, b, checks.get(b.label))) for b in ctx.budgets}
    base, fixed = _baselines(ctx, objective)
    front = pareto_front(cands, objective)
    to_test: Dict[tuple, TokenSchedule] = {}
    for s in [full, smallest] + [ctx.schedule(c.gene) for c in front]:
        to_test[gene_of(s)] = s
    for row in list(base.values()) + [fixed]:
        for s in row.values():
            to_test[gene_of(s)] = s
    hold = {c.gene: {"accuracy": c.accuracy, "nll": c.nll, "kl": c.kl} for c in search.evaluated.values()}
    _holdout_extra(ctx, to_test, hold)
    choices = _with_baselines(ctx, choices, base, hold, checks)
    for b, best in choices.values():
        if best is not None:
            to_test[best.gene] = ctx.schedule(best.gene)
    test_acc, test_hits = _test(ctx, list(to_test.values()))
    remeasured = _remeasure(ctx, choices, full) if remeasure else {}
    entry = functools.partial(_entry, ctx, hold=hold, test_acc=test_acc, remeasured=remeasured)
    cost_fn = ctx.macs if objective == "macs" else ctx.latency
    doc = header(ctx, search, objective, search_seconds)
    doc.update({"full": entry(gene_of(full)), "smallest": entry(gene_of(smallest)),
                "candidates": [{**c.to_dict(),
                                "holdout_interval": accuracy_interval(c.accuracy, ctx.n_holdout)} for c in cands],
                "pareto_front": [entry(c.gene) for c in front],
                "front_area": front_area(front, objective, cost_fn(smallest), cost_fn(full)),
                "budgets": [], "baselines": {"fixed": {k: entry(gene_of(s)) for k, s in fixed.items()}},
                "shrinkage": search.shrinkage.to_dict() if search.shrinkage is not None else None})
    full_macs = ctx.macs(full)
    for label, (b, best) in choices.items():
        row = {"label": label, "objective": b.objective, "limit": b.limit, **fraction_field(b),
               "best": entry(best.gene, speedup_macs=full_macs / ctx.macs_of(best.gene),
                             **({"origin": best.origin} if best.origin.startswith("baseline") else {}))
               if best else None,
               "baselines": {k: entry(gene_of(s), **_versus(best, gene_of(s), test_hits))
                             for k, s in base[label].items()}}
        if best is not None:
            row["schedule_file"] = schedule_file_name(label)
            if best.measured_fitness is not None:  # what it brings to the recommendation (shrinkage.py)
                row["best"].update(fitness_shrunk=best.score, fitness_measured=best.measured_fitness)
            if ctx.selection is not None:  # what the recommendation compares (selection.py)
                row["best"].update(ctx.selection.fields("supernet", ctx.model, ctx.schedule(best.gene)))
        doc["budgets"].append({**row, "timed_over_budget": over[label]} if over[label] else row)
    ctx.test_hits.update(test_hits)
    return doc


def _best_within(search: EvolutionSearch, b: Budget, check):
    """The fittest candidate within ``b``; with ``check`` (a latency budget predicted by a table, see
    :class:`~.timed.TargetCheck`), the fittest that also meets it timed on the target."""
    if check is None:
        return search.best_within(b)
    ranked = sorted(search.feasible(b), key=lambda c: (c.score, c.cost(b.objective), c.gene), reverse=True)
    return next((c for c in ranked if check(c.gene, "fp32", c.latency)), None)


def _with_baselines(ctx: SearchContext, choices, base, hold, checks):
    """Each budget's pick, the baselines fitted to it competing on the same held-out fitness: a baseline that
    meets a budget the search found nothing for (it may reduce where the space does not), or that is fitter
    than the search's pick, becomes the pick (``origin`` says so), so no baseline ever beats the answer.
    With a budget's ``checks`` entry, a baseline timed over it on the target does not."""
    out = {}
    for label, (b, best) in choices.items():
        cost = ctx.macs if b.objective == "macs" else ctx.latency
        for name, s in base[label].items():
            g, m = gene_of(s), hold.get(gene_of(s))
            if m is None or m.get(ctx.fitness) is None:
                continue
            try:
                c = float(cost(s))
            except TavtKitError:
                continue
            if c > b.limit:
                continue
            score = fitness_of(m, ctx.fitness)
            if (best is None or score > best.score) and (checks.get(label) is None or
                                                         checks[label](g, "fp32", c)):
                best = Candidate(counts=g[0], reducers=g[1], accuracy=m["accuracy"], nll=m.get("nll"),
                                 kl=m.get("kl"), fitness=score, macs=ctx.macs_of(g),
                                 latency=c if b.objective == "latency" else None, origin=f"baseline {name}")
                ctx.log(f"budget {label}: the {name} baseline is fitter on the held-out images than the "
                        "search's pick (or the only schedule that meets it); it is the pick")
        out[label] = (b, best)
    return out


def _baselines(ctx: SearchContext, objective: str):
    from ..models.token_drop import TokenDropMixin

    space = ctx.space
    can_merge = isinstance(ctx.model, TokenDropMixin)  # timm ViTs merge (ToMe's baseline); ViTAE's do not
    tome_latency = can_merge
    if can_merge and ctx.latency is not None and any(b.objective == "latency" for b in ctx.budgets):
        try:  # a latency table profiled for drop only cannot cost ToMe's schedules: that baseline is left out
            ctx.latency(tome_schedule(1, space.depth, space.num_patches, space.min_tokens))
        except TavtKitError as e:
            tome_latency = False
            ctx.log(f"note: no ToMe baseline under the latency budgets ({e})")
    base = {}
    for b in ctx.budgets:
        fn = ctx.macs if b.objective == "macs" else ctx.latency
        base[b.label] = baseline_schedules(space.depth, space.num_patches, fn, {b.label: b.limit},
                                           space.min_tokens,
                                           merge=can_merge if b.objective == "macs" else tome_latency)[b.label]
    cost_fn = ctx.macs if objective == "macs" else ctx.latency
    fixed = baseline_schedules(space.depth, space.num_patches, cost_fn, {}, space.min_tokens)["fixed"]
    return base, fixed


def _holdout_extra(ctx: SearchContext, to_test: Dict[tuple, TokenSchedule], hold: Dict[tuple, dict]) -> None:
    extra = [s for k, s in to_test.items() if k not in hold]
    if extra:  # baselines may drop where the space does not: a free evaluator (no shared blocks)
        free = CandidateEvaluator(ctx.model, shard(ctx.holdout).images, shard(ctx.holdout).labels,
                                  ctx.batch_size, transform=ctx.transform, device=ctx.device)
        for s, m in zip(extra, ctx.metrics(extra, free)):
            hold[gene_of(s)] = m


def _test(ctx: SearchContext, scheds: List[TokenSchedule]):
    test_acc: Dict[tuple, float] = {}
    test_hits: Dict[tuple, torch.Tensor] = {}
    if not ctx.n_test:
        return test_acc, test_hits
    tev = CandidateEvaluator(ctx.model, shard(ctx.test).images, shard(ctx.test).labels, ctx.batch_size,
                             transform=ctx.transform, device=ctx.device)
    sc = tev.scores(scheds, per_image=True).summed_over_ranks(ctx.n_test)
    for i, s in enumerate(scheds):
        test_acc[gene_of(s)] = sc.correct[i] / ctx.n_test
        if sc.hits is not None:
            test_hits[gene_of(s)] = sc.hits[i]
    return test_acc, test_hits


def _remeasure(ctx: SearchContext, choices, full: TokenSchedule) -> Dict[tuple, float]:
    remeasured: Dict[tuple, float] = {}
    if ctx.latency is None or not ctx.latency.can_remeasure or ctx.rank != 0:
        return remeasured
    time = ctx.target_check.time  # once each: choosing the picks may have timed them already
    for b, best in choices.values():
        if best is not None:
            remeasured[best.gene] = time(best.gene, "fp32")
    remeasured.setdefault(gene_of(full), time(gene_of(full), "fp32"))
    return remeasured


def _entry(ctx: SearchContext, gene, *, hold, test_acc, remeasured, **extra) -> dict:
    s = ctx.schedule(gene)
    h = hold.get(gene) or {}
    d = {"counts": list(gene[0]), **({"reducers": list(s.reducers)} if s.reducers else {}),
         "macs": ctx.macs_of(gene), "holdout_accuracy": h.get("accuracy"),
         "holdout_interval": accuracy_interval(h.get("accuracy"), ctx.n_holdout),
         "holdout_nll": h.get("nll"), "holdout_kl": h.get("kl"), "test_accuracy": test_acc.get(gene),
         "test_interval": accuracy_interval(test_acc.get(gene), ctx.n_test)}
    if ctx.latency is not None:
        try:
            d["latency_ms"] = ctx.latency(s) * 1e3
        except TavtKitError:  # a ToMe baseline under a MAC budget, and a table profiled for drop only
            d["latency_ms"] = None
    if gene in remeasured:
        d["latency_measured_ms"] = remeasured[gene] * 1e3
    d.update(extra)
    return d


def _versus(best, gene: tuple, hits: Dict[tuple, torch.Tensor]) -> dict:
    """``vs_searched``: the searched pick's test accuracy minus this schedule's, paired on the same images."""
    if best is None or best.gene not in hits or gene not in hits:
        return {}
    return {"vs_searched": paired_difference(hits[best.gene].tolist(), hits[gene].tolist())}
