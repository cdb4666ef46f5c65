"""``fgvc-kit bench``: latency on the target (``measure``), latency tables (``profile``), predictions (``predict``).

    fgvc-kit bench [measure] --checkpoint CKPT [--drop ...] [--keep-ratio ...] [--backend B]
                             [--latency-batch-size 1,8]
    fgvc-kit bench measure --exported model.onnx [--checkpoint CKPT]
    fgvc-kit bench profile --checkpoint CKPT [--backend B] [--latency-batch-size 1] [--validate 20]
                           [--reducers drop,merge] [--time-limit 60]
    fgvc-kit bench predict --latency-table TABLE --drop ... [--checkpoint CKPT]

Thin: parses arguments and calls :mod:`tavt_kit.bench`. Without a mode it measures.
"""
from __future__ import annotations

import argparse

from ..target import BACKENDS, Precision
from .common import (Parser, add_deprecated, add_device, add_threads, add_timing_arguments, positional_deprecated,
                     precision, target_threads, warn)

MODES = ("measure", "profile", "predict")
#: the precisions of ``--precision`` (:class:`~tavt_kit.target.Precision`, torch-free for parsing)
PRECISIONS = Precision.ALL
DEFAULT_OUT = "runs/bench"
#: ``bench profile --time-limit``'s default (tavt_kit.bench.profile_cap.PROFILE_TIME_LIMIT_S, torch-free here)
PROFILE_TIME_LIMIT_S = 60.0


#: the spellings of measure's batch sizes, which also take a comma-separated list (``1,8`` as ``1 8``)
_BATCH_FLAGS = ("--latency-batch-size", "--batch-size", "--batch")


def normalize_argv(argv):
    """``fgvc-kit bench ...`` without a mode is ``fgvc-kit bench measure ...``; measure's
    ``--latency-batch-size 1,8`` is ``--latency-batch-size 1 8``."""
    argv = list(argv)
    if not argv or argv[0] not in MODES + ("-h", "--help"):
        argv = ["measure"] + argv
    if argv[0] != "measure":
        return argv
    out, after_batch = [], False
    for a in argv:
        flag, eq, value = a.partition("=")
        if flag in _BATCH_FLAGS and eq and "," in value:
            out += [flag] + [v for v in value.split(",") if v]
        elif after_batch and "," in a and not a.startswith("-"):
            out += [v for v in a.split(",") if v]
        else:
            out.append(a)
        after_batch = a in _BATCH_FLAGS or (after_batch and not a.startswith("-"))
    return out


def _model_args(p, exported: bool) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--checkpoint", metavar="FILE",
                   help="the model: a checkpoint file or a model name (default fgvc_tiny)"
                        + ("; with --exported, the checkpoint the exported file must match" if exported else ""))
    if exported:
        g.add_argument("--exported", metavar="FILE", help="measure an exported .onnx / OpenVINO .xml file as it is "
                                                          "(its schedule is fixed at export)")
    g.add_argument("--img-size", type=int, metavar="N", help="image size (position embeddings are resampled)")
    # the old positional model / exported file
    p.add_argument("positional", nargs="*", help=argparse.SUPPRESS)


def _schedule_args(p) -> None:
    g = p.add_argument_group("schedules")
    g.add_argument("--drop", action="append", default=[], metavar="FILE|COUNTS",
                   help="schedule: drop-config JSON file (the row is named after it) or comma-separated patch-token "
                        "counts (repeatable)")
    g.add_argument("--keep-ratio", action="append", default=[], metavar="RATIOS",
                   help="schedule from keep ratios: RATIO or BLOCK:RATIO,... (repeatable)")
    g.add_argument("--random", type=int, default=0, metavar="N",
                   help="add N random TAVT-style schedules (keep ratio per block in --random-range)")
    g.add_argument("--random-range", metavar="LO,HI",
                   help="keep-ratio range of the --random schedules (default 0.8,1.0)")
    g.add_argument("--no-full", action="store_true", help="do not add the full model (no speed-up column)")


