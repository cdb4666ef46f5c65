"""ViTAE and ViTAEv2 backbones with patch drop, in the official checkpoint layout.

The models are re-statements of the official ViTAE-Transformer image
classification code (``ViTAE_ViT_basic`` / ``ViTAEv2_basic``): the same
modules under the same names, so an official checkpoint
(``state_dict`` or ``state_dict_ema``, with or without ``module.``) loads
strictly and gives the official outputs. Names (case-insensitive):

* ViTAE v1: ``ViTAE_basic_Tiny``, ``ViTAE_basic_6M``, ``ViTAE_basic_13M``,
  ``ViTAE_basic_Small`` (aliases ``vitae_t``, ``vitae_6m``, ``vitae_13m``,
  ``vitae_s``). Three reduction cells (downsampling 4, 2, 2) then all normal
  cells on the 1/16 grid; mean-pooled head, no class token.
* ViTAEv2: ``ViTAEv2_S``, ``ViTAEv2_48M``, ``ViTAEv2_B``. Four stages
  (downsampling 4, 2, 2, 2); stages 0-1 use window attention (7x7 windows, no
  shift), stages 2-3 global attention.

What patch drop changes (nothing, under the full schedule: every cell then runs
the official computation):

* The schedule covers the normal cells of one *drop stage*: ViTAE v1's only
  stage with normal cells (``depth`` = all normal cells, grid = 1/16 of the
  image), ViTAEv2's first global-attention stage 2 by default (``depth`` = its
  normal cells, grid = 1/16 of the image); ``drop_stage=3`` selects ViTAEv2's
  last stage instead (grid 1/32). Window-attention stages never drop: their
  windows partition the whole grid. Such requests are refused.
* In a normal cell of the drop stage, attention (``norm1``, ``attn``) runs on
  the tokens still kept; the convolution branch (``PCM``, three grouped 3x3
  convolutions) needs the whole grid, so it runs on the full grid with every
  dropped position holding that token's last state, and the kept positions
  of its output are added to the kept tokens.
* A cell whose count is below its input count scores tokens with ``tavt``
  (attention probabilities summed over heads and queries: the attention each
  token receives, computed explicitly) and keeps the top-k *after* the
  attention and convolution residuals, *before* the MLP (TAVT's place); the
  MLP (``norm2``, ``mlp``) then runs on the kept tokens only. Kept tokens stay
  in grid order. The state a dropped token has at that point is its last state.
* After the drop stage, a later reduction cell (ViTAEv2 with ``drop_stage=2``)
  convolves the restored grid (kept tokens' final states, dropped tokens' last
  states). The mean-pooled head averages the tokens of the last stage that
  survive (all of them unless the last stage is the drop stage), as the timm
  ViT path averages kept tokens; ``forward_features(x, restore=True)`` also
  returns the restored grid.

There is no class token, so the ``cls`` scorer is refused; ``fuse`` (EViT's
merged token) is refused too, as a merged token has no grid position for the
convolution branch. Every image of a batch keeps the same number of tokens.
"""
from __future__ import annotations

import logging
import math
import numbers
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, ConfigError, ImageSizeError, ScheduleError
from .factory import BackboneEntry, register_backbone
from ..schedules.schedule import TokenSchedule
from .token_drop import TokenState, select_tokens

_log = logging.getLogger(__name__)

# ------------------------------------------------------------------- variants
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
_STAGE_ARGS = ("embed_dims", "token_dims", "NC_depth", "NC_heads", "RC_heads", "NC_group", "RC_group")
_SCALAR_ARGS = ("mlp_ratio", "window_size", "drop_rate", "attn_drop_rate", "drop_path_rate", "in_chans",
                "drop_stage")

NC_NORM_EPS = 1e-6  # normal cells: partial(nn.LayerNorm, eps=1e-6); reduction cells use the default 1e-5


def canonical_name(name: str) -> str:
    try:
        return _CANONICAL[name.lower()]
    except (KeyError, AttributeError):
        raise ConfigError(f"unknown ViTAE model {name!r}; expected one of {', '.join(VARIANTS)}") from None


