"""The one search pipeline: evolution per precision, choice per budget, baselines, test split, one writer.

:func:`search_schedules` is the whole search a Python user (and ``fgvc-kit search``) runs. Precision is one
more dimension of the same search: the schedules of every precision are scored by one evaluator on one
held-out subset, their MACs counted once, their latencies cached in one :class:`LatencyObjective` each and
journalled in one journal; each budget's choice is made over every (schedule, precision) pair
(:mod:`~tavt_kit.search.pairs`), the test split is used once at the end, and ``search.json`` is
completed once at the end: until then it says ``"status": "running"`` (from the start, and with the figures
of the stages done before the slow ones: the parent's and the precisions'), so a search stopped on the way
never leaves a file that reads as its result. Fitness is measured on the held-out split (accuracy, NLL or KL to
the full model); every accuracy comes with its 95 % Wilson interval, each baseline with its paired difference to
the searched pick on the same test images (``vs_searched``)."""
from __future__ import annotations

import dataclasses
import functools
import os
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from ..data import Normalize
from ..errors import ConfigError, TavtKitError
from ..files import write_json
from ..machine import brief
from ..models.checkpoint import is_own_model, weights_digest
from ..models import count_macs, token_drop_record
from ..schedules import SearchSpace, TokenSchedule, tome_schedule
from ..stats import accuracy_interval, paired_difference
from ..progress import Heartbeat
from .baselines import baseline_schedules
from .data import SearchData, search_data, shard, take_subset, _dist
from .evaluate import CandidateEvaluator, evaluation_device
from .evolution import (Budget, Candidate, EvolutionSearch, EvolutionSettings, Journal, entry_gene, front_area, gene_of,
                        pareto_front, schedule_of)
from .fitness import FITNESSES, fitness_of
from .objective import LatencyObjective, latency_objectives, tables_by_precision
from .timed import TargetCheck
from .precisions import resolve_precisions
from .reuse import Reused
from .ship import ShipPolicy
from .options import as_budgets, check_options, fraction_field, model_arg, resolve_fractions
from .settings import EvaluationOptions, LatencyOptions
from .recommend import DEFAULT_SHIP_CONFIDENCE, check_ship_confidence
from .selection import set_aside
from .finetune import PickFinetune, check_finetune, finetune_picks
from .parent import resolve_parent
from .space import _check_reducers, default_reducers, searched_space, space_of  # noqa: F401 (space_of: public here too)
from .outcome import SearchResult
from .result import SEARCH_FORMAT, SEARCH_VERSION, schedule_file_name, schedules_index

#: the index of the per-budget drop configs a search writes beside search.json
SCHEDULES_INDEX = "schedules.json"


