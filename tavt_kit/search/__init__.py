"""Evolutionary search of token schedules under MAC and latency budgets."""
