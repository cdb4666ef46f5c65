"""``fgvc-kit search``: evolutionary search of token schedules under MAC and latency budgets."""
from __future__ import annotations

import argparse
import functools
import os

from ..errors import ConfigError, UnreachableBudgetError
from ..search.evolution import EvolutionSettings
from ..search.finetune import PickFinetune
from ..search.fitness import FITNESSES
from ..search.objective import MissingTableError
from ..search.precisions import is_auto, parse_precisions
from ..search.settings import EvaluationOptions, LatencyOptions, SpaceOptions
from ..search.ship import ShipPolicy
from ..schedules.space import check_multiple
from ..search.recommend import check_ship_confidence
from ..search.result import describe_family
from ..target import BACKENDS
from .common import (THREADS_HELP, add_deprecated, add_device, add_refused, add_threads, budget_suggestion,
                     device, flag_message, parse_latency_budget, parse_macs, parse_reducers,
                     target_threads)

#: the library's defaults, which the flags take (one place)
EVOLUTION, EVALUATION, LATENCY, SHIP = EvolutionSettings(), EvaluationOptions(), LatencyOptions(), ShipPolicy()


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .data_args import add_data_arguments

    p.add_argument("--checkpoint", required=True, metavar="FILE",
                   help="a supernet (from fgvc-kit distill), or your trained model (from fgvc-kit train or converted "
                        "from elsewhere): then merge schedules are searched on its own weights, no training, and "
                        "compared with it, ToMe on it and it at each precision")
    p.add_argument("--bound", type=float, metavar="FRACTION",
                   help="with your trained model (no recorded search space): the most of a block's tokens a schedule "
                        "may merge (default 0.5, ToMe's reach; above 0.5 a block merges in several bipartite rounds)")
    p.add_argument("--scorer", choices=("tavt", "cls", "tavt-sampled"),
                   help="rank tokens by this scorer instead of the one the checkpoint was distilled with: tavt-sampled "
                        "keeps the fused attention kernel, faster at hundreds of tokens (search.json records it; "
                        "export --search and evaluate use it)")
    add_data_arguments(p)
    b = p.add_argument_group("budgets (none: map the whole accuracy-cost Pareto front)")
    b.add_argument("--macs-budget", action="append", default=[], metavar="MACS",
                   help="MAC budget per image, e.g. 20G (repeatable)")
    b.add_argument("--latency-budget", action="append", default=[], metavar="TIME",
                   help="latency budget per batch, e.g. 15ms, or a share of your model's latency on the target, "
                        "e.g. 50%% (judged by the ratio to your model timed in the same round) (repeatable)")
    add_refused(p, "--budget", budget_suggestion)
    lat = p.add_argument_group("latency objective")
    lat.add_argument("--latency-table", metavar="FILE", action="append", default=[],
                     help="predict latency from a table made by 'fgvc-kit bench profile' on the target device "
                          "(repeatable with --precisions: one table per precision, each profiled at it)")
    add_device(lat, "cpu", what="measure latency on this device")
    lat.add_argument("--backend", choices=BACKENDS,
                     help="latency backend (default: the runtime export ships, openvino where installed, else torch; "
                          "with a table: the table's, and it must match)")
    lat.add_argument("--latency-source", choices=("table", "measure"), default=LATENCY.source,
                     help="without --latency-table: 'table' (default, the fast path) profiles a latency table for the "
                          "target once, keeps it beside the checkpoint (latency-tables/) for the next search, predicts "
                          "every candidate from it and times only the picks; 'measure' times every candidate (slow)")
    lat.add_argument("--remeasure", action="store_true",
                     help="with --latency-table: also measure the chosen schedules on this machine")
    lat.add_argument("--latency-batch-size", type=int, metavar="N",
                     help="batch size the latency is for (default: the table's; 1 when measured here)")
    add_deprecated(p, "--latency-batch", "--latency-batch-size", "latency_batch_size", type=int)
    add_threads(lat, THREADS_HELP[:-1] + "; with --latency-table: the table's)")
    e = p.add_argument_group("evolution (TAVT's defaults)")
    e.add_argument("--population", type=int, default=EVOLUTION.population, metavar="N",
                   help=f"schedules kept per generation, the best by fitness (default {EVOLUTION.population})")
    e.add_argument("--generations", type=int, default=EVOLUTION.generations, metavar="N",
                   help=f"generations (default {EVOLUTION.generations})")
    e.add_argument("--mutations", type=int, default=EVOLUTION.mutations, metavar="N",
                   help=f"mutated children per generation (default {EVOLUTION.mutations})")
    e.add_argument("--crossovers", type=int, default=EVOLUTION.crossovers, metavar="N",
                   help=f"crossover children per generation: the mean of two parents (default {EVOLUTION.crossovers})")
    e.add_argument("--mutation-prob", type=float, default=EVOLUTION.mutation_prob, metavar="P",
                   help=f"probability that a mutation changes each block's count (default {EVOLUTION.mutation_prob})")
    e.add_argument("--fitness", choices=FITNESSES, default=EVALUATION.fitness,
                   help="what is maximised on the held-out images: accuracy, nll (minus the cross-entropy) or kl "
                        f"(minus the KL divergence from the full model's predictions; no labels needed) "
                        f"(default {EVALUATION.fitness}: it predicts test accuracy best, see the README)")
    e.add_argument("--seed", type=int, default=EVOLUTION.seed, metavar="N",
                   help=f"seed of the search and of --subset (default {EVOLUTION.seed})")
    e.add_argument("--reducers", metavar="LIST",
                   help="the reducers the search may give each block: drop, merge or drop,merge (default: those the "
                        "supernet was distilled with, and merge too where it drops and the model can merge (timm "
                        "ViTs; merging needs no training) unless a latency table cannot price it; drop: TAVT's space)")
    pp = p.add_argument_group("precision (searched with the schedule under latency budgets)")
    pp.add_argument("--precisions", metavar="LIST", default="auto",
                    help="search (schedule, precision) pairs under latency budgets: a comma-separated list of fp32, "
                         "bf16, fp16, int8, e.g. fp32,bf16,int8, or auto (default): fp32 and each precision your model "
                         "runs measurably faster at on the target, timed beside fp32 there (about 15 s for a small "
                         "model; int8 where NNCF is installed; said in one line, with the precisions skipped and why); each budget "
                         "reports its best pair and the best fp32-only schedule, and your model at each precision "
                         "competes. Latency from one --latency-table per precision (one missing is profiled here where "
                         "the tables were made here), or measured here with OpenVINO. MAC budgets: fp32")
    pp.add_argument("--verify-top", type=int, default=EVALUATION.verify_top, metavar="N",
                    help="int8 pairs quantised with NNCF and measured per budget at most, best first, before one is "
                         "reported (default 3)")
    pp.add_argument("--front-time-limit", type=float, default=EVALUATION.front_time_limit, metavar="SECONDS",
                    help="seconds spent measuring the int8 Pareto front on the deployed model, each point an NNCF "
                         "quantisation and a run (the front reports the points measured in that time, spread over "
                         "its latencies; each budget's pick is measured anyway; default "
                         f"{EVALUATION.front_time_limit:g})")
    pp.add_argument("--calibration-images", type=int, default=EVALUATION.calibration_images, metavar="N",
                    help="int8 calibration images, a seeded subset of the training split "
                         f"(default {EVALUATION.calibration_images})")
    p.add_argument("--reuse", action="append", default=[], metavar="DIR",
                   help="an earlier search of this checkpoint on the same held-out images (its folder; repeatable): "
                        "the candidates it evaluated are taken, not evaluated again (searching the same supernet "
                        "for another target or other budgets)")
    p.add_argument("--subset", type=int, metavar="N", help="search on N held-out images (seeded subset; default all)")
    p.add_argument("--selection", default="0", metavar="FRACTION",
                   help="the fraction of the held-out images set aside, never scored by the evolution, on which each "
                        "budget's recommendation is chosen among the searched pick, ToMe on your model and your model "
                        "(unbiased by the evolution's choice, at the cost of fewer images for the evolution); auto: "
                        "0.5 where the supernet records your model and both halves keep 200 images (default 0: "
                        "none, see docs/benchmarks/selection_split.md)")
    p.add_argument("--no-shrinkage", dest="shrinkage", action="store_false",
                   help="choose each budget's pick on its held-out fitness as measured, not corrected for the "
                        "winner's curse (by default a pick's lead over schedules that use more of the budget must "
                        "exceed what its noise explains; see docs/benchmarks/shrinkage.md)")
    p.add_argument("--no-parent-search", dest="parent_search", action="store_false",
                   help="do not also search schedules on your model's own weights (by default, where the supernet "
                        "records your model, the same evolution runs on it with merging only, no training, and its "
                        "pick competes with the supernet's as 'searched_parent'; it doubles the search's time)")
    p.add_argument("--ship-confidence", type=float, default=SHIP.confidence, metavar="P",
                   help="how sure the held-out images must make it that the supernet's pick beats the best "
                        "deployable on your model's weights (your model, ToMe on it, the schedule searched on it) "
                        "before it is recommended: a one-sided confidence of the paired per-image difference "
                        "(default 0.95; 0.5: any lead; see docs/benchmarks/ship_gate.md)")
    p.add_argument("--finetune-steps", type=int, default=0, metavar="N",
                   help="after the search, fine-tune each budget's pick toward your model (the supernet's recorded "
                        "parent) for N steps on the training images, into finetuned/ of --out, and let it compete "
                        "for the budget as the supernet's pick does (it ships only where it beats the best "
                        "deployable on your model's weights beyond noise); export --search exports it where it is "
                        "recommended (default 0: none; see docs/benchmarks/pick_finetune.md)")
    p.add_argument("--finetune-lr", type=float, default=PickFinetune.lr, metavar="RATE",
                   help=f"the pick fine-tune's AdamW learning rate (default {PickFinetune.lr:g}, measured on a model "
                        "trained from scratch; a pretrained model's picks gained at 1e-05 and lost at 5e-05: "
                        "docs/benchmarks/real_model.md)")
    p.add_argument("--token-multiple", type=int, default=1, metavar="N",
                   help="search only schedules whose reducing blocks leave sequence lengths (tokens kept and the "
                        "class token) that are multiples of N, with the latency table profiled at such lengths: "
                        "runtimes tile the sequence, and on OpenVINO on an AVX-512/AMX CPU such schedules ran 3 %% "
                        "faster per MAC in fp32 and int8 (default 1: every count; see "
                        "docs/benchmarks/token_alignment.md)")
    p.add_argument("--eval-batch-size", dest="batch_size", type=int, default=EVALUATION.batch_size, metavar="N",
                   help=f"images per evaluation batch (default {EVALUATION.batch_size})")
    p.add_argument("--eval-device", type=device, default=EVALUATION.device, metavar="DEVICE",
                   help="where candidates are scored on the held-out and test images: auto, cpu, cuda or cuda:N "
                        "(default auto: cuda when there is one, else cpu; --device is where latency is measured)")
    add_deprecated(p, "--batch-size", "--eval-batch-size", "batch_size", type=int)
    p.add_argument("--out", default="runs/search", metavar="DIR",
                   help="output folder: search.json, its journal, schedules.json and one drop config per budget, "
                        "plots (default runs/search)")


