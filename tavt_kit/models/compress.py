"""Structural pruning of attention heads and MLP width with torch-pruning.

The residual width (embedding dimension) is kept, so the pruned model still
takes every token schedule and patch drop composes with pruning: a pruned
block has fewer heads and a narrower MLP, and keeps fewer tokens.

The new widths are recorded in the model spec (``spec["pruned"]``: heads and
MLP hidden width per block), so a checkpoint of a pruned model rebuilds from
its file alone (:func:`apply_pruned_shapes` at load time) and
:func:`tavt_kit.count_macs` follows the new widths from the modules.
"""
from __future__ import annotations

from typing import Callable, Iterable, List, Optional, Tuple

import torch
from torch import nn

from ..errors import ConfigError, UnsupportedModelError
from .widths import pruned_shapes

IMPORTANCES = ("magnitude", "taylor")


def _torch_pruning():
    try:
        import torch_pruning as tp
    except ImportError:
        raise ConfigError("structural pruning needs torch-pruning: pip install torch-pruning") from None
    return tp


def prune_model(
    model: nn.Module,
    *,
    ratio: Optional[float] = None,
    macs_target: Optional[float] = None,
    head_ratio: Optional[float] = None,
    importance: str = "magnitude",
    calibration: Optional[Iterable[Tuple[torch.Tensor, torch.Tensor]]] = None,
    global_pruning: bool = True,
    steps: int = 16,
    log: Callable[[str], None] = lambda s: None,
) -> nn.Module:
    """Prune heads and MLP channels of a token-drop timm ViT, in place.

    Args:
        ratio: fraction of MLP channels to remove (and of heads, unless ``head_ratio``).
        macs_target: prune in ``steps`` increments until the full-schedule MACs
            are at or below this number (instead of ``ratio``).
        head_ratio: fraction of attention heads to remove (default: ``ratio``;
            with ``macs_target`` the same schedule as the MLP).
        importance: ``magnitude`` (L2 of each group) or ``taylor`` (first-order,
            needs ``calibration`` batches of (images, labels)).
        global_pruning: rank channels across blocks (blocks lose different widths).
    Returns:
        the same model, smaller; ``model.spec["pruned"]`` records the widths.
    """
    from .macs import count_macs
    from .token_drop import TokenDropMixin

    tp = _torch_pruning()
    if not isinstance(model, TokenDropMixin):
        raise UnsupportedModelError("prune_model needs a timm ViT built by create_model() or patch()")
    if (ratio is None) == (macs_target is None):
        raise ConfigError("give exactly one of ratio (e.g. 0.3) or macs_target (e.g. 10e9)")
    if ratio is not None and not 0.0 < ratio < 1.0:
        raise ConfigError(f"ratio={ratio}: expected a fraction in (0, 1)")
    if head_ratio is not None and not 0.0 <= head_ratio < 1.0:
        raise ConfigError(f"head_ratio={head_ratio}: expected a fraction in [0, 1)")
    if importance not in IMPORTANCES:
        raise ConfigError(f"importance={importance!r}: expected one of {', '.join(IMPORTANCES)}")
    if importance == "taylor" and calibration is None:
        raise ConfigError("importance='taylor' needs calibration batches (calibration=None; expected an iterable "
                          "of (images, labels))")
    full_macs = count_macs(model, model.full_schedule()).total()
    if macs_target is not None and not 0 < macs_target < full_macs:
        raise ConfigError(f"macs_target={macs_target:.4g}: expected a positive number below the model's "
                          f"{full_macs:.4g} MACs ({full_macs / 1e9:.3f} G)")

    was_training = model.training
    schedule = model.schedule
    model.schedule = None  # trace the full model: every token-carrying layer is in the graph
    model.eval()
    H, W = model.patch_embed.img_size
    example = torch.randn(1, 3, H, W)
    imp = tp.importance.GroupMagnitudeImportance(p=2) if importance == "magnitude" \
        else tp.importance.GroupTaylorImportance()
    ignored: List[nn.Module] = [model.patch_embed.proj]  # keeps the residual width: schedules still apply
    for name in ("head", "head_dist"):
        if isinstance(getattr(model, name, None), nn.Module):
            ignored.append(getattr(model, name))
    if getattr(model, "attn_pool", None) is not None:
        ignored.append(model.attn_pool)
    num_heads = {blk.attn.qkv: blk.attn.num_heads for blk in model.blocks}
    target_ratio = ratio if ratio is not None else 0.9
    pruner = tp.pruner.MetaPruner(
        model, example, importance=imp, global_pruning=global_pruning,
        pruning_ratio=target_ratio, iterative_steps=1 if ratio is not None else steps,
        num_heads=num_heads, prune_num_heads=True, prune_head_dims=False,
        head_pruning_ratio=head_ratio if head_ratio is not None else target_ratio,
        ignored_layers=ignored)

    def step() -> None:
        if importance == "taylor":
            model.zero_grad()
            for x, y in calibration:
                nn.functional.cross_entropy(model(x), y).backward()
        # torch-pruning's global head ranking fails (UnboundLocalError: head_thres) on a step that
        # removes no head; such a step prunes MLP channels only
        heads_left = sum(pruner.num_heads.values())
        target = pruner.per_step_head_pruning_ratio[min(pruner.current_step + 1, len(pruner.per_step_head_pruning_ratio) - 1)]
        no_heads = global_pruning and heads_left - int(pruner.initial_total_heads * (1 - target)) <= 0
        pruner.prune_num_heads = not no_heads
        try:
            pruner.step()
        finally:
            pruner.prune_num_heads = True
        for blk in model.blocks:  # the heads the pruner left, for timm's reshape
            attn = blk.attn
            attn.num_heads = pruner.num_heads[attn.qkv]
            attn.attn_dim = attn.num_heads * attn.head_dim

    if ratio is not None:
        step()
    else:
        for i in range(steps):
            step()
            macs = count_macs(model, model.full_schedule()).total()
            log(f"prune step {i + 1}/{steps}: {macs / 1e9:.3f} G MACs")
            if macs <= macs_target:
                break
        else:
            raise ConfigError(f"macs_target {macs_target / 1e9:.3f} G not reached by pruning at most 90 %")
    model.zero_grad(set_to_none=True)
    for p in model.parameters():
        p.requires_grad_(True)
    model.schedule = schedule
    model.train(was_training)
    if getattr(model, "spec", None) is not None:
        model.spec["pruned"] = pruned_shapes(model)
    return model
