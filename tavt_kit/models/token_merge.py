"""Token merging (ToMe, Bolya et al. 2023) as the second token reducer beside patch drop.

With ``reducer="merge"`` a block whose schedule count ``k`` is lower than the
``n`` patch tokens entering it *merges* ``r = n - k`` patch tokens instead of
dropping them, at the same place (after the attention residual, before the
MLP), so a :class:`TokenSchedule` means the same number of tokens for both
reducers. What the merge patch changes, and nothing else:

* a merging block's attention also returns its keys averaged over heads
  (B, N, head_dim), the similarity metric, L2-normalised here;
* bipartite soft matching over the block's current token order: side ``a`` =
  tokens at even positions, side ``b`` = odd positions, prefix tokens included;
  cosine scores ``a @ b^T``; each ``a`` token's best ``b`` partner; the ``r``
  ``a`` tokens with the highest best score merge into their partners;
* prefix tokens never merge: the rows of ``a``-side prefix tokens and the
  columns of ``b``-side prefix tokens are ``-inf`` (ToMe: the class token's row
  and the distillation token's column; for register tokens the same rule);
* output order = ``[prefix tokens in their order, unmerged a, b]``; unmerged
  ``a`` tokens keep their order when the model has prefix tokens (ToMe sorts
  them when it protects a class token) and come in descending best-score
  order when it has none (ToMe's order, which the next block's split sees);
* every token carries a size (patches it stands for, 1 at first); a merge is
  the size-weighted mean ``sum(size * x) / sum(size)``, written with
  ``scatter_add`` (exports to ONNX, unlike ``scatter_reduce(mean)``);
* proportional attention (``model.prop_attn``, on by default): once a merge has
  happened, every later block (merging, dropping or neither) adds ``log(size)``
  of each key to its attention logits, so those blocks no longer run timm's
  plain ``Block.forward``;
* a block that removes at most half of its patch tokens (``r <= n // 2``,
  ToMe's clamp ``(T - protected) // 2``) runs one bipartite round, exactly
  ToMe's; a block asked to remove more runs several rounds
  (:func:`merge_rounds`: the fewest rounds that can, each removing the same
  fraction, none more than half), each round matching on the keys merged by
  the previous rounds (size-weighted mean, as the tokens) - no extra attention;
* for heads (``restore=True``), each merged token is mapped back to *all*
  grid positions it stands for; ``TokenState.positions`` / ``info["keep"]``
  name one representative per token (its own position: the ``b`` token a
  merge went into, or the unmerged ``a`` token).

The pooling and classifier are timm's (ToMe leaves them alone too: the class
token for token pooling, a plain mean of the patch tokens for avg pooling).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Tuple

import torch

from ..errors import ConfigError
from .attention import attention_with_info
from .rows import take_rows

REDUCERS = ("drop", "merge")


def merge_limit(n: int) -> int:
    """The most patch tokens one bipartite round can merge away from ``n`` (ToMe's clamp)."""
    return n // 2


def merge_rounds(n: int, k: int) -> Tuple[int, ...]:
    """Patch-token counts after each bipartite round that takes a merging block from ``n`` to ``k`` tokens.

    One round (``(k,)``) where ToMe's clamp allows it; otherwise the fewest rounds that can, each keeping
    about the same fraction ``(k / n) ** (1 / rounds)`` and none merging more than half of its tokens.
    """
    if not 1 <= k <= n:
        raise ConfigError(f"a merge goes from {n} to {k} patch tokens; expected 1 <= {k} <= {n}")
    rounds, m = 0, n
    while m > k:
        m, rounds = m - merge_limit(m), rounds + 1
    out, m = [], n
    for j in range(rounds, 0, -1):
        target = k if j == 1 else math.ceil(m * (k / m) ** (1.0 / j))
        m = max(target, m - merge_limit(m), k)
        out.append(m)
    if out and out[-1] != k:  # rounding left the last round short of k: one more round
        out.extend(merge_rounds(out[-1], k))
    return tuple(out)


class MergePlan(NamedTuple):
    """One block's bipartite matching: indices into side ``a`` (unm, src) and side ``b`` (dst)."""

    unm: torch.Tensor  # (B, Na - r, 1) unmerged a tokens
    src: torch.Tensor  # (B, r, 1) a tokens merged away
    dst: torch.Tensor  # (B, r, 1) the b token each of them goes into
    num_prefix: int


def match(metric: torch.Tensor, r: int, num_prefix: int) -> MergePlan:
    """Bipartite soft matching on ``metric`` (B, N, d): which ``r`` tokens of side ``a`` merge where."""
    with torch.no_grad():
        metric = metric / metric.norm(dim=-1, keepdim=True)
        a, b = metric[:, ::2], metric[:, 1::2]
        scores = a @ b.transpose(-1, -2)
        P = num_prefix
        if P:
            rows = torch.arange(a.shape[1], device=metric.device) < (P + 1) // 2
            cols = torch.arange(b.shape[1], device=metric.device) < P // 2
            scores = scores.masked_fill(rows[:, None] | cols[None, :], -math.inf)
        node_max, node_idx = scores.max(dim=-1)
        edge = node_max.argsort(dim=-1, descending=True)[..., None]
        unm, src = edge[:, r:], edge[:, :r]
        dst = node_idx[..., None].gather(1, src)
        if P:
            unm = unm.sort(dim=1)[0]
    return MergePlan(unm, src, dst, P)


def _combine(plan: MergePlan, t: torch.Tensor) -> torch.Tensor:
    """Sum the merged ``a`` tokens of ``t`` into their ``b`` partners; tokens in the output order."""
    B, _, C = t.shape
    a, b = t[:, ::2], t[:, 1::2]
    unm = take_rows(a, plan.unm[..., 0])
    src = take_rows(a, plan.src[..., 0])
    b = b.scatter_add(1, plan.dst.expand(B, -1, C), src)
    P = plan.num_prefix
    if not P:
        return torch.cat([unm, b], dim=1)
    prefix = [unm[:, p // 2:p // 2 + 1] if p % 2 == 0 else b[:, p // 2:p // 2 + 1] for p in range(P)]
    return torch.cat(prefix + [unm[:, (P + 1) // 2:], b[:, P // 2:]], dim=1)


def merge_wavg(plan: MergePlan, x: torch.Tensor, size: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Size-weighted mean of every merged group; returns the tokens and their new sizes (B, N', 1)."""
    if size is None:
        size = torch.ones_like(x[..., :1])
    x = _combine(plan, x * size)
    size = _combine(plan, size)
    return x / size, size


def token_map(plan: MergePlan, n_tokens: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Where the tokens went: ``(out_of_in, rep)``.

    ``out_of_in`` (B, N): the output token each input token is part of; ``rep`` (B, N'): for each
    output token, the input token it stands at (unmerged ``a`` tokens and ``b`` tokens are their own).
    """
    B, dev = plan.unm.shape[0], plan.unm.device
    P, Na, Nb = plan.num_prefix, (n_tokens + 1) // 2, n_tokens // 2
    n_unm = plan.unm.shape[1]
    j, u = torch.arange(Nb, device=dev), torch.arange(n_unm, device=dev)
    pa, pb = (P + 1) // 2, P // 2
    b_pos = torch.where(j < pb, 2 * j + 1, P + (n_unm - pa) + (j - pb)).expand(B, Nb)
    u_pos = torch.where(u < pa, 2 * u, P + (u - pa)).expand(B, n_unm)
    unm, src, dst = plan.unm[..., 0], plan.src[..., 0], plan.dst[..., 0]
    a_pos = torch.zeros(B, Na, dtype=torch.long, device=dev).scatter(1, unm, u_pos)
    a_pos = a_pos.scatter(1, src, b_pos.gather(1, dst))
    if Nb < Na:
        b_pos = torch.cat([b_pos, b_pos[:, :1]], dim=1)
    out_of_in = torch.stack([a_pos, b_pos], dim=2).reshape(B, 2 * Na)[:, :n_tokens]
    b_in = (2 * j + 1).expand(B, Nb)
    # representatives in output order: [prefix, unmerged a, b]
    a_in = 2 * unm
    if P:
        prefix = [a_in[:, p // 2:p // 2 + 1] if p % 2 == 0 else b_in[:, p // 2:p // 2 + 1] for p in range(P)]
        rep = torch.cat(prefix + [a_in[:, pa:], b_in[:, pb:]], dim=1)
    else:
        rep = torch.cat([a_in, b_in], dim=1)
    return out_of_in, rep


def merge_step(x: torch.Tensor, metric: torch.Tensor, r: int, state) -> torch.Tensor:
    """Merge ``r`` patch tokens of ``x`` (after the attention residual) and record it in ``state``.

    More than half of the patch tokens merge in several bipartite rounds (:func:`merge_rounds`); each later
    round matches on the keys merged like the tokens (size-weighted), so it needs no attention of its own.
    """
    P = state.num_prefix
    n = x.shape[1] - P
    counts = merge_rounds(n, n - r)
    for j, k in enumerate(counts):
        plan = match(metric, n - k, P)
        if j + 1 < len(counts):
            metric, _ = merge_wavg(plan, metric, state.size)
        x, state.size = merge_wavg(plan, x, state.size)
        state.record_merge(plan, P + n)
        n = k
    return x


def merge_block_forward(block, x: torch.Tensor, r: int, state, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """One timm ``Block`` that merges ``r`` patch tokens after its attention residual (ToMe's block)."""
    a, info = attention_with_info(block.attn, block.norm1(x), None, bias=bias, keys=True)
    x = x + block.drop_path1(block.ls1(a))
    x = merge_step(x, info["metric"], r, state)
    return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))


def biased_block_forward(block, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A timm ``Block`` that reduces nothing but attends with proportional attention (after a merge)."""
    a, _ = attention_with_info(block.attn, block.norm1(x), None, bias=bias)
    x = x + block.drop_path1(block.ls1(a))
    return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))


def size_bias(size: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Proportional attention's logit bias (B, 1, 1, N) from token sizes (B, N, 1); None before any merge."""
    return None if size is None else size.log()[:, None, None, :, 0]
