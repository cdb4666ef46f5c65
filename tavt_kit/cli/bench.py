"""``fgvc-kit bench``: latency on the target, latency tables, predictions from a table.

    fgvc-kit bench [TARGET] [--drop ...] [--keep-ratio ...] [--backend B] [--batch 1 8] ...
    fgvc-kit bench profile [TARGET] [--backend B] [--batch 1] [--validate 20] ...
    fgvc-kit bench predict TABLE --drop ... [--checkpoint CKPT]

Thin: parses arguments and calls :mod:`tavt_kit.bench`. Top-level imports stay light
(the command list of ``fgvc-kit --help`` imports this module).
"""
from __future__ import annotations

import argparse
import sys

MODES = ("profile", "predict")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = (
        "Measure latency (p50/p90/p99), throughput and peak memory of a model at token schedules on this "
        "machine, or build a latency table for searches elsewhere.\n\n"
        "  fgvc-kit bench [TARGET]            measure TARGET (checkpoint, model name, .onnx, .xml) at the\n"
        "                                     schedules given (and the full model); writes bench.json,\n"
        "                                     bench.md and bench.png into --out\n"
        "  fgvc-kit bench profile [TARGET]    per-block latency vs token count -> latency_table.json\n"
        "  fgvc-kit bench predict TABLE       latency of schedules predicted from a table (no measuring)")
    p.add_argument("args", nargs="*", metavar="[profile|predict] TARGET",
                   help="optional mode, then a checkpoint, model name (default fgvc_tiny), exported .onnx/.xml "
                        "file, or (predict) a latency table")
    g = p.add_argument_group("schedules")
    g.add_argument("--drop", action="append", default=[],
                   help="schedule: drop-config JSON file or comma-separated patch-token counts (repeatable)")
    g.add_argument("--keep-ratio", action="append", default=[],
                   help="schedule from keep ratios: RATIO or BLOCK:RATIO,... (repeatable)")
    g.add_argument("--random", type=int, default=0, metavar="N",
                   help="add N random TAVT-style schedules (keep ratio per block in --random-range)")
    g.add_argument("--random-range", default="0.8,1.0", metavar="LO,HI",
                   help="keep-ratio range of random schedules (default 0.8,1.0)")
    g.add_argument("--no-full", action="store_true", help="do not add the full model (no speed-up column)")
    g.add_argument("--img-size", type=int, help="image size (position embeddings are resampled)")
    t = p.add_argument_group("target")
    t.add_argument("--backend", choices=("torch", "torch-compile", "onnxruntime", "openvino"),
                   help="inference backend (default torch eager); onnxruntime/openvino export to ONNX first")
    t.add_argument("--device", help="cpu or cuda[:N] (default cpu)")
    t.add_argument("--batch", type=int, nargs="+", help="batch sizes (profile: one; default 1)")
    t.add_argument("--threads", type=int, help="intra-op threads (default: torch's thread count)")
    t.add_argument("--precision", default="f32", choices=("f32", "bf16", "f16"),
                   help="OpenVINO inference precision (default f32; OpenVINO would pick bf16 on bf16 CPUs)")
    t.add_argument("--exporter", default="auto", choices=("auto", "dynamo", "torchscript"),
                   help="ONNX exporter for onnxruntime/openvino (auto: dynamo, TorchScript as fallback)")
    t.add_argument("--compile-backend", default="inductor", help="torch.compile backend (default inductor)")
    t.add_argument("--checkpoint", help="the checkpoint an exported file (or a table, for predict) must match")
    t.add_argument("--table", help="latency table: add its predictions to the results")
    m = p.add_argument_group("measurement")
    m.add_argument("--warmup", type=int, help="untimed runs per measurement (default 3; profile 2)")
    m.add_argument("--min-repeats", type=int, help="timed runs at least (default 7; profile 5)")
    m.add_argument("--max-repeats", type=int, help="timed runs at most (default 1000)")
    m.add_argument("--budget", type=float, help="seconds of timing per measurement (default 3; profile 1)")
    m.add_argument("--rel-ci", type=float, help="stop when the median's 95%% CI is within this fraction (0.01)")
    m.add_argument("--seed", type=int, default=0, help="seed of inputs and random schedules")
    pg = p.add_argument_group("profile")
    pg.add_argument("--grid", help="token counts to time blocks at: a number of points (default 13) or a "
                                   "comma-separated list")
    pg.add_argument("--validate", type=int, default=0, metavar="N",
                    help="measure N random schedules directly and report the table's prediction error")
    pg.add_argument("--no-calibrate", action="store_true", help="skip the whole-model offset calibration")
    pg.add_argument("--statistic", default="median", choices=("median", "min"),
                    help="what the table holds: median latency (default) or the fastest run (min; robust on a "
                         "machine shared with other jobs)")
    o = p.add_argument_group("output")
    o.add_argument("--out", default="runs/bench", help="output folder (default runs/bench)")
    o.add_argument("--workdir", help="keep exported files here (default: a temporary folder)")
    o.add_argument("--no-plot", action="store_true", help="do not write PNG plots")
    o.add_argument("--json", action="store_true", help="print JSON instead of the Markdown table")
    o.add_argument("--quiet", action="store_true", help="no progress messages")


