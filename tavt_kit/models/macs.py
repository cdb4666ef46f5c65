"""Analytic multiply-accumulate counts of a token-drop model under a schedule.

One multiply-add counts once (fvcore's convention). Layer norms count 5 per
element, also fvcore's convention, so that totals agree with
``fvcore.nn.FlopCountAnalysis`` run on the same module with explicit attention.
Softmax, GELU, residual adds, top-k and gathers are not counted (neither does
fvcore). Counts are per image. A merging block (token merging, ToMe) costs what
a dropping block at the same counts costs, plus part ``merge``: the bipartite
similarity ``a @ b^T`` over its ``N`` input tokens (``ceil(N/2) * floor(N/2) *
head_dim``) and the size weighting of the tokens (``N * width``), per bipartite
round; a block merging more than half of its tokens runs several rounds, and
weights the keys by size too before each later round (``N * head_dim``).
"""
from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from torch import nn

from ..schedules.schedule import TokenSchedule
from .attention import sampled_queries
from .token_merge import merge_rounds

_BLOCK_NAME = re.compile(r"^(blocks\.\d+|layers\.\d+\.NC\.\d+)$")

PARTS = ("patch_embed", "attn_qkv", "attn_matmul", "attn_proj", "mlp", "norm", "scoring", "conv", "head",
         "maws", "fpn", "combiner", "merge")


@dataclass
class MacCount:
    """MACs per (module, part); slice with :meth:`total`, :meth:`by_part`, :meth:`by_module`, :meth:`by_block`."""

    rows: List[Tuple[str, str, int]]
    schedule: Optional[TokenSchedule] = None
    tokens: List[int] = field(default_factory=list)  # tokens entering each block (prefix + patches [+ fused])

    def total(self, part: Optional[str] = None) -> int:
        return sum(m for _, p, m in self.rows if part is None or p == part)

    def by_part(self) -> Dict[str, int]:
        out = OrderedDict((p, 0) for p in PARTS)
        for _, p, m in self.rows:
            out[p] = out.get(p, 0) + m
        return {p: m for p, m in out.items() if m}

    def by_module(self) -> Dict[str, int]:
        out: Dict[str, int] = OrderedDict()
        for mod, _, m in self.rows:
            out[mod] = out.get(mod, 0) + m
        return dict(out)

    def by_block(self) -> List[int]:
        """MACs of each block a schedule covers (timm ``blocks.{i}``, ViTAE ``layers.{s}.NC.{i}``)."""
        mods = self.by_module()
        return [m for name, m in mods.items() if _BLOCK_NAME.match(name)]

    def __getitem__(self, key: str) -> int:
        if key in PARTS:
            return self.total(key)
        mods = self.by_module()
        if key in mods:
            return mods[key]
        raise KeyError(f"{key!r} is neither a part ({', '.join(PARTS)}) nor a module")

    @property
    def gmacs(self) -> float:
        return self.total() / 1e9

    def to_dict(self) -> dict:
        return {"total": self.total(), "by_part": self.by_part(), "by_block": self.by_block(),
                "schedule": list(self.schedule.counts) if self.schedule else None}

    def __str__(self) -> str:
        lines = [f"{'part':<12} {'GMACs':>10} {'share':>7}"]
        tot = max(self.total(), 1)
        for p, m in self.by_part().items():
            lines.append(f"{p:<12} {m / 1e9:>10.4f} {100 * m / tot:>6.2f}%")
        lines.append(f"{'total':<12} {self.total() / 1e9:>10.4f}")
        return "\n".join(lines)


def norm_macs(mod: Optional[nn.Module], numel: int) -> int:
    """A LayerNorm over ``numel`` elements, fvcore's rule: 5 MACs per element with affine parameters, 4 without."""
    if isinstance(mod, nn.Identity) or mod is None:
        return 0
    affine = getattr(mod, "weight", None) is not None
    return numel * (5 if affine else 4)


def linear_macs(mod: nn.Module, tokens: int) -> int:
    """A linear layer applied to ``tokens`` tokens."""
    return tokens * mod.in_features * mod.out_features


