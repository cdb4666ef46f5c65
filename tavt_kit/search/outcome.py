"""What a search found, as values: :class:`SearchResult` (``.budgets[label]`` a :class:`BudgetResult`, its picks
:class:`Pick`), read from or written to ``search.json`` (:func:`~.result.read_search` checks every value), and one
call that exports what a budget ships (:meth:`SearchResult.export`)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ..errors import ConfigError
from ..schedules import TokenSchedule
from .deployable import export_budget
from .result import SEARCH_VERSION, read_search, search_status, select_budget


@dataclass(frozen=True)
class Pick:
    """One schedule of a search result (a budget's pick, a front point, a baseline) with its figures."""

    counts: Tuple[int, ...]
    reducers: Optional[Tuple[Optional[str], ...]]
    precision: str
    macs: int
    latency_ms: Optional[float]
    latency_measured_ms: Optional[float]
    holdout_accuracy: Optional[float]
    holdout_interval: Optional[Tuple[float, float]]
    test_accuracy: Optional[float]
    test_interval: Optional[Tuple[float, float]]
    #: test accuracy minus your model's (the supernet's parent), paired on the same images (None: no parent)
    vs_parent: Optional[Dict[str, Any]] = None
    raw: Dict[str, Any] = field(repr=False, compare=False, default_factory=dict)
    #: the searched model's patch tokens (a pick read from a search result knows them)
    num_patches: Optional[int] = field(default=None, repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: Dict[str, Any], num_patches: Optional[int] = None) -> "Pick":
        iv = (lambda v: tuple(v) if v else None)
        acc = d.get("holdout_accuracy", d.get("accuracy"))  # candidates say "accuracy"
        return cls(tuple(int(c) for c in d["counts"]), tuple(d["reducers"]) if d.get("reducers") else None,
                   str(d.get("precision") or "fp32"), int(d["macs"]), d.get("latency_ms"),
                   d.get("latency_measured_ms"), acc, iv(d.get("holdout_interval")), d.get("test_accuracy"),
                   iv(d.get("test_interval")), d.get("vs_parent"), dict(d), num_patches)

    def schedule(self, num_patches: Optional[int] = None) -> TokenSchedule:
        """The schedule (``num_patches``: only for a pick made by hand, which does not know its model's)."""
        n = num_patches if num_patches is not None else self.num_patches
        if n is None:
            raise ConfigError("num_patches: this pick was not read from a search result; give the model's")
        return TokenSchedule(self.counts, n, reducers=self.reducers)


def doc_num_patches(doc: Dict[str, Any]) -> Optional[int]:
    """The searched model's patch tokens a search result records (None where it records none)."""
    n = (doc.get("model") or {}).get("num_patches") or (doc.get("space") or {}).get("num_patches")
    return int(n) if n else None


#: which weights each kind of deployable runs
WEIGHTS_OF = {"searched": "supernet", "finetuned": "finetuned"}


@dataclass(frozen=True)
class Deployable:
    """One option that can ship for a budget: which weights (``supernet``, ``parent`` -- your model -- or
    ``finetuned``, the pick fine-tuned toward your model) with their digest, at which schedule and precision, with
    its held-out and test figures, its paired difference to your model and its latency (``pick``) and how that
    latency was obtained. ``family`` names the option as search.json does (``searched``, ``finetuned``,
    ``tome_parent``, ``searched_parent``, ``parent``; ``@int8`` and the like: at that precision)."""

    family: str
    weights: str
    pick: Pick
    weights_sha256: Optional[str] = None
    #: the fine-tuned checkpoint (relative to the search folder); your model's path for ``parent`` weights
    checkpoint: Optional[str] = None

    @property
    def latency_source(self) -> Optional[str]:
        """``measured`` (timed on the target), ``predicted`` (from a latency table) or None (no latency)."""
        if self.pick.latency_measured_ms is not None:
            return "measured"
        return "predicted" if self.pick.latency_ms is not None else None


def deployables(row: Dict[str, Any], doc: Dict[str, Any]) -> Dict[str, Deployable]:
    """A budget's options by family (the searched pick, its fine-tune, what runs on your model's weights)."""
    n = doc_num_patches(doc)
    parent = doc.get("parent") or {}
    own = bool(parent.get("searched_weights"))  # a search of your model itself: its pick runs your weights
    digest = {"supernet": (doc.get("model") or {}).get("weights_sha256"), "parent": parent.get("weights_sha256")}
    out: Dict[str, Deployable] = {}
    entries = [("searched", row.get("best")), ("finetuned", row.get("finetuned"))]
    for family, d in entries + sorted((row.get("training_free") or {}).items()):
        if not d or not d.get("counts"):
            continue
        weights = "parent" if own and family == "searched" else WEIGHTS_OF.get(family, "parent")
        out[family] = Deployable(family, weights, Pick.from_dict(d, n), d.get("weights_sha256") or digest.get(weights),
                                 d.get("checkpoint") if weights == "finetuned" else
                                 parent.get("path") if weights == "parent" else None)
    return out


@dataclass(frozen=True)
class BudgetResult:
    """A budget of a search: its ``best`` pick (None: nothing in the space meets it), the fp32-only pick of a
    search of several precisions (``best_fp32``), the baselines fitted to it, and the pair's paired
    difference to the fp32-only pick (``vs_fp32``)."""

    label: str
    objective: str
    limit: float
    best: Optional[Pick]
    best_fp32: Optional[Pick]
    baselines: Dict[str, Pick]
    schedule_file: Optional[str]
    vs_fp32: Optional[Dict[str, Any]]
    #: what needs no training, run on your model: ``tome_parent`` (ToMe, r fitted to the budget),
    #: ``searched_parent`` (a merge schedule searched on its weights), ``parent``; ``@precision`` beyond fp32
    training_free: Dict[str, Pick] = field(default_factory=dict)
    #: the deployable to ship among the searched pick and the training-free ones (``family``, ``weights``, ``why``)
    recommended: Optional[Dict[str, Any]] = None
    #: every option that competed for the budget, by family (:class:`Deployable`)
    options: Dict[str, Deployable] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, row: Dict[str, Any], doc: Optional[Dict[str, Any]] = None) -> "BudgetResult":
        doc = doc or {}
        n = doc_num_patches(doc)
        pick = (lambda d: Pick.from_dict(d, n) if d else None)
        return cls(str(row["label"]), str(row["objective"]), float(row["limit"]), pick(row.get("best")),
                   pick(row.get("best_fp32")), {k: pick(v) for k, v in (row.get("baselines") or {}).items()},
                   row.get("schedule_file"), row.get("vs_fp32"),
                   {k: pick(v) for k, v in (row.get("training_free") or {}).items()}, row.get("recommended"),
                   deployables(row, doc))

    @property
    def shipped(self) -> Optional[Deployable]:
        """What this budget ships: the recommendation (the searched pick where the search recommends nothing, as
        a search without your model does); None when nothing meets the budget."""
        family = (self.recommended or {}).get("family") or ("searched" if "searched" in self.options else None)
        return self.options.get(family) if family else None

    @property
    def why(self) -> Optional[str]:
        """Why :attr:`shipped` ships (the paired evidence it won on), as the search said it."""
        return (self.recommended or {}).get("why")


