"""Evolutionary search of token schedules (and precisions) under MAC and latency budgets, and its result.

:func:`search_schedules` is the one search pipeline: it scores candidates on held-out images, writes
``search.json`` (marked ``"status": "running"`` until the search completes it, with a journal a killed search
resumes from) and returns a :class:`SearchResult`; :meth:`SearchResult.load` is the one reader of a
``search.json`` (format, version and every value checked): ``.budget(text)`` a budget's outcome
(:class:`BudgetResult`: its ``.options``, what it ``.shipped`` and ``.why``; every schedule entry a :class:`Pick`,
whose fields, kinds and checks :data:`PICK_FIELDS` declares once), ``.schedule(model, budget)`` the
schedule it chose, ``.export(model, budget, out)`` what it ships, verified;
:class:`LatencyObjective` is a latency budget's cost (from a latency table, or measured on a
:class:`~tavt_kit.target.DeploymentTarget`); :class:`PickFinetune` asks the search to fine-tune each budget's
pick toward your model and let it compete (:mod:`~.finetune`).
"""
from .data import EvalSet, SearchData, search_data
from .evolution import Budget, EvolutionSettings
from .objective import LatencyObjective
from . import precisions
from .pipeline import search_schedules, space_of
from .precisions import parse_precisions
from .finetune import PickFinetune
from .outcome import BudgetResult, Deployable, Pick, SearchResult, deployable_from_search, export_budget
from .pick import BUDGET_FIELDS, PICK_FIELDS, Deployed, PairedDifference, Recommendation
from .ship import ShipPolicy
from .settings import EvaluationOptions, LatencyOptions, SpaceOptions
from .result import SEARCH_FORMAT, SEARCH_VERSION, describe_family, validate_search

__all__ = ["BUDGET_FIELDS", "Budget", "BudgetResult", "Deployable", "Deployed", "EvalSet", "EvaluationOptions", "EvolutionSettings",
           "LatencyObjective", "LatencyOptions", "PICK_FIELDS", "PairedDifference", "Pick", "Recommendation",
           "PickFinetune", "SEARCH_FORMAT", "SEARCH_VERSION", "SearchData", "SearchResult", "ShipPolicy", "SpaceOptions",
           "deployable_from_search",
           "describe_family", "export_budget", "parse_precisions", "search_data", "search_schedules", "space_of",
           "validate_search"]
