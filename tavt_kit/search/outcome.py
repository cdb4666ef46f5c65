"""What a search found, as values: :class:`SearchResult` (``.budgets[label]`` a :class:`BudgetResult`, its picks
:class:`Pick`), read from or written to ``search.json`` (:func:`~.result.read_search` checks every value), and one
call that exports what a budget ships (:meth:`SearchResult.export`)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ..errors import ConfigError, ScheduleError
from ..schedules import TokenSchedule
from .pick import BUDGET_FIELDS, PairedDifference, Pick, Recommendation
from .deployable import FINETUNED, finetuned_deployable, shipped_checkpoint
from .result import SEARCH_VERSION, budget_source, read_search, require_finished, require_pick, search_status, \
    select_budget, validate_search


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
    vs_fp32: Optional[PairedDifference]
    #: what needs no training, run on your model: ``tome_parent`` (ToMe, r fitted to the budget),
    #: ``searched_parent`` (a merge schedule searched on its weights), ``parent``; ``@precision`` beyond fp32
    training_free: Dict[str, Pick] = field(default_factory=dict)
    #: the deployable to ship among the searched pick and the training-free ones, and why (None: the search had no
    #: reference model to recommend against; the searched pick ships)
    recommended: Optional[Recommendation] = None
    #: every option that competed for the budget, by family (:class:`Deployable`)
    options: Dict[str, Deployable] = field(default_factory=dict, repr=False)
    #: ``search budget`` (a budget the search was run for) or ``front`` (another budget, answered from the front)
    picked_from: str = "search budget"
    #: for a budget answered from the front: that it is not one of the search's, and the point it takes, in words
    note: Optional[str] = None
    front_point: Optional[str] = None
    #: the search.json entry it was read from (what an export records as its source)
    entry: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    #: a share of your model's latency (``50%`` -> 0.5; None: an absolute budget)
    fraction: Optional[float] = None
    #: the budget's pick fine-tuned toward your model (a search with ``finetune``)
    finetuned: Optional[Pick] = None
    #: candidates predicted within the budget that the target timed over it
    timed_over_budget: Tuple[Pick, ...] = ()
    #: int8 pairs of this budget quantised and scored on the deployed runtime
    int8_verifications: Optional[int] = None

    @classmethod
    def from_dict(cls, row: Dict[str, Any], doc: Optional[Dict[str, Any]] = None) -> "BudgetResult":
        doc = doc or {}
        n = doc_num_patches(doc)
        pick = (lambda d: Pick.from_dict(d, n) if d else None)
        vs = row.get("vs_fp32")
        return cls(str(row["label"]), str(row["objective"]), float(row["limit"]), pick(row.get("best")),
                   pick(row.get("best_fp32")), {k: pick(v) for k, v in (row.get("baselines") or {}).items()},
                   row.get("schedule_file"), PairedDifference.from_dict(vs) if vs else None,
                   {k: pick(v) for k, v in (row.get("training_free") or {}).items()},
                   Recommendation.from_dict(row["recommended"]) if row.get("recommended") else None,
                   deployables(row, doc), row.get("source", "search budget"), row.get("note"),
                   row.get("front_point"), dict(row), row.get("fraction"), pick(row.get("finetuned")),
                   tuple(pick(p) for p in row.get("timed_over_budget") or ()), row.get("int8_verifications"))

    def to_dict(self) -> Dict[str, Any]:
        """The budget's entry as search.json writes it (the fields it was read with), each written from its value by
        its kind in :data:`~.pick.BUDGET_FIELDS`; a field this fgvc-kit does not know is kept as read."""
        out: Dict[str, Any] = {}
        for key, raw in self.entry.items():
            kind = BUDGET_FIELDS.get(key)
            value = getattr(self, key, None) if kind else None
            if kind is None or value is None:
                out[key] = raw
            elif kind in ("pick", "difference", "recommendation"):
                out[key] = value.to_dict()
            elif kind == "picks":
                out[key] = {k: p.to_dict() if p is not None else raw[k] for k, p in value.items()}
            elif kind == "pick_list":
                out[key] = [p.to_dict() if p is not None else r for p, r in zip(value, raw or [])]
            elif kind == "limit":
                out[key] = raw if raw == value else value  # an integral MAC count stays one
            else:
                out[key] = value
        return out

    def require_pick(self, where: str) -> Pick:
        """The searched pick; a :class:`ConfigError` naming the budget and ``where`` when nothing in the space met
        the budget."""
        require_pick(self.entry, where)
        return self.best

    def searched_schedule(self, model, where: str) -> TokenSchedule:
        """The searched pick's schedule on ``model`` (its token drop applied), checked against it."""
        pick = self.require_pick(where)
        try:
            return model.make_schedule(TokenSchedule(pick.counts, model.num_patches, reducers=pick.reducers))
        except ScheduleError as e:
            raise ScheduleError(f"search={where}: budget {self.label}: {e} (a search of another model?)") from None

    def source(self, path) -> Dict[str, Any]:
        """What an export of this budget records as its schedule's source (the file, the budget, the pick's
        scores)."""
        return budget_source(self.entry, path)

    @property
    def shipped(self) -> Optional[Deployable]:
        """What this budget ships: the recommendation (the searched pick where the search recommends nothing, as
        a search without your model does); None when nothing meets the budget."""
        family = (self.recommended.family if self.recommended is not None else None) or \
            ("searched" if "searched" in self.options else None)
        return self.options.get(family) if family else None

    @property
    def searched_pairs(self) -> bool:
        """Whether the budget was searched over (schedule, precision) pairs (it has an fp32-only pick beside)."""
        return "best_fp32" in self.entry

    @property
    def on_your_model(self) -> Optional[Recommendation]:
        """The recommendation when what ships is a deployable of your model (ToMe on it, it as it is, a schedule
        searched on its weights: your model's weights at the recommendation's schedule and precision); None when
        the searched schedule (or its fine-tune) ships."""
        rec = self.recommended
        return rec if rec is not None and rec.weights == "parent" and rec.counts else None

    @property
    def why(self) -> Optional[str]:
        """Why :attr:`shipped` ships (the paired evidence it won on), as the search said it."""
        return self.recommended.why if self.recommended is not None else None


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
        try:
            n = doc_num_patches(doc)
            pick = (lambda d: Pick.from_dict(d, n) if d else None)
            self.full = pick(doc.get("full"))
            self.smallest = pick(doc.get("smallest"))
            #: your model (the checkpoint the supernet was distilled from) on the same images; None without one
            self.parent: Optional[Pick] = pick(doc.get("parent"))
            self.budgets: Dict[str, BudgetResult] = {r["label"]: BudgetResult.from_dict(r, doc)
                                                     for r in doc.get("budgets") or []}
            self.front: List[Pick] = [pick(p) for p in doc.get("pareto_front") or []]
            self.candidates: List[Pick] = [pick(c) for c in doc.get("candidates") or []]
            self.baselines: Dict[str, Dict[str, Pick]] = {
                fam: {k: pick(v) for k, v in rows.items()} for fam, rows in (doc.get("baselines") or {}).items()}
            prec = doc.get("precisions") or {}
            #: a search of several precisions: each precision's Pareto front and candidates
            self.precision_fronts: Dict[str, List[Pick]] = {
                p: [pick(c) for c in rows] for p, rows in (prec.get("fronts") or {}).items()}
            self.precision_candidates: Dict[str, List[Pick]] = {
                p: [pick(c) for c in rows] for p, rows in (prec.get("candidates") or {}).items()}
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

    @property
    def token_drop(self) -> Optional[Dict[str, Any]]:
        """How the searched model dropped tokens (its scorer), as the search recorded it."""
        return (self.doc.get("model") or {}).get("token_drop")

    @property
    def model_info(self) -> Dict[str, Any]:
        """The model searched as the search recorded it (``backbone``, ``img_size``, ``depth``, ``num_patches``,
        ``num_classes``, ``weights_sha256``, ``token_drop``)."""
        return dict(self.doc.get("model") or {})

    @property
    def weights_sha256(self) -> Optional[str]:
        """The digest of the weights searched (the supernet's, or your model's in a search of it)."""
        return self.model_info.get("weights_sha256")

    @property
    def checkpoint(self) -> Optional[str]:
        """The checkpoint searched, as the search recorded it (None: a model given in Python)."""
        return (self.doc.get("source") or {}).get("checkpoint")

    @property
    def space_reducers(self) -> Tuple[str, ...]:
        """How the searched space lowers token counts (``drop``, ``merge``)."""
        return tuple((self.doc.get("space") or {}).get("reducers") or ("drop",))

    @property
    def latency_target(self) -> Dict[str, Any]:
        """The target the latency budgets were for (``backend``, ``device``, ``batch_size``, ``threads``,
        ``precision``) as recorded; empty in a MAC search without a latency table."""
        return dict((self.doc.get("latency") or {}).get("target") or {})

    @property
    def latency_source(self) -> Optional[str]:
        """``table`` (predicted from a latency table, the picks timed), ``measured`` or None (no latency)."""
        return (self.doc.get("latency") or {}).get("source")

    @property
    def latency_profiled_here(self) -> bool:
        """Whether the search profiled its latency table itself, for its target (no table was given)."""
        return bool((self.doc.get("latency") or {}).get("profiled_for_search"))

    @property
    def settings(self) -> Dict[str, Any]:
        """The search's settings as recorded (``fitness``, ``holdout_images``, ``test_images``, ...)."""
        return dict(self.doc.get("settings") or {})

    @property
    def training_free_fit(self) -> Dict[str, Any]:
        """How ToMe's r on your model was fitted to the latency budgets (the r timed at each precision, or each r's
        ratio to your model for a share), as recorded; empty where it was fitted by MACs."""
        return dict(self.doc.get("training_free_fit") or {})

    @property
    def evaluations(self) -> int:
        """Candidates the search scored (those loaded from a journal included)."""
        return len(self.candidates) or int((self.doc.get("timing") or {}).get("evaluations") or 0)

    def latency_of(self, pick: Pick) -> Tuple[Optional[float], Optional[str]]:
        """A pick's latency in ms and where it comes from: ``measured`` (timed on the target, or a search that
        timed every candidate) or ``predicted`` (from a latency table); ``(None, None)`` where it has none."""
        if pick.latency_measured_ms is not None:
            return float(pick.latency_measured_ms), "measured"
        if pick.latency_ms is not None:
            return float(pick.latency_ms), "predicted" if self.latency_source == "table" else "measured"
        return None, None

    @property
    def latency_backend(self) -> Optional[str]:
        """The runtime the search's latency budgets were measured for (None: a MAC search)."""
        return ((self.doc.get("latency") or {}).get("target") or {}).get("backend")

    def budget(self, text, need_pick: bool = False) -> BudgetResult:
        """The budget ``text`` names (a label, the same value in other units, or any budget with a unit, answered
        from the Pareto front: ``.picked_from == "front"``); ``need_pick``: refuse one no searched schedule met."""
        return BudgetResult.from_dict(select_budget(self.doc, text, self.path or "search.json", need_pick),
                                      self.doc)

    def check_finished(self, where: Optional[str] = None) -> None:
        """Refuse a search that did not finish its file (one line naming it)."""
        require_finished(self.doc, where or f"search={self.path}")

    def check_model(self, model, where: Optional[str] = None) -> None:
        """Refuse ``model`` when it is not the model searched (architecture or weights), naming the file."""
        from ..schedules import check_model_info
        from ..validate import check_same_weights

        where = where or f"search={self.path}"
        check_model_info(model, self.doc.get("model") or {}, where)
        check_same_weights((self.doc.get("model") or {}).get("weights_sha256"), model, where, "searched",
                           ScheduleError, "its accuracies are not this model's: search this checkpoint")

    def schedule(self, model, budget) -> Tuple[TokenSchedule, Dict[str, Any]]:
        """``(schedule, source)``: the schedule the search chose for ``budget`` on ``model`` (the model searched,
        checked: architecture and weights; a finished search; a budget a searched schedule met) and where it comes
        from, as an export records it. What the budget *ships* (maybe a deployable of your model):
        :meth:`export` / :func:`~.deployable.deployable_from_search`."""
        where = f"search={self.path or 'search.json'}"
        self.check_finished(where)
        b = self.budget(budget, need_pick=True)
        self.check_model(model, where)
        return b.searched_schedule(model, self.path or "search.json"), b.source(self.path or "search.json")

    def export(self, model, budget, out_dir, formats=None, **kwargs):
        """Export what ``budget`` ships (its recommendation's weights, schedule and precision), ``model`` the model
        searched (loaded or its checkpoint); keywords as :func:`~.deployable.export_budget`."""
        return export_budget(model, self, budget, out_dir, formats, **kwargs)

    def to_dict(self) -> Dict[str, Any]:
        """The content of ``search.json`` (this version) written from the values: every pick by its schema
        (:data:`~.pick.PICK_FIELDS`), every budget by :meth:`BudgetResult.to_dict`; the sections that are settings
        and records of the run (``settings``, ``latency``, ``timing``, ``machine``, ...) as they are."""
        def one(p, raw):
            return p.to_dict() if p is not None else raw

        def many(ps, raws):
            return [one(p, r) for p, r in zip(ps, raws)]

        out: Dict[str, Any] = {}
        for key, raw in self.doc.items():
            if key in ("full", "smallest", "parent"):
                out[key] = one(getattr(self, key), raw)
            elif key == "budgets":
                out[key] = [b.to_dict() for b in self.budgets.values()]
            elif key in ("pareto_front", "candidates"):
                out[key] = many(self.front if key == "pareto_front" else self.candidates, raw or []) \
                    if raw is not None else None
            elif key == "baselines" and raw is not None:
                out[key] = {fam: {k: one(p, raw[fam][k]) for k, p in rows.items()}
                            for fam, rows in self.baselines.items()}
            elif key == "precisions" and raw is not None:
                out[key] = dict(raw)
                for group, typed in (("fronts", self.precision_fronts), ("candidates", self.precision_candidates)):
                    if raw.get(group) is not None:
                        out[key][group] = {p: many(ps, raw[group][p]) for p, ps in typed.items()}
            elif key == "version":
                out[key] = SEARCH_VERSION
            else:
                out[key] = raw
        return out

    def save(self, out_dir) -> str:
        from ..files import write_json

        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(os.fspath(out_dir), "search.json")
        doc = self.to_dict()
        validate_search(doc, path)  # what load() would refuse is not written
        self.path = write_json(doc, path)
        return self.path

    @classmethod
    def load(cls, path, where: Optional[str] = None) -> "SearchResult":
        """Read a ``search.json`` (format, version and every value checked; errors name ``where``, default the
        path). The one reader of search.json: report, export, bench and the demo read it here."""
        path = os.fspath(path)
        return cls(read_search(path, where), path)

    @classmethod
    def of(cls, search, where: Optional[str] = None) -> "SearchResult":
        """``search`` as a :class:`SearchResult`: one already read, or a ``search.json`` path read now."""
        if isinstance(search, SearchResult):
            return search
        if isinstance(search, (str, os.PathLike)):
            return cls.load(search, where)
        raise ConfigError(f"search={search!r}: expected a search.json path or a SearchResult")

    def __repr__(self) -> str:
        state = "" if self.finished else ", unfinished"
        return (f"SearchResult({len(self.candidates)} candidates, budgets {list(self.budgets)}, "
                f"front {len(self.front)}{state})")


