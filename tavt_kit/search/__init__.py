"""Evolutionary search of token schedules under MAC and latency budgets, and reading its result.

:func:`run_search` evaluates candidates on held-out images and writes
``search.json`` (with a journal a killed search resumes from);
:func:`schedule_from_search` / :func:`select_budget` read the schedule a search
chose for a budget.
"""
from .result import SEARCH_FORMAT, schedule_from_search, select_budget

__all__ = ["SEARCH_FORMAT", "schedule_from_search", "select_budget"]
