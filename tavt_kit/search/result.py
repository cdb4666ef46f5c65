"""Reading a ``search.json``: the budget a user names and the schedule the search chose for it."""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ..errors import ConfigError, ScheduleError
from ..schedules import TokenSchedule, check_model_info

SEARCH_FORMAT = "fgvc-kit/search"


def _budget_number(label: str) -> Optional[float]:
    m = re.match(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)", label, re.I)
    return float(m.group(1)) if m else None


def parse_budget(text) -> Optional[Tuple[str, float]]:
    """``"20ms"`` -> ``("latency", 0.02)`` (seconds), ``"20G"`` / ``"20G MACs"`` -> ``("macs", 2e10)``; None when
    the text is a bare number or names no unit (a budget's label or number, looked up in the search)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)\s*([a-z ]*)", str(text), re.I)
    if not m:
        return None
    num, unit = float(m.group(1)), re.sub(r"\s+", "", m.group(2)).lower()
    if unit in ("s", "ms", "us"):
        return "latency", num * {"s": 1.0, "ms": 1e-3, "us": 1e-6}[unit]
    u = re.sub(r"macs?$", "", unit)
    if u in ("k", "m", "g", "t") or (u == "" and unit.startswith("mac")):
        return "macs", num * {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}[u]
    return None


def budget_label(objective: str, limit: float) -> str:
    """The label fgvc-kit search gives a budget (``15ms``, ``20G MACs``)."""
    if objective == "latency":
        return f"{limit * 1e3:.4g}ms"
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if limit >= scale:
            return f"{limit / scale:.4g}{unit} MACs"
    return f"{limit:.4g} MACs"


def front_latency_ms(point: Dict[str, Any], search: Optional[Dict[str, Any]] = None
                     ) -> Tuple[Optional[float], Optional[str]]:
    """A point's latency and where it comes from: ``measured`` (re-measured, or a search that measured) or
    ``predicted`` (from a latency table)."""
    if point.get("latency_measured_ms") is not None:
        return float(point["latency_measured_ms"]), "measured"
    if point.get("latency_ms") is not None:
        table = ((search or {}).get("latency") or {}).get("source") == "table"
        return float(point["latency_ms"]), "predicted" if table else "measured"
    return None, None


def pick_from_front(search: Dict[str, Any], objective: str, limit: float) -> Optional[Dict[str, Any]]:
    """The most accurate schedule of the search's Pareto front (held-out accuracy) within a budget it was not
    run for; latency budgets use the front's latency (measured where the search measured it)."""
    best = None
    for p in search.get("pareto_front") or []:
        cost = p.get("macs") if objective == "macs" else (front_latency_ms(p)[0] or 0) / 1e3 or None
        if cost is None or cost > limit:
            continue
        if best is None or p.get("holdout_accuracy", 0) > best.get("holdout_accuracy", 0):
            best = p
    return best