def _mlp(mlp: nn.Module, tokens: int) -> Tuple[int, int]:
    """(matmul MACs, norm MACs) of a timm Mlp / GluMlp / SwiGLU."""
    macs = 0
    for name in ("fc1", "fc1_g", "fc1_x", "fc2"):
        sub = getattr(mlp, name, None)
        if isinstance(sub, nn.Linear):
            macs += linear_macs(sub, tokens)
    norm_mod = getattr(mlp, "norm", None)
    norm = norm_macs(norm_mod, tokens * getattr(norm_mod, "normalized_shape", (0,))[0]) if norm_mod is not None else 0
    return macs, norm


def _head(model: nn.Module, tokens: int) -> Tuple[int, int]:
    C = model.embed_dim
    macs, norm = 0, 0
    pool = getattr(model, "attn_pool", None)
    if pool is not None:
        n = tokens if getattr(model, "pool_include_prefix", False) else tokens - model.num_prefix_tokens
        L = pool.latent.shape[1] if hasattr(pool, "latent") else 1
        macs += linear_macs(pool.q, L) + linear_macs(pool.kv, n) + linear_macs(pool.proj, L)
        macs += 2 * L * n * pool.q.out_features
        m, nm = _mlp(pool.mlp, L)
        macs += m
        norm += nm + norm_macs(pool.norm, L * C)
    norm += norm_macs(getattr(model, "fc_norm", None), C)
    for name in ("head", "head_dist"):
        sub = getattr(model, name, None)
        if isinstance(sub, nn.Linear):
            macs += linear_macs(sub, 1)
    return macs, norm


def _block_rows(model: nn.Module, name: str, blk: nn.Module, N: int, N_out: int, drop_scoring: int,
                extra: Tuple[Tuple[str, int], ...] = ()) -> List[Tuple[str, str, int]]:
    """Rows of one timm block entering with ``N`` tokens and leaving with ``N_out``."""
    C = model.embed_dim
    attn = blk.attn
    A = attn.num_heads * attn.head_dim
    norm = norm_macs(blk.norm1, N * C) + norm_macs(attn.q_norm, N * A) + norm_macs(attn.k_norm, N * A) + norm_macs(attn.norm, N * A)
    qkv = linear_macs(attn.qkv, N)
    if getattr(attn, "gate", None) is not None:
        qkv += linear_macs(attn.gate, N)
    rows = [(name, "attn_qkv", qkv), (name, "attn_matmul", 2 * N * N * A), (name, "attn_proj", linear_macs(attn.proj, N))]
    mlp, mlp_norm = _mlp(blk.mlp, N_out)
    norm += norm_macs(blk.norm2, N_out * C) + mlp_norm
    rows += [(name, "mlp", mlp), (name, "norm", norm)]
    if drop_scoring:
        rows.append((name, "scoring", drop_scoring))
    rows += [(name, part, m) for part, m in extra]
    return rows


def _pim_rows(model: nn.Module, pim: nn.Module) -> List[Tuple[str, str, int]]:
    """PIM's FPN, per-token classifiers and graph combiner (the selector's top-k is not counted, as in fvcore)."""
    S = model.num_prefix_tokens + int(model.patch_embed.num_patches)  # restored grids: every position
    rows: List[Tuple[str, str, int]] = []
    for t, (proj, cls) in enumerate(zip(pim.proj, pim.classifier)):
        macs = linear_macs(proj[0], S) + linear_macs(proj[2], S)
        conv_a, bn, conv_b = cls[0], cls[1], cls[3]
        macs += S * conv_a.in_channels * conv_a.out_channels + S * conv_b.in_channels * conv_b.out_channels
        macs += 2 * S * bn.num_features  # batch norm in eval: scale and shift (fvcore)
        rows.append((f"pim.fpn.{t}", "fpn", macs))
    comb = pim.combiner
    J = comb.param_pool0.out_features
    D = comb.conv1.in_channels
    macs = D * linear_macs(comb.param_pool0, 1)
    macs += J * D * (comb.conv_q1.out_channels + comb.conv_k1.out_channels + comb.conv1.out_channels)
    macs += D * J * J + 2 * D * J  # graph convolution (features x adjacency), batch norm
    macs += D * linear_macs(comb.param_pool1, 1) + linear_macs(comb.classifier, 1)
    rows.append(("pim.combiner", "combiner", macs))
    return rows


