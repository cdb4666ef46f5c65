"""``fgvc-kit info``: a model's spec, parameters and MACs, full and at a schedule."""
from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", metavar="FILE",
                   help="checkpoint file (.safetensors, .npz, .pth, .bin) or model name (default: fgvc_tiny)")
    p.add_argument("checkpoint_positional", nargs="?", help=argparse.SUPPRESS)
    p.add_argument("--drop", metavar="FILE|COUNTS",
                   help="schedule: drop-config JSON file or comma-separated patch-token counts")
    p.add_argument("--keep-ratio", metavar="RATIOS",
                   help="schedule from keep ratios: RATIO for every block or BLOCK:RATIO,...")
    p.add_argument("--img-size", type=int, metavar="N", help="image size (position embeddings are resampled)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def run(args) -> int:
    from ..models import count_macs, describe_backbone, spec_of
    from ..models import load_model
    from .common import parse_drop, positional_deprecated

    model = load_model(positional_deprecated(args, "checkpoint", "--checkpoint", "fgvc_tiny"), args.img_size)
    schedule = parse_drop(args.drop, args.keep_ratio, model)
    spec = spec_of(model)
    full = count_macs(model, model.full_schedule())
    at = count_macs(model, schedule) if schedule is not None else None
    params = sum(p.numel() for p in model.parameters())
    if args.json:
        out = {"spec": spec, "params": params, "macs_full": full.to_dict(),
               "macs_at_schedule": at.to_dict() if at else None}
        print(json.dumps(out, indent=2))
        return 0
    H, W = spec["img_size"]
    name, built = describe_backbone(spec), spec["backbone"]["name"]
    print(f"model        {name}  ({type(model).__name__}" + (f"; built as {built})" if built != name else ")"))
    print(f"image        {H}x{W}, patch {spec['patch_size'][0]}, grid {spec['num_patches']} tokens "
          f"+ {spec['num_prefix_tokens']} prefix")
    print(f"blocks       {spec['depth']}, width {spec['embed_dim']}, heads {model.blocks[0].attn.num_heads}")
    print(f"classes      {spec['num_classes']}" + (f" ({', '.join(spec['class_names'][:5])}"
                                                    f"{', ...' if len(spec['class_names']) > 5 else ''})"
                                                    if spec.get("class_names") else ""))
    print(f"head         {spec['head']['name']}   scorer {spec['token_drop']['scorer']}   "
          f"fuse {spec['token_drop']['fuse']}")
    print(f"params       {params / 1e6:.2f} M")
    print(f"MACs (full)  {full.total() / 1e9:.3f} G")
    if at is not None:
        print(f"schedule     {list(schedule.counts)}")
        print(f"MACs (drop)  {at.total() / 1e9:.3f} G  ({full.total() / at.total():.2f}x fewer)")
    print()
    print(at if at is not None else full)
    return 0
