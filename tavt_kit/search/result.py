"""Reading a ``search.json``: the budget a user names and the schedule the search chose for it."""
from __future__ import annotations

import math
import os
import re
from typing import Any, Dict, Optional, Tuple

from ..errors import ConfigError
from ..target import Precision
from ..validate import Fields, check_format, read_json
from .consistency import check_whole, merge_reach
from .pick import BUDGET_FIELDS, PICK_FIELDS

SEARCH_FORMAT = "fgvc-kit/search"
#: the newest search.json this fgvc-kit reads and writes: 2 adds ``status`` (``running`` while the search is
#: still completing it, ``finished`` once it is whole) and the int8 calibration under ``settings``; 3 is written
#: from the typed values (:class:`~.outcome.SearchResult`, every pick by :data:`~.pick.PICK_FIELDS`): the content
#: of 2, each pick's fields checked by the one schema
SEARCH_VERSION = 3
#: what ``status`` may say; a file without one (version 1) was written once, finished
SEARCH_STATUSES = ("running", "finished")
#: what a reader says a search.json should be
SEARCH_EXPECTED = "the search.json of fgvc-kit search"


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


def schedule_file_name(label: str) -> str:
    """The drop config a search writes for the budget ``label`` beside search.json (``15ms`` ->
    ``schedule-15ms.json``, ``50%`` -> ``schedule-50pct.json``)."""
    slug = "".join(ch if ch.isalnum() or ch in ".-" else "_" for ch in label.replace("%", "pct")).strip("_")
    return f"schedule-{slug}.json"


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


def _front_cost(p: Dict[str, Any], objective: str) -> Optional[float]:
    """A front point's cost in the budget's unit (MACs, or seconds of latency)."""
    if objective == "macs":
        return float(p["macs"]) if p.get("macs") is not None else None
    ms = front_latency_ms(p)[0]
    return ms / 1e3 if ms else None


def pick_from_front(search: Dict[str, Any], objective: str, limit: float) -> Optional[Dict[str, Any]]:
    """The most accurate schedule of the search's Pareto front (held-out accuracy) within a budget it was not
    run for; latency budgets use the front's latency (measured where the search measured it)."""
    best = None
    for p in search.get("pareto_front") or []:
        cost = _front_cost(p, objective)
        if cost is None or cost > limit:
            continue
        if best is None or p.get("holdout_accuracy", 0) > best.get("holdout_accuracy", 0):
            best = p
    return best


def front_range(search: Dict[str, Any], objective: str) -> Optional[str]:
    """The span of the search's Pareto front in a budget's unit (``4-12 ms predicted``, ``10M-40M MACs``)."""
    points = [p for p in search.get("pareto_front") or [] if _front_cost(p, objective) is not None]
    if not points:
        return None
    lo = min(points, key=lambda p: _front_cost(p, objective))
    hi = max(points, key=lambda p: _front_cost(p, objective))
    if objective == "macs":
        a, b = budget_label("macs", float(lo["macs"])), budget_label("macs", float(hi["macs"]))
        return f"{a.replace(' MACs', '')}-{b}"
    kinds = {front_latency_ms(p, search)[1] for p in (lo, hi)}
    return (f"{front_latency_ms(lo)[0]:.3g}-{front_latency_ms(hi)[0]:.3g} ms "
            f"{kinds.pop() if len(kinds) == 1 else 'predicted or measured'}")


def describe_front_point(search: Dict[str, Any], p: Dict[str, Any], objective: str) -> str:
    """A front point in words: ``12.1 ms predicted, 91.2 % held-out`` (``21.3M MACs, ...`` for a MAC budget)."""
    if objective == "macs":
        cost = budget_label("macs", float(p["macs"]))
    else:
        ms, kind = front_latency_ms(p, search)
        cost = f"{ms:.3g} ms {kind}"
    if p.get("precision") and p["precision"] != "fp32":
        cost += f" at {p['precision']}"
    acc = p.get("holdout_accuracy")
    return cost + (f", {100 * acc:.1f} % held-out" if acc is not None else "")