def _target_args(p, many_batches: bool) -> None:
    t = p.add_argument_group("target")
    t.add_argument("--backend", choices=BACKENDS,
                   help="inference backend (default torch eager); torch-cudagraph replays each schedule captured "
                        "once as a CUDA graph (CUDA only); onnxruntime/openvino export to ONNX first")
    add_device(t, "cpu")
    nargs = "+" if many_batches else None
    t.add_argument("--latency-batch-size", dest="batch_size", type=int, nargs=nargs, metavar="N",
                   help="images per timed call: one or more, e.g. 1 8 or 1,8 (default 1)" if many_batches
                   else "images per timed call, the batch the table is for (default 1)")
    for old in ("--batch-size", "--batch"):
        add_deprecated(p, old, "--latency-batch-size", "batch_size", type=int, nargs=nargs)
    add_threads(t)
    t.add_argument("--precision", default="fp32", type=precision, metavar="PRECISION",
                   help="fp32, bf16, fp16 or int8 (default fp32; OpenVINO would pick bf16 on bf16 CPUs): with "
                        "OpenVINO bf16/fp16 where the CPU has them, int8 = each model or part quantised with NNCF "
                        "(random calibration: timing only; with --exported, a quantised file); with a torch backend "
                        "on CUDA, bf16/fp16 = the weights cast to that type")
    t.add_argument("--exporter", default="auto", choices=("auto", "dynamo", "torchscript"),
                   help="ONNX exporter for onnxruntime/openvino (auto: TorchScript, dynamo as fallback)")
    t.add_argument("--compile-backend", default="inductor", metavar="NAME",
                   help="torch.compile backend (default inductor)")


def _timing_args(p, old_budget: bool = True) -> None:
    m = p.add_argument_group("measurement")
    add_timing_arguments(m)
    if old_budget:  # measure's --budget is a budget of --search
        add_deprecated(p, "--budget", "--time-budget", "time_budget", type=float)
    m.add_argument("--seed", type=int, default=0, metavar="N", help="seed of inputs and random schedules (default 0)")


