"""``fgvc-kit export``: a checkpoint at a schedule to ONNX / OpenVINO, verified. Thin over :func:`export_model`."""
from __future__ import annotations

import argparse
import os
import re

DEFAULT_OUT = os.path.join("runs", "export")


# ------------------------------------------------------------------- export
def add_export_arguments(p: argparse.ArgumentParser) -> None:
    from .common import add_deprecated, add_threads, precision
    p.add_argument("--checkpoint", required=True, metavar="FILE",
                   help="model to export (.safetensors from train/distill/prune, or any file load_checkpoint reads)")
    s = p.add_argument_group("schedule (default: the checkpoint's own, else the full model)")
    s.add_argument("--drop", metavar="FILE|COUNTS", help="drop-config JSON file or comma-separated patch-token counts")
    s.add_argument("--keep-ratio", metavar="RATIOS",
                   help="schedule from keep ratios: RATIO for every block or BLOCK:RATIO,...")
    s.add_argument("--search", metavar="FILE", help="search.json written by fgvc-kit search (with --budget)")
    s.add_argument("--pick", choices=("recommended", "searched"),
                   help="with --search: the budget's recommendation (default; ToMe on your model when that beat the "
                        "searched schedule on held-out images) or always the searched schedule")
    s.add_argument("--budget", metavar="BUDGET",
                   help="with --search: a budget of the finished search exports its pick (by label, 15ms or "
                        "'20G MACs', or number); any other budget with its unit (25ms, '30M MACs') exports the most "
                        "accurate point of the search's Pareto front within it (held-out accuracy), said in one "
                        "line")
    o = p.add_argument_group("output")
    o.add_argument("--format", default=None, metavar="LIST",
                   help="onnx, openvino or both, comma-separated (default: onnx; with --search, the runtime its "
                        "latency budgets are for: onnx,openvino for OpenVINO)")
    o.add_argument("--precision", type=precision, metavar="PRECISION",
                   help="fp32 (default; with --search: the precision the search chose for --budget), fp16, bf16 "
                        "(OpenVINO: the fp32 IR run with the bf16 hint), int8 (NNCF "
                        "quantisation, accuracy-controlled on the held-out split; pip install 'fgvc-kit[int8]'), or "
                        "auto: export at every precision this machine runs natively, verify and time each, keep "
                        "the fastest that passes (bf16 and fp16 are refused on a CPU without native support)")
    o.add_argument("--latency-batch-size", type=int, default=None, metavar="N",
                   help="--precision auto: the batch size latency is measured at (default: 1)")
    o.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help=f"output folder: model.onnx / model.xml + .bin and export.json (default: {DEFAULT_OUT})")
    o.add_argument("--exporter", default="auto", choices=("auto", "dynamo", "torchscript"),
                   help="ONNX exporter: auto = TorchScript (the same graph, ~20x faster), PyTorch's dynamo "
                        "exporter as recorded fallback (default: auto)")
    o.add_argument("--opset", type=int, metavar="N", help="ONNX opset (default: 18)")
    v = p.add_argument_group("verification (on by default)")
    v.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip the accuracy check (export.json then says verified: false)")
    v.add_argument("--dataset", dest="verify_data", metavar="NAME",
                   help="dataset to verify on (default: the one recorded in the checkpoint, else demo)")
    add_deprecated(p, "--verify-data", "--dataset", "verify_data")
    v.add_argument("--data", metavar="DIR", help="root folder of --dataset (not needed for demo)")
    v.add_argument("--verify-split", default="test", choices=("test", "holdout", "train", "trainval"),
                   help="split to verify on (default: test)")
    v.add_argument("--verify-images", type=int, metavar="N", help="verify on at most N images (seeded subset)")
    v.add_argument("--max-accuracy-drop", type=float, default=0.5, metavar="POINTS",
                   help="fail when top-1 of an exported file is more than POINTS below PyTorch's (default: 0.5)")
    v.add_argument("--max-logit-diff", type=float, metavar="X",
                   help="also fail when max |logit difference| exceeds X (default: no bound)")
    v.add_argument("--min-agreement", type=float, metavar="FRACTION",
                   help="also fail when fewer than FRACTION of the predictions agree with PyTorch's (default: no bound)")
    v.add_argument("--eval-batch-size", type=int, default=32, metavar="N",
                   help="images per verification batch (default: 32)")
    add_deprecated(p, "--batch-size", "--eval-batch-size", "eval_batch_size", type=int)
    add_threads(v)
    q = p.add_argument_group("int8 calibration and accuracy control")
    q.add_argument("--calibration-images", type=int, default=300, metavar="N",
                   help="calibration images, a seeded subset of --calibration-split (default: 300)")
    q.add_argument("--calibration-split", default="train", metavar="{train,holdout,trainval}",
                   help="split the calibration images come from (default: train; never the test split)")
    q.add_argument("--no-accuracy-control", dest="accuracy_control", action="store_false",
                   help="int8 by plain post-training quantisation (default: NNCF's accuracy control on the "
                        "dataset's held-out split keeps the top-1 drop there within --max-accuracy-drop by "
                        "leaving the most sensitive layers in float)")
    q.add_argument("--accuracy-control-images", type=int, metavar="N",
                   help="validate accuracy control on at most N held-out images (seeded subset; default: all)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the image subsets (default: 0)")


