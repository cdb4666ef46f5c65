"""Evolutionary search of token schedules (and precisions) under MAC and latency budgets, and its result.

:func:`search_schedules` is the one search pipeline: it scores candidates on held-out images, writes
``search.json`` once (with a journal a killed search resumes from) and returns a :class:`SearchResult`;
:class:`LatencyObjective` is a latency budget's cost (from a latency table, or measured on a
:class:`~tavt_kit.target.DeploymentTarget`); :func:`schedule_from_search` / :func:`select_budget` read the
schedule a search chose for a budget.
"""
from .data import EvalSet, SearchData, search_data
from .evolution import Budget, EvolutionSettings
from .objective import LatencyObjective
from .pipeline import parse_precisions, search_schedules, space_of
from .result import (SEARCH_FORMAT, BudgetResult, Pick, SearchResult, deployable_from_search, describe_family,
                     schedule_from_search, select_budget)

__all__ = ["Budget", "BudgetResult", "EvalSet", "EvolutionSettings", "LatencyObjective", "Pick", "SEARCH_FORMAT",
           "SearchData", "SearchResult", "deployable_from_search", "describe_family", "parse_precisions", "schedule_from_search", "search_data",
           "search_schedules", "select_budget", "space_of"]