def _output_args(p, plots: bool = True) -> None:
    o = p.add_argument_group("output")
    if not plots:  # predict: prints, and writes a file only when asked for
        o.add_argument("--out", metavar="DIR", help="folder to also write predictions.json into (default: none, print only)")
    else:
        o.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help=f"output folder (default {DEFAULT_OUT})")
        o.add_argument("--workdir", metavar="DIR", help="keep exported files here (default: a temporary folder)")
        o.add_argument("--no-plot", action="store_true", help="do not write PNG plots")
    o.add_argument("--json", action="store_true", help="print JSON instead of the table")
    o.add_argument("--quiet", action="store_true", help="no progress messages")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = ("Measure latency (p50/p90/p99), throughput and peak memory of a model at token schedules on "
                     "this machine, or build a latency table for searches elsewhere. Without a mode: measure.")
    sub = p.add_subparsers(dest="mode", metavar="MODE", parser_class=Parser)
    m = sub.add_parser("measure", help="latency of a model at schedules, or of an exported file (the default)",
                       description="Measure a checkpoint at the schedules given (and the full model), or an exported "
                                   "file; writes bench.json, bench.md and bench.png into --out.")
    _model_args(m, exported=True)
    _schedule_args(m)
    m.add_argument("--search", metavar="FILE",
                   help="search.json: measure each budget's pick (and the full model) on the search's own target "
                        "(backend, device, batch, threads, precision) unless a flag says otherwise; --checkpoint "
                        "defaults to the search's, --latency-table to its table")
    m.add_argument("--budget", action="append", default=[], metavar="BUDGET",
                   help="with --search: measure only this budget of the finished search (its label, e.g. 15ms or "
                        "'20G MACs'; repeatable): what export ships for it, and the full model (default: every "
                        "budget)")
    _target_args(m, many_batches=True)
    m.add_argument("--latency-table", metavar="FILE",
                   help="latency_table.json from fgvc-kit bench profile: add its predictions to the results")
    add_deprecated(m, "--table", "--latency-table", "latency_table")
    _timing_args(m, old_budget=False)
    _output_args(m)
    pr = sub.add_parser("profile", help="per-block latency vs token count -> latency_table.json",
                        description="Time one representative block at a grid of token counts (and the embedding "
                                    "and head) on this machine; writes latency_table.json (+ .png) into --out.")
    _model_args(pr, exported=False)
    _target_args(pr, many_batches=False)
    _timing_args(pr)
    g = pr.add_argument_group("profile")
    g.add_argument("--grid", metavar="N|LIST",
                   help="token counts to time blocks at: a number of points (default 13) or a comma-separated list")
    g.add_argument("--token-multiple", type=int, default=1, metavar="N",
                   help="profile for a search of aligned schedules (fgvc-kit search --token-multiple N): the grid's "
                        "counts, the calibration's and the validation's schedules at sequence lengths that are "
                        "multiples of N (default 1: any)")
    g.add_argument("--validate", type=int, default=0, metavar="N",
                   help="measure N random schedules directly and report the table's prediction error (default 0)")
    g.add_argument("--random-range", metavar="LO,HI",
                   help="keep-ratio range of the --validate schedules (default 0.8,1.0)")
    g.add_argument("--no-calibrate", action="store_true", help="skip the whole-model offset calibration")
    g.add_argument("--reducers", metavar="LIST",
                   help="reducing blocks the table covers: drop, merge (ToMe token merging) or drop,merge "
                        "(default: the model's reducer); a schedule whose blocks use another cannot be predicted")
    g.add_argument("--time-limit", type=float, default=PROFILE_TIME_LIMIT_S, metavar="SECONDS",
                   help=f"seconds of timing for the whole profile (at least 1; default {PROFILE_TIME_LIMIT_S:g}), "
                        "shared by its parts and whole models: each keeps what it has when its share is spent, and "
                        "the table states its noise (building and exporting parts come on top)")
    g.add_argument("--statistic", default="median", choices=("median", "min"),
                   help="what the table holds: median latency (default) or the fastest run (min; robust on a "
                        "machine shared with other jobs)")
    _output_args(pr)
    pd = sub.add_parser("predict", help="latency of schedules predicted from a latency table (no measuring)",
                        description="Predict the latency of schedules from a latency table made on the target "
                                    "and print them; with --out, also write predictions.json there.")
    pd.add_argument("--latency-table", metavar="FILE", help="latency_table.json from fgvc-kit bench profile")
    pd.add_argument("latency_table_positional", nargs="?", help=argparse.SUPPRESS)  # the old positional TABLE
    pd.add_argument("--checkpoint", metavar="FILE",
                    help="the model (a checkpoint file or a model name) the table must have been made for")
    pd.add_argument("--img-size", type=int, metavar="N", help="image size of --checkpoint")
    _schedule_args(pd)
    f = pd.add_argument_group("the table must be for (checked when given)")
    f.add_argument("--backend", choices=BACKENDS, help="the backend the table is for (default: not checked)")
    add_device(f, "not checked", what="the device the table is for")
    f.add_argument("--latency-batch-size", dest="batch_size", type=int, metavar="N",
                   help="the batch the table is for (default: not checked)")
    for old in ("--batch-size", "--batch"):
        add_deprecated(pd, old, "--latency-batch-size", "batch_size", type=int)
    f.add_argument("--threads", type=int, metavar="N", help="the threads the table is for (default: not checked)")
    f.add_argument("--precision", type=precision, metavar="PRECISION",
                   help="fp32, bf16, fp16 or int8, the precision the latencies are for (a table profiled at another "
                        "is refused; default: not checked)")
    f.add_argument("--seed", type=int, default=0, metavar="N", help="seed of --random schedules (default 0)")
    _output_args(pd, plots=False)


