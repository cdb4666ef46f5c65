"""One schedule entry of a search result, as a value: :class:`Pick` (a budget's pick, a front point, a candidate, a
baseline, your model), its paired difference to another (:class:`PairedDifference`) and its accuracy on the
deployed runtime (:class:`Deployed`).

The fields a pick records, their types and their checks are declared once, in :data:`PICK_FIELDS`: reading
(:meth:`Pick.from_dict`), writing (:meth:`Pick.to_dict`) and the checks of a ``search.json``
(:func:`~.result.validate_search`) all go through it. A pick writes back the fields it was read with, and no
other (a field it does not know is kept as it was read, for a file of a newer fgvc-kit)."""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from typing import Any, Dict, Mapping, Optional, Tuple

from ..errors import ConfigError
from ..schedules import TokenSchedule


class _Entry:
    """What every entry of search.json shares: it writes back the fields it was read with (one made in Python: those
    that are set), each by ``write(name, value)``, and a field this fgvc-kit does not know as it was read (a file of
    a newer release). Subclasses are dataclasses with ``fields_read`` and ``unknown``."""

    fields_read: Tuple[str, ...]
    unknown: Mapping[str, Any]

    def records(self, name: str) -> bool:
        """Whether the entry records ``name`` (one made in Python: whether it is set)."""
        return name in self.fields_read if self.fields_read else getattr(self, name, None) is not None

    def _written(self, known, write=lambda name, value: value) -> Dict[str, Any]:
        names = self.fields_read or tuple(f.name for f in fields(self)
                                          if f.name in known and getattr(self, f.name) is not None)
        out: Dict[str, Any] = {}
        for k in names:
            if k in self.unknown:
                out[k] = self.unknown[k]
            elif k in known:
                v = getattr(self, k)
                out[k] = write(k, v) if v is not None else v
        return out


class _ReadAsDict:
    """``["key"]`` and ``.get("key")`` as search.json writes the entry, for code that reads it as a dict."""

    def __getitem__(self, key: str):
        return self.to_dict()[key]

    def get(self, key: str, default=None):
        return self.to_dict().get(key, default)


def _lists(*names):
    """A writer that writes the tuples of ``names`` as JSON lists."""
    return lambda name, value: list(value) if name in names else value


@dataclass(frozen=True)
class PairedDifference(_Entry, _ReadAsDict):
    """Accuracy of one option minus another's on the same images (:func:`~tavt_kit.stats.paired_difference`):
    ``difference`` and its 95 % ``interval`` (fractions), ``resolved`` (the interval excludes 0), the ``images``
    and how many of them the two ``disagree`` on."""

    difference: float
    interval: Optional[Tuple[float, float]] = None
    resolved: Optional[bool] = None
    images: Optional[int] = None
    disagree: Optional[int] = None
    fields_read: Tuple[str, ...] = field(default=(), repr=False, compare=False)
    unknown: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PairedDifference":
        iv = d.get("interval")
        return cls(float(d["difference"]), (float(iv[0]), float(iv[1])) if iv is not None else None,
                   d.get("resolved"), d.get("images"), d.get("disagree"), tuple(d))

    def to_dict(self) -> Dict[str, Any]:
        return self._written(("difference", "interval", "resolved", "images", "disagree"), _lists("interval"))


@dataclass(frozen=True)
class Deployed(_Entry, _ReadAsDict):
    """A pick's accuracy on the deployed runtime (an int8 model run by OpenVINO, ...): ``runtime`` in words,
    ``test_accuracy`` with its ``test_interval`` on ``test_images`` images."""

    runtime: Optional[str] = None
    test_accuracy: Optional[float] = None
    test_interval: Optional[Tuple[float, float]] = None
    test_images: Optional[int] = None
    fields_read: Tuple[str, ...] = field(default=(), repr=False, compare=False)
    unknown: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Deployed":
        iv = d.get("test_interval")
        return cls(d.get("runtime"), d.get("test_accuracy"), tuple(iv) if iv is not None else None,
                   d.get("test_images"), tuple(d))

    def to_dict(self) -> Dict[str, Any]:
        return self._written(("runtime", "test_accuracy", "test_interval", "test_images"), _lists("test_interval"))


