"""Evolutionary search of token schedules (TAVT / Length-Adaptive Transformer style).

Genes are token schedules of a :class:`~tavt_kit.schedules.SearchSpace`.
Each generation takes parents from the accuracy–cost Pareto front (and, when
budgets are given, the most accurate candidates within each budget), makes
``mutations`` mutants — each block's count redrawn with probability
``mutation_prob`` between the next block's and the previous block's counts —
and ``crossovers`` children, each block the mean of two parents; children are
repaired into the space. Fitness is measured on the held-out split: top-1
accuracy, or (smoother, fewer ties) minus the mean NLL or minus the mean KL
divergence from the full model's predictions. Among candidates of equal
fitness within a budget, the one that uses more of the budget wins (an unused
budget buys nothing).

Every evaluated candidate is appended to a journal (one JSON line, flushed and
fsynced). The search is deterministic for a seed, so a resumed run replays the
same generations, taking every already-evaluated candidate from the journal:
nothing is evaluated twice.
"""
from __future__ import annotations

import json
import math
import numbers
import os
import random
import time
from dataclasses import dataclass, fields
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ..errors import ConfigError
from ..files import append_text
from ..progress import Estimate, Heartbeat, format_duration
from .fitness import fitness_of
from .shrinkage import Shrinkage, fit_shrinkage
from ..schedules.schedule import TokenSchedule
from ..schedules.space import SearchSpace

Counts = Tuple[int, ...]
#: a candidate: its counts and, in a space that mixes reducers, each block's reducer ("" where it keeps its tokens);
#: ``()`` when the model's reducer does everything
Gene = Tuple[Counts, Tuple[str, ...]]


def gene_of(schedule: TokenSchedule) -> Gene:
    """The search's key of a schedule."""
    return tuple(schedule.counts), tuple(r or "" for r in schedule.reducers) if schedule.reducers else ()


def entry_gene(d: Optional[dict]) -> Optional[Gene]:
    """The search's key of an entry as ``search.json`` and the journal write it (``counts``, ``reducers``)."""
    return (tuple(d["counts"]), tuple(r or "" for r in d.get("reducers") or ())) if d else None


def schedule_of(gene: Gene, num_patches: int, min_tokens: int = 1) -> TokenSchedule:
    """The schedule of a search key."""
    counts, reducers = gene
    return TokenSchedule(counts, num_patches, min_tokens,
                         reducers=tuple(r or None for r in reducers) if reducers else None)


@dataclass
class Candidate:
    counts: Counts
    accuracy: float
    macs: int
    latency: Optional[float] = None  # seconds
    generation: int = 0
    origin: str = "init"
    reducers: Tuple[str, ...] = ()  # per block ("" = keeps its tokens); () = the model's reducer
    nll: Optional[float] = None  # mean cross-entropy on the held-out images
    kl: Optional[float] = None  # mean KL divergence from the full model's predictions
    fitness: Optional[float] = None  # what the search maximises (None: accuracy)
    fitness_se: Optional[float] = None  # its standard error as a difference to the full model (paired)
    measured_fitness: Optional[float] = None  # the held-out fitness before shrinkage (None: not shrunk)

    @property
    def gene(self) -> Gene:
        return self.counts, self.reducers

    @property
    def measured_score(self) -> float:
        """The held-out fitness as measured (``score`` may be corrected for the winner's curse)."""
        return self.score if self.measured_fitness is None else self.measured_fitness

    @property
    def score(self) -> float:
        return self.accuracy if self.fitness is None else self.fitness

    def cost(self, objective: str) -> float:
        return float(self.macs if objective == "macs" else self.latency)

    def to_dict(self) -> dict:
        return {"counts": list(self.counts), **({"reducers": [r or None for r in self.reducers]} if self.reducers
                                                 else {}), "accuracy": self.accuracy, "nll": self.nll, "kl": self.kl,
                "fitness": self.score, **({"fitness_measured": self.measured_fitness, "fitness_se": self.fitness_se}
                                           if self.measured_fitness is not None else {}),
                "macs": self.macs,
                "latency_ms": None if self.latency is None else self.latency * 1e3,
                "generation": self.generation, "origin": self.origin}