def _measured(args):
    """The model (``--checkpoint``) and exported file (``--exported``); the old positional spelling of either still
    works."""
    from ..errors import ConfigError

    exported = getattr(args, "exported", None)
    if args.positional:
        if len(args.positional) > 1:
            raise ConfigError(f"expected one model or exported file, got {len(args.positional)}: "
                              f"{' '.join(args.positional)}")
        t = args.positional[0]
        if t.isdigit():
            raise ConfigError(f"{t}: expected a model (--checkpoint), not a number; a latency table is for one "
                              "batch size: give one --latency-batch-size")
        if t.lower().endswith((".onnx", ".xml")) and hasattr(args, "exported"):
            warn(f"a positional exported file is deprecated; use --exported {t}")
            if exported:
                raise ConfigError("give the exported file once (--exported)")
            exported = t
        else:
            warn(f"a positional model is deprecated; use --checkpoint {t}")
            if args.checkpoint:
                raise ConfigError("give the model once (--checkpoint)")
            args.checkpoint = t
    return args.checkpoint, exported


def _policy(args):
    """The timing options (each with the one default of every command, cli.common.TIMING_DEFAULTS)."""
    from ..bench.timing import TimingPolicy

    return TimingPolicy(warmup=args.warmup, min_repeats=args.min_repeats, max_repeats=args.max_repeats,
                        budget_s=args.time_budget, rel_ci=args.rel_ci)


def _range(args):
    """``--random-range`` as (lo, hi), keep ratios with 0 < lo <= hi <= 1 (default 0.8, 1.0); given without the
    random schedules it is for (``--random``, ``--validate`` of profile), it is refused."""
    from ..errors import ConfigError

    text, count = getattr(args, "random_range", None), ("--validate" if args.mode == "profile" else "--random")
    if text is None:
        return 0.8, 1.0
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--random-range: expected LO,HI (e.g. 0.8,1.0), got {text!r}") from None
    if not 0 < lo <= hi <= 1:
        raise ConfigError(f"--random-range {text}: expected keep ratios LO,HI with 0 < LO <= HI <= 1 (e.g. 0.8,1.0)")
    if not getattr(args, count.strip("-")):
        raise ConfigError(f"--random-range {text}: the range of the {count} schedules; give {count} N with it, or "
                          "leave it out")
    return lo, hi


def _schedules(args, model):
    from .common import parse_drop

    import os

    out, labels = [], []
    for i, d in enumerate(args.drop):
        out.append(parse_drop(d, None, model))
        if os.path.isfile(d):  # a drop config: the row is named after its file
            labels.append(os.path.splitext(os.path.basename(d))[0])
        else:
            labels.append(f"drop {i + 1}" if len(args.drop) > 1 else "drop")
    for i, k in enumerate(args.keep_ratio):
        out.append(parse_drop(None, k, model))
        labels.append(f"keep {k}")
    if args.random:
        from ..schedules import random_schedules

        lo, hi = _range(args)
        for i, s in enumerate(random_schedules(model.depth, model.num_patches, args.random, lo, hi, args.seed)):
            out.append(s)
            labels.append(f"random {i + 1}")
    for label, counts, reducers in getattr(args, "search_deployables", None) or []:
        from ..schedules import TokenSchedule

        out.append(model.make_schedule(TokenSchedule(tuple(counts), model.num_patches, reducers=reducers)))
        labels.append(label)
    # drop duplicates (same counts and reducers: a merge and a drop at the same counts are two rows), keep the
    # first label
    seen, sched, labs = set(), [], []
    for s, l in zip(out, labels):
        key = (s.counts, s.reducers)
        if key in seen:
            continue
        seen.add(key)
        sched.append(s)
        labs.append("full" if s.is_full else l)
    return sched, labs


def _say(args):
    import sys

    if args.quiet:
        return None
    return lambda text: print(f"fgvc-kit bench: {text}", file=sys.stderr, flush=True)


#: separability (rms, max of |attn(L_in) + mlp(L_out) - measured| / measured) a table's split is trusted within
SEPARABLE_RMS, SEPARABLE_MAX = 0.05, 0.15


