"""The image size a training run uses when ``--img-size`` is not given, and how far a size is from the model's.

The rule (:func:`default_img_size`): an fgvc-kit checkpoint's size when the run starts from one; else the
model's own input size when the model was made for small inputs (native size below
:data:`SMALL_NATIVE`, e.g. fgvc_tiny's 64); else the dataset's FGVC recipe (448 for CUB, NABirds, Dogs,
Cars and iNat, 384 for the ultra-FGVC sets; the seeds fine-tune 224-pretrained ViTs at 448), and the
model's own for the built-in sets and plain folders.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

#: a model made for inputs smaller than this trains at its own size by default, not at the FGVC recipe's
SMALL_NATIVE = 224
#: a size whose token grid is more than this many times the model's native one is warned about
TOKEN_WARN_RATIO = 4.0


@dataclass(frozen=True)
class Geometry:
    """What a model was made for: its input size, patch size (total downsampling), width and MLP width."""

    name: str
    img_size: int
    patch: int
    embed_dim: Optional[int] = None
    mlp_hidden: Optional[int] = None
    prefix_tokens: int = 1

    def tokens(self, img_size: Optional[int] = None) -> int:
        """Patch tokens per image at ``img_size`` (default: the native size)."""
        s = self.img_size if img_size is None else int(img_size)
        return (s // self.patch) ** 2


def _from_module(name: str, m) -> Geometry:
    pe = m.patch_embed
    size, patch = pe.img_size, pe.patch_size
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    patch = int(patch[0] if isinstance(patch, (tuple, list)) else patch)
    hidden = None
    try:
        hidden = int(m.blocks[0].mlp.fc1.out_features)
    except (AttributeError, IndexError, TypeError):
        pass
    return Geometry(name, size, patch, int(getattr(m, "embed_dim", 0)) or None, hidden,
                    int(getattr(m, "num_prefix_tokens", 1)))


def model_geometry(name: Optional[str]) -> Optional[Geometry]:
    """The input geometry model ``name`` is made for, without building its weights; None when unknown."""
    if not name:
        return None
    from ..models.factory import BACKBONES, BUILTIN_MODELS

    entry = BACKBONES.get(str(name).lower())
    if entry is not None:  # ViTAE: 224 px, the reduction cells' total downsampling as the patch
        try:
            import math

            from ..models.vitae.variants import VARIANTS, canonical_name

            cfg = VARIANTS[canonical_name(name)]
            dims = cfg.get("token_dims") or cfg.get("embed_dims")
            return Geometry(name, 224, int(math.prod(cfg["downsample"])),
                            int(dims[-1]) if isinstance(dims, (tuple, list)) else None, None, 0)
        except Exception:
            return Geometry(name, 224, 16, None, None, 0)
    try:
        import timm
        import torch

        if name in BUILTIN_MODELS:
            base, kwargs = BUILTIN_MODELS[name]
        elif timm.is_model(name):
            base, kwargs = name, {}
        else:
            return None
        with torch.device("meta"):  # the architecture only: no memory, no initialisation cost
            m = timm.create_model(base, pretrained=False, **dict(kwargs))
        return _from_module(name, m)
    except Exception:
        pass
    try:  # the registry's input size and the name's patch size
        import timm

        size = int(timm.get_pretrained_cfg(name).input_size[-1])
        found = re.search(r"patch(\d+)", name)
        return Geometry(name, size, int(found.group(1)) if found else 16)
    except Exception:
        return None


def spec_geometry(spec: Dict[str, Any]) -> Optional[Geometry]:
    """The geometry an fgvc-kit checkpoint's spec records (the size it was trained at, its patch and width; named
    ``this checkpoint`` in messages); None when it lacks one."""
    try:
        d = int(spec["embed_dim"]) if spec.get("embed_dim") else None
        ratio = ((spec.get("backbone") or {}).get("kwargs") or {}).get("mlp_ratio")
        return Geometry("this checkpoint", int(spec["img_size"][0]),
                        int(spec["patch_size"][0]), d, int(d * float(ratio)) if d and ratio else None,
                        int(spec.get("num_prefix_tokens", 1)))
    except (KeyError, IndexError, TypeError, ValueError):
        return None


@dataclass(frozen=True)
class SizeChoice:
    """The image size to train at (None: build the model at its own) and why, in words."""

    size: Optional[int]
    reason: str
    #: the size this model (or checkpoint) was made for, which a larger one is measured against
    made_for: Optional[Geometry] = None
    #: where the size comes from: "checkpoint", "model" or "recipe"
    source: str = "recipe"


def default_img_size(dataset: str, model: Optional[str] = None, checkpoint_spec: Optional[Dict[str, Any]] = None,
                     checkpoint: Optional[str] = None) -> SizeChoice:
    """The size a run on ``dataset`` trains at when no size is given.

    ``model``: the model to build (``--model``; default fgvc_tiny when there is neither a model nor a
    checkpoint). ``checkpoint_spec``: the spec of the fgvc-kit checkpoint the run starts from, if any (its
    size is used when the run keeps its architecture). ``checkpoint``: the path of the weights, for the
    wording when they are not an fgvc-kit checkpoint (their architecture is inferred when they are loaded).
    """
    from ..data import dataset_info

    info = dataset_info(dataset)
    if checkpoint_spec is not None:
        arch = (checkpoint_spec.get("backbone") or {}).get("name")
        if checkpoint_spec.get("pruned") or model in (None, arch):
            size = int((checkpoint_spec.get("img_size") or [0])[0]) or None
            return SizeChoice(size, "the checkpoint's", spec_geometry(checkpoint_spec), "checkpoint")
    if model is None and checkpoint is None:
        model = "fgvc_tiny"
    geo = model_geometry(model) if model is not None else None
    if geo is not None and (info.img_size is None or geo.img_size < SMALL_NATIVE):
        return SizeChoice(geo.img_size, f"{model}'s own", geo, "model")
    if info.img_size is None:
        return SizeChoice(None, "the model's own", geo, "model")
    return SizeChoice(info.img_size, f"the FGVC recipe for {info.name}, for models made at {SMALL_NATIVE} px or "
                                     "more", geo)


def step_cost_ratio(geo: Geometry, img_size: int) -> float:
    """How many times a training step at ``img_size`` costs what one at the native size does (transformer
    blocks' multiply-adds: the linear layers grow with the tokens, attention with their square)."""
    n0 = geo.tokens() + geo.prefix_tokens
    n1 = geo.tokens(img_size) + geo.prefix_tokens
    if not geo.embed_dim:
        return (n1 / n0) ** 1.5  # between linear and quadratic when the width is unknown
    d = geo.embed_dim
    hidden = geo.mlp_hidden or 4 * d
    per_token = 4 * d * d + 2 * d * hidden
    return n1 * (per_token + 2 * n1 * d) / (n0 * (per_token + 2 * n0 * d))


def token_warning(geo: Optional[Geometry], img_size: Optional[int], suggest: Optional[int] = None) -> Optional[str]:
    """One line when ``img_size`` gives a token grid more than :data:`TOKEN_WARN_RATIO` times the one ``geo``
    was made for; else None. ``suggest``: the size to name instead (default: the native one)."""
    if geo is None or not img_size:
        return None
    native, tokens = geo.tokens(), geo.tokens(img_size)
    if native < 1 or tokens <= TOKEN_WARN_RATIO * native:
        return None
    cost = step_cost_ratio(geo, img_size)
    suggest = geo.img_size if suggest is None else int(suggest)
    return (f"{tokens} tokens per image, {tokens / native:.3g}x the {native} {geo.name} was made for: each step "
            f"costs ~{cost:.0f}x" + (f"; --img-size {suggest}" if suggest != img_size else ""))
