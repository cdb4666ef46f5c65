"""PIM head (plug-in module for fine-grained recognition, arXiv 2202.03822) over a token-drop ViT.

As in the official code (``chou141253/FGVC-PIM``, ``models/pim_module/pim_module.py``
and ``models/builder.py``, ViT recipe):

* **features**: the outputs of the tapped blocks (default the last four, as the
  official ViT-B recipe taps ``blocks.8``..``blocks.11``), every token: prefix
  tokens then the patch grid. Under patch drop each tapped block's grid is
  *restored* (kept tokens' states, dropped tokens' last states), so every
  position is there and shapes stay static;
* **FPN**: per tapped block ``Linear(C, C) -> ReLU -> Linear(C, fpn_size)``, then
  top-down ``x[i-1] += x[i]`` from the deepest block (equal token counts: the
  official ``Up_*`` modules are identities for a ViT);
* **per-token classifiers**: ``Conv1d(fpn, fpn, 1) -> BatchNorm1d -> ReLU ->
  Conv1d(fpn, classes, 1)``; loss λ_b · CE(mean over tokens of the logits);
* **weakly supervised selector**: per tapped block the ``num_selects`` tokens
  with the highest max-softmax confidence, in descending order; λ_s · CE on
  the selected tokens' logits, λ_n · MSE(tanh(logits of the others), -1);
* **graph combiner** (``GCNCombiner``) over all selected tokens: pooling to
  ``sum(num_selects) // 32`` nodes, adaptive adjacency, one graph
  convolution, batch norm, pooling to one node, dropout 0.1, classifier.
  Its output is the model's logits (λ_c · CE is the trainer's own loss on
  them; with λ_c ≠ 1 the difference comes back as an auxiliary loss).

Defaults (official ViT recipe): 32 selected tokens per block, FPN width 512,
λ_b 0.5, λ_s 0, λ_n 5, λ_c 1. Blocks after the last tapped one would not run,
so the taps must include the last block; the backbone's final norm and
classifier are replaced by identities (PIM reads raw block outputs).
Selection is batched (top-k + gather), so the eval forward exports.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ..token_drop import BlockObserver
from .args import float_arg, int_arg
from .registry import register_head

_NONE = frozenset()


class _TapObserver(BlockObserver):
    """Collects the restored token sequences (prefix + full grid) of the tapped blocks."""

    track = True

    def __init__(self, taps: Sequence[int], num_prefix: int):
        self.taps = set(taps)
        self.end = max(taps) + 1
        self.num_prefix = num_prefix
        self.features: List[torch.Tensor] = []

    def needs(self, i: int):
        return _NONE if i in self.taps else None

    def after_block(self, i, x, state, info) -> None:
        P = self.num_prefix
        n = x.shape[1] - P - int(state.has_fused)
        grid = state.restore(x[:, P:P + n])
        self.features.append(torch.cat([x[:, :P], grid], dim=1) if P else grid)


class GraphCombiner(nn.Module):
    """PIM's ``GCNCombiner`` (with an FPN): selected tokens -> class logits."""

    def __init__(self, total_selects: int, num_classes: int, dim: int):
        super().__init__()
        joints = total_selects // 32
        self.param_pool0 = nn.Linear(total_selects, joints)
        self.adj1 = nn.Parameter(torch.eye(joints) / 100 + 1 / 100)
        self.conv1 = nn.Conv1d(dim, dim, 1)
        self.batch_norm1 = nn.BatchNorm1d(dim)
        self.conv_q1 = nn.Conv1d(dim, dim // 4, 1)
        self.conv_k1 = nn.Conv1d(dim, dim // 4, 1)
        self.alpha1 = nn.Parameter(torch.zeros(1))
        self.param_pool1 = nn.Linear(joints, 1)
        self.dropout = nn.Dropout(p=0.1)
        self.classifier = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: B, S, dim
        hs = self.param_pool0(x.transpose(1, 2))          # B, dim, joints
        q = self.conv_q1(hs).mean(1)                      # B, joints
        k = self.conv_k1(hs).mean(1)
        adj = self.adj1 + torch.tanh(q.unsqueeze(-1) - k.unsqueeze(1)) * self.alpha1
        hs = self.batch_norm1(self.conv1(hs) @ adj)
        hs = self.dropout(self.param_pool1(hs).flatten(1))  # B, dim
        return self.classifier(hs)


@register_head("pim")
class PIMHead(nn.Module):
    """PIM's FPN, selector and combiner; see the module docstring."""

    training_only_prefixes: Tuple[str, ...] = ()
    #: tapped blocks (default: the last four), tokens the selector keeps per tapped block, FPN width,
    #: loss weights (official ViT recipe: 32 per block, 512; lambdas 0.5, 0, 5, 1)
    #: num_selects None: 32 per block, fewer on a grid smaller than that
    ARGS = {"tap_blocks": None, "num_selects": None, "fpn_size": 512,
            "lambda_b": 0.5, "lambda_s": 0.0, "lambda_n": 5.0, "lambda_c": 1.0}
    HAS_WEIGHTS = True  # pyramid, selector and combiner, under pim.*
    replaced_prefixes: Tuple[str, ...] = ("norm.", "fc_norm.", "head.", "head_dist.", "attn_pool.")

    def __init__(self, embed_dim: int, num_classes: int, tap_blocks: List[int], num_selects: List[int],
                 fpn_size: int, lambdas: Dict[str, float]):
        super().__init__()
        self.tap_blocks = list(tap_blocks)
        self.num_selects = list(num_selects)
        self.fpn_size = fpn_size
        self.lambdas = dict(lambdas)
        self.proj = nn.ModuleList(nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.ReLU(),
                                                nn.Linear(embed_dim, fpn_size)) for _ in tap_blocks)
        self.classifier = nn.ModuleList(nn.Sequential(nn.Conv1d(fpn_size, fpn_size, 1), nn.BatchNorm1d(fpn_size),
                                                      nn.ReLU(), nn.Conv1d(fpn_size, num_classes, 1))
                                        for _ in tap_blocks)
        self.combiner = GraphCombiner(sum(num_selects), num_classes, fpn_size)

    @classmethod
    def build(cls, model: nn.Module, tap_blocks: Any = None, num_selects: Any = None, fpn_size: Any = 512,
              lambda_b: Any = 0.5, lambda_s: Any = 0.0, lambda_n: Any = 5.0, lambda_c: Any = 1.0):
        depth = len(model.blocks)
        num_classes = int(getattr(model, "num_classes", 0) or 0)
        if num_classes < 1:
            raise ConfigError("head 'pim' needs num_classes >= 1 (its combiner is the classifier)")
        if tap_blocks is None:
            tap_blocks = list(range(max(0, depth - 4), depth))
        if isinstance(tap_blocks, (str, bytes)) or not isinstance(tap_blocks, (list, tuple)) or not tap_blocks:
            raise ConfigError(f"head pim: tap_blocks must be a non-empty list of block indices, got {tap_blocks!r}")
        taps = [int_arg("pim", "tap_blocks", b, 0, depth - 1, f" (blocks 0..{depth - 1})") for b in tap_blocks]
        if sorted(set(taps)) != taps:
            raise ConfigError(f"head pim: tap_blocks must be increasing without repeats, got {list(tap_blocks)}")
        if taps[-1] != depth - 1:
            raise ConfigError(f"head pim: tap_blocks {taps} must include the last block ({depth - 1}); to tap "
                              "earlier blocks build a shallower backbone (depth=)")
        tokens = int(model.num_prefix_tokens) + int(model.patch_embed.num_patches)
        fitted = {}
        if num_selects is None:  # not given: the official 32 per tapped block, at most the block's tokens
            num_selects = min(32, tokens)
            if num_selects != 32:
                fitted["num_selects"] = f"{num_selects} (a tapped block has only {tokens} tokens)"
        if isinstance(num_selects, (list, tuple)):
            if len(num_selects) != len(taps):
                raise ConfigError(f"head pim: num_selects has {len(num_selects)} entries for {len(taps)} tapped blocks")
            sel = list(num_selects)
        else:
            sel = [num_selects] * len(taps)
        sel = [int_arg("pim", "num_selects", s, 1, tokens, f" (a tapped block has {tokens} tokens)") for s in sel]
        if sum(sel) < 32:
            raise ConfigError(f"head pim: num_selects add up to {sum(sel)}; the combiner pools every 32 selected "
                              "tokens into one graph node, so they must add up to at least 32")
        fpn_size = int_arg("pim", "fpn_size", fpn_size, 4, 1 << 16)
        lambdas = {name: float_arg("pim", name, value, 0.0, float("inf")) for name, value in
                   (("lambda_b", lambda_b), ("lambda_s", lambda_s), ("lambda_n", lambda_n), ("lambda_c", lambda_c))}
        head = cls(int(model.embed_dim), num_classes, taps, sel, fpn_size, lambdas)
        head.fitted = fitted
        resolved = {"tap_blocks": taps,
                    "num_selects": sel if isinstance(num_selects, (list, tuple)) else sel[0],
                    "fpn_size": fpn_size, **lambdas}
        return head, resolved

    def after_attach(self, model: nn.Module) -> None:
        # PIM reads raw block outputs and classifies with its combiner
        model.norm = nn.Identity()
        model.fc_norm = nn.Identity()
        model.head = nn.Identity()
        if getattr(model, "head_dist", None) is not None:
            model.head_dist = nn.Identity()
        if getattr(model, "attn_pool", None) is not None:
            model.attn_pool = None

    def extra_repr(self) -> str:
        return f"tap_blocks={self.tap_blocks}, num_selects={self.num_selects}, fpn_size={self.fpn_size}"

    def check_schedule(self, model: nn.Module, schedule) -> None:
        pass  # restored grids: every position of a tapped block is there whatever the schedule

    def features(self, model: nn.Module, x: torch.Tensor, drop=None) -> List[torch.Tensor]:
        """The tapped blocks' token sequences (B, prefix + grid, C), restored under patch drop."""
        observer = _TapObserver(self.tap_blocks, int(model.num_prefix_tokens))
        model.forward_tokens(x, drop, observer=observer)
        return observer.features

    def predict(self, feats: List[torch.Tensor]):
        hs = [proj(f) for proj, f in zip(self.proj, feats)]
        for i in range(len(hs) - 1, 0, -1):  # top-down: deepest first
            hs[i - 1] = hs[i - 1] + hs[i]
        token_logits = [cls(h.transpose(1, 2)).transpose(1, 2) for cls, h in zip(self.classifier, hs)]  # B, S, K
        selected, chosen = [], []
        for h, logits, n in zip(hs, token_logits, self.num_selects):
            conf = logits.softmax(dim=-1).amax(dim=-1)           # B, S
            idx = conf.topk(n, dim=1).indices                    # B, n, most confident first
            selected.append(h.gather(1, idx.unsqueeze(-1).expand(-1, -1, h.shape[-1])))
            chosen.append(idx)
        return self.combiner(torch.cat(selected, dim=1)), token_logits, chosen

    def losses(self, logits, token_logits, chosen, labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        lam = self.lambdas
        aux: Dict[str, torch.Tensor] = {}
        if lam["lambda_b"]:
            aux["pim_blocks"] = lam["lambda_b"] * sum(F.cross_entropy(t.mean(1), labels) for t in token_logits)
        if lam["lambda_s"]:
            terms = []
            for t, idx in zip(token_logits, chosen):
                sel = t.gather(1, idx.unsqueeze(-1).expand(-1, -1, t.shape[-1]))
                terms.append(F.cross_entropy(sel.flatten(0, 1), labels.repeat_interleave(idx.shape[1])))
            aux["pim_selected"] = lam["lambda_s"] * sum(terms)
        if lam["lambda_n"]:
            terms = []
            for t, idx in zip(token_logits, chosen):
                B, S, K = t.shape
                if S == idx.shape[1]:
                    continue
                rest = torch.ones(B, S, device=t.device, dtype=t.dtype).scatter(1, idx, 0.0)
                err = (torch.tanh(t) + 1.0).pow(2).sum(-1)       # MSE against -1, summed over classes
                terms.append((err * rest).sum() / (B * (S - idx.shape[1]) * K))
            if terms:
                aux["pim_dropped"] = lam["lambda_n"] * sum(terms)
        if lam["lambda_c"] != 1.0:
            aux["pim_combiner"] = (lam["lambda_c"] - 1.0) * F.cross_entropy(logits, labels)
        return aux

    def forward_model(self, model: nn.Module, x: torch.Tensor, drop, labels):
        if model.training and labels is None:
            raise ConfigError("head 'pim' needs labels in training mode: call model(x, drop=..., labels=y) "
                              "(or model.eval() for predictions)")
        logits, token_logits, chosen = self.predict(self.features(model, x, drop))
        if not model.training:
            return logits
        return logits, self.losses(logits, token_logits, chosen, labels)