@dataclass
class Budget:
    """A MAC or latency budget; checked when made (:class:`~tavt_kit.errors.ConfigError` naming the field)."""

    objective: str  # "macs" | "latency"
    limit: float  # MACs or seconds
    #: a latency budget given as a fraction of your model's latency on the target (``'50%'``): ``limit`` is that
    #: fraction of the full schedule's latency (see :func:`~.options.resolve_fractions`), and the round that
    #: times every option with your model judges it by the ratio to your model, which a drifting machine keeps
    fraction: Optional[float] = None

    def __post_init__(self):
        if self.objective not in ("macs", "latency"):
            raise ConfigError(f"budget objective={self.objective!r}: expected macs or latency")
        unit = "MACs" if self.objective == "macs" else "seconds"
        if self.fraction is not None:
            f = self.fraction
            if isinstance(f, bool) or not isinstance(f, numbers.Real) or not 0 < f <= 1:
                raise ConfigError(f"budget fraction={f!r}: expected a share of your model's latency in (0, 1]")
            if self.objective != "latency":
                raise ConfigError(f"budget fraction={f!r}: a share of your model's latency is a latency budget, "
                                  f"not a {self.objective} one")
        v = self.limit
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) \
                or not (v >= 0 if self.fraction is not None else v > 0):
            raise ConfigError(f"budget limit={v!r}: expected a positive, finite number of {unit}")

    @property
    def label(self) -> str:
        if self.fraction is not None:
            return f"{100 * self.fraction:.4g}%"
        if self.objective == "macs":
            for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
                if self.limit >= scale:
                    return f"{self.limit / scale:.4g}{unit} MACs"
            return f"{self.limit:.4g} MACs"
        return f"{self.limit * 1e3:.4g}ms"