def check_schedule_args(args) -> None:
    """The schedule options that go together, checked before any file is read."""
    from ..errors import ConfigError

    if (args.search is None) != (args.budget is None):
        raise ConfigError("--search and --budget go together: --search search.json --budget 15ms")
    if args.pick is not None and args.search is None:
        raise ConfigError(f"--pick {args.pick}: chooses between a search's recommendation and its searched schedule; "
                          "give it with --search search.json --budget BUDGET")
    if args.search and (args.drop or args.keep_ratio):
        raise ConfigError("give one schedule: --drop, --keep-ratio or --search with --budget")


def check_args(args) -> None:
    """Every check of the options that needs no file (the demo runs it before its first stage): the schedule
    options, the formats and the precision."""
    from ..errors import TavtKitError
    from ..export.formats import check_format_precision, parse_formats

    try:
        check_schedule_args(args)
        if args.format is not None:
            formats = parse_formats(args.format)
            if args.precision is not None and args.precision != "auto":
                check_format_precision(formats, args.precision)
    except TavtKitError as e:
        e.args = (as_dests(str(e)),)
        raise


def _schedule(args, model, search):
    """``(model, schedule, source)``: what ``--search``'s budget ships (``search``: the file, read once), or the
    schedule ``--drop`` / ``--keep-ratio`` give."""
    from .common import drop_file_token_drop, parse_drop, use_recorded_token_drop
    from ..errors import ConfigError
    from ..schedules import schedule_from_drop_file
    from ..search import deployable_from_search

    check_schedule_args(args)
    if search is not None:
        use_recorded_token_drop(model, search.token_drop, f"--search {args.search}")
        found = deployable_from_search(model, search, args.budget, args.pick or "recommended")
        budget = search.budget(args.budget)
        if budget.picked_from == "front":  # a budget the search was not run for: said, with what is exported
            print(f"{budget.note}: exporting {budget.front_point}", flush=True)
        return found
    if args.drop and (os.path.isfile(args.drop) or args.drop.endswith(".json")):
        if args.keep_ratio:
            raise ConfigError("give either --drop or --keep-ratio, not both")
        drop_file_token_drop(model, args.drop)
        return model, schedule_from_drop_file(model, args.drop, "drop"), {"kind": "drop-config",
                                                                           "file": os.path.basename(args.drop)}
    sched = parse_drop(args.drop, args.keep_ratio, model)
    if sched is None:
        return model, None, None
    return model, sched, {"kind": "drop" if args.drop else "keep-ratio", "value": args.drop or args.keep_ratio}


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


