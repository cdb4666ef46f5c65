"""(token schedule, precision) pairs: their joint search under latency budgets and the choice over them.

A milder schedule at bf16 or int8 can beat an aggressive one at fp32 under the
same latency budget, so ``fgvc-kit search --precisions fp32,bf16,int8`` makes
every candidate a pair. The space is the product of the schedule space and
the precisions; since a precision is one categorical choice, the evolution
runs once per precision (each with that precision's latency objective and
accuracy, all in the pipeline's one journal), and every budget then picks the
best pair over all of them (:class:`PrecisionStage`).

Accuracy is measured, never assumed:

* **fp32**: the pipeline's own evolution (:class:`~tavt_kit.search.context.SearchContext`), whose
  budgets also give the best fp32-only schedule reported beside each pair;
* **bf16 / fp16**: the candidates run at that precision (PyTorch autocast: matrix
  products in the low type, reductions in fp32, as the runtimes do) on the
  held-out images;
* **int8**: a schedule's fp32 fitness is only its *provisional* int8 fitness
  (int8 rarely gains accuracy). Before a budget reports an int8 pair, the
  schedule is exported, quantised with NNCF (transformer model type,
  calibration on training images) and run in OpenVINO on the held-out images;
  the measured fitness replaces the provisional one and the choice is made
  again, until the best pair's accuracy is a measured one
  (``verify_top`` quantisations per budget at most; unverified int8 pairs are
  never reported). Every point of the int8 Pareto front within the widest
  budget is measured the same way before the front is reported or plotted.

Every reported pair, and the fp32-only pick beside it, is then run on the
deployed runtime (OpenVINO at that precision) on the test images: its test
accuracy with its 95 % interval, and the difference between the two paired
on the same images (``vs_fp32``). Deployed evaluations are journalled, so a
resumed search does not quantise again; the int8 ones are keyed on the
calibration images (their number, seed, split and dataset, recorded in
``search.json``'s ``settings.calibration``), so a search rerun with other
calibration quantises again.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from torch import nn

from ..progress import eta
from ..schedules.schedule import TokenSchedule
from ..stats import paired_difference, wilson_interval
from ..target import Precision
from .deployed import AUTOCAST, DeployedScorer
from .evaluate import CandidateEvaluator, ScheduleScores
from .reuse import METRICS
from .evolution import EvolutionSearch, entry_gene, gene_of, pareto_front
from .fitness import fitness_of
from .result import schedule_file_name
from .shares import JUDGING_ROUNDS  # noqa: F401  (the judging round's rotations; imported from here too)
#: precisions a search can pair with schedules
SEARCH_PRECISIONS = Precision.ALL
#: how each precision's held-out accuracy is obtained during the evolution
#: default seconds spent measuring the int8 front on the deployed model (``EvaluationOptions.front_time_limit``):
#: two quantisations at once on 2 cores measure in 60 s as many points as 120 s did one at a time
#: (``docs/decisions/2026-11-29-front-time-limit.md``)
FRONT_TIME_LIMIT_S = 60.0
ACCURACY_SOURCE = {"fp32": "PyTorch fp32", "bf16": "PyTorch bf16 autocast", "fp16": "PyTorch fp16 autocast",
                   "int8": "fp32 (provisional; measured on the deployed int8 model before it is reported)"}


# ------------------------------------------------------------------- the pairs
@dataclass
class Pair:
    """A (schedule, precision) candidate with its held-out metrics and cost."""

    precision: str
    gene: tuple
    metrics: Dict[str, float]
    fitness: float
    latency: float  # seconds per batch at this precision
    measured: bool  # accuracy measured at this precision (False: int8's provisional fp32 value)
    source: str
    deployed: Dict[str, Any] = field(default_factory=dict)


def _pairs_within(limit: float, fp32_cands: Sequence[dict], searches: Dict[str, EvolutionSearch],
                  verified: Dict[tuple, Dict[str, float]], fitness: str) -> List[Pair]:
    out = []
    for c in fp32_cands:
        if c.get("latency_ms") is not None and c["latency_ms"] / 1e3 <= limit:
            g = entry_gene(c)
            m = {"accuracy": c["accuracy"], "nll": c["nll"], "kl": c["kl"]}
            out.append(Pair("fp32", g, m, c["fitness"], c["latency_ms"] / 1e3, True, ACCURACY_SOURCE["fp32"]))
    for p, search in searches.items():
        for c in search.evaluated.values():
            if c.latency is None or c.latency > limit:
                continue
            m = {"accuracy": c.accuracy, "nll": c.nll, "kl": c.kl}
            measured = p != "int8"
            source = ACCURACY_SOURCE[p]
            score = c.score
            if p == "int8" and c.gene in verified:
                m, measured, source = verified[c.gene], True, "OpenVINO int8 (NNCF PTQ, transformer)"
                # measured on the deployed model; the shrinkage its provisional fitness had still applies
                # (the same schedule's selection among the same candidates, :mod:`~.shrinkage`)
                score = fitness_of(m, fitness) + c.score - c.measured_score
            out.append(Pair(p, c.gene, m, score, c.latency, measured, source))
    return out


def _rank(p: Pair) -> tuple:
    # higher fitness; then the one that uses more of the budget; then a fixed order (deterministic)
    return p.fitness, p.latency, SEARCH_PRECISIONS.index(p.precision), p.gene


def choose_pair(pairs: List[Pair], verify: Callable[[Pair], Dict[str, float]], fitness: str,
                verify_top: int, within: Optional[Callable[[Pair], bool]] = None,
                plausible: Optional[Callable[[Pair], bool]] = None) -> Tuple[Optional[Pair], int]:
    """The best pair whose accuracy is measured: provisional int8 pairs are verified best first (at most
    ``verify_top`` of them) and re-ranked with the measured value; returns ``(pair, verifications)``.
    ``within``: whether a pair meets the budget when timed on the target; one that does not is passed over
    (its latency was predicted within, measured over) for the next best. ``plausible``: whether a pair may meet
    it, judged without timing it (the timings so far); one that may not is passed over before it is verified."""
    n = 0
    pool = list(pairs)
    while pool:
        best = max(pool, key=_rank)
        if plausible is not None and not plausible(best):
            pool.remove(best)
            continue
        if best.measured:
            if within is None or within(best):
                return best, n
            pool.remove(best)
            continue
        pool.remove(best)
        if n >= verify_top:
            continue  # over the verification allowance: provisional pairs are never reported
        m = verify(best)
        n += 1
        # the measured value, with the winner's-curse shrinkage the provisional one had (0 where none)
        shift = best.fitness - fitness_of(best.metrics, fitness)
        pool.append(Pair(best.precision, best.gene, m, fitness_of(m, fitness) + shift, best.latency, True,
                         "OpenVINO int8 (NNCF PTQ, transformer)"))
    return None, n


# ------------------------------------------------------------------ the stage
class PrecisionStage:
    """The precisions beyond fp32 of one search (:class:`~tavt_kit.search.context.SearchContext`): their
    evolutions, sharing the pipeline's evaluator, subset, MAC cache and journal; every latency budget's best
    pair (int8 verified on the deployed model); both picks run deployed on the test images."""

    def __init__(self, ctx, journal):
        self.ctx, self.journal = ctx, journal
        self.scorer = None  # the DeployedScorer of choose(): open until close() (the recommendation scores on it)
        self.searches: Dict[str, EvolutionSearch] = {}
        self.seconds = 0.0

    def evolve(self) -> None:
        from .evolution import JournalSection

        ctx = self.ctx
        lat_budgets = [b for b in ctx.budgets if b.objective == "latency"]
        # int8's provisional metrics are fp32's, with their standard errors (the shrinkage of the int8 evolution)
        fp32 = ctx.searches["fp32"]
        known = {g: {k: rec[k] for k in METRICS if rec.get(k) is not None}
                 for g, rec in fp32.journal.entries.items() if g in fp32.evaluated}
        t0 = time.perf_counter()
        for p in ctx.precisions[1:]:
            evaluator = ctx.evaluator if p == "int8" else CandidateEvaluator(
                ctx.model, ctx.holdout.images, ctx.holdout.labels, ctx.batch_size, transform=ctx.transform,
                shared_blocks=ctx.evaluator.shared_blocks, autocast=AUTOCAST[p], reference=ctx.evaluator,
                device=ctx.device)
            ctx.log(f"searching {p} schedules (accuracy: {ACCURACY_SOURCE[p]})")
            metrics = _cached_metrics(evaluator, known if p == "int8" else None)
            if ctx.reused is not None:  # int8's provisional accuracies are fp32's
                metrics = ctx.reused.wrap("fp32" if p == "int8" else p, metrics)
            search = EvolutionSearch(ctx.space, metrics, ctx.macs, ctx.settings, ctx.objectives[p], lat_budgets,
                                     JournalSection(self.journal, p), lambda s, p=p: ctx.log(f"[{p}] {s}"),
                                     fitness=ctx.fitness)
            search.run()
            if ctx.ship.shrinkage:
                search.shrink()
            self.searches[p] = search
        self.seconds = time.perf_counter() - t0

    def close(self) -> None:
        """Removes the deployed models :meth:`choose` quantised (the recommendation scores its pick on them)."""
        if self.scorer is not None:
            self.scorer.close()
            self.scorer = None

    def choose(self, doc: dict) -> None:
        """Each latency budget's best pair into ``doc`` (``best``; the fp32-only pick as ``best_fp32``), both run
        deployed on the test images, ``vs_fp32`` between them; the precisions' fronts and candidates."""
        from .evolution import JournalSection

        ctx = self.ctx
        calib = ctx.data.calibration
        scorer = DeployedScorer(ctx.model, ctx.transform,
                                lambda: calib(ctx.calibration_images, ctx.settings.seed), ctx.batch_size,
                                ctx.objectives["fp32"].target.threads,
                                {p: o.target for p, o in ctx.objectives.items()})
        # keyed on the calibration: a rerun with other calibration images quantises again
        deployed = JournalSection(self.journal, "int8", kind="deployed", key={"calibration": ctx.calibration})
        self.verified = {g: {k: rec[k] for k in ("accuracy", "nll", "kl")} for g, rec in deployed.entries.items()}
        self.scorer, self.deployed, self.test_runs = scorer, deployed, {}
        self._fronts(doc)
        for row in doc["budgets"]:
            if row["objective"] == "latency":
                self._choose_budget(row, doc)
        doc["precisions"]["candidates"] = {
            p: [_candidate_entry(c, p, self.verified.get(c.gene) if p == "int8" else None, ctx.fitness)
                for c in s.evaluated.values()] for p, s in self.searches.items()}
        doc["precisions"]["deployed_seconds"] = scorer.seconds
        doc["precisions"]["quantized_models"] = scorer.quantized
        doc["timing"]["precision_search_seconds"] = self.seconds

    def prepare_genes(self, genes) -> None:
        """The int8 models of ``genes`` not yet verified (nor taken from an earlier search) quantised together
        (:meth:`DeployedScorer.prepare`), before :meth:`verify_gene` runs each."""
        reused = self.ctx.reused
        todo = [g for g in genes if g not in self.verified and (reused is None or not reused.has("deployed", g))]
        self.scorer.prepare([self.ctx.schedule(g) for g in todo])

    def verify_gene(self, gene, why: str = "") -> Dict[str, float]:
        """The held-out metrics of ``gene`` quantised to int8 and run in OpenVINO (journalled)."""
        ctx = self.ctx
        reused = ctx.reused
        taken = reused.get("deployed", gene) if gene not in self.verified and reused is not None else None
        if taken is not None:  # run by an earlier search of these weights under this calibration
            self.verified[gene] = taken
            self.deployed.record(gene, **taken, runtime="reused")
        if gene not in self.verified:
            if reused is not None:
                reused.count("deployed")
            ctx.log(f"verifying int8 at {list(gene[0])}{why}: NNCF quantisation, held-out images in OpenVINO")
            sc, runtime = self.scorer.scores(ctx.schedule(gene), "int8", ctx.holdout.images, ctx.holdout.labels)
            self.verified[gene] = sc.metrics(0)
            self.deployed.record(gene, **self.verified[gene], runtime=runtime)
        return self.verified[gene]

    def on_test(self, gene, precision: str):
        key = (gene, precision)
        ctx = self.ctx
        if key not in self.test_runs and ctx.n_test:
            self.test_runs[key] = self.scorer.scores(ctx.schedule(gene), precision, ctx.test.images,
                                                     ctx.test.labels)
        return self.test_runs.get(key)

    def _fronts(self, doc: dict) -> None:
        ctx = self.ctx
        fronts = {p: pareto_front(s.evaluated.values(), "latency") for p, s in self.searches.items() if p != "int8"}
        n_front = 0
        if "int8" in self.searches:
            fronts["int8"], n_front, left = _measured_int8_front(self.searches["int8"], doc["budgets"],
                                                                 self.verify_gene, ctx.fitness,
                                                                 time_limit=ctx.front_time_limit,
                                                                 prepare=self.prepare_genes,
                                                                 at_once=self.scorer.workers)
            if left:
                ctx.log(f"int8 front: {n_front} points measured on the deployed model in the "
                        f"{ctx.front_time_limit:g} s allowed (front_time_limit), {left} left out")
        doc["precisions"] = {
            "searched": list(ctx.precisions), "accuracy": {p: ACCURACY_SOURCE[p] for p in ctx.precisions},
            "latency": {p: ctx.objectives[p].info for p in ctx.precisions},
            "fronts": {p: [_front_entry(c, p, self.searches[p]) for c in f] for p, f in fronts.items()},
            "verify_top": ctx.verify_top, "front_verifications": n_front,
        }
        if "int8" in self.searches:
            doc["precisions"]["front_left_out"] = left

    def _choose_budget(self, row: dict, doc: dict) -> None:
        ctx = self.ctx
        pairs = _pairs_within(row["limit"], doc["candidates"], self.searches, self.verified, ctx.fitness)
        over: List[dict] = []
        check = ctx.target_check.within(row["limit"], over, row.get("fraction"))
        best, n_verified = choose_pair(pairs, lambda pair: self.verify_gene(pair.gene), ctx.fitness,
                                       ctx.verify_top, within=None if check is None else
                                       lambda pair: check(pair.gene, pair.precision, pair.latency),
                                       plausible=None if check is None else lambda pair: ctx.target_check.plausible(
                                           pair.gene, pair.precision, pair.latency, row["limit"], row.get("fraction")))
        if over:
            row["timed_over_budget"] = over
        fp32 = row["best"]
        row["best_fp32"] = fp32
        row["int8_verifications"] = n_verified
        t32 = None
        if fp32 is not None:
            fp32["precision"] = "fp32"
            t32 = self.on_test(entry_gene(fp32), "fp32")
            if t32 is not None:
                fp32["deployed"] = _deployed(t32, ctx.n_test)
        if best is None:
            row["best"] = None
            return
        entry = _pair_entry(best, ctx.schedule, ctx.macs, ctx.n_holdout, doc["full"]["macs"])
        if ctx.ship.shrinkage:  # what it brings to the recommendation (shrinkage.py)
            entry.update(fitness_shrunk=best.fitness, fitness_measured=fitness_of(best.metrics, ctx.fitness))
        timed = ctx.target_check.timed.get((best.gene, best.precision))
        if timed is not None:  # timed while it was chosen (the round-robin timing, if any, replaces it)
            entry.update(latency_measured_ms=timed * 1e3, measured_within_budget=ctx.target_check.timed_within(
                best.gene, best.precision, row["limit"], row.get("fraction")))
        tp = self.on_test(best.gene, best.precision)
        if tp is not None:
            entry["deployed"] = _deployed(tp, ctx.n_test)
            entry["test_accuracy"] = entry["deployed"]["test_accuracy"]
            entry["test_interval"] = entry["deployed"]["test_interval"]
        if ctx.selection is not None:  # scored where it ships: int8 on the model quantised above
            entry.update(ctx.selection.fields("supernet", ctx.model, ctx.schedule(best.gene), best.precision,
                                               deployed=self.scorer))
        row["best"] = entry
        if t32 is not None and tp is not None:
            row["vs_fp32"] = paired_difference(tp[0].hits[0].tolist(), t32[0].hits[0].tolist())
        row.setdefault("schedule_file", schedule_file_name(row["label"]))


