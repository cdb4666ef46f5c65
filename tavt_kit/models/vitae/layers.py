"""ViTAE's layers: attention, reduction cells (pyramid + token attention) and normal cells (attention + convolution)."""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ..token_drop import TokenState, select_tokens
from .variants import NC_NORM_EPS


# ---------------------------------------------------------------- primitives
def conv_out(size: int, conv: nn.Conv2d) -> int:
    """Output length of a convolution along one axis."""
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