def select_budget(search: Dict[str, Any], budget, where: str = "search.json", need_pick: bool = True) -> Dict[str, Any]:
    """The entry of ``search["budgets"]`` that ``budget`` names: its label (``"15ms"``, ``"20G MACs"``,
    spaces and case ignored), the same value in other units (``"0.015s"``, ``"20e9"``), or the bare
    number of its label (``15``, ``20``). Any other budget with a unit (``12ms``, ``25M MACs``) is answered
    from the search's Pareto front (:func:`pick_from_front`): the entry then says ``"source": "front"``, and
    ``note`` / ``front_point`` say so in words (``"25ms is not a budget of search.json (it holds 15ms)"``,
    ``"the Pareto-front point at 12.1 ms predicted, 91.2 % held-out, the most accurate within 25ms"``).
    A budget nothing on the front meets, and text that is no budget, are a :class:`ConfigError` naming the
    budgets the file holds; so is a held budget no searched schedule met, unless ``need_pick`` is false (its
    recommendation may be a deployable of your model: :func:`~.deployable.deployable_from_search`)."""
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
        not_held = f"not a budget of {where} (it holds {labels})"
        parsed = parse_budget(text)
        if parsed is None:
            raise ConfigError(f"budget={text}: {not_held}; give one of them, or any budget with its unit (12ms, "
                              "25M MACs) for the most accurate point of the search's Pareto front within it")
        objective, limit = parsed
        label = budget_label(objective, limit)
        span = front_range(search, objective)
        if objective == "latency" and span is None:
            raise ConfigError(f"budget={text}: {not_held}, and it has no latency figures to pick another from "
                              "(a MAC search); search with a latency budget or a latency table, or give a MAC "
                              "budget")
        best = pick_from_front(search, objective, limit)
        if best is None:
            costs = [c for c in (_front_cost(p, objective) for p in search.get("pareto_front") or []) if c]
            cheapest = budget_label(objective, min(costs)) if costs else "n/a"
            raise ConfigError(f"budget={text}: {not_held}, and nothing on its Pareto front fits "
                              f"(its cheapest schedule costs {cheapest}); the front spans {span or 'nothing'}")
        return {"label": label, "objective": objective, "limit": limit, "best": best, "baselines": {},
                "source": "front", "note": f"{text} is {not_held}",
                "front_point": f"the Pareto-front point at {describe_front_point(search, best, objective)}, "
                               f"the most accurate within {label}"}
    row = hits[0]
    if need_pick:
        require_pick(row, where, labels)
    return row


def require_pick(row: Dict[str, Any], where: str, labels: str = "") -> None:
    """Refuse a budget row without a searched schedule (one line naming the budget and the file)."""
    if not row.get("best") or not row["best"].get("counts"):
        raise ConfigError(f"budget={row['label']}: no schedule of the search space met this budget in {where}"
                          + (f"; its budgets: {labels}" if labels else ""))


def budget_source(row: Dict[str, Any], search_path) -> Dict[str, Any]:
    """Where an export's schedule comes from: the search file, the budget and, with a searched pick, its scores."""
    best = row.get("best") or {}
    source = {"kind": "search", "file": os.path.basename(os.fspath(search_path)), "budget": row["label"],
              "picked_from": row.get("source", "search budget"),
              "objective": row.get("objective"), "limit": row.get("limit"),
              "search_holdout_accuracy": best.get("holdout_accuracy"), "search_test_accuracy": best.get("test_accuracy"),
              "search_latency_ms": best.get("latency_ms"), "schedule_file": row.get("schedule_file"),
              # a search of (schedule, precision) pairs chose the precision too
              "precision": best.get("precision")}
    return {k: v for k, v in source.items() if v is not None}


