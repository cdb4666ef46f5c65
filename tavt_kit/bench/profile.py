"""Profiling a latency table on the target: each part of the model timed at a grid of token counts.

A dropping block's latency is split into ``attn(L_in) + mlp(L_out)``. That split is *measured*, not assumed: the table
times the whole dropping block (:func:`~tavt_kit.models.token_drop.drop_block_forward`)
at every pair (n_in, n_out) of a grid of token counts with n_out <= n_in, and
fits ``attn`` and ``mlp`` to those pairs by least squares (relative error);
``separability`` reports how far the measured pairs are from the sum (well under
1 % on the CPUs tried, so the two 1-D curves stand for the 2-D grid and
interpolate between its points). Curves are made non-decreasing (isotonic
regression, noise only) and interpolated linearly. A ``scale`` on the parts and an
``offset`` are calibrated on whole-model runs from the full model to as deep as a
search goes (:func:`anchor_schedules`): they absorb per-call costs that separate
parts count several times (an ONNX Runtime ``run()`` per part) or not at all
(Python around the blocks), and what whole models cost beyond their parts, which
grows with the schedule (:func:`fit_calibration`).

For the exported backends (onnxruntime, openvino) each part is exported once
with dynamic batch and token dimensions and compiled per token count with the
dimensions fixed (ONNX Runtime free-dimension overrides, OpenVINO ``reshape``),
so every measured graph has static shapes like an exported model. Parts are
timed round-robin; when they are timed in several groups (to keep only one
part's sessions in memory), a reference block timed in every group rescales
the groups to a common machine speed. Whole-model runs (calibration,
validation) are timed with the same reference block, and rescaled by it to the
machine speed of the table.

``statistic`` says what the table holds: the median latency (default, right on
a dedicated target) or the fastest of the repeats (``min``): on a machine
shared with other jobs, a core shared by two processes runs at half speed for
seconds at a time, so the slower runs time the other jobs and only the fastest
run is the model's own cost.

``reducers`` (default: the model's reducer) says which reducing blocks the table
holds: ``drop``, ``merge`` (ToMe: merging blocks at every pair of the grid that
merges, fitted the same way, and the non-reducing block with
proportional attention's size bias) or both; the parts are in
:mod:`tavt_kit.bench.parts`. Anchors and validation schedules then use them too.
"""
from __future__ import annotations

import datetime as _dt
import math
import random
import statistics
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..errors import ConfigError, LatencyTableError, UnsupportedModelError
from ..progress import eta
from ..schedules import TokenSchedule, evit_schedule, random_schedules, uniform_schedule
from ..models.token_merge import REDUCERS
from .parts import PartRunners, make_part, part_plan
from .runners import ModelRunners, make_input, torch_threads
from .table import TABLE_FORMAT, TABLE_VERSION, TABLE_VERSION_MERGE, LatencyTable, fit_separable, isotonic
from ..target import DeploymentTarget, Precision
from .backends import EXPORTED_BACKENDS, Runner, check_target, release, set_compile_limits, with_threads
from ..machine import machine_info
from ..models import load_model
from .identity import model_identity
from .timing import TimingPolicy, measure_round_robin

#: whole models / parts compiled at once for an exported backend (their weights, in bytes)
_GROUP_BYTES = 1.5e9
#: memory of a compiled part per byte of the block's weights (OpenVINO: weights + buffers, ~2.6x)
_PART_MEMORY = 2.6


#: how an int8 table's parts were made (``data["target"]["int8"]``): the latency of int8 kernels does not depend on the
#: calibration values, so random inputs do (the accuracy of an int8 model is measured elsewhere)
INT8_PARTS = {"quantized_with": "NNCF PTQ (transformer)", "calibration": "random inputs (latency only)",
              "parts": "each part quantised once, at its export's (largest) token count, and reshaped per token count",
              "compiled_with": "the f32 inference hint (int8 kernels where quantised)"}


def profile_policy() -> TimingPolicy:
    """Default repeat policy for table parts (many short parts; a whole-model check follows)."""
    return TimingPolicy(warmup=2, min_repeats=5, budget_s=1.0, rel_ci=0.01)


# ------------------------------------------------------------------------ grids
def default_grid(num_patches: int, points: int = 13) -> List[int]:
    """``points`` patch-token counts spread evenly over [1, num_patches] (both ends included)."""
    points = max(2, min(int(points), num_patches))
    return sorted({max(1, round(num_patches * i / (points - 1))) for i in range(points)})


