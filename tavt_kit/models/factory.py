"""``create_model``: one factory over timm's ViT registry, returning token-drop models.

The model carries a JSON-able *spec* (``model.spec``) from which
:func:`tavt_kit.load_checkpoint` rebuilds it: backbone name and arguments,
image size, classes, head, scorer, normalisation and provenance.
"""
from __future__ import annotations

import copy
import difflib
import logging
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError, ImageSizeError, UnknownModelError
from .token_drop import patch, token_drop_record

_log = logging.getLogger(__name__)

SPEC_FORMAT = "fgvc-kit/model"
SPEC_VERSION = 1

#: fgvc-kit's own named configurations: (timm base name, kwargs)
BUILTIN_MODELS: Dict[str, Tuple[str, Dict[str, Any]]] = {
    # the demo model: 64x64 images, 8x8 patches (64 tokens), 6 blocks of width 96
    "fgvc_tiny": ("vit_tiny_patch16_224", dict(img_size=64, patch_size=8, embed_dim=96, depth=6, num_heads=3,
                                               num_classes=10)),
}


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _vit_names() -> Sequence[str]:
    import timm

    return timm.list_models(["vit_*", "deit*", "eva02*"]) or []


def resolve_name(name: str) -> Tuple[str, Dict[str, Any]]:
    """Map a model name to (timm name, default kwargs)."""
    import timm

    if not isinstance(name, str) or not name:
        raise UnknownModelError(f"model name must be a non-empty string, got {name!r}")
    if name in BUILTIN_MODELS:
        base, kw = BUILTIN_MODELS[name]
        return base, dict(kw)
    if timm.is_model(name):
        return name, {}
    known = list(BUILTIN_MODELS) + [n for e in BACKBONES.values() for n in e.names] + list(_vit_names())
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; expected a timm ViT name (vit_*, deit_*) or fgvc_tiny"
    raise UnknownModelError(f"unknown model {name!r}{hint}")


def _pair(v) -> Tuple[int, int]:
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ImageSizeError(f"img_size must be an int or (height, width), got {v!r}")
        return int(v[0]), int(v[1])
    return int(v), int(v)


def check_image_size(model: nn.Module, img_size=None) -> None:
    pe = model.patch_embed
    size = _pair(pe.img_size if img_size is None else img_size)
    patch_size = _pair(pe.patch_size)
    for s, p in zip(size, patch_size):
        if s < p or s % p:
            shown = size[0] if size[0] == size[1] else f"{size[0]}x{size[1]}"
            raise ImageSizeError(
                f"img_size {shown} is not a multiple of the patch size {patch_size[0]}; "
                f"use e.g. {max(p, s // p * p)} or {(s // p + 1) * p}")