def search_schedules(
    model: Union[nn.Module, str],
    data,
    budgets: Union[Budget, str, Sequence[Union[Budget, str]]] = (),
    *,
    latency: Optional[LatencyOptions] = None,
    evolution: Optional[EvolutionSettings] = None,
    ship: Optional[ShipPolicy] = None,
    evaluation: Optional[EvaluationOptions] = None,
    finetune=None,
    out: Optional[str] = None,
    **options,
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
            batch size, int8 pairs verified, calibration images, device).
        finetune: a :class:`~.finetune.PickFinetune`: each budget's pick fine-tuned toward your model competes.
        out: folder for ``search.json``, the journal, ``schedules.json``, drop configs and plots (None: temporary).
        options: the search space's ``reducers`` (``drop``, ``merge``; default the supernet's, yours: merge),
            ``bound`` (its per-block bound for a model that records none) and ``token_multiple`` (1; 8: sequence
            lengths that are multiples of 8); ``parent`` (the reference model: ``"auto"``, the default, loads the
            checkpoint the supernet records it was distilled from; your trained model is its own reference; a
            model or path; None: no reference); ``reuse`` (earlier searches of the same weights on the same
            held-out images, folders or journals: what they evaluated is taken); ``source`` (recorded in
            search.json); ``log`` (print). The fields of ``latency``, ``evaluation`` and ``ship`` are also taken
            one by one as keywords (``target=``, ``table=``, ``precisions=``, ``latency_source=``, ``fitness=``,
            ``subset=``, ``ship_confidence=``, ...; ``settings=`` for ``evolution``), not both.
    """
    latency, evaluation = LatencyOptions.of(latency, options), EvaluationOptions.of(evaluation, options)
    if "settings" in options and evolution is not None:
        raise ConfigError("settings= and evolution= both given: give evolution=EvolutionSettings(...)")
    settings = EvolutionSettings.of(options.pop("settings") if "settings" in options else evolution,
                                    "settings" if evolution is None else "evolution")
    ship, reuse = ShipPolicy.of(ship, options), check_options(options)
    if finetune is not None and not isinstance(finetune, PickFinetune):
        raise ConfigError(f"finetune={finetune!r}: expected a PickFinetune (the training images and steps) or None")
    budgets, model = as_budgets(budgets), model_arg(model, options)
    log = options.get("log", print)
    latency_budget = any(b.objective == "latency" for b in budgets)
    own = options.get("parent", "auto") == "auto" and is_own_model(model)  # your trained model, not a supernet
    precisions = resolve_precisions(latency.precisions, latency.target, latency_budget, log,
                                    measured_here=latency.objectives is None and latency.table is None, model=model,
                                    tables=tables_by_precision(latency.table) if latency.table is not None else None)
    space = searched_space(model, options.get("bound"), own, log, options.get("token_multiple", 1))
    reducers = options.get("reducers")
    reducers = _check_reducers(model, reducers) if reducers is not None else None
    if len(precisions) > 1 and not latency_budget:
        raise ConfigError(f"precisions={','.join(precisions)}: precisions are chosen by latency; give a latency "
                          "budget (a MAC count does not change with the precision)")
    objectives = latency.objectives
    if objectives is None and (latency_budget or latency.table is not None):
        objectives = _latency_objectives(model, precisions, latency, out, reducers, options, log)
    budgets = resolve_fractions(budgets, (objectives or {}).get("fp32"), model.depth, model.num_patches, log)
    if reducers is None:
        reducers = default_reducers(model, space, objectives or {}, log, own=own)
    space = dataclasses.replace(space, reducers=reducers)
    out = out if out is not None else tempfile.mkdtemp(prefix="fgvc-kit-search-")
    sdata = search_data(model, data, cache_dir=os.path.join(out, "cache"), log=log)
    parent = resolve_parent(model, options.get("parent", "auto"), log)
    passed = {**evaluation.keywords(), **({"source": options["source"]} if "source" in options else {}),
              **ship.keywords()}
    pipeline = SearchPipeline(model, sdata, out, settings=settings, budgets=budgets,
                              objectives=objectives or {}, precisions=precisions, space=space,
                              fitness=evaluation.fitness, log=log, remeasure=latency.remeasure, reuse=reuse,
                              recommends=parent is not None, **passed)
    pipeline.parent, pipeline.finetune = parent, check_finetune(finetune, parent, model)
    with torch.inference_mode():
        return pipeline.run()


def _latency_objectives(model, precisions, latency: LatencyOptions, out, reducers, options, log):
    """The search's latency objectives made from ``latency``'s target or table (see :func:`latency_objectives`)."""
    cache = latency.table_cache or (os.path.join(out, "cache") if out else None)
    return latency_objectives(model, precisions if len(precisions) > 1 else ("fp32",), latency.target, latency.table,
                              remeasure=latency.remeasure, latency_source=latency.source, table_cache=cache,
                              reducers=reducers, log=log, table_profile=latency.table_profile,
                              token_multiple=options.get("token_multiple", 1))


class SearchPipeline:
    """The state one search shares across its precisions and stages (see the module docstring)."""

    def __init__(self, model: nn.Module, data: SearchData, out_dir: str, *, settings: EvolutionSettings,
                 budgets: Sequence[Budget], objectives: Dict[str, LatencyObjective], precisions: Sequence[str],
                 space: SearchSpace, fitness: str, batch_size: int = 64, subset: Optional[int] = None,
                 source: Optional[dict] = None, verify_top: int = 3, calibration_images: int = 300,
                 log: Callable[[str], None] = print, remeasure: bool = False, reuse: Sequence[str] = (),
                 selection: Union[str, float, None] = 0.0, recommends: bool = False, shrinkage: bool = True,
                 parent_search: bool = True, ship_confidence: float = DEFAULT_SHIP_CONFIDENCE,
                 eval_device: Optional[str] = "auto"):
        self._check(data, budgets, objectives, precisions, fitness, batch_size, verify_top, calibration_images)
        self.model, self.out_dir, self.settings, self.budgets = model, out_dir, settings, list(budgets)
        self.objectives, self.precisions, self.space, self.fitness = objectives, tuple(precisions), space, fitness
        self.batch_size, self.subset, self.source, self.verify_top = int(batch_size), subset, source, verify_top
        self.calibration_images, self.remeasure_picks = int(calibration_images), remeasure
        self.shrinkage = bool(shrinkage)  # picks corrected for the winner's curse (shrinkage.py)
        self.parent_search = bool(parent_search)  # schedules searched on the parent's weights too (parent_search.py)
        # how sure the recommendation must be that the supernet's pick beats your model's weights (recommend.py)
        self.ship_confidence = check_ship_confidence(ship_confidence)
        self.rank, self.world = _dist()
        self.log = log if self.rank == 0 else (lambda s: None)
        self.data = data
        self.device = evaluation_device(eval_device)  # where every evaluator of this search scores candidates
        self.transform = Normalize.from_model(model)
        # the images each budget's recommendation is chosen on are never scored by the evolution (selection.py)
        self.holdout, self.selection = set_aside(take_subset(data.holdout, subset, settings.seed, log=self.log),
                                                 selection, recommends and self.world == 1, settings.seed,
                                                 batch_size, self.transform, self.log, self.device)
        self.test = data.test
        self.n_holdout = len(self.holdout.labels)
        self.n_test = int(len(self.test.labels)) if self.test is not None else 0
        shared = next((i for i, b in enumerate(space.bounds) if b > 0), space.depth)
        self.evaluator = CandidateEvaluator(model, shard(self.holdout).images, shard(self.holdout).labels,
                                            self.batch_size, transform=self.transform, shared_blocks=shared,
                                            device=self.device)
        self.digest = weights_digest(model)
        self.latency: Optional[LatencyObjective] = objectives.get("fp32")
        self.target_check = TargetCheck(objectives, self.schedule, self.log, model=model)
        self.searches: Dict[str, EvolutionSearch] = {}
        self.parent: Optional[nn.Module] = None  # the reference model (see :mod:`~tavt_kit.search.parent`)
        self.finetune = None  # each budget's pick fine-tuned toward it, competing (a PickFinetune: finetune.py)
        self.test_hits: Dict[tuple, torch.Tensor] = {}
        self.reuse_paths = list(reuse)
        self.reused = None  # the other searches' metrics (:class:`~tavt_kit.search.reuse.Reused`), read by run()

    def _check(self, data, budgets, objectives, precisions, fitness, batch_size, verify_top, calibration_images):
        if fitness not in FITNESSES:
            raise ConfigError(f"fitness={fitness!r}: expected one of {', '.join(FITNESSES)}")
        for name, v in (("batch_size", batch_size), ("verify_top", verify_top),
                        ("calibration_images", calibration_images)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name}={v!r}: expected a positive integer")
        if any(b.objective == "latency" for b in budgets) and "fp32" not in objectives:
            raise ConfigError("budgets: a latency budget needs a latency objective (target= or table=)")
        if len(data.holdout.labels) == 0:
            raise ConfigError("data: the held-out split is empty; the search scores candidates on held-out images")
        if len(precisions) > 1:
            if not any(b.objective == "latency" for b in budgets):
                raise ConfigError(f"precisions={','.join(precisions)}: precisions are chosen by latency; give a "
                                  "latency budget (a MAC count does not change with the precision)")
            missing = [p for p in precisions if p not in objectives]
            if missing:
                raise ConfigError(f"precisions: no latency objective for {missing[0]}")
            if _dist()[1] > 1:
                raise ConfigError("precisions: a search of several precisions runs on one process")

    # ------------------------------------------------------------------ costs
    def schedule(self, gene) -> TokenSchedule:
        return schedule_of(gene, self.space.num_patches, self.space.min_tokens)

    @functools.lru_cache(maxsize=None)
    def macs_of(self, gene) -> int:
        return count_macs(self.model, self.schedule(gene)).total()

    def macs(self, s: TokenSchedule) -> int:
        return self.macs_of(gene_of(s))

    def metrics(self, scheds: List[TokenSchedule], evaluator: Optional[CandidateEvaluator] = None):
        ev = evaluator or self.evaluator
        sc = ev.scores(scheds).summed_over_ranks(self.n_holdout)
        return [sc.metrics(i) for i in range(len(scheds))]

    # -------------------------------------------------------------- the run
    def run(self) -> SearchResult:
        from .pairs import PrecisionStage

        self._warn_unreachable()
        journal = self._journal()
        self._mark_running()
        t0 = time.perf_counter()
        metrics = self.reused.wrap("fp32", self.metrics) if self.reused is not None else self.metrics
        fp32 = EvolutionSearch(self.space, metrics, self.macs, self.settings, self.latency, self.budgets,
                               journal, self.log, fitness=self.fitness)
        if len(self.precisions) > 1:
            self.log("searching fp32 schedules")
        cands = fp32.run()
        if self.shrinkage:
            fp32.shrink()
        self.searches["fp32"] = fp32
        search_seconds = time.perf_counter() - t0
        stage = PrecisionStage(self, journal) if len(self.precisions) > 1 else None
        if stage is not None:
            stage.evolve()
        self.log("scoring the picks, the front and the baselines on the test images"
                 + (" and timing the picks" if stage is None and self.latency is not None
                    and self.latency.can_remeasure else ""))
        with Heartbeat(self.log, "scoring and timing the picks"):
            doc = self._document(fp32, cands, search_seconds, remeasure=stage is None)
        if self.parent is not None or stage is not None:  # slow stages follow: what is done so far, unfinished
            self._write_search(doc)
        parent = None
        if self.parent is not None and self.world == 1:
            from .parent import ParentStage

            parent = ParentStage(self, self.parent)
        try:
            self._compare(doc, stage, parent)
        finally:
            for owner in (parent, stage):
                if owner is not None:
                    owner.close()
        if self.reused is not None:
            doc["reuse"] = self.reused.summary()
            self.log(self.reused.line())
        correction = self.target_check.summary()
        if correction:  # how far the table was from the target where picks were timed
            doc["timed_over_predicted"] = correction
        return self._write(doc, precision_plot=stage is not None)

    def _compare(self, doc: dict, stage, parent) -> None:
        """Your model and what needs no training measured beside the picks (``parent``: a ParentStage), the
        (schedule, precision) pairs chosen (``stage``: a PrecisionStage) and each budget's recommendation."""
        from .pairs import remeasure_round

        if parent is not None:
            self.log("measuring the parent (your model) and ToMe on it at each budget")
            with Heartbeat(self.log, "measuring the parent and ToMe on it"):
                parent.apply(doc)
        if stage is not None:
            with Heartbeat(self.log, "choosing and verifying each budget's (schedule, precision) pair"):
                stage.choose(doc)
            if parent is not None:
                self.log("measuring the parent and ToMe on it at every precision searched")
                with Heartbeat(self.log, "measuring the parent and ToMe at every precision"):
                    parent.apply_precisions(doc, stage)
        # a share of your model's latency is judged by the ratio to it in one round, in an fp32 search too
        if stage is not None or (parent is not None and any(b.fraction is not None for b in self.budgets)):
            with Heartbeat(self.log, "timing every option and your model round-robin on the deployed runtime"):
                remeasure_round(doc, self)
            if parent is not None:  # chosen again now that every option was timed in one round
                parent.recommend_again(doc)
        if parent is not None and self.finetune is not None:  # last: the picks' figures are all in
            finetune_picks(self, parent, doc)

    def _warn_unreachable(self) -> None:
        for b in self.budgets:
            if b.objective == "macs":
                cost = count_macs(self.model, self.space.smallest()).total()
            elif self.objectives:  # the fastest precision searched: a budget only fp16 or int8 meets is reachable
                cost = min(o(self.space.smallest()) for o in self.objectives.values())
            else:
                continue
            if cost > b.limit:
                self.log(f"warning: budget {b.label} is below the smallest schedule of the search space "
                         f"({Budget(b.objective, cost).label}); no searched schedule can meet it (baselines are "
                         "still reported)")

    def journal_settings(self, space: SearchSpace, digest: str) -> dict:
        """What a journal of ``space`` on the weights ``digest`` (their content, not their path) is keyed on."""
        return {**self.settings.to_dict(), "fitness": self.fitness, "subset": self.subset, "space": space.to_dict(),
                "budgets": [[b.objective, b.limit] for b in self.budgets], "weights_sha256": digest,
                "holdout_images": self.n_holdout, "holdout_sha256": self.holdout.digest(),
                "token_drop": token_drop_record(self.model),  # the same weights dropping otherwise score otherwise
                "source": {k: v for k, v in (self.source or {}).items() if k != "checkpoint"},
                "latency": self.latency.info.get("identity") if self.latency is not None else None}

    def _journal(self) -> Journal:
        settings = self.journal_settings(self.space, self.digest)
        if len(self.precisions) > 1:  # one journal for every precision: each record says its precision
            settings["precisions"] = {p: {"latency": self.objectives[p].info.get("identity")}
                                      for p in self.precisions[1:]}
        # the int8 calibration keys the deployed int8 records only (see PrecisionStage), not the whole journal
        os.makedirs(self.out_dir, exist_ok=True)
        journal = Journal(os.path.join(self.out_dir, "search.journal.jsonl") if self.rank == 0 else None,
                          {"format": "fgvc-kit/search-journal", "settings": settings})
        if self.world > 1:  # every rank replays the same journal
            obj = [journal.entries]
            torch.distributed.broadcast_object_list(obj, src=0)
            journal.entries = obj[0]
        if self.reuse_paths:
            self.reused = Reused(self.reuse_paths, settings, self.calibration)
        return journal

    @property
    def calibration(self) -> Optional[dict]:
        """The images int8 quantisation is calibrated on (None: no int8 searched): their number, the seed of the
        subset, the split and the dataset. Recorded in search.json's settings; the deployed int8 runs of the
        journal are keyed on it, so a search rerun with other calibration quantises again."""
        if "int8" not in self.precisions:
            return None
        spec = self.data.spec
        data = spec.to_dict() if hasattr(spec, "to_dict") else None
        return {"images": self.calibration_images, "seed": self.settings.seed, "split": "train", "data": data}

    # ------------------------------------------------------------ search.json
    def _mark_running(self) -> None:
        """Before any stage: search.json says this search is running (a search.json left in the folder by an
        earlier search is not this one's result; a search stopped before its end leaves it marked so)."""
        doc = {"format": SEARCH_FORMAT, "version": SEARCH_VERSION, "status": "running",
               "model": self._model_info(), "source": self.source or {}, "space": self.space.to_dict(),
               "settings": self._settings(), "budgets": []}
        self._write_search(doc)

    def _write_search(self, doc: dict) -> None:
        if self.rank == 0:
            write_json(doc, os.path.join(self.out_dir, "search.json"))

    def _model_info(self) -> dict:
        spec = self.model.spec or {}
        return {**{k: spec.get(k) for k in ("backbone", "img_size", "depth", "num_patches", "num_classes")},
                "weights_sha256": self.digest, "token_drop": token_drop_record(self.model)}

    def _settings(self) -> dict:
        out = {**self.settings.to_dict(), "fitness": self.fitness, "subset": self.subset,
               "holdout_images": self.n_holdout, "test_images": self.n_test,
               "batch_size": self.batch_size, "world_size": self.world,
               "selection_images": self.selection.n if self.selection is not None else 0}
        if self.selection is not None:
            out["selection_sha256"] = self.selection.images.digest()
        if self.calibration is not None:
            out["calibration_images"] = self.calibration_images
            out["calibration"] = self.calibration
        return out

    # ------------------------------------------------------- choices, tests
    def _document(self, search: EvolutionSearch, cands, search_seconds: float, remeasure: bool) -> dict:
        objective = search.objective
        full, smallest = self.space.full(), self.space.smallest()
        over: Dict[str, List[dict]] = {b.label: [] for b in self.budgets}
        checks = {b.label: self.target_check.within(b.limit, over[b.label], b.fraction) for b in self.budgets
                  if remeasure and b.objective == "latency"}
        choices = {b.label: (b, self._best_within(search, b, checks.get(b.label))) for b in self.budgets}
        base, fixed = self._baselines(objective)
        front = pareto_front(cands, objective)
        to_test: Dict[tuple, TokenSchedule] = {}
        for s in [full, smallest] + [self.schedule(c.gene) for c in front]:
            to_test[gene_of(s)] = s
        for row in list(base.values()) + [fixed]:
            for s in row.values():
                to_test[gene_of(s)] = s
        hold = {c.gene: {"accuracy": c.accuracy, "nll": c.nll, "kl": c.kl} for c in search.evaluated.values()}
        self._holdout_extra(to_test, hold)
        choices = self._with_baselines(choices, base, hold, checks)
        for b, best in choices.values():
            if best is not None:
                to_test[best.gene] = self.schedule(best.gene)
        test_acc, test_hits = self._test(list(to_test.values()))
        remeasured = self._remeasure(choices, full) if remeasure else {}
        entry = functools.partial(self._entry, hold=hold, test_acc=test_acc, remeasured=remeasured)
        cost_fn = self.macs if objective == "macs" else self.latency
        doc = self._header(search, objective, search_seconds)
        doc.update({"full": entry(gene_of(full)), "smallest": entry(gene_of(smallest)),
                    "candidates": [{**c.to_dict(),
                                    "holdout_interval": accuracy_interval(c.accuracy, self.n_holdout)} for c in cands],
                    "pareto_front": [entry(c.gene) for c in front],
                    "front_area": front_area(front, objective, cost_fn(smallest), cost_fn(full)),
                    "budgets": [], "baselines": {"fixed": {k: entry(gene_of(s)) for k, s in fixed.items()}},
                    "shrinkage": search.shrinkage.to_dict() if search.shrinkage is not None else None})
        full_macs = self.macs(full)
        for label, (b, best) in choices.items():
            row = {"label": label, "objective": b.objective, "limit": b.limit, **fraction_field(b),
                   "best": entry(best.gene, speedup_macs=full_macs / self.macs_of(best.gene),
                                 **({"origin": best.origin} if best.origin.startswith("baseline") else {}))
                   if best else None,
                   "baselines": {k: entry(gene_of(s), **_versus(best, gene_of(s), test_hits))
                                 for k, s in base[label].items()}}
            if best is not None:
                row["schedule_file"] = schedule_file_name(label)
                if best.measured_fitness is not None:  # what it brings to the recommendation (shrinkage.py)
                    row["best"].update(fitness_shrunk=best.score, fitness_measured=best.measured_fitness)
                if self.selection is not None:  # what the recommendation compares (selection.py)
                    row["best"].update(self.selection.fields("supernet", self.model, self.schedule(best.gene)))
            doc["budgets"].append({**row, "timed_over_budget": over[label]} if over[label] else row)
        self.test_hits = test_hits
        return doc

    @staticmethod
    def _best_within(search: EvolutionSearch, b: Budget, check):
        """The fittest candidate within ``b``; with ``check`` (a latency budget predicted by a table, see
        :class:`~.timed.TargetCheck`), the fittest that also meets it timed on the target."""
        if check is None:
            return search.best_within(b)
        ranked = sorted(search.feasible(b), key=lambda c: (c.score, c.cost(b.objective), c.gene), reverse=True)
        return next((c for c in ranked if check(c.gene, "fp32", c.latency)), None)

    def _with_baselines(self, choices, base, hold, checks):
        """Each budget's pick, the baselines fitted to it competing on the same held-out fitness: a baseline that
        meets a budget the search found nothing for (it may reduce where the space does not), or that is fitter
        than the search's pick, becomes the pick (``origin`` says so), so no baseline ever beats the answer.
        With a budget's ``checks`` entry, a baseline timed over it on the target does not."""
        out = {}
        for label, (b, best) in choices.items():
            cost = self.macs if b.objective == "macs" else self.latency
            for name, s in base[label].items():
                g, m = gene_of(s), hold.get(gene_of(s))
                if m is None or m.get(self.fitness) is None:
                    continue
                try:
                    c = float(cost(s))
                except TavtKitError:
                    continue
                if c > b.limit:
                    continue
                score = fitness_of(m, self.fitness)
                if (best is None or score > best.score) and (checks.get(label) is None or
                                                             checks[label](g, "fp32", c)):
                    best = Candidate(counts=g[0], reducers=g[1], accuracy=m["accuracy"], nll=m.get("nll"),
                                     kl=m.get("kl"), fitness=score, macs=self.macs_of(g),
                                     latency=c if b.objective == "latency" else None, origin=f"baseline {name}")
                    self.log(f"budget {label}: the {name} baseline is fitter on the held-out images than the "
                             "search's pick (or the only schedule that meets it); it is the pick")
            out[label] = (b, best)
        return out

    def _baselines(self, objective: str):
        from ..models.token_drop import TokenDropMixin

        space = self.space
        can_merge = isinstance(self.model, TokenDropMixin)  # timm ViTs merge (ToMe's baseline); ViTAE's do not
        tome_latency = can_merge
        if can_merge and self.latency is not None and any(b.objective == "latency" for b in self.budgets):
            try:  # a latency table profiled for drop only cannot cost ToMe's schedules: that baseline is left out
                self.latency(tome_schedule(1, space.depth, space.num_patches, space.min_tokens))
            except TavtKitError as e:
                tome_latency = False
                self.log(f"note: no ToMe baseline under the latency budgets ({e})")
        base = {}
        for b in self.budgets:
            fn = self.macs if b.objective == "macs" else self.latency
            base[b.label] = baseline_schedules(space.depth, space.num_patches, fn, {b.label: b.limit},
                                               space.min_tokens,
                                               merge=can_merge if b.objective == "macs" else tome_latency)[b.label]
        cost_fn = self.macs if objective == "macs" else self.latency
        fixed = baseline_schedules(space.depth, space.num_patches, cost_fn, {}, space.min_tokens)["fixed"]
        return base, fixed

    def _holdout_extra(self, to_test: Dict[tuple, TokenSchedule], hold: Dict[tuple, dict]) -> None:
        extra = [s for k, s in to_test.items() if k not in hold]
        if extra:  # baselines may drop where the space does not: a free evaluator (no shared blocks)
            free = CandidateEvaluator(self.model, shard(self.holdout).images, shard(self.holdout).labels,
                                      self.batch_size, transform=self.transform, device=self.device)
            for s, m in zip(extra, self.metrics(extra, free)):
                hold[gene_of(s)] = m

    def _test(self, scheds: List[TokenSchedule]):
        test_acc: Dict[tuple, float] = {}
        test_hits: Dict[tuple, torch.Tensor] = {}
        if not self.n_test:
            return test_acc, test_hits
        tev = CandidateEvaluator(self.model, shard(self.test).images, shard(self.test).labels, self.batch_size,
                                 transform=self.transform, device=self.device)
        sc = tev.scores(scheds, per_image=True).summed_over_ranks(self.n_test)
        for i, s in enumerate(scheds):
            test_acc[gene_of(s)] = sc.correct[i] / self.n_test
            if sc.hits is not None:
                test_hits[gene_of(s)] = sc.hits[i]
        return test_acc, test_hits

    def _remeasure(self, choices, full: TokenSchedule) -> Dict[tuple, float]:
        remeasured: Dict[tuple, float] = {}
        if self.latency is None or not self.latency.can_remeasure or self.rank != 0:
            return remeasured
        time = self.target_check.time  # once each: choosing the picks may have timed them already
        for b, best in choices.values():
            if best is not None:
                remeasured[best.gene] = time(best.gene, "fp32")
        remeasured.setdefault(gene_of(full), time(gene_of(full), "fp32"))
        return remeasured

    def _entry(self, gene, *, hold, test_acc, remeasured, **extra) -> dict:
        s = self.schedule(gene)
        h = hold.get(gene) or {}
        d = {"counts": list(gene[0]), **({"reducers": list(s.reducers)} if s.reducers else {}),
             "macs": self.macs_of(gene), "holdout_accuracy": h.get("accuracy"),
             "holdout_interval": accuracy_interval(h.get("accuracy"), self.n_holdout),
             "holdout_nll": h.get("nll"), "holdout_kl": h.get("kl"), "test_accuracy": test_acc.get(gene),
             "test_interval": accuracy_interval(test_acc.get(gene), self.n_test)}
        if self.latency is not None:
            try:
                d["latency_ms"] = self.latency(s) * 1e3
            except TavtKitError:  # a ToMe baseline under a MAC budget, and a table profiled for drop only
                d["latency_ms"] = None
        if gene in remeasured:
            d["latency_measured_ms"] = remeasured[gene] * 1e3
        d.update(extra)
        return d

    def _header(self, search: EvolutionSearch, objective: str, search_seconds: float) -> dict:
        return {
            # "running" until _write completes the file (a search stopped in a later stage leaves it so)
            "format": SEARCH_FORMAT, "version": SEARCH_VERSION, "status": "running", "objective": objective,
            "model": self._model_info(), "source": self.source or {}, "space": self.space.to_dict(),
            "settings": self._settings(),
            "latency": self.latency.info if self.latency is not None else None,
            "machine": brief(),
            "timing": {"search_seconds": search_seconds, "evaluations": search.evaluations,
                       "candidates": len(search.evaluated),
                       "from_journal": len(search.evaluated) - search.evaluations,
                       "candidates_per_minute": (search.evaluations / search.eval_seconds * 60)
                       if search.eval_seconds else None,
                       "block_runs": self.evaluator.stats.block_runs,
                       "block_runs_naive": self.evaluator.stats.block_runs_naive},
        }

    # ------------------------------------------------------------- writing
    def _write(self, doc: dict, precision_plot: bool) -> SearchResult:
        """Drop configs, ``schedules.json`` and plots first, then ``search.json``, finished (naming the plots)."""
        if self.rank == 0:
            for row in doc["budgets"]:
                best = row.get("best")
                if best is None or not row.get("schedule_file"):
                    continue
                info = {**doc["model"], "budget": row["label"]}
                if "precision" in best and "best_fp32" in row:
                    info["precision"] = best["precision"]
                self.schedule(entry_gene(best)).save(os.path.join(self.out_dir, row["schedule_file"]), model_info=info)
            write_json(schedules_index(doc, with_precision=len(self.precisions) > 1),
                       os.path.join(self.out_dir, SCHEDULES_INDEX))
            plots = []
            try:
                from .plot import plot_precision_fronts, plot_search

                plots = plot_search(doc, self.out_dir)
                if precision_plot:
                    plots.append(plot_precision_fronts(doc, self.out_dir))
            except ImportError:  # matplotlib is optional for the library
                pass
            if plots:
                doc["plots"] = plots
        doc["status"] = "finished"
        self._write_search(doc)
        return SearchResult(doc, os.path.join(self.out_dir, "search.json"))


def _versus(best, gene: tuple, hits: Dict[tuple, torch.Tensor]) -> dict:
    """``vs_searched``: the searched pick's test accuracy minus this schedule's, paired on the same images."""
    if best is None or best.gene not in hits or gene not in hits:
        return {}
    return {"vs_searched": paired_difference(hits[best.gene].tolist(), hits[gene].tolist())}