def _parse_grid(grid, num_patches: int) -> List[int]:
    if grid is None:
        return default_grid(num_patches)
    if isinstance(grid, int):
        return default_grid(num_patches, grid)
    try:
        g = sorted({int(v) for v in grid})
    except (TypeError, ValueError):
        raise ConfigError(f"grid={grid!r}: expected a number of points or a list of token counts") from None
    if not g or g[0] < 1 or g[-1] > num_patches:
        raise ConfigError(f"grid={','.join(map(str, g))}: token counts must lie in [1, {num_patches}]")
    if g[-1] != num_patches:
        g.append(num_patches)  # the full model's blocks must be on the grid
    if len(g) < 2:
        raise ConfigError(f"grid={','.join(map(str, g))}: expected at least two token counts")
    return g


def anchor_schedules(depth: int, num_patches: int, reducers: Optional[Sequence[str]] = None
                     ) -> List[Tuple[str, TokenSchedule]]:
    """Whole-model schedules the calibration is fitted on, from the full model to as deep as a search goes: full,
    TAVT-style 0.9/block, EViT-style 0.7 at 3 blocks, halving every block (ToMe's deepest: its r at half the
    tokens) and 0.3/block (the smallest member of a ``--bound 0.7`` space; merging: several rounds per block).

    The deep ones are there because a calibration fitted near the full model alone is extrapolated to schedules
    at a fifth of its cost, where its error counts five times as much: on OpenVINO int8 at batch 32 one
    constant fitted so predicted deep schedules 9-50 % over their timings, the scaled fit on these anchors
    1.5-23 % (``docs/benchmarks/table_depth.md``).
    ``reducers``: each reducing schedule once per reducer, naming it (None: once, the model's reducer).
    """
    base = [("tavt 0.9", uniform_schedule(0.9, depth, num_patches))]
    if depth >= 4:
        base.append(("evit 0.7", evit_schedule(0.7, depth, num_patches)))
    base += [("halving", uniform_schedule(0.5, depth, num_patches)),
             ("deep 0.3", uniform_schedule(0.3, depth, num_patches))]
    out = [("full", TokenSchedule.full(depth, num_patches))]
    if reducers is None:
        return out + base
    for r in reducers:
        out += [(label if r == "drop" else f"{label} {r}", s.with_reducers((r,) * depth)) for label, s in base]
    return out


def _check_reducers(model: nn.Module, reducers) -> Tuple[str, ...]:
    """The reducers to profile: given (``"drop,merge"`` or a sequence), else the model's."""
    if reducers is None:
        return (getattr(model, "reducer", "drop"),)
    if isinstance(reducers, str):
        reducers = reducers.split(",")
    out = tuple(dict.fromkeys(str(r).strip() for r in reducers if str(r).strip()))
    bad = [r for r in out if r not in REDUCERS]
    given = ",".join(map(str, reducers))
    if not out or bad:
        raise ConfigError(f"reducers={given}: expected drop, merge or drop,merge"
                          + (f" ({bad[0]!r} is not a reducer)" if bad else ""))
    if "merge" in out:
        if "merge" not in getattr(model, "supported_reducers", ("drop",)):
            raise ConfigError(f"reducers={given}: merge is not supported by {type(model).__name__}; profile "
                              "reducers=drop")
        if getattr(model, "fuse", False):
            raise ConfigError(f"reducers={given}: this model fuses dropped tokens (EViT's fuse), which applies to "
                              "drop only; profile reducers=drop")
    return out


STATISTICS = ("median", "min")


def _stat_ms(stats, statistic: str) -> float:
    return (stats.p50 if statistic == "median" else min(stats.samples)) * 1e3


def _timed(keys_runners: Dict[Any, Runner], policy: TimingPolicy, backend: str, progress,
           statistic: str = "median"):
    """Latencies (ms, the table's statistic) and stats of runners timed round-robin."""
    import contextlib

    fns = {k: r.fn for k, r in keys_runners.items()}
    timers = {k: r.timer for k, r in keys_runners.items() if r.timer is not None}
    ctx = torch.inference_mode() if backend in ("torch", "torch-compile") else contextlib.nullcontext()
    with ctx:
        stats = measure_round_robin(fns, policy, timer=timers or None, progress=progress)
    return {k: _stat_ms(s, statistic) for k, s in stats.items()}, stats