def select_budget(search: Dict[str, Any], budget, where: str = "search.json") -> Dict[str, Any]:
    """The entry of ``search["budgets"]`` that ``budget`` names: its label (``"15ms"``, ``"20G MACs"``,
    spaces and case ignored), the same value in other units (``"0.015s"``, ``"20e9"``), or the bare
    number of its label (``15``, ``20``). Any other budget with a unit (``12ms``, ``25M MACs``) is answered
    from the search's Pareto front (:func:`pick_from_front`): the entry then says ``"source": "front"``."""
    rows = search.get("budgets") or []
    labels = ", ".join(str(r.get("label")) for r in rows) or "none"

    def norm(s) -> str:
        return re.sub(r"\s+", "", str(s)).lower()

    text = str(budget).strip()
    hits = [r for r in rows if norm(r.get("label")) == norm(text)]
    if not hits:
        m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)\s*([a-z ]*)", text, re.I)
        if m:
            num, unit = float(m.group(1)), norm(m.group(2))
            for r in rows:
                limit = float(r.get("limit") or 0)
                if r.get("objective") == "latency":
                    scale = {"": 1e-3, "ms": 1e-3, "s": 1.0, "us": 1e-6}.get(unit)
                    ok = scale is not None and math.isclose(num * scale, limit, rel_tol=1e-6)
                else:
                    u = re.sub(r"macs?$", "", unit)
                    scale = {"": None, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}.get(u, -1)
                    if scale is None:  # a bare number: the label's number, or the limit itself
                        lab = _budget_number(str(r.get("label")))
                        ok = (lab is not None and math.isclose(num, lab, rel_tol=1e-6)) or \
                            math.isclose(num, limit, rel_tol=1e-6)
                    else:
                        ok = scale > 0 and math.isclose(num * scale, limit, rel_tol=1e-6)
                if ok:
                    hits.append(r)
    if len(hits) > 1:
        raise ConfigError(f"budget={text}: ambiguous in {where} ({', '.join(r['label'] for r in hits)}); "
                          "give the label with its unit")
    if not hits:
        parsed = parse_budget(text)
        if parsed is None:
            raise ConfigError(f"budget={text}: not in {where} and without a unit; its budgets: {labels}; or give "
                              "any budget with its unit (12ms, 25M MACs) to pick from the search's Pareto front")
        objective, limit = parsed
        if objective == "latency" and not any(front_latency_ms(p)[0] for p in search.get("pareto_front") or []):
            raise ConfigError(f"budget={text}: not a budget of {where} (its budgets: {labels}), and it has no "
                              "latency figures to pick another from (a MAC search); search with a latency "
                              "budget or a latency table, or give a MAC budget")
        best = pick_from_front(search, objective, limit)
        if best is None:
            costs = [p.get("macs") if objective == "macs" else (front_latency_ms(p)[0] or 0) / 1e3
                     for p in search.get("pareto_front") or []]
            low = min(costs) if costs else None
            shown = (budget_label(objective, low) if low else "n/a")
            raise ConfigError(f"budget={text}: not a budget of {where} (its budgets: {labels}), and nothing on "
                              f"its Pareto front fits (its cheapest schedule costs {shown})")
        return {"label": budget_label(objective, limit), "objective": objective, "limit": limit, "best": best,
                "baselines": {}, "source": "front"}
    row = hits[0]
    if not row.get("best") or not row["best"].get("counts"):
        raise ConfigError(f"budget={row['label']}: no schedule of the search space met this budget in {where}; "
                          f"its budgets: {labels}")
    return row


def schedule_from_search(model, search_path, budget) -> Tuple[Any, Dict[str, Any]]:
    """The schedule a search chose for ``budget``, checked against ``model``; returns ``(schedule, source)``."""
    path = os.fspath(search_path)
    where = f"search={path}"
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{where}: file not found") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{where}: not a readable search result ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != SEARCH_FORMAT:
        raise ConfigError(f"{where}: not a search result of fgvc-kit search (format {SEARCH_FORMAT!r})")
    row = select_budget(doc, budget, path)
    check_model_info(model, doc.get("model") or {}, where)
    searched = (doc.get("model") or {}).get("weights_sha256")
    if searched:
        from ..models.checkpoint import weights_digest

        mine = weights_digest(model)
        if mine != searched:
            raise ScheduleError(f"{where}: searched other weights (sha256 {searched[:12]}...) than this checkpoint's "
                                f"({mine[:12]}...); its accuracies are not this model's: search this checkpoint")
    try:
        sched = model.make_schedule(TokenSchedule(tuple(row["best"]["counts"]), model.num_patches,
                                                  reducers=row["best"].get("reducers")))
    except ScheduleError as e:
        raise ScheduleError(f"{where}: budget {row['label']}: {e} (a search of another model?)") from None
    best = row["best"]
    source = {"kind": "search", "file": os.path.basename(path), "budget": row["label"],
              "picked_from": row.get("source", "search budget"),
              "objective": row.get("objective"), "limit": row.get("limit"),
              "search_holdout_accuracy": best.get("holdout_accuracy"), "search_test_accuracy": best.get("test_accuracy"),
              "search_latency_ms": best.get("latency_ms"), "schedule_file": row.get("schedule_file"),
              # a search of (schedule, precision) pairs chose the precision too
              "precision": best.get("precision")}
    return sched, {k: v for k, v in source.items() if v is not None}