def with_judgements(lines, d) -> list:
    """``bench profile``'s summary ``lines`` with a judgement under each separability line (``d``: the table's
    dict, whose fitted splits the lines report in order)."""
    said = iter(separability_lines(d))
    out = []
    for line in lines:
        out.append(line)
        if line.startswith("separability"):
            out.append(next(said, ""))
    return [line for line in out if line]


def separability_lines(d) -> list:
    """A judgement of each fitted split of a latency table (``d``: its dict)."""
    out = []
    for key, what in (("separability", "dropping"), ("merge_separability", "merging")):
        sep = d.get(key)
        if not sep:
            continue
        rms, worst = 100 * sep["rms_rel"], 100 * sep["max_abs_rel"]
        if sep["rms_rel"] <= SEPARABLE_RMS and sep["max_abs_rel"] <= SEPARABLE_MAX:
            out.append(f"               fine: the split predicts whole {what} blocks within {worst:.1f}% "
                       f"(rms {rms:.1f}%)")
        else:
            out.append(f"               high: predictions for {what} blocks may be off by up to {worst:.0f}% "
                       f"(rms {rms:.1f}%; trusted within {100 * SEPARABLE_RMS:.0f}% rms and "
                       f"{100 * SEPARABLE_MAX:.0f}% max); profile again on an idle machine (or --statistic min "
                       "on a shared one)")
    return out


def _from_search(args) -> None:
    """``--search``: the picks to measure, the checkpoint and table they came from, and the search's target for
    every target flag not given (a flag given that differs from it is said, once)."""
    import os

    from ..errors import ConfigError
    from ..search import SearchResult

    result = SearchResult.load(args.search, "--search")
    result.check_finished(args.search)
    doc = result.doc
    if getattr(args, "exported", None):
        raise ConfigError("--search measures the search's picks from the checkpoint; --exported measures one file: "
                          "give one of them")
    folder = os.path.dirname(os.path.abspath(args.search))
    src = (doc.get("source") or {}).get("checkpoint")
    if not args.checkpoint:
        if not src or not os.path.isfile(src):
            raise ConfigError(f"--search {args.search}: the checkpoint it records ({src}) is not here; give "
                              "--checkpoint")
        args.checkpoint = src
    budgets = _chosen_budgets(result, getattr(args, "budget", None) or [], args.search)
    picks = [os.path.join(folder, b.schedule_file) for b in budgets if b.schedule_file and b.on_your_model is None]
    missing = [f for f in picks if not os.path.isfile(f)]
    if missing:
        raise ConfigError(f"--search {args.search}: {missing[0]} (a pick's drop config) is missing")
    args.drop = list(args.drop) + picks
    lat = doc.get("latency") or {}
    args.search_deployables = _recommended_deployables(budgets, lat)
    target = lat.get("target") or {}
    if not target:
        return  # MAC budgets only: no target to keep; the flags (or their defaults) say where to measure
    want = {"backend": target.get("backend"), "device": target.get("device"),
            "batch_size": target.get("batch_size"), "threads": target.get("threads")}
    from ..target import Precision

    prec = target.get("precision")
    want["precision"] = Precision.parse(prec) if prec else None
    given = {"backend": args.backend, "device": args.device, "threads": args.threads,
             "batch_size": (args.batch_size[0] if isinstance(args.batch_size, list) and len(args.batch_size) == 1
                            else args.batch_size), "precision": None if args.precision == "fp32" else args.precision}
    differ = [f"{k} {given[k]} (the search's: {want[k]})" for k in want
              if given[k] is not None and want[k] is not None and given[k] != want[k]]
    if args.backend is None:
        args.backend = want["backend"]
    if args.device is None:
        args.device = want["device"]
    if args.threads is None:
        args.threads = want["threads"]
    if args.batch_size is None and want["batch_size"]:
        args.batch_size = [int(want["batch_size"])]
    if args.precision == "fp32" and want["precision"]:
        args.precision = want["precision"]
    table = lat.get("table")
    if args.latency_table is None and table and os.path.isfile(table):
        args.latency_table = table
    if differ:
        warn(f"measuring with {', '.join(differ)}: not the target the search's latency budgets are for")


