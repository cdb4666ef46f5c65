"""Per-batch training steps: fine-tuning's :class:`ClassificationStep` (cross-entropy plus the head's losses)."""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn


def accepts_labels(model: nn.Module) -> bool:
    """Whether ``model.forward`` (DDP unwrapped) takes ``labels=`` (fgvc-kit models do: heads' losses need them)."""
    import inspect

    inner = getattr(model, "module", model)
    try:
        params = inspect.signature(inner.forward).parameters
    except (TypeError, ValueError):
        return False
    return "labels" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


class ClassificationStep:
    """Cross-entropy (with label smoothing) on the logits plus the auxiliary losses the head returns.

    fgvc-kit models are called as ``model(images, labels=labels)`` in training
    mode and return ``(logits, aux_losses)``: the head's own losses, already
    weighted (Mix-ViT's BCE, PIM's block/selector losses), added to the loss.
    Models without a ``labels`` argument are called as ``model(images)`` and
    may return logits or ``(logits, aux_losses)``.
    """

    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = float(label_smoothing)
        self._labels: Optional[bool] = None

    def __call__(self, model, images: torch.Tensor, labels: torch.Tensor):
        if self._labels is None:
            self._labels = accepts_labels(model)
        out = model(images, labels=labels) if self._labels else model(images)
        aux: Dict[str, torch.Tensor] = {}
        if isinstance(out, (tuple, list)):
            out, aux = out[0], (out[1] or {})
        ce = F.cross_entropy(out.float(), labels, label_smoothing=self.label_smoothing)
        loss = ce
        metrics = {"loss_ce": ce.detach(), "acc": (out.detach().argmax(1) == labels).float().mean()}
        for name, value in aux.items():
            loss = loss + value
            metrics[f"aux_{name}"] = value.detach()
        return loss, metrics