# ------------------------------------------------------------------ typed view
def describe_family(family: str, entry: Optional[Dict[str, Any]] = None, short: bool = False) -> str:
    """A deployable family of a budget in words: ``"searched"``, ``"tome_parent"``, ``"parent"``, with an
    ``@precision`` suffix for the training-free ones at another precision (``"tome_parent@int8"``).
    ``short``: the name alone, for a table that shows the weights and the precision in columns of their own."""
    base, _, precision = family.partition("@")
    entry = entry or {}
    if base == "searched":
        text, where = "searched schedule", " (supernet weights)"
    elif base == "tome_parent":
        r = entry.get("r")
        text, where = f"ToMe{f' r={r}' if r is not None else ''}", " on your model (its own weights, no training)"
    elif base == "parent":
        text, where = "your model as it is", ""
    else:
        text, where = base, ""
    if short:
        return text
    text = ("the " if base == "searched" else "") + text + where
    precision = precision or entry.get("precision")
    return f"{text} @ {precision}" if precision and precision != "fp32" else text


@dataclass(frozen=True)
class Pick:
    """One schedule of a search result (a budget's pick, a front point, a baseline) with its figures."""

    counts: Tuple[int, ...]
    reducers: Optional[Tuple[Optional[str], ...]]
    precision: str
    macs: int
    latency_ms: Optional[float]
    latency_measured_ms: Optional[float]
    holdout_accuracy: Optional[float]
    holdout_interval: Optional[Tuple[float, float]]
    test_accuracy: Optional[float]
    test_interval: Optional[Tuple[float, float]]
    #: test accuracy minus your model's (the supernet's parent), paired on the same images (None: no parent)
    vs_parent: Optional[Dict[str, Any]] = None
    raw: Dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Pick":
        iv = (lambda v: tuple(v) if v else None)
        acc = d.get("holdout_accuracy", d.get("accuracy"))  # candidates say "accuracy"
        return cls(tuple(int(c) for c in d["counts"]), tuple(d["reducers"]) if d.get("reducers") else None,
                   str(d.get("precision") or "fp32"), int(d["macs"]), d.get("latency_ms"),
                   d.get("latency_measured_ms"), acc, iv(d.get("holdout_interval")), d.get("test_accuracy"),
                   iv(d.get("test_interval")), d.get("vs_parent"), dict(d))

    def schedule(self, num_patches: int) -> TokenSchedule:
        return TokenSchedule(self.counts, num_patches, reducers=self.reducers)


@dataclass(frozen=True)
class BudgetResult:
    """A budget of a search: its ``best`` pick (None: nothing in the space meets it), the fp32-only pick of a
    search of several precisions (``best_fp32``), the baselines fitted to it, and the pair's paired
    difference to the fp32-only pick (``vs_fp32``)."""

    label: str
    objective: str
    limit: float
    best: Optional[Pick]
    best_fp32: Optional[Pick]
    baselines: Dict[str, Pick]
    schedule_file: Optional[str]
    vs_fp32: Optional[Dict[str, Any]]
    #: what needs no training, run on your model: ``tome_parent`` (ToMe, r fitted to the budget), ``parent``
    training_free: Dict[str, Pick] = field(default_factory=dict)
    #: the deployable to ship among the searched pick and the training-free ones (``family``, ``weights``, ``why``)
    recommended: Optional[Dict[str, Any]] = None

    @classmethod
    def from_dict(cls, row: Dict[str, Any]) -> "BudgetResult":
        pick = (lambda d: Pick.from_dict(d) if d else None)
        return cls(str(row["label"]), str(row["objective"]), float(row["limit"]), pick(row.get("best")),
                   pick(row.get("best_fp32")), {k: Pick.from_dict(v) for k, v in (row.get("baselines") or {}).items()},
                   row.get("schedule_file"), row.get("vs_fp32"),
                   {k: Pick.from_dict(v) for k, v in (row.get("training_free") or {}).items()}, row.get("recommended"))


