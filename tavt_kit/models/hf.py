"""Hugging Face ``transformers`` ViT-family state dicts (ViT, DeiT, DINOv2) converted to timm's layout.

The conversion is a filter applied when a weight file is read (as timm's own
``checkpoint_filter_fn`` converts foreign checkpoints), so a ``model.safetensors``
saved by ``transformers`` loads like any other checkpoint and ``transformers``
is never imported. Layouts (an optional model prefix such as ``vit.``,
``deit.``, ``dinov2.`` or ``backbone.`` is stripped):

=====================================================  ===========================
``embeddings.patch_embeddings.projection.*``           ``patch_embed.proj.*``
``embeddings.cls_token`` / ``distillation_token``      ``cls_token`` / ``dist_token``
``embeddings.register_tokens``                         ``reg_token``
``embeddings.position_embeddings``                     ``pos_embed``
``encoder.layer.N.attention.attention.{q,k,v}.*``      ``blocks.N.attn.qkv.*`` (concatenated)
``encoder.layer.N.attention.output.dense.*``           ``blocks.N.attn.proj.*``
``layernorm_before`` / ``norm1``                       ``blocks.N.norm1``
``layernorm_after`` / ``norm2``                        ``blocks.N.norm2``
``intermediate.dense`` + ``output.dense`` / ``mlp.*``  ``blocks.N.mlp.fc1`` / ``fc2``
``layer_scale{1,2}.lambda1``                           ``blocks.N.ls{1,2}.gamma``
``layernorm``                                          ``norm``
``classifier`` / ``cls_classifier``                    ``head``
``distillation_classifier``                            ``head_dist``
=====================================================  ===========================

Dropped: ``embeddings.mask_token`` (masked-image pretraining only) and
``pooler.*`` (unused by classification). A DINOv2 classifier over the
concatenated class and mean patch token (``2 x width`` inputs) has no timm
counterpart and is dropped too (the head starts afresh). SwiGLU MLPs
(``mlp.weights_in``, DINOv2-giant) are refused.
"""
from __future__ import annotations

import re
from typing import Dict, Iterable, Optional

import torch

from ..errors import CheckpointError

PATCH_KEY = "embeddings.patch_embeddings.projection.weight"

#: per-block names of the three layouts -> timm's
_BLOCK = {
    "attention.output.dense": "attn.proj",
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "norm1": "norm1",
    "norm2": "norm2",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_LAYER_SCALE = {"layer_scale1.lambda1": "ls1.gamma", "layer_scale2.lambda1": "ls2.gamma"}
_DROPPED = ("embeddings.mask_token", "pooler.")


def hf_prefix(sd: Iterable[str]) -> Optional[str]:
    """The model prefix of a Hugging Face ViT-family state dict or list of tensor names (``""``, ``"vit."``, ...),
    None if it is not one."""
    for key in sd:
        if key.endswith(PATCH_KEY):
            pre = key[: -len(PATCH_KEY)]
            if any(k.startswith(pre + "encoder.layer.") for k in sd):
                return pre
    return None


def hf_vit_to_timm(sd: Dict[str, torch.Tensor], path: str = "checkpoint") -> Dict[str, torch.Tensor]:
    """Convert a ``transformers`` ViT / DeiT / DINOv2 state dict to timm ``VisionTransformer`` keys.

    Raises :class:`CheckpointError` (one line naming ``path`` and the key) for a tensor of the layout it does
    not know, a block that lacks one of query/key/value, or a SwiGLU MLP.
    """
    pre = hf_prefix(sd)
    if pre is None:
        raise CheckpointError(f"{path}: not a Hugging Face ViT-family layout (no {PATCH_KEY})")
    out: Dict[str, torch.Tensor] = {}
    qkv: Dict[tuple, Dict[str, torch.Tensor]] = {}
    for key, t in sd.items():
        if key.startswith(pre):
            rest = key[len(pre):]
        else:  # a head beside the prefixed backbone (classifier.*, cls_classifier.*)
            rest = key if key.split(".")[0].endswith("classifier") else None
            if rest is None:
                raise CheckpointError(f"{path}: tensor {key} is outside the model prefix {pre!r}; expected a "
                                      "Hugging Face ViT, DeiT or DINOv2 layout")
        if rest.startswith(_DROPPED):
            continue
        name = _convert_key(rest, t, qkv, path, key)
        if name is not None:
            out[name] = t
    for (i, kind), parts in sorted(qkv.items()):
        if set(parts) != {"query", "key", "value"}:
            raise CheckpointError(f"{path}: layer {i} lacks attention.attention.{{query,key,value}}.{kind} "
                                  f"(has {', '.join(sorted(parts))})")
        out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]], 0)
    width = out["patch_embed.proj.weight"].shape[0]
    for head in ("head", "head_dist"):
        w = out.get(f"{head}.weight")
        if w is not None and w.shape[-1] != width:  # DINOv2's classifier over [class; mean patch]
            out.pop(f"{head}.weight")
            out.pop(f"{head}.bias", None)
    return out


