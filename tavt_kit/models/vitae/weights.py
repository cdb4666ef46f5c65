"""Official ViTAE checkpoints: strict loading (``state_dict`` / ``state_dict_ema``, ``module.``) and variant inference."""
from __future__ import annotations

import logging
from typing import Any, Dict, Tuple


from ...errors import CheckpointError
from ..convert import mismatch_message
from .model import ViTAE
from .variants import VARIANTS

_log = logging.getLogger(__name__)


_UNUSED_OFFICIAL = ("attn.relative_position_index", "attn.relative_position_bias_table")


def load_vitae_weights(model: ViTAE, wf, reset_head: bool = True) -> str:
    """Load an official (or fgvc-kit) ViTAE state dict strictly; returns the file's kind."""
    path = wf.path
    if wf.kind == "npz":
        raise CheckpointError(f"{path}: a JAX .npz ViT cannot initialise {model.variant}")
    sd = dict(wf.tensors)
    for key in [k for k in sd if k.endswith(_UNUSED_OFFICIAL)]:
        sd.pop(key)
    own = model.state_dict()
    w = sd.get("head.weight")
    own_w = own.get("head.weight")
    if w is not None and (own_w is None or tuple(w.shape) != tuple(own_w.shape)):
        n_model = 0 if own_w is None else own_w.shape[0]
        if not reset_head:
            raise CheckpointError(f"{path}: checkpoint has {w.shape[0]} classes, the model has {n_model}")
        _log.info("%s: head re-initialised for %d classes (checkpoint has %d)", path, n_model, w.shape[0])
        sd.pop("head.weight")
        sd.pop("head.bias", None)
    bad = [k for k, v in sd.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        k = bad[0]
        raise CheckpointError(f"{path}: tensor {k} has shape {tuple(sd[k].shape)}, {model.variant} expects "
                              f"{tuple(own[k].shape)} (another ViTAE variant or image layout?)")
    missing = [k for k in own if k not in sd and not (reset_head and k.startswith("head."))]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        raise CheckpointError(f"{path}: does not match {model.variant} ({mismatch_message(missing, unexpected)})")
    model.load_state_dict(sd, strict=False)  # every key checked above; head keys may be absent by choice
    return "fgvc-kit" if wf.kind == "fgvc-kit" else "vitae-official"


def infer_vitae_args(tensors: Dict[str, Any], path: str = "checkpoint") -> Tuple[str, Dict[str, Any]]:
    """Official variant name and ``create_model`` arguments for an official ViTAE state dict.

    The widths identify the variant; the number of normal cells per stage and
    the classifier are read off the keys (heads cannot be, so they are the
    variant's).
    """
    stages = 1 + max((int(k.split(".")[1]) for k in tensors if k.startswith("layers.") and k.split(".")[1].isdigit()),
                     default=-1)
    if stages < 1:
        raise CheckpointError(f"{path}: no ViTAE layers.* tensors in the checkpoint")
    try:
        embed = tuple(int(tensors[f"layers.{s}.RC.PRM.convs.0.0.weight"].shape[0]) for s in range(stages))
        width = []
        for s in range(stages):
            nd = sum(1 for k in tensors if k.startswith(f"layers.{s}.RC.PRM.convs.") and k.endswith(".0.weight"))
            key = f"layers.{s}.RC.attn.norm2.weight"
            width.append(int(tensors[key].shape[0]) if key in tensors else embed[s] * nd)  # pyramid-only cell
    except KeyError as e:
        raise CheckpointError(f"{path}: incomplete ViTAE checkpoint (no {e.args[0]})") from None
    depth = tuple(len({k.split(".")[3] for k in tensors if k.startswith(f"layers.{s}.NC.")}) for s in range(stages))
    same_width = [n for n, c in VARIANTS.items()
                  if tuple(c["embed_dims"]) == embed and tuple(c["token_dims"]) == tuple(width)]
    # Tiny and 6M differ in depth only: prefer the variant whose depth matches too
    for name in sorted(same_width, key=lambda n: tuple(VARIANTS[n]["NC_depth"]) != depth):
        kwargs: Dict[str, Any] = {}
        if depth != tuple(VARIANTS[name]["NC_depth"]):
            kwargs["NC_depth"] = list(depth)
        head = tensors.get("head.weight")
        kwargs["num_classes"] = int(head.shape[0]) if head is not None else 0
        return name, kwargs
    raise CheckpointError(f"{path}: ViTAE checkpoint with widths {list(width)} matches none of {', '.join(VARIANTS)}")
