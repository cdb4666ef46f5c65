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
search goes (:func:`~tavt_kit.bench.calibration.anchor_schedules`): they absorb per-call costs that separate
parts count several times (an ONNX Runtime ``run()`` per part) or not at all
(Python around the blocks), and what whole models cost beyond their parts, which
grows with the schedule (:func:`~tavt_kit.bench.calibration.fit_calibration`).

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
from dataclasses import replace
from typing import Any, Callable, Dict, List, Optional, Tuple

from torch import nn

from ..errors import ConfigError, UnsupportedModelError
from ..schedules.families import check_keep_range
from ..schedules.schedule import aligned_below
from ..schedules.space import check_multiple, prefix_tokens
from ..progress import eta
from ..models.token_merge import REDUCERS
from .parts import PartRunners, int8_jobs, make_part, part_plan
from .runners import ModelRunners, input_shape, torch_threads
from .quantize_ahead import quantize_ahead
from .table import (TABLE_FORMAT, TABLE_VERSION, TABLE_VERSION_MERGE, LatencyTable, extra_merge_rounds,
                    fit_separable_rounds, fit_tied_rounds, isotonic)
from ..target import TORCH_BACKENDS, DeploymentTarget, Precision
from .backends import (EXPORTED_BACKENDS, Runner, check_target, deployed_module, release, set_compile_limits,
                       with_threads)
from ..machine import machine_info
from ..models import load_model
from .identity import model_identity
from .timing import TimingPolicy
from .calibration import _calibrate_and_validate, _time_whole_models, _timed, whole_model_rows
from .profile_cap import MIN_TIME_LIMIT_S, PROFILE_TIME_LIMIT_S, ProfileCap, check_time_limit, noise_summary

#: parts compiled at once for an exported backend (their weights, in bytes)
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


def aligned_grid(num_patches: int, points: int, multiple: int, num_prefix: int = 1) -> List[int]:
    """:func:`default_grid` with every count but the full one moved to the nearest whose sequence length (count
    and ``num_prefix``) is a multiple of ``multiple``: the counts an aligned search
    (:meth:`~tavt_kit.schedules.SearchSpace.aligned`) uses, so that the table measures them and not their
    neighbours, which run a few percent slower per token."""
    out = set()
    for g in default_grid(num_patches, points):
        if g == num_patches or multiple == 1:
            out.add(g)
            continue
        down = aligned_below(g, multiple, num_prefix)
        near = [c for c in (down, down + multiple) if 1 <= c < num_patches]
        if near:
            out.add(min(near, key=lambda c: (abs(c - g), c)))
    return sorted(out)


def _parse_grid(grid, num_patches: int, token_multiple: int = 1, num_prefix: int = 1) -> List[int]:
    if isinstance(grid, bool) or (isinstance(grid, int) and grid < 2):
        raise ConfigError(f"grid={grid!r}: expected at least 2 points (the full model's token count and one below "
                          "it), or a list of token counts")
    if grid is None or isinstance(grid, int):  # a number of points: spread evenly (aligned: aligned_grid)
        return aligned_grid(num_patches, 13 if grid is None else grid, token_multiple, num_prefix)
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
    token_multiple: int = 1,
    time_limit_s: Optional[float] = PROFILE_TIME_LIMIT_S,
) -> LatencyTable:
    """Measure a latency table of a model on one :class:`~tavt_kit.target.DeploymentTarget`.

    Args:
        model: token-drop model, checkpoint path or model name.
        target: where to time it (backend, device, precision, threads, batch size); default torch eager on the
            CPU at batch 1 with torch's thread count. ``precision``: fp32, bf16 / fp16 (OpenVINO inference
            hints; refused on a CPU without native support) or int8 (every part, and every whole model of the
            calibration, quantised with NNCF on seeded random inputs and compiled with the f32 hint; OpenVINO
            only). The table records it (:attr:`LatencyTable.target`).
        grid: patch-token counts to time blocks at (or a number of points; default 13 evenly over [1, N]).
        policy: repeat policy per part (default :func:`profile_policy`).
        calibrate: fit scale and offset on whole-model runs of :func:`~.calibration.anchor_schedules`.
        validate: also time this many random schedules (keep ratios in ``validate_range``) and store the errors.
        exporter: ONNX exporter for the exported backends; parts and whole models use the same one.
        workdir: where the exports go (default a temporary folder); a profile of a model of the same structure
            there takes its files (:mod:`.kept_exports`); int8 copies are made ahead (:mod:`.quantize_ahead`).
        verify_exports: check the whole-model exports (calibration, validation) against PyTorch in
            ONNX Runtime (the parts are always checked).
        statistic: what the table holds and predicts: ``"median"`` latency (default) or ``"min"``, the fastest
            repeat (on a machine shared with other jobs, the model's own cost).
        reducers: reducing blocks to profile: ``"drop"``, ``"merge"`` or both (``"drop,merge"`` or a
            sequence); default the model's reducer. A table predicts only schedules using these.
        token_multiple: > 1: an aligned search's (:func:`aligned_grid`, anchors and validation aligned down).
        time_limit_s: seconds of timing for the whole profile (>= :data:`MIN_TIME_LIMIT_S`; None: ``policy.budget_s``
            per part only), shared by parts and whole models; the table states their noise (:class:`ProfileCap`).
    Returns a :class:`LatencyTable` (save it with ``.save(path)``).
    """
    t_start = time.perf_counter()
    target = with_threads(target if target is not None else DeploymentTarget(backend="torch"))
    _check_options(target, statistic, validate_range, time_limit_s)
    policy = policy or profile_policy()
    say = progress or (lambda s: None)
    model, reducers, ident, g, plan = _planned(model, img_size, target, reducers, grid, token_multiple)
    tmp = tempfile.TemporaryDirectory(prefix="fgvc-kit-profile-") if workdir is None and \
        target.backend in EXPORTED_BACKENDS else None
    workdir = tmp.name if tmp is not None else workdir
    pr = PartRunners(target, ident["embed_dim"], workdir, exporter, compile_backend, say, identity=ident)
    anchor_key = ("plain", ident["num_prefix_tokens"] + ident["num_patches"])
    whole = whole_model_rows(model, calibrate, validate, validate_range, seed, reducers, token_multiple)
    cap = ProfileCap(time_limit_s, sum(len(v) for v in plan.values()), len(whole) + 1 if whole else 0)
    builder = ModelRunners(model, target, workdir, exporter, compile_backend, say, verify_exports) if whole else None
    try:  # the whole models after the parts: the calibration and validation
        with torch_threads(target.threads):
            _quantize_ahead(model, plan, pr, builder, whole, say)
            table = _profile_parts(model, ident, g, plan, pr, anchor_key, replace(policy, cap=cap.parts), seed,
                                   statistic, reducers, exporter, compile_backend, say)
            if builder is not None:
                _calibrate_and_validate(table, model, builder, anchor_key, pr, replace(policy, cap=cap.whole()),
                                        calibrate, validate, validate_range, seed, say, statistic, reducers,
                                        token_multiple)
            table.data.update({"token_multiple": token_multiple} if token_multiple > 1 else {})
    finally:
        if builder is not None:
            builder.close()  # its compiled models released
        if tmp is not None:
            tmp.cleanup()
    cap.record(table, time.perf_counter() - t_start, policy)
    return table


