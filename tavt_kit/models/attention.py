"""timm ``Attention.forward`` that also returns what token reducers and heads ask for.

One function, :func:`attention_with_info`, shared by patch drop (significance
scores), token merging (keys averaged over heads, proportional attention) and
the FGVC heads (MAWS, attention probabilities). With nothing asked it computes
what timm's ``Attention.forward`` computes, through the same kernel.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn


#: at most this many query rows make the ``tavt-sampled`` score (the class token and evenly spaced patch tokens)
SAMPLED_QUERIES = 32


def query_step(tokens):
    """The stride between the query rows of the ``tavt-sampled`` score (row 0, the class token, always counts).

    Integer arithmetic only, no ``max()``: on a traced token count it stays an expression in the exported graph,
    where a ``max()`` would freeze at the token count of the export (the token axis of a table part is dynamic).
    """
    return (tokens + SAMPLED_QUERIES - 1) // SAMPLED_QUERIES


def sampled_queries(tokens: int) -> int:
    """How many query rows the ``tavt-sampled`` score uses at ``tokens`` tokens (at most SAMPLED_QUERIES)."""
    return -(-tokens // query_step(tokens))


def _capturing() -> bool:
    """True while a graph is traced or exported (in-place tricks stay out of graphs)."""
    return (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()
            or torch.compiler.is_compiling())


def attention_with_info(attn: nn.Module, x: torch.Tensor, scorer: Optional[str], maws: bool = False,
                        probs: bool = False, bias: Optional[torch.Tensor] = None,
                        keys: bool = False) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """timm ``Attention.forward`` that also returns what a reducer or a head asked for.

    Args:
        scorer: ``"tavt"``/``"cls"`` to also return the drop significance (``info["drop"]``, B x N), or None.
        maws: FFVT's mutual attention weight per token, ``info["maws"]`` (B x N): (mean over heads of
            the token->class column of a softmax over the query axis) x (mean over heads of the
            class->token row of the usual softmax). Computed from the class query row and the
            class key column only (2 N x width MACs), so the layer keeps the fused kernel.
        probs: the attention probabilities ``info["probs"]`` and the logits ``info["logits"]``
            (B x H x N x N, detached; Mix-ViT's attention rollout). Forces explicit attention.
        bias: an additive bias on the attention logits per key (B x 1 x 1 x N): token merging's
            proportional attention, ``log(size)``; None = timm's attention exactly.
        keys: also return ``info["metric"]``, the keys (after ``k_norm``) averaged over heads
            (B x N x head_dim), token merging's similarity metric.
    """
    B, N, _ = x.shape
    H, hd = attn.num_heads, attn.head_dim
    gate = attn.gate(x).sigmoid() if getattr(attn, "gate", None) is not None else None
    q, k, v = attn.qkv(x).reshape(B, N, 3, H, hd).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    info: Dict[str, torch.Tensor] = {}
    if keys:
        info["metric"] = k.mean(dim=1)
    if probs or scorer == "tavt" or not attn.fused_attn:
        logits = (q * attn.scale) @ k.transpose(-2, -1)
        if bias is not None:
            logits = logits + bias
        if probs or logits.requires_grad or _capturing():
            a = logits.softmax(dim=-1)
        else:
            # in place: the (B, H, N, N) matrix is the memory traffic that makes this path slower
            # than the fused kernel; a second buffer of that size costs ~30 % more at 785 tokens
            a = torch.softmax(logits, dim=-1, out=logits)
        if probs:
            info["logits"], info["probs"] = logits.detach(), a.detach()
        if scorer == "tavt":
            info["drop"] = a.sum(dim=(1, 2))
        out = attn.attn_drop(a) @ v
    else:
        dropout_p = attn.attn_drop.p if attn.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p)
    if scorer == "tavt-sampled":
        # TAVT's significance from evenly spaced queries: the column sums of those rows' attention, ranked as
        # TAVT ranks the whole matrix's. The layer keeps the fused kernel; the score costs at most
        # SAMPLED_QUERIES x N x width MACs instead of N x N x width.
        rows = (q[:, :, ::query_step(N)] * attn.scale) @ k.transpose(-2, -1)
        if bias is not None:
            rows = rows + bias
        info["drop"] = rows.softmax(dim=-1).sum(dim=(1, 2))
    if scorer == "cls" or maws:
        row = (q[:, :, :1] * attn.scale) @ k.transpose(-2, -1)
        if bias is not None:
            row = row + bias
        # [:, 0], not squeeze(1): the exporter cannot prove the size 1 where the tokens are a dynamic axis and
        # writes an ONNX If, which OpenVINO's CPU plugin refuses (NNCF's int8 statistics of a latency table part)
        row = row.softmax(dim=-1).mean(dim=1)[:, 0]  # B, N
        if scorer == "cls":
            info["drop"] = row
        if maws:
            col = ((q * attn.scale) @ k[:, :, :1].transpose(-2, -1)).softmax(dim=-2).mean(dim=1)[..., 0]
            info["maws"] = row * col
    out = out.transpose(1, 2).reshape(B, N, H * hd)
    out = attn.norm(out)
    if gate is not None:
        out = out * gate
    out = attn.proj_drop(attn.proj(out))
    return out, info
