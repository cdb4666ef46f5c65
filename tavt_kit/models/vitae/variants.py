"""The ViTAE / ViTAEv2 variant tables (official widths, depths, heads) and their names and aliases."""
from __future__ import annotations

from typing import Any, Dict


from ...errors import ConfigError


_V1 = dict(
    version=1, rc_types=("performer", "performer", "performer_less"), nc_types=("transformer",) * 3,
    downsample=(4, 2, 2), kernel_size=(7, 3, 3), dilations=((1, 2, 3, 4), (1, 2, 3), (1, 2)),
    RC_heads=(1, 1, 1), RC_group=(1, 1, 1), window_size=0,
)
_V2 = dict(
    version=2, rc_types=("window", "window", "transformer", "transformer"), nc_types=("window", "window",
                                                                                     "transformer", "transformer"),
    downsample=(4, 2, 2, 2), kernel_size=(7, 3, 3, 3), dilations=((1, 2, 3, 4), (1, 2, 3), (1, 2), (1, 2)),
    mlp_ratio=4.0, NC_group=(1, 32, 64, 128), RC_group=(1, 16, 32, 64), window_size=7,
)

#: official name -> architecture (hyper-parameters of ViTAE.py / ViTAEv2.py)
VARIANTS: Dict[str, Dict[str, Any]] = {
    "ViTAE_basic_Tiny": dict(_V1, embed_dims=(64, 64, 128), token_dims=(64, 64, 256), NC_depth=(0, 0, 7),
                             NC_heads=(1, 1, 4), mlp_ratio=2.0, NC_group=(1, 1, 64)),
    "ViTAE_basic_6M": dict(_V1, embed_dims=(64, 64, 128), token_dims=(64, 64, 256), NC_depth=(0, 0, 10),
                           NC_heads=(1, 1, 4), mlp_ratio=2.0, NC_group=(1, 1, 64)),
    "ViTAE_basic_13M": dict(_V1, embed_dims=(64, 64, 160), token_dims=(64, 64, 320), NC_depth=(0, 0, 11),
                            NC_heads=(1, 1, 5), mlp_ratio=2.0, NC_group=(1, 1, 64)),
    "ViTAE_basic_Small": dict(_V1, embed_dims=(64, 64, 192), token_dims=(96, 192, 384), NC_depth=(0, 0, 14),
                              NC_heads=(1, 1, 6), mlp_ratio=3.0, NC_group=(1, 1, 96)),
    "ViTAEv2_S": dict(_V2, embed_dims=(64, 64, 128, 256), token_dims=(64, 128, 256, 512), NC_depth=(2, 2, 8, 2),
                      NC_heads=(1, 2, 4, 8), RC_heads=(1, 1, 2, 4)),
    "ViTAEv2_48M": dict(_V2, embed_dims=(64, 64, 192, 384), token_dims=(96, 192, 384, 768), NC_depth=(2, 2, 11, 2),
                        NC_heads=(1, 2, 4, 8), RC_heads=(1, 1, 2, 4)),
    "ViTAEv2_B": dict(_V2, embed_dims=(96, 96, 256, 512), token_dims=(128, 256, 512, 1024), NC_depth=(2, 2, 12, 2),
                      NC_heads=(1, 4, 8, 16), RC_heads=(1, 1, 4, 8)),
}
ALIASES = {"vitae_t": "ViTAE_basic_Tiny", "vitae_tiny": "ViTAE_basic_Tiny", "vitae_6m": "ViTAE_basic_6M",
           "vitae_13m": "ViTAE_basic_13M", "vitae_s": "ViTAE_basic_Small", "vitae_small": "ViTAE_basic_Small",
           "vitaev2_small": "ViTAEv2_S", "vitaev2_base": "ViTAEv2_B"}
_CANONICAL = {**{n.lower(): n for n in VARIANTS}, **ALIASES}

#: per-stage architecture arguments a caller may override (official argument names)
STAGE_ARGS = ("embed_dims", "token_dims", "NC_depth", "NC_heads", "RC_heads", "NC_group", "RC_group")
SCALAR_ARGS = ("mlp_ratio", "window_size", "drop_rate", "attn_drop_rate", "drop_path_rate", "in_chans",
                "drop_stage")

NC_NORM_EPS = 1e-6  # normal cells: partial(nn.LayerNorm, eps=1e-6); reduction cells use the default 1e-5


def canonical_name(name: str) -> str:
    try:
        return _CANONICAL[name.lower()]
    except (KeyError, AttributeError):
        raise ConfigError(f"unknown ViTAE model {name!r}; expected one of {', '.join(VARIANTS)}") from None
