"""The ``fgvc-kit`` command. Thin: parses arguments and calls the library.

Errors of fgvc-kit's own types are printed as one line (``fgvc-kit: error: ...``)
with exit status 2; no traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

from . import __version__
from .errors import ConfigError, ScheduleError, TavtKitError

#: subcommand -> (module that implements it, one-line help). A module provides
#: ``COMMANDS = {name: (add_arguments(parser), run(args) -> int)}``; a command whose
#: module is not there yet says so.
SUBCOMMANDS = {
    "train": ("tavt_kit.distill.cli", "fine-tune a model on a dataset"),
    "distill": ("tavt_kit.distill.distill_cli", "in-place distillation with patch drop"),
    "evaluate": ("tavt_kit.distill.cli", "accuracy at a schedule"),
    "search": ("tavt_kit.search.cli", "evolutionary search of token schedules under budgets"),
    "export": ("tavt_kit.export.cli", "export to ONNX / OpenVINO with accuracy verification"),
    "prune": ("tavt_kit.export.cli", "structural pruning of heads and MLP width"),
    "bench": ("tavt_kit.bench.cli", "latency and throughput on the target device, latency tables"),
    "report": ("tavt_kit.bench.budget_report", "latency-budget report (Markdown + HTML)"),
    "demo": ("tavt_kit.demo", "the whole pipeline on the built-in demo"),
}


def _command_impl(name: str, module: str):
    import importlib

    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and module.startswith(e.name):
            return None
        raise
    return getattr(mod, "COMMANDS", {}).get(name)


def parse_drop(value: Optional[str], keep_ratio: Optional[str], model):
    """A schedule from ``--drop`` (JSON file or comma-separated counts) or ``--keep-ratio``."""
    from .models import TokenSchedule

    if value and keep_ratio:
        raise ConfigError("give either --drop or --keep-ratio, not both")
    if value:
        if os.path.exists(value) or value.endswith(".json"):
            return model.make_schedule(TokenSchedule.load(value))
        try:
            counts = [int(v) for v in value.split(",")]
        except ValueError:
            raise ScheduleError(f"--drop: expected a drop-config JSON file or comma-separated integers, "
                                f"got {value!r}") from None
        return model.make_schedule(counts)
    if keep_ratio:
        try:
            if ":" in keep_ratio:
                ratios = {int(k): float(v) for k, v in (item.split(":") for item in keep_ratio.split(","))}
            else:
                ratios = [float(keep_ratio)] * model.depth
        except ValueError:
            raise ScheduleError(f"--keep-ratio: expected RATIO or BLOCK:RATIO,... (e.g. 3:0.7,6:0.7,9:0.7), "
                                f"got {keep_ratio!r}") from None
        return TokenSchedule.from_ratios(ratios, model.depth, model.num_patches)
    return None


def _load_any(target: str, img_size):
    from .models import create_model, load_checkpoint

    if os.path.exists(target):
        return load_checkpoint(target, **({"img_size": img_size} if img_size else {}))
    if os.sep in target or target.endswith((".safetensors", ".pth", ".pt", ".bin", ".npz")):
        from .errors import CheckpointError

        raise CheckpointError(f"{target}: checkpoint not found")
    return create_model(target, **({"img_size": img_size} if img_size else {}))


def cmd_info(args) -> int:
    from .models import count_macs, spec_of

    model = _load_any(args.checkpoint, args.img_size)
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
    print(f"model        {spec['backbone']['name']}  ({type(model).__name__})")
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fgvc-kit",
        description="Deployable fine-grained vision transformers: patch drop, in-place distillation, "
                    "token-schedule search under FLOP/latency budgets, ONNX/OpenVINO export.")
    p.add_argument("--version", action="version", version=f"fgvc-kit {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    info = sub.add_parser("info", help="print a model's spec, parameters and MACs (full and at a schedule)")
    info.add_argument("checkpoint", nargs="?", default="fgvc_tiny",
                      help="checkpoint file (.safetensors, .npz, .pth, .bin) or model name (default: fgvc_tiny)")
    info.add_argument("--drop", help="schedule: drop-config JSON file or comma-separated patch-token counts")
    info.add_argument("--keep-ratio", help="schedule from keep ratios: RATIO for every block or BLOCK:RATIO,...")
    info.add_argument("--img-size", type=int, help="image size (position embeddings are resampled)")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.set_defaults(func=cmd_info)
    for name, (module, text) in SUBCOMMANDS.items():
        impl = _command_impl(name, module)
        if impl is None:
            sp = sub.add_parser(name, help=f"{text} (not available yet)", add_help=False)
            sp.add_argument("rest", nargs=argparse.REMAINDER)
            sp.set_defaults(func=None, pending=name)
        else:
            add_arguments, run = impl
            sp = sub.add_parser(name, help=text, description=text)
            add_arguments(sp)
            sp.set_defaults(func=run)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.func is None:
        print(f"fgvc-kit {args.pending}: not available yet in this version", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except TavtKitError as e:
        print(f"fgvc-kit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fgvc-kit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