# ---------------------------------------------------------------- primitives
def _conv_out(size: int, conv: nn.Conv2d) -> int:
    k, s, p, d = conv.kernel_size[0], conv.stride[0], conv.padding[0], conv.dilation[0]
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def to_image(tokens: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
    """(B, h*w, C) row-major tokens -> (B, C, h, w), the official ``view(b, h, w, c).permute(0, 3, 1, 2)``."""
    B, N, C = tokens.shape
    return tokens.transpose(1, 2).reshape(B, C, hw[0], hw[1])


def to_tokens(image: torch.Tensor) -> torch.Tensor:
    return image.flatten(2).transpose(1, 2)


class Mlp(nn.Module):
    """fc1 -> GELU -> dropout -> fc2 -> dropout (keys ``fc1``, ``fc2``)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def _softmax_attention(q, k, v, scale: float, attn_drop: nn.Dropout, fused: bool, want_scores: bool):
    """Multi-head attention; returns (out (B, H, N, hd), scores (B, N) or None).

    The scores (``tavt``: probabilities summed over heads and queries) need the
    whole matrix, so that path is explicit; otherwise the fused kernel may run.
    """
    if fused and not want_scores:
        p = attn_drop.p if attn_drop.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, dropout_p=p, scale=scale), None
    a = ((q @ k.transpose(-2, -1)) * scale).softmax(dim=-1)
    scores = a.sum(dim=(1, 2)) if want_scores else None
    return attn_drop(a) @ v, scores


class GlobalAttention(nn.Module):
    """Multi-head self-attention of a normal cell (keys ``qkv``, ``proj``)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.fused_attn = True

    def forward(self, x: torch.Tensor, want_scores: bool = False):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        out, scores = _softmax_attention(q, k, v, self.scale, self.attn_drop, self.fused_attn, want_scores)
        out = self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, N, C)))
        return (out, scores) if want_scores else out