#: every field a pick of search.json records: name -> its kind (how it is read, written and checked):
#: ``counts`` (patch tokens per block), ``reducers``, ``precision``, ``fraction`` (an accuracy in [0, 1]),
#: ``interval`` (a 95 % interval of an accuracy), ``span`` (an interval of any positive figure), ``positive``,
#: ``count`` (a non-negative integer), ``number``, ``flag``, ``text``, ``difference`` (a :class:`PairedDifference`),
#: ``deployed`` (a :class:`Deployed`)
PICK_FIELDS: Dict[str, str] = {
    "counts": "counts", "reducers": "reducers", "precision": "precision",
    "macs": "positive", "latency_ms": "positive", "latency_measured_ms": "positive", "speedup_macs": "positive",
    "measured_fraction_of_full": "positive", "measured_fraction_interval": "span",
    "holdout_accuracy": "fraction", "holdout_interval": "interval", "holdout_nll": "number", "holdout_kl": "number",
    "holdout_source": "text",
    "test_accuracy": "fraction", "test_interval": "interval",
    "selection_accuracy": "fraction", "selection_interval": "interval", "selection_nll": "number",
    # a candidate of the evolution
    "accuracy": "fraction", "nll": "number", "kl": "number", "fitness": "number", "fitness_measured": "number",
    "fitness_se": "number", "fitness_shrunk": "number", "generation": "count", "origin": "text",
    "fp32_accuracy": "fraction", "measured": "flag",
    "measured_within_budget": "flag",
    # your model, the deployables of your weights and the fine-tuned pick
    "weights": "text", "weights_sha256": "text", "path": "text", "recorded": "flag", "searched_weights": "flag",
    "r": "count", "fitted_by": "text", "steps": "count", "checkpoint": "text", "timed_as": "text",
    "deployed": "deployed", "vs_parent": "difference", "vs_searched": "difference",
}


def _interval(v) -> Optional[Tuple[float, float]]:
    return (float(v[0]), float(v[1])) if v else None


_READ = {"counts": lambda v: tuple(int(c) for c in v), "reducers": lambda v: tuple(v) if v else None,
         "interval": _interval, "span": _interval, "difference": PairedDifference.from_dict,
         "deployed": Deployed.from_dict}
_WRITE = {"counts": list, "reducers": list, "interval": list, "span": list,
          "difference": lambda v: v.to_dict(), "deployed": lambda v: v.to_dict()}


@dataclass(frozen=True)
class Pick(_Entry):
    """One schedule of a search result (a budget's pick, a front point, a candidate, a baseline, your model) with
    its figures: the fields of :data:`PICK_FIELDS` (None where it records none; ``precision`` fp32 then)."""

    counts: Tuple[int, ...]
    reducers: Optional[Tuple[Optional[str], ...]] = None
    precision: str = "fp32"
    #: None only in a hand-made search.json that records none (every search writes them)
    macs: Optional[int] = None
    latency_ms: Optional[float] = None
    latency_measured_ms: Optional[float] = None
    #: held-out accuracy (a candidate records it as ``accuracy``)
    holdout_accuracy: Optional[float] = None
    holdout_interval: Optional[Tuple[float, float]] = None
    test_accuracy: Optional[float] = None
    test_interval: Optional[Tuple[float, float]] = None
    #: test accuracy minus your model's (the supernet's parent), paired on the same images (None: no parent)
    vs_parent: Optional[PairedDifference] = None
    vs_searched: Optional[PairedDifference] = None
    speedup_macs: Optional[float] = None
    measured_fraction_of_full: Optional[float] = None
    measured_fraction_interval: Optional[Tuple[float, float]] = None
    holdout_nll: Optional[float] = None
    holdout_kl: Optional[float] = None
    holdout_source: Optional[str] = None
    selection_accuracy: Optional[float] = None
    selection_interval: Optional[Tuple[float, float]] = None
    selection_nll: Optional[float] = None
    accuracy: Optional[float] = None
    nll: Optional[float] = None
    kl: Optional[float] = None
    fitness: Optional[float] = None
    fitness_measured: Optional[float] = None
    fitness_se: Optional[float] = None
    fitness_shrunk: Optional[float] = None
    generation: Optional[int] = None
    origin: Optional[str] = None
    fp32_accuracy: Optional[float] = None
    measured: Optional[bool] = None
    measured_within_budget: Optional[bool] = None
    weights: Optional[str] = None
    weights_sha256: Optional[str] = None
    path: Optional[str] = None
    recorded: Optional[bool] = None
    searched_weights: Optional[bool] = None
    r: Optional[int] = None
    fitted_by: Optional[str] = None
    steps: Optional[int] = None
    checkpoint: Optional[str] = None
    timed_as: Optional[str] = None
    deployed: Optional[Deployed] = None
    #: the fields it was read with, in their order (what :meth:`to_dict` writes back)
    fields_read: Tuple[str, ...] = field(default=(), repr=False, compare=False)
    #: fields this fgvc-kit does not know (a newer file), kept as read
    unknown: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    #: the searched model's patch tokens (a pick read from a search result knows them)
    num_patches: Optional[int] = field(default=None, repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], num_patches: Optional[int] = None) -> "Pick":
        if not isinstance(d, Mapping) or "counts" not in d:
            raise ConfigError(f"pick {d!r}: expected a schedule entry with counts")
        values = {}
        for k, v in d.items():
            kind = PICK_FIELDS.get(k)
            if kind is not None:
                values[k] = _READ[kind](v) if kind in _READ and v is not None else v
        if values.get("precision") is None:
            values.pop("precision", None)
        if values.get("holdout_accuracy") is None and values.get("accuracy") is not None:
            values["holdout_accuracy"] = values["accuracy"]  # candidates say "accuracy"
        if values.get("macs") is not None:
            values["macs"] = int(values["macs"])
        return cls(**values, fields_read=tuple(d), unknown={k: v for k, v in d.items() if k not in PICK_FIELDS},
                   num_patches=num_patches)

    def to_dict(self) -> Dict[str, Any]:
        """The entry as search.json writes it: the fields it was read with (a pick made in Python: every field
        that is not None), each written by its kind."""
        return self._written(PICK_FIELDS, lambda k, v: _WRITE[PICK_FIELDS[k]](v) if PICK_FIELDS[k] in _WRITE else v)

    @property
    def recorded_precision(self) -> Optional[str]:
        """The precision the entry records (a search of (schedule, precision) pairs records one per pick); None
        where it records none (:attr:`precision` is then fp32)."""
        return self.precision if self.records("precision") else None

    def with_precision(self, precision: Optional[str]) -> "Pick":
        """This pick recording ``precision`` where it records none (a deployable of your model ships at the
        precision its recommendation names)."""
        if precision is None or self.records("precision"):
            return self
        names = self.fields_read + ("precision",) if self.fields_read else ()
        return replace(self, precision=precision, fields_read=names)

    @cached_property
    def raw(self) -> Dict[str, Any]:
        """The entry as search.json records it (:meth:`to_dict`), made once: the same dict on every call (the
        report's evidence is kept per entry)."""
        return self.to_dict()

    def schedule(self, num_patches: Optional[int] = None) -> TokenSchedule:
        """The schedule (``num_patches``: only for a pick made by hand, which does not know its model's)."""
        n = num_patches if num_patches is not None else self.num_patches
        if n is None:
            raise ConfigError("num_patches: this pick was not read from a search result; give the model's")
        return TokenSchedule(self.counts, n, reducers=self.reducers)