def _planned(model, img_size, target: DeploymentTarget, reducers, grid, token_multiple: int):
    """The model a table times, its reducers, its structure, the grid and the parts to time (:func:`part_plan`)."""
    model = _table_model(model, img_size, target)
    reducers = _check_reducers(model, reducers)
    ident = model_identity(model)
    g = _parse_grid(grid, ident["num_patches"], check_multiple(token_multiple), prefix_tokens(model))
    return model, reducers, ident, g, part_plan(model, g, reducers)


def _quantize_ahead(model, plan, pr: PartRunners, builder: Optional[ModelRunners], whole, say) -> None:
    """On an int8 OpenVINO target, every part's and whole model's int8 copy made before the first is timed, in as
    many parallel processes as the target has threads (:mod:`.quantize_ahead`); elsewhere nothing."""
    if pr.target.backend != "openvino" or pr.target.precision != Precision.INT8:
        return
    jobs = int8_jobs(model, [k for keys in plan.values() for k in keys], pr)
    if builder is not None:
        x_shape = input_shape(pr.batch, model_identity(model)["img_size"])
        for s in whole.values():
            job = builder.int8_job(s, x_shape)
            if job is not None and all(j.out != job.out for j in jobs):
                jobs.append(job)
    quantize_ahead(jobs, workers=pr.target.threads, progress=say)  # as many processes as the cores it is timed on


def _check_options(target: DeploymentTarget, statistic: str, validate_range, time_limit_s) -> None:
    """The options of :func:`profile_latency` checked before any work (one line naming the one that is wrong)."""
    check_target(target)
    if statistic not in STATISTICS:
        raise ConfigError(f"statistic={statistic}: expected one of {', '.join(STATISTICS)}")
    check_keep_range(validate_range, "validate_range")
    check_time_limit(time_limit_s)


def time_at_table_speed(table: LatencyTable, model, schedules: Dict[Any, Any], *,
                        policy: Optional[TimingPolicy] = None, seed: int = 0,
                        progress: Optional[Callable[[str], None]] = None) -> Dict[Any, float]:
    """Whole models at ``schedules`` (a label -> schedule mapping) timed on ``table``'s target, round-robin with
    the table's reference block, and rescaled to the machine speed the table was profiled at: the milliseconds
    its predictions are to be compared with (a table's validation does the same for random schedules).

    ``model``: the model the table was profiled on (or one of the same structure: latency does not depend on
    the weights). ``policy``: default :func:`profile_policy`."""
    target = with_threads(table.target)
    model = _table_model(model, None, target)
    table.check(model)
    ident = model_identity(model)
    t = table.data.get("target") or {}
    exporter, compile_backend = t.get("requested_exporter") or "auto", t.get("compile_backend") or "inductor"
    say = progress or (lambda s: None)
    rows = {k: table.schedule(v) for k, v in schedules.items()}
    with tempfile.TemporaryDirectory(prefix="fgvc-kit-whole-") as workdir:
        pr = PartRunners(target, ident["embed_dim"], workdir, exporter, compile_backend, say)
        builder = ModelRunners(model, target, workdir, exporter, compile_backend, say, False)
        try:
            with torch_threads(target.threads):
                runs = _time_whole_models(table, model, builder, rows, ("plain", ident["num_prefix_tokens"]
                                                                        + ident["num_patches"]), pr,
                                          policy or profile_policy(), seed, say,
                                          table.data.get("statistic") or "median")
        finally:
            builder.close()
    return dict(runs.scaled)


