"""Joint search of (token schedule, precision) pairs under latency budgets.

A milder schedule at bf16 or int8 can beat an aggressive one at fp32 under the
same latency budget, so ``fgvc-kit search --precisions fp32,bf16,int8`` makes
every candidate a pair. The space is the product of the schedule space and
the precisions; since a precision is one categorical choice, the evolution
runs once per precision (each with that precision's latency table and
accuracy), and every budget then picks the best pair over all of them.

Accuracy is measured, never assumed:

* **fp32**: the ordinary search (:func:`~tavt_kit.search.run.run_search`), whose
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
resumed search does not quantise again.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..bench.backends import USER_PRECISION
from ..errors import ConfigError
from ..files import write_json
from ..models.checkpoint import weights_digest
from ..models.macs import count_macs
from ..schedules.schedule import TokenSchedule
from ..stats import paired_difference, wilson_interval
from .evaluate import CandidateEvaluator, ScheduleScores
from .evolution import Budget, EvolutionSearch, EvolutionSettings, Journal, gene_of, pareto_front, schedule_of
from .fitness import DEFAULT_FITNESS, fitness_of

#: precisions a search can pair with schedules (user-facing names)
SEARCH_PRECISIONS = ("fp32", "bf16", "fp16", "int8")
#: user-facing precision -> the precision a latency table records (OpenVINO's inference precision names)
TABLE_PRECISION = {user: table for table, user in USER_PRECISION.items()}
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: how each precision's held-out accuracy is obtained during the evolution
ACCURACY_SOURCE = {"fp32": "PyTorch fp32", "bf16": "PyTorch bf16 autocast", "fp16": "PyTorch fp16 autocast",
                   "int8": "fp32 (provisional; measured on the deployed int8 model before it is reported)"}


def parse_precisions(value) -> Tuple[str, ...]:
    """``"fp32,bf16,int8"`` (or a sequence) -> the precisions, fp32 first (the comparison every budget reports)."""
    items = value.split(",") if isinstance(value, str) else list(value)
    out = [str(v).strip().lower() for v in items if str(v).strip()]
    bad = [v for v in out if v not in SEARCH_PRECISIONS]
    if bad or not out:
        raise ConfigError(f"--precisions: expected a comma-separated list of {', '.join(SEARCH_PRECISIONS)}, got "
                          f"{value!r}" + (f" ({bad[0]!r} is not a precision)" if bad else ""))
    return tuple(dict.fromkeys(["fp32"] + out))


def table_precision_name(table) -> str:
    """The user-facing precision a latency table was profiled at (tables made before precisions: fp32)."""
    return USER_PRECISION.get(table.precision, table.precision)


# --------------------------------------------------------------- deployed runs
class DeployedScorer:
    """Schedules run on the deployed runtime: exported to ONNX, converted to OpenVINO IR (int8: quantised with
    NNCF on training images), compiled at the precision, run on an image set; exports cached per pair."""

    def __init__(self, model: nn.Module, transform: Callable[[torch.Tensor], torch.Tensor],
                 calibration: Callable[[], np.ndarray], batch_size: int = 64, threads: Optional[int] = None):
        self.model, self.transform, self.batch_size, self.threads = model, transform, int(batch_size), threads
        self._calibration_fn, self._calibration = calibration, None
        self._tmp = tempfile.TemporaryDirectory(prefix="fgvc-kit-deployed-")
        self._files: Dict[tuple, str] = {}
        self._reference: Dict[int, torch.Tensor] = {}
        self.seconds = 0.0
        self.quantized = 0

    def close(self) -> None:
        self._tmp.cleanup()

    def calibration(self) -> np.ndarray:
        if self._calibration is None:
            self._calibration = self._calibration_fn()
        return self._calibration

    def _file(self, sched: TokenSchedule, precision: str) -> str:
        from ..export.onnx import export_onnx
        from ..export.openvino import convert_openvino

        key = (gene_of(sched), precision == "int8")
        if key not in self._files:
            stem = os.path.join(self._tmp.name, f"m{len(self._files)}")
            onnx = export_onnx(self.model, stem + ".onnx", sched, verify=False).path
            if precision == "int8":
                from ..export.quantize import quantize_openvino

                self._files[key] = quantize_openvino(onnx, stem + ".int8.xml", self.calibration()).path
                self.quantized += 1
            else:
                self._files[key] = convert_openvino(onnx, stem + ".xml", verify=False).xml_path
        return self._files[key]

    def _full_logp(self, images: torch.Tensor) -> torch.Tensor:
        key = id(images)
        if key not in self._reference:
            with torch.inference_mode():
                out = [self.model(self.transform(images[i:i + self.batch_size])).float().log_softmax(-1)
                       for i in range(0, len(images), self.batch_size)]
            self._reference[key] = torch.cat(out)
        return self._reference[key]

    def scores(self, sched: TokenSchedule, precision: str, images: torch.Tensor, labels: torch.Tensor
               ) -> Tuple[ScheduleScores, str]:
        """Hits (per image), NLL and KL to the full fp32 model of the deployed pair; and the runtime's name."""
        from ..export.verify import ExportedRunner

        start = time.perf_counter()
        runner = ExportedRunner(self._file(sched, precision), precision="fp32" if precision == "int8" else precision,
                                threads=self.threads)
        logits = [torch.from_numpy(np.asarray(runner(self.transform(images[i:i + self.batch_size]).numpy()))).float()
                  for i in range(0, len(images), self.batch_size)]
        logp = torch.cat(logits).log_softmax(-1)
        ref = self._full_logp(images)
        hit = logp.argmax(-1) == labels
        nll = float(-logp.gather(1, labels.view(-1, 1)).sum())
        kl = float((ref.exp() * (ref - logp)).sum())
        self.seconds += time.perf_counter() - start
        return ScheduleScores(len(labels), [int(hit.sum())], [nll], [kl], hit.view(1, -1)), \
            f"{runner.runtime}, {runner.precision_used}"


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
            g = (tuple(c["counts"]), tuple(r or "" for r in c.get("reducers") or ()))
            m = {"accuracy": c["accuracy"], "nll": c["nll"], "kl": c["kl"]}
            out.append(Pair("fp32", g, m, fitness_of(m, fitness), c["latency_ms"] / 1e3, True, ACCURACY_SOURCE["fp32"]))
    for p, search in searches.items():
        for c in search.evaluated.values():
            if c.latency is None or c.latency > limit:
                continue
            m = {"accuracy": c.accuracy, "nll": c.nll, "kl": c.kl}
            measured = p != "int8"
            source = ACCURACY_SOURCE[p]
            if p == "int8" and c.gene in verified:
                m, measured, source = verified[c.gene], True, "OpenVINO int8 (NNCF PTQ, transformer)"
            out.append(Pair(p, c.gene, m, fitness_of(m, fitness), c.latency, measured, source))
    return out


