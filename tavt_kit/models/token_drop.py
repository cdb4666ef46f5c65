"""Patch drop for timm Vision Transformers (TAVT / EViT style).

``patch(model)`` turns a timm ``VisionTransformer`` (or the distilled DeiT
subclass) into a token-drop model *in place*, keeping its weights. What the
patch changes, and nothing else:

* the instance's class becomes a subclass of its own class (``isinstance``
  still holds) whose ``forward`` / ``forward_features`` take ``drop=`` (a
  :class:`TokenSchedule` or a sequence of ints) and default to
  ``model.schedule`` (``None`` = full);
* a block whose count is lower than its input count runs the same layers
  (``norm1``, ``attn.qkv``, ``q_norm``/``k_norm``, ``attn.norm``, ``proj``,
  ``ls1``/``ls2``, ``drop_path``, ``mlp``) through :func:`drop_block_forward`:
  after the attention residual and before the MLP it keeps the top-k patch
  tokens by the scorer's significance; prefix tokens always stay;
* every other block runs timm's own ``Block.forward`` untouched, so the full
  schedule is timm's forward exactly;
* ``forward_features`` drops the fused token (``fuse=True``) after the last
  block, so timm's own ``forward_head`` (pooling, ``fc_norm``, classifier,
  distillation head) sees prefix and kept patch tokens only.

Every image in a batch keeps the same number of tokens, so tensors stay dense
and an exported graph has static token shapes.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ScheduleError, UnsupportedModelError
from .schedule import TokenSchedule

SCORERS = ("tavt", "cls")


# --------------------------------------------------------------------------- state
class TokenState:
    """Where the surviving patch tokens came from, for heads that need the grid.

    Only filled when a forward asks for ``restore=True``: ``positions`` holds the
    original grid index of every kept patch token, ``history`` the patch tokens
    as they were right before each drop (their last state).
    """

    def __init__(self, num_prefix: int, num_patches: int, track: bool):
        self.num_prefix = num_prefix
        self.num_patches = num_patches
        self.track = track
        self.positions: Optional[torch.Tensor] = None  # None = identity (nothing dropped yet)
        self.history: List[Tuple[Optional[torch.Tensor], torch.Tensor]] = []
        self.has_fused = False

    def record_drop(self, patches: torch.Tensor, keep: torch.Tensor) -> None:
        if not self.track:
            return
        self.history.append((self.positions, patches))
        self.positions = keep if self.positions is None else self.positions.gather(1, keep)

    def restore(self, patches: torch.Tensor) -> torch.Tensor:
        """Scatter kept ``patches`` (B, k, C) and the dropped tokens' last states into the full grid."""
        if self.positions is None:
            return patches
        if not self.track:
            raise RuntimeError("restore() needs a forward run with restore=True")
        B, _, C = patches.shape
        grid = None
        for pos, states in self.history:
            if pos is None:
                grid = states
            else:
                grid = grid.scatter(1, pos.unsqueeze(-1).expand(-1, -1, C), states)
        return grid.scatter(1, self.positions.unsqueeze(-1).expand(-1, -1, C), patches)


# ----------------------------------------------------------------------- attention
def _capturing() -> bool:
    """True while a graph is traced or exported (in-place tricks stay out of graphs)."""
    return (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()
            or torch.compiler.is_compiling())