def profile_latency(
    model,
    *,
    target: Optional[DeploymentTarget] = None,
    grid=None,
    policy: Optional[TimingPolicy] = None,
    calibrate: bool = True,
    validate: int = 0,
    validate_range: Tuple[float, float] = (0.8, 1.0),
    seed: int = 0,
    exporter: str = "auto",
    compile_backend: str = "inductor",
    workdir=None,
    img_size=None,
    verify_exports: bool = True,
    statistic: str = "median",
    reducers=None,
    progress: Optional[Callable[[str], None]] = None,
) -> LatencyTable:
    """Measure a latency table of a model on one :class:`~tavt_kit.target.DeploymentTarget`.

    Args:
        model: token-drop model, checkpoint path or model name.
        target: where to time it (backend, device, precision, threads, batch size); default torch eager on the
            CPU at batch 1 with torch's thread count. ``precision``: fp32, bf16 / fp16 (OpenVINO inference
            hints; refused on a CPU without native support) or int8 (every part, and every whole model of the
            calibration, quantised with NNCF on seeded random inputs and compiled with the f32 hint; OpenVINO
            only). The table records it (:attr:`LatencyTable.target`).
        grid: patch-token counts to measure blocks at (default 13 points evenly over [1, grid]),
            or a number of points. Dropping blocks are timed at every pair n_out <= n_in of it.
        policy: repeat policy per part (default :func:`profile_policy`).
        calibrate: fit the scale on the parts and the offset on whole-model runs of :func:`anchor_schedules`.
        validate: also measure this many random TAVT-style schedules (keep ratio per block drawn
            in ``validate_range``) directly and store the prediction errors in the table.
        exporter: ONNX exporter for the exported backends; parts and whole models use the same one.
        verify_exports: check the whole-model exports (calibration, validation) against PyTorch in
            ONNX Runtime (the parts are always checked).
        statistic: what the table holds and predicts: ``"median"`` latency (default; right on a
            dedicated target) or ``"min"``, the fastest of the repeats: on a machine shared with
            other jobs the slower runs time the other jobs (a core shared by two processes runs at
            half speed for seconds at a time), while the fastest run is the model's own cost.
        reducers: reducing blocks to profile: ``"drop"``, ``"merge"`` or both (``"drop,merge"`` or a
            sequence); default the model's reducer. A table predicts only schedules whose reducing
            blocks use these.
    Returns:
        a :class:`LatencyTable` (save it with ``.save(path)``).
    """
    target = with_threads(target if target is not None else DeploymentTarget(backend="torch"))
    check_target(target)
    if statistic not in STATISTICS:
        raise ConfigError(f"statistic={statistic}: expected one of {', '.join(STATISTICS)}")
    policy = policy or profile_policy()
    say = progress or (lambda s: None)
    model = _table_model(model, img_size, target.device)
    reducers = _check_reducers(model, reducers)
    ident = model_identity(model)
    g = _parse_grid(grid, ident["num_patches"])
    plan = part_plan(model, g, reducers)
    tmp = None
    if workdir is None and target.backend in EXPORTED_BACKENDS:
        tmp = tempfile.TemporaryDirectory(prefix="fgvc-kit-profile-")
        workdir = tmp.name
    pr = PartRunners(target, ident["embed_dim"], workdir, exporter, compile_backend, say)
    anchor_key = ("plain", ident["num_prefix_tokens"] + ident["num_patches"])
    try:
        with torch_threads(target.threads):
            table = _profile_parts(model, ident, g, plan, pr, anchor_key, policy, seed, statistic, reducers,
                                   exporter, compile_backend, say)
            if calibrate or validate:
                builder = ModelRunners(model, target, workdir, exporter, compile_backend, say, verify_exports)
                try:
                    _calibrate_and_validate(table, model, builder, anchor_key, pr, policy, calibrate, validate,
                                            validate_range, seed, say, statistic, reducers)
                finally:
                    builder.close()
    finally:
        if tmp is not None:
            tmp.cleanup()
    return table


def time_at_table_speed(table: LatencyTable, model, schedules: Dict[Any, Any], *,
                        policy: Optional[TimingPolicy] = None, seed: int = 0,
                        progress: Optional[Callable[[str], None]] = None) -> Dict[Any, float]:
    """Whole models at ``schedules`` (a label -> schedule mapping) timed on ``table``'s target, round-robin with
    the table's reference block, and rescaled to the machine speed the table was profiled at: the milliseconds
    its predictions are to be compared with (a table's validation does the same for random schedules).

    ``model``: the model the table was profiled on (or one of the same structure: latency does not depend on
    the weights). ``policy``: default :func:`profile_policy`."""
    target = with_threads(table.target)
    model = _table_model(model, None, target.device)
    table.check(model)
    ident = model_identity(model)
    t = table.data.get("target") or {}
    exporter = t.get("requested_exporter") or "auto"
    say = progress or (lambda s: None)
    rows = {k: table.schedule(v) for k, v in schedules.items()}
    with tempfile.TemporaryDirectory(prefix="fgvc-kit-whole-") as workdir:
        pr = PartRunners(target, ident["embed_dim"], workdir, exporter, t.get("compile_backend") or "inductor", say)
        builder = ModelRunners(model, target, workdir, exporter, t.get("compile_backend") or "inductor", say, False)
        try:
            with torch_threads(target.threads):
                runs = _time_whole_models(table, model, builder, rows, ("plain", ident["num_prefix_tokens"]
                                                                        + ident["num_patches"]), pr,
                                          policy or profile_policy(), seed, say,
                                          table.data.get("statistic") or "median")
        finally:
            builder.close()
    return dict(runs.scaled)