def _cached_metrics(evaluator: CandidateEvaluator, cache: Optional[dict]):
    """schedules -> held-out metrics from ``evaluator``, reusing (and filling) ``cache`` where given."""
    def fn(scheds: List[TokenSchedule]) -> List[Dict[str, float]]:
        todo = [s for s in scheds if cache is None or gene_of(s) not in cache]
        sc = evaluator.scores(todo)
        got = {gene_of(s): sc.metrics(i) for i, s in enumerate(todo)}
        if cache is not None:
            cache.update(got)
        fn.taken += len(scheds) - len(todo)
        return [(cache or got)[gene_of(s)] for s in scheds]
    fn.taken = 0  # read by the evolution: cached ones cost no time, so its rate does not count them
    return fn


def remeasure_round(doc: dict, ctx) -> None:
    """Where the search's latency objective can time on this machine: every budget's pick and training-free
    deployable timed together with your model (see :func:`_remeasure_together`)."""
    if ctx.objectives["fp32"].can_remeasure:
        _remeasure_together(doc, ctx.model, ctx.schedule, ctx.objectives, ctx.log)


def _remeasure_together(result: dict, model: nn.Module, sched, objectives, log) -> None:
    """Every budget's pair and fp32-only pick and the full fp32 model deployed with OpenVINO and timed
    round-robin in one process (so their latencies compare: timed one by one, a machine whose speed drifts
    would decide); sets each one's ``latency_measured_ms``, ``measured_fraction_of_full`` with its 95 %
    ``measured_fraction_interval`` over the rotations (:func:`~tavt_kit.bench.ratio.paired_ratio`), and
    ``measured_within_budget``. A budget in percent of your model's latency is met when the whole interval is
    within it: judged by the two medians, 16 % of the options within 5 % of the line that one round passed ran
    over it in another (13 % by the interval's top; ``docs/benchmarks/ratio_stability.md``). Where a latency
    objective is not OpenVINO's (an fp32 table profiled with torch), each pick is timed on its own target."""
    from ..bench.measure import measure_schedules
    from ..bench.ratio import LatencyRatio, paired_ratio
    from ..bench.timing import TimingPolicy

    items, where = {}, {}
    full = result["full"]
    items["full"] = (sched((tuple(full["counts"]), ())), "fp32")
    where["full"] = (full, None)
    for i, row in enumerate(result["budgets"]):  # a MAC budget's pick (fp32) is timed with them
        lat = row["objective"] == "latency"
        for key in ("best", "best_fp32") if lat else ("best",):
            d = row.get(key)
            if d is not None:
                items[(i, key)] = (sched(entry_gene(d)), d.get("precision", "fp32"))
                where[(i, key)] = (d, row if lat else None)
        # the training-free deployables (parent weights) in the same round: latency does not depend on weights
        for name, d in row.get("training_free", {}).items():
            items[(i, name)] = (sched(entry_gene(d)), d.get("precision", "fp32"))
            where[(i, name)] = (d, row if lat else None)
    targets = {p: objectives[p].target for p in {p for _, p in items.values()}}
    target = targets["fp32"]
    batch = target.batch_size
    if all(t.backend == "openvino" for t in targets.values()):
        log(f"timing {len(items)} deployed picks round-robin at batch {batch} (OpenVINO)")
        measured = measure_schedules(model, items, target=target, policy=TimingPolicy(min_rounds=JUDGING_ROUNDS))
        ms = {k: 1e3 * measured[k][0].p50 for k in items}
        # the ratio to the full model timed in the same rotations: what a machine whose speed drifts does not
        # change; its interval is how far it moved while they were timed
        ratios = {k: paired_ratio(measured[k][0], measured["full"][0]) for k in items}
        how = ("OpenVINO, every pick and the full fp32 model timed round-robin in one process (median; a share "
               "of your model's latency judged by the top of the ratio's 95 % interval over the rotations)")
    else:
        ms = {k: 1e3 * float(objectives[p].remeasure(s)) for k, (s, p) in items.items()}
        ratios = {k: LatencyRatio.of_point(ms[k] / ms["full"]) for k in items}
        how = "each pick timed on its own, on its precision's target (median)"
    for k, (d, row) in where.items():
        d["latency_measured_ms"] = ms[k]
        d["measured_fraction_of_full"] = ratios[k].ratio
        d["measured_fraction_interval"] = list(ratios[k].interval)
        if row is not None:
            d["measured_within_budget"] = ratios[k].within(row["fraction"]) if "fraction" in row \
                else d["latency_measured_ms"] <= row["limit"] * 1e3
    # recorded with a precision search's precisions, or an fp32 search's timing
    record = result["precisions"] if "precisions" in result else result.setdefault("timing", {})
    record["remeasured"] = {"method": how, "batch_size": batch, "threads": target.threads,
                            "rotations": max(r.rounds for r in ratios.values())}