def _check_positive(args):
    """The options checked before the checkpoint and the images are loaded; returns the evolution's settings
    (:class:`~tavt_kit.search.EvolutionSettings` checks its own fields: its errors name them, said as the flags)."""
    from ..search import EvolutionSettings

    settings = EvolutionSettings(args.population, args.generations, args.mutations, args.crossovers,
                                 args.mutation_prob, args.seed)
    for flag in ("batch_size", "verify_top", "calibration_images"):
        v = getattr(args, flag)
        if v is None or v < 1:
            name = "eval-batch-size" if flag == "batch_size" else flag.replace("_", "-")
            raise ConfigError(f"--{name}: expected a positive integer, got {v}")
    if args.finetune_steps is None or args.finetune_steps < 0:
        raise ConfigError(f"--finetune-steps: expected a number of steps >= 0 (0: no fine-tune), got "
                          f"{args.finetune_steps}")
    if args.subset is not None and args.subset < 1:
        raise ConfigError(f"--subset: expected a positive number of images, got {args.subset}")
    if args.latency_table and args.latency_source == "measure":
        raise ConfigError("--latency-table and --latency-source measure contradict each other: the table predicts "
                          "every candidate's latency, measure times each one on this machine; give one of them")
    args.selection = _selection(args.selection)
    check_ship_confidence(args.ship_confidence)  # its error names --ship-confidence (flag_message)
    check_multiple(args.token_multiple)  # before the checkpoint and images are loaded
    return settings