#: the names library errors give the export's parameters and option fields (``verify.images=0``) -> this
#: command's dests; the command line's error line then says each dest as its option (``--verify-images 0``)
PARAM_DESTS = {
    "formats": "format", "verify.enabled": "verify", "verify.data": "verify_data", "verify.root": "data",
    "verify.split": "verify_split", "verify.images": "verify_images", "verify.max_accuracy_drop": "max_accuracy_drop",
    "verify.max_logit_diff": "max_logit_diff", "verify.min_agreement": "min_agreement",
    "verify.batch_size": "eval_batch_size", "verify.seed": "seed", "quantize.calibration_split": "calibration_split",
    "quantize.calibration_images": "calibration_images", "quantize.accuracy_control": "accuracy_control",
    "quantize.accuracy_control_images": "accuracy_control_images", "quantize.seed": "seed",
    "options.exporter": "exporter", "options.opset": "opset", "options.checkpoint": "checkpoint",
}
_PARAM = re.compile(r"(?<![\w.])(formats|(?:verify|quantize|options)\.\w+)(?==)")


def as_dests(message: str) -> str:
    """A library error in this command's dests: ``verify.images=0`` -> ``verify_images=0``, and
    ``export_fastest()`` (what ``--precision auto`` runs) -> ``precision='auto'``."""
    message = message.replace("export_fastest()", "precision='auto'")
    return _PARAM.sub(lambda m: PARAM_DESTS.get(m.group(1), m.group(1)), message)


def run_export(args) -> int:
    from ..errors import TavtKitError

    try:
        return _run_export(args)
    except TavtKitError as e:  # said with this command's names (cli/__init__.py turns them into its options)
        e.args = (as_dests(str(e)),)
        raise


def _formats(value, search):
    """``--format`` as a tuple; not given: onnx, and with ``--search`` whose latency budgets are for OpenVINO its
    IR too. Either way one line says when the formats and the search's runtime part."""
    from ..export.formats import BACKEND_OF_FORMAT, parse_formats

    backend = search.latency_backend if search is not None else None
    if value is None:
        if backend == "openvino":
            print("formats onnx,openvino: the search's latency budgets are for openvino (--format to change)",
                  flush=True)
            return parse_formats("onnx,openvino")
        return parse_formats("onnx")
    formats = parse_formats(value)
    if backend in ("openvino", "onnxruntime") and backend not in {BACKEND_OF_FORMAT[f] for f in formats}:
        print(f"note: the search's latency budgets are for {backend}; --format {','.join(formats)} writes no file "
              "for it, so its verdicts do not hold for these files", flush=True)
    return formats