class WindowAttention(nn.Module):
    """ViTAEv2's window attention without shift or relative position bias (keys ``qkv``, ``proj``).

    ``in_dim`` may differ from ``out_dim`` (the reduction cell's block maps the
    pyramid features to the stage width).
    """

    def __init__(self, in_dim: int, out_dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.out_dim = out_dim
        self.scale = (out_dim // num_heads) ** -0.5
        self.qkv = nn.Linear(in_dim, out_dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(out_dim, out_dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.fused_attn = True

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        B_, N, _ = windows.shape
        q, k, v = self.qkv(windows).reshape(B_, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        out, _ = _softmax_attention(q, k, v, self.scale, self.attn_drop, self.fused_attn, False)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(B_, N, self.out_dim)))


def window_attend(attn: WindowAttention, x: torch.Tensor, hw: Tuple[int, int], ws: int) -> torch.Tensor:
    """Attention inside non-overlapping ``ws`` x ``ws`` windows over a (B, h*w, C) grid.

    As in the official code the grid is zero-padded to a multiple of ``ws``
    (split evenly, the extra row/column at the bottom/right) and the padding
    takes part in attention unmasked; the output is cropped back.
    """
    B, _, C = x.shape
    H, W = hw
    x = x.reshape(B, H, W, C)
    ph, pw = (ws - H % ws) % ws, (ws - W % ws) % ws
    top, left = ph // 2, pw // 2
    if ph or pw:
        x = F.pad(x, (0, 0, left, pw - left, top, ph - top))
    Hp, Wp = H + ph, W + pw
    win = x.reshape(B, Hp // ws, ws, Wp // ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, C)
    out = attn(win)
    Co = out.shape[-1]
    out = out.reshape(B, Hp // ws, Wp // ws, ws, ws, Co).permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, Co)
    return out[:, top:top + H, left:left + W].reshape(B, H * W, Co)


def padded_tokens(hw: Tuple[int, int], ws: int) -> int:
    return (-(-hw[0] // ws) * ws) * (-(-hw[1] // ws) * ws)


# ----------------------------------------------------------- reduction cells
class PRM(nn.Module):
    """Pyramid reduction: one strided dilated convolution per dilation, concatenated (dilation-major)."""

    def __init__(self, in_chans: int, embed_dim: int, kernel_size: int, stride: int, dilations: Sequence[int]):
        super().__init__()
        self.convs = nn.ModuleList()
        for d in dilations:
            # the official padding; every dilation then gives the same output size
            pad = math.ceil(((kernel_size - 1) * d + 1 - stride) / 2)
            self.convs.append(nn.Sequential(nn.Conv2d(in_chans, embed_dim, kernel_size, stride, pad, dilation=d),
                                            nn.GELU()))
        self.out_chans = embed_dim * len(dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return to_tokens(torch.cat([conv(x) for conv in self.convs], dim=1))


def _rc_conv_branch(version: int, in_chans: int, embed: int, out: int, downsample: int, group: int) -> nn.Sequential:
    strides, r = [], downsample // 2
    for _ in range(3):
        strides.append(2 if r > 0 else 1)
        r //= 2
    if r:
        raise ConfigError(f"a reduction cell downsamples by at most 8, got {downsample}")
    c = [nn.Conv2d(in_chans, embed, 3, strides[0], 1, groups=group),
         nn.Conv2d(embed, embed, 3, strides[1], 1, groups=group),
         nn.Conv2d(embed, out, 3, strides[2], 1, groups=group)]
    if version == 1:  # ViTAE: conv SiLU conv BN SiLU conv SiLU
        return nn.Sequential(c[0], nn.SiLU(inplace=True), c[1], nn.BatchNorm2d(embed), nn.SiLU(inplace=True),
                             c[2], nn.SiLU(inplace=True))
    # ViTAEv2: conv BN SiLU conv BN SiLU conv
    return nn.Sequential(c[0], nn.BatchNorm2d(embed), nn.SiLU(inplace=True), c[1], nn.BatchNorm2d(embed),
                         nn.SiLU(inplace=True), c[2])


class TokenPerformer(nn.Module):
    """ViTAE v1's Performer token attention in reduction cells (T2T-ViT's ``Token_performer``, one head).

    ``w`` holds orthogonal random features; the official module keeps them as
    an ``nn.Parameter`` with ``requires_grad=False``, so checkpoints carry them
    and they are part of the layout (and must be loaded, not redrawn).
    """

    def __init__(self, dim: int, out_dim: int, kernel_ratio: float = 0.5, dp1: float = 0.1, dp2: float = 0.1):
        super().__init__()
        self.emb = out_dim
        self.kqv = nn.Linear(dim, 3 * out_dim)
        self.dp = nn.Dropout(dp1)
        self.proj = nn.Linear(out_dim, out_dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(out_dim)
        self.epsilon = 1e-8
        self.mlp = nn.Sequential(nn.Linear(out_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim), nn.Dropout(dp2))
        self.m = int(out_dim * kernel_ratio)
        w = nn.init.orthogonal_(torch.empty(self.m, out_dim)) * math.sqrt(self.m)
        self.w = nn.Parameter(w, requires_grad=False)
        self.drop_path = nn.Identity()

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        # positive random features of the softmax kernel: exp(w.x - |x|^2 / 2) / sqrt(m)
        xd = (x * x).sum(dim=-1, keepdim=True) / 2
        wtx = torch.einsum("bti,mi->btm", x.float(), self.w)
        return torch.exp(wtx - xd) / math.sqrt(self.m)

    def attn(self, x: torch.Tensor) -> torch.Tensor:
        k, q, v = torch.split(self.kqv(x), self.emb, dim=-1)
        kp, qp = self._features(k), self._features(q)
        D = torch.einsum("bti,bi->bt", qp, kp.sum(dim=1)).unsqueeze(dim=2)
        kptv = torch.einsum("bin,bim->bnm", v.float(), kp)
        y = torch.einsum("bti,bni->btn", qp, kptv) / (D + self.epsilon)
        return v + self.dp(self.proj(y))  # v is the skip connection: the width changes here

    def forward(self, x):
        x = self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _TokenTransformerAttention(nn.Module):
    def __init__(self, dim: int, out_dim: int, num_heads: int, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.out_dim = out_dim
        self.scale = (out_dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, out_dim * 3, bias=False)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(out_dim, out_dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.fused_attn = True

    def forward(self, x):
        B, N, _ = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        out, _ = _softmax_attention(q, k, v, self.scale, self.attn_drop, self.fused_attn, False)
        out = self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, N, self.out_dim)))
        return v.transpose(1, 2).reshape(B, N, self.out_dim) + out  # v is the skip connection


class TokenTransformer(nn.Module):
    """ViTAEv2's global token attention in reduction cells (T2T-ViT's ``Token_transformer``)."""

    def __init__(self, dim: int, out_dim: int, num_heads: int, mlp_ratio: float = 1.0, drop: float = 0.0,
                 attn_drop: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _TokenTransformerAttention(dim, out_dim, num_heads, attn_drop, drop)
        self.drop_path = nn.Identity()
        self.norm2 = nn.LayerNorm(out_dim)
        self.mlp = Mlp(out_dim, int(out_dim * mlp_ratio), drop)


class WindowBlock(nn.Module):
    """ViTAEv2's window token attention in reduction cells (keys ``norm1``, ``attn``, ``norm2``, ``mlp``)."""

    def __init__(self, dim: int, out_dim: int, num_heads: int, mlp_ratio: float = 1.0, drop: float = 0.0,
                 attn_drop: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, out_dim, num_heads, True, attn_drop, drop)
        self.drop_path = nn.Identity()
        self.norm2 = nn.LayerNorm(out_dim)
        self.mlp = Mlp(out_dim, int(out_dim * mlp_ratio), drop)


class ReductionCell(nn.Module):
    """Downsampling cell: pyramid convolutions (``PRM``) -> token attention, plus a conv branch (``PCM``).

    ``performer_less`` (ViTAE v1's last reduction) is the pyramid alone.
    """

    def __init__(self, version: int, kind: str, in_chans: int, embed_dim: int, token_dim: int, downsample: int,
                 kernel_size: int, dilations: Sequence[int], num_heads: int, group: int, in_hw: Tuple[int, int],
                 window_size: int = 7, drop: float = 0.0, attn_drop: float = 0.0):
        super().__init__()
        self.kind = kind
        self.in_hw = tuple(in_hw)
        self.out_hw = (in_hw[0] // downsample, in_hw[1] // downsample)
        self.window_size = window_size  # the official reduction cell always uses its default of 7
        self.token_dim = token_dim
        self.PCM = _rc_conv_branch(version, in_chans, embed_dim, token_dim, downsample, group)
        self.PRM = PRM(in_chans, embed_dim, kernel_size, downsample, dilations)
        dim = self.PRM.out_chans
        if kind == "performer":
            self.attn = TokenPerformer(dim, token_dim)
        elif kind == "performer_less":
            self.attn = None
            self.PCM = None
            if dim != token_dim:
                raise ConfigError(f"a pyramid-only reduction cell needs {len(dilations)} x embed_dims = token_dims, "
                                  f"got {dim} != {token_dim}")
        elif kind == "transformer":
            self.attn = TokenTransformer(dim, token_dim, num_heads, 1.0, drop, attn_drop)
        elif kind == "window":
            self.attn = WindowBlock(dim, token_dim, num_heads, 1.0, drop, attn_drop)
        else:
            raise ConfigError(f"unknown reduction cell type {kind!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image (B, C, H, W) or row-major tokens (B, H*W, C) -> tokens (B, h*w, token_dim)."""
        if x.dim() == 3:
            x = to_image(x, self.in_hw)
        pyramid = self.PRM(x)
        if self.attn is None:
            return pyramid
        conv = to_tokens(self.PCM(x))
        blk = self.attn
        if self.kind == "performer":
            y = blk.attn(blk.norm1(pyramid)) + conv
        elif self.kind == "transformer":
            y = blk.attn(blk.norm1(pyramid)) + blk.drop_path(conv)
        else:
            y = window_attend(blk.attn, blk.norm1(pyramid), self.out_hw, self.window_size) + blk.drop_path(conv)
        return y + blk.drop_path(blk.mlp(blk.norm2(y)))


# --------------------------------------------------------------- normal cell
class DropPath(nn.Module):
    """Stochastic depth per sample (as timm's ``DropPath``)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


def _nc_conv_branch(version: int, dim: int, hidden: int, group: int) -> nn.Sequential:
    layers = [nn.Conv2d(dim, hidden, 3, 1, 1, 1, group), nn.BatchNorm2d(hidden), nn.SiLU(inplace=True),
              nn.Conv2d(hidden, dim, 3, 1, 1, 1, group), nn.BatchNorm2d(dim), nn.SiLU(inplace=True),
              nn.Conv2d(dim, dim, 3, 1, 1, 1, group)]
    if version == 1:  # ViTAE v1 ends the branch with a SiLU, ViTAEv2 does not
        layers.append(nn.SiLU(inplace=True))
    return nn.Sequential(*layers)


class GridState(TokenState):
    """:class:`TokenState` that keeps one running full grid instead of a drop history.

    The convolution branch needs the whole grid in every cell after a drop, so
    the grid (dropped tokens frozen at their last state) is kept up to date
    with one scatter per cell rather than rebuilt from the history.
    """

    def __init__(self, num_patches: int):
        super().__init__(0, num_patches, track=True)
        self._grid: Optional[torch.Tensor] = None

    def record_drop(self, patches: torch.Tensor, keep: torch.Tensor) -> None:
        self._grid = self.restore(patches)  # the tokens about to go keep this state from now on
        self.positions = keep if self.positions is None else self.positions.gather(1, keep)

    def restore(self, patches: torch.Tensor) -> torch.Tensor:
        if self.positions is None:
            return patches
        idx = self.positions.unsqueeze(-1).expand(-1, -1, patches.shape[-1])
        return self._grid.scatter(1, idx, patches)

    def at_kept(self, grid_tokens: torch.Tensor) -> torch.Tensor:
        """The kept positions of a full-grid tensor (B, N, C), in the kept tokens' order."""
        if self.positions is None:
            return grid_tokens
        return grid_tokens.gather(1, self.positions.unsqueeze(-1).expand(-1, -1, grid_tokens.shape[-1]))


class NormalCell(nn.Module):
    """Attention (global or windowed) and a parallel convolution branch, then an MLP."""

    def __init__(self, version: int, dim: int, num_heads: int, mlp_ratio: float, group: int, hw: Tuple[int, int],
                 window_size: int = 0, qkv_bias: bool = True, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0):
        super().__init__()
        self.hw = tuple(hw)
        self.window_size = window_size  # 0 = global attention
        self.norm1 = nn.LayerNorm(dim, eps=NC_NORM_EPS)
        if window_size:
            self.attn = WindowAttention(dim, dim, num_heads, qkv_bias, attn_drop, drop)
        else:
            self.attn = GlobalAttention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=NC_NORM_EPS)
        hidden = int(dim * mlp_ratio)
        self.mlp = Mlp(dim, hidden, drop)
        self.PCM = _nc_conv_branch(version, dim, hidden, group)

    def conv_branch(self, grid: torch.Tensor) -> torch.Tensor:
        return self.drop_path(to_tokens(self.PCM(to_image(grid, self.hw))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The official cell on the full grid (B, h*w, C)."""
        conv = self.conv_branch(x)
        if self.window_size:
            a = window_attend(self.attn, self.norm1(x), self.hw, self.window_size)
        else:
            a = self.attn(self.norm1(x))
        x = x + self.drop_path(a) + conv
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def forward_drop(self, x: torch.Tensor, state: GridState, keep: Optional[int]) -> torch.Tensor:
        """The cell on kept tokens (B, n, C); keeps the top ``keep`` by attention received when given."""
        conv = state.at_kept(self.conv_branch(state.restore(x)))
        if keep is None:
            x = x + self.drop_path(self.attn(self.norm1(x))) + conv
        else:
            a, scores = self.attn(self.norm1(x), want_scores=True)
            x = select_tokens(x + self.drop_path(a) + conv, scores, keep, state, fuse=False)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class BasicLayer(nn.Module):
    """One stage: a reduction cell ``RC`` then normal cells ``NC`` (the official ``BasicLayer``)."""

    def __init__(self, RC: ReductionCell, NC: Sequence[NormalCell]):
        super().__init__()
        self.RC = RC
        self.NC = nn.ModuleList(NC)

    @property
    def hw(self) -> Tuple[int, int]:
        return self.RC.out_hw


# ---------------------------------------------------------------------- model
class ViTAE(nn.Module):
    """A ViTAE / ViTAEv2 classifier that takes token schedules (see the module docstring)."""

    def __init__(self, name: str, cfg: Dict[str, Any], img_size: Tuple[int, int], num_classes: int = 1000,
                 scorer: str = "tavt", drop_stage: Optional[int] = None, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0, in_chans: int = 3):
        super().__init__()
        self.variant = name
        self.version = cfg["version"]
        self.img_size = tuple(img_size)
        self.num_classes = num_classes
        self.scorer = scorer
        self.fuse = False
        self._default_schedule: Optional[TokenSchedule] = None
        stages = len(cfg["downsample"])
        self.total_stride = math.prod(cfg["downsample"])
        nc_depth = list(cfg["NC_depth"])
        total = sum(nc_depth)
        dpr = [drop_path_rate * i / (total - 1) if total > 1 else 0.0 for i in range(max(1, total))]
        layers, hw, chans = [], self.img_size, in_chans
        for s in range(stages):
            rc = ReductionCell(self.version, cfg["rc_types"][s], chans, cfg["embed_dims"][s], cfg["token_dims"][s],
                               cfg["downsample"][s], cfg["kernel_size"][s], cfg["dilations"][s], cfg["RC_heads"][s],
                               cfg["RC_group"][s], hw, drop=drop_rate, attn_drop=attn_drop_rate)
            # the official stochastic-depth slice starts at the previous stage's depth (not the running sum)
            start = 0 if s == 0 else nc_depth[s - 1]
            rates = dpr[start:start + nc_depth[s]] + [dpr[-1]] * nc_depth[s]
            window = cfg["window_size"] if cfg["nc_types"][s] == "window" else 0
            cells = [NormalCell(self.version, cfg["token_dims"][s], cfg["NC_heads"][s], cfg["mlp_ratio"],
                                cfg["NC_group"][s], rc.out_hw, window, True, drop_rate, attn_drop_rate, rates[i])
                     for i in range(nc_depth[s])]
            layers.append(BasicLayer(rc, cells))
            hw, chans = rc.out_hw, cfg["token_dims"][s]
        self.layers = nn.ModuleList(layers)
        self.embed_dim = cfg["token_dims"][-1]
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.global_stages = tuple(s for s in range(stages) if cfg["nc_types"][s] != "window" and nc_depth[s] > 0)
        self.window_stages = tuple(s for s in range(stages) if cfg["nc_types"][s] == "window")
        if not self.global_stages:
            raise ConfigError(f"{name}: no stage has global-attention normal cells (NC_depth={nc_depth})")
        if drop_stage is None:
            drop_stage = self.global_stages[0]
        self.drop_stage = self._check_drop_stage(drop_stage, cfg)
        self.apply(self._init_weights)

    def _check_drop_stage(self, s, cfg) -> int:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or not 0 <= s < len(self.layers):
            raise ConfigError(f"{self.variant}: drop_stage must be a stage index in 0..{len(self.layers) - 1}, "
                              f"got {s!r}")
        s = int(s)
        if cfg["nc_types"][s] == "window":
            raise ConfigError(f"{self.variant}: stage {s} uses window attention, which needs every position; patch "
                              f"drop runs only in the global-attention stages {self._stages_text()}")
        if not len(self.layers[s].NC):
            raise ConfigError(f"{self.variant}: stage {s} has no normal cells to drop tokens in; use stage "
                              f"{self._stages_text()}")
        return s

    def _stages_text(self) -> str:
        return ", ".join(str(s) for s in self.global_stages) or "(none)"

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    # ------------------------------------------------------------ geometry
    @property
    def drop_layer(self) -> BasicLayer:
        return self.layers[self.drop_stage]

    @property
    def depth(self) -> int:
        """Cells the schedule covers: the normal cells of the drop stage."""
        return len(self.drop_layer.NC)

    @property
    def grid_size(self) -> Tuple[int, int]:
        """The token grid of the drop stage."""
        return self.drop_layer.hw

    @property
    def num_patches(self) -> int:
        h, w = self.grid_size
        return h * w

    def geometry(self) -> Dict[str, Any]:
        s = self.total_stride
        return {"img_size": list(self.img_size), "patch_size": [s, s], "depth": self.depth,
                "num_patches": self.num_patches, "num_prefix_tokens": 0, "embed_dim": self.embed_dim,
                "drop_stage": self.drop_stage, "grid_size": list(self.grid_size)}

    def set_fused_attn(self, enable: bool) -> None:
        """Use the fused attention kernel where no scores are needed (False: explicit, e.g. for fvcore)."""
        for m in self.modules():
            if hasattr(m, "fused_attn"):
                m.fused_attn = bool(enable)

    # ------------------------------------------------------------ schedules
    @property
    def schedule(self) -> Optional[TokenSchedule]:
        """The schedule used when a call passes no ``drop`` (``None`` = full model)."""
        return self._default_schedule

    @schedule.setter
    def schedule(self, value) -> None:
        self._default_schedule = None if value is None else self.make_schedule(value)

    def full_schedule(self) -> TokenSchedule:
        return TokenSchedule.full(self.depth, self.num_patches)

    def make_schedule(self, value) -> TokenSchedule:
        """Validate ``value`` (schedule, counts, drop-config path or dict) against the drop stage."""
        try:
            return TokenSchedule.coerce(value, self.depth, self.num_patches)
        except ScheduleError as e:
            if not self.window_stages:
                raise
            h, w = self.grid_size
            total = sum(len(layer.NC) for layer in self.layers)
            raise ScheduleError(f"{e}; {self.variant} drops patch tokens only in global-attention stage "
                                f"{self.drop_stage} ({self.depth} normal cells on its {h}x{w} grid), not in its "
                                f"window-attention stages ({total} cells in all)") from None

    def _counts(self, drop) -> Optional[Tuple[int, ...]]:
        if drop is None:
            return None if self._default_schedule is None else self._default_schedule.counts
        return self.make_schedule(drop).counts

    # -------------------------------------------------------------- forward
    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[-2:]) != self.img_size:
            got = "x".join(str(s) for s in x.shape[-2:]) if x.dim() == 4 else f"a {x.dim()}-d tensor"
            raise ImageSizeError(f"{self.variant} was built for {self.img_size[0]}x{self.img_size[1]} images, "
                                 f"got {got}; rebuild with img_size= to change it")

    def forward_tokens(self, x: torch.Tensor, drop=None) -> Tuple[torch.Tensor, Optional[GridState]]:
        """Run every stage; returns the last stage's tokens and the drop state when it dropped there."""
        self._check_input(x)
        counts = self._counts(drop)
        state = None
        for s, layer in enumerate(self.layers):
            x = layer.RC(x)
            if s == self.drop_stage and counts is not None and any(c < self.num_patches for c in counts):
                state = GridState(self.num_patches)
                n = self.num_patches
                for cell, k in zip(layer.NC, counts):
                    x = cell.forward_drop(x, state, k if k < n else None)
                    n = min(n, k)
                if s < len(self.layers) - 1:
                    x, state = state.restore(x), None  # the next reduction cell convolves the whole grid
            else:
                for cell in layer.NC:
                    x = cell(x)
        return x, state

    def forward_features(self, x: torch.Tensor, drop=None, restore: bool = False):
        """Tokens of the last stage (B, n, C): all of them, or the kept ones if that stage dropped.

        With ``restore=True`` also returns the last stage's full grid (B, h*w, C):
        kept tokens' final states, dropped tokens' last states. (The official
        ``forward_features`` returns the mean-pooled vector: ``forward_head(x, pre_logits=True)``.)
        """
        x, state = self.forward_tokens(x, drop)
        if not restore:
            return x
        return x, (x if state is None else state.restore(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=1)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor, drop=None) -> torch.Tensor:
        return self.forward_head(self.forward_features(x, drop))

    # ------------------------------------------------------------------ MACs
    def count_macs_rows(self, schedule: TokenSchedule) -> List[Tuple[str, str, int]]:
        """MACs per image, fvcore's conventions (one multiply-add = 1, LayerNorm 5 and eval BatchNorm 2 per
        element, nothing for softmax/activations/gathers); the convolution branches at full grid size."""
        counts = None if schedule is None or schedule.is_full else schedule.counts
        rows: List[Tuple[str, str, int]] = []
        for s, layer in enumerate(self.layers):
            rows += _rc_rows(f"layers.{s}.RC", layer.RC)
            N = layer.hw[0] * layer.hw[1]
            n = N
            for i, cell in enumerate(layer.NC):
                k = counts[i] if (counts is not None and s == self.drop_stage) else n
                rows += _nc_rows(f"layers.{s}.NC.{i}", cell, n, min(k, n))
                n = min(k, n)
        if isinstance(self.head, nn.Linear):
            rows.append(("head", "head", self.head.in_features * self.head.out_features))
        return rows


# ------------------------------------------------------------ MAC accounting
def _ln(numel: int) -> int:
    return 5 * numel


def _linear(lin: nn.Linear, tokens: int) -> int:
    return tokens * lin.in_features * lin.out_features


def _seq_conv_macs(seq: nn.Sequential, hw: Tuple[int, int]) -> int:
    """Convolutions and (eval) batch norms of a conv branch, following the spatial size through strides."""
    h, w = hw
    macs, chans = 0, None
    for m in seq:
        if isinstance(m, nn.Conv2d):
            h, w = _conv_out(h, m), _conv_out(w, m)
            macs += h * w * m.out_channels * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
            chans = m.out_channels
        elif isinstance(m, nn.BatchNorm2d):
            macs += 2 * h * w * chans
    return macs


def _rc_rows(name: str, rc: ReductionCell) -> List[Tuple[str, str, int]]:
    rows = []
    T = rc.out_hw[0] * rc.out_hw[1]
    conv = 0
    for seq in rc.PRM.convs:
        conv += _seq_conv_macs(seq, rc.in_hw)
    if rc.PCM is not None:
        conv += _seq_conv_macs(rc.PCM, rc.in_hw)
    rows.append((name, "conv", conv))
    blk = rc.attn
    if blk is None:
        return rows
    dim = rc.PRM.out_chans
    if rc.kind == "performer":
        E, m = blk.emb, blk.m
        rows += [(name, "attn_qkv", _linear(blk.kqv, T)),
                 # two feature maps (T*E*m each), the normaliser (T*m), k'^T v and q' (k'^T v) (T*E*m each)
                 (name, "attn_matmul", 4 * T * E * m + T * m),
                 (name, "attn_proj", _linear(blk.proj, T)),
                 (name, "mlp", _linear(blk.mlp[0], T) + _linear(blk.mlp[2], T))]
    else:
        a = blk.attn
        tokens, span = T, T  # tokens through qkv/proj, keys per query
        if rc.kind == "window":
            tokens, span = padded_tokens(rc.out_hw, rc.window_size), rc.window_size ** 2
        rows += [(name, "attn_qkv", _linear(a.qkv, tokens)), (name, "attn_matmul", 2 * tokens * span * a.out_dim),
                 (name, "attn_proj", _linear(a.proj, tokens)),
                 (name, "mlp", _linear(blk.mlp.fc1, T) + _linear(blk.mlp.fc2, T))]
    rows.append((name, "norm", _ln(T * dim) + _ln(T * rc.token_dim)))
    return rows


def _nc_rows(name: str, cell: NormalCell, n: int, k: int) -> List[Tuple[str, str, int]]:
    """A normal cell entering with ``n`` tokens and keeping ``k`` (its conv branch always on the full grid)."""
    C = cell.norm1.normalized_shape[0]
    N = cell.hw[0] * cell.hw[1]
    a = cell.attn
    if cell.window_size:
        tokens, span = padded_tokens(cell.hw, cell.window_size), cell.window_size ** 2
    else:
        tokens, span = n, n
    return [(name, "attn_qkv", _linear(a.qkv, tokens)), (name, "attn_matmul", 2 * tokens * span * C),
            (name, "attn_proj", _linear(a.proj, tokens)),
            (name, "mlp", _linear(cell.mlp.fc1, k) + _linear(cell.mlp.fc2, k)),
            (name, "norm", _ln(n * C) + _ln(k * C)),
            (name, "conv", _seq_conv_macs(cell.PCM, cell.hw))]


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
    unknown = set(kwargs) - set(_STAGE_ARGS) - set(_SCALAR_ARGS)
    if unknown:
        raise ConfigError(f"{name}: unknown argument(s) {', '.join(sorted(unknown))}; ViTAE takes "
                          f"{', '.join(_STAGE_ARGS + _SCALAR_ARGS)}")
    stages = len(cfg["downsample"])
    for key in _STAGE_ARGS:
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
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:4])}{' ...' if len(unexpected) > 4 else ''}")
        raise CheckpointError(f"{path}: does not match {model.variant} ({'; '.join(parts)})")
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


register_backbone(BackboneEntry(list(VARIANTS) + list(ALIASES), build_vitae, load_vitae_weights))
