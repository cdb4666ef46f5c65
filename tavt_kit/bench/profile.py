"""Profiling a latency table on the target: each part of the model timed at a grid of token counts.

A dropping block's latency is split into ``attn(L_in) + mlp(L_out)``. That split is *measured*, not assumed: the table
times the whole dropping block (:func:`~tavt_kit.models.token_drop.drop_block_forward`)
at every pair (n_in, n_out) of a grid of token counts with n_out <= n_in, and
fits ``attn`` and ``mlp`` to those pairs by least squares (relative error);
``separability`` reports how far the measured pairs are from the sum (well under
1 % on the CPUs tried, so the two 1-D curves stand for the 2-D grid and
interpolate between its points). Curves are made non-decreasing (isotonic
regression, noise only) and interpolated linearly. ``offset`` is calibrated on a
few whole-model runs (the full model, one TAVT-style and one EViT-style
schedule): it absorbs per-call costs that separate parts count several times
(an ONNX Runtime ``run()`` per part) or not at all (Python around the blocks).

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
"""
from __future__ import annotations

import datetime as _dt
import math
import os
import random
import statistics
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..errors import ConfigError, UnsupportedModelError
from ..progress import eta
from ..schedules import TokenSchedule, evit_schedule, random_schedules, uniform_schedule
from ..models.token_drop import TokenState, drop_block_forward
from .runners import ModelRunners, make_input, torch_threads
from .table import TABLE_FORMAT, TABLE_VERSION, LatencyTable, fit_separable, isotonic
from .backends import (EXPORTED_BACKENDS, Runner, check_backend, compile_module, default_threads, openvino_runner,
                       ort_runner, release, run_compiled_once, set_compile_limits, torch_runner)
from ..machine import machine_info
from ..models import load_model
from .target import model_identity
from .timing import TimingPolicy, measure_round_robin

#: whole models / parts compiled at once for an exported backend (their weights, in bytes)
_GROUP_BYTES = 1.5e9
#: memory of a compiled part per byte of the block's weights (OpenVINO: weights + buffers, ~2.6x)
_PART_MEMORY = 2.6


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
        raise ConfigError(f"grid must be a point count or a list of token counts, got {grid!r}") from None
    if not g or g[0] < 1 or g[-1] > num_patches:
        raise ConfigError(f"grid token counts must lie in [1, {num_patches}], got {g}")
    if g[-1] != num_patches:
        g.append(num_patches)  # the full model's blocks must be on the grid
    if len(g) < 2:
        raise ConfigError("a grid needs at least two token counts")
    return g


def anchor_schedules(depth: int, num_patches: int) -> List[Tuple[str, TokenSchedule]]:
    """Whole-model schedules the offset is calibrated on: full, TAVT-style 0.9/block, EViT-style 0.7 at 3 blocks."""
    out = [("full", TokenSchedule.full(depth, num_patches)), ("tavt 0.9", uniform_schedule(0.9, depth, num_patches))]
    if depth >= 4:
        out.append(("evit 0.7", evit_schedule(0.7, depth, num_patches)))
    return out