def _table_model(model, img_size, device) -> nn.Module:
    """The model loaded onto ``device`` in eval mode; refused unless a table can describe it (timm ViT, linear head)."""
    model = load_model(model, img_size).eval().to(device)
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(model, VisionTransformer):
        raise UnsupportedModelError(f"latency tables support timm ViT backbones; {type(model).__name__} is not one "
                                    "(measure it directly with measure_latency)")
    if getattr(model, "head_name", "linear") != "linear":
        raise UnsupportedModelError(f"latency tables support the linear head; this model has the "
                                    f"{model.head_name} head (measure it directly with measure_latency)")
    return model


def _profile_parts(model, ident, grid, plan, pr: PartRunners, anchor_key, policy: TimingPolicy, seed: int,
                   statistic: str, reducers, exporter, compile_backend, say) -> LatencyTable:
    """The table of the parts alone (no offset yet): every part of ``plan`` timed, rescaled to one speed, fitted."""
    target = pr.target
    if target.backend == "torch-compile":
        set_compile_limits(sum(len(v) for v in plan.values()) + 64)
    exported = target.backend in EXPORTED_BACKENDS
    groups = _part_groups(model, [k for keys in plan.values() for k in keys], exported, seed)
    anchor = make_part(model, anchor_key, pr) if exported and len(groups) > 1 else None
    times, anchor_times = _time_part_groups(model, groups, anchor, pr, policy, statistic, say)
    drift = _rescale_groups(times, anchor_times, anchor_key)
    data = _assemble(ident, grid, times, target, exporter, compile_backend, pr.exporters, policy, reducers)
    data["statistic"] = statistic
    data["drift"] = {"reference": "plain block at full tokens", "factors": drift} if drift else None
    return LatencyTable(data)