# ------------------------------------------------------------------ typed view
def describe_family(family: str, entry: Optional[Dict[str, Any]] = None, short: bool = False) -> str:
    """A deployable family of a budget in words: ``"searched"``, ``"tome_parent"``, ``"searched_parent"``,
    ``"parent"``, with an ``@precision`` suffix for the training-free ones at another precision
    (``"tome_parent@int8"``).
    ``short``: the name alone, for a table that shows the weights and the precision in columns of their own."""
    base, _, precision = family.partition("@")
    entry = entry or {}
    if base == "searched" and entry.get("weights") == "parent":  # a search of your own model, no supernet
        text, where = "schedule searched", " on your model (its own weights, no training)"
    elif base == "searched":
        text, where = "searched schedule", " (supernet weights)"
    elif base == "finetuned":
        text, where = "searched schedule", " fine-tuned toward your model"
    elif base == "tome_parent":
        r = entry.get("r")
        text, where = f"ToMe{f' r={r}' if r is not None else ''}", " on your model (its own weights, no training)"
    elif base == "searched_parent":
        text, where = "merge schedule searched", " on your model (its own weights, no training)"
    elif base == "parent":
        text, where = "your model as it is", ""
    else:
        text, where = base, ""
    if short:
        return text
    text = ("the " if base in ("searched", "searched_parent", "finetuned") else "") + text + where
    precision = precision or entry.get("precision")
    return f"{text} @ {precision}" if precision and precision != "fp32" else text


def read_search(path, where: Optional[str] = None) -> Dict[str, Any]:
    """The content of a ``search.json``, checked: one :class:`ConfigError` line naming the file (``where``,
    default its path) and the field when it is not a JSON file (a binary or pickled file is never loaded),
    not a search result, a version newer than this fgvc-kit, or holds a value no search writes
    (:func:`validate_search`). Every reader of search.json (report, export ``--search``, the demo) reads it
    here; ``search_status(doc)`` says whether the search finished it."""
    path = os.fspath(path)
    doc = read_json(path, SEARCH_EXPECTED, kind="search result")
    validate_search(doc, where or path)
    return doc


def search_status(doc: Dict[str, Any]) -> str:
    """``finished`` or ``running`` (a search stopped before it completed the file); version-1 files, written
    once at the end, are finished."""
    return doc.get("status") or "finished"


def require_finished(doc: Dict[str, Any], where: str) -> None:
    """Refuse a search.json that its search did not finish (it holds the stages done, not the result)."""
    if search_status(doc) != "finished":
        raise ConfigError(f"{where}: an unfinished search (status {doc.get('status')!r}: stopped, or still "
                          "running, before it completed this file); its picks are not the search's result: run "
                          "the same fgvc-kit search again (it resumes from its journal) and use the search.json it "
                          "finishes")