def check_memory(name: str, img_size, kwargs: Dict[str, Any]) -> None:
    """Refuse an image size whose position embedding or one attention matrix would not fit in memory
    (``--img-size 100000`` would otherwise try to allocate tens of GB before failing)."""
    import re

    size = _pair(img_size)
    patch = kwargs.get("patch_size") or int((re.search(r"patch(\d+)", name) or [None, 16])[1])
    dim = kwargs.get("embed_dim") or next((d for key, d in (("tiny", 192), ("small", 384), ("base", 768),
                                                               ("large", 1024), ("huge", 1280), ("giant", 1408))
                                           if key in name), 768)
    p = _pair(patch)
    tokens = (size[0] // max(1, p[0])) * (size[1] // max(1, p[1])) + 1
    need = max(4 * tokens * int(dim), 4 * tokens * tokens)  # position embedding; one head's attention, batch 1
    try:
        import psutil

        limit = psutil.virtual_memory().total // 2
    except Exception:  # pragma: no cover - psutil is a dependency
        limit = 16 << 30
    if need > limit:
        shown = size[0] if size[0] == size[1] else f"{size[0]}x{size[1]}"
        raise ImageSizeError(f"img_size {shown}: {tokens} tokens need about {need / 2 ** 30:.0f} GiB for one "
                             f"attention matrix, more than half of this machine's {2 * limit / 2 ** 30:.0f} GiB; "
                             "expected an image size such as 224, 384 or 448")


def _jsonable(kwargs: Dict[str, Any], where: str) -> Dict[str, Any]:
    out = {}
    for k, v in kwargs.items():
        if isinstance(v, tuple):
            v = list(v)
        if v is None or isinstance(v, (bool, int, float, str)) or (
                isinstance(v, list) and all(isinstance(x, (bool, int, float, str)) for x in v)):
            out[k] = v
        else:
            raise ConfigError(f"{where}: argument {k}={v!r} cannot be stored in a checkpoint spec; "
                              "pass plain numbers/strings")
    return out


def _normalization(model: nn.Module, source_kind: Optional[str]) -> Dict[str, Any]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if source_kind in ("npz", "vit-pytorch", "hf", "onnx") or not cfg.get("mean"):
        # the seeds' FGVC recipe (TAVT, FFVT, TransFG) normalises with ImageNet statistics, as DeiT and DINOv2
        # (the Hugging Face layouts fgvc-kit imports) were trained
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        mean, std = tuple(cfg["mean"]), tuple(cfg["std"])
    return {"mean": [float(x) for x in mean], "std": [float(x) for x in std],
            "interpolation": cfg.get("interpolation", "bicubic")}


def geometry(model: nn.Module) -> Dict[str, Any]:
    """Image size, patch size, depth, grid and width of a token-drop model.

    Backbones that are not timm ViTs provide ``model.geometry()`` returning the same keys.
    """
    if hasattr(model, "geometry"):
        return model.geometry()
    return {
        "img_size": list(_pair(model.patch_embed.img_size)),
        "patch_size": list(_pair(model.patch_embed.patch_size)),
        "depth": len(model.blocks),
        "num_patches": int(model.patch_embed.num_patches),
        "num_prefix_tokens": int(model.num_prefix_tokens),
        "embed_dim": int(model.embed_dim),
    }


class BackboneEntry:
    """A non-timm backbone family known to :func:`create_model`.

    ``build(name, img_size=, num_classes=, scorer=, fuse=, **kwargs)`` returns a
    token-drop model (``forward(x, drop=)``, ``schedule``, ``make_schedule``,
    ``full_schedule``, ``depth``, ``num_patches``, ``scorer``, ``fuse``,
    ``geometry()``, ``count_macs_rows(schedule)``); ``load(model, weight_file,
    reset_head)`` loads a :class:`~tavt_kit.models.convert.WeightFile` into it
    (strictly, converting official layouts) and returns the file's kind.
    """

    def __init__(self, names: Sequence[str], build, load):
        self.names = tuple(names)
        self.build = build
        self.load = load


#: lower-cased model name -> BackboneEntry (filled by backbone modules at import)
BACKBONES: Dict[str, BackboneEntry] = {}


def register_backbone(entry: BackboneEntry) -> BackboneEntry:
    for n in entry.names:
        BACKBONES[n.lower()] = entry
    return entry


def _token_drop_spec(model: nn.Module) -> Dict[str, Any]:
    """Scorer and fuse; reducer and prop_attn only when the model merges (drop specs stay as they were)."""
    td = token_drop_record(model)
    if getattr(model, "reducer", "drop") != "drop":
        td.update(reducer=model.reducer, prop_attn=bool(getattr(model, "prop_attn", True)))
    return td


def build_spec(model: nn.Module, name: str, kwargs: Dict[str, Any], head: str, head_args: Dict[str, Any],
               class_names: Optional[Sequence[str]] = None, source: Optional[str] = None,
               source_kind: Optional[str] = None) -> Dict[str, Any]:
    import timm

    geo = geometry(model)
    H, W = geo["img_size"]
    num_classes = int(getattr(model, "num_classes", 0))
    kwargs = dict(kwargs, img_size=H if H == W else [H, W], num_classes=num_classes)
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        if len(class_names) != num_classes:
            raise ConfigError(f"class_names has {len(class_names)} names, the model has {num_classes} classes")
    return {
        "format": SPEC_FORMAT,
        "version": SPEC_VERSION,
        "backbone": {"name": name, "kwargs": _jsonable(kwargs, name)},
        "img_size": [H, W],
        "patch_size": geo["patch_size"],
        "depth": geo["depth"],
        "num_patches": geo["num_patches"],
        "num_prefix_tokens": geo["num_prefix_tokens"],
        "embed_dim": geo["embed_dim"],
        "num_classes": num_classes,
        "class_names": class_names,
        "head": {"name": head, "args": _jsonable(head_args, f"head {head}")},
        "token_drop": _token_drop_spec(model),
        "normalization": _normalization(model, source_kind),
        "provenance": {"source": source, "source_kind": source_kind,
                       "timm": timm.__version__, "torch": torch.__version__.split("+")[0]},
    }


def _head_weights_check(model: nn.Module, sd: Dict[str, Any], path: str, head: Optional[str]):
    """Which head the checkpoint's weights belong to; refuse a mismatch with the model's head.

    Returns (the model's head name, whether its module is attached).
    """
    from .heads import heads_with_weights

    attached_name = getattr(model, "head_name", "linear")
    target = head or attached_name
    for h in heads_with_weights():
        if h != target and any(k.startswith(h + ".") for k in sd):
            raise CheckpointError(f"{path}: the checkpoint carries head '{h}' weights ({h}.*), the model's head is "
                                  f"'{target}'; build it with head='{h}' (or load it with load_checkpoint)")
    return target, attached_name == target and target != "linear"


def _load_head_state(model: nn.Module, sd: Dict[str, Any], path: str) -> None:
    """Load a head's own weights (``<head>.*``), kept aside while the backbone was loaded before the head existed."""
    prefix = model.head_name + "."
    own = {k: v for k, v in model.state_dict().items() if k.startswith(prefix)}
    num_classes = int(getattr(model, "num_classes", 0) or 0)
    keep = {}
    for k, v in sd.items():
        if k not in own:
            raise CheckpointError(f"{path}: does not match the model's head (unexpected {k})")
        if v.shape != own[k].shape:
            if own[k].dim() and own[k].shape[0] == num_classes and v.shape[1:] == own[k].shape[1:]:
                _log.info("%s: %s re-initialised for %d classes", path, k, num_classes)
                continue
            raise CheckpointError(f"{path}: tensor {k} has shape {tuple(v.shape)}, the model expects "
                                  f"{tuple(own[k].shape)} (head arguments differ from the checkpoint's)")
        keep[k] = v
    missing = [k for k in own if k not in sd and not k.startswith(model.training_only_prefixes())]
    if missing:
        raise CheckpointError(f"{path}: does not match the model's head (missing {', '.join(missing[:4])}"
                              f"{' ...' if len(missing) > 4 else ''})")
    model.load_state_dict(keep, strict=False)
    if any(k not in sd for k in own):
        model.fgvc_head.init_from_backbone(model)


def load_pretrained_weights(model: nn.Module, path: str, reset_head: bool = True, head: Optional[str] = None) -> str:
    """Load a weight file of any supported layout into a timm ViT; returns the file's kind.

    Position embeddings are resampled when the grid differs. If the classifier's
    shape differs and ``reset_head`` is true, the head keeps its fresh
    initialisation (fine-tuning to new classes); otherwise that is an error.
    Weights of a head the model does not have attached yet are refused: build the
    model with :func:`create_model` (``head=``, ``pretrained=``), which loads them
    once the head exists.
    """
    kind, pending = _load_weights(model, path, reset_head, head)
    if pending:
        raise CheckpointError(f"{getattr(path, 'path', path)}: holds '{head}' head weights the model has no head for; "
                              f"build it with create_model(..., head='{head}', pretrained=...)")
    return kind


def _load_weights(model: nn.Module, path, reset_head: bool = True, head: Optional[str] = None):
    """:func:`load_pretrained_weights` for :func:`create_model`; returns ``(kind, head weights kept aside)``.

    ``head``: the head the model will get when it has none attached yet
    (:func:`create_model` loads the backbone first); weights of that head in
    the file (``pim.*``, ``mixvit.*``) are kept for it, weights of another
    head are refused. Weights only training uses (Mix-ViT's branch) may be
    missing: the branch restarts from the backbone.
    """
    from timm.models.vision_transformer import checkpoint_filter_fn

    from .convert import WeightFile, mismatch_message, read_weights
    from .heads import HEADS, ignored_backbone_keys

    wf = path if isinstance(path, WeightFile) else read_weights(path)
    path = wf.path
    entry = BACKBONES.get(str(getattr(model, "backbone_name", "")).lower())
    if entry is not None:
        return entry.load(model, wf, reset_head), {}
    if wf.kind == "npz":
        head = getattr(model, "head", None)
        n_ckpt = None
        for key in ("head/bias", "opt/target/head/bias", "params/head/bias"):
            if key in wf.tensors:
                n_ckpt = int(wf.tensors[key].shape[-1])
        if isinstance(head, nn.Linear) and n_ckpt is not None and n_ckpt != head.out_features and not reset_head:
            raise CheckpointError(f"{path}: checkpoint has {n_ckpt} classes, the model has {head.out_features}")
        try:
            model.load_pretrained(path)
        except Exception as e:  # shape mismatches surface from copy_ inside timm's loader
            raise CheckpointError(f"{path}: does not fit {type(model).__name__} "
                                  f"({str(e).splitlines()[0][:200]})") from None
        return wf.kind, {}
    sd = dict(wf.tensors)
    target, attached = _head_weights_check(model, sd, path, head)
    pending = {}
    if target in HEADS and not attached:
        pending = {k: sd.pop(k) for k in list(sd) if k.startswith(target + ".")}
    if attached:
        ignored = tuple(ignored_backbone_keys(model))
        if ignored:
            sd = {k: v for k, v in sd.items() if not k.startswith(ignored)}
    hint = getattr(wf, "head", None)
    if hint and hint != target:
        _log.info("%s: a '%s' checkpoint loaded as the backbone of a '%s' model", path, hint, target)
    try:
        sd = checkpoint_filter_fn(sd, model)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot adapt the checkpoint to the model ({str(e).splitlines()[0][:200]})") \
            from None
    own = model.state_dict()
    for head_key in ("head", "head_dist"):
        w = sd.get(f"{head_key}.weight")
        if w is not None and f"{head_key}.weight" in own and w.shape != own[f"{head_key}.weight"].shape:
            if not reset_head:
                raise CheckpointError(f"{path}: checkpoint has {w.shape[0]} classes, "
                                      f"the model has {own[f'{head_key}.weight'].shape[0]}")
            _log.info("%s: %s re-initialised for %d classes (checkpoint has %d)",
                      path, head_key, own[f"{head_key}.weight"].shape[0], w.shape[0])
            sd.pop(f"{head_key}.weight")
            sd.pop(f"{head_key}.bias", None)
    bad = [k for k, v in sd.items() if k in own and v.shape != own[k].shape]
    if bad:
        k = bad[0]
        raise CheckpointError(f"{path}: tensor {k} has shape {tuple(sd[k].shape)}, "
                              f"the model expects {tuple(own[k].shape)}")
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.startswith(("head.", "head_dist."))]
    replaced = HEADS[target].replaced_prefixes if target in HEADS and not attached else ()
    if replaced:  # a checkpoint of such a head (PIM) has no final norm or classifier of the backbone
        missing = [k for k in missing if not k.startswith(replaced)]
    fresh_branch = False
    if attached:
        training_only = model.training_only_prefixes()
        fresh_branch = any(k.startswith(training_only) for k in missing) if training_only else False
        missing = [k for k in missing if not (training_only and k.startswith(training_only))]
    if missing or unexpected:
        raise CheckpointError(f"{path}: does not match the model ({mismatch_message(missing, unexpected)})")
    if fresh_branch:
        _log.info("%s: no %s weights (saved for inference); the training branch restarts from the backbone",
                  path, model.head_name)
        model.fgvc_head.init_from_backbone(model)
    return wf.kind, pending


