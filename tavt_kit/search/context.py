"""What every stage of one search reads: a :class:`SearchContext`, made once before the first stage and never
changed.

The stages (:data:`~.pipeline.STAGES`: the fp32 evolution and its document, the precisions in :mod:`.pairs`,
your model and what needs no training in :mod:`.parent`, the picks' fine-tune in :mod:`.finetune`) are functions
of it and of the run so far (:class:`~.pipeline.SearchRun`); none of them sets a field. Two records are filled in
as the search runs, their binding fixed: ``searches`` (the evolution of each precision, by precision) and ``test_hits`` (each scored schedule's
per-image hits on the test images, which every paired difference reads).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from ..models import count_macs, token_drop_record
from ..schedules import SearchSpace, TokenSchedule
from .evolution import Budget, EvolutionSettings, gene_of, schedule_of
from .pairs import FRONT_TIME_LIMIT_S
from .ship import ShipPolicy


@dataclass(frozen=True, eq=False)
class SearchContext:
    """One search's model, space, budgets, latency objectives, images and settings (see the module docstring).

    ``model``: the weights searched (the supernet, or your model itself); ``space`` the schedules searched;
    ``objectives`` one latency objective per precision (``fp32`` first); ``holdout`` the images the evolution
    scores (``selection``: those set aside to choose each budget's recommendation), ``test`` the images every
    reported figure is measured on; ``evaluator`` scores candidates on ``holdout``; ``target_check`` times
    picks on the target; ``digest`` the searched weights' sha256; ``reused`` the journals of earlier searches
    (:class:`~.reuse.Reused`); ``finetune`` each budget's pick fine-tuned toward your model
    (:class:`~.finetune.PickFinetune`); ``ship`` the :class:`~.ship.ShipPolicy` every budget's choice follows."""

    model: nn.Module
    space: SearchSpace
    budgets: Tuple[Budget, ...] = ()
    objectives: Mapping[str, Any] = field(default_factory=dict)
    precisions: Tuple[str, ...] = ("fp32",)
    settings: EvolutionSettings = field(default_factory=EvolutionSettings)
    fitness: str = "nll"
    out_dir: Optional[str] = None
    log: Callable[[str], None] = print
    data: Any = None
    holdout: Any = None
    selection: Any = None
    test: Any = None
    transform: Any = None
    device: Any = None
    batch_size: int = 64
    subset: Optional[int] = None
    source: Optional[dict] = None
    verify_top: int = 3
    calibration_images: int = 300
    front_time_limit: Optional[float] = FRONT_TIME_LIMIT_S
    remeasure_picks: bool = False
    #: how each budget chooses what ships (the gate's confidence, selection, shrinkage, the search on your model)
    ship: ShipPolicy = field(default_factory=ShipPolicy)
    reuse_paths: Tuple[str, ...] = ()
    evaluator: Any = None
    target_check: Any = None
    digest: Optional[str] = None
    rank: int = 0
    world: int = 1
    reused: Any = None
    finetune: Any = None
    #: filled in as the search runs (see the module docstring)
    searches: Dict[str, Any] = field(default_factory=dict, repr=False)
    test_hits: Dict[tuple, torch.Tensor] = field(default_factory=dict, repr=False)
    _macs: Dict[tuple, int] = field(default_factory=dict, repr=False)

    def replace(self, **changes) -> "SearchContext":
        """A context with ``changes`` (made before the first stage; the records start empty again)."""
        return dataclasses.replace(self, **changes, searches={}, test_hits={}, _macs={})

    # ------------------------------------------------------------------ views
    @property
    def latency(self):
        """The fp32 latency objective (None: no latency budget and no table)."""
        return self.objectives.get("fp32")

    @property
    def n_holdout(self) -> int:
        return int(len(self.holdout.labels)) if self.holdout is not None else 0

    @property
    def n_test(self) -> int:
        return int(len(self.test.labels)) if self.test is not None else 0

    # ------------------------------------------------------------------ costs
    def schedule(self, gene) -> TokenSchedule:
        """The schedule of a gene ``(counts, reducers)`` in this search's space."""
        return schedule_of(gene, self.space.num_patches, self.space.min_tokens)

    def macs_of(self, gene) -> int:
        """The model's MACs at a gene's schedule (counted once per gene)."""
        gene = tuple(gene)
        if gene not in self._macs:
            self._macs[gene] = count_macs(self.model, self.schedule(gene)).total()
        return self._macs[gene]

    def macs(self, s: TokenSchedule) -> int:
        return self.macs_of(gene_of(s))

    def metrics(self, scheds: List[TokenSchedule], evaluator=None) -> List[dict]:
        """Held-out metrics of schedules (``evaluator``: default the search's own, on ``holdout``)."""
        ev = evaluator or self.evaluator
        sc = ev.scores(scheds).summed_over_ranks(self.n_holdout)
        return [sc.metrics(i) for i in range(len(scheds))]

    # ------------------------------------------------------------- journals
    def journal_settings(self, space: SearchSpace, digest: str) -> dict:
        """What a journal of ``space`` on the weights ``digest`` (their content, not their path) is keyed on."""
        return {**self.settings.to_dict(), "fitness": self.fitness, "subset": self.subset, "space": space.to_dict(),
                "budgets": [[b.objective, b.limit] for b in self.budgets], "weights_sha256": digest,
                "holdout_images": self.n_holdout, "holdout_sha256": self.holdout.digest(),
                "token_drop": token_drop_record(self.model),  # the same weights dropping otherwise score otherwise
                "source": {k: v for k, v in (self.source or {}).items() if k != "checkpoint"},
                "latency": self.latency.info.get("identity") if self.latency is not None else None}

    def journal_key(self) -> dict:
        """The key of this search's own journal: :meth:`journal_settings` of its space and weights, and each
        precision's latency beyond fp32 (one journal for every precision: each record says its precision)."""
        settings = self.journal_settings(self.space, self.digest)
        if len(self.precisions) > 1:
            settings["precisions"] = {p: {"latency": self.objectives[p].info.get("identity")}
                                      for p in self.precisions[1:]}
        return settings

    @property
    def calibration(self) -> Optional[dict]:
        """The images int8 quantisation is calibrated on (None: no int8 searched): their number, the seed of the
        subset, the split and the dataset. Recorded in search.json's settings; the deployed int8 runs of the
        journal are keyed on it, so a search rerun with other calibration quantises again."""
        if "int8" not in self.precisions:
            return None
        spec = getattr(self.data, "spec", None)
        data = spec.to_dict() if hasattr(spec, "to_dict") else None
        return {"images": self.calibration_images, "seed": self.settings.seed, "split": "train", "data": data}