def _table_model(model, img_size, target: DeploymentTarget) -> nn.Module:
    """The model loaded onto ``target``'s device in eval mode (a torch backend at bf16 / fp16: a copy with its weights
    cast, :func:`~tavt_kit.bench.backends.deployed_module`); refused unless a table can describe it (timm ViT, linear
    head)."""
    model = load_model(model, img_size)
    model = deployed_module(model, target) if target.backend in TORCH_BACKENDS else model.eval().to(target.device)
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


def _fit_pairs(times, kind: str, prefix: int = 0, tie_out: Optional[Dict[int, float]] = None) -> Dict[str, Any]:
    """The two curves of a reducing block fitted to its measured pairs, the pairs and the separability.

    A merging block is fitted to the pairs that merge only (``L_out < L_in``): one that merges nothing skips the
    matching and costs a plain block's time, and with it in the fit the curves went negative at few tokens
    (searched int8 picks that merge were predicted at 0.58-0.71 of their timed latency). Its bipartite rounds
    after the first are priced on their own (``round_ms``, :func:`~tavt_kit.bench.table.fit_separable_rounds`;
    ``prefix``: the prefix tokens in ``L``); each pair lists how many it ran. With ``tie_out`` (the dropping
    blocks' MLP curve) a merging block's output side is that curve (:func:`~tavt_kit.bench.table.fit_tied_rounds`)
    and ``"fit"`` says ``"mlp-tied"``."""
    pairs = [(k[1], k[2], times[k]) for k in times if k[0] == kind and (kind != "merge" or k[2] < k[1])]
    rounds = {(li, lo): extra_merge_rounds(li - prefix, lo - prefix) if kind == "merge" else 0 for li, lo, _ in pairs}
    extra = [rounds[li, lo] for li, lo, _ in pairs]
    tied = fit_tied_rounds(pairs, extra, tie_out) if kind == "merge" and tie_out else None
    ins, attn, outs, mlp, round_ms = tied or fit_separable_rounds(pairs, extra)
    attn_m, mlp_m = isotonic(attn), isotonic(mlp)
    ai = dict(zip(ins, attn_m))
    mi = dict(zip(outs, mlp_m))
    fitted = [(li, lo, t, ai[li] + mi[lo] + rounds[li, lo] * round_ms) for li, lo, t in sorted(pairs)]
    rel = [(fit - t) / t for _, _, t, fit in fitted]
    out = {"in": {"tokens": ins, "ms": attn_m, "fitted": attn}, "out": {"tokens": outs, "ms": mlp_m, "fitted": mlp},
           "pairs": [list(p) + ([rounds[p[0], p[1]]] if kind == "merge" else []) for p in fitted],
           "separability": {"rms_rel": math.sqrt(sum(r * r for r in rel) / len(rel)),
                            "max_abs_rel": max(abs(r) for r in rel), "pairs": len(rel)}}
    if kind == "merge":
        out["round_ms"] = round_ms
        out["fit"] = "mlp-tied" if tied else "separable"
    return out


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
    tie_out = None
    if "drop" in reducers:
        fit = _fit_pairs(times, "drop")
        data.update(attn_ms=fit["in"], mlp_ms=fit["out"], pairs=fit["pairs"], separability=fit["separability"])
        tie_out = dict(zip(fit["out"]["tokens"], fit["out"]["ms"]))
    if reducers != ("drop",):
        data["reducers"] = list(reducers)
    if "merge" in reducers:
        fit = _fit_pairs(times, "merge", P, tie_out)
        data.update(merge_attn_ms=fit["in"], merge_mlp_ms=fit["out"], merge_round_ms=fit["round_ms"],
                    merge_pairs=fit["pairs"], merge_separability=fit["separability"], merge_fit=fit["fit"])
        data["method"] += "; merging blocks: merge_attn(L_in) + merge_mlp(L_out) + round_ms per bipartite round " \
                          "after the first" + (" (merge_mlp = the dropping blocks' mlp)" if fit["fit"] == "mlp-tied"
                                               else "") + (
            ", timed with the size bias; prop(L) for blocks after a merge (proportional attention)"
            if ident.get("prop_attn") else "")
        prop_raw = [times[("prop", L)] for L in plain_L] if ("prop", plain_L[0]) in times else None
        data["prop_ms"] = {"tokens": plain_L, "ms": isotonic(prop_raw), "measured": prop_raw} if prop_raw else None
    return data