def _rank(p: Pair) -> tuple:
    # higher fitness; then the one that uses more of the budget; then a fixed order (deterministic)
    return p.fitness, p.latency, SEARCH_PRECISIONS.index(p.precision), p.gene


def choose_pair(pairs: List[Pair], verify: Callable[[Pair], Dict[str, float]], fitness: str,
                verify_top: int) -> Tuple[Optional[Pair], int]:
    """The best pair whose accuracy is measured: provisional int8 pairs are verified best first (at most
    ``verify_top`` of them) and re-ranked with the measured value; returns ``(pair, verifications)``."""
    n = 0
    pool = list(pairs)
    while pool:
        best = max(pool, key=_rank)
        if best.measured:
            return best, n
        pool.remove(best)
        if n >= verify_top:
            continue  # over the verification allowance: provisional pairs are never reported
        m = verify(best)
        n += 1
        pool.append(Pair(best.precision, best.gene, m, fitness_of(m, fitness), best.latency, True,
                         "OpenVINO int8 (NNCF PTQ, transformer)"))
    return None, n


# ------------------------------------------------------------------ the search
def run_precision_search(
    model: nn.Module,
    holdout,
    test,
    out_dir: str,
    *,
    precisions: Sequence[str],
    objectives: Dict[str, Tuple[Callable, Optional[Callable], dict]],
    settings: EvolutionSettings,
    budgets: Sequence[Budget],
    calibration: Callable[[], np.ndarray],
    transform: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int = 64,
    subset: Optional[int] = None,
    space=None,
    source: Optional[dict] = None,
    log: Callable[[str], None] = print,
    fitness: str = DEFAULT_FITNESS,
    verify_top: int = 3,
    threads: Optional[int] = None,
) -> dict:
    """Search (schedule, precision) pairs; writes ``search.json`` like :func:`~tavt_kit.search.run.run_search`, each
    latency budget's ``best`` being the best pair and ``best_fp32`` the best fp32-only schedule.

    Args:
        precisions: from :func:`parse_precisions` (fp32 first).
        objectives: precision -> ``(latency_fn, remeasure_fn, info)`` (see
            :func:`~tavt_kit.search.latency.precision_objectives`).
        calibration: returns the int8 calibration images (normalised training images; called once, when needed).
        verify_top: int8 quantisations per budget at most while choosing its pair.
    """
    from .run import run_search, space_of, take_subset

    precisions = parse_precisions(precisions)
    lat_budgets = [b for b in budgets if b.objective == "latency"]
    if len(precisions) > 1 and not lat_budgets:
        raise ConfigError("--precisions chooses between precisions by latency: give --latency-budget (a MAC count "
                          "does not change with the precision)")
    missing = [p for p in precisions if p not in objectives]
    if missing:
        raise ConfigError(f"no latency objective for precision {missing[0]}")
    if torch.distributed.is_available() and torch.distributed.is_initialized() and \
            torch.distributed.get_world_size() > 1:
        raise ConfigError("--precisions runs on one process; launch the search without torchrun")
    if verify_top < 1:
        raise ConfigError(f"--verify-top: expected a positive number of quantisations, got {verify_top}")
    space = space or space_of(model)
    fn32, rem32, info32 = objectives["fp32"]
    log("searching fp32 schedules")
    # with several precisions, every pick is timed once, all together, by _remeasure_together (not here first)
    result = run_search(model, holdout, test, out_dir, settings=settings, budgets=budgets, latency_fn=fn32,
                        remeasure_fn=rem32 if len(precisions) == 1 else None, latency_info=info32,
                        transform=transform, batch_size=batch_size, subset=subset, space=space, source=source,
                        log=log, fitness=fitness)
    if len(precisions) == 1:
        return result
    hold = take_subset(holdout, subset, settings.seed)
    shared = next((i for i, b in enumerate(space.bounds) if b > 0), space.depth)
    ev32 = CandidateEvaluator(model, hold.images, hold.labels, batch_size, transform=transform, shared_blocks=shared)
    known = {(tuple(c["counts"]), tuple(r or "" for r in c.get("reducers") or ())):
             {"accuracy": c["accuracy"], "nll": c["nll"], "kl": c["kl"]} for c in result["candidates"]}
    n_hold = len(hold.labels)

    def metrics_with(evaluator: CandidateEvaluator, cache: Optional[dict]):
        def fn(scheds: List[TokenSchedule]) -> List[Dict[str, float]]:
            todo = [s for s in scheds if cache is None or gene_of(s) not in cache]
            sc = evaluator.scores(todo)
            got = {gene_of(s): sc.metrics(i) for i, s in enumerate(todo)}
            if cache is not None:
                cache.update(got)
            return [(cache or got)[gene_of(s)] for s in scheds]
        return fn

    digest = weights_digest(model)
    macs_of = {}

    def macs(s: TokenSchedule) -> int:
        g = gene_of(s)
        if g not in macs_of:
            macs_of[g] = count_macs(model, s).total()
        return macs_of[g]

    searches: Dict[str, EvolutionSearch] = {}
    t0 = time.perf_counter()
    with torch.inference_mode():
        for p in precisions[1:]:
            fn = objectives[p][0]
            cache: Dict[tuple, float] = {}

            def latency(s: TokenSchedule, fn=fn, cache=cache) -> float:
                g = gene_of(s)
                if g not in cache:
                    cache[g] = float(fn(s))
                return cache[g]

            evaluator = ev32 if p == "int8" else CandidateEvaluator(
                model, hold.images, hold.labels, batch_size, transform=transform, shared_blocks=shared,
                autocast=_AUTOCAST[p], reference=ev32)
            header = {"format": "fgvc-kit/search-journal", "settings": {
                **settings.to_dict(), "fitness": fitness, "precision": p, "accuracy": ACCURACY_SOURCE[p],
                "budgets": [[b.objective, b.limit] for b in lat_budgets], "subset": subset,
                "holdout_images": n_hold, "space": space.to_dict(), "weights_sha256": digest,
                "latency": objectives[p][2].get("identity")}}
            journal = Journal(os.path.join(out_dir, f"search.{p}.journal.jsonl"), header)
            log(f"searching {p} schedules (accuracy: {ACCURACY_SOURCE[p]})")
            search = EvolutionSearch(space, metrics_with(evaluator, known if p == "int8" else None), macs, settings,
                                     latency, lat_budgets, journal, lambda s, p=p: log(f"[{p}] {s}"), fitness=fitness)
            search.run()
            searches[p] = search
    search_seconds = time.perf_counter() - t0
    _choose_and_check(result, model, hold, test, out_dir, precisions, objectives, searches, calibration, transform,
                      batch_size, fitness, verify_top, threads, space, digest, macs, log)
    result["timing"]["precision_search_seconds"] = search_seconds
    write_json(result, os.path.join(out_dir, "search.json"))
    try:
        from .plot import plot_precision_fronts

        result.setdefault("plots", []).append(plot_precision_fronts(result, out_dir))
        write_json(result, os.path.join(out_dir, "search.json"))
    except ImportError:  # matplotlib is optional for the library
        pass
    return result