def _part_groups(model, keys_all: List[tuple], exported: bool, seed: int) -> List[List[tuple]]:
    """The parts' keys split into the groups timed together (one round-robin per group)."""
    if not exported:
        return [keys_all]  # the torch backends share the weights: one round-robin
    # every compiled part holds its own copy of a block's weights (and its buffers): time them in
    # groups that fit in memory, each with the reference block (to rescale the groups to one
    # machine speed), and shuffled so that a group timed while the machine was busy scatters its
    # error over the curves instead of bending one of them
    block_bytes = sum(p.numel() * p.element_size() for p in model.blocks[0].parameters())
    size = max(8, int(_GROUP_BYTES // max(1, _PART_MEMORY * block_bytes)))
    random.Random(seed).shuffle(keys_all)
    n_groups = -(-len(keys_all) // size)
    size = -(-len(keys_all) // n_groups)  # even groups
    return [keys_all[i:i + size] for i in range(0, len(keys_all), size)]


def _time_part_groups(model, groups, anchor: Optional[Runner], pr: PartRunners, policy: TimingPolicy,
                      statistic: str, say) -> Tuple[Dict[tuple, float], List[Tuple[List[tuple], float]]]:
    """Each group's parts built, timed round-robin (with the reference block, if any) and released."""
    times: Dict[tuple, float] = {}
    anchor_times = []
    t_groups = time.perf_counter()
    for gi, keys in enumerate(groups):
        say(f"timing {len(keys)} parts ({gi + 1}/{len(groups)}, ETA "
            f"{eta(gi, len(groups), time.perf_counter() - t_groups)})")
        runners = {k: make_part(model, k, pr) for k in keys}
        if anchor is not None:
            runners[("anchor",)] = anchor
        t, _ = _timed(runners, policy, pr.target.backend, say, statistic)
        if anchor is not None:
            a = t.pop(("anchor",))
            anchor_times.append((keys, a))
        times.update(t)
        for k, r in runners.items():
            if r is not anchor:
                release(r)
    return times, anchor_times


def _rescale_groups(times: Dict[tuple, float], anchor_times, anchor_key) -> Dict[str, float]:
    """Rescales ``times`` in place to the median speed of the reference block; returns each group's factor."""
    drift: Dict[str, float] = {}
    if anchor_times:
        ref = statistics.median(a for _, a in anchor_times)
        for gi, (keys, a) in enumerate(anchor_times):
            factor = ref / a
            drift[f"group {gi + 1}"] = factor
            for k in keys:
                times[k] *= factor
        times[anchor_key] = ref
    return drift


def _fit_pairs(times, kind: str) -> Dict[str, Any]:
    """The two curves of a reducing block fitted to its measured pairs, the pairs and the separability.

    A merging block is fitted to the pairs that merge only (``L_out < L_in``): one that merges nothing skips the
    matching and costs a plain block's time, and with it in the fit the curves went negative at few tokens
    (searched int8 picks that merge were predicted at 0.58-0.71 of their timed latency)."""
    pairs = [(k[1], k[2], times[k]) for k in times if k[0] == kind and (kind != "merge" or k[2] < k[1])]
    ins, attn, outs, mlp = fit_separable(pairs)
    attn_m, mlp_m = isotonic(attn), isotonic(mlp)
    ai = dict(zip(ins, attn_m))
    mi = dict(zip(outs, mlp_m))
    fitted = [(li, lo, t, ai[li] + mi[lo]) for li, lo, t in sorted(pairs)]
    rel = [(fit - t) / t for _, _, t, fit in fitted]
    return {"in": {"tokens": ins, "ms": attn_m, "fitted": attn}, "out": {"tokens": outs, "ms": mlp_m, "fitted": mlp},
            "pairs": [list(p) for p in fitted],
            "separability": {"rms_rel": math.sqrt(sum(r * r for r in rel) / len(rel)),
                             "max_abs_rel": max(abs(r) for r in rel), "pairs": len(rel)}}


def _assemble(ident, grid, times, target: DeploymentTarget, exporter, compile_backend, part_exporters, policy,
              reducers=("drop",)) -> Dict[str, Any]:
    P, N = ident["num_prefix_tokens"], ident["num_patches"]
    f = int(ident["fuse"])
    plain_L = [P + g for g in grid]
    plain_raw = [times[("plain", L)] for L in plain_L]
    head_L = [P + g + f for g in grid]
    head_raw = [times[("head", L)] for L in head_L]
    exporters = sorted(set(part_exporters.values()))
    data = {
        "format": TABLE_FORMAT,
        "version": TABLE_VERSION_MERGE if "merge" in reducers else TABLE_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": ident,
        # the target, and what else decides the runtime
        "target": {**target.to_dict(),
                   **({"int8": dict(INT8_PARTS)} if target.precision == Precision.INT8 else {}),
                   "exporter": (exporters[0] if len(exporters) == 1 else exporters) if exporters else None,
                   "requested_exporter": exporter if target.backend in EXPORTED_BACKENDS else None,
                   "compile_backend": compile_backend if target.backend == "torch-compile" else None},
        "machine": machine_info(target.device, target.threads),
        "unit": "ms per batch",
        "method": "separable: plain(L) for blocks that keep all tokens, attn(L_in) + mlp(L_out) for dropping "
                  "blocks; L = all tokens in the sequence",
        "grid": list(grid),
        "embed_ms": times[("embed",)],
        "plain_ms": {"tokens": plain_L, "ms": isotonic(plain_raw), "measured": plain_raw},
        "head_ms": {"tokens": head_L, "ms": isotonic(head_raw), "measured": head_raw},
        "separability": None,
        "reference_ms": times[("plain", plain_L[-1])],
        "offset_ms": 0.0,
        "calibration": None,
        "validation": None,
        "policy": policy.to_dict(),
    }
    if ("head_nodrop", P + N) in times:
        data["head_nodrop_ms"] = times[("head_nodrop", P + N)]
    if "drop" in reducers:
        fit = _fit_pairs(times, "drop")
        data.update(attn_ms=fit["in"], mlp_ms=fit["out"], pairs=fit["pairs"], separability=fit["separability"])
    if reducers != ("drop",):
        data["reducers"] = list(reducers)
    if "merge" in reducers:
        fit = _fit_pairs(times, "merge")
        data.update(merge_attn_ms=fit["in"], merge_mlp_ms=fit["out"], merge_pairs=fit["pairs"],
                    merge_separability=fit["separability"])
        data["method"] += "; merging blocks: merge_attn(L_in) + merge_mlp(L_out)" + (
            ", timed with the size bias; prop(L) for blocks after a merge (proportional attention)"
            if ident.get("prop_attn") else "")
        prop_raw = [times[("prop", L)] for L in plain_L] if ("prop", plain_L[0]) in times else None
        data["prop_ms"] = {"tokens": plain_L, "ms": isotonic(prop_raw), "measured": prop_raw} if prop_raw else None
    return data


def _with_reducers(schedules: List[TokenSchedule], reducers: Sequence[str], seed: int) -> List[TokenSchedule]:
    """Each reducing block of each schedule given a reducer drawn from ``reducers`` (seeded)."""
    rng, choices = random.Random(seed), list(reducers)
    out = []
    for s in schedules:
        names, prev = [], s.num_patches
        for c in s.counts:
            names.append(rng.choice(choices) if c < prev else None)
            prev = c
        out.append(s.with_reducers(names))
    return out


def _calibrate_and_validate(table: LatencyTable, model, builder, anchor_key, pr, policy, calibrate, validate,
                            validate_range, seed, say, statistic: str = "median",
                            reducers: Sequence[str] = ("drop",)) -> None:
    """Whole-model runs: the calibration anchors and the validation schedules.

    They are timed round-robin with the reference block (a block keeping all tokens), in groups
    small enough to hold the compiled models in memory (one group for the torch backends, which
    share the weights). Each group's times are rescaled to the machine speed the table was
    measured at (reference now vs reference in the table): the calibration fits the offset on the
    rescaled times, the validation reports the error against both the raw and the rescaled times.
    """
    rows = _whole_model_rows(model, calibrate, validate, validate_range, seed, reducers)
    runs = _time_whole_models(table, model, builder, rows, anchor_key, pr, policy, seed, say, statistic)
    drift = statistics.median(runs.drifts)
    table.data["reference_drift"] = drift
    if calibrate:
        _calibrate(table, rows, runs)
    if abs(drift) > 0.05:
        table.data.setdefault("warnings", []).append(
            f"the machine's speed changed by {100 * drift:+.0f}% between timing the parts and the whole models "
            "(reference block); other jobs were running")
    if validate:
        _validate(table, rows, runs, validate_range, statistic, drift)


class _WholeModelRuns:
    """Whole-model latencies (ms) by row: as measured, rescaled to the table's speed, and their spread."""

    def __init__(self) -> None:
        self.raw: Dict[str, float] = {}
        self.scaled: Dict[str, float] = {}
        self.ci: Dict[str, float] = {}
        self.other: Dict[str, Dict[str, float]] = {}
        #: per group, the reference block's speed relative to the table's (now / table - 1)
        self.drifts: List[float] = []


def _whole_model_rows(model, calibrate, validate, validate_range, seed,
                      reducers: Sequence[str]) -> Dict[str, TokenSchedule]:
    """The schedules to run whole: ``anchor:LABEL`` (calibration) and ``random:I`` (validation)."""
    depth, N = model.depth, model.num_patches
    rows: Dict[str, TokenSchedule] = {}
    if calibrate:
        named = tuple(reducers) != ("drop",) or getattr(model, "reducer", "drop") != "drop"
        for label, s in anchor_schedules(depth, N, reducers if named else None):
            rows[f"anchor:{label}"] = s
    if validate:
        lo, hi = validate_range
        scheds = random_schedules(depth, N, validate, lo, hi, seed=seed + 1)
        if tuple(reducers) != ("drop",) or getattr(model, "reducer", "drop") != "drop":
            scheds = _with_reducers(scheds, reducers, seed + 2)
        for i, s in enumerate(scheds):
            rows[f"random:{i}"] = s
    return rows


def _time_whole_models(table: LatencyTable, model, builder, rows: Dict[str, TokenSchedule], anchor_key, pr,
                       policy, seed, say, statistic: str) -> _WholeModelRuns:
    """Every row's whole model timed round-robin with the reference block, in groups that fit in memory."""
    x = make_input(pr.batch, model_identity(model)["img_size"], seed)
    keys = list(rows)
    if builder.target.backend in EXPORTED_BACKENDS:
        weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        size = max(1, int(_GROUP_BYTES // max(weight_bytes, 1)))
    else:
        size = len(keys)
    reference = make_part(model, anchor_key, pr)
    ref_table = float(table.data["reference_ms"])
    runs = _WholeModelRuns()
    for g0 in range(0, len(keys), size):
        chunk = keys[g0:g0 + size]
        runners = {k: builder.runner(rows[k], x) for k in chunk}
        runners["reference"] = reference
        say(f"timing {len(chunk)} whole-model schedules with the reference block "
            f"({g0 // size + 1}/{(len(keys) + size - 1) // size})")
        t, stats = _timed(runners, policy, builder.target.backend, say, statistic)
        ref_now = t.pop("reference")
        runs.drifts.append(ref_now / ref_table - 1)
        for k in chunk:
            runs.raw[k] = t[k]
            runs.scaled[k] = t[k] * ref_table / ref_now
            runs.ci[k] = stats[k].ci95_rel
            runs.other[k] = {"p50_ms": stats[k].p50 * 1e3, "min_ms": min(stats[k].samples) * 1e3,
                             "repeats": stats[k].n}
            release(runners[k])
    return runs


def fit_calibration(calib: Sequence[Dict[str, Any]], model: str = "scaled") -> Dict[str, Any]:
    """The whole-model calibration fitted to anchor rows (``parts_ms``, ``measured_ms_table_speed``,
    ``merging_blocks``): ``parts_scale``, ``offset_ms``, ``merge_block_offset_ms`` and ``fit_rms_rel`` (the
    relative rms error of the fit on the anchors).

    ``model="scaled"`` (default): ``whole = scale * parts + offset + merging_blocks * per_block``, least squares
    on relative errors over every anchor (the per-block term only where some anchors merge and some do not). The
    scale is what follows the schedule: a residual proportional to the parts is one that no constant fitted
    near the full model carries over to the deepest schedules. It falls back to ``offset`` where the anchors
    cannot determine it (fewer than four, or a scale outside 0.5-2, which only noise makes).
    ``model="offset"``: the calibration before deep anchors: the offset is the median residual of the anchors
    that merge nothing, the per-block term the median of what the merging ones cost beyond it, scale 1.
    """
    if model not in ("scaled", "offset"):
        raise ConfigError(f"calibration model={model!r}: expected 'scaled' or 'offset'")
    rows = [c for c in calib if c.get("measured_ms_table_speed")]
    if not rows:
        raise ConfigError("calibration: no whole-model timings to fit")
    t = [float(c["measured_ms_table_speed"]) for c in rows]
    parts = [float(c["parts_ms"]) for c in rows]
    mb = [int(c.get("merging_blocks") or 0) for c in rows]
    out = None
    if model == "scaled" and len(rows) >= 4:
        import numpy as np

        cols = [parts, [1.0] * len(rows)] + ([mb] if 0 < sum(m > 0 for m in mb) < len(rows) else [])
        a = np.array(cols, dtype=np.float64).T / np.array(t)[:, None]
        coef, *_ = np.linalg.lstsq(a, np.ones(len(rows)), rcond=None)
        if 0.5 <= coef[0] <= 2.0:
            out = {"parts_scale": float(coef[0]), "offset_ms": float(coef[1]),
                   "merge_block_offset_ms": float(coef[2]) if len(coef) > 2 else 0.0, "model": "scaled"}
    if out is None:
        plain = [c["measured_ms_table_speed"] - p for c, p, m in zip(rows, parts, mb) if not m] or \
            [ti - p for ti, p in zip(t, parts)]
        offset = statistics.median(plain)
        merging = [(ti - p - offset) / m for ti, p, m in zip(t, parts, mb) if m]
        out = {"parts_scale": 1.0, "offset_ms": offset,
               "merge_block_offset_ms": statistics.median(merging) if merging else 0.0, "model": "offset"}
    pred = [out["parts_scale"] * p + out["offset_ms"] + m * out["merge_block_offset_ms"] for p, m in zip(parts, mb)]
    out["fit_rms_rel"] = math.sqrt(statistics.fmean(((pi - ti) / ti) ** 2 for pi, ti in zip(pred, t)))
    return out


def _calibrate(table: LatencyTable, rows: Dict[str, TokenSchedule], runs: _WholeModelRuns) -> None:
    """Fits the table's whole-model calibration (:func:`fit_calibration`) on the anchors' whole-model runs.

    A whole model costs more (or less) than its parts timed alone, and by how much changes with the schedule:
    each merge's matching and scatter run between the parts (measured +0.08 to +0.19 ms per merging block for
    fgvc_tiny on OpenVINO at batch 8), and per-call costs count once per part. A constant fitted near the full
    model is extrapolated to the deepest schedules, where its error weighs several times as much (one such
    constant over-predicted deep int8 schedules by 9-50 %); the scale, fitted with it on anchors down to 0.3 per
    block, keeps that error to what the anchors show (1.5-23 % in the same run)."""
    raw, scaled = runs.raw, runs.scaled
    calib = []
    for key, s in rows.items():
        if not key.startswith("anchor:"):
            continue
        p = table.predict_parts(s)
        parts = p["embed"] + sum(p["blocks"]) + p["head"]
        calib.append({"label": key.split(":", 1)[1], "schedule": list(s.counts),
                      **({"reducers": list(s.reducers)} if s.reducers else {}), "measured_ms": raw[key],
                      "measured_ms_table_speed": scaled[key], "parts_ms": parts,
                      "residual_ms": scaled[key] - parts, "merging_blocks": p["merging_blocks"]})
    fit = fit_calibration(calib)
    table.data["parts_scale"] = fit["parts_scale"]
    table.data["offset_ms"] = _floored_offset(table, fit["offset_ms"], fit["parts_scale"])
    table.data["merge_block_offset_ms"] = fit["merge_block_offset_ms"]
    table.data["calibration"] = calib
    table.data["calibration_fit"] = {"model": fit["model"], "rms_rel": fit["fit_rms_rel"], "anchors": len(calib)}
    full = next((c for c in calib if c["label"] == "full"), calib[0])
    share = (table.data["offset_ms"] + (fit["parts_scale"] - 1) * full["parts_ms"]) / full["measured_ms_table_speed"]
    if abs(share) > 0.2:
        table.data.setdefault("warnings", []).append(
            f"the calibration adds {100 * share:+.0f}% to the full model's parts: whole-model runs "
            "cost much more (or less) than their parts, e.g. because other jobs preempted the longer runs; "
            "predictions hold for a machine as busy as this one was (profile on a quiet machine)")


def _floored_offset(table: LatencyTable, offset: float, scale: float = 1.0) -> float:
    """``offset``, raised where it would make the table predict a latency at or below zero for the smallest
    schedule it prices (one token after every block): at most half of that schedule's (scaled) parts, with a
    warning.

    A negative offset means the parts timed alone cost more than inside the whole model (each part's call
    overhead); on a busy machine the whole-model runs can come out so much faster than their parts that the
    median residual exceeds what the smallest schedules cost, and every search over the table would stop at
    the first such candidate. Seen on 2 cores shared with three training jobs: -4.2 ms against parts of
    about 3 ms for the smallest schedule."""
    try:
        p = table.predict_parts([1] * int(table.model["depth"]), "drop")
    except LatencyTableError:  # a table without drop entries prices no such schedule
        return offset
    floor = -0.5 * scale * (p["embed"] + sum(p["blocks"]) + p["head"])
    if offset >= floor:
        return offset
    table.data.setdefault("warnings", []).append(
        f"the calibration offset {offset:+.3f} ms would predict a negative latency for the smallest schedules "
        f"(their parts: {-2 * floor:.3f} ms); raised to {floor:+.3f} ms. Whole-model runs came out much faster "
        "than their parts, as on a busy machine: profile again on a quiet one")
    return floor


def _validate(table: LatencyTable, rows: Dict[str, TokenSchedule], runs: _WholeModelRuns, validate_range,
              statistic: str, drift: float) -> None:
    """Stores the table's prediction errors on the random schedules (against raw and rescaled times)."""
    raw, scaled = runs.raw, runs.scaled
    val = []
    for key, s in rows.items():
        if not key.startswith("random:"):
            continue
        pred = table.predict(s)
        val.append({"schedule": list(s.counts), **({"reducers": list(s.reducers)} if s.reducers else {}),
                    "measured_ms": raw[key],
                    "measured_ms_table_speed": scaled[key], "predicted_ms": pred,
                    "error_rel": (pred - scaled[key]) / scaled[key], "error_raw_rel": (pred - raw[key]) / raw[key],
                    "ci95_rel": runs.ci[key], **runs.other[key]})
    errs = sorted(abs(v["error_rel"]) for v in val)
    raw_errs = sorted(abs(v["error_raw_rel"]) for v in val)
    if statistics.median(errs) > 0.05:
        table.data.setdefault("warnings", []).append(
            f"the table predicts the random schedules with a median error of {100 * statistics.median(errs):.1f}% "
            "(> 5%); was the machine busy? (see the load average in 'machine')")
    table.data["validation"] = {
        "schedules": val, "keep_ratio_range": list(validate_range), "n": len(val), "statistic": statistic,
        "median_abs_error_rel": statistics.median(errs), "max_abs_error_rel": errs[-1],
        "mean_error_rel": statistics.fmean(v["error_rel"] for v in val),
        "median_abs_error_raw_rel": statistics.median(raw_errs), "max_abs_error_raw_rel": raw_errs[-1],
        "reference_drift": drift, "group_drifts": runs.drifts,
    }
