"""What is measured: a model (checkpoint / name / module) or an exported file, and its identity (the structure
that decides its latency)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from torch import nn


#: identity keys that decide a model's latency (a latency table must match them all)
STRUCTURE_KEYS = ("depth", "embed_dim", "num_heads", "mlp_hidden", "num_patches", "num_prefix_tokens", "img_size",
                  "patch_size", "scorer", "fuse", "head", "prop_attn")


def model_from_spec(spec: Dict[str, Any]) -> Optional[nn.Module]:
    """Rebuild the architecture of a spec (random weights) for MAC counting; None if it cannot be built."""
    from ..models import create_model

    try:
        kwargs = dict(spec["backbone"]["kwargs"])
        kwargs.update((spec.get("head") or {}).get("args") or {})
        td = spec.get("token_drop") or {}
        if "reducer" in td:
            kwargs.update(reducer=td["reducer"], prop_attn=td.get("prop_attn", True))
        return create_model(spec["backbone"]["name"], head=(spec.get("head") or {}).get("name", "linear"),
                            scorer=td.get("scorer", "tavt"), fuse=td.get("fuse", False), **kwargs)
    except Exception:
        return None


def _mlp_hidden(model: nn.Module) -> Optional[int]:
    try:
        return int(model.blocks[0].mlp.fc1.out_features)
    except AttributeError:
        return None


def model_identity(model: nn.Module) -> Dict[str, Any]:
    """Name and the structure that decides latency (depth, width, heads, grid, image size, scorer, ...)."""
    from ..models.factory import geometry

    geo = geometry(model)
    spec = getattr(model, "spec", None) or {}
    name = (spec.get("backbone") or {}).get("name") or type(model).__name__
    try:
        heads = int(model.blocks[0].attn.num_heads)
    except AttributeError:
        heads = None
    return {
        "name": name,
        "depth": int(geo["depth"]),
        "embed_dim": int(geo["embed_dim"]),
        "num_heads": heads,
        "mlp_hidden": _mlp_hidden(model),
        "num_patches": int(geo["num_patches"]),
        "num_prefix_tokens": int(geo["num_prefix_tokens"]),
        "img_size": [int(v) for v in geo["img_size"]],
        "patch_size": [int(v) for v in geo["patch_size"]],
        "num_classes": int(getattr(model, "num_classes", 0)),
        "scorer": getattr(model, "scorer", None),
        "fuse": bool(getattr(model, "fuse", False)),
        "head": getattr(model, "head_name", "linear"),
        # how reducing blocks remove tokens when a schedule names no reducer, and proportional attention
        "reducer": getattr(model, "reducer", None),
        "prop_attn": bool(model.prop_attn) if hasattr(model, "prop_attn") else None,
    }


def identity_from_spec(spec: Dict[str, Any]) -> Dict[str, Any]:
    """The identity of a spec (fields a spec lacks are None)."""
    kw = (spec.get("backbone") or {}).get("kwargs") or {}
    td = spec.get("token_drop") or {}
    hidden = None
    if kw.get("mlp_ratio") and spec.get("embed_dim"):
        hidden = int(spec["embed_dim"] * kw["mlp_ratio"])
    return {
        "name": (spec.get("backbone") or {}).get("name"),
        "depth": spec.get("depth"), "embed_dim": spec.get("embed_dim"), "num_heads": kw.get("num_heads"),
        "mlp_hidden": hidden, "num_patches": spec.get("num_patches"),
        "num_prefix_tokens": spec.get("num_prefix_tokens"), "img_size": spec.get("img_size"),
        "patch_size": spec.get("patch_size"), "num_classes": spec.get("num_classes"),
        "scorer": td.get("scorer"), "fuse": td.get("fuse"), "head": (spec.get("head") or {}).get("name"),
        "reducer": td.get("reducer", "drop") if td else None, "prop_attn": td.get("prop_attn") if td else None,
    }


def identity_mismatch(a: Dict[str, Any], b: Dict[str, Any], keys: Sequence[str] = STRUCTURE_KEYS) -> List[str]:
    """``key a != b`` for every structure key both identities know and that differs."""
    out = []
    for k in keys:
        x, y = a.get(k), b.get(k)
        if x is None or y is None:
            continue
        if isinstance(x, (list, tuple)) or isinstance(y, (list, tuple)):
            x, y = list(x) if isinstance(x, (list, tuple)) else x, list(y) if isinstance(y, (list, tuple)) else y
        if x != y:
            out.append(f"{k} {x} vs {y}")
    return out


def short_counts(counts: Optional[Sequence[int]], full: Optional[int] = None) -> str:
    """``[784, 784, 784, 548]`` -> ``784x3, 548``."""
    if counts is None:
        return "?"
    parts, i = [], 0
    counts = list(counts)
    while i < len(counts):
        j = i
        while j + 1 < len(counts) and counts[j + 1] == counts[i]:
            j += 1
        n = j - i + 1
        parts.append(f"{counts[i]}x{n}" if n > 2 else ", ".join([str(counts[i])] * n))
        i = j + 1
    return ", ".join(parts)