def check_args(args) -> None:
    """Every check of the options that needs no file (the demo runs it before its first stage)."""
    _check_positive(args)


def _selection(text: str):
    """``--selection``: ``auto`` or a fraction in [0, 1) (the library checks the range against the images)."""
    from ..search.selection import check_selection

    try:
        return check_selection(text)
    except ConfigError:
        raise ConfigError(f"--selection: expected auto or a fraction of the held-out images in [0, 1), got "
                          f"{text!r}") from None


def output_folder(args) -> str:
    """The folder this command writes (held as its one writer while it runs; see tavt_kit.lock)."""
    return args.out


def run(args) -> int:
    from .data_args import data_spec_from_args
    from ..models import load_checkpoint
    from ..search import search_schedules
    from ..search.evolution import Budget
    from ..target import DeploymentTarget

    settings = _check_positive(args)
    budgets = [Budget("macs", parse_macs(v)) for v in args.macs_budget]
    budgets += [parse_latency_budget(v) for v in args.latency_budget]
    model = load_checkpoint(args.checkpoint).eval()
    if args.scorer is not None and args.scorer != model.scorer:
        from ..models.token_drop import check_scorer

        try:
            check_scorer(model, args.scorer)
        except ConfigError as e:
            raise ConfigError(f"--scorer {args.scorer}: {e}") from None
        print(f"scorer {args.scorer}: tokens are ranked by it here (the checkpoint's is {model.scorer})", flush=True)
        model.scorer = args.scorer
    dspec = data_spec_from_args(args, fallback=model.spec.get("data"))
    if args.latency_batch_size is not None and args.latency_batch_size < 1:
        raise ConfigError(f"--latency-batch-size: expected a positive batch size, got {args.latency_batch_size}")
    table = args.latency_table or None
    # the runtime export ships (OpenVINO on the CPU where installed): a latency budget is for the file you deploy;
    # the library resolves --precisions (auto: timed here) and makes the objectives from it or from the tables
    named = not is_auto(args.precisions) and len(parse_precisions(args.precisions)) > 1
    backend = args.backend or ("openvino" if named else DeploymentTarget.default().backend)
    target = DeploymentTarget(backend=backend, device=args.device or "cpu",
                              threads=args.threads if table else target_threads(args.threads),
                              batch_size=args.latency_batch_size or 1)
    # a table's target unless a flag contradicts it (checked field by field)
    require = {"backend": args.backend, "device": args.device, "threads": args.threads,
               "batch_size": args.latency_batch_size}
    reducers = None
    if args.reducers is not None:
        reducers = parse_reducers(args.reducers)  # the library checks the model can merge
    finetune = None
    if args.finetune_steps:
        from ..data import build_dataset

        finetune = PickFinetune(build_dataset(dspec, split="train", model=model), steps=args.finetune_steps,
                                lr=args.finetune_lr)
    try:
        result = _search(search_schedules, args, model, dspec, budgets, target, table, require, reducers, finetune,
                         settings)
    except (MissingTableError, UnreachableBudgetError) as e:
        raise _said_with_flags(e, args) from None
    print(summary(result))
    print(f"wrote {os.path.join(args.out, 'search.json')}")
    return 0