def _chosen_budgets(result, names, path: str) -> list:
    """The budgets of ``result`` (the search; :class:`~tavt_kit.search.BudgetResult`) that ``--budget`` names (all
    without it); another budget is refused, naming the budgets the search holds."""
    from ..errors import ConfigError

    if not names:
        return list(result.budgets.values())
    out = []
    for name in names:
        b = result.budget(name, need_pick=True)
        if b.picked_from == "front":
            raise ConfigError(f"--budget {name}: not a budget of {path} (it holds {', '.join(result.budgets) or 'none'}"
                              "); bench --search measures what a budget of the search ships")
        if b.label not in [o.label for o in out]:
            out.append(b)
    return out


def _recommended_deployables(budgets: list, lat: dict) -> list:
    """(label, counts, reducers) of each budget's recommendation that is a deployable of your model (ToMe on it,
    or it as it is): what ``export --search --budget`` ships for that budget. Timed on the supernet's weights:
    the same architecture at the same schedule runs the same operations. One at another precision than the
    target's is said, with the flag that times it."""
    from ..search.result import describe_family
    from ..target import Precision

    want = (lat.get("target") or {}).get("precision") or Precision.FP32
    out = []
    for b in budgets:
        rec = b.on_your_model
        if rec is None or not rec.family:
            continue
        entry = b.training_free.get(rec.family)
        name = describe_family(rec.family, entry.raw if entry is not None else {}, short=True)
        prec = rec.precision or want
        if Precision.parse(prec) != Precision.parse(want):
            warn(f"budget {b.label}: the recommendation ({name} on your model) is at {prec}; this bench times "
                 f"{want}: add --precision {prec} to time it")
            continue
        out.append((f"{b.label}: {name} on your model", list(rec.counts), list(rec.reducers) if rec.reducers else
                    rec.reducers))
    return out


def _deployment_target(args, batch_size: int):
    """The :class:`~tavt_kit.target.DeploymentTarget` of ``--backend``, ``--device``, ``--precision``,
    ``--threads`` (0: the default) and a batch size."""
    from ..target import DeploymentTarget

    return DeploymentTarget(backend=args.backend or "torch", device=args.device or "cpu", precision=args.precision,
                            threads=target_threads(args.threads), batch_size=batch_size)


def _warn_oversubscribed(target) -> None:
    """One warning line when other jobs keep the cores busy while the timing runs several threads."""
    from ..machine import oversubscription

    warning = oversubscription(threads=target.threads, remedy="--threads 1")
    if warning:
        warn(warning)


def output_folder(args) -> str:
    """The folder every mode writes (held as its one writer while it runs; see tavt_kit.lock)."""
    return args.out


