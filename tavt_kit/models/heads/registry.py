"""The head registry: each head declares its name, its arguments and which weights it owns or replaces.

A head module registers its class with :func:`register_head`; the class
carries ``ARGS`` (argument name -> default), ``HAS_WEIGHTS`` (its parameters
live under ``<name>.*`` in a state dict), ``replaced_prefixes`` (backbone
modules it makes unused: a checkpoint of it lacks them) and a classmethod
``build(model, **args) -> (module, resolved args)``. The factory and the
checkpoint loader ask the registry; they know no head by name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple, Type

from torch import nn

from ...errors import ConfigError


@dataclass(frozen=True)
class HeadEntry:
    """What the library knows of one head."""

    name: str
    cls: Optional[Type[nn.Module]]  # None: timm's own pooling + classifier ("linear")
    args: Dict[str, Any] = field(default_factory=dict)
    has_weights: bool = False
    replaced_prefixes: Tuple[str, ...] = ()


#: head name -> entry; "linear" is timm's own head and needs no module
HEADS: Dict[str, HeadEntry] = {"linear": HeadEntry("linear", None)}


def register_head(name: str):
    """Class decorator: register a head module class under ``name``."""
    def deco(cls):
        HEADS[name] = HeadEntry(name, cls, dict(getattr(cls, "ARGS", {})), bool(getattr(cls, "HAS_WEIGHTS", False)),
                                tuple(getattr(cls, "replaced_prefixes", ())))
        return cls
    return deco


def get_head(name: str) -> HeadEntry:
    if not isinstance(name, str) or name not in HEADS:
        raise ConfigError(f"unknown head {name!r}; expected one of {', '.join(HEADS)}")
    return HEADS[name]


def head_arg_names(name: str) -> Tuple[str, ...]:
    """The arguments head ``name`` takes (none for an unknown head)."""
    entry = HEADS.get(name)
    return tuple(entry.args) if entry is not None else ()


def heads_with_weights() -> Tuple[str, ...]:
    return tuple(n for n, e in HEADS.items() if e.has_weights)


def check_head(head: str, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """Validate ``head`` and pop its arguments out of ``kwargs`` (the rest go to timm)."""
    args = dict(get_head(head).args)
    for key in list(kwargs):
        if key in args:
            args[key] = kwargs.pop(key)
        else:
            owners = [h for h, e in HEADS.items() if key in e.args]
            if owners:
                raise ConfigError(f"{key} is an argument of head '{owners[0]}', not of head '{head}'")
    return args


def attach_head(model: nn.Module, head: str, args: Dict[str, Any]) -> Dict[str, Any]:
    """Give a patched timm ViT its head, in place; returns the head's resolved arguments (for the spec).

    Call after pretrained weights are loaded: Mix-ViT's extra block starts as a copy of the
    backbone's last block, and PIM replaces the final norm and classifier it does not use.
    """
    entry = get_head(head)
    if entry.cls is None:
        model.head_name = head
        return {}
    if getattr(model, "head_name", "linear") != "linear":
        raise ConfigError(f"the model already has head '{model.head_name}'")
    module, resolved = entry.cls.build(model, **args)
    model.add_module(head, module)
    model.head_name = head
    module.after_attach(model)
    if model.schedule is not None:
        model.schedule = model.schedule  # re-validate against the head
    return resolved


def ignored_backbone_keys(model: nn.Module) -> Tuple[str, ...]:
    """State-dict prefixes of backbone modules the attached head replaced (PIM: final norm and classifier)."""
    head = getattr(model, "fgvc_head", None)
    return tuple(getattr(head, "replaced_prefixes", ())) if head is not None else ()
