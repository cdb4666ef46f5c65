"""MAC rules of ViTAE's cells (fvcore's conventions; convolution branches at full grid size)."""
from __future__ import annotations

from typing import List, Tuple

from torch import nn

from ..macs import linear_macs, norm_macs
from .layers import NormalCell, ReductionCell, conv_out, padded_tokens


def _seq_conv_macs(seq: nn.Sequential, hw: Tuple[int, int]) -> int:
    """Convolutions and (eval) batch norms of a conv branch, following the spatial size through strides."""
    h, w = hw
    macs, chans = 0, None
    for m in seq:
        if isinstance(m, nn.Conv2d):
            h, w = conv_out(h, m), conv_out(w, m)
            macs += h * w * m.out_channels * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
            chans = m.out_channels
        elif isinstance(m, nn.BatchNorm2d):
            macs += 2 * h * w * chans
    return macs


def rc_rows(name: str, rc: ReductionCell) -> List[Tuple[str, str, int]]:
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
        rows += [(name, "attn_qkv", linear_macs(blk.kqv, T)),
                 # two feature maps (T*E*m each), the normaliser (T*m), k'^T v and q' (k'^T v) (T*E*m each)
                 (name, "attn_matmul", 4 * T * E * m + T * m),
                 (name, "attn_proj", linear_macs(blk.proj, T)),
                 (name, "mlp", linear_macs(blk.mlp[0], T) + linear_macs(blk.mlp[2], T))]
    else:
        a = blk.attn
        tokens, span = T, T  # tokens through qkv/proj, keys per query
        if rc.kind == "window":
            tokens, span = padded_tokens(rc.out_hw, rc.window_size), rc.window_size ** 2
        rows += [(name, "attn_qkv", linear_macs(a.qkv, tokens)), (name, "attn_matmul", 2 * tokens * span * a.out_dim),
                 (name, "attn_proj", linear_macs(a.proj, tokens)),
                 (name, "mlp", linear_macs(blk.mlp.fc1, T) + linear_macs(blk.mlp.fc2, T))]
    rows.append((name, "norm", norm_macs(blk.norm1, T * dim) + norm_macs(blk.norm2, T * rc.token_dim)))
    return rows


def nc_rows(name: str, cell: NormalCell, n: int, k: int) -> List[Tuple[str, str, int]]:
    """A normal cell entering with ``n`` tokens and keeping ``k`` (its conv branch always on the full grid)."""
    C = cell.norm1.normalized_shape[0]
    a = cell.attn
    if cell.window_size:
        tokens, span = padded_tokens(cell.hw, cell.window_size), cell.window_size ** 2
    else:
        tokens, span = n, n
    return [(name, "attn_qkv", linear_macs(a.qkv, tokens)), (name, "attn_matmul", 2 * tokens * span * C),
            (name, "attn_proj", linear_macs(a.proj, tokens)),
            (name, "mlp", linear_macs(cell.mlp.fc1, k) + linear_macs(cell.mlp.fc2, k)),
            (name, "norm", norm_macs(cell.norm1, n * C) + norm_macs(cell.norm2, k * C)),
            (name, "conv", _seq_conv_macs(cell.PCM, cell.hw))]