@dataclass
class EvolutionSettings:
    """The evolution's settings (TAVT's defaults), checked when made: a :class:`~tavt_kit.errors.ConfigError`
    naming the field (``population=0: expected a positive integer``)."""

    population: int = 20
    generations: int = 30
    mutations: int = 30
    crossovers: int = 30
    mutation_prob: float = 0.5
    seed: int = 0

    def __post_init__(self):
        for name, low in (("population", 1), ("generations", 0), ("mutations", 0), ("crossovers", 0), ("seed", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
                raise ConfigError(f"{name}={v!r}: expected a {'positive' if low else 'non-negative'} integer")
            setattr(self, name, int(v))
        p = self.mutation_prob
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
            raise ConfigError(f"mutation_prob={p!r}: expected a probability in [0, 1]")

    @classmethod
    def of(cls, value, param: str = "settings") -> "EvolutionSettings":
        """``value`` as settings: None (the defaults), an EvolutionSettings, or a dict of its fields (an unknown
        key is refused naming it); anything else is a ConfigError naming ``param``."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            known = [f.name for f in fields(cls)]
            bad = [k for k in value if k not in known]
            if bad:
                raise ConfigError(f"{param}[{bad[0]!r}]: not an evolution setting; expected {', '.join(known)}")
            try:
                return cls(**value)
            except ConfigError as e:
                raise ConfigError(f"{param}.{e}") from None
        raise ConfigError(f"{param}={value!r}: expected an EvolutionSettings (or a dict of its fields: population, "
                          "generations, mutations, crossovers, mutation_prob, seed) or None")

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def pareto_front(cands: Iterable[Candidate], objective: str = "macs") -> List[Candidate]:
    """Candidates not dominated in (lower cost, higher fitness), sorted by cost."""
    front: List[Candidate] = []
    best = -math.inf
    for c in sorted(cands, key=lambda c: (c.cost(objective), -c.score)):
        if c.score > best:
            front.append(c)
            best = c.score
    return front


def front_area(front: Sequence[Candidate], objective: str, lo: float, hi: float) -> float:
    """Area under the staircase Pareto front between costs ``lo`` and ``hi``, normalised by ``hi - lo``."""
    if hi <= lo or not front:
        return 0.0
    area, pts = 0.0, [(c.cost(objective), c.accuracy) for c in front]  # held-out accuracy, whatever the fitness
    for i, (cost, acc) in enumerate(pts):
        nxt = pts[i + 1][0] if i + 1 < len(pts) else hi
        a, b = max(cost, lo), min(nxt, hi)
        if b > a:
            area += (b - a) * acc
    return area / (hi - lo)


class Journal:
    """Append-only JSON-lines record of evaluated candidates.

    A last line torn by a kill is cut off before anything is appended (so the next record starts on a line
    of its own); a garbage line anywhere else is a one-line error naming the journal and the line.
    """

    def __init__(self, path: Optional[str], header: dict):
        self.path = path
        self.header = header
        self.entries: Dict[Gene, dict] = {}
        #: records of other precisions and of deployed runs: (kind, precision, section key) -> gene -> record
        self.sections: Dict[Tuple[str, Optional[str]], Dict[Gene, dict]] = {}
        if path and os.path.exists(path):
            from ..errors import ConfigError

            with open(path, "rb") as f:
                data = f.read()
            good, seen_header = 0, False  # bytes of whole, valid lines
            lines = data.split(b"\n")
            for i, raw in enumerate(lines):
                last = i == len(lines) - 1  # no newline after it: written by a process that was killed
                if not raw.strip():
                    good += len(raw) + (0 if last else 1)
                    continue
                try:
                    rec = json.loads(raw.decode("utf-8"))
                    if not isinstance(rec, dict):
                        raise ValueError("not an object")
                except (ValueError, UnicodeDecodeError):
                    if last:
                        break  # torn by a kill: dropped below
                    raise ConfigError(f"{path}: line {i + 1} is not a journal record; the journal is damaged "
                                      "(delete it to search again from scratch)") from None
                if last:  # a whole record without its newline: keep it, end the line
                    good += len(raw)
                    self._torn_newline = True
                else:
                    good += len(raw) + 1
                if rec.get("kind") == "header":
                    seen_header = True
                    if not _same_settings(rec.get("settings"), header.get("settings")):
                        from ..errors import ConfigError

                        raise ConfigError(f"{path}: journal of a search with other settings ("
                                          f"{settings_difference(rec.get('settings'), header.get('settings'))}); "
                                          "write to another folder or delete the journal")
                elif rec.get("kind") in ("candidate", "deployed"):
                    gene = entry_gene(rec)
                    p = rec.get("precision")
                    if rec["kind"] == "candidate" and p in (None, "fp32"):
                        self.entries[gene] = rec
                    else:
                        self.sections.setdefault((rec["kind"], p, _section_key(rec.get("key"))), {})[gene] = rec
            if good < len(data):
                with open(path, "r+b") as f:  # cut the torn tail, so appends start on a fresh line
                    f.truncate(good)
            if getattr(self, "_torn_newline", False):
                with open(path, "ab") as f:
                    f.write(b"\n")
            if not seen_header:  # killed while writing the header itself
                self._append({"kind": "header", **header})
        elif path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._append({"kind": "header", **header})

    def _append(self, rec: dict) -> None:
        if not self.path:
            return
        append_text(self.path, json.dumps(rec) + "\n")  # all or nothing: a full disk leaves no torn line

    def record(self, gene: Gene, **values) -> None:
        counts, reducers = gene
        rec = {"kind": "candidate", "counts": list(counts),
               **({"reducers": [r or None for r in reducers]} if reducers else {}), **values}
        self.entries[gene] = rec
        self._append(rec)


def _keyed(settings):
    """The settings a journal is keyed on: all but the int8 calibration, which keys only the records of deployed
    int8 runs (:class:`JournalSection`'s ``key``); journals before it had it in their header."""
    if not isinstance(settings, dict):
        return settings
    return _same_paths({k: v for k, v in settings.items() if k != "calibration_images"})


def _same_paths(value):
    """``value`` with every latency table's path resolved: one table named ``runs/t.json`` by one run and
    ``./runs/t.json`` or by its absolute path by the next is the same table."""
    if isinstance(value, dict):
        return {k: (os.path.realpath(v) if k == "table" and isinstance(v, str) else _same_paths(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_same_paths(v) for v in value]
    return value


def settings_difference(stored, current) -> str:
    """The first fields in which two journal headers' settings differ, as ``name: stored -> current``."""
    stored, current = _keyed(stored), _keyed(current)
    if not (isinstance(stored, dict) and isinstance(current, dict)):
        return "the header"
    out = []
    for k in sorted(set(stored) | set(current)):
        a, b = stored.get(k), current.get(k)
        if a != b and not (k in LATER_KEYS and a is None):
            if isinstance(a, dict) and isinstance(b, dict):
                out += [f"{k}.{d}" for d in settings_difference(a, b).split(", ")]
            else:
                out.append(f"{k}: {json.dumps(a)[:60]} -> {json.dumps(b)[:60]}")
    return ", ".join(out[:3]) if out else "the header"


def _same_settings(stored, current) -> bool:
    """Whether a journal's header settings are this search's (a key the stored header predates is not compared:
    journals before ``holdout_sha256`` keyed the held-out images by their number alone, journals before
    ``token_drop`` did not key the scorer)."""
    stored, current = _keyed(stored), _keyed(current)
    if isinstance(stored, dict) and isinstance(current, dict):
        current = {k: v for k, v in current.items() if k in stored or k not in LATER_KEYS}
    return stored == current


#: journal settings added after journals were first written: a header without one is not compared on it
LATER_KEYS = ("holdout_sha256", "token_drop")


def _section_key(key) -> Optional[str]:
    return None if key is None else json.dumps(key, sort_keys=True)


class JournalSection:
    """One precision's (or the deployed runs') records of a shared :class:`Journal`: the same ``entries`` and
    ``record`` an :class:`EvolutionSearch` uses, each record tagged with its kind and precision. ``key``
    (JSON-able) is what else the records depend on (deployed int8 runs: the calibration images): records
    under another key are not this section's (a search rerun with other calibration quantises again)."""

    def __init__(self, journal: Journal, precision: str, kind: str = "candidate", key: Optional[dict] = None):
        self.journal, self.precision, self.kind, self.key = journal, precision, kind, key
        self.entries = journal.sections.setdefault((kind, precision, _section_key(key)), {})

    def record(self, gene: Gene, **values) -> None:
        counts, reducers = gene
        rec = {"kind": self.kind, "precision": self.precision, **({"key": self.key} if self.key is not None else {}),
               "counts": list(counts), **({"reducers": [r or None for r in reducers]} if reducers else {}), **values}
        self.entries[gene] = rec
        self.journal._append(rec)


class EvolutionSearch:
    """Runs the evolution; costs and accuracies come from the callables given.

    Args:
        space: the schedules allowed.
        accuracy_fn: list of schedules -> list of held-out metrics, each a dict with
            ``accuracy`` (and ``nll``, ``kl`` for those fitnesses) or a plain accuracy
            (batched: one call per generation so the evaluator can share work).
        fitness: ``accuracy``, ``nll`` or ``kl`` (what is maximised: accuracy, -NLL, -KL).
        macs_fn: schedule -> MACs.
        latency_fn: schedule -> seconds, or None when no latency objective.
        budgets: constraints; the search also maps the whole front.
        journal: where evaluated candidates are recorded (resume).
        log: progress callback (one line per generation).
    """

    def __init__(self, space: SearchSpace, accuracy_fn: Callable[[List[TokenSchedule]], List[float]],
                 macs_fn: Callable[[TokenSchedule], int], settings: EvolutionSettings,
                 latency_fn: Optional[Callable[[TokenSchedule], float]] = None,
                 budgets: Sequence[Budget] = (), journal: Optional[Journal] = None,
                 log: Callable[[str], None] = print, fitness: str = "accuracy"):
        self.fitness = fitness
        self.space = space
        self.accuracy_fn = accuracy_fn
        self.macs_fn = macs_fn
        self.latency_fn = latency_fn
        self.settings = settings
        self.budgets = list(budgets)
        self.journal = journal or Journal(None, {})
        self.log = log
        self.rng = random.Random(settings.seed)
        self.evaluated: Dict[Counts, Candidate] = {}
        self.evaluations = 0  # candidates actually evaluated in this process (not from the journal)
        self.heartbeat_s = 10.0  # a line at least this often while a generation is evaluated
        self.eval_seconds = 0.0
        self.objective = "latency" if latency_fn is not None else "macs"
        self.shrinkage: Optional[Shrinkage] = None  # set by shrink(): fitness corrected for the winner's curse

    # --------------------------------------------------------------- operators
    def repair(self, counts: Sequence[float], reducers: Sequence[str] = ()) -> Gene:
        """Counts rounded into the space (:meth:`SearchSpace.snap`); in a space that names reducers, one for each
        reducing block, none for the others."""
        out, prev = [], self.space.num_patches
        red = []
        for i, c in enumerate(counts):
            c = self.space.snap(i, prev, c)
            out.append(c)
            if self.space.explicit:
                r = (reducers[i] if i < len(reducers) else "") or self.space.reducers[0]
                red.append(r if c < prev else "")
            prev = c
        return tuple(out), (tuple(red) if any(red) else ())

    def mutate(self, parent: Gene) -> Gene:
        """TAVT's mutation: each block, with probability p, redrawn between its neighbours' counts; in a mixed
        space each block's reducer is also redrawn with probability p."""
        counts, reducers = parent
        new = list(counts)
        for i in range(len(new)):
            if self.rng.random() < self.settings.mutation_prob:
                prev = new[i - 1] if i else self.space.num_patches
                nxt = new[i + 1] if i + 1 < len(new) else self.space.count_range(i, prev)[0]
                new[i] = self.rng.randint(min(nxt, prev), prev)
        red = list(reducers) or [""] * len(new)
        if self.space.mixed:
            for i in range(len(red)):
                if self.rng.random() < self.settings.mutation_prob:
                    red[i] = self.rng.choice(self.space.reducers)
        return self.repair(new, red)

    def crossover(self, a: Gene, b: Gene) -> Gene:
        """Each block's count the mean of the parents'; its reducer from either parent."""
        red = []
        if self.space.explicit:
            ra, rb = a[1] or ("",) * len(a[0]), b[1] or ("",) * len(b[0])
            red = [x if self.rng.random() < 0.5 else y for x, y in zip(ra, rb)]
        return self.repair([(x + y) / 2 for x, y in zip(a[0], b[0])], red)

    # -------------------------------------------------------------- evaluation
    def evaluate(self, genes: List[Gene], generation: int, origin: str) -> List[Candidate]:
        todo = [g for g in dict.fromkeys(genes) if g not in self.evaluated]
        fresh = [g for g in todo if g not in self.journal.entries]
        if fresh:
            t = time.perf_counter()
            scheds = [schedule_of(g, self.space.num_patches, self.space.min_tokens) for g in fresh]
            what = f"generation {generation}: {len(fresh)} {origin} candidate{'s' if len(fresh) != 1 else ''}"
            taken = getattr(self.accuracy_fn, "taken", 0)  # taken from other searches (reuse.py): no cost
            with Heartbeat(self.log, f"evaluating {what} on the held-out images", self.heartbeat_s):
                results = self.accuracy_fn(scheds)
            taken = getattr(self.accuracy_fn, "taken", 0) - taken
            done = {"n": 0}
            with Heartbeat(self.log, f"latency of {what}", self.heartbeat_s,
                           progress=lambda: f"{done['n']}/{len(fresh)} done"):
                for g, s, res in zip(fresh, scheds, results):
                    metrics = res if isinstance(res, dict) else {"accuracy": float(res)}
                    lat = self.latency_fn(s) if self.latency_fn else None
                    self.journal.record(g, **metrics, macs=int(self.macs_fn(s)), latency=lat,
                                        generation=generation, origin=origin)
                    done["n"] += 1
            # the rate counts everything a candidate costs (a measured latency can dominate the accuracy)
            self.eval_seconds += time.perf_counter() - t
            self.evaluations += len(fresh) - taken
        out = []
        for g in todo:
            rec = self.journal.entries[g]
            cand = Candidate(g[0], rec["accuracy"], rec["macs"], rec.get("latency"), rec.get("generation", generation),
                             rec.get("origin", origin), reducers=g[1], nll=rec.get("nll"), kl=rec.get("kl"),
                             fitness=fitness_of(rec, self.fitness), fitness_se=rec.get(f"{self.fitness}_se"))
            if self.shrinkage is not None:
                self._shrink(cand)
            self.evaluated[g] = cand
            out.append(cand)
        return out

    def shrink(self) -> Optional[Shrinkage]:
        """Corrects every candidate's fitness for the winner's curse (:mod:`~.shrinkage`), fitted on all evaluated
        so far; candidates evaluated later are corrected with the same fit. Returns the fit (None: too few
        candidates with a standard error; nothing changes)."""
        self.shrinkage = fit_shrinkage([(c.measured_score, c.fitness_se, c.macs) for c in self.evaluated.values()])
        if self.shrinkage is None:
            noisy = sum(c.fitness_se is not None for c in self.evaluated.values())
            self.log(f"picks chosen on the held-out fitness as measured: {noisy} of {len(self.evaluated)} candidates "
                     "carry a standard error, too few to correct it for the winner's curse")
        for c in self.evaluated.values() if self.shrinkage is not None else ():
            self._shrink(c)
        return self.shrinkage

    def _shrink(self, c: Candidate) -> None:
        c.measured_fitness = c.measured_score
        c.fitness = self.shrinkage.estimate(c.measured_fitness, c.fitness_se, c.macs)

    def feasible(self, budget: Budget) -> List[Candidate]:
        return [c for c in self.evaluated.values() if c.cost(budget.objective) <= budget.limit]

    def best_within(self, budget: Budget) -> Optional[Candidate]:
        cands = self.feasible(budget)
        # equal fitness: the one that uses more of the budget (then the gene, so the pick is reproducible)
        return max(cands, key=lambda c: (c.score, c.cost(budget.objective), c.gene)) if cands else None

    def parents(self) -> List[Gene]:
        pool = {c.gene: c for c in pareto_front(self.evaluated.values(), self.objective)}
        for budget in self.budgets:
            top = sorted(self.feasible(budget), key=lambda c: (-c.score, -c.cost(budget.objective)))
            for c in top[: self.settings.population]:
                pool[c.gene] = c
        if len(pool) < 2:
            for c in sorted(self.evaluated.values(), key=lambda c: -c.score)[: self.settings.population]:
                pool[c.gene] = c
        return sorted(pool)  # sorted: the order must not depend on dict history, for exact replays

    # --------------------------------------------------------------------- run
    def run(self) -> List[Candidate]:
        s = self.settings
        init = [gene_of(self.space.full()), gene_of(self.space.smallest())]
        if self.space.mixed:  # the smallest member with each reducer everywhere
            init += [gene_of(self.space.smallest(r)) for r in self.space.reducers]
        init = list(dict.fromkeys(init))
        seen = set(init)
        tries = 0
        while len(init) < s.population and tries < 50 * s.population:
            g = gene_of(self.space.sample(self.rng))
            tries += 1
            if g not in seen:
                seen.add(g)
                init.append(g)
        if self.journal.entries:
            self.log(f"resuming: {len(self.journal.entries)} candidates already evaluated are loaded from the "
                     "journal (replayed, not evaluated again)")
        self._t_start = time.perf_counter()
        self.evaluate(init, 0, "init")
        self._report(0)
        for gen in range(1, s.generations + 1):
            parents = self.parents()
            children = []
            for _ in range(s.mutations):
                children.append((self.mutate(self.rng.choice(parents)), "mutation"))
            for _ in range(s.crossovers):
                a, b = self.rng.sample(parents, 2) if len(parents) > 1 else (parents[0], parents[0])
                children.append((self.crossover(a, b), "crossover"))
            for origin in ("mutation", "crossover"):
                self.evaluate([g for g, o in children if o == origin], gen, origin)
            self._report(gen)
        return list(self.evaluated.values())

    def _left_s(self, gen: int) -> Optional[float]:
        """Seconds the generations after ``gen`` take at most, at the measured time per candidate of this process
        (None before it evaluated one: a resumed search has no rate until it evaluates one itself)."""
        if not self.evaluations or self.eval_seconds <= 0:
            return None
        left = max(0, self.settings.generations - gen) * (self.settings.mutations + self.settings.crossovers)
        return left * self.eval_seconds / self.evaluations

    def _eta(self, gen: int) -> str:
        """Time left, as the progress line says it."""
        if self.settings.generations - gen <= 0:
            return "0s"
        left = self._left_s(gen)
        return "?" if left is None else "≤" + format_duration(left)

    def estimate(self, gen: int) -> Optional[Estimate]:
        """The whole evolution's time on this machine from the rate measured up to generation ``gen`` (None
        before this process evaluated a candidate)."""
        left = self._left_s(gen)
        return None if left is None else Estimate(self.eval_seconds + left, self.settings.generations, "generations")

    def _report(self, gen: int) -> None:
        est = self.estimate(gen) if gen == 0 and self.settings.generations > 0 else None
        if est is not None and est.long:  # said once, before the long part: over an hour on this machine
            self.log(est.line("search"))
        front = pareto_front(self.evaluated.values(), self.objective)
        # a resumed search replays its journal: no rate until this process evaluates something itself
        rate = f"{self.evaluations / self.eval_seconds * 60:7.1f} cand/min" if self.eval_seconds > 0 and \
            self.evaluations else "from the journal"
        parts = [f"gen {gen:>3}/{self.settings.generations}", f"evaluated {len(self.evaluated):>4}",
                 f"front {len(front):>3}", rate]
        if getattr(self, "_t_start", None) is not None:
            parts.append("ETA " + self._eta(gen))
        for b in self.budgets:
            best = self.best_within(b)
            parts.append(f"{b.label}: " + (f"{100 * best.accuracy:.2f}%" + ("" if self.fitness == "accuracy" else
                                                                           f" ({self.fitness} {-best.score:.4f})")
                                           if best else "none yet"))
        self.log("  ".join(parts))