def _mode(args):
    from ..errors import ConfigError

    rest = list(args.args)
    mode = "bench"
    if rest and rest[0] in MODES:
        mode = rest.pop(0)
    if len(rest) > 1:
        raise ConfigError(f"expected one target, got {len(rest)}: {' '.join(rest)}")
    return mode, (rest[0] if rest else None)


def _policy(args, profile: bool):
    from ..bench.profile import profile_policy
    from ..bench.timing import TimingPolicy

    base = profile_policy() if profile else TimingPolicy()
    kw = {}
    for name, attr in (("warmup", "warmup"), ("min_repeats", "min_repeats"), ("max_repeats", "max_repeats"),
                       ("budget", "budget_s"), ("rel_ci", "rel_ci")):
        v = getattr(args, name)
        if v is not None:
            kw[attr] = v
    d = base.to_dict()
    d.update(kw)
    return TimingPolicy(**d)


def _range(text: str):
    from ..errors import ConfigError

    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--random-range: expected LO,HI (e.g. 0.8,1.0), got {text!r}") from None
    return lo, hi


def _schedules(args, model):
    from .common import parse_drop

    out, labels = [], []
    for i, d in enumerate(args.drop):
        out.append(parse_drop(d, None, model))
        labels.append(f"drop {i + 1}" if len(args.drop) > 1 else "drop")
    for i, k in enumerate(args.keep_ratio):
        out.append(parse_drop(None, k, model))
        labels.append(f"keep {k}")
    if args.random:
        from ..schedules import random_schedules

        lo, hi = _range(args.random_range)
        for i, s in enumerate(random_schedules(model.depth, model.num_patches, args.random, lo, hi, args.seed)):
            out.append(s)
            labels.append(f"random {i + 1}")
    # drop duplicates (same counts), keep the first label
    seen, sched, labs = set(), [], []
    for s, l in zip(out, labels):
        if s.counts in seen:
            continue
        seen.add(s.counts)
        sched.append(s)
        labs.append("full" if s.is_full else l)
    return sched, labs


def _say(args):
    if args.quiet:
        return None
    return lambda text: print(f"fgvc-kit bench: {text}", file=sys.stderr, flush=True)