def _choose_and_check(result, model, hold, test, out_dir, precisions, objectives, searches, calibration, transform,
                      batch_size, fitness, verify_top, threads, space, digest, macs, log) -> None:
    """Each latency budget's best pair (int8 verified on the deployed model), both picks run deployed on the test
    images, remeasured where possible; ``result`` updated in place and the per-budget drop configs rewritten."""
    scorer = DeployedScorer(model, transform, calibration, batch_size, threads)
    header = {"format": "fgvc-kit/deployed-journal", "settings": {
        "weights_sha256": digest, "holdout_images": len(hold.labels), "calibration": "training images, seeded"}}
    deployed = Journal(os.path.join(out_dir, "search.int8.deployed.jsonl"), header)
    verified = {g: {k: rec[k] for k in ("accuracy", "nll", "kl")} for g, rec in deployed.entries.items()}
    n_hold, n_test = len(hold.labels), int(len(test.labels)) if test is not None else 0

    def sched(gene) -> TokenSchedule:
        return schedule_of(gene, space.num_patches, space.min_tokens)

    def verify_gene(gene, why: str = "") -> Dict[str, float]:
        if gene not in verified:
            log(f"verifying int8 at {list(gene[0])}{why}: NNCF quantisation, held-out images in OpenVINO")
            sc, runtime = scorer.scores(sched(gene), "int8", hold.images, hold.labels)
            verified[gene] = sc.metrics(0)
            deployed.record(gene, **verified[gene], runtime=runtime)
        return verified[gene]

    test_runs: Dict[tuple, Tuple[ScheduleScores, str]] = {}

    def on_test(gene, precision: str):
        key = (gene, precision)
        if key not in test_runs and n_test:
            test_runs[key] = scorer.scores(sched(gene), precision, test.images, test.labels)
        return test_runs.get(key)

    fronts = {p: pareto_front(s.evaluated.values(), "latency") for p, s in searches.items() if p != "int8"}
    try:
        n_front = 0
        if "int8" in searches:
            fronts["int8"], n_front = _measured_int8_front(searches["int8"], result["budgets"], verify_gene, fitness)
        result["precisions"] = {
            "searched": list(precisions), "accuracy": {p: ACCURACY_SOURCE[p] for p in precisions},
            "latency": {p: objectives[p][2] for p in precisions},
            "fronts": {p: [_front_entry(c, p, searches[p]) for c in f] for p, f in fronts.items()},
            "verify_top": verify_top, "front_verifications": n_front,
        }
        for row in result["budgets"]:
            if row["objective"] != "latency":
                continue
            pairs = _pairs_within(row["limit"], result["candidates"], searches, verified, fitness)
            best, n_verified = choose_pair(pairs, lambda pair: verify_gene(pair.gene), fitness, verify_top)
            fp32 = row["best"]
            row["best_fp32"] = fp32
            row["int8_verifications"] = n_verified
            if fp32 is not None:
                fp32["precision"] = "fp32"
                g32 = (tuple(fp32["counts"]), tuple(r or "" for r in fp32.get("reducers") or ()))
                t32 = on_test(g32, "fp32")
                if t32 is not None:
                    fp32["deployed"] = _deployed(t32, n_test)
            if best is None:
                row["best"] = None
                continue
            entry = _pair_entry(best, sched, macs, n_hold, result["full"]["macs"])
            tp = on_test(best.gene, best.precision)
            if tp is not None:
                entry["deployed"] = _deployed(tp, n_test)
                entry["test_accuracy"] = entry["deployed"]["test_accuracy"]
                entry["test_interval"] = entry["deployed"]["test_interval"]
            row["best"] = entry
            if fp32 is not None and tp is not None and t32 is not None:
                row["vs_fp32"] = paired_difference(tp[0].hits[0].tolist(), t32[0].hits[0].tolist())
            path = os.path.join(out_dir, row.get("schedule_file") or f"schedule-{row['label']}.json")
            sched(best.gene).save(path, model_info={**result["model"], "budget": row["label"],
                                                    "precision": best.precision})
            row["schedule_file"] = os.path.basename(path)
        if objectives["fp32"][1] is not None:  # --remeasure
            _remeasure_together(result, model, sched, objectives, log)
    finally:
        scorer.close()
    result["precisions"]["candidates"] = {
        p: [_candidate_entry(c, p, verified.get(c.gene) if p == "int8" else None, fitness) for c in s.evaluated.values()]
        for p, s in searches.items()}
    result["precisions"]["deployed_seconds"] = scorer.seconds
    result["precisions"]["quantized_models"] = scorer.quantized
    from .run import SCHEDULES_INDEX

    write_json({"format": "fgvc-kit/search-schedules", "search": "search.json",
                "budgets": [{"label": r["label"], "objective": r["objective"], "limit": r["limit"],
                             "file": r.get("schedule_file"), "counts": (r["best"] or {}).get("counts"),
                             "precision": (r["best"] or {}).get("precision", "fp32"),
                             **({"reducers": r["best"]["reducers"]} if (r["best"] or {}).get("reducers") else {})}
                            for r in result["budgets"]]},
               os.path.join(out_dir, SCHEDULES_INDEX))