def _search(search_schedules, args, model, dspec, budgets, target, table, require, reducers, finetune, settings):
    """The library's search with the options the flags give."""
    return search_schedules(
        model, dspec, budgets,
        latency=LatencyOptions(target=target, table=table, precisions=args.precisions, remeasure=args.remeasure,
                               require={k: v for k, v in require.items() if v is not None} if table else None,
                               source=args.latency_source, table_cache=os.path.join(
                                   os.path.dirname(os.path.abspath(args.checkpoint)), "latency-tables")),
        evolution=settings,
        evaluation=EvaluationOptions(fitness=args.fitness, subset=args.subset, batch_size=args.batch_size,
                                     verify_top=args.verify_top, calibration_images=args.calibration_images,
                                     front_time_limit=args.front_time_limit, device=args.eval_device,
                                     reuse=tuple(args.reuse or ())),
        ship=ShipPolicy(confidence=args.ship_confidence, selection=args.selection, shrinkage=args.shrinkage,
                        parent_search=args.parent_search),
        space=SpaceOptions(reducers=reducers, bound=args.bound, token_multiple=args.token_multiple),
        finetune=finetune, out=args.out,
        source={"checkpoint": os.path.abspath(args.checkpoint), "data": dspec.to_dict()}, log=_said)


def _said_with_flags(e, args) -> ConfigError:
    """The library's refusals that name what this command's flags say otherwise: an unreachable budget as its
    ``--macs-budget``, a precision without a latency table with the command that profiles it on the target."""
    if isinstance(e, UnreachableBudgetError):
        return ConfigError(f"--macs-budget {e.budget.label}: {e.reason}")
    t = e.target
    threads = f" --threads {t.threads}" if t.threads is not None else ""
    multiple = f" --token-multiple {args.token_multiple}" if args.token_multiple > 1 else ""
    return ConfigError(f"--latency-table: no table profiled at {e.precision}; make one on the target with "
                       f"'fgvc-kit bench profile --checkpoint {args.checkpoint} --backend {t.backend} --device "
                       f"{t.device} --latency-batch-size {t.batch_size}{threads} --precision {e.precision}"
                       f"{multiple}' and give it with another --latency-table (or --precisions without "
                       f"{e.precision})")