def validate_search(doc: Any, where: str = "search.json") -> int:
    """Check a search.json's content; returns its version. Refused with one :class:`ConfigError` line naming
    ``where`` and the field: another format, a newer version, an unknown ``status``, a null list; a schedule whose
    counts increase, exceed the model's patch tokens, are not one per block or merge beyond the space's reach, an
    unknown reducer, precision or objective; an accuracy outside [0, 1]; MACs not the schedule's (:mod:`.consistency`),
    a latency or limit not positive. Only each budget's label, objective and limit are required (older files)."""
    version = check_format(doc, where, SEARCH_FORMAT, SEARCH_VERSION, "a search result of fgvc-kit search")
    f = Fields(where)
    f.choice(doc.get("status"), "status", SEARCH_STATUSES)
    f.choice(doc.get("objective"), "objective", ("macs", "latency"))
    model = f.mapping(doc.get("model"), "model") or {}
    space = f.mapping(doc.get("space"), "space") or {}
    depth = f.positive(model.get("depth"), "model.depth", integer=True)
    n = f.positive(model.get("num_patches"), "model.num_patches", integer=True)
    sdepth = f.positive(space.get("depth"), "space.depth", integer=True)
    sn = f.positive(space.get("num_patches"), "space.num_patches", integer=True)
    depth, n = depth or sdepth, n or sn
    f.text(model.get("weights_sha256"), "model.weights_sha256")
    settings = f.mapping(doc.get("settings"), "settings") or {}
    for key in ("holdout_images", "test_images", "calibration_images"):
        f.non_negative(settings.get(key), f"settings.{key}", integer=True)
    check = _PickCheck(f, depth, n, merge_reach(f, space, depth, n))
    for key in ("full", "smallest", "parent"):
        check(doc.get(key), key)
    for field, p in f.each(doc.get("pareto_front"), "pareto_front"):
        check(p, field)
    for field, c in f.each(doc.get("candidates"), "candidates"):
        check(c, field)
    for fam, rows in (f.mapping(doc.get("baselines"), "baselines") or {}).items():
        for k, p in (f.mapping(rows, f"baselines.{fam}") or {}).items():
            check(p, f"baselines.{fam}.{k}")
    labels = set()
    for field, row in f.each(doc.get("budgets"), "budgets"):
        f.mapping(row, field, optional=False)
        label = f.text(f.get(row, "label", f"{field}.label", "the budget's label", True), f"{field}.label", False)
        if label in labels:
            f.fail(f"{field}.label", label, "a label no other budget has")
        labels.add(label)
        f.get(row, "objective", f"{field}.objective", "macs or latency", True)
        f.get(row, "limit", f"{field}.limit", "a positive limit", True)
        for key, kind in BUDGET_FIELDS.items():  # every field by its kind (one schema: search.pick)
            _check_budget_field(f, check, kind, row.get(key), f"{field}.{key}")
        _check_relative(f, (row.get("finetuned") or {}).get("checkpoint"), f"{field}.finetuned.checkpoint")
    prec = f.mapping(doc.get("precisions"), "precisions") or {}
    for i, p in enumerate(f.sequence(prec.get("searched"), "precisions.searched") or ()):
        f.choice(p, f"precisions.searched[{i}]", Precision.ALL, optional=False, what="a precision")
    for group in ("fronts", "candidates"):
        for p, rows in (f.mapping(prec.get(group), f"precisions.{group}") or {}).items():
            f.choice(p, f"precisions.{group}", Precision.ALL, optional=False, what="a precision")
            for field, c in f.each(rows, f"precisions.{group}.{p}"):
                check(c, field)
    check_whole(f, doc)
    return version


def _check_budget_field(f: Fields, check: "_PickCheck", kind: str, v: Any, name: str) -> None:
    """One field of a budget's entry, checked by its kind in :data:`~.pick.BUDGET_FIELDS`."""
    if kind == "objective":
        f.choice(v, name, ("macs", "latency"), optional=False)
    elif kind == "limit":
        f.positive(v, name, optional=False)
    elif kind == "text":
        f.text(v, name)
    elif kind == "share":
        f.number(v, name, above=0.0, high=1.0, expected="a share of your model's latency in (0, 1]")
    elif kind == "count":
        f.non_negative(v, name, integer=True)
    elif kind == "pick":
        check(v, name)
    elif kind == "picks":
        for k, p in (f.mapping(v, name) or {}).items():
            check(p, f"{name}.{k}")
    elif kind == "pick_list":  # files of earlier releases wrote a block that keeps its tokens as '' here
        for item, p in f.each(v, name):
            keep = isinstance(p, dict) and isinstance(p.get("reducers"), list)
            check({**p, "reducers": [r or None for r in p["reducers"]]} if keep else p, item)
    elif kind == "difference":
        check.difference(v, name)
    elif kind == "recommendation":
        rec = f.mapping(v, name)
        if rec and rec.get("counts") is not None:
            check(rec, name)
            f.choice(rec.get("weights"), f"{name}.weights", ("supernet", "parent", "finetuned"))
            _check_relative(f, rec.get("checkpoint"), f"{name}.checkpoint")


