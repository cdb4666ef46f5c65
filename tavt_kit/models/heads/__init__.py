"""Classification heads over a token-drop backbone, registered by name.

* ``linear`` — timm's own pooling (class token, average, attention pooling,
  distillation head) followed by its classifier; it reads the tokens that
  survive the schedule.
* ``ffvt`` — FFVT (BMVC 2021): MAWS picks ``num_token`` tokens after every block
  but the last; the last block reads the class token plus those tokens
  (:mod:`.ffvt`).
* ``mixvit`` — Mix-ViT (Pattern Recognition 2023): training-only attentive
  token substitution between the samples of a batch, an extra block and a head
  that predicts the substituted positions (:mod:`.mixvit`).
* ``pim`` — the plug-in module: feature pyramid over tapped blocks (their
  restored grids under patch drop), weakly supervised selector, graph
  combiner (:mod:`.pim`).

The training-mode contract (what the trainer calls) is on
:meth:`tavt_kit.models.token_drop.TokenDropMixin.forward`:
``model(x, drop=schedule, labels=y)`` returns ``(logits, aux_losses)`` in
training mode for every head; ``aux_losses`` are already weighted and are added
to the trainer's own loss on ``logits``. In eval mode every head returns logits.
"""
from . import ffvt, mixvit, pim  # noqa: F401  (each registers its head)
from .args import depth_at_least, float_arg, int_arg, needs_class_token
from .registry import (HEADS, HeadEntry, attach_head, check_head, get_head, head_arg_names, heads_with_weights,
                       ignored_backbone_keys, register_head)

__all__ = [
    "HEADS", "HeadEntry", "attach_head", "check_head", "depth_at_least", "float_arg", "get_head", "head_arg_names",
    "heads_with_weights", "ignored_backbone_keys", "int_arg", "needs_class_token", "register_head",
]