def summary(result) -> str:
    """What the search found, in lines: your model, the full and smallest schedules, then per budget its pick(s),
    baselines, what needs no training on your model and the recommendation (a :class:`SearchResult`)."""
    lines = []
    full = result.full

    def row(name, d):
        if d is None:
            return f"  {name:<22} nothing in the search space meets this budget"
        lat = f"{d.latency_ms:8.2f} ms" if d.latency_ms is not None else ""
        if d.latency_measured_ms is not None:
            frac, span = d.measured_fraction_of_full, d.measured_fraction_interval
            span = f" [{span[0]:.2f}, {span[1]:.2f}]" if span and span[1] > span[0] else ""
            lat += f" (measured {d.latency_measured_ms:.2f} ms" + (
                f", {frac:.2f}{span} of the full model's" if frac is not None and d is not full else "") + (
                ", over the budget)" if d.measured_within_budget is False else ")")
        test = f"{100 * d.test_accuracy:6.2f}" if d.test_accuracy is not None else "   n/a"
        if d.test_interval:
            test += " [{:.2f}, {:.2f}]".format(*(100 * v for v in d.test_interval))
        vs = d.vs_searched
        versus = ""
        if vs:
            versus = "  searched {:+.2f} [{:+.2f}, {:+.2f}] {}".format(
                100 * vs.difference, *(100 * v for v in vs.interval), "" if vs.resolved else "(within noise)")
        vp = d.vs_parent
        if vp:
            versus += "  vs your model {:+.2f} [{:+.2f}, {:+.2f}]{}".format(
                100 * vp.difference, *(100 * v for v in vp.interval), "" if vp.resolved else " (noise)")
        prec = f" {d.recorded_precision}" if d.recorded_precision else ""
        return (f"  {name:<22}{prec} holdout {100 * d.holdout_accuracy:6.2f}  test {test}  "
                f"{d.macs / 1e9:8.4f} GMACs ({full.macs / d.macs:.2f}x fewer) {lat}{versus}")

    if result.parent is not None:
        lines.append(row("your model (parent)", result.parent))
    lines.append(row("full", full))
    lines.append(row("smallest of the space", result.smallest))
    for b in result.budgets.values():
        share = f" of your model's latency ({b.limit * 1e3:.4g} ms predicted)" if b.fraction is not None else ""
        lines.append(f"budget {b.label}{share}:")
        if b.searched_pairs:
            lines.append(row("searched pair", b.best))
            lines.append(row("searched fp32 only", b.best_fp32))
            vs = b.vs_fp32
            if vs:
                lines.append("  pair - fp32 only: {:+.2f} points [{:+.2f}, {:+.2f}] on the deployed runtimes{}".format(
                    100 * vs.difference, *(100 * v for v in vs.interval), "" if vs.resolved else " (within noise)"))
        else:
            origin = b.best.origin if b.best is not None else None
            lines.append(row(f"searched (= {origin})" if origin else "searched", b.best))
        if b.finetuned is not None:
            lines.append(row(f"fine-tuned ({b.finetuned.steps} st)", b.finetuned))
        for name, d in b.baselines.items():
            lines.append(row(f"baseline {name}", d))
        for name, d in b.training_free.items():
            if name != "parent":
                lines.append(row(describe_family(name, d.raw if d is not None else None), d))
        over = b.timed_over_budget
        if over and all(d.records("measured_fraction_interval") for d in over):  # a share, timed beside your model
            worst = max(over, key=lambda d: d.measured_fraction_of_full)
            low, high = worst.measured_fraction_interval
            lines.append(f"  passed over: {len(over)} candidate(s) predicted within but timed over it beside your "
                         f"model (up to {worst.measured_fraction_of_full:.3f} [{low:.3f}, {high:.3f}] of it)")
        elif over:
            worst = max(over, key=lambda d: d.latency_measured_ms / d.latency_ms)
            lines.append(f"  passed over: {len(over)} candidate(s) predicted within but timed over it on the "
                         f"target (up to {worst.latency_measured_ms:.2f} ms for {worst.latency_ms:.2f} predicted)")
        if b.recommended is not None and b.recommended.family:
            ship = b.shipped
            lines.append(f"  recommended: {describe_family(b.recommended.family, ship and ship.pick.raw)}; {b.why}")
    fit = result.training_free_fit
    if fit.get("probes_ms"):
        lines.append("ToMe on your model fitted to the latency budgets by timing it on the target: " + "; ".join(
            f"{p} r = " + ", ".join(f"{r} ({ms:.3g} ms)" for r, ms in probes.items())
            for p, probes in fit["probes_ms"].items()))
    if fit.get("shares"):
        tokens = full.counts[0]
        lines.append("ToMe on your model fitted to the shares by timing each r beside your model: " + "; ".join(
            f"{p} r = " + ", ".join(f"{tokens - c['counts'][0]} ({c['ratio']:.2f} [{c['interval'][0]:.2f}, "
                                    f"{c['interval'][1]:.2f}])" for c in sorted(probes, key=lambda c: -c["counts"][0]))
            for p, probes in fit["shares"]["probes"].items()))
    doc = result.doc  # the run's own records: how the table was off on the target, the timing, the int8 front
    corr = doc.get("timed_over_predicted")
    if corr:
        lines.append("the target ran the picks timed at " + "; ".join(
            f"{c['median']:.2f}x the table's prediction in {p} (median of {c['picks']})" for p, c in corr.items())
            + ": candidates not timed were judged by their predictions scaled so")
    t = doc["timing"]
    total = t.get("candidates", t["evaluations"])
    loaded = f" ({t['from_journal']} of them loaded from the journal)" if t.get("from_journal") else ""
    lines.append(f"{total} candidates{loaded}, {t['evaluations']} evaluated in {t['search_seconds']:.1f}s; Pareto front of "
                 f"{len(result.front)}; area {doc['front_area']:.4f}")
    prec = doc.get("precisions")
    if prec and "int8" in prec.get("fronts", {}):
        lines.append(f"int8 front of {len(prec['fronts']['int8'])}, drawn from {prec['front_verifications']} "
                     f"candidates measured on the deployed int8 model; {prec['quantized_models']} models quantised, "
                     f"{prec['deployed_seconds']:.1f}s on the deployed runtime")
    return "\n".join(lines)


def _said(line: str) -> None:
    """The search's log line, with the flags that shorten a search said to be over an hour."""
    if line.startswith("search: ETA") and "over an hour" in line:
        line += "; --generations or --population to shorten it"
    line = line.replace("(remeasure=True times", "(--remeasure times")
    print(flag_message(line, _parser()), flush=True)  # the library's parameters said as this command's flags


@functools.lru_cache(maxsize=1)
def _parser():
    from . import build_parser

    return build_parser("search")
