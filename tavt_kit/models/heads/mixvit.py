"""Mix-ViT head (Pattern Recognition 2023): training-only attentive token substitution.

What the official code (``Markin-Wang/MixViT``, pure-ViT version
``mixvit_purevit/models/modeling.py``) does, and what this head does:

* **where**: on the tokens that enter the last block (the output of block
  L-2), in training only;
* **which tokens**: the top ``int(mask_topk * n)`` of the ``n`` patch tokens by
  *mutual attention rollout* over all L blocks (detached): the product of the
  per-head attention matrices ``A_L ... A_1`` (class row, mean over heads) times
  the product of the query-axis softmaxes ``C_L ... C_1`` (class column, mean
  over heads). The class token (and every prefix token) is never overwritten —
  the official code indexes the sequence with patch indices and can hit it;
* **partner**: every sample ``j`` takes a uniformly random other sample
  ``k != j`` of the batch; ``j``'s top positions receive ``k``'s top tokens
  (rank for rank), read from the un-mixed states;
* **prediction**: an extra block (its own weights; started as a copy of the
  backbone's last block, the official code starts it randomly), a norm, and a
  linear head on the class token that predicts, per grid position, whether it
  was substituted: BCE with logits, times ``mask_weight``.

Under a token schedule the rollout follows the kept tokens (a dropped token's
rollout mass is dropped, the fused token gets none) and the positions are
reported on the full grid. A batch of one has no partner: no substitution,
loss 0 (still connected to the branch's weights). At inference nothing of it
runs and exports never see it: :meth:`~tavt_kit.models.token_drop.TokenDropMixin.inference_state_dict`
and ``save_checkpoint(..., inference_only=True)`` leave its ``mixvit.*``
weights out.
"""
from __future__ import annotations

import copy
import math
from typing import Any, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ..token_drop import BlockObserver
from .args import depth_at_least, float_arg, needs_class_token
from .registry import register_head

_PROBS = frozenset({"probs"})


class _RolloutObserver(BlockObserver):
    """Explicit attention in every block; keeps the rollout factors and the last block's input."""

    track = True

    def __init__(self, depth: int, num_prefix: int):
        self.depth = depth
        self.num_prefix = num_prefix
        self.attn: List[torch.Tensor] = []                                  # A_i over block i's input tokens
        self.maps: List[Tuple[Optional[torch.Tensor], int, bool]] = []      # (keep, n_in, fused after)
        self.col: Optional[torch.Tensor] = None  # C_i ... C_0 e_cls over block i's input tokens (B, H, N_i)
        self.pre: Optional[torch.Tensor] = None
        self.pre_positions: Optional[torch.Tensor] = None
        self.pre_patches = 0

    def needs(self, i: int):
        return _PROBS

    def _forward_map(self, c: torch.Tensor, keep, n_in: int, fused_out: bool) -> torch.Tensor:
        """Values over a block's input tokens -> over its output tokens."""
        if keep is None:
            return c
        P = self.num_prefix
        B, H, _ = c.shape
        parts = [c[..., :P], c[..., P:P + n_in].gather(-1, keep.unsqueeze(1).expand(B, H, -1))]
        if fused_out:
            parts.append(c.new_zeros(B, H, 1))
        return torch.cat(parts, dim=-1)

    def after_block(self, i, x, state, info) -> None:
        probs, logits, keep, n_in = info["probs"], info["logits"], info["keep"], info["n_in"]
        if i == self.depth - 2:
            self.pre = x
            self.pre_positions = state.positions
            self.pre_patches = x.shape[1] - self.num_prefix - int(state.has_fused)
        with torch.no_grad():
            c_q = logits.softmax(dim=-2)  # softmax over the query axis
            if self.col is None:
                col = c_q[..., 0]
            else:
                col = (c_q @ self.col.unsqueeze(-1)).squeeze(-1)
            if i < self.depth - 1:
                self.col = self._forward_map(col, keep, n_in, state.has_fused)
            else:
                self.col = col  # the last block: keep it over its input tokens
        self.attn.append(probs)
        self.maps.append((keep, n_in, state.has_fused))

    @torch.no_grad()
    def scores(self) -> torch.Tensor:
        """Mutual attention rollout of the patch tokens entering the last block (B, n)."""
        P = self.num_prefix
        row = self.attn[-1][:, :, 0, :]  # class row of the last block, over its input tokens
        for i in range(self.depth - 2, -1, -1):
            keep, n_in, _ = self.maps[i]
            a = self.attn[i]
            if keep is not None:  # back from block i's output tokens to its input tokens
                B, H, N = a.shape[0], a.shape[1], a.shape[-1]
                full = row.new_zeros(B, H, N)
                full[..., :P] = row[..., :P]
                patches = full[..., P:P + n_in]
                patches.scatter_(-1, keep.unsqueeze(1).expand(B, H, -1), row[..., P:P + keep.shape[1]])
                row = full
            row = (row.unsqueeze(-2) @ a).squeeze(-2)
        w = row.mean(dim=1)[:, P:]  # over the full grid of patch positions
        if self.pre_positions is not None:
            w = w.gather(1, self.pre_positions)
        else:
            w = w[:, :self.pre_patches]
        c = self.col.mean(dim=1)[:, P:P + self.pre_patches]
        return w * c


