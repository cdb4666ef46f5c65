"""How a budget chooses what ships, as one value: :class:`ShipPolicy`.

Every option that can ship for a budget (the supernet's pick, its fine-tune, your model's own weights: ToMe on it,
a schedule searched on it, it as it is) competes on the same held-out images, paired per image
(:mod:`~.recommend`). The policy says how sure a challenger must be to replace what holds (``confidence``), which
images decide (``selection``: a share of the held-out images the evolution never scores), whether a searched
option's fitness is corrected for the winner's curse (``shrinkage``, :mod:`~.shrinkage`), and whether schedules
searched on your model's weights compete (``parent_search``, :mod:`~.parent_search`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Union

from ..errors import ConfigError
from .recommend import DEFAULT_SHIP_CONFIDENCE, check_ship_confidence
from .selection import check_selection


@dataclass(frozen=True)
class ShipPolicy:
    """How a budget chooses what ships (see the module docstring); every field checked when made."""

    #: one-sided confidence a challenger's paired lead must reach to ship (0.5: any lead)
    confidence: float = DEFAULT_SHIP_CONFIDENCE
    #: share of the held-out images set aside to choose on (``"auto"``, or 0: the evolution's own images)
    selection: Union[str, float] = 0.0
    #: searched options' fitness corrected for the winner's curse
    shrinkage: bool = True
    #: schedules searched on your model's own weights (merging, no training) compete
    parent_search: bool = True

    def __post_init__(self):
        object.__setattr__(self, "confidence", check_ship_confidence(self.confidence, "ship.confidence"))
        object.__setattr__(self, "selection", check_selection(self.selection))
        for field in ("shrinkage", "parent_search"):
            if not isinstance(getattr(self, field), bool):
                raise ConfigError(f"ship.{field}={getattr(self, field)!r}: expected True or False")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