def attention_with_scores(attn: nn.Module, x: torch.Tensor, scorer: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """timm ``Attention.forward`` that also returns a significance score per token (B, N).

    ``tavt``: attention probabilities summed over heads and queries (what each
    token receives); computed explicitly because it needs the whole matrix.
    ``cls``: class-token row, mean over heads (EViT); the layer keeps the fused
    kernel and only the class query row is computed again.
    """
    B, N, _ = x.shape
    H, hd = attn.num_heads, attn.head_dim
    gate = attn.gate(x).sigmoid() if getattr(attn, "gate", None) is not None else None
    q, k, v = attn.qkv(x).reshape(B, N, 3, H, hd).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    dropout_p = attn.attn_drop.p if attn.training else 0.0
    if scorer == "tavt":
        a = (q * attn.scale) @ k.transpose(-2, -1)
        if a.requires_grad or _capturing():
            a = a.softmax(dim=-1)
        else:
            # in place: the (B, H, N, N) matrix is the memory traffic that makes this path slower
            # than the fused kernel; a second buffer of that size costs ~30 % more at 785 tokens
            torch.softmax(a, dim=-1, out=a)
        scores = a.sum(dim=(1, 2))
        out = attn.attn_drop(a) @ v
    else:
        if attn.fused_attn:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
        else:
            a = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
            out = attn.attn_drop(a) @ v
        row = ((q[:, :, :1] * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # B, H, 1, N
        scores = row.mean(dim=1).squeeze(1)
    out = out.transpose(1, 2).reshape(B, N, H * hd)
    out = attn.norm(out)
    if gate is not None:
        out = out * gate
    out = attn.proj_drop(attn.proj(out))
    return out, scores


def select_tokens(
    x: torch.Tensor, scores: torch.Tensor, keep: int, state: TokenState, fuse: bool
) -> torch.Tensor:
    """Keep the top-``keep`` patch tokens of ``x`` by ``scores``; prefix tokens stay.

    The kept tokens stay in grid order. With ``fuse`` the dropped tokens (and a
    fused token from an earlier drop) merge into one token at the end, weighted
    by their scores (EViT).
    """
    P = state.num_prefix
    B, N, C = x.shape
    n = N - P - (1 if state.has_fused else 0)
    patches = x[:, P:P + n]
    s = scores[:, P:P + n]
    idx = s.topk(keep, dim=1).indices.sort(dim=1).values
    kept = patches.gather(1, idx.unsqueeze(-1).expand(-1, -1, C))
    state.record_drop(patches, idx)
    parts = [x[:, :P], kept]
    if fuse:
        w = s.scatter(1, idx, 0.0)  # weights of the dropped tokens only
        num = torch.bmm(w.unsqueeze(1), patches)  # B, 1, C
        den = w.sum(dim=1, keepdim=True)
        if state.has_fused:
            wf = scores[:, P + n:P + n + 1]
            num = num + wf.unsqueeze(-1) * x[:, P + n:P + n + 1]
            den = den + wf
        parts.append(num / den.clamp_min(1e-12).unsqueeze(-1))
        state.has_fused = True
    return torch.cat(parts, dim=1)


def drop_block_forward(block: nn.Module, x: torch.Tensor, keep: int, state: TokenState,
                       scorer: str, fuse: bool) -> torch.Tensor:
    """One timm ``Block`` that keeps ``keep`` patch tokens after its attention residual."""
    a, scores = attention_with_scores(block.attn, block.norm1(x), scorer)
    x = x + block.drop_path1(block.ls1(a))
    x = select_tokens(x, scores, keep, state, fuse)
    return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))


# ----------------------------------------------------------------- model patching
def _check_block(i: int, blk: nn.Module) -> None:
    from timm.layers import Attention
    from timm.models.vision_transformer import Block

    if not isinstance(blk, Block):
        raise UnsupportedModelError(
            f"block {i} is a {type(blk).__name__}; patch drop supports timm's pre-norm Block only")
    if type(blk.attn) is not Attention:
        raise UnsupportedModelError(
            f"block {i} uses {type(blk.attn).__name__}; patch drop supports timm's Attention only")


class TokenDropMixin:
    """Methods added to a patched timm VisionTransformer (see module docstring)."""

    # set by patch()
    scorer: str
    fuse: bool
    _default_schedule: Optional[TokenSchedule]

    @property
    def depth(self) -> int:
        return len(self.blocks)

    @property
    def num_patches(self) -> int:
        return int(self.patch_embed.num_patches)

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
        """Validate ``value`` (schedule, counts, drop-config path or dict) against this model."""
        return TokenSchedule.coerce(value, self.depth, self.num_patches)

    def _counts(self, drop) -> Optional[Tuple[int, ...]]:
        if drop is None:
            drop = self._default_schedule
            if drop is None:
                return None
            return drop.counts
        return self.make_schedule(drop).counts

    def forward_tokens(self, x: torch.Tensor, drop=None, restore: bool = False):
        """Embed and run the blocks; returns ``(tokens, TokenState)`` before the final norm."""
        counts = self._counts(drop)
        x = self.patch_embed(x)
        x = self._pos_embed(x)
        x = self.patch_drop(x)
        x = self.norm_pre(x)
        state = TokenState(self.num_prefix_tokens, self.num_patches, track=restore)
        checkpointing = self.grad_checkpointing and self.training and not torch.jit.is_scripting()
        n = self.num_patches
        for i, blk in enumerate(self.blocks):
            k = n if counts is None else counts[i]
            if k < n:
                x = drop_block_forward(blk, x, k, state, self.scorer, self.fuse)
                n = k
            elif checkpointing:
                x = torch.utils.checkpoint.checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return x, state

    def forward_features(self, x: torch.Tensor, drop=None, restore: bool = False):
        """Tokens after the final norm: prefix tokens then kept patch tokens.

        The fused token (``fuse=True``) only takes part in attention; it is not
        returned. With ``restore=True`` also returns the full patch grid
        (B, grid, C): kept tokens' final states, dropped tokens' last states.
        """
        x, state = self.forward_tokens(x, drop, restore)
        if state.has_fused:
            x = x[:, :-1]
        out = self.norm(x)
        if not restore:
            return out
        if state.positions is None:
            return out, out[:, self.num_prefix_tokens:]
        # the norm acts per token, so norm(restore(x)) == restore(norm(x))
        return out, self.norm(state.restore(x[:, self.num_prefix_tokens:]))

    def forward(self, x: torch.Tensor, drop=None):
        return self.forward_head(self.forward_features(x, drop))


_PATCHED_CLASSES = {}


def _token_drop_class(cls: type) -> type:
    if cls not in _PATCHED_CLASSES:
        _PATCHED_CLASSES[cls] = type(f"TokenDrop{cls.__name__}", (TokenDropMixin, cls), {})
    return _PATCHED_CLASSES[cls]


def is_patched(model: nn.Module) -> bool:
    return isinstance(model, TokenDropMixin)


def patch(model: nn.Module, scorer: str = "tavt", fuse: bool = False, schedule=None) -> nn.Module:
    """Make a timm VisionTransformer take token schedules, in place, keeping its weights.

    Args:
        model: a timm ``VisionTransformer`` (any ``vit_*``/``deit_*`` incl. distilled,
            register-token, LayerScale, qk-norm, token/avg/map pooling).
        scorer: ``"tavt"`` (attention received, summed over heads and queries) or
            ``"cls"`` (class-token attention, needs a class token).
        fuse: merge dropped tokens into one extra token (EViT).
        schedule: default schedule for calls without ``drop=``.
    Returns:
        the same module object, now a token-drop model.
    """
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(model, VisionTransformer):
        raise UnsupportedModelError(
            f"patch() takes a timm VisionTransformer, got {type(model).__name__}")
    if scorer not in SCORERS:
        raise ConfigError(f"unknown scorer {scorer!r}; expected one of {', '.join(SCORERS)}")
    if scorer == "cls" and model.cls_token is None:
        raise ConfigError("scorer 'cls' needs a class token; this model has none (use scorer='tavt')")
    if getattr(model, "dynamic_img_size", False):
        raise UnsupportedModelError("models built with dynamic_img_size=True are not supported; give a fixed img_size")
    for i, blk in enumerate(model.blocks):
        _check_block(i, blk)
    if not is_patched(model):
        model.__class__ = _token_drop_class(model.__class__)
    model.scorer = scorer
    model.fuse = bool(fuse)
    model._default_schedule = None
    if schedule is not None:
        model.schedule = schedule
    return model