def create_model(
    name: str,
    *,
    img_size=None,
    num_classes: Optional[int] = None,
    head: str = "linear",
    scorer: str = "tavt",
    fuse: bool = False,
    pretrained=None,
    class_names: Optional[Sequence[str]] = None,
    reducer: str = "drop",
    prop_attn: bool = True,
    **timm_kwargs,
) -> nn.Module:
    """Build a token-drop model.

    Args:
        name: any timm ``VisionTransformer`` name (``vit_*``, ``deit_*`` incl.
            distilled, register-token, LayerScale, qk-norm models) or ``fgvc_tiny``.
        img_size: input size (int or (H, W)); must be a multiple of the patch size.
        num_classes: classifier outputs (``0`` = features only).
        head: classification head: ``"linear"`` (timm's own pooling + classifier), ``"ffvt"``
            (``num_token``), ``"mixvit"`` (``mask_topk``, ``mask_weight``) or ``"pim"``
            (``tap_blocks``, ``num_selects``, ``fpn_size``, ``lambda_b/s/n/c``); head arguments
            are passed as keyword arguments (see :mod:`tavt_kit.models.heads`).
        scorer: ``"tavt"`` or ``"cls"`` (see :mod:`tavt_kit.models.token_drop`).
        fuse: merge dropped tokens into one extra token (EViT).
        reducer: ``"drop"`` or ``"merge"`` (ToMe token merging, :mod:`tavt_kit.models.token_merge`;
            timm ViTs only); ``prop_attn``: ToMe's proportional attention after a merge.
        pretrained: path to weights (fgvc-kit/timm ``.safetensors``, ``.pth``/``.bin``
            state dicts, seeds' ViT-pytorch ``.bin``, Google ``.npz``), such a file already read
            (a :class:`~tavt_kit.models.convert.WeightFile`), or ``True`` for timm's hub weights.
            Position embeddings are resampled to ``img_size``; a classifier of another class count
            is re-initialised.
        class_names: stored in the spec (and checkpoints).
        **timm_kwargs: passed to ``timm.create_model`` (``depth``, ``drop_path_rate``, ...).
    """
    import timm
    from timm.models.vision_transformer import VisionTransformer

    from .heads import attach_head, check_head

    head_args = check_head(head, timm_kwargs)
    # a file already read (load_checkpoint's WeightFile) is loaded as it is, not read again; named by its path
    where = getattr(pretrained, "path", pretrained)
    entry = BACKBONES.get(name.lower()) if isinstance(name, str) else None
    if entry is not None and head != "linear":
        raise ConfigError(f"head '{head}' is not available on {name} yet; ViTAE backbones take head='linear'")
    if entry is not None and reducer != "drop":
        raise ConfigError(f"reducer {reducer!r} is not available on {name}; ViTAE backbones take reducer='drop'")
    if entry is not None and pretrained is True:
        raise ConfigError(f"{name}: no hub weights are known for this backbone; pass pretrained=PATH to an "
                          "official checkpoint")
    if entry is not None:
        model = entry.build(name, img_size=img_size, num_classes=num_classes, scorer=scorer, fuse=fuse,
                            **timm_kwargs)
        model.backbone_name = name
        source_kind = None
        if pretrained is not None and pretrained is not True and pretrained is not False:
            source_kind = load_pretrained_weights(model, pretrained)
        model.spec = build_spec(model, name, dict(timm_kwargs), head, head_args, class_names,
                                str(where) if source_kind else None, source_kind)
        return model
    base, kwargs = resolve_name(name)
    kwargs.update(timm_kwargs)
    if img_size is not None:
        size = _pair(img_size)
        if min(size) < 1:
            raise ImageSizeError(f"img_size must be positive, got {img_size!r}")
        check_memory(base, img_size, kwargs)
        kwargs["img_size"] = img_size
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ConfigError(f"num_classes must be a non-negative integer, got {num_classes!r}")
        kwargs["num_classes"] = num_classes
    if class_names is not None and num_classes is None and "num_classes" not in kwargs:
        kwargs["num_classes"] = len(class_names)
    try:
        model = timm.create_model(base, pretrained=pretrained is True, **kwargs)
    except TypeError as e:
        raise ConfigError(f"{name}: invalid model argument ({e})") from None
    except (AssertionError, ValueError) as e:
        raise ConfigError(f"{name}: cannot build with {kwargs} ({e})") from None
    if not isinstance(model, VisionTransformer):
        raise UnknownModelError(f"{name} is a {type(model).__name__}, not a timm VisionTransformer; "
                                "patch drop supports the ViT family (vit_*, deit_*)")
    check_image_size(model)
    source_kind, pending = None, {}
    if pretrained is not None and pretrained is not True and pretrained is not False:
        source_kind, pending = _load_weights(model, pretrained, head=head)
    patch(model, scorer=scorer, fuse=fuse, reducer=reducer, prop_attn=prop_attn)
    head_args = attach_head(model, head, head_args)
    if pending:
        _load_head_state(model, pending, str(where))
    source = str(where) if source_kind else ("timm-hub" if pretrained is True else None)
    model.spec = build_spec(model, name, {k: v for k, v in kwargs.items()}, head, head_args, class_names,
                            source, source_kind)
    return model


