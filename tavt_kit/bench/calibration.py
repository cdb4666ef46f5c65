"""Whole-model runs of a latency table: the anchors its calibration is fitted on, and its validation.

Whole models are timed round-robin with the table's reference block (a block keeping all tokens) and rescaled
by it to the machine speed the parts were timed at. :func:`fit_calibration` turns the anchors' timings into
``whole = scale x parts + offset (+ per merging block)``; the validation stores the prediction errors on random
schedules. Used by :func:`~tavt_kit.bench.profile.profile_latency` and
:func:`~tavt_kit.bench.profile.time_at_table_speed`.
"""
from __future__ import annotations

import contextlib
import math
import random
import statistics
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from ..errors import ConfigError, LatencyTableError
from ..schedules import TokenSchedule, evit_schedule, random_schedules, uniform_schedule
from ..schedules.space import prefix_tokens
from ..target import TORCH_BACKENDS
from .backends import EXPORTED_BACKENDS, Runner, release
from .identity import model_identity
from .parts import make_part
from .runners import make_input
from .table import LatencyTable
from .timing import TimingPolicy, measure_round_robin

#: whole models compiled at once for an exported backend (their weights, in bytes)
GROUP_BYTES = 1.5e9


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


def _stat_ms(stats, statistic: str) -> float:
    return (stats.p50 if statistic == "median" else min(stats.samples)) * 1e3


def _timed(keys_runners: Dict[Any, Runner], policy: TimingPolicy, backend: str, progress,
           statistic: str = "median"):
    """Latencies (ms, the table's statistic) and stats of runners timed round-robin."""
    fns = {k: r.fn for k, r in keys_runners.items()}
    timers = {k: r.timer for k, r in keys_runners.items() if r.timer is not None}
    ctx = torch.inference_mode() if backend in TORCH_BACKENDS else contextlib.nullcontext()
    with ctx:
        stats = measure_round_robin(fns, policy, timer=timers or None, progress=progress)
    return {k: _stat_ms(s, statistic) for k, s in stats.items()}, stats


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
                            reducers: Sequence[str] = ("drop",), token_multiple: int = 1) -> None:
    """Whole-model runs: the calibration anchors and the validation schedules.

    They are timed round-robin with the reference block (a block keeping all tokens), in groups
    small enough to hold the compiled models in memory (one group for the torch backends, which
    share the weights). Each group's times are rescaled to the machine speed the table was
    measured at (reference now vs reference in the table): the calibration fits the offset on the
    rescaled times, the validation reports the error against both the raw and the rescaled times.
    """
    rows = whole_model_rows(model, calibrate, validate, validate_range, seed, reducers, token_multiple)
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


def whole_model_rows(model, calibrate, validate, validate_range, seed, reducers: Sequence[str],
                     token_multiple: int = 1) -> Dict[str, TokenSchedule]:
    """The schedules to run whole: ``anchor:LABEL`` (calibration) and ``random:I`` (validation); with
    ``token_multiple`` > 1 aligned down (fitted where a search of aligned schedules looks)."""
    rows = _whole_model_rows(model, calibrate, validate, validate_range, seed, reducers)
    if token_multiple > 1:
        rows = {k: s.aligned_down(token_multiple, prefix_tokens(model)) for k, s in rows.items()}
    return rows


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
        size = max(1, int(GROUP_BYTES // max(weight_bytes, 1)))
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
        plain = [ti - p for ti, p, m in zip(t, parts, mb) if not m] or [ti - p for ti, p in zip(t, parts)]
        offset = statistics.median(plain)
        merging = [(ti - p - offset) / m for ti, p, m in zip(t, parts, mb) if m]
        out = {"parts_scale": 1.0, "offset_ms": offset,
               "merge_block_offset_ms": statistics.median(merging) if merging else 0.0, "model": "offset"}
    pred = [calibrated_ms(out, p, m) for p, m in zip(parts, mb)]
    out["fit_rms_rel"] = math.sqrt(statistics.fmean(((pi - ti) / ti) ** 2 for pi, ti in zip(pred, t)))
    return out


def calibrated_ms(fit: Dict[str, Any], parts_ms: float, merging_blocks: int = 0) -> float:
    """A whole model's milliseconds under a calibration of :func:`fit_calibration` (the table's prediction)."""
    return fit["parts_scale"] * parts_ms + fit["offset_ms"] + merging_blocks * fit["merge_block_offset_ms"]


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
