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
  schedule is timm's forward exactly (with the linear head; the FFVT, Mix-ViT
  and PIM heads ask chosen blocks for attention information and output
  tokens through a :class:`BlockObserver`, see :mod:`tavt_kit.models.heads`);
* ``forward_features`` drops the fused token (``fuse=True``) after the last
  block, so timm's own ``forward_head`` (pooling, ``fc_norm``, classifier,
  distillation head) sees prefix and kept patch tokens only.

``patch(model, reducer="merge")`` (or ``model.reducer``, or a schedule's
per-block ``reducers``) makes reducing blocks *merge* tokens instead (ToMe;
what that changes is listed in :mod:`tavt_kit.models.token_merge`).

Every image in a batch keeps the same number of tokens, so tensors stay dense
and an exported graph has static token shapes.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from ..errors import ConfigError, UnsupportedModelError
from ..schedules.schedule import TokenSchedule
from .attention import _capturing, attention_with_info  # noqa: F401  (re-exported: heads and bench use them here)
from .rows import take_rows
from .token_merge import REDUCERS, biased_block_forward, merge_block_forward, merge_step, size_bias, \
    token_map

SCORERS = ("tavt", "cls", "tavt-sampled")


# --------------------------------------------------------------------------- state
class TokenState:
    """Where the surviving patch tokens came from, for heads that need the grid.

    Only filled when a forward asks for ``restore=True``: ``positions`` holds the
    original grid index of every kept patch token (after a merge: of its
    representative), ``history`` the patch tokens as they were right before each
    drop (their last state). Once a merge happened, ``size`` holds every token's
    size (B, N, 1) and ``owner`` the patch token each grid position is part of.
    """

    def __init__(self, num_prefix: int, num_patches: int, track: bool):
        self.num_prefix = num_prefix
        self.num_patches = num_patches
        self.track = track
        self.positions: Optional[torch.Tensor] = None  # None = identity (nothing dropped yet)
        self.history: List[Tuple[Optional[torch.Tensor], torch.Tensor]] = []
        self.has_fused = False
        self.last_keep: Optional[torch.Tensor] = None  # indices kept by the latest drop (within its patch tokens)
        self.want_keep = track  # heads read last_keep after a merge too
        self.size: Optional[torch.Tensor] = None  # token sizes once a merge happened (B, N, 1)
        self.merged = False
        self.owner: Optional[torch.Tensor] = None  # (B, grid): patch token each position is part of, -1 dropped
        self.drops: List[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (owner, patches, keep) per drop

    def _owner(self, patches: torch.Tensor) -> torch.Tensor:
        if self.owner is not None:
            return self.owner
        B = patches.shape[0]
        return torch.arange(self.num_patches, device=patches.device).expand(B, -1)

    def record_drop(self, patches: torch.Tensor, keep: torch.Tensor) -> None:
        if self.size is not None:
            P = self.num_prefix
            s = self.size
            self.size = torch.cat([s[:, :P], s[:, P:P + patches.shape[1]].gather(1, keep.unsqueeze(-1))], dim=1)
        if not self.track:
            return
        self.history.append((self.positions, patches))
        self.positions = keep if self.positions is None else self.positions.gather(1, keep)
        owner = self._owner(patches)
        self.drops.append((owner, patches, keep))
        self.owner = _follow(owner, _inverse(keep, patches.shape[1]))

    def record_merge(self, plan, n_tokens: int) -> None:
        """A merge of ``n_tokens`` tokens by ``plan`` (:func:`tavt_kit.models.token_merge.match`)."""
        self.merged = True
        if not (self.track or self.want_keep):
            return
        out_of_in, rep = token_map(plan, n_tokens)
        P = self.num_prefix
        keep = rep[:, P:] - P
        self.last_keep = keep
        if not self.track:
            return
        self.owner = _follow(self._owner(keep), out_of_in[:, P:] - P)
        self.positions = keep if self.positions is None else self.positions.gather(1, keep)

    def restore(self, patches: torch.Tensor) -> torch.Tensor:
        """Scatter kept ``patches`` (B, k, C) and the dropped tokens' last states into the full grid."""
        if self.positions is None:
            return patches
        if not self.track:
            raise RuntimeError("restore() needs a forward run with restore=True")
        B, _, C = patches.shape
        if self.merged:  # every grid position takes its token's state, or its last state where dropped
            grid = patches.gather(1, self.owner.clamp_min(0).unsqueeze(-1).expand(-1, -1, C))
            for owner, states, keep in self.drops:
                gone = (owner >= 0) & (_follow(owner, _inverse(keep, states.shape[1])) < 0)
                last = states.gather(1, owner.clamp_min(0).unsqueeze(-1).expand(-1, -1, C))
                grid = torch.where(gone.unsqueeze(-1), last, grid)
            return grid
        grid = None
        for pos, states in self.history:
            if pos is None:
                grid = states
            else:
                grid = grid.scatter(1, pos.unsqueeze(-1).expand(-1, -1, C), states)
        return grid.scatter(1, self.positions.unsqueeze(-1).expand(-1, -1, C), patches)


def _inverse(keep: torch.Tensor, n: int) -> torch.Tensor:
    """(B, n): the new index of each of ``n`` tokens after keeping ``keep`` (B, k), -1 if dropped."""
    B, k = keep.shape
    inv = torch.full((B, n), -1, dtype=torch.long, device=keep.device)
    return inv.scatter(1, keep, torch.arange(k, device=keep.device).expand(B, k))


def _follow(owner: torch.Tensor, new_of_old: torch.Tensor) -> torch.Tensor:
    """Owners (token indices, -1 = gone) through a map of old token -> new token."""
    return torch.where(owner >= 0, new_of_old.gather(1, owner.clamp_min(0)), owner)


# ----------------------------------------------------------------------- attention
def attention_with_scores(attn: nn.Module, x: torch.Tensor, scorer: str,
                          bias: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """timm ``Attention.forward`` that also returns a significance score per token (B, N).

    ``tavt``: attention probabilities summed over heads and queries (what each
    token receives); computed explicitly because it needs the whole matrix.
    ``cls``: class-token row, mean over heads (EViT); the layer keeps the fused
    kernel and only the class query row is computed again.
    """
    out, info = attention_with_info(attn, x, scorer, bias=bias)
    return out, info["drop"]


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
    kept = take_rows(patches, idx)
    state.record_drop(patches, idx)
    state.last_keep = idx
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


def drop_block_attention(block: nn.Module, x: torch.Tensor, scorer: str,
                         bias: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """First half of a dropping block: tokens after the attention residual, and their scores."""
    a, scores = attention_with_scores(block.attn, block.norm1(x), scorer, bias)
    return x + block.drop_path1(block.ls1(a)), scores


def drop_block_mlp(block: nn.Module, x: torch.Tensor, scores: torch.Tensor, keep: int, state: TokenState,
                   fuse: bool) -> torch.Tensor:
    """Second half: keep the top-``keep`` patch tokens, then the MLP residual on them."""
    x = select_tokens(x, scores, keep, state, fuse)
    return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))


def drop_block_forward(block: nn.Module, x: torch.Tensor, keep: int, state: TokenState,
                       scorer: str, fuse: bool, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One timm ``Block`` that keeps ``keep`` patch tokens after its attention residual."""
    x, scores = drop_block_attention(block, x, scorer, bias)
    return drop_block_mlp(block, x, scores, keep, state, fuse)


def observed_block_forward(block: nn.Module, x: torch.Tensor, keep: Optional[int], state: TokenState,
                           scorer: str, fuse: bool, need, reducer: str = "drop",
                           bias: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """One timm ``Block`` (dropping or merging to ``keep`` patch tokens, or not when None) that also
    reports the attention information in ``need`` (``"maws"``, ``"probs"``) to a head."""
    merge = keep is not None and reducer == "merge"
    a, info = attention_with_info(block.attn, block.norm1(x), scorer if keep is not None and not merge else None,
                                  maws="maws" in need, probs="probs" in need, bias=bias, keys=merge)
    x = x + block.drop_path1(block.ls1(a))
    if merge:
        n = x.shape[1] - state.num_prefix
        x = merge_step(x, info.pop("metric"), n - keep, state)
    elif keep is not None:
        x = select_tokens(x, info.pop("drop"), keep, state, fuse)
    return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x)))), info


class BlockObserver:
    """What a head asks of the backbone's forward (:meth:`TokenDropMixin.forward_tokens`).

    ``needs(i)``: None to run block ``i`` untouched (the fast path), else a set of what the head
    needs from it (``"maws"``, ``"probs"``; empty = only its output tokens); ``after_block(i, x,
    state, info)`` is then called with the block's output tokens (prefix, kept patches, [fused]),
    the :class:`TokenState` and ``info`` (the requested attention values over the block's *input*
    tokens, ``"keep"``: the patch indices it kept, or None when it dropped nothing, ``"n_in"``:
    the patch tokens that entered it). ``end`` is the number of blocks to run; ``track`` asks the
    state to record drops so that ``state.restore`` works.
    """

    end: Optional[int] = None
    track: bool = False

    def needs(self, i: int):
        return None

    def after_block(self, i: int, x: torch.Tensor, state: TokenState, info: Dict[str, torch.Tensor]) -> None:
        pass


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


class ScheduleHolder:
    """The default schedule of a token-drop model (``model.schedule``), validated by its ``make_schedule``.

    Shared by every backbone family: the class provides ``depth``, ``num_patches``
    and ``make_schedule`` and sets ``_default_schedule`` (None) when built.
    """

    _default_schedule: Optional[TokenSchedule]
    #: reducers this backbone implements (:data:`tavt_kit.models.token_merge.REDUCERS`)
    supported_reducers: Tuple[str, ...] = ("drop",)
    _reducer: str = "drop"

    @property
    def reducer(self) -> str:
        """How reducing blocks remove tokens when the schedule names no reducer: ``"drop"`` or ``"merge"``."""
        return self._reducer

    @reducer.setter
    def reducer(self, value: str) -> None:
        check_reducer(self, value)
        self._reducer = value
        if self._default_schedule is not None:
            self.schedule = self._default_schedule  # re-validate (merge limits, fuse)

    def block_reducers(self, schedule: TokenSchedule) -> Tuple[str, ...]:
        """The reducer of every block: the schedule's own where it names one, else ``model.reducer``."""
        own = schedule.reducers or (None,) * schedule.depth
        return tuple(r or self._reducer for r in own)

    def check_reducers(self, schedule: TokenSchedule) -> TokenSchedule:
        """Refuse a reducer this backbone lacks, or fuse with merging (a merge of more than half of a block's
        tokens runs several bipartite rounds: :func:`tavt_kit.models.token_merge.merge_rounds`)."""
        reducers = self.block_reducers(schedule)
        if "merge" not in reducers:
            return schedule
        check_reducer(self, "merge")
        if getattr(self, "fuse", False):
            raise ConfigError("fuse=True (EViT's fused token) applies to drop only; a schedule that merges tokens "
                              "needs fuse=False")
        return schedule

    @property
    def schedule(self) -> Optional[TokenSchedule]:
        """The schedule used when a call passes no ``drop`` (``None`` = full model)."""
        return self._default_schedule

    @schedule.setter
    def schedule(self, value) -> None:
        self._default_schedule = None if value is None else self.make_schedule(value)

    def full_schedule(self) -> TokenSchedule:
        return TokenSchedule.full(self.depth, self.num_patches)


def check_reducer(model: nn.Module, reducer: str) -> None:
    """A reducer name this model implements."""
    if not isinstance(reducer, str) or reducer not in REDUCERS:
        raise ConfigError(f"unknown reducer {reducer!r}; expected one of {', '.join(REDUCERS)}")
    supported = getattr(model, "supported_reducers", ("drop",))
    if reducer not in supported:
        raise ConfigError(f"reducer {reducer!r} is not supported by {type(model).__name__}; it supports "
                          f"{', '.join(supported)}")


class TokenDropMixin(ScheduleHolder):
    """Methods added to a patched timm VisionTransformer (see module docstring)."""

    # set by patch()
    scorer: str
    fuse: bool
    #: proportional attention after a merge (ToMe's prop_attn): add log(token size) to the attention logits
    prop_attn: bool = True
    supported_reducers = REDUCERS
    #: the classification head (``tavt_kit.models.heads``); "linear" = timm's own pooling + classifier
    head_name: str = "linear"

    @property
    def depth(self) -> int:
        return len(self.blocks)

    @property
    def num_patches(self) -> int:
        return int(self.patch_embed.num_patches)

    def make_schedule(self, value) -> TokenSchedule:
        """Validate ``value`` (schedule, counts, drop-config path or dict) against this model (and its head)."""
        schedule = self.check_reducers(TokenSchedule.coerce(value, self.depth, self.num_patches))
        head = self.fgvc_head
        if head is not None:
            head.check_schedule(self, schedule)
        return schedule

    @property
    def fgvc_head(self) -> Optional[nn.Module]:
        """The head module (FFVT, Mix-ViT, PIM; registered under its name), None for the linear head."""
        name = self.head_name
        return None if name == "linear" else getattr(self, name)

    def training_only_prefixes(self) -> Tuple[str, ...]:
        """State-dict prefixes of weights used in training only (Mix-ViT's branch)."""
        head = self.fgvc_head
        return tuple(getattr(head, "training_only_prefixes", ())) if head is not None else ()

    def inference_state_dict(self) -> Dict[str, torch.Tensor]:
        """``state_dict()`` without the weights that only training uses (what exports and deployments need)."""
        drop = self.training_only_prefixes()
        return {k: v for k, v in self.state_dict().items() if not k.startswith(drop)} if drop else self.state_dict()

    def _plan(self, drop) -> Tuple[Optional[Tuple[int, ...]], Tuple[str, ...]]:
        """(counts or None for the full model, reducer per block)."""
        if drop is None:
            drop = self._default_schedule
            if drop is None:
                return None, (self._reducer,) * self.depth
            return drop.counts, self.block_reducers(self.check_reducers(drop))
        schedule = self.make_schedule(drop)
        return schedule.counts, self.block_reducers(schedule)

    def embed_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> the tokens entering block 0: patch and position embedding, prefix tokens, pre-norm."""
        return self.norm_pre(self.patch_drop(self._pos_embed(self.patch_embed(x))))

    def forward_tokens(self, x: torch.Tensor, drop=None, restore: bool = False,
                       observer: Optional[BlockObserver] = None):
        """Embed and run the blocks; returns ``(tokens, TokenState)`` before the final norm.

        ``observer`` (a :class:`BlockObserver`, used by heads) sees chosen blocks' output tokens,
        attention information and kept positions, and may stop the loop early (``observer.end``).
        """
        counts, reducers = self._plan(drop)
        x = self.embed_tokens(x)
        state = TokenState(self.num_prefix_tokens, self.num_patches,
                           track=restore or (observer is not None and observer.track))
        state.want_keep = state.track or observer is not None
        checkpointing = self.grad_checkpointing and self.training and not torch.jit.is_scripting()
        n = self.num_patches
        blocks = self.blocks
        if observer is not None and observer.end is not None:
            blocks = blocks[:observer.end]
        for i, blk in enumerate(blocks):
            k = n if counts is None else counts[i]
            need = None if observer is None else observer.needs(i)
            bias = size_bias(state.size) if self.prop_attn else None
            if need:
                x, info = observed_block_forward(blk, x, k if k < n else None, state, self.scorer, self.fuse, need,
                                                 reducers[i], bias)
            elif k < n and reducers[i] == "merge":
                x = merge_block_forward(blk, x, n - k, state, bias)
            elif k < n:
                x = drop_block_forward(blk, x, k, state, self.scorer, self.fuse, bias)
            elif bias is not None:
                x = biased_block_forward(blk, x, bias)
            elif checkpointing:
                x = torch.utils.checkpoint.checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
            if need is not None:
                info = info if need else {}
                info["keep"] = state.last_keep if k < n else None
                info["n_in"] = n
                n = min(n, k)
                observer.after_block(i, x, state, info)
            else:
                n = min(n, k)
        return x, state

    def _features(self, x: torch.Tensor, state: TokenState, restore: bool):
        if state.has_fused:
            x = x[:, :-1]
        out = self.norm(x)
        if not restore:
            return out
        if state.positions is None:
            return out, out[:, self.num_prefix_tokens:]
        # the norm acts per token, so norm(restore(x)) == restore(norm(x))
        return out, self.norm(state.restore(x[:, self.num_prefix_tokens:]))

    def forward_features(self, x: torch.Tensor, drop=None, restore: bool = False):
        """Tokens after the final norm: prefix tokens then kept patch tokens.

        The fused token (``fuse=True``) only takes part in attention; it is not
        returned. With ``restore=True`` also returns the full patch grid
        (B, grid, C): kept tokens' final states, dropped tokens' last states.
        With the FFVT head, the tokens are those of its fusion block (class token
        then the selected tokens).
        """
        head = self.fgvc_head
        if head is not None and hasattr(head, "forward_features"):
            return head.forward_features(self, x, drop, restore)
        x, state = self.forward_tokens(x, drop, restore)
        return self._features(x, state, restore)

    def forward(self, x: torch.Tensor, drop=None, labels: Optional[torch.Tensor] = None):
        """Logits; in training mode with a head that has auxiliary losses, ``(logits, aux_losses)``.

        * eval mode: logits (B, classes), whatever the head (``labels`` is ignored);
        * training mode, ``labels`` given (B,) class indices: ``(logits, aux_losses)`` for every
          head, ``aux_losses`` a dict of already weighted scalar tensors (empty for ``linear`` and
          ``ffvt``) that the trainer adds to its own loss on ``logits``;
        * training mode, no ``labels``: logits for ``linear`` and ``ffvt``; ``(logits, aux_losses)``
          for ``mixvit`` (its loss needs no labels); ``pim`` raises (its losses need labels).
        """
        head = self.fgvc_head
        if head is None:
            logits = self.forward_head(self.forward_features(x, drop))
            if labels is not None and self.training:
                return logits, {}
            return logits
        return head.forward_model(self, x, drop, labels)


_PATCHED_CLASSES = {}


def _token_drop_class(cls: type) -> type:
    if cls not in _PATCHED_CLASSES:
        _PATCHED_CLASSES[cls] = type(f"TokenDrop{cls.__name__}", (TokenDropMixin, cls), {})
    return _PATCHED_CLASSES[cls]


def is_patched(model: nn.Module) -> bool:
    return isinstance(model, TokenDropMixin)


def check_scorer(model: nn.Module, scorer: str) -> None:
    """A scorer this model can use: a known one, and ``cls`` only with a class token."""
    if scorer not in SCORERS:
        raise ConfigError(f"unknown scorer {scorer!r}; expected one of {', '.join(SCORERS)}")
    if scorer == "cls" and getattr(model, "cls_token", None) is None:
        raise ConfigError("scorer 'cls' needs a class token; this model has none (use scorer='tavt')")
    own = getattr(model, "scorers", SCORERS)  # a model with its own attention scores only as that attention can
    if scorer not in own:
        raise ConfigError(f"scorer {scorer!r}: {type(model).__name__} supports {', '.join(map(repr, own))}")


def token_drop_record(model: nn.Module) -> dict:
    """What decides which tokens a drop keeps besides the weights: the scorer and ``fuse``. A search records it
    with the weights' sha256 (its accuracies are those of the weights *dropping this way*)."""
    return {"scorer": model.scorer, "fuse": bool(model.fuse)}


def use_recorded_token_drop(model: nn.Module, record, where: str) -> Optional[str]:
    """Set ``model``'s scorer and ``fuse`` to those ``record`` (a search's or drop config's ``token_drop``) says
    its accuracies were measured with; a line saying what changed, or None. A record from before they were
    recorded changes nothing. A scorer this model cannot use is a :class:`ConfigError` naming ``where``."""
    if not isinstance(record, dict):
        return None
    changed = []
    scorer, fuse = record.get("scorer"), record.get("fuse")
    if scorer is not None and scorer != model.scorer:
        try:
            check_scorer(model, scorer)
        except ConfigError as e:
            raise ConfigError(f"{where}: measured with scorer {scorer!r}, which this model cannot use ({e})") from None
        changed.append(f"scorer {scorer} (the checkpoint's is {model.scorer})")
        model.scorer = scorer
    if fuse is not None and bool(fuse) != bool(model.fuse):
        if fuse and getattr(model, "reducer", "drop") == "merge":
            raise ConfigError(f"{where}: measured with fuse=True, which a merging model cannot use")
        changed.append(f"fuse {bool(fuse)} (the checkpoint's is {bool(model.fuse)})")
        model.fuse = bool(fuse)
    return f"{where}: {' and '.join(changed)}, as the accuracies were measured" if changed else None


def patch(model: nn.Module, scorer: str = "tavt", fuse: bool = False, schedule=None, reducer: str = "drop",
          prop_attn: bool = True) -> nn.Module:
    """Make a timm VisionTransformer take token schedules, in place, keeping its weights.

    Args:
        model: a timm ``VisionTransformer`` (any ``vit_*``/``deit_*`` incl. distilled,
            register-token, LayerScale, qk-norm, token/avg/map pooling).
        scorer: ``"tavt"`` (attention received, summed over heads and queries),
            ``"cls"`` (class-token attention, needs a class token) or ``"tavt-sampled"`` (TAVT's sum over
            an evenly spaced subset of the queries: the layer keeps the fused attention kernel).
        fuse: merge dropped tokens into one extra token (EViT).
        schedule: default schedule for calls without ``drop=``.
        reducer: ``"drop"`` (keep the top-k patch tokens) or ``"merge"`` (ToMe; see
            :mod:`tavt_kit.models.token_merge`) for reducing blocks the schedule names no reducer for.
        prop_attn: with merging, add log(token size) to the attention logits (ToMe's proportional attention).
    Returns:
        the same module object, now a token-drop model.
    """
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(model, VisionTransformer):
        raise UnsupportedModelError(
            f"patch() takes a timm VisionTransformer, got {type(model).__name__}")
    check_scorer(model, scorer)
    if not isinstance(reducer, str) or reducer not in REDUCERS:
        raise ConfigError(f"unknown reducer {reducer!r}; expected one of {', '.join(REDUCERS)}")
    if reducer == "merge" and fuse:
        raise ConfigError("fuse=True (EViT's fused token) applies to drop only; reducer='merge' needs fuse=False")
    if getattr(model, "dynamic_img_size", False):
        raise UnsupportedModelError("models built with dynamic_img_size=True are not supported; give a fixed img_size")
    for i, blk in enumerate(model.blocks):
        _check_block(i, blk)
    if not is_patched(model):
        model.__class__ = _token_drop_class(model.__class__)
    model.scorer = scorer
    model.fuse = bool(fuse)
    model.prop_attn = bool(prop_attn)
    model._default_schedule = None
    model.reducer = reducer
    if schedule is not None:
        model.schedule = schedule
    return model
