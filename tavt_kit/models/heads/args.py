"""Checks of a head's arguments and of what it needs from the backbone (one-line ConfigErrors)."""
from __future__ import annotations

import numbers
from typing import Any

from torch import nn

from ...errors import ConfigError


def int_arg(head: str, name: str, value: Any, lo: int, hi: int, why: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"head {head}: {name} must be an integer, got {value!r}")
    value = int(value)
    if not lo <= value <= hi:
        raise ConfigError(f"head {head}: {name}={value} is outside [{lo}, {hi}]{why}")
    return value


def float_arg(head: str, name: str, value: Any, lo: float, hi: float, open_lo: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"head {head}: {name} must be a number, got {value!r}")
    value = float(value)
    if value > hi or value < lo or (open_lo and value == lo):
        lo_b = "(" if open_lo else "["
        raise ConfigError(f"head {head}: {name}={value} is outside {lo_b}{lo}, {hi}]")
    return value


def needs_class_token(model: nn.Module, head: str) -> None:
    if getattr(model, "cls_token", None) is None:
        raise ConfigError(f"head '{head}' needs a class token; this model has none")


def depth_at_least(model: nn.Module, head: str, n: int, why: str) -> None:
    if len(model.blocks) < n:
        raise ConfigError(f"head '{head}' needs at least {n} blocks ({why}); the model has {len(model.blocks)}")