#: every field a budget's entry of search.json records: name -> its kind (how :func:`~.result.validate_search`
#: checks it and :meth:`~.outcome.BudgetResult.to_dict` writes it): ``label``, ``objective``, ``limit``, ``text``,
#: ``share`` (of your model's latency, in (0, 1]), ``count``, ``pick`` (a :class:`Pick`), ``picks`` (by name),
#: ``pick_list``, ``recommendation`` (a :class:`Recommendation`), ``difference`` (a :class:`PairedDifference`)
BUDGET_FIELDS: Dict[str, str] = {
    "label": "label", "objective": "objective", "limit": "limit", "schedule_file": "text", "fraction": "share",
    "best": "pick", "best_fp32": "pick", "finetuned": "pick", "baselines": "picks", "training_free": "picks",
    "recommended": "recommendation", "int8_verifications": "count", "vs_fp32": "difference",
    "timed_over_budget": "pick_list",
}


@dataclass(frozen=True)
class Recommendation(_Entry):
    """What a budget ships among its options, and why (search.json's ``recommended``): the option's ``family``
    (``searched``, ``finetuned``, ``tome_parent``, ``searched_parent``, ``parent``; ``@int8`` and the like: at that
    precision), whose ``weights`` (``supernet``, ``parent`` -- your model -- or ``finetuned``), its schedule
    (``counts``, ``reducers``) and ``precision``, ``why`` in words, and the paired gates it passed: ``evidence``
    (the supernet's pick against the best option on your model's weights) and ``evidence_parent`` (a schedule
    searched on your model against the best fitted to the budget), each ``{versus, metric, lead, se, z,
    required_z}``; ``checkpoint``: a fine-tuned pick's, in the search's folder."""

    family: Optional[str] = None
    why: Optional[str] = None
    weights: Optional[str] = None
    counts: Optional[Tuple[int, ...]] = None
    reducers: Optional[Tuple[Optional[str], ...]] = None
    precision: Optional[str] = None
    evidence: Optional[Mapping[str, Any]] = None
    evidence_parent: Optional[Mapping[str, Any]] = None
    checkpoint: Optional[str] = None
    fields_read: Tuple[str, ...] = field(default=(), repr=False, compare=False)
    unknown: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Recommendation":
        known = _RECOMMENDATION_FIELDS
        values = {k: v for k, v in d.items() if k in known}
        if values.get("counts") is not None:
            values["counts"] = tuple(int(c) for c in values["counts"])
        if values.get("reducers"):
            values["reducers"] = tuple(values["reducers"])
        return cls(**values, fields_read=tuple(d), unknown={k: v for k, v in d.items() if k not in known})

    def to_dict(self) -> Dict[str, Any]:
        return self._written(_RECOMMENDATION_FIELDS, _lists("counts", "reducers"))


_RECOMMENDATION_FIELDS = ("family", "why", "weights", "counts", "reducers", "precision", "evidence",
                          "evidence_parent", "checkpoint")


__all__ = ["BUDGET_FIELDS", "Deployed", "PICK_FIELDS", "PairedDifference", "Pick", "Recommendation"]