class SearchResult:
    """What a search found, as values: ``.budgets[label]`` (its ``.shipped`` :class:`Deployable`, ``.options``,
    ``.best``, ``.why``), ``.front``, ``.candidates``, ``.baselines``,
    ``.full``; ``.doc`` is the content of ``search.json``. ``SearchResult.load(path)`` reads a ``search.json``
    (this version and the ones before it; every value checked, see :func:`validate_search`); ``.save(dir)``
    writes one. ``.finished`` is False for a search that was stopped (or is still running) before it
    completed the file: its figures are those of the stages done (``full`` and ``smallest`` None when none
    was)."""

    VERSION = SEARCH_VERSION

    def __init__(self, doc: Dict[str, Any], path: Optional[str] = None):
        self.doc, self.path = doc, path
        unfinished = doc.get("status") == "running"
        try:
            n = doc_num_patches(doc)
            pick = (lambda d: Pick.from_dict(d, n) if d else None)
            self.full = pick(doc["full"]) if not unfinished or doc.get("full") else None
            self.smallest = pick(doc["smallest"]) if not unfinished or doc.get("smallest") else None
            #: your model (the checkpoint the supernet was distilled from) on the same images; None without one
            self.parent: Optional[Pick] = pick(doc.get("parent"))
            self.budgets: Dict[str, BudgetResult] = {r["label"]: BudgetResult.from_dict(r, doc)
                                                     for r in doc.get("budgets") or []}
            self.front: List[Pick] = [pick(p) for p in doc.get("pareto_front") or []]
            self.candidates: List[Pick] = [pick(c) for c in doc.get("candidates") or []]
            self.baselines: Dict[str, Dict[str, Pick]] = {
                fam: {k: pick(v) for k, v in rows.items()} for fam, rows in (doc.get("baselines") or {}).items()}
        except (KeyError, TypeError, ValueError) as e:
            what = f"missing field {e}" if isinstance(e, KeyError) else str(e)
            raise ConfigError(f"{path or 'search result'}: malformed search result ({what})") from None

    @property
    def status(self) -> str:
        """``finished``, or ``running``: the search was stopped (or is still running) before it completed the
        file (files of version 1 have no status: they were written once, finished)."""
        return search_status(self.doc)

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    @property
    def objective(self) -> str:
        return self.doc.get("objective", "macs")

    @property
    def num_patches(self) -> int:
        return doc_num_patches(self.doc) or int(self.doc["space"]["num_patches"])

    @property
    def precisions(self) -> Tuple[str, ...]:
        return tuple((self.doc.get("precisions") or {}).get("searched") or ("fp32",))

    def budget(self, text) -> BudgetResult:
        """The budget ``text`` names (as :func:`select_budget`: a label, the same value in other units, or any
        budget with a unit, answered from the Pareto front)."""
        return BudgetResult.from_dict(select_budget(self.doc, text, self.path or "search.json"), self.doc)

    def export(self, model, budget, out_dir, formats=None, **kwargs):
        """Export what ``budget`` ships (its recommendation's weights, schedule and precision), ``model`` the model
        searched (loaded or its checkpoint); keywords as :func:`~.deployable.export_budget`."""
        return export_budget(model, self, budget, out_dir, formats, **kwargs)

    def save(self, out_dir) -> str:
        from ..files import write_json

        os.makedirs(out_dir, exist_ok=True)
        self.path = write_json(self.doc, os.path.join(os.fspath(out_dir), "search.json"))
        return self.path

    @classmethod
    def load(cls, path) -> "SearchResult":
        """Read a ``search.json`` (:func:`read_search`: format, version and every value checked)."""
        path = os.fspath(path)
        return cls(read_search(path), path)

    def __repr__(self) -> str:
        state = "" if self.finished else ", unfinished"
        return (f"SearchResult({len(self.candidates)} candidates, budgets {list(self.budgets)}, "
                f"front {len(self.front)}{state})")


# ------------------------------------------------------------------ reading and checking search.json