def spread_order(n: int) -> List[int]:
    """``0 .. n-1`` in the order that covers a sorted list evenly soonest: both ends, then the middle, then the
    middles of the halves (0, n-1, n//2, ...): a front measured for a limited time is spread over its range."""
    order, seen, spans = [], set(), [(0, n - 1)]
    for i in (0, n - 1):
        if 0 <= i < n and i not in seen:
            order.append(i)
            seen.add(i)
    while spans:
        nxt = []
        for lo, hi in spans:
            if hi - lo < 2:
                continue
            mid = (lo + hi) // 2
            if mid not in seen:
                order.append(mid)
                seen.add(mid)
            nxt += [(lo, mid), (mid, hi)]
        spans = nxt
    return order + [i for i in range(n) if i not in seen]


def _measured_int8_front(search: EvolutionSearch, budgets: Sequence[dict], verify_gene, fitness: str,
                         time_limit: Optional[float] = None, clock: Callable[[], float] = time.perf_counter,
                         prepare: Optional[Callable[[list], None]] = None, at_once: int = 1
                         ) -> Tuple[list, int, int]:
    """The int8 Pareto front with every point's accuracy measured on the deployed int8 model, how many points
    were measured, and how many were left out: each candidate on the provisional front (fp32 fitness) within the
    widest latency budget is quantised and run on the held-out images -- in :func:`spread_order`, ``at_once``
    at a time (``prepare(genes)`` quantises them together first), until ``time_limit`` seconds have passed (at
    least one) -- and the front is drawn again from the measured values."""
    limit = max((b["limit"] for b in budgets if b["objective"] == "latency"), default=float("inf"))
    within = [c for c in search.evaluated.values() if c.latency is not None and c.latency <= limit]
    provisional = pareto_front(within, "latency")
    measured = []
    start, n, order = clock(), len(provisional), spread_order(len(provisional))
    while len(measured) < n:  # each an NNCF quantisation and a run: said with the time left
        if measured and time_limit is not None and clock() - start >= time_limit:
            break
        batch = order[len(measured):len(measured) + max(1, int(at_once))]
        if prepare is not None and len(batch) > 1:
            prepare([provisional[k].gene for k in batch])
        for k in batch:
            i = len(measured) + 1
            time_left = f", ETA {eta(i - 1, n, clock() - start)}" if i > 1 else ""
            c = provisional[k]
            m = verify_gene(c.gene, f" (int8 front {i}/{n}{time_left})")
            measured.append(replace(c, accuracy=m["accuracy"], nll=m["nll"], kl=m["kl"],
                                    fitness=fitness_of(m, fitness)))
    return pareto_front(measured, "latency"), len(measured), n - len(measured)