@register_head("mixvit")
class MixViTHead(nn.Module):
    """Mix-ViT's self-supervised substitution branch; see the module docstring."""

    training_only_prefixes: Tuple[str, ...] = ("mixvit.",)
    #: fraction of the patch tokens substituted, weight of the substitution BCE
    #: (official defaults 0.05 and 1; its scripts use 0.2 / 4 for Cotton80)
    #: mask_topk None: 0.05, raised to one token on a grid too small for it
    ARGS = {"mask_topk": None, "mask_weight": 1.0}
    HAS_WEIGHTS = True  # the extra block and the substitution head, under mixvit.*
    replaced_prefixes: Tuple[str, ...] = ()

    def __init__(self, block: nn.Module, norm: nn.Module, embed_dim: int, num_patches: int,
                 mask_topk: float, mask_weight: float):
        super().__init__()
        self.block = block
        self.norm = norm
        self.mask_head = nn.Linear(embed_dim, num_patches)
        nn.init.trunc_normal_(self.mask_head.weight, std=0.02)
        nn.init.zeros_(self.mask_head.bias)
        self.mask_topk = mask_topk
        self.mask_weight = mask_weight

    @classmethod
    def build(cls, model: nn.Module, mask_topk: Any = None, mask_weight: Any = 1.0):
        needs_class_token(model, "mixvit")
        depth_at_least(model, "mixvit", 2, "it substitutes the tokens entering the last block")
        Np = int(model.patch_embed.num_patches)
        fitted = {}
        if mask_topk is None:  # not given: the official 0.05, but at least one token of a small grid
            mask_topk = 0.05 if int(0.05 * Np) >= 1 else 1.0 / Np
            if mask_topk != 0.05:
                fitted["mask_topk"] = f"{mask_topk:.4g} (0.05 of {Np} patch tokens is less than one token)"
        mask_topk = float_arg("mixvit", "mask_topk", mask_topk, 0.0, 1.0, open_lo=True)
        if int(mask_topk * Np) < 1:
            raise ConfigError(f"head mixvit: mask_topk={mask_topk} substitutes int({mask_topk} * {Np}) = 0 of the "
                              f"{Np} patch tokens; use at least {1 / Np:.4g}")
        mask_weight = float_arg("mixvit", "mask_weight", mask_weight, 0.0, math.inf)
        norm = copy.deepcopy(model.norm) if not isinstance(model.norm, nn.Identity) else nn.LayerNorm(model.embed_dim)
        head = cls(copy.deepcopy(model.blocks[-1]), norm, int(model.embed_dim), Np, mask_topk, mask_weight)
        head.fitted = fitted
        return head, {"mask_topk": mask_topk, "mask_weight": mask_weight}

    def after_attach(self, model: nn.Module) -> None:
        pass

    def init_from_backbone(self, model: nn.Module) -> None:
        """Restart the branch from the backbone (after loading a checkpoint saved without it)."""
        with torch.no_grad():
            self.block.load_state_dict(model.blocks[-1].state_dict())
            if not isinstance(model.norm, nn.Identity):
                self.norm.load_state_dict(model.norm.state_dict())
            nn.init.trunc_normal_(self.mask_head.weight, std=0.02)
            nn.init.zeros_(self.mask_head.bias)

    def extra_repr(self) -> str:
        return f"mask_topk={self.mask_topk}, mask_weight={self.mask_weight}"

    def check_schedule(self, model: nn.Module, schedule) -> None:
        pass

    def _zero(self) -> torch.Tensor:
        # 0, but connected to every weight of the branch (DDP expects gradients for all of them)
        return sum(p.sum() for p in self.parameters()) * 0.0

    def substitution_loss(self, model: nn.Module, observer: _RolloutObserver) -> torch.Tensor:
        P = int(model.num_prefix_tokens)
        pre = observer.pre
        B, _, C = pre.shape
        n = observer.pre_patches
        m = max(1, int(self.mask_topk * n))
        idx = observer.scores().topk(m, dim=1).indices  # B, m (descending)
        partner = (torch.arange(B, device=pre.device) + torch.randint(1, B, (B,), device=pre.device)) % B
        src = pre[partner].gather(1, (P + idx[partner]).unsqueeze(-1).expand(-1, -1, C))
        mixed = pre.scatter(1, (P + idx).unsqueeze(-1).expand(-1, -1, C), src)
        logits = self.mask_head(self.norm(self.block(mixed))[:, 0])  # B, grid
        pos = idx if observer.pre_positions is None else observer.pre_positions.gather(1, idx)
        target = torch.zeros_like(logits).scatter(1, pos, 1.0)
        return F.binary_cross_entropy_with_logits(logits, target)

    def forward_model(self, model: nn.Module, x: torch.Tensor, drop, labels):
        if not model.training:
            x, state = model.forward_tokens(x, drop)
            return model.forward_head(model._features(x, state, False))
        if x.shape[0] < 2:  # no partner to take tokens from
            x, state = model.forward_tokens(x, drop)
            return model.forward_head(model._features(x, state, False)), {"mixvit": self._zero()}
        observer = _RolloutObserver(len(model.blocks), int(model.num_prefix_tokens))
        tokens, state = model.forward_tokens(x, drop, observer=observer)
        logits = model.forward_head(model._features(tokens, state, False))
        return logits, {"mixvit": self.mask_weight * self.substitution_loss(model, observer)}

