"""Reading a ``search.json``: the budget a user names and the schedule the search chose for it."""
from __future__ import annotations

import json
import math
import os
import re
from typing import Any, Dict, Optional, Tuple

from ..errors import ConfigError, ScheduleError
from ..schedules import check_model_info

SEARCH_FORMAT = "fgvc-kit/search"


def _budget_number(label: str) -> Optional[float]:
    m = re.match(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)", label, re.I)
    return float(m.group(1)) if m else None


def select_budget(search: Dict[str, Any], budget, where: str = "search.json") -> Dict[str, Any]:
    """The entry of ``search["budgets"]`` that ``budget`` names: its label (``"15ms"``, ``"20G MACs"``,
    spaces and case ignored), the same value in other units (``"0.015s"``, ``"20e9"``), or the bare
    number of its label (``15``, ``20``)."""
    rows = search.get("budgets") or []
    if not rows:
        raise ConfigError(f"{where} holds no budgets (the search ran without --macs-budget / --latency-budget); "
                          "pass --drop with a schedule instead")
    labels = ", ".join(str(r.get("label")) for r in rows)

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
        raise ConfigError(f"--budget {text}: ambiguous in {where} ({', '.join(r['label'] for r in hits)}); "
                          "give the label with its unit")
    if not hits:
        raise ConfigError(f"--budget {text}: not in {where}; its budgets: {labels}")
    row = hits[0]
    if not row.get("best") or not row["best"].get("counts"):
        raise ConfigError(f"--budget {row['label']}: no schedule of the search space met this budget in {where}; "
                          f"its budgets: {labels}")
    return row


def schedule_from_search(model, search_path, budget) -> Tuple[Any, Dict[str, Any]]:
    """The schedule a search chose for ``budget``, checked against ``model``; returns ``(schedule, source)``."""
    path = os.fspath(search_path)
    where = f"--search {path}"
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
    try:
        sched = model.make_schedule(list(row["best"]["counts"]))
    except ScheduleError as e:
        raise ScheduleError(f"{where}: budget {row['label']}: {e} (a search of another model?)") from None
    best = row["best"]
    source = {"kind": "search", "file": os.path.basename(path), "budget": row["label"],
              "objective": row.get("objective"), "limit": row.get("limit"),
              "search_holdout_accuracy": best.get("holdout_accuracy"), "search_test_accuracy": best.get("test_accuracy"),
              "search_latency_ms": best.get("latency_ms"), "schedule_file": row.get("schedule_file")}
    return sched, {k: v for k, v in source.items() if v is not None}