# ------------------------------------------------------------------------ parts
class EmbedPart(nn.Module):
    """Patch embedding, position embedding and prefix tokens, pre-norm (images -> tokens)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.m = model

    def forward(self, x):
        return self.m.embed_tokens(x)


class PlainPart(nn.Module):
    """A block that keeps every token (timm's own block)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x):
        return self.block(x)


class DropPart(nn.Module):
    """A block that keeps ``keep`` patch tokens (the model's scorer and fuse setting)."""

    def __init__(self, block: nn.Module, keep: int, num_prefix: int, num_patches: int, fused_in: bool, scorer: str,
                 fuse: bool):
        super().__init__()
        self.block = block
        self.keep, self.num_prefix, self.num_patches = keep, num_prefix, num_patches
        self.fused_in, self.scorer, self.fuse = fused_in, scorer, fuse

    def forward(self, x):
        state = TokenState(self.num_prefix, self.num_patches, track=False)
        state.has_fused = self.fused_in
        return drop_block_forward(self.block, x, self.keep, state, self.scorer, self.fuse)


class HeadPart(nn.Module):
    """Final norm and head (pooling, classifier); drops the fused token first when there is one."""

    def __init__(self, model: nn.Module, fused: bool):
        super().__init__()
        self.m = model
        self.fused = fused

    def forward(self, x):
        if self.fused:
            x = x[:, :-1]
        return self.m.forward_head(self.m.norm(x))


# ----------------------------------------------------------------- numerics
class _PartRunners:
    """Runners of model parts for one backend (exported parts cached per part)."""

    def __init__(self, backend: str, device: str, threads: int, precision: str, workdir: str, exporter: str,
                 compile_backend: str, batch: int, embed_dim: int, progress=None):
        self.backend, self.device, self.threads, self.precision = backend, device, threads, precision
        self.workdir, self.exporter, self.compile_backend = workdir, exporter, compile_backend
        self.batch, self.C = batch, embed_dim
        self.progress = progress
        self.files: Dict[str, str] = {}
        self.exporters: Dict[str, str] = {}

    def _say(self, text):
        if self.progress:
            self.progress(text)

    def _export(self, name: str, module: nn.Module, example: torch.Tensor, token_min: Optional[int]) -> str:
        from ..export.onnx import export_module

        if name in self.files:
            return self.files[name]
        self._say(f"exporting part {name}")
        axes = {0: "batch"} if token_min is None else {0: "batch", 1: "tokens"}
        out_axes = {0: "batch"}
        if isinstance(module, PlainPart):
            out_axes = {0: "batch", 1: "tokens"}
        res = export_module(module, example, os.path.join(self.workdir, f"{name}.onnx"), exporter=self.exporter,
                            input_name="input", output_name="output", dynamic_axes=axes, output_axes=out_axes,
                            dim_min={0: 1, 1: token_min} if token_min is not None else {0: 1},
                            verify_inputs=[example[:1]])
        self.files[name] = res.path
        self.exporters[name] = res.exporter
        return res.path

    def runner(self, name: str, module: nn.Module, shape: Sequence[int], token_min: Optional[int] = None,
               export_tokens: Optional[int] = None) -> Runner:
        """Runner of ``module`` on a random input of ``shape``; ``token_min``: dim 1 is a token axis."""
        g = torch.Generator().manual_seed(len(self.files) + 1)
        x = torch.randn(*shape, generator=g)
        if self.backend in ("torch", "torch-compile"):
            xd = x.to(self.device)
            module = module.to(self.device)
            if self.backend == "torch-compile":
                compiled = compile_module(module, self.compile_backend)
                with torch.inference_mode():
                    run_compiled_once(lambda: compiled(xd))
                return torch_runner(lambda: compiled(xd), self.device)
            return torch_runner(lambda: module(xd), self.device)
        ex_shape = list(shape)
        ex_shape[0] = 2
        if token_min is not None and export_tokens is not None:
            ex_shape[1] = export_tokens
        path = self._export(name, module, torch.randn(*ex_shape, generator=g), token_min)
        free = {"batch": int(shape[0])}
        if token_min is not None:
            free["tokens"] = int(shape[1])
        if self.backend == "onnxruntime":
            return ort_runner(path, x.numpy(), self.device, self.threads, free_dims=free)
        return openvino_runner(path, x.numpy(), self.threads, self.precision, shape=list(shape))


def _plan(model: nn.Module, grid: List[int]):
    """Keys of every part to time, grouped by the exported file they come from."""
    P, N = int(model.num_prefix_tokens), int(model.num_patches)
    fuse = bool(model.fuse)
    f = int(fuse)
    groups: Dict[str, List[tuple]] = {"embed": [("embed",)], "plain": [("plain", P + g) for g in grid],
                                      "head": [("head", P + g + f) for g in grid]}
    if fuse:
        groups["head"].append(("head_nodrop", P + N))
    for k in grid:
        groups[f"drop{k}"] = [("drop", P + n + f, P + k + f, n, k) for n in grid if n >= k]
    return groups


def _part(model: nn.Module, key: tuple, batch: int, C: int, pr: _PartRunners) -> Runner:
    P, N = int(model.num_prefix_tokens), int(model.num_patches)
    fuse = bool(model.fuse)
    blk = model.blocks[0]
    kind = key[0]
    if kind == "embed":
        H, W = model.patch_embed.img_size
        return pr.runner("embed", EmbedPart(model), (batch, 3, H, W))
    if kind == "plain":
        return pr.runner("plain", PlainPart(blk), (batch, key[1], C), token_min=1, export_tokens=P + N)
    if kind == "head":
        return pr.runner("head", HeadPart(model, fuse), (batch, key[1], C), token_min=P + 1 + int(fuse),
                         export_tokens=P + N + int(fuse))
    if kind == "head_nodrop":
        return pr.runner("head_nodrop", HeadPart(model, False), (batch, key[1], C), token_min=P + 1,
                         export_tokens=P + N)
    _, L_in, L_out, n, k = key
    part = DropPart(blk, k, P, N, fuse, model.scorer, fuse)
    return pr.runner(f"drop{k}", part, (batch, L_in, C), token_min=P + k + int(fuse),
                     export_tokens=P + N + int(fuse))


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
    target,
    *,
    backend: str = "torch",
    device: str = "cpu",
    batch_size: int = 1,
    threads: Optional[int] = None,
    precision: str = "f32",
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
    progress: Optional[Callable[[str], None]] = None,
) -> LatencyTable:
    """Measure a latency table of a model on one backend/device/batch/threads.

    Args:
        target: token-drop model, checkpoint path or model name.
        grid: patch-token counts to measure blocks at (default 13 points evenly over [1, grid]),
            or a number of points. Dropping blocks are timed at every pair n_out <= n_in of it.
        policy: repeat policy per part (default :func:`profile_policy`).
        calibrate: fit the additive ``offset`` on whole-model runs of :func:`anchor_schedules`.
        validate: also measure this many random TAVT-style schedules (keep ratio per block drawn
            in ``validate_range``) directly and store the prediction errors in the table.
        exporter: ONNX exporter for the exported backends; parts and whole models use the same one.
        verify_exports: check the whole-model exports (calibration, validation) against PyTorch in
            ONNX Runtime (the parts are always checked).
        statistic: what the table holds and predicts: ``"median"`` latency (default; right on a
            dedicated target) or ``"min"``, the fastest of the repeats: on a machine shared with
            other jobs the slower runs time the other jobs (a core shared by two processes runs at
            half speed for seconds at a time), while the fastest run is the model's own cost.
    Returns:
        a :class:`LatencyTable` (save it with ``.save(path)``).
    """
    import tempfile


    check_backend(backend, device)
    if precision != "f32" and backend != "openvino":
        raise ConfigError(f"precision {precision!r} is only available with --backend openvino")
    if statistic not in STATISTICS:
        raise ConfigError(f"unknown statistic {statistic!r}; expected one of {', '.join(STATISTICS)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    threads = int(threads) if threads else default_threads()
    policy = policy or profile_policy()
    say = progress or (lambda s: None)
    model = load_model(target, img_size).eval().to(device)
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(model, VisionTransformer):
        raise UnsupportedModelError(f"latency tables support timm ViT backbones; {type(model).__name__} is not one "
                                    "(measure it directly with fgvc-kit bench)")
    if getattr(model, "head_name", "linear") != "linear":
        raise UnsupportedModelError(f"latency tables support the linear head; this model has the "
                                    f"{model.head_name} head (measure it directly with fgvc-kit bench)")
    ident = model_identity(model)
    P, N, C = ident["num_prefix_tokens"], ident["num_patches"], ident["embed_dim"]
    g = _parse_grid(grid, N)
    plan = _plan(model, g)
    tmp = None
    if workdir is None and backend in EXPORTED_BACKENDS:
        tmp = tempfile.TemporaryDirectory(prefix="fgvc-kit-profile-")
        workdir = tmp.name
    pr = _PartRunners(backend, device, threads, precision, workdir, exporter, compile_backend, batch_size, C, say)
    anchor_key = ("plain", P + N)
    times: Dict[tuple, float] = {}
    drift: Dict[str, float] = {}
    try:
        with torch_threads(threads):
            if backend == "torch-compile":
                set_compile_limits(sum(len(v) for v in plan.values()) + 64)
            exported = backend in EXPORTED_BACKENDS
            keys_all = [k for keys in plan.values() for k in keys]
            if exported:
                # every compiled part holds its own copy of a block's weights (and its buffers): time them in
                # groups that fit in memory, each with the reference block (to rescale the groups to one
                # machine speed), and shuffled so that a group timed while the machine was busy scatters its
                # error over the curves instead of bending one of them
                block_bytes = sum(p.numel() * p.element_size() for p in model.blocks[0].parameters())
                size = max(8, int(_GROUP_BYTES // max(1, _PART_MEMORY * block_bytes)))
                random.Random(seed).shuffle(keys_all)
                n_groups = -(-len(keys_all) // size)
                size = -(-len(keys_all) // n_groups)  # even groups
                groups = [keys_all[i:i + size] for i in range(0, len(keys_all), size)]
            else:
                groups = [keys_all]  # the torch backends share the weights: one round-robin
            anchor = _part(model, anchor_key, batch_size, C, pr) if exported and len(groups) > 1 else None
            anchor_times = []
            t_groups = time.perf_counter()
            for gi, keys in enumerate(groups):
                say(f"timing {len(keys)} parts ({gi + 1}/{len(groups)}, ETA "
                    f"{eta(gi, len(groups), time.perf_counter() - t_groups)})")
                runners = {k: _part(model, k, batch_size, C, pr) for k in keys}
                if anchor is not None:
                    runners[("anchor",)] = anchor
                t, _ = _timed(runners, policy, backend, say, statistic)
                if anchor is not None:
                    a = t.pop(("anchor",))
                    anchor_times.append((keys, a))
                times.update(t)
                for k, r in runners.items():
                    if r is not anchor:
                        release(r)
            if anchor_times:
                ref = statistics.median(a for _, a in anchor_times)
                for gi, (keys, a) in enumerate(anchor_times):
                    factor = ref / a
                    drift[f"group {gi + 1}"] = factor
                    for k in keys:
                        times[k] *= factor
                times[anchor_key] = ref
            data = _assemble(model, ident, g, times, backend, device, batch_size, threads, precision, exporter,
                             compile_backend, pr.exporters, policy)
            data["statistic"] = statistic
            data["drift"] = {"reference": "plain block at full tokens", "factors": drift} if drift else None
            table = LatencyTable(data)
            if calibrate or validate:
                builder = ModelRunners(model, backend, device, threads, precision, workdir, exporter,
                                       compile_backend, say, verify_exports)
                try:
                    _calibrate_and_validate(table, model, builder, anchor_key, pr, batch_size, C, policy,
                                            calibrate, validate, validate_range, seed, say, statistic)
                finally:
                    builder.close()
    finally:
        if tmp is not None:
            tmp.cleanup()
    return table


def _assemble(model, ident, grid, times, backend, device, batch, threads, precision, exporter, compile_backend,
              part_exporters, policy) -> Dict[str, Any]:
    P, N = ident["num_prefix_tokens"], ident["num_patches"]
    f = int(ident["fuse"])
    plain_L = [P + g for g in grid]
    plain_raw = [times[("plain", L)] for L in plain_L]
    head_L = [P + g + f for g in grid]
    head_raw = [times[("head", L)] for L in head_L]
    pairs = [(k[1], k[2], times[k]) for k in times if k[0] == "drop"]
    ins, attn, outs, mlp = fit_separable(pairs)
    attn_m, mlp_m = isotonic(attn), isotonic(mlp)
    ai = dict(zip(ins, attn_m))
    mi = dict(zip(outs, mlp_m))
    fitted = [(li, lo, t, ai[li] + mi[lo]) for li, lo, t in sorted(pairs)]
    rel = [(fit - t) / t for _, _, t, fit in fitted]
    exporters = sorted(set(part_exporters.values()))
    data = {
        "format": TABLE_FORMAT,
        "version": TABLE_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": ident,
        "target": {"backend": backend, "device": device, "batch_size": batch, "threads": threads,
                   "precision": precision if backend == "openvino" else "f32",
                   "exporter": (exporters[0] if len(exporters) == 1 else exporters) if exporters else None,
                   "requested_exporter": exporter if backend in EXPORTED_BACKENDS else None,
                   "compile_backend": compile_backend if backend == "torch-compile" else None},
        "machine": machine_info(device, threads),
        "unit": "ms per batch",
        "method": "separable: plain(L) for blocks that keep all tokens, attn(L_in) + mlp(L_out) for dropping "
                  "blocks; L = all tokens in the sequence",
        "grid": list(grid),
        "embed_ms": times[("embed",)],
        "plain_ms": {"tokens": plain_L, "ms": isotonic(plain_raw), "measured": plain_raw},
        "attn_ms": {"tokens": ins, "ms": attn_m, "fitted": attn},
        "mlp_ms": {"tokens": outs, "ms": mlp_m, "fitted": mlp},
        "head_ms": {"tokens": head_L, "ms": isotonic(head_raw), "measured": head_raw},
        "pairs": [list(p) for p in fitted],
        "separability": {"rms_rel": math.sqrt(sum(r * r for r in rel) / len(rel)),
                         "max_abs_rel": max(abs(r) for r in rel), "pairs": len(rel)},
        "reference_ms": times[("plain", plain_L[-1])],
        "offset_ms": 0.0,
        "calibration": None,
        "validation": None,
        "policy": policy.to_dict(),
    }
    if ("head_nodrop", P + N) in times:
        data["head_nodrop_ms"] = times[("head_nodrop", P + N)]
    return data


def _calibrate_and_validate(table: LatencyTable, model, builder, anchor_key, pr, batch, C, policy, calibrate,
                            validate, validate_range, seed, say, statistic: str = "median") -> None:
    """Whole-model runs: the calibration anchors and the validation schedules.

    They are timed round-robin with the reference block (a block keeping all tokens), in groups
    small enough to hold the compiled models in memory (one group for the torch backends, which
    share the weights). Each group's times are rescaled to the machine speed the table was
    measured at (reference now vs reference in the table): the calibration fits the offset on the
    rescaled times, the validation reports the error against both the raw and the rescaled times.
    """

    depth, N = model.depth, model.num_patches
    rows: Dict[str, TokenSchedule] = {}
    if calibrate:
        for label, s in anchor_schedules(depth, N):
            rows[f"anchor:{label}"] = s
    if validate:
        lo, hi = validate_range
        for i, s in enumerate(random_schedules(depth, N, validate, lo, hi, seed=seed + 1)):
            rows[f"random:{i}"] = s
    x = make_input(batch, model_identity(model)["img_size"], seed)
    keys = list(rows)
    if builder.backend in EXPORTED_BACKENDS:
        weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        size = max(1, int(_GROUP_BYTES // max(weight_bytes, 1)))
    else:
        size = len(keys)
    reference = _part(model, anchor_key, batch, C, pr)
    ref_table = float(table.data["reference_ms"])
    raw: Dict[str, float] = {}
    scaled: Dict[str, float] = {}
    ci: Dict[str, float] = {}
    other: Dict[str, Dict[str, float]] = {}
    drifts = []
    for g0 in range(0, len(keys), size):
        chunk = keys[g0:g0 + size]
        runners = {k: builder.runner(rows[k].counts, x) for k in chunk}
        runners["reference"] = reference
        say(f"timing {len(chunk)} whole-model schedules with the reference block "
            f"({g0 // size + 1}/{(len(keys) + size - 1) // size})")
        t, stats = _timed(runners, policy, builder.backend, say, statistic)
        ref_now = t.pop("reference")
        drifts.append(ref_now / ref_table - 1)
        for k in chunk:
            raw[k] = t[k]
            scaled[k] = t[k] * ref_table / ref_now
            ci[k] = stats[k].ci95_rel
            other[k] = {"p50_ms": stats[k].p50 * 1e3, "min_ms": min(stats[k].samples) * 1e3,
                        "repeats": stats[k].n}
            release(runners[k])
    drift = statistics.median(drifts)
    table.data["reference_drift"] = drift
    if calibrate:
        calib = []
        for key, s in rows.items():
            if not key.startswith("anchor:"):
                continue
            parts = table.predict(s) - table.offset_ms
            calib.append({"label": key.split(":", 1)[1], "schedule": list(s.counts), "measured_ms": raw[key],
                          "measured_ms_table_speed": scaled[key], "parts_ms": parts,
                          "residual_ms": scaled[key] - parts})
        table.data["offset_ms"] = statistics.median(c["residual_ms"] for c in calib)
        table.data["calibration"] = calib
        full = next((c for c in calib if c["label"] == "full"), calib[0])
        share = table.data["offset_ms"] / full["measured_ms_table_speed"]
        if abs(share) > 0.2:
            table.data.setdefault("warnings", []).append(
                f"the calibration offset is {100 * share:+.0f}% of the full model's latency: whole-model runs "
                "cost much more (or less) than their parts, e.g. because other jobs preempted the longer runs; "
                "predictions hold for a machine as busy as this one was (profile on a quiet machine)")
    if abs(drift) > 0.05:
        table.data.setdefault("warnings", []).append(
            f"the machine's speed changed by {100 * drift:+.0f}% between timing the parts and the whole models "
            "(reference block); other jobs were running")
    if validate:
        val = []
        for key, s in rows.items():
            if not key.startswith("random:"):
                continue
            pred = table.predict(s)
            val.append({"schedule": list(s.counts), "measured_ms": raw[key],
                        "measured_ms_table_speed": scaled[key], "predicted_ms": pred,
                        "error_rel": (pred - scaled[key]) / scaled[key], "error_raw_rel": (pred - raw[key]) / raw[key],
                        "ci95_rel": ci[key], **other[key]})
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
            "reference_drift": drift, "group_drifts": drifts,
        }