def _front_entry(c, precision: str, search: EvolutionSearch) -> Dict[str, Any]:
    d = {**c.to_dict(), "precision": precision, "measured": True}
    if precision == "int8":  # beside the measured int8 accuracy, the fp32 one it was provisionally given
        d["fp32_accuracy"] = search.evaluated[c.gene].accuracy
    return d


def _candidate_entry(c, precision: str, measured: Optional[Dict[str, float]], fitness: str) -> Dict[str, Any]:
    """A candidate as ``search.json`` lists it; an int8 one says whether its accuracy is measured (on the deployed
    int8 model; the fp32 value it was provisionally given kept as ``fp32_accuracy``) or still the provisional
    fp32 value."""
    d = {**c.to_dict(), "precision": precision}
    if precision == "int8":
        d["measured"] = measured is not None
        if measured is not None:
            d["fp32_accuracy"] = c.accuracy
            d.update(measured, fitness=fitness_of(measured, fitness))
    return d


def _deployed(run: Tuple[ScheduleScores, str], n: int) -> Dict[str, Any]:
    sc, runtime = run
    acc = sc.correct[0] / n
    return {"runtime": runtime, "test_accuracy": acc, "test_interval": list(wilson_interval(sc.correct[0], n)),
            "test_images": n}


def _pair_entry(pair: Pair, sched, macs, n_hold: int, full_macs: int) -> Dict[str, Any]:
    s = sched(pair.gene)
    m = pair.metrics
    return {"precision": pair.precision, "counts": list(pair.gene[0]),
            **({"reducers": list(s.reducers)} if s.reducers else {}), "macs": macs(s),
            "speedup_macs": full_macs / macs(s), "latency_ms": pair.latency * 1e3,
            "holdout_accuracy": m["accuracy"], "holdout_interval": list(wilson_interval(round(m["accuracy"] * n_hold),
                                                                                         n_hold)),
            "holdout_nll": m["nll"], "holdout_kl": m["kl"], "holdout_source": pair.source}