def run(args) -> int:
    import json
    import os

    from ..errors import ConfigError

    mode, target = _mode(args)
    say = _say(args)
    if mode == "predict":
        return _predict(args, target)
    args.backend = args.backend or "torch"
    args.device = args.device or "cpu"
    args.batch = args.batch or [1]
    target = target or "fgvc_tiny"
    if mode == "profile":
        from ..bench.render import plot_table, validation_lines
        from ..bench.profile import profile_latency

        if len(args.batch) != 1:
            raise ConfigError("a latency table is for one batch size; give one --batch")
        if args.drop or args.keep_ratio or args.random:
            raise ConfigError("profile measures blocks over a grid; --drop/--keep-ratio/--random are for "
                              "fgvc-kit bench (use --validate N for random schedules)")
        grid = None
        if args.grid:
            try:
                grid = int(args.grid) if "," not in args.grid else [int(v) for v in args.grid.split(",")]
            except ValueError:
                raise ConfigError(f"--grid: expected a number of points or comma-separated counts, "
                                  f"got {args.grid!r}") from None
        table = profile_latency(target, backend=args.backend, device=args.device, batch_size=args.batch[0],
                                threads=args.threads, precision=args.precision, grid=grid,
                                policy=_policy(args, True), calibrate=not args.no_calibrate,
                                validate=args.validate, validate_range=_range(args.random_range), seed=args.seed,
                                exporter=args.exporter, compile_backend=args.compile_backend,
                                workdir=args.workdir, img_size=args.img_size, statistic=args.statistic,
                                progress=say)
        path = table.save(os.path.join(args.out, "latency_table.json"))
        d = table.to_dict()
        if not args.no_plot:
            plot_table(d, os.path.join(args.out, "latency_table.png"))
        if args.json:
            print(json.dumps(d, indent=2))
            return 0
        t, mdl = d["target"], d["model"]
        print(f"latency table  {path}")
        print(f"model          {mdl['name']}: {mdl['depth']} blocks, width {mdl['embed_dim']}, "
              f"{mdl['num_patches']} patches, {mdl['img_size'][0]}x{mdl['img_size'][1]}")
        print(f"target         {t['backend']} on {t['device']}, batch {t['batch_size']}, {t['threads']} threads, "
              f"precision {t['precision']}" + (f", exporter {t['exporter']}" if t.get("exporter") else "")
              + f"; statistic {d.get('statistic', 'median')}")
        sep = d["separability"]
        print(f"separability   attn(L_in) + mlp(L_out) vs {sep['pairs']} measured pairs: rms "
              f"{100 * sep['rms_rel']:.2f}%, max {100 * sep['max_abs_rel']:.2f}%")
        print(f"offset         {d['offset_ms']:+.3f} ms (calibrated on {len(d['calibration'] or [])} whole-model runs)")
        v = d.get("validation")
        if v:
            for line in validation_lines(v["schedules"]):
                print("  " + line)
            print(f"validation     {v['n']} random schedules: median |error| {100 * v['median_abs_error_rel']:.1f}%, "
                  f"max {100 * v['max_abs_error_rel']:.1f}% at the table's machine speed; against the raw times "
                  f"{100 * v['median_abs_error_raw_rel']:.1f}% / {100 * v['max_abs_error_raw_rel']:.1f}% "
                  f"(machine speed drift since profiling {100 * v['reference_drift']:+.1f}%)")
        for w in d.get("warnings") or []:
            print(f"fgvc-kit bench: warning: {w}", file=sys.stderr)
        return 0

    from ..bench.measure import measure_latency
    from ..models import load_model
    from ..bench.backends import file_kind

    schedules, labels = None, None
    checkpoint = args.checkpoint
    if file_kind(target) is None:
        if args.checkpoint:
            raise ConfigError("--checkpoint is for exported targets (.onnx/.xml); the target is already a model")
        model = load_model(target, args.img_size)
        schedules, labels = _schedules(args, model)
        if not schedules and model.schedule is not None:
            schedules, labels = [model.schedule], ["checkpoint schedule"]
        target = model
        source = args.args[-1] if args.args else "fgvc_tiny"
    else:
        if args.drop or args.keep_ratio or args.random:
            raise ConfigError(f"{target} has its schedule fixed at export; --drop/--keep-ratio/--random apply to "
                              "checkpoints")
        source = target
    report = measure_latency(target, schedules, backend=args.backend, device=args.device, batch_sizes=args.batch,
                             threads=args.threads, precision=args.precision, include_full=not args.no_full,
                             labels=labels, policy=_policy(args, False), checkpoint=checkpoint,
                             table=args.table, workdir=args.workdir, exporter=args.exporter,
                             compile_backend=args.compile_backend, seed=args.seed, progress=say)
    report.target["source"] = source
    paths = report.save(args.out, plot=not args.no_plot)
    if args.json:
        print(json.dumps(report.to_dict(keep_samples=False), indent=2))
    else:
        print(report.markdown())
        print()
        print("wrote " + ", ".join(paths.values()))
    for w in report.warnings():
        print(f"fgvc-kit bench: warning: {w}", file=sys.stderr)
    return 0


def _predict(args, table_path) -> int:
    import json

    from ..errors import ConfigError
    from ..bench.table import LatencyTable
    from ..bench.target import short_counts
    from ..models import load_model

    if not table_path:
        raise ConfigError("fgvc-kit bench predict needs a latency table: fgvc-kit bench predict TABLE --drop ...")
    table = LatencyTable.load(table_path)
    if args.checkpoint:
        model = load_model(args.checkpoint, args.img_size)
        table.check(model)
    else:
        model = _ArchOf(table)
    if args.batch and len(args.batch) != 1:
        raise ConfigError("a latency table is for one batch size; give one --batch")
    table.check(None, backend=args.backend, device=args.device, batch_size=args.batch[0] if args.batch else None,
                threads=args.threads)
    schedules, labels = _schedules(args, model)
    if not args.no_full:
        schedules.insert(0, model.full_schedule())
        labels.insert(0, "full")
    rows = []
    full = None
    for label, s in zip(labels, schedules):
        ms = table.predict(s)
        full = ms if label == "full" and full is None else full
        rows.append({"label": label, "schedule": list(s.counts), "predicted_ms": ms,
                     "speedup": (full / ms) if full else None})
    if args.json:
        print(json.dumps({"table": table_path, "target": table.target, "predictions": rows}, indent=2))
        return 0
    t = table.target
    print(f"predicted from {table_path} ({table.model.get('name')}, {t.get('backend')} on {t.get('device')}, "
          f"batch {t.get('batch_size')}, {t.get('threads')} threads)")
    for r in rows:
        sp = f"{r['speedup']:.2f}x" if r["speedup"] else ""
        print(f"  {r['label']:<14} {r['predicted_ms']:10.3f} ms  {sp:>7}  {short_counts(r['schedule'])}")
    return 0


class _ArchOf:
    """Just enough of a model (depth, grid) for parsing schedules against a table."""

    def __init__(self, table):
        from ..schedules.schedule import TokenSchedule

        self._T = TokenSchedule
        self.depth = int(table.model["depth"])
        self.num_patches = int(table.model["num_patches"])
        self.schedule = None

    def make_schedule(self, value):
        return self._T.coerce(value, self.depth, self.num_patches)

    def full_schedule(self):
        return self._T.full(self.depth, self.num_patches)