def run(args) -> int:
    import json
    import os

    from ..errors import ConfigError

    mode = args.mode or "measure"
    _range(args)  # before any work
    say = _say(args)
    if mode == "predict":
        return _predict(args, positional_deprecated(args, "latency_table", "--latency-table"))
    if getattr(args, "search", None):
        _from_search(args)
    elif getattr(args, "budget", None):
        raise ConfigError("--budget names a budget of --search FILE (the seconds of timing per measurement are "
                          "--time-budget)")
    checkpoint, exported = _measured(args)
    batches = args.batch_size if isinstance(args.batch_size, list) else [args.batch_size or 1]
    from ..bench.backends import check_target

    target = _deployment_target(args, batches[0])
    check_target(target)  # before any work (loading a model, exporting)
    if mode == "profile":
        from ..bench.render import plot_table, table_summary
        from ..bench.profile import profile_latency
        from ..bench.profile_cap import check_time_limit, noise_summary
        from ..bench.table import TABLE_FILE

        check_time_limit(args.time_limit, "--time-limit")

        grid = None
        if args.grid:
            try:
                grid = int(args.grid) if "," not in args.grid else [int(v) for v in args.grid.split(",")]
            except ValueError:
                raise ConfigError(f"--grid: expected a number of points or comma-separated counts, "
                                  f"got {args.grid!r}") from None
        from .common import parse_reducers

        reducers = parse_reducers(args.reducers) if args.reducers is not None else None
        _warn_oversubscribed(target)
        table = profile_latency(checkpoint or "fgvc_tiny", target=target, grid=grid, policy=_policy(args),
                                calibrate=not args.no_calibrate, validate=args.validate,
                                validate_range=_range(args), seed=args.seed, exporter=args.exporter,
                                compile_backend=args.compile_backend, workdir=args.workdir, img_size=args.img_size,
                                statistic=args.statistic, reducers=reducers, progress=say,
                                token_multiple=args.token_multiple, time_limit_s=args.time_limit)
        path = table.save(os.path.join(args.out, TABLE_FILE))
        d = table.to_dict()
        if not args.no_plot:
            plot_table(d, os.path.join(args.out, "latency_table.png"))
        if args.json:
            print(json.dumps(d, indent=2))
            return 0
        print("\n".join(with_judgements(table_summary(table, path), d) + [noise_summary(d) or ""]).rstrip())
        for w in d.get("warnings") or []:
            warn(w)
        return 0

    from ..bench.measure import measure_latency
    from ..models import load_model
    from ..bench.backends import file_kind

    schedules, labels = None, None
    if exported is None:
        model = load_model(checkpoint or "fgvc_tiny", args.img_size)
        schedules, labels = _schedules(args, model)
        if not schedules and model.schedule is not None:
            schedules, labels = [model.schedule], ["checkpoint schedule"]
        measured, source, checkpoint = model, checkpoint or "fgvc_tiny", None
    else:
        if file_kind(exported) is None:
            raise ConfigError(f"--exported {exported}: expected an .onnx or OpenVINO .xml file")
        if args.drop or args.keep_ratio or args.random:
            raise ConfigError(f"{exported} has its schedule fixed at export; --drop/--keep-ratio/--random apply to "
                              "checkpoints")
        measured = source = exported
    report = measure_latency(measured, schedules, target=target, batch_sizes=batches, include_full=not args.no_full,
                             labels=labels, policy=_policy(args), checkpoint=checkpoint, table=args.latency_table,
                             workdir=args.workdir, exporter=args.exporter, compile_backend=args.compile_backend,
                             seed=args.seed, progress=say)
    report.source = source
    paths = report.save(args.out, plot=not args.no_plot)
    if args.json:
        print(json.dumps(report.to_dict(keep_samples=False), indent=2))
    else:
        print(report.markdown())
        print()
        print("wrote " + ", ".join(paths.values()))
    if args.json:  # the table printed above lists them (once) otherwise
        for w in report.warnings():
            warn(w)
    return 0


def _predict(args, table_path) -> int:
    import json

    from ..errors import ConfigError
    from ..bench.predict import TableArch, predict_latency
    from ..bench.render import prediction_lines
    from ..bench.table import LatencyTable
    from ..models import load_model

    if not table_path:
        raise ConfigError("--latency-table: give the latency table to predict from (fgvc-kit bench predict "
                          "--latency-table runs/bench/latency_table.json --drop ...)")
    table = LatencyTable.load(table_path)
    if args.checkpoint:
        model = load_model(args.checkpoint, args.img_size)
        table.check(model)
    else:
        model = TableArch(table)
    # only the target fields given are checked
    given = {k: v for k, v in (("backend", args.backend), ("device", args.device), ("precision", args.precision),
                               ("batch_size", args.batch_size), ("threads", args.threads)) if v is not None}
    if given:
        table.check(target=table.target.with_(**given), fields=tuple(given))
    schedules, labels = _schedules(args, model)
    predictions = predict_latency(table, schedules, labels=labels, include_full=not args.no_full)
    path = predictions.save(args.out) if args.out else None  # a file only when asked for
    if args.json:
        print(json.dumps(predictions.to_dict(), indent=2))
        return 0
    print("\n".join(prediction_lines(predictions)))
    if path:
        print(f"wrote {path}")
    return 0

