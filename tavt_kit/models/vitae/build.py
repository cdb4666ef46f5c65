"""Building a ViTAE variant from its name and arguments, with the image-size and stage checks."""
from __future__ import annotations

import math
import numbers
from typing import Optional, Tuple


from ...errors import ConfigError, ImageSizeError
from .model import ViTAE
from .variants import SCALAR_ARGS, STAGE_ARGS, VARIANTS, canonical_name


# ------------------------------------------------------------ build and load
def _per_stage(name: str, key: str, value, stages: int) -> tuple:
    if isinstance(value, (list, tuple)):
        if len(value) != stages:
            raise ConfigError(f"{name}: {key} needs one value per stage ({stages}), got {len(value)}")
        vals = tuple(value)
    else:
        vals = (value,) * stages
    for v in vals:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
            raise ConfigError(f"{name}: {key} must hold non-negative integers, got {value!r}")
    return tuple(int(v) for v in vals)


def check_vitae_image_size(name: str, img_size, stride: int) -> Tuple[int, int]:
    if img_size is None:
        img_size = 224
    if isinstance(img_size, (tuple, list)):
        if len(img_size) != 2:
            raise ImageSizeError(f"img_size must be an int or (height, width), got {img_size!r}")
        size = (img_size[0], img_size[1])
    else:
        size = (img_size, img_size)
    for s in size:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s <= 0:
            raise ImageSizeError(f"img_size must be positive integers, got {img_size!r}")
    h, w = int(size[0]), int(size[1])
    if h != w:
        raise ImageSizeError(f"{name} needs square images (its cells fold tokens into a square grid, as in the "
                             f"official code), got {h}x{w}")
    if h < stride or h % stride:
        lo, hi = max(stride, h // stride * stride), (h // stride + 1) * stride
        raise ImageSizeError(f"img_size {h} is not a multiple of {stride}, the total downsampling of {name}'s "
                             f"reduction cells; use e.g. {lo} or {hi}")
    return h, w


def build_vitae(name: str, img_size=None, num_classes: Optional[int] = None, scorer: str = "tavt",
                fuse: bool = False, **kwargs) -> ViTAE:
    """``create_model`` entry point. Extra arguments: per-stage ``embed_dims``, ``token_dims``,
    ``NC_depth``, ``NC_heads``, ``RC_heads``, ``NC_group``, ``RC_group``; ``mlp_ratio``,
    ``window_size`` (ViTAEv2 normal cells; reduction cells keep the official 7), ``drop_rate``, ``attn_drop_rate``,
    ``drop_path_rate``, ``in_chans``, ``drop_stage`` (ViTAEv2: 2 or 3)."""
    canon = canonical_name(name)
    cfg = dict(VARIANTS[canon])
    unknown = set(kwargs) - set(STAGE_ARGS) - set(SCALAR_ARGS)
    if unknown:
        raise ConfigError(f"{name}: unknown argument(s) {', '.join(sorted(unknown))}; ViTAE takes "
                          f"{', '.join(STAGE_ARGS + SCALAR_ARGS)}")
    stages = len(cfg["downsample"])
    for key in STAGE_ARGS:
        if key in kwargs:
            cfg[key] = _per_stage(name, key, kwargs.pop(key), stages)
    if "mlp_ratio" in kwargs:
        ratio = kwargs.pop("mlp_ratio")
        if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or ratio <= 0:
            raise ConfigError(f"{name}: mlp_ratio must be a positive number, got {ratio!r}")
        cfg["mlp_ratio"] = float(ratio)
    if "window_size" in kwargs:
        ws = kwargs.pop("window_size")
        if cfg["version"] == 1:
            raise ConfigError(f"{name}: window_size applies to ViTAEv2 only")
        if isinstance(ws, bool) or not isinstance(ws, numbers.Integral) or ws < 1:
            raise ConfigError(f"{name}: window_size must be a positive integer, got {ws!r}")
        cfg["window_size"] = int(ws)
    if scorer == "cls":
        raise ConfigError(f"scorer 'cls' needs a class token; {canon} has none (use scorer='tavt')")
    if scorer != "tavt":
        raise ConfigError(f"unknown scorer {scorer!r}; ViTAE supports 'tavt'")
    if fuse:
        raise ConfigError(f"fuse=True is not supported for {canon}: a merged token has no grid position for the "
                          "convolution branch (use fuse=False)")
    if num_classes is None:
        num_classes = 1000
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 0:
        raise ConfigError(f"num_classes must be a non-negative integer, got {num_classes!r}")
    for s in range(stages):
        for key, heads in (("NC_heads", cfg["NC_heads"][s]), ("RC_heads", cfg["RC_heads"][s])):
            if heads < 1:
                raise ConfigError(f"{name}: {key}[{s}] must be >= 1")
        if cfg["token_dims"][s] % cfg["NC_heads"][s]:
            raise ConfigError(f"{name}: token_dims[{s}]={cfg['token_dims'][s]} is not divisible by "
                              f"NC_heads[{s}]={cfg['NC_heads'][s]}")
    size = check_vitae_image_size(canon, img_size, math.prod(cfg["downsample"]))
    try:
        return ViTAE(canon, cfg, size, int(num_classes), scorer, **kwargs)
    except ConfigError:
        raise
    except ValueError as e:  # e.g. channels not divisible by a group count
        raise ConfigError(f"{name}: cannot build with these arguments ({str(e).splitlines()[0][:200]})") from None


#: tensors some versions of the official window attention carry that the official models do not use
#: (relative position bias is off in every released ViTAEv2): a deterministic index buffer and an
#: untrained bias table
