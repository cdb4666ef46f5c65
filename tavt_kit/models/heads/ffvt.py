"""FFVT head (Feature Fusion Vision Transformer, BMVC 2021) over a token-drop ViT.

As in the official code (``Markin-Wang/FFVT``, ``models/modeling.py``):

* after each block but the last, MAWS (mutual attention weight selection)
  scores every token of the layer, the class token included::

      maws = mean_h(softmax_over_queries(logits)[:, :, :, cls])   # token -> class column
           * mean_h(softmax_over_keys(logits)[:, :, cls, :])      # class -> token row

  where ``logits`` are the block's scaled attention logits (before dropout);
* the ``num_token`` best tokens of every such block's *output* (after its MLP)
  are kept, in descending score order, layer after layer;
* the last block reads ``[prefix tokens of block L-2's output, selected
  tokens]`` (1 + (L-1) * num_token tokens for a plain ViT); its class token,
  after the final norm, feeds the classifier.

The head has no weights of its own: the backbone's last block is FFVT's
``ff_last_layer``, its final norm ``ff_encoder_norm`` and its classifier
``head``, so the seeds' FFVT checkpoints load key for key.

Under a token schedule MAWS ranks the tokens that survive each block (the
scores are those of the block's attention, gathered at the kept positions);
the fused token (``fuse=True``) is never selected. The last count of a schedule
does not apply: the last block always reads the class token plus the selected
tokens. Selection is batched (top-k + gather) with static shapes, so the
model exports.
"""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

import torch
from torch import nn

from ...errors import ConfigError, ScheduleError
from ..token_drop import BlockObserver
from .args import depth_at_least, int_arg, needs_class_token
from .registry import register_head

_MAWS = frozenset({"maws"})


class _MAWSObserver(BlockObserver):
    """Collects the MAWS-selected tokens of blocks 0 .. L-2 (and stops before the last block)."""

    track = False

    def __init__(self, depth: int, num_token: int, num_prefix: int):
        self.end = depth - 1
        self.num_token = num_token
        self.num_prefix = num_prefix
        self.selected: List[torch.Tensor] = []

    def needs(self, i: int):
        return _MAWS

    def after_block(self, i, x, state, info) -> None:
        P = self.num_prefix
        scores, keep, n_in = info["maws"], info["keep"], info["n_in"]
        if keep is None:  # nothing dropped: the output tokens are the input tokens (fused token excluded)
            scores = scores[:, :P + n_in]
        else:
            scores = torch.cat([scores[:, :P], scores[:, P:P + n_in].gather(1, keep)], dim=1)
        idx = scores.topk(self.num_token, dim=1).indices  # descending, like the official argsort
        self.selected.append(x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1])))


@register_head("ffvt")
class FFVTHead(nn.Module):
    """FFVT's token selection and fusion block; see the module docstring."""

    training_only_prefixes: Tuple[str, ...] = ()
    #: MAWS picks this many tokens after each block but the last (12 in the paper; 24 for Dogs)
    ARGS = {"num_token": 12}
    HAS_WEIGHTS = False
    replaced_prefixes: Tuple[str, ...] = ()

    def __init__(self, num_token: int):
        super().__init__()
        self.num_token = num_token

    @classmethod
    def build(cls, model: nn.Module, num_token: Any = 12) -> Tuple["FFVTHead", Dict[str, Any]]:
        needs_class_token(model, "ffvt")
        depth_at_least(model, "ffvt", 2, "it selects tokens after every block but the last")
        most = int(model.num_prefix_tokens) + int(model.patch_embed.num_patches)
        num_token = int_arg("ffvt", "num_token", num_token, 1, most,
                            f" (a block has {most} tokens including the prefix tokens)")
        return cls(num_token), {"num_token": num_token}

    def after_attach(self, model: nn.Module) -> None:
        pass

    def extra_repr(self) -> str:
        return f"num_token={self.num_token}"

    def fused_tokens(self, model: nn.Module) -> int:
        """Tokens the last (fusion) block reads: prefix tokens + (L-1) * num_token."""
        return int(model.num_prefix_tokens) + (len(model.blocks) - 1) * self.num_token

    def check_schedule(self, model: nn.Module, schedule) -> None:
        P = int(model.num_prefix_tokens)
        for i, c in enumerate(schedule.counts[:-1]):
            if P + c < self.num_token:
                raise ScheduleError(
                    f"schedule[{i}] = {c} leaves {P + c} tokens after block {i}, fewer than the head's "
                    f"num_token={self.num_token} (FFVT selects num_token tokens after every block but the last)")

    def fuse_block_input(self, model: nn.Module, x: torch.Tensor, drop=None) -> torch.Tensor:
        """Run blocks 0 .. L-2 with MAWS; returns the last block's input (prefix tokens + selected tokens)."""
        P = int(model.num_prefix_tokens)
        observer = _MAWSObserver(len(model.blocks), self.num_token, P)
        tokens, _ = model.forward_tokens(x, drop, observer=observer)
        return torch.cat([tokens[:, :P]] + observer.selected, dim=1)

    def forward_features(self, model: nn.Module, x: torch.Tensor, drop=None, restore: bool = False):
        if restore:
            raise ConfigError("restore=True is not available with head 'ffvt' (its last block reads "
                              "selected tokens, not the grid)")
        return model.norm(model.blocks[-1](self.fuse_block_input(model, x, drop)))

    def forward_model(self, model: nn.Module, x: torch.Tensor, drop, labels):
        logits = model.forward_head(self.forward_features(model, x, drop))
        if model.training and labels is not None:
            return logits, {}
        return logits