def _convert_key(rest: str, t: torch.Tensor, qkv: Dict[tuple, Dict[str, torch.Tensor]], path: str,
                 key: str) -> Optional[str]:
    emb = {"embeddings.cls_token": "cls_token", "embeddings.distillation_token": "dist_token",
           "embeddings.register_tokens": "reg_token", "embeddings.position_embeddings": "pos_embed",
           "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
           "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
           "layernorm.weight": "norm.weight", "layernorm.bias": "norm.bias",
           "classifier.weight": "head.weight", "classifier.bias": "head.bias",
           "cls_classifier.weight": "head.weight", "cls_classifier.bias": "head.bias",
           "distillation_classifier.weight": "head_dist.weight",
           "distillation_classifier.bias": "head_dist.bias"}
    if rest in emb:
        return emb[rest]
    m = re.match(r"encoder\.layer\.(\d+)\.(.+)$", rest)
    if m is None:
        raise CheckpointError(f"{path}: tensor {key} is not part of the Hugging Face ViT, DeiT or DINOv2 layout")
    i, inner = int(m.group(1)), m.group(2)
    qm = re.match(r"attention\.attention\.(query|key|value)\.(weight|bias)$", inner)
    if qm:
        qkv.setdefault((i, qm.group(2)), {})[qm.group(1)] = t
        return None
    if inner in _LAYER_SCALE:
        return f"blocks.{i}.{_LAYER_SCALE[inner]}"
    if inner.startswith("mlp.weights_"):
        raise CheckpointError(f"{path}: tensor {key}: SwiGLU MLPs (DINOv2-giant) are not supported; expected "
                              "mlp.fc1/mlp.fc2")
    module, _, leaf = inner.rpartition(".")
    if module in _BLOCK and leaf in ("weight", "bias"):
        return f"blocks.{i}.{_BLOCK[module]}.{leaf}"
    raise CheckpointError(f"{path}: tensor {key} is not part of the Hugging Face ViT, DeiT or DINOv2 layout")


def timm_to_hf_vit(sd: Dict[str, torch.Tensor], layout: str = "dinov2", prefix: str = "") -> Dict[str, torch.Tensor]:
    """The inverse of :func:`hf_vit_to_timm` for a timm state dict: ``layout`` ``vit``, ``deit`` or ``dinov2``.

    Writes Hugging Face checkpoints for tests and for users who hand weights back to ``transformers``.
    """
    if layout not in ("vit", "deit", "dinov2"):
        raise CheckpointError(f"layout={layout!r}: expected vit, deit or dinov2")
    block = ({"attn.proj": "attention.output.dense", "norm1": "norm1", "norm2": "norm2", "mlp.fc1": "mlp.fc1",
              "mlp.fc2": "mlp.fc2"} if layout == "dinov2" else
             {"attn.proj": "attention.output.dense", "norm1": "layernorm_before", "norm2": "layernorm_after",
              "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"})
    top = {"cls_token": "embeddings.cls_token", "dist_token": "embeddings.distillation_token",
           "reg_token": "embeddings.register_tokens", "pos_embed": "embeddings.position_embeddings",
           "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
           "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
           "norm.weight": "layernorm.weight", "norm.bias": "layernorm.bias"}
    heads = {"head": "cls_classifier" if layout == "deit" else "classifier", "head_dist": "distillation_classifier"}
    out: Dict[str, torch.Tensor] = {}
    for key, t in sd.items():
        if key in top:
            out[prefix + top[key]] = t
            continue
        h = key.split(".")[0]
        if h in heads:
            out[heads[h] + key[len(h):]] = t
            continue
        m = re.match(r"blocks\.(\d+)\.(.+)\.(weight|bias|gamma)$", key)
        if m is None:
            raise CheckpointError(f"tensor {key}: no Hugging Face counterpart in the {layout} layout")
        i, module, leaf = m.groups()
        base = f"{prefix}encoder.layer.{i}."
        if module == "attn.qkv":
            for name, part in zip(("query", "key", "value"), t.chunk(3, 0)):
                out[f"{base}attention.attention.{name}.{leaf}"] = part.clone()
        elif module in ("ls1", "ls2"):
            out[f"{base}layer_scale{module[-1]}.lambda1"] = t
        elif module in block:
            out[f"{base}{block[module]}.{leaf}"] = t
        else:
            raise CheckpointError(f"tensor {key}: no Hugging Face counterpart in the {layout} layout")
    return out