#: ViT sizes by (width, depth, heads): the names of the field (ViT-Ti/S/B/L/H)
_VIT_SIZES = {(192, 12, 3): "Ti", (384, 12, 6): "S", (768, 12, 12): "B", (1024, 24, 16): "L", (1280, 32, 16): "H"}


def describe_backbone(spec: Dict[str, Any]) -> str:
    """The backbone of a spec as the field names it: its registered name, or, for a ViT whose arguments
    override the name it was built from (a converted Hugging Face, ONNX or ``.npz`` checkpoint), its size and
    patch (``ViT-S/14``, else ``ViT 12x384/14``)."""
    backbone = spec.get("backbone") or {}
    name, kw = str(backbone.get("name", "?")), backbone.get("kwargs") or {}
    if not name.startswith(("vit_", "deit_")) or not {"embed_dim", "depth"} <= set(kw):
        return name
    width, depth, patch = int(kw["embed_dim"]), int(kw["depth"]), kw.get("patch_size")
    size = _VIT_SIZES.get((width, depth, int(kw.get("num_heads", 0) or 0)))
    label = f"ViT-{size}" if size else f"ViT {depth}x{width}"
    return label + (f"/{patch}" if patch else "")


def spec_of(model: nn.Module) -> Dict[str, Any]:
    """The model's spec, with its current scorer and fuse setting."""
    spec = getattr(model, "spec", None)
    if spec is None:
        raise ConfigError("this model has no fgvc-kit spec; build it with create_model() or patch()")
    spec = copy.deepcopy(spec)
    spec["token_drop"] = _token_drop_spec(model)
    return spec