# ------------------------------------------------------------------ reading and checking search.json


# ------------------------------------------------------------------ what a budget ships, loaded and exported
def deployable_from_search(model, search, budget, pick: str = "recommended"):
    """What to export for ``budget`` of a search of ``model``: ``(model to export, schedule, source)``.

    ``search``: a :class:`~.outcome.SearchResult` or a ``search.json`` path. ``pick="recommended"`` exports what
    the budget ships (:attr:`~.outcome.BudgetResult.shipped`, the one rule): the supernet's pick on its weights,
    a deployable of your model (ToMe on it, it as it is, a schedule searched on it: the parent checkpoint the
    supernet records, its weights checked) or the pick fine-tuned toward your model (the checkpoint in the
    search's folder, its digest checked), at its schedule and precision. ``pick="searched"`` always takes the
    searched schedule on the supernet's weights.
    """
    if pick not in ("recommended", "searched"):
        raise ConfigError(f"pick={pick!r}: expected recommended or searched")
    result = SearchResult.of(search, f"search={os.fspath(search)}" if isinstance(search, (str, os.PathLike)) else None)
    path = result.path or "search.json"
    result.check_finished()
    # a budget no searched schedule met may still ship a deployable of your model (ToMe on it)
    b = result.budget(budget, need_pick=pick == "searched")
    result.check_model(model)
    source = b.source(path)
    shipped = b.shipped if pick == "recommended" else None
    if shipped is None or shipped.family == "searched" and shipped.weights == "supernet":
        family = b.recommended.family if pick == "recommended" and b.recommended is not None else None
        return model, b.searched_schedule(model, path), {**source, **({"recommended": family} if family else {})}
    if shipped.weights == FINETUNED:
        return finetuned_deployable(b, shipped, source, os.path.dirname(os.path.abspath(path)))
    from ..models.checkpoint import load_parent

    # a search of your own model (no supernet) ran on the weights given, checked above
    parent = model if (result.doc.get("parent") or {}).get("searched_weights") else load_parent(model)
    p = shipped.pick
    schedule = parent.make_schedule(TokenSchedule(p.counts, parent.num_patches, reducers=p.reducers))
    source = {**source, "recommended": shipped.family, "weights": "parent",
              "parent": (result.doc.get("parent") or {}).get("path"), "why": b.why,
              "search_holdout_accuracy": p.holdout_accuracy, "search_test_accuracy": p.test_accuracy,
              "search_latency_ms": p.latency_ms}
    source.pop("schedule_file", None)  # the budget's drop config is the searched schedule, not this one
    source["precision"] = p.precision  # a training-free deployable's own precision
    return parent, schedule, {k: v for k, v in source.items() if v is not None}


