"""Per-block widths of structurally pruned ViTs (heads, MLP hidden), recorded in the spec.

A pruned checkpoint's spec carries ``"pruned": {"heads": [...], "mlp_hidden": [...]}``;
:func:`apply_pruned_shapes` shrinks a freshly built model to those widths
before its weights are loaded.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

from torch import nn

from ..errors import ConfigError


def pruned_shapes(model: nn.Module) -> Dict[str, List[int]]:
    """Per-block heads and MLP hidden width of a (possibly pruned) timm ViT."""
    return {"heads": [int(b.attn.num_heads) for b in model.blocks],
            "mlp_hidden": [int(b.mlp.fc1.out_features) for b in model.blocks]}


def apply_pruned_shapes(model: nn.Module, shapes: Dict[str, Sequence[int]]) -> nn.Module:
    """Shrink a freshly built ViT's layers to recorded widths (weights are loaded afterwards)."""
    heads, hidden = shapes.get("heads"), shapes.get("mlp_hidden")
    if heads is None or hidden is None or len(heads) != len(model.blocks) or len(hidden) != len(model.blocks):
        raise ConfigError(f"spec 'pruned' needs 'heads' and 'mlp_hidden' with one entry per block "
                          f"({len(model.blocks)})")
    for blk, h, m in zip(model.blocks, heads, hidden):
        attn = blk.attn
        hd = attn.head_dim
        A = int(h) * hd
        attn.qkv = nn.Linear(attn.qkv.in_features, 3 * A, bias=attn.qkv.bias is not None)
        attn.proj = nn.Linear(A, attn.proj.out_features, bias=attn.proj.bias is not None)
        if isinstance(attn.norm, nn.LayerNorm):
            attn.norm = nn.LayerNorm(A, eps=attn.norm.eps)
        attn.num_heads, attn.attn_dim = int(h), A
        fc1, fc2 = blk.mlp.fc1, blk.mlp.fc2
        blk.mlp.fc1 = nn.Linear(fc1.in_features, int(m), bias=fc1.bias is not None)
        blk.mlp.fc2 = nn.Linear(int(m), fc2.out_features, bias=fc2.bias is not None)
        if isinstance(getattr(blk.mlp, "norm", None), nn.LayerNorm):
            blk.mlp.norm = nn.LayerNorm(int(m), eps=blk.mlp.norm.eps)
    return model
