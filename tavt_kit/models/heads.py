"""Classification heads over a token-drop backbone.

* ``linear`` — timm's own pooling (class token, average, attention pooling,
  distillation head) followed by its classifier; it reads the tokens that
  survive the schedule.
* ``ffvt`` — FFVT (BMVC 2021): MAWS picks ``num_token`` tokens after every block
  but the last; the last block reads the class token plus those tokens
  (:mod:`tavt_kit.models.ffvt`).
* ``mixvit`` — Mix-ViT (Pattern Recognition 2023): training-only attentive
  token substitution between the samples of a batch, an extra block and a head
  that predicts the substituted positions (:mod:`tavt_kit.models.mixvit`).
* ``pim`` — the plug-in module: feature pyramid over tapped blocks (their
  restored grids under patch drop), weakly supervised selector, graph
  combiner (:mod:`tavt_kit.models.pim`).

The training-mode contract (what the trainer calls) is on
:meth:`tavt_kit.models.token_drop.TokenDropMixin.forward`:
``model(x, drop=schedule, labels=y)`` returns ``(logits, aux_losses)`` in
training mode for every head; ``aux_losses`` are already weighted and are added
to the trainer's own loss on ``logits``. In eval mode every head returns logits.
"""
from __future__ import annotations

import numbers
from typing import Any, Dict, List

from torch import nn

from ..errors import ConfigError

#: head name -> the arguments it takes (with defaults)
HEAD_ARGS: Dict[str, Dict[str, Any]] = {
    "linear": {},
    # FFVT: tokens MAWS selects after each block but the last (12 in the paper; 24 for Dogs)
    "ffvt": {"num_token": 12},
    # Mix-ViT: fraction of the patch tokens substituted, weight of the substitution BCE
    # (official defaults 0.05 and 1; its scripts use 0.2 / 4 for Cotton80)
    "mixvit": {"mask_topk": 0.05, "mask_weight": 1.0},
    # PIM: tapped blocks (default: the last four), tokens the selector keeps per tapped block,
    # FPN width, loss weights (official ViT recipe: 32 per block, 512; lambdas 0.5, 0, 5, 1)
    "pim": {"tap_blocks": None, "num_selects": 32, "fpn_size": 512,
            "lambda_b": 0.5, "lambda_s": 0.0, "lambda_n": 5.0, "lambda_c": 1.0},
}

#: heads whose module holds weights under ``<name>.*`` in the state dict
HEADS_WITH_WEIGHTS = ("mixvit", "pim")


def check_head(head: str, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """Validate ``head`` and pop its arguments out of ``kwargs`` (the rest go to timm)."""
    if not isinstance(head, str) or head not in HEAD_ARGS:
        raise ConfigError(f"unknown head {head!r}; expected one of {', '.join(HEAD_ARGS)}")
    args = dict(HEAD_ARGS[head])
    for key in list(kwargs):
        if key in args:
            args[key] = kwargs.pop(key)
        else:
            owners = [h for h, a in HEAD_ARGS.items() if key in a]
            if owners:
                raise ConfigError(f"{key} is an argument of head '{owners[0]}', not of head '{head}'")
    return args


# ------------------------------------------------------------------ validation
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


def attach_head(model: nn.Module, head: str, args: Dict[str, Any]) -> Dict[str, Any]:
    """Give a patched timm ViT its head, in place; returns the head's resolved arguments (for the spec).

    Call after pretrained weights are loaded: Mix-ViT's extra block starts as a copy of the
    backbone's last block, and PIM replaces the final norm and classifier it does not use.
    """
    if head == "linear":
        model.head_name = "linear"
        return {}
    if getattr(model, "head_name", "linear") != "linear":
        raise ConfigError(f"the model already has head '{model.head_name}'")
    if head == "ffvt":
        from .ffvt import FFVTHead

        module, resolved = FFVTHead.build(model, **args)
    elif head == "mixvit":
        from .mixvit import MixViTHead

        module, resolved = MixViTHead.build(model, **args)
    elif head == "pim":
        from .pim import PIMHead

        module, resolved = PIMHead.build(model, **args)
    else:  # pragma: no cover - check_head refuses it first
        raise ConfigError(f"unknown head {head!r}; expected one of {', '.join(HEAD_ARGS)}")
    model.add_module(head, module)
    model.head_name = head
    module.after_attach(model)
    if model.schedule is not None:
        model.schedule = model.schedule  # re-validate against the head
    return resolved


def needs_class_token(model: nn.Module, head: str) -> None:
    if getattr(model, "cls_token", None) is None:
        raise ConfigError(f"head '{head}' needs a class token; this model has none")


def depth_at_least(model: nn.Module, head: str, n: int, why: str) -> None:
    if len(model.blocks) < n:
        raise ConfigError(f"head '{head}' needs at least {n} blocks ({why}); the model has {len(model.blocks)}")


def ignored_backbone_keys(model: nn.Module) -> List[str]:
    """State-dict prefixes of backbone modules the head replaced (PIM: final norm and classifier)."""
    head = getattr(model, "fgvc_head", None)
    return list(getattr(head, "replaced_prefixes", ())) if head is not None else []
