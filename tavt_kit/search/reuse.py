"""Held-out metrics a search takes from other searches of the same weights on the same held-out images.

A schedule's held-out accuracy, NLL and KL, and the held-out accuracy of its int8 model in OpenVINO, do not
depend on where the schedule will run: a search for another target (batch size, threads, device) or under
other budgets would evaluate the same candidates again, and evaluating is most of a search's time. ``reuse=``
names earlier searches (their folders or their ``search.journal.jsonl``); every candidate they evaluated is
taken from them, and written into this search's journal like one of its own (with this search's latency), so a
resumed search needs nothing but its own folder.

Only searches of the same weights (``weights_sha256``) on the same held-out images (their number, the subset and
its seed, and the images' digest where both journals record it), dropping by the same scorer (where both record
it), are taken; int8 runs also need the same calibration images. Anything else is a
:class:`~tavt_kit.errors.ConfigError` that names the file.
"""
from __future__ import annotations

import json
import os
from typing import Callable, Dict, List, Optional, Sequence

from ..errors import ConfigError
from ..schedules.schedule import TokenSchedule
from .evolution import Gene, entry_gene, gene_of

#: what a held-out record holds that does not depend on the target
METRICS = ("accuracy", "nll", "kl", "accuracy_se", "nll_se", "kl_se")
#: the journal settings that must agree (``holdout_sha256`` only where both journals record it)
SAME = ("weights_sha256", "holdout_images", "subset")


def journal_file(path: str) -> str:
    """The journal of a search folder, or ``path`` itself when it is a journal."""
    p = os.path.join(path, "search.journal.jsonl") if os.path.isdir(path) else path
    if not os.path.isfile(p):
        raise ConfigError(f"reuse={path}: no search journal there (expected a search folder or its "
                          "search.journal.jsonl)")
    return p


def _records(path: str):
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except ValueError:
            if i == len(lines) - 1:  # torn by a kill
                break
            raise ConfigError(f"{path}: line {i + 1} is not a journal record; the journal is damaged") from None
        if isinstance(rec, dict):
            yield rec


def _mismatch(theirs: dict, ours: dict) -> Optional[str]:
    for k in SAME + (("seed",) if ours.get("subset") is not None else ()):
        if theirs.get(k) != ours.get(k):
            return k
    for k in ("holdout_sha256", "token_drop"):  # where both journals record it
        if theirs.get(k) and ours.get(k) and theirs[k] != ours[k]:
            return k
    return None


class Reused:
    """The metrics of other searches' journals, per pool (``fp32``: plain fp32 evaluations, which the int8
    evolution's provisional accuracies are too; ``bf16``/``fp16``: under autocast; ``deployed``: int8 runs in
    OpenVINO under this search's calibration), and how many of them this search took."""

    def __init__(self, paths: Sequence[str], settings: dict, calibration: Optional[dict] = None):
        self.sources: List[str] = []
        self.pools: Dict[str, Dict[Gene, dict]] = {}
        self.taken: Dict[str, int] = {}
        self.evaluated: Dict[str, int] = {}
        calib = json.dumps({"calibration": calibration}, sort_keys=True)
        for path in paths:
            path = journal_file(str(path))
            header = None
            for rec in _records(path):
                kind = rec.get("kind")
                if kind == "header":
                    header = rec.get("settings") or {}
                    bad = _mismatch(header, settings)
                    if bad:
                        raise ConfigError(f"{path}: a search of other {_WHAT.get(bad, bad)} ({bad} differs); "
                                          "reuse takes only searches of the same weights on the same held-out "
                                          "images" + (" (the same selection and seed set the same images "
                                                      "aside)" if bad in ("holdout_images", "holdout_sha256")
                                                     else ""))
                    continue
                if header is None or kind not in ("candidate", "deployed") or "counts" not in rec:
                    continue
                metrics = {k: rec[k] for k in METRICS if rec.get(k) is not None}
                if "accuracy" not in metrics:
                    continue
                p = rec.get("precision") or "fp32"
                if kind == "deployed":
                    if p != "int8" or json.dumps(rec.get("key"), sort_keys=True) != calib:
                        continue
                    pool = "deployed"
                else:
                    pool = "fp32" if p in ("fp32", "int8") else p
                self.pools.setdefault(pool, {}).setdefault(entry_gene(rec), metrics)
            if header is None:
                raise ConfigError(f"{path}: not a search journal (no header line)")
            self.sources.append(path)

    def get(self, pool: str, gene: Gene) -> Optional[dict]:
        m = self.pools.get(pool, {}).get(gene)
        if m is not None:
            self.taken[pool] = self.taken.get(pool, 0) + 1
        return m

    def has(self, pool: str, gene: Gene) -> bool:
        """Whether :meth:`get` would take ``gene`` from ``pool`` (not counted as taken)."""
        return gene in self.pools.get(pool, {})

    def count(self, pool: str, n: int = 1) -> None:
        """``n`` evaluations of ``pool`` done here (none of the other searches had them)."""
        self.evaluated[pool] = self.evaluated.get(pool, 0) + n

    def wrap(self, pool: str, fn: Callable[[List[TokenSchedule]], List]) -> Callable[[List[TokenSchedule]], List]:
        """``fn`` (schedules -> held-out metrics) that takes what the other searches evaluated and evaluates
        only the rest."""
        def metrics(scheds: List[TokenSchedule]) -> List:
            got = [self.get(pool, gene_of(s)) for s in scheds]
            todo = [s for s, m in zip(scheds, got) if m is None]
            before = getattr(fn, "taken", 0)  # what ``fn`` itself took from a cache (no cost either)
            fresh = iter(fn(todo) if todo else [])
            self.count(pool, len(todo))
            metrics.taken += len(scheds) - len(todo) + getattr(fn, "taken", 0) - before
            return [dict(m) if m is not None else next(fresh) for m in got]
        metrics.taken = 0  # read by the evolution: taken ones cost no time, so its rate does not count them
        return metrics

    def summary(self) -> dict:
        """What search.json records: the sources, and per pool how many were taken and how many evaluated."""
        pools = sorted(set(self.taken) | set(self.evaluated))
        return {"sources": self.sources,
                "taken": {p: self.taken.get(p, 0) for p in pools},
                "evaluated": {p: self.evaluated.get(p, 0) for p in pools}}

    def line(self) -> str:
        s = self.summary()
        held = sum(v for p, v in s["taken"].items() if p != "deployed")
        fresh = sum(v for p, v in s["evaluated"].items() if p != "deployed")
        out = f"reuse: {held} held-out evaluations taken from {len(self.sources)} earlier search" \
              f"{'es' if len(self.sources) != 1 else ''}, {fresh} evaluated here"
        if "deployed" in s["taken"] or "deployed" in s["evaluated"]:
            out += f"; int8 runs: {s['taken'].get('deployed', 0)} taken, {s['evaluated'].get('deployed', 0)} " \
                   "quantised and run here"
        return out


_WHAT = {"weights_sha256": "weights", "holdout_images": "held-out images", "subset": "held-out images",
         "seed": "held-out subset", "holdout_sha256": "held-out images", "token_drop": "scorer"}
