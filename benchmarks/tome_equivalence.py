"""Our merge reducer against ToMe's own timm patch (facebookresearch/ToMe): max |logit difference| per r.

Usage::

    python benchmarks/tome_equivalence.py --tome /path/to/ToMe [--r 0 4 8 16] [--device cpu]

Imports ``tome.patch.timm`` from the given checkout, applies it to a deepcopy of
a random-init timm ViT (``vit_small_patch16_224`` and a tiny ViT), sets
``model.r = r`` (ToMe merges r tokens in every block, clamped to half the
mergeable tokens) and compares with a ``reducer="merge"`` fgvc-kit model of the
same weights at the equivalent schedule ``counts[i] = n_i - min(r, n_i // 2)``.
ToMe's ``ToMeBlock`` ignores LayerScale (``ls1``/``ls2``), so only models without
it are compared; its ``ToMeAttention`` assumes no q/k norm.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import sys

import torch


def tome_counts(num_patches: int, depth: int, r: int):
    counts, n = [], num_patches
    for _ in range(depth):
        n -= min(r, n // 2)
        counts.append(n)
    return counts


def compare(name: str, kwargs: dict, rs, tome_patch, device: str, batch: int, prop_attn: bool):
    import timm

    import tavt_kit

    torch.manual_seed(0)
    base = timm.create_model(name, num_classes=100, **kwargs).eval()
    with torch.no_grad():  # random weights everywhere, not only the default init
        for p in base.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    ours = tavt_kit.create_model(name, num_classes=100, reducer="merge", prop_attn=prop_attn, **kwargs).eval()
    ours.load_state_dict(base.state_dict())
    tome = copy.deepcopy(base)
    tome_patch(tome, prop_attn=prop_attn)
    base, ours, tome = base.to(device), ours.to(device), tome.to(device)
    size = base.patch_embed.img_size
    x = torch.randn(batch, 3, *size, device=device)
    n, depth = ours.num_patches, len(ours.blocks)
    rows = []
    with torch.no_grad():
        ref_full = base(x)
        for r in rs:
            tome.r = r
            expected = tome(x)
            counts = tome_counts(n, depth, r)
            got = ours(x, drop=counts)
            rows.append((r, counts, (got - expected).abs().max().item(), (expected - ref_full).abs().max().item()))
    print(f"{name} {kwargs or ''} prop_attn={prop_attn} ({n} patch tokens, depth {depth}, batch {batch}, {device})")
    for r, counts, diff, moved in rows:
        shown = counts if len(counts) <= 12 else counts[:12] + ["..."]
        print(f"  r={r:<3d} max|dlogit| ours vs ToMe = {diff:.3e}   (ToMe vs unmerged: {moved:.3e})  counts={shown}")
    return max(d for _, _, d, _ in rows)


def load_tome(checkout: str):
    """The ``tome`` package of a checkout of facebookresearch/ToMe, imported from that folder (nothing installed)."""
    init = os.path.join(checkout, "tome", "__init__.py")
    if not os.path.isfile(init):
        raise SystemExit(f"--tome {checkout}: no tome/__init__.py there; expected a checkout of facebookresearch/ToMe")
    spec = importlib.util.spec_from_file_location("tome", init, submodule_search_locations=[os.path.dirname(init)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["tome"] = module  # its own absolute imports (tome.merge, tome.utils) resolve to this package
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tome", required=True, help="a checkout of facebookresearch/ToMe")
    ap.add_argument("--r", type=int, nargs="+", default=[0, 1, 4, 8, 13, 16, 24])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=4)
    args = ap.parse_args(argv)
    tome = load_tome(args.tome)  # tome.patch.timm is ToMe's apply_patch for timm

    apply = tome.patch.timm

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    worst = 0.0
    for prop_attn in (True, False):
        worst = max(worst, compare("vit_small_patch16_224", {}, args.r, apply, args.device,
                                   args.batch, prop_attn))
        worst = max(worst, compare("vit_base_patch16_224", dict(img_size=64, patch_size=8, embed_dim=48, depth=4,
                                                                num_heads=2), args.r, apply,
                                   args.device, args.batch, prop_attn))
        worst = max(worst, compare("deit_small_distilled_patch16_224", {}, args.r, apply,
                                   args.device, args.batch, prop_attn))
    print(f"worst max|dlogit| = {worst:.3e} ({'PASS' if worst <= 1e-4 else 'FAIL'} at 1e-4)")
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
