"""``search_schedules``' arguments checked before the slow set-up (tables, images), so a wrong one fails at once."""
from __future__ import annotations

import math
import os
import re
from typing import Iterable, List, Mapping, Optional, Sequence

from ..errors import ConfigError
from ..schedules.schedule import TokenSchedule
from .evolution import Budget
from .result import parse_budget


_NUMBER = r"[0-9]*\.?[0-9]+(?:e[+-]?\d+)?"
#: what each kind of budget text should look like, said in errors
_EXPECTED = {"latency": "a time such as 15ms or 0.2s, or a percentage of your model's latency such as 50%",
             "macs": "a number of MACs with an optional K/M/G suffix, e.g. 20G",
             None: "a budget with its unit, e.g. '15ms', '20G MACs', or '50%' (of your model's latency on the target)"}


def budget_of(text, objective: Optional[str] = None, where: Optional[str] = None) -> Budget:
    """The one reader of a budget's text, for ``search_schedules(budgets=)`` and the command line's flags alike:
    ``15ms``, ``0.2s``, ``800us`` or ``50%`` (a share of your model's latency on the target, placed by
    :func:`resolve_fractions`) is a latency budget; ``20G``, ``850M MACs``, ``2.5e9 MACs`` a MAC budget.
    ``objective`` (``"latency"`` or ``"macs"``) reads a bare number as milliseconds or MACs and refuses the other
    kind. A :class:`ConfigError` starts with ``where`` (default ``budgets='text'``) and says what was expected."""
    s = str(text).strip()
    where = where or f"budgets={text!r}"
    m = re.fullmatch(rf"({_NUMBER})\s*%", s, re.I)
    if m and objective in (None, "latency"):
        fraction = float(m.group(1)) / 100
        if not 0 < fraction <= 1:
            raise ConfigError(f"{where}: expected a percentage of your model's latency above 0 and at most 100 (the "
                              "share of its latency the deployable may take)")
        return Budget("latency", 0.0, fraction=fraction)
    parsed = parse_budget(s)
    if parsed is None and objective is not None and re.fullmatch(_NUMBER, s, re.I):
        parsed = (objective, float(s) * (1e-3 if objective == "latency" else 1.0))
    if parsed is None or (objective is not None and parsed[0] != objective):
        raise ConfigError(f"{where}: expected {_EXPECTED[objective]}")
    if not math.isfinite(parsed[1]):
        raise ConfigError(f"{where}: expected a finite {'time' if parsed[0] == 'latency' else 'number of MACs'}: "
                          f"{_EXPECTED[objective]}")
    if parsed[1] <= 0:
        raise ConfigError(f"{where}: expected a positive budget: {_EXPECTED[objective]}")
    return Budget(*parsed)


def as_budget(b) -> Budget:
    """``b`` as a :class:`Budget`: a Budget checked, or a text read by :func:`budget_of`."""
    if isinstance(b, Budget):
        if b.fraction is not None:
            check_fraction(b.fraction, b)
        return b
    return budget_of(b)


def as_budgets(budgets) -> List[Budget]:
    """``search_schedules``' ``budgets``: one budget (a text such as ``'15ms'``, or a :class:`Budget`) or a list of
    them, each checked by :func:`as_budget`; an empty list maps the Pareto front. None or another type is a
    ConfigError naming ``budgets`` (a text is one budget, never read letter by letter)."""
    if isinstance(budgets, (str, Budget)):
        return [as_budget(budgets)]
    if budgets is None or isinstance(budgets, (bytes, Mapping)) or not isinstance(budgets, Iterable):
        raise ConfigError(f"budgets={budgets!r}: expected a budget ('15ms', '20G MACs', '50%') or a list of them "
                          "(an empty list: map the Pareto front)")
    return [as_budget(b) for b in budgets]


def check_fraction(fraction: float, given) -> float:
    if not 0 < fraction <= 1:
        raise ConfigError(f"budgets={given!r}: expected a percentage of your model's latency above 0 and at most "
                          "100 (the share of its latency the deployable may take)")
    return fraction


def fraction_field(b: Budget) -> dict:
    """What a budget row of ``search.json`` holds of ``b``'s fraction of your model's latency (nothing for none)."""
    return {} if b.fraction is None else {"fraction": b.fraction}


def resolve_fractions(budgets: Sequence[Budget], objective, full: TokenSchedule, log) -> List[Budget]:
    """``budgets`` with every fraction of your model's latency placed in seconds on ``objective`` (the fp32
    latency objective the search ranks candidates on: a table's prediction, or a timing): the full schedule's
    latency there (``full``: the full schedule) times the fraction. Your model and the supernet share the full
    schedule's architecture, so its latency is your model's."""
    if not any(b.fraction is not None for b in budgets):
        return list(budgets)
    if objective is None:
        share = next(b for b in budgets if b.fraction is not None)
        raise ConfigError(f"budgets={share.label}: a budget in percent of your model's latency needs a latency "
                          "objective (target= or table=)")
    full = float(objective(full))
    out = []
    for b in budgets:
        if b.fraction is not None:
            b = Budget("latency", b.fraction * full, fraction=b.fraction)
            log(f"budget {b.label}: {b.limit * 1e3:.4g} ms, {b.label} of your model's {full * 1e3:.4g} ms on the "
                "target as the search predicts it; where the options are timed beside your model, the ratio to it "
                "judges them")
        out.append(b)
    return out


def model_arg(model, source: Optional[dict]):
    """``search_schedules``' ``model`` and ``source``: a loaded model, or the path of a checkpoint (loaded here, and
    recorded as the search's ``source`` unless one is given); anything else is a ConfigError naming ``model``."""
    if isinstance(model, (str, os.PathLike)):
        from ..models import load_checkpoint

        path = os.fspath(model)
        return load_checkpoint(path).eval(), source if source is not None else {"checkpoint": os.path.abspath(path)}
    if not all(hasattr(model, a) for a in ("depth", "num_patches", "make_schedule", "eval")):
        raise ConfigError(f"model={type(model).__name__}: expected a token-drop model (tavt_kit.load_checkpoint, "
                          "tavt_kit.create_model) or the path of its checkpoint")
    return model, source