def export_budget(model, search, budget, out_dir, formats=None, *, pick: str = "recommended", target=None,
                  verify=None, quantize=None, options=None, log=None):
    """Export what ``budget`` of a search ships, at the precision it ships at; the
    :class:`~tavt_kit.export.ExportResult`. One call from a search to a verified file.

    ``model``: the model searched (the supernet, loaded or its checkpoint); ``search``: a
    :class:`~.result.SearchResult` or a ``search.json`` path. What is exported is :func:`deployable_from_search`'s
    answer (``pick="searched"``: the searched schedule on the supernet's weights): the recommendation's weights
    (the parent checkpoint for a deployable of your model, the fine-tuned checkpoint for a fine-tuned pick) at its
    schedule; ``target``'s precision is the recommendation's unless ``target`` is given with another one.
    ``formats``, ``verify``, ``quantize``, ``options``, ``log``: as :func:`~tavt_kit.export.export_model`.
    """
    import dataclasses

    from ..export import ExportOptions, QuantizeOptions, VerifyOptions, export_model
    from ..models import load_checkpoint
    from ..models.token_drop import use_recorded_token_drop
    from ..target import DeploymentTarget

    path = os.fspath(search) if isinstance(search, (str, os.PathLike)) else getattr(search, "path", None)
    if path is None or not os.path.isfile(path):
        raise ConfigError(f"search={path!r}: expected a search.json file or a SearchResult that was saved")
    result = SearchResult.of(search)
    checkpoint = os.fspath(model) if isinstance(model, (str, os.PathLike)) else None
    model = load_checkpoint(checkpoint).eval() if checkpoint is not None else model
    said = use_recorded_token_drop(model, result.token_drop, result.path)
    if said and log:
        log(said)
    shipped, schedule, source = deployable_from_search(model, result, budget, pick)
    checkpoint = shipped_checkpoint(source, checkpoint)
    precision = source.get("precision", "fp32")
    if target is None:  # the runtime the search's latency budgets were for, else ONNX Runtime
        backend = result.latency_backend or "onnxruntime"
        target = DeploymentTarget(backend=backend, precision=precision)
    elif target.precision == "fp32" and precision != "fp32":
        target = dataclasses.replace(target, precision=precision)
    options = options or ExportOptions()
    options = dataclasses.replace(options, checkpoint=options.checkpoint or checkpoint, schedule_source=source)
    return export_model(shipped, out_dir, schedule, formats, target=target, verify=verify or VerifyOptions(),
                        quantize=quantize or QuantizeOptions(), options=options, log=log)