def patch_model(model: nn.Module, *, scorer: str = "tavt", fuse: bool = False, schedule=None,
                name: Optional[str] = None, class_names: Optional[Sequence[str]] = None,
                reducer: str = "drop", prop_attn: bool = True) -> nn.Module:
    """``tavt_kit.patch``: make a timm ViT the user built or trained take token schedules.

    The weights stay; the model gets a spec (timm name from its
    ``pretrained_cfg`` or ``name``, shapes read off its tensors) so that
    :func:`tavt_kit.save_checkpoint` can write it and
    :func:`tavt_kit.load_checkpoint` rebuild it.
    """
    import timm

    from .convert import infer_vit_args

    patch(model, scorer=scorer, fuse=fuse, schedule=schedule, reducer=reducer, prop_attn=prop_attn)
    arch = name or (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
    shapes = {k: v for k, v in model.state_dict().items()}
    base, kwargs = infer_vit_args(shapes, num_heads=model.blocks[0].attn.num_heads, path=type(model).__name__)
    if arch is not None and not timm.is_model(arch):
        raise UnknownModelError(f"patch(): {arch!r} is not a timm model name; pass name=")
    kwargs["global_pool"] = model.global_pool
    if getattr(model, "no_embed_class", False):
        kwargs["no_embed_class"] = True
    model.spec = build_spec(model, arch or base, kwargs, "linear", {}, class_names, "patched timm model", "timm")
    return model