def _remeasure_together(result: dict, model: nn.Module, sched, objectives, log) -> None:
    """Every budget's pair and fp32-only pick and the full fp32 model deployed with OpenVINO and timed
    round-robin in one process (so their latencies compare: timed one by one, a machine whose speed drifts
    would decide); sets each one's ``latency_measured_ms``, ``measured_fraction_of_full`` and
    ``measured_within_budget``. Where a latency
    objective is not OpenVINO's (an fp32 table profiled with torch), each pick is timed on its own target."""
    from ..bench.measure import measure_schedules

    items, where = {}, {}
    full = result["full"]
    items["full"] = (sched((tuple(full["counts"]), ())), "fp32")
    where["full"] = (full, None)
    for i, row in enumerate(result["budgets"]):  # a MAC budget's pick (fp32) is timed with them
        lat = row["objective"] == "latency"
        for key in ("best", "best_fp32") if lat else ("best",):
            d = row.get(key)
            if d is not None:
                gene = (tuple(d["counts"]), tuple(r or "" for r in d.get("reducers") or ()))
                items[(i, key)] = (sched(gene), d.get("precision", "fp32"))
                where[(i, key)] = (d, row["limit"] if lat else None)
    targets = {p: (objectives[p][2].get("target") or {}) for p in {p for _, p in items.values()}}
    target = targets["fp32"]
    batch = int(target.get("batch_size") or 1)
    if all(t.get("backend", "openvino") == "openvino" for t in targets.values()):
        log(f"timing {len(items)} deployed picks round-robin at batch {batch} (OpenVINO)")
        measured = measure_schedules(model, items, batch, threads=target.get("threads"))
        ms = {k: 1e3 * measured[k][0].p50 for k in items}
        how = "OpenVINO, every pick and the full fp32 model timed round-robin in one process (median)"
    else:
        ms = {k: 1e3 * float(objectives[p][1](s)) for k, (s, p) in items.items()}
        how = "each pick timed on its own, on its precision's target (median)"
    for k, (d, limit) in where.items():
        d["latency_measured_ms"] = ms[k]
        # the ratio to the full model timed in the same round: what a machine whose speed drifts does not change
        d["measured_fraction_of_full"] = ms[k] / ms["full"]
        if limit is not None:
            d["measured_within_budget"] = d["latency_measured_ms"] <= limit * 1e3
    result["precisions"]["remeasured"] = {"method": how, "batch_size": batch, "threads": target.get("threads")}


def _measured_int8_front(search: EvolutionSearch, budgets: Sequence[dict], verify_gene, fitness: str
                         ) -> Tuple[list, int]:
    """The int8 Pareto front with every point's accuracy measured on the deployed int8 model, and how many points
    were measured: each candidate on the provisional front (fp32 fitness) within the widest latency budget is
    quantised and run on the held-out images, and the front is drawn again from the measured values."""
    limit = max((b["limit"] for b in budgets if b["objective"] == "latency"), default=float("inf"))
    within = [c for c in search.evaluated.values() if c.latency is not None and c.latency <= limit]
    provisional = pareto_front(within, "latency")
    measured = []
    for i, c in enumerate(provisional, 1):
        m = verify_gene(c.gene, f" (int8 front {i}/{len(provisional)})")
        measured.append(replace(c, accuracy=m["accuracy"], nll=m["nll"], kl=m["kl"], fitness=fitness_of(m, fitness)))
    return pareto_front(measured, "latency"), len(provisional)


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
