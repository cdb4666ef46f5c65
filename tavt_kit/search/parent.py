"""The user's own model as the reference of a search, and what needs no training competing with the supernet.

A supernet records the checkpoint it was distilled from (its *parent*: the model the user brought). The
search loads it and measures, on the same held-out and test images as the searched schedules:

* the parent itself (full schedule): every entry of ``search.json`` gets ``vs_parent``, its test accuracy
  minus the parent's, paired on the same images, with the 95 % interval;
* the training-free deployables of each budget, run on the parent's weights: ToMe with the smallest
  constant r that meets the budget (``tome_parent``) and the parent itself where it meets the budget;
  in a search over precisions, each of them at every precision searched too (``parent@int8``,
  ``tome_parent@bf16``, ...; the int8 ones quantised with NNCF exactly as the searched pairs), fitted to that
  precision's latency, held-out accuracy measured as the searched pairs' is (bf16 autocast, int8 on the
  deployed model) and test accuracy on the deployed runtime. Where the latency comes from a table and the
  search can time on the target, ToMe's r and whether your model meets a budget are decided by timing them
  there (``training_free_fit`` records every probe), not by the table's prediction; for a budget given as a
  share of your model, each probe is timed round-robin beside your model and judged by its ratio's interval, as
  the final round judges the options (:mod:`~.shares`).

Each budget then *recommends* one deployable among the searched pick and the training-free ones
(:mod:`~.recommend`): the best of ToMe on your model and your model, unless the schedule searched on your model
beats it beyond noise, then that, unless the supernet's pick beats it beyond noise; each lead paired per image,
on the selection images (held-out images set aside, which the evolution never scored,
:mod:`~.selection`; the held-out images themselves where none were set aside), by NLL for the nll/kl fitnesses
(which compares across weights), else accuracy: the test split only reports. If ToMe on the parent wins, the
recommendation says so and names the parent's weights.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import nn

from ..errors import CheckpointError, TavtKitError
from ..schedules.schedule import TokenSchedule
from ..stats import accuracy_interval, paired_difference
from .baselines import fit_tome, fit_tome_measured
from .data import shard
from .evaluate import CandidateEvaluator
from .evolution import Budget, entry_gene, gene_of
from .parent_search import FAMILY, ParentSearch, merge_space
from .recommend import PairedEvidence, paired_lead, recommend
from .shares import ShareTimer


def resolve_parent(model: nn.Module, parent, log) -> Optional[nn.Module]:
    """``parent="auto"``: the recorded parent when it loads (a note otherwise), or ``model`` itself where it is your
    trained model rather than a supernet (:func:`~tavt_kit.models.checkpoint.is_own_model`: the search is then
    on your model's own weights, see :func:`~.space.searched_space`); None: no parent; a model or a checkpoint
    path: that one (checked against the recorded weights when there is a record)."""
    from ..models.checkpoint import is_own_model, load_checkpoint, load_parent, parent_of

    if parent is None:
        return None
    if isinstance(parent, nn.Module):
        return parent.eval()
    record = parent_of(model)
    if parent == "auto":
        if record is None and is_own_model(model):
            log("this checkpoint is your trained model, not a supernet made by fgvc-kit distill: the search runs on "
                "its own weights (no training) and compares with it, ToMe on it and it at each precision")
            return model
        if record is None:
            log("note: this checkpoint records no parent (the model distillation started from); results are "
                "compared with the supernet's own full schedule only")
            return None
        try:
            return load_parent(model)
        except TavtKitError as e:
            log(f"note: the recorded parent is not used ({e})")
            return None
    return load_parent(model, path=str(parent)) if record is not None else load_checkpoint(str(parent)).eval()


class ParentStage:
    """Measures the parent and its training-free deployables for a :class:`~.context.SearchContext`."""

    def __init__(self, ctx, parent: nn.Module):
        self.ctx, self.parent = ctx, parent
        # precision -> {r: seconds measured on the target}: ToMe's fits by measurement, shared by the budgets
        self.probes: Dict[str, Dict[int, float]] = {}
        self.evolution: Optional[ParentSearch] = None  # schedules searched on the parent's weights (parent_search.py)
        self._chosen: Dict[tuple, object] = {}  # (precision, limit) -> the parent search's pick there
        self._scorers: Dict[str, object] = {}  # weights -> DeployedScorer for int8 (apply_precisions; close())
        self._paired: Optional[PairedEvidence] = None  # per-image scores the recommendation pairs (recommend.py)
        self._said: set = set()  # shares whose timed limit was logged (_limit_for)
        self._shares: Optional[ShareTimer] = None  # probes of a share budget, timed beside your model (shares.py)
        self._share_fits: Dict[str, Dict[int, float]] = {}  # precision -> {r: top of its share's interval}
        self.own = parent is ctx.model  # the search ran on your model's own weights (resolve_parent)
        if getattr(parent, "num_patches", None) != ctx.model.num_patches or \
                getattr(parent, "depth", None) != ctx.model.depth:
            raise CheckpointError("parent: its token grid or depth differs from the supernet's; give the checkpoint "
                                  "distillation started from")

    def _score(self, scheds: Dict[str, TokenSchedule]):
        """Held-out metrics and test hits (per image) of the parent at each schedule."""
        ctx = self.ctx
        hold = CandidateEvaluator(self.parent, shard(ctx.holdout).images, shard(ctx.holdout).labels,
                                  ctx.batch_size, transform=ctx.transform, device=ctx.device)
        names = list(scheds)
        sc = hold.scores([scheds[n] for n in names])
        metrics = {n: sc.metrics(i) for i, n in enumerate(names)}
        hits: Dict[str, torch.Tensor] = {}
        if ctx.n_test:
            tev = CandidateEvaluator(self.parent, ctx.test.images, ctx.test.labels, ctx.batch_size,
                                     transform=ctx.transform, device=ctx.device)
            tsc = tev.scores([scheds[n] for n in names], per_image=True)
            hits = {n: tsc.hits[i] for i, n in enumerate(names)}
        return metrics, hits

    def apply(self, doc: dict) -> None:
        """Adds ``parent``, every entry's ``vs_parent``, each budget's ``training_free`` and ``recommended``."""
        from ..models.checkpoint import parent_of, weights_digest

        ctx = self.ctx
        full = TokenSchedule.full(ctx.model.depth, ctx.model.num_patches)
        scheds = {"parent": full}
        self._search_parent()
        picks = {}
        limits = {b.label: self._limit_for(b.limit, b.fraction) if b.objective == "latency" else b.limit
                  for b in ctx.budgets}
        for b in ctx.budgets:
            s = self._tome_within(ctx.macs if b.objective == "macs" else ctx.latency, limits[b.label],
                                  b.fraction if b.objective == "latency" else None)
            if s is not None:
                scheds[f"tome {b.label}"] = s
            picks[b.label] = self._searched_on_parent(b)
            if picks[b.label] is not None:
                scheds[f"{FAMILY} {b.label}"] = ctx.schedule(picks[b.label].gene)
        metrics, hits = self._score(scheds)
        ref = hits.get("parent")
        self._parent_hits = ref  # the parent's test hits (fp32), what every vs_parent pairs with
        record = parent_of(ctx.model) or {}
        path = record.get("path") or ((ctx.source or {}).get("checkpoint") if self.own else None)
        doc["parent"] = {"path": path, "weights_sha256": weights_digest(self.parent),
                         "recorded": bool(record), **self._entry("parent", full, metrics, hits, ref)}
        if self.own:  # the searched schedules run on your model's weights: its picks are deployables of it
            doc["parent"]["searched_weights"] = True
            for row in doc["budgets"]:
                if row.get("best") is not None:
                    row["best"]["weights"] = "parent"
        for d in [doc["full"], doc["smallest"]] + doc["pareto_front"] + \
                [e for rows in doc["baselines"].values() for e in rows.values()]:
            self._versus(d, ctx.test_hits.get(entry_gene(d)), ref)
        for row in doc["budgets"]:
            b = next(x for x in ctx.budgets if x.label == row["label"])
            if row.get("best") is not None:
                self._versus(row["best"], ctx.test_hits.get(entry_gene(row["best"])), ref)
            for d in row["baselines"].values():
                self._versus(d, ctx.test_hits.get(entry_gene(d)), ref)
            free = {}
            if f"tome {b.label}" in scheds:
                s = scheds[f"tome {b.label}"]
                free["tome_parent"] = {**self._entry(f"tome {b.label}", s, metrics, hits, ref),
                                       "r": ctx.model.num_patches - s.counts[0]}
                if b.objective == "latency":
                    self._measured_fit(free["tome_parent"], s, ctx.latency.precision, limits[b.label], b.fraction)
            if picks[b.label] is not None:
                free[FAMILY] = {**self._entry(f"{FAMILY} {b.label}", scheds[f"{FAMILY} {b.label}"], metrics, hits,
                                              ref), **ParentSearch.fields(picks[b.label])}
            cost = ctx.macs(full) if b.objective == "macs" else (self._full_cost(ctx.latency) if ctx.latency
                                                                    else None)
            if cost is not None and cost <= limits[b.label]:
                free["parent"] = dict(doc["parent"])
            if b.objective == "latency":
                self._time_like_the_pick(row, free, scheds.get(f"tome {b.label}"), limits[b.label])
                self._time_like_the_pick(row, free, scheds.get(f"{FAMILY} {b.label}"), limits[b.label], FAMILY)
            row["training_free"] = free
            row["recommended"] = self._recommend(row, free)
        self._record_probes(doc)

    def _time_like_the_pick(self, row: dict, free: dict, schedule: Optional[TokenSchedule], limit: float,
                            family: str = "tome_parent") -> None:
        """Where the search timed its pick on the target (a table predicted it), ToMe on your model (``family``:
        or the schedule searched on it) is timed too, so the recommendation is chosen among deployables whose
        latency was measured, not only predicted: both get ``latency_measured_ms`` and ``measured_within_budget``."""
        ctx = self.ctx
        best = row.get("best") or {}
        if best.get("latency_measured_ms") is None or ctx.latency is None or not ctx.latency.can_remeasure:
            return
        shares = self._share_timer(ctx.latency, row.get("fraction"))
        ratio = shares.ratios.get((entry_gene(best), ctx.latency.precision)) if shares is not None else None
        best.setdefault("measured_within_budget", best["latency_measured_ms"] <= limit * 1e3 if ratio is None
                        else ratio.within(row["fraction"]))
        d = free.get(family)
        if d is None or schedule is None or d.get("fitted_by") == "measurement":
            return
        if shares is not None:  # a share: beside your model, as the final round judges it
            d.update(shares.fields(schedule, ctx.latency.precision, row["fraction"]))
            return
        sec = ctx.target_check.time(gene_of(schedule), ctx.latency.precision)  # shared with the pick's timings
        d["latency_measured_ms"] = sec * 1e3
        d["measured_within_budget"] = d["latency_measured_ms"] <= limit * 1e3

    def apply_precisions(self, doc: dict, stage) -> None:
        """After a precision search chose its pairs (:class:`~.precision.PrecisionStage`): the training-free
        deployables at each precision beyond fp32 join every latency budget's ``training_free``, the pair gets
        its ``vs_parent`` (deployed, paired on the test images), and ``recommended`` is chosen again among all."""
        ctx = self.ctx
        ref = self._parent_hits
        from .deployed import DeployedScorer

        # your model deployed as the searched pairs are (the same calibration images); the supernet's int8 models,
        # quantised by the precision stage, are scored on its own scorer (no second quantisation)
        scorer = stage.scorer if self.own else DeployedScorer(  # one deployed model per weights
            self.parent, ctx.transform, stage.scorer.calibration, ctx.batch_size,
            ctx.objectives["fp32"].target.threads, {p: o.target for p, o in ctx.objectives.items()})
        self._scorers.update(parent=scorer, supernet=stage.scorer)
        rows = [row for row in doc["budgets"] if row["objective"] == "latency"]
        limits = [self._limit_for(row["limit"], row.get("fraction")) for row in rows]
        chosen = [[(p, self._free_schedules(p, row["limit"], limit, row.get("fraction"))) for p in ctx.precisions[1:]]
                  for row, limit in zip(rows, limits)]
        scorer.prepare([s for per_row in chosen for p, scheds in per_row if p == "int8" for s in scheds.values()])
        entries: Dict[tuple, dict] = {}  # (schedule, precision) -> entry: one measurement for all budgets
        for row, limit, per_row in zip(rows, limits, chosen):
            free = row.setdefault("training_free", {})
            for p, schedules in per_row:
                for name, s in schedules.items():
                    key = (gene_of(s), p)
                    if key not in entries:
                        entries[key] = self._deployed_entry(scorer, s, p, ref)
                    free[f"{name}@{p}"] = dict(entries[key])
                    if name == FAMILY:  # its fitness corrected as the fp32 candidate's was
                        free[f"{name}@{p}"].update(ParentSearch.fields(self._chosen[(p, row["limit"])]))
                    if name == "tome_parent":
                        self._measured_fit(free[f"{name}@{p}"], s, p, limit, row.get("fraction"))
            for key in ("best", "best_fp32"):
                d = row.get(key)
                run = stage.test_runs.get((entry_gene(d), d.get("precision", "fp32"))) if d else None
                if run is not None and ref is not None:
                    d["vs_parent"] = paired_difference(run[0].hits[0].tolist(), ref.tolist())
            row["recommended"] = self._recommend(row, free)
        self._record_probes(doc)

    def _free_schedules(self, precision: str, limit: float, timed_limit: float,
                        fraction: Optional[float] = None) -> Dict[str, TokenSchedule]:
        """The parent and ToMe on it that meet ``timed_limit`` (:meth:`_limit_for`) on ``precision``'s latency
        objective (a share ``fraction`` of your model: timed beside it where it can be, :meth:`_share_timer`),
        and the schedule searched on your model for the budget placed at ``limit``."""
        ctx = self.ctx
        cost = ctx.objectives[precision]
        full = TokenSchedule.full(ctx.model.depth, ctx.model.num_patches)
        out = {}
        shares = self._share_timer(cost, fraction)
        if (shares.share(full, precision).high <= fraction) if shares is not None else \
                self._full_cost(cost) <= timed_limit:
            out["parent"] = full
        s = self._tome_within(cost, timed_limit, fraction)
        if s is not None and s.counts != full.counts:
            out["tome_parent"] = s
        c = self._searched_on_parent(Budget("latency", limit, fraction=fraction), precision)
        if c is not None:
            out[FAMILY] = self.ctx.schedule(c.gene)
        return out

    def _searched_on_parent(self, budget: Budget, precision: str = "fp32"):
        """The parent search's pick for ``budget`` at ``precision`` (kept for its fitness fields), None where there
        is none or it is your model's full schedule (your model itself is an option of its own)."""
        c = self.evolution.pick(budget, precision) if self.evolution is not None else None
        if c is None or c.counts == TokenSchedule.full(self.ctx.model.depth, self.ctx.model.num_patches).counts:
            return None
        self._chosen[(precision, budget.limit)] = c
        return c

    def _search_parent(self) -> None:
        """The evolution on the parent's weights, merging only (:mod:`~.parent_search`), where the search asks for
        it and the parent can merge."""
        ctx = self.ctx
        # on your own model the search itself is the search on its weights
        space = merge_space(ctx.space, self.parent) if ctx.ship.parent_search and not self.own \
            else None
        if space is None:
            return
        ctx.log("searching schedules on your model's own weights (merging tokens, no training)")
        self.evolution = ParentSearch(ctx, self.parent, space)
        self.evolution.run()

    def _tome_within(self, cost, limit: float, fraction: Optional[float] = None) -> Optional[TokenSchedule]:
        """ToMe's schedule with the smallest r that meets ``limit`` on ``cost`` (None: none does, or ``cost``
        cannot price a merge: a latency table profiled for drop only). Where ``cost`` is a table's prediction
        and the search can time on the target, r is fitted by measurement (:func:`fit_tome_measured`): the
        table alone can put ToMe milder, or slower, than the budget allows, and the recommendation would then
        compare the pick with a weaker ToMe than the user could have. A budget given as a share ``fraction`` of
        your model is fitted on the share itself, each probe timed beside your model (:meth:`_share_timer`)."""
        space, ctx = self.ctx.space, self.ctx
        try:
            shares = self._share_timer(cost, fraction)
            if shares is not None:
                full = TokenSchedule.full(space.depth, space.num_patches)
                base = ctx.objectives["fp32"](full)  # the table's share: where the fit starts and steers
                fits = self._share_fits.setdefault(cost.precision, {})
                s, _ = fit_tome_measured(space.depth, space.num_patches, lambda x: cost(x) / base,
                                         lambda x: shares.share(x, cost.precision).high, fraction,
                                         space.min_tokens, measured=fits)
                return s
            if getattr(cost, "source", None) == "table" and cost.can_remeasure:
                probes = self.probes.setdefault(cost.precision, {})
                s, _ = fit_tome_measured(space.depth, space.num_patches, cost, self._timer(cost, limit), limit,
                                         space.min_tokens, measured=probes)
                return s
            return fit_tome(space.depth, space.num_patches, cost, limit, space.min_tokens)
        except TavtKitError:
            return None

    def _share_timer(self, cost, fraction: Optional[float]) -> Optional[ShareTimer]:
        """Where a share ``fraction`` of your model is fitted on ``cost``'s target by timing: the timer of its
        probes, each timed round-robin beside your model (None: a budget in ms, or a target that cannot be timed
        so; the fit then compares with your model timed on its own, :meth:`_limit_for`)."""
        if fraction is None or cost is None or not cost.can_remeasure or \
                not ShareTimer.available(self.ctx.objectives):
            return None
        if self._shares is None:  # the search's own, where it checks its picks so (one timing each for both)
            self._shares = getattr(self.ctx.target_check, "shares", None) or \
                ShareTimer(self.ctx.model, self.ctx.objectives, self.ctx.log)
        return self._shares

    def _limit_for(self, limit: float, fraction: Optional[float]) -> float:
        """The limit ToMe on your model is fitted to, and your model checked against: for a budget given as a
        share of your model's latency, that share of your model's fp32 latency as the target runs it (timed where
        ToMe is fitted by timing), the ratio the final round judges by; the table's placement of the share
        (``limit``) would fit ToMe to the table's speed, not the machine's. Other budgets: ``limit``."""
        if fraction is None or self.ctx.latency is None:
            return limit
        timed = fraction * self._full_cost(self.ctx.latency)
        if timed != limit and fraction not in self._said:
            self._said.add(fraction)
            self.ctx.log(f"budget {100 * fraction:g}%: ToMe on your model fitted to {timed * 1e3:.4g} ms, "
                          f"{100 * fraction:g}% of your model as the target ran it (placed at {limit * 1e3:.4g} ms "
                          "from the latency table)")
        return timed

    def _full_cost(self, cost) -> float:
        """Your model's (full schedule's) cost on ``cost``: measured on the target where ToMe is fitted by
        measurement (it decides whether your model itself meets a budget), else ``cost``'s own value."""
        full = TokenSchedule.full(self.ctx.model.depth, self.ctx.model.num_patches)
        if getattr(cost, "source", None) == "table" and cost.can_remeasure:
            probes = self.probes.setdefault(cost.precision, {})
            if 0 not in probes:  # r = 0 is the full schedule (timed once: the search's own timing of it too)
                probes[0] = self.ctx.target_check.time(gene_of(full), cost.precision)
            return probes[0]
        return cost(full)

    def _record_probes(self, doc: dict) -> None:
        if any(self.probes.values()):
            doc["training_free_fit"] = {
                "method": "ToMe's r fitted by timing it on the target (table-steered, then bisected); r = 0 is "
                          "your model", "probes_ms": {p: {str(r): v * 1e3 for r, v in sorted(pr.items())}
                                                      for p, pr in self.probes.items() if pr}}
        shares = self._shares.record() if self._shares is not None else {}
        if shares:
            doc.setdefault("training_free_fit", {})["shares"] = {
                "method": "each probe timed round-robin beside your model in fp32 (at least "
                          f"{self._shares.rounds} rotations); within a share when the top of its ratio's 95 % "
                          "interval is at or under it",
                "probes": shares}

    def _timer(self, cost, limit: float):
        """A schedule timed on ``cost``'s target (shared with the search's timings), saying what each probe of a
        fit measured (each deploys and times a model)."""
        def timed(s: TokenSchedule) -> float:
            sec = self.ctx.target_check.time(gene_of(s), cost.precision)
            r = self.ctx.model.num_patches - s.counts[0]
            self.ctx.log(f"ToMe on your model, r={r} at {cost.precision}: {sec * 1e3:.4g} ms on the target "
                          f"({'within' if sec <= limit else 'over'} {limit * 1e3:.4g} ms)")
            return sec
        return timed

    def _measured_fit(self, d: dict, s: TokenSchedule, precision: str, limit: float,
                      fraction: Optional[float] = None) -> None:
        """Marks a ToMe entry fitted by measurement: its probe's time and whether it met ``limit`` (a share
        ``fraction``: its ratio to your model timed beside it, judged by the interval's top)."""
        if self._shares is not None and fraction is not None and s.reducers and "merge" in s.reducers:
            d["fitted_by"] = "measurement"
            d.update(self._shares.fields(s, precision, fraction))
            return
        r = self.ctx.model.num_patches - s.counts[0]
        probes = self.probes.get(precision) or {}
        if r in probes and s.reducers and "merge" in s.reducers:
            d["fitted_by"] = "measurement"
            d["latency_measured_ms"] = probes[r] * 1e3
            d["measured_within_budget"] = probes[r] <= limit

    def _deployed_entry(self, scorer, s: TokenSchedule, precision: str, ref) -> dict:
        """A training-free deployable at ``precision``: held-out metrics as the search measures that precision
        (bf16/fp16 autocast, int8 quantised and run in OpenVINO), test accuracy on the deployed runtime."""
        from .deployed import AUTOCAST
        from .pairs import ACCURACY_SOURCE

        ctx = self.ctx
        if precision == "int8":
            ctx.log(f"training-free: the parent at {list(s.counts)} quantised to int8 (NNCF), held-out images")
            m = scorer.scores(s, "int8", ctx.holdout.images, ctx.holdout.labels)[0].metrics(0)
            source = "OpenVINO int8 (NNCF PTQ, transformer)"
        else:
            ev = CandidateEvaluator(self.parent, ctx.holdout.images, ctx.holdout.labels, ctx.batch_size,
                                    transform=ctx.transform, autocast=AUTOCAST[precision], device=ctx.device)
            m, source = ev.scores([s]).metrics(0), ACCURACY_SOURCE[precision]
        d = {"counts": list(s.counts), **({"reducers": list(s.reducers)} if s.reducers else {}),
             "precision": precision, "macs": ctx.macs(s), "weights": "parent",
             "latency_ms": ctx.objectives[precision](s) * 1e3, "holdout_accuracy": m["accuracy"],
             "holdout_interval": accuracy_interval(m["accuracy"], ctx.n_holdout), "holdout_nll": m["nll"],
             "holdout_source": source}
        if ctx.selection is not None:
            d.update(ctx.selection.fields("parent", self.parent, s, precision, deployed=scorer))
        if s.reducers and "merge" in s.reducers:
            d["r"] = ctx.model.num_patches - s.counts[0]
        if ctx.n_test:
            sc, runtime = scorer.scores(s, precision, ctx.test.images, ctx.test.labels)
            acc = sc.correct[0] / ctx.n_test
            d.update(test_accuracy=acc, test_interval=accuracy_interval(acc, ctx.n_test),
                     deployed={"runtime": runtime, "test_accuracy": acc, "test_images": ctx.n_test})
            if ref is not None:
                d["vs_parent"] = paired_difference(sc.hits[0].tolist(), ref.tolist())
        return d

    def _entry(self, name: str, s: TokenSchedule, metrics, hits, ref) -> dict:
        ctx = self.ctx
        m = metrics[name]
        d = {"counts": list(s.counts), **({"reducers": list(s.reducers)} if s.reducers else {}),
             "macs": ctx.macs(s), "weights": "parent", "holdout_accuracy": m["accuracy"],
             "holdout_interval": accuracy_interval(m["accuracy"], ctx.n_holdout), "holdout_nll": m["nll"]}
        if ctx.selection is not None:
            d.update(ctx.selection.fields("parent", self.parent, s))
        if ctx.latency is not None:
            try:
                d["latency_ms"] = ctx.latency(s) * 1e3
            except TavtKitError:
                d["latency_ms"] = None
        if name in hits:
            h = hits[name]
            acc = int(h.sum()) / len(h)
            d.update(test_accuracy=acc, test_interval=accuracy_interval(acc, ctx.n_test))
            if name != "parent" and ref is not None:
                d["vs_parent"] = paired_difference(h.tolist(), ref.tolist())
        return d

    @staticmethod
    def _versus(d: dict, h, ref) -> None:
        if d is not None and h is not None and ref is not None:
            d["vs_parent"] = paired_difference(h.tolist(), ref.tolist())

    def recommend_again(self, doc: dict) -> None:
        """Each latency budget's ``recommended`` chosen again after every option was timed round-robin on the
        target (``measured_within_budget`` from that one round, the fairest comparison): a deployable timed over
        the budget is not recommended while another meets it."""
        for row in doc["budgets"]:
            if row["objective"] == "latency" and "training_free" in row:
                row["recommended"] = self._recommend(row, row["training_free"])

    def _recommend(self, row: dict, free: dict) -> dict:
        """The deployable to ship for a budget (:func:`~.recommend.recommend`): the best on your model's weights,
        unless the supernet's pick beats it beyond noise, paired per image on the images the choice is made on."""
        ctx = self.ctx
        selection = ctx.selection
        metric = "accuracy" if ctx.fitness == "accuracy" else "NLL"

        def values(family: str, d: dict):
            weights, precision = _weights(family), d.get("precision", "fp32")
            return self._evidence().values(weights, self.parent if weights == "parent" else ctx.model,
                                           ctx.schedule(entry_gene(d)), precision, self._scorers.get(weights))

        def lead(family: str, d: dict, other: str, o: dict):
            return paired_lead(values(family, d), values(other, o), metric)

        return recommend(row, free, fitness=ctx.fitness, selection_images=selection.n if selection else None,
                         evidence=lead, confidence=ctx.ship.confidence,
                         searched_weights="parent" if self.own else "supernet")

    def _evidence(self) -> PairedEvidence:
        """Per-image scores of the compared deployables, made once: the selection images' scorer where the search
        set some aside (it scored the options already), else one on the held-out images."""
        if self._paired is None:
            ctx = self.ctx
            self._paired = ctx.selection or PairedEvidence(ctx.holdout, ctx.batch_size, ctx.transform, ctx.device)
        return self._paired

    def close(self) -> None:
        """Removes the deployed models this stage quantised or converted (the supernet's scorer is the precision
        stage's, closed by it)."""
        scorer = self._scorers.pop("parent", None)
        if scorer is not None and scorer is not self._scorers.get("supernet"):
            scorer.close()


def _weights(family: str) -> str:
    return "supernet" if family == "searched" else "parent"

