"""What a search maximises on the held-out images (names only; importing this loads no torch).

* ``accuracy``: top-1 accuracy (coarse: on a held-out split of n images it moves
  in steps of 1/n, so many candidates tie);
* ``nll``: minus the mean cross-entropy with the labels (smooth);
* ``kl``: minus the mean KL divergence of the candidate's predicted class
  distribution from the full model's (smooth, needs no labels: it measures how
  faithfully the reduced model reproduces the full one).

The default is the one that predicted test accuracy best in the measurement of
``benchmarks/fitness_benchmark.py`` (Spearman correlation among all evaluated
candidates, three seeds; see the README).
"""
from __future__ import annotations

from typing import Dict

FITNESSES = ("accuracy", "nll", "kl")
DEFAULT_FITNESS = "nll"


def fitness_of(metrics: Dict[str, float], fitness: str) -> float:
    """The value a search maximises: accuracy, or minus the mean NLL / KL."""
    return metrics["accuracy"] if fitness == "accuracy" else -metrics[fitness]
