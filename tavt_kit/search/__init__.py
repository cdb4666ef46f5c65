"""Evolutionary search of token schedules (and precisions) under MAC and latency budgets, and its result.

:func:`search_schedules` is the one search pipeline: it scores candidates on held-out images, writes
``search.json`` (marked ``"status": "running"`` until the search completes it, with a journal a killed search
resumes from) and returns a :class:`SearchResult`; :func:`read_search` / :meth:`SearchResult.load` are the one
reader of a ``search.json`` (format, version and every value checked);
:class:`LatencyObjective` is a latency budget's cost (from a latency table, or measured on a
:class:`~tavt_kit.target.DeploymentTarget`); :func:`schedule_from_search` / :func:`select_budget` read the
schedule a search chose for a budget; :class:`PickFinetune` asks the search to fine-tune each budget's pick toward
your model and let it compete (:mod:`~.finetune`).
"""
from .data import EvalSet, SearchData, search_data
from .evolution import Budget, EvolutionSettings
from .objective import LatencyObjective
from . import precisions
from .pipeline import search_schedules, space_of
from .precisions import parse_precisions
from .deployable import deployable_from_search, export_budget
from .finetune import PickFinetune
from .outcome import BudgetResult, Deployable, Pick, SearchResult
from .ship import ShipPolicy
from .result import (SEARCH_FORMAT, SEARCH_VERSION,
                     describe_family, read_search, schedule_from_search, search_status, select_budget,
                     validate_search)

__all__ = ["Budget", "BudgetResult", "Deployable", "EvalSet", "EvolutionSettings", "LatencyObjective", "Pick",
           "PickFinetune", "SEARCH_FORMAT", "SEARCH_VERSION", "SearchData", "SearchResult", "ShipPolicy",
           "deployable_from_search",
           "describe_family", "export_budget", "parse_precisions", "read_search", "schedule_from_search",
           "search_data", "search_schedules", "search_status", "select_budget", "space_of", "validate_search"]