def _run_export(args) -> int:
    import sys

    from ..errors import ConfigError
    from ..export import ExportOptions, QuantizeOptions, VerifyOptions, export_model
    from ..export.formats import BACKEND_OF_FORMAT, check_format_precision
    from ..models import load_checkpoint
    from ..search import SearchResult
    from ..search.deployable import shipped_checkpoint
    from ..target import DeploymentTarget
    from .common import target_threads

    check_args(args)
    # the search.json is read once, before the checkpoint: another kind of file is said as what it is
    search = SearchResult.load(args.search) if args.search else None
    formats = _formats(args.format, search)
    asked = args.precision
    if asked is None:  # a search of (schedule, precision) pairs chose it, else fp32 (checked once it is read)
        args.precision = "fp32"
    auto = args.precision == "auto"
    if not auto:
        args.precision = check_format_precision(formats, args.precision)
    elif not args.verify:
        raise ConfigError("--precision auto keeps the fastest precision that passes verification; it cannot run "
                          "with --no-verify")
    if args.latency_batch_size is not None and not auto:
        raise ConfigError(f"--latency-batch-size {args.latency_batch_size}: only --precision auto measures latency; "
                          "give --precision auto or leave --latency-batch-size out")
    for flag in ("verify_images", "eval_batch_size", "calibration_images", "threads", "latency_batch_size",
                 "accuracy_control_images"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ConfigError(f"--{flag.replace('_', '-')}: expected a positive number, got {value}")
    if args.max_accuracy_drop < 0:
        raise ConfigError(f"--max-accuracy-drop: expected a non-negative number of points, got {args.max_accuracy_drop}")
    verify = VerifyOptions(enabled=args.verify, data=args.verify_data, root=args.data, split=args.verify_split,
                           images=args.verify_images, max_accuracy_drop=args.max_accuracy_drop,
                           max_logit_diff=args.max_logit_diff, min_agreement=args.min_agreement,
                           batch_size=args.eval_batch_size, seed=args.seed)
    quantize = QuantizeOptions(calibration_split=args.calibration_split, calibration_images=args.calibration_images,
                               accuracy_control=args.accuracy_control,
                               accuracy_control_images=args.accuracy_control_images, seed=args.seed)
    if not os.path.exists(args.checkpoint):
        from ..errors import CheckpointError

        raise CheckpointError(f"--checkpoint {args.checkpoint}: checkpoint not found")
    model = load_checkpoint(args.checkpoint).eval()
    model, schedule, source = _schedule(args, model, search)
    checkpoint = shipped_checkpoint(source or {}, args.checkpoint)
    if (source or {}).get("weights") == "finetuned":  # the search recommends its pick fine-tuned toward your model
        print(f"budget {source.get('budget')}: exporting the recommendation, the pick fine-tuned toward your model "
              f"({checkpoint}): {source.get('why')}; --pick searched exports the supernet's pick", flush=True)
    if (source or {}).get("weights") == "parent":  # the search recommends a training-free deployable of it
        print(f"budget {source.get('budget')}: exporting the recommendation, {source.get('recommended')} on your "
              f"model ({checkpoint}): {source.get('why')}; --pick searched exports the searched schedule",
              flush=True)
    chosen = (source or {}).get("precision") if asked is None else None
    if chosen and chosen != "fp32":
        try:
            check_format_precision(formats, chosen)
        except ConfigError as e:
            raise ConfigError(f"--search chose {chosen} for --budget {args.budget}; {e}") from None
        args.precision = chosen
        print(f"precision {chosen}: chosen by the search for budget {source.get('budget')}", flush=True)

    def log(msg: str) -> None:
        print(msg, flush=True)

    # where the files run: the runtime of the first format, at the precision asked for (auto: chosen by timing
    # at --latency-batch-size), with --threads
    target = DeploymentTarget(backend=BACKEND_OF_FORMAT[formats[0]], precision="fp32" if auto else args.precision,
                              threads=target_threads(args.threads), batch_size=args.latency_batch_size or 1)
    options = ExportOptions(exporter=args.exporter, opset=args.opset, checkpoint=checkpoint,
                            schedule_source=source)
    common = dict(target=target, verify=verify, quantize=quantize, options=options, log=log)
    try:
        if auto:
            from ..bench import export_fastest

            res = export_fastest(model, args.out, schedule, formats, **common)
        else:
            res = export_model(model, args.out, schedule, formats, **common)
    finally:
        sys.stdout.flush()
    doc = res.doc
    print(f"schedule {doc['schedule']['counts']}: {doc['macs']['schedule'] / 1e9:.4g} GMACs "
          f"({doc['macs']['reduction']:.2f}x fewer than the full model)")
    for fmt, f in doc["files"].items():
        extra = f" + {f['weights']}" if f.get("weights") else ""
        print(f"  {fmt:<9} {res.precisions.get(fmt, doc['precision']):<5} {f['path']}{extra}  "
              f"{_size(f['total_bytes'])}  "
              f"({doc['exports'][fmt].get('exporter', 'onnx -> openvino') if fmt == 'onnx' else 'from ONNX'})")
    if not res.verified:
        print(f"NOT verified: {res.reason}")
    else:
        print(f"verified (max accuracy drop {args.max_accuracy_drop:g} points)")
    print(f"wrote {res.json_path}")
    return 0


def output_folder(args) -> str:
    """The folder this command writes (held as its one writer while it runs; see tavt_kit.lock)."""
    return args.out


add_arguments = add_export_arguments
run = run_export