class _PickCheck:
    """The checks of one schedule entry of a search.json (a pick, a front point, a candidate, a baseline)."""

    def __init__(self, f: Fields, depth: Optional[int], num_patches: Optional[int], reach=None):
        self.f, self.depth, self.n, self.reach = f, depth, num_patches, reach or (lambda *a: None)

    def __call__(self, d: Any, field: str) -> None:
        f = self.f
        if d is None:
            return
        f.mapping(d, field, optional=False)
        f.get(d, "counts", f"{field}.counts", "the schedule's patch-token count per block", True)
        self.reach(f.schedule(d["counts"], d.get("reducers"), field, self.depth, self.n), d.get("reducers"), field)
        for key, kind in PICK_FIELDS.items():  # every other field by its kind (one schema: search.pick)
            v, name = d.get(key), f"{field}.{key}"
            if v is None or kind in ("counts", "reducers"):
                continue
            if kind == "precision":
                f.choice(v, name, Precision.ALL, what="a precision")
            elif kind == "fraction":
                f.fraction(v, name)
            elif kind in ("interval", "span"):
                f.interval(v, name, fraction=kind == "interval")
            elif kind == "positive":
                f.positive(v, name)
            elif kind == "count":
                f.non_negative(v, name, integer=True)
            elif kind == "number":  # a KL of ~0 may round below it
                f.number(v, name)
            elif kind == "flag":
                f.flag(v, name)
            elif kind == "text":
                f.text(v, name)
            elif kind == "deployed":
                f.mapping(v, name)
                f.fraction(v.get("test_accuracy"), f"{name}.test_accuracy")
                f.interval(v.get("test_interval"), f"{name}.test_interval")
            elif kind == "difference":
                self.difference(v, name)

    def difference(self, v: Any, field: str) -> None:
        """A paired difference of two accuracies: in [-1, 1], its interval too."""
        f = self.f
        if v is None:
            return
        f.mapping(v, field, optional=False)
        f.number(v.get("difference"), f"{field}.difference", low=-1.0, high=1.0,
                 expected="a difference of accuracies in [-1, 1]")
        iv = v.get("interval")
        if iv is not None:
            iv = f.sequence(iv, f"{field}.interval")
            if len(iv) != 2:
                f.fail(f"{field}.interval", iv, "[low, high]")
            for i, x in enumerate(iv):
                f.number(x, f"{field}.interval[{i}]", low=-1.0, high=1.0, optional=False,
                         expected="a difference of accuracies in [-1, 1]")


#: a budget's pick fine-tuned toward your model (:mod:`~.finetune`): its family and its weights
FINETUNED = "finetuned"


def family_entry(row: Dict[str, Any], family: Optional[str]) -> Optional[Dict[str, Any]]:
    """A budget row's entry of a deployable family: ``searched`` is its pick (``best``), ``finetuned`` the pick
    fine-tuned toward your model, any other its ``training_free`` entry; None where it has none."""
    if not family:
        return None
    if family in ("searched", "finetuned"):
        return row.get("best" if family == "searched" else "finetuned")
    return (row.get("training_free") or {}).get(family)


def _check_relative(f, path, field: str) -> None:
    """A path a search.json gives inside its own folder (relative, never climbing out of it)."""
    if path is None:
        return
    f.text(path, field)
    parts = str(path).replace("\\", "/").split("/")
    if os.path.isabs(str(path)) or ".." in parts:
        f.fail(field, path, "a path inside the search's folder")


def schedules_index(doc: dict, with_precision: bool) -> dict:
    """A fixed name a script can read: budget label -> its drop config (the files are named after the budget)."""
    rows = []
    for r in doc["budgets"]:
        best = r.get("best") or {}
        row = {"label": r["label"], "objective": r["objective"], "limit": r["limit"], "file": r.get("schedule_file"),
               "counts": best.get("counts")}
        if with_precision:
            row["precision"] = best.get("precision", "fp32")
        if best.get("reducers"):
            row["reducers"] = best["reducers"]
        rows.append(row)
    return {"format": "fgvc-kit/search-schedules", "version": 1, "search": "search.json", "budgets": rows}