class SearchResult:
    """What a search found, as values: ``.budgets[label].best``, ``.front``, ``.candidates``, ``.baselines``,
    ``.full``; ``.doc`` is the content of ``search.json``. ``SearchResult.load(path)`` reads a ``search.json``
    (this version and the ones before it); ``.save(dir)`` writes one."""

    VERSION = 1

    def __init__(self, doc: Dict[str, Any], path: Optional[str] = None):
        self.doc, self.path = doc, path
        try:
            self.full = Pick.from_dict(doc["full"])
            self.smallest = Pick.from_dict(doc["smallest"])
            #: your model (the checkpoint the supernet was distilled from) on the same images; None without one
            self.parent: Optional[Pick] = Pick.from_dict(doc["parent"]) if doc.get("parent") else None
            self.budgets: Dict[str, BudgetResult] = {r["label"]: BudgetResult.from_dict(r)
                                                     for r in doc.get("budgets") or []}
            self.front: List[Pick] = [Pick.from_dict(p) for p in doc.get("pareto_front") or []]
            self.candidates: List[Pick] = [Pick.from_dict(c) for c in doc.get("candidates") or []]
            self.baselines: Dict[str, Dict[str, Pick]] = {
                fam: {k: Pick.from_dict(v) for k, v in rows.items()} for fam, rows in (doc.get("baselines") or {}).items()}
        except (KeyError, TypeError, ValueError) as e:
            what = f"missing field {e}" if isinstance(e, KeyError) else str(e)
            raise ConfigError(f"{path or 'search result'}: malformed search result ({what})") from None

    @property
    def objective(self) -> str:
        return self.doc.get("objective", "macs")

    @property
    def num_patches(self) -> int:
        return int((self.doc.get("model") or {}).get("num_patches") or self.doc["space"]["num_patches"])

    @property
    def precisions(self) -> Tuple[str, ...]:
        return tuple((self.doc.get("precisions") or {}).get("searched") or ("fp32",))

    def budget(self, text) -> BudgetResult:
        """The budget ``text`` names (as :func:`select_budget`: a label, the same value in other units, or any
        budget with a unit, answered from the Pareto front)."""
        return BudgetResult.from_dict(select_budget(self.doc, text, self.path or "search.json"))

    def save(self, out_dir) -> str:
        from ..files import write_json

        os.makedirs(out_dir, exist_ok=True)
        self.path = write_json(self.doc, os.path.join(os.fspath(out_dir), "search.json"))
        return self.path

    @classmethod
    def load(cls, path) -> "SearchResult":
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except FileNotFoundError:
            raise ConfigError(f"{path}: file not found") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path}: not a readable search result ({type(e).__name__})") from None
        if not isinstance(doc, dict) or doc.get("format") != SEARCH_FORMAT:
            raise ConfigError(f"{path}: not a search result of fgvc-kit (format {SEARCH_FORMAT!r})")
        version = doc.get("version", 1)
        if not isinstance(version, int) or version > cls.VERSION:
            raise ConfigError(f"{path}: search result version {version!r} is newer than this fgvc-kit reads "
                              f"({cls.VERSION}); upgrade fgvc-kit")
        return cls(doc, path)

    def __repr__(self) -> str:
        return f"SearchResult({len(self.candidates)} candidates, budgets {list(self.budgets)}, front {len(self.front)})"


def deployable_from_search(model, search_path, budget, pick: str = "recommended"):
    """What to export for ``budget`` of a search of ``model``: ``(model to export, schedule, source)``.

    ``pick="recommended"`` follows the budget's recommendation: when it is a training-free deployable of your
    model (ToMe on the parent, or the parent itself, at any precision searched), the parent checkpoint the
    supernet records is loaded (its weights checked) and exported with that schedule and precision; ``pick="searched"`` always takes the searched
    schedule on the supernet's weights. A search without a recommendation is the searched schedule.
    """
    if pick not in ("recommended", "searched"):
        raise ConfigError(f"pick={pick!r}: expected recommended or searched")
    sched, source = schedule_from_search(model, search_path, budget)
    if pick == "searched":
        return model, sched, source
    with open(os.fspath(search_path), encoding="utf-8") as f:
        doc = json.load(f)
    row = select_budget(doc, budget, os.fspath(search_path))
    rec = row.get("recommended") or {}
    if rec.get("weights") != "parent":
        return model, sched, {**source, **({"recommended": rec["family"]} if rec.get("family") else {})}
    from ..models.checkpoint import load_parent

    parent = load_parent(model)
    psched = parent.make_schedule(TokenSchedule(tuple(rec["counts"]), parent.num_patches,
                                                reducers=rec.get("reducers")))
    free = (row.get("training_free") or {}).get(rec["family"]) or {}
    source = {**source, "recommended": rec["family"], "weights": "parent",
              "parent": (doc.get("parent") or {}).get("path"), "why": rec.get("why"),
              "search_holdout_accuracy": free.get("holdout_accuracy"),
              "search_test_accuracy": free.get("test_accuracy"), "search_latency_ms": free.get("latency_ms")}
    source.pop("schedule_file", None)  # the budget's drop config is the searched schedule, not this one
    source["precision"] = rec.get("precision", "fp32")  # a training-free deployable's own precision
    return parent, psched, {k: v for k, v in source.items() if v is not None}