def count_macs(model: nn.Module, schedule=None) -> MacCount:
    """MACs per image of a token-drop ViT at ``schedule`` (default: the model's schedule, else full).

    The head's cost is included: FFVT's MAWS scoring (part ``maws``) and its last
    block on ``prefix + (L-1) * num_token`` tokens; PIM's FPN and per-token
    classifiers over the restored grids (``fpn``) and its combiner
    (``combiner``); Mix-ViT's branch runs in training only and costs nothing here.
    """
    if schedule is None:
        schedule = getattr(model, "schedule", None) or model.full_schedule()
    else:
        schedule = model.make_schedule(schedule)
    if hasattr(model, "count_macs_rows"):  # backbones other than timm ViTs count themselves
        rows = [r for r in model.count_macs_rows(schedule) if r[2]]
        return MacCount(rows, schedule, [])
    head_name = getattr(model, "head_name", "linear")
    rows: List[Tuple[str, str, int]] = []
    pe = model.patch_embed
    Np = int(pe.num_patches)
    conv = pe.proj
    rows.append(("patch_embed", "patch_embed",
                 Np * conv.out_channels * (conv.in_channels // conv.groups) * conv.kernel_size[0] * conv.kernel_size[1]))
    if not isinstance(getattr(pe, "norm", nn.Identity()), nn.Identity):
        rows.append(("patch_embed", "norm", norm_macs(pe.norm, Np * conv.out_channels)))
    P = model.num_prefix_tokens
    C = model.embed_dim
    rows.append(("norm_pre", "norm", norm_macs(getattr(model, "norm_pre", None), (P + Np) * C)))
    n, fused = Np, 0
    tokens_in = []
    depth = len(model.blocks)
    reducers = model.block_reducers(schedule) if hasattr(model, "block_reducers") else ("drop",) * depth
    for i, blk in enumerate(model.blocks):
        name = f"blocks.{i}"
        attn = blk.attn
        A = attn.num_heads * attn.head_dim
        N = P + n + fused
        if head_name == "ffvt" and i == depth - 1:  # FFVT's fusion block: prefix + selected tokens
            N = model.fgvc_head.fused_tokens(model)
            tokens_in.append(N)
            rows += _block_rows(model, name, blk, N, N, 0)
            n, fused = N - P, 0
            break
        tokens_in.append(N)
        k = schedule.counts[i]
        scoring = 0
        maws = 2 * N * A if head_name == "ffvt" else 0  # class query row + class key column
        if k < n and reducers[i] == "merge":
            merge, Nr = 0, N
            rounds = merge_rounds(n, k)
            for j, kr in enumerate(rounds):
                merge += ((Nr + 1) // 2) * (Nr // 2) * attn.head_dim + Nr * C
                merge += Nr * attn.head_dim if j + 1 < len(rounds) else 0
                Nr = P + kr
            n = k
            extra = (("maws", maws),) if maws else ()
            rows += _block_rows(model, name, blk, N, P + n, 0, extra + (("merge", merge),))
            continue
        if k < n:
            if model.scorer == "cls":
                scoring += N * A  # class query row against every key
                maws -= N * A if maws else 0  # MAWS reuses that row
            elif model.scorer == "tavt-sampled":
                scoring += sampled_queries(N) * N * A  # the sampled query rows against every key
            if model.fuse:
                scoring += n * C  # weighted sum of the dropped tokens
            n, fused = k, int(model.fuse)
        extra = (("maws", maws),) if maws else ()
        rows += _block_rows(model, name, blk, N, P + n + fused, scoring, extra)
    final_tokens = P + n
    if head_name == "pim":
        rows += _pim_rows(model, model.fgvc_head)
    else:
        rows.append(("norm", "norm", norm_macs(getattr(model, "norm", None), final_tokens * C)))
        head, head_norm = _head(model, final_tokens)
        rows += [("head", "head", head), ("head", "norm", head_norm)]
    rows = [r for r in rows if r[2]]
    return MacCount(rows, schedule, tokens_in)
