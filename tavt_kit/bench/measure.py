"""``measure_latency``: latency, throughput and peak memory of a model at token schedules.

One call measures one :class:`~tavt_kit.target.DeploymentTarget` (backend, device, precision, threads) at
one or more batch sizes, for every (schedule, batch size): the schedules of one batch size are timed round-robin
(:func:`~tavt_kit.bench.timing.measure_round_robin`), so their ratios
(speed-up over the full model) hold even on a machine whose speed drifts.

Schedules keep their per-block reducers (drop configs of version 2, a
checkpoint whose model merges): a merge and a drop at the same counts are
measured as two rows, each recording its ``reducers``.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Dict, Hashable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..errors import ConfigError, ExportError
from ..machine import busy_load, threads_text, machine_info
from ..models import load_model
from ..target import TORCH_BACKENDS, DeploymentTarget, Precision
from .backends import (EXPORTED_BACKENDS, Runner, check_target, file_kind, file_runner, release, set_compile_limits,
                       with_threads)
from .identity import identity_from_spec, model_from_spec, model_identity
from .runners import ModelRunners, make_input, torch_threads
from .result import BenchReport, BenchResult
from .timing import MemoryProbe, TimingPolicy, TimingStats, measure_round_robin

def _report(ident, target: DeploymentTarget, batch_sizes: List[int], policy: TimingPolicy,
            results: List[BenchResult], notes: List[str], **runtime) -> BenchReport:
    """The report of ``results``, the runtime's precision read back from them."""
    used = sorted({r.info.get("precision_used") for r in results if r.info.get("precision_used")})
    timing = None
    if target.device.startswith("cuda"):
        timing = "cuda-events" if target.backend in TORCH_BACKENDS else "host-synchronous"
    return BenchReport(ident, target, machine_info(target.device, target.threads), policy.to_dict(), results,
                       batch_sizes=batch_sizes, timing=timing, notes=notes,
                       precision_used=(used[0] if len(used) == 1 else used) if used else Precision.FP32, **runtime)


def _check_batches(batch_sizes) -> List[int]:
    if isinstance(batch_sizes, int):
        batch_sizes = [batch_sizes]
    out = []
    for b in batch_sizes:
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise ConfigError(f"batch_size={b!r}: expected a positive number of images")
        out.append(b)
    if not out:
        raise ConfigError("batch_sizes=[]: expected at least one batch size")
    return out


def _measure(runners: Dict[Hashable, Runner], policy: TimingPolicy, device: str, backend: str,
             progress=None) -> Dict[Hashable, tuple]:
    """``{key: (timing statistics, peak memory)}`` of runners timed round-robin on ``device`` with ``backend``
    (the memory of an exported file's runtime is the host's)."""
    memory: Dict[Hashable, Dict[str, Any]] = {}
    probe_device = device if backend in TORCH_BACKENDS else "cpu"

    def on_warmup(key, run):
        probe = MemoryProbe(probe_device)
        with probe:
            run()
        memory[key] = probe.to_dict()

    fns = {k: r.fn for k, r in runners.items()}
    timers = {k: r.timer for k, r in runners.items() if r.timer is not None}
    ctx = torch.inference_mode() if backend in TORCH_BACKENDS else contextlib.nullcontext()
    with ctx:
        stats = measure_round_robin(fns, policy, timer=timers or None, on_warmup=on_warmup, progress=progress)
    return {k: (stats[k], memory.get(k, {})) for k in runners}


FileArg = Union[str, "os.PathLike[str]", Tuple[Any, DeploymentTarget]]


def measure_files(files: Mapping[Hashable, FileArg], img_size, *, target: Optional[DeploymentTarget] = None,
                  policy: Optional[TimingPolicy] = None, seed: int = 0,
                  progress: Optional[Callable[[str], None]] = None) -> Dict[Hashable, Tuple[TimingStats, dict]]:
    """Exported files timed round-robin in one process, so that a machine whose speed drifts slows them alike
    (their ratios are then the figures to trust).

    ``files`` maps a key to a path, run on ``target``, or to ``(path, DeploymentTarget)``: a file on its own
    target (backend onnxruntime or openvino; its precision: fp32, bf16 or fp16 are OpenVINO's inference hints,
    int8 a quantised file run with the f32 hint; its batch size and threads; threads None: torch's count).
    Returns ``{key: (timing statistics, runner info with "threads")}``."""
    pairs: Dict[Hashable, Tuple[str, DeploymentTarget]] = {}
    for key, value in files.items():
        path, t = (value if isinstance(value, tuple) else (value, target))
        if t is None:
            raise ConfigError(f"files[{key!r}]: {path} names no target and target= is not given")
        t = with_threads(t)
        if t.backend not in EXPORTED_BACKENDS:
            raise ConfigError(f"backend={t.backend}: {path} is an exported file; measure_files times it with "
                              "backend=onnxruntime or openvino")
        pairs[key] = (os.fspath(path), t)
    for t in set(t for _, t in pairs.values()):
        # an ONNX Runtime file runs at the precision of its graph (fp16 and int8 graphs are files of their own)
        check_target(t if t.backend == "openvino" else t.with_(precision=Precision.FP32))
    inputs: Dict[int, Any] = {}
    runners: Dict[Hashable, Runner] = {}
    try:
        for key, (path, t) in pairs.items():
            b = t.batch_size
            if b not in inputs:
                inputs[b] = make_input(b, img_size, seed).numpy()
            runners[key] = file_runner(path, inputs[b], t, free_dims={"batch": b})
        device = next((t.device for _, t in pairs.values()), "cpu")
        measured = _measure(runners, policy or TimingPolicy(), device, "openvino", progress)
    finally:
        for r in runners.values():
            release(r)
    return {k: (measured[k][0], {**runners[k].info, "threads": pairs[k][1].threads}) for k in files}


def measure_schedules(model: nn.Module, items: Mapping[Hashable, Tuple[Any, str]], *, target: DeploymentTarget,
                      policy: Optional[TimingPolicy] = None, seed: int = 0,
                      progress: Optional[Callable[[str], None]] = None,
                      workdir: Optional[str] = None) -> Dict[Hashable, Tuple[TimingStats, dict]]:
    """The model at several (schedule, precision) pairs, deployed on ``target`` (backend openvino or
    onnxruntime, its device, threads and batch size) and timed round-robin in one process
    (:func:`measure_files`); ``items`` maps a key to ``(schedule, precision)``, the precision replacing the
    target's (int8: the export quantised with NNCF, calibrated on random inputs: only the time is measured).
    Exports of one schedule are shared between its precisions; ``workdir``: a folder the exports are kept in for
    the next call with it (:mod:`.kept_exports`; default a temporary one)."""
    import tempfile

    target = with_threads(target)
    if target.backend not in EXPORTED_BACKENDS:
        raise ConfigError(f"backend={target.backend}: measure_schedules deploys exported files; expected "
                          "backend=openvino or onnxruntime")
    targets = {k: target.with_(precision=p) for k, (_, p) in items.items()}
    for t in set(targets.values()):
        check_target(t)  # before any export
    img = model_identity(model)["img_size"]
    folder = contextlib.nullcontext(workdir) if workdir else tempfile.TemporaryDirectory(prefix="fgvc-kit-pairs-")
    with folder as tmp:
        builder = ModelRunners(model, target, workdir=tmp, verify_exports=False, progress=progress)
        files: Dict[Hashable, Tuple[str, DeploymentTarget]] = {}
        shape = [target.batch_size, 3, int(img[0]), int(img[1])]
        for k, (schedule, _) in items.items():
            path = builder.exported_file(schedule)
            if targets[k].precision == Precision.INT8:
                path = builder.quantized_file(schedule, path, shape)
            files[k] = (path, targets[k])
        return measure_files(files, img, policy=policy, seed=seed, progress=progress)


def measure_latency(
    model,
    schedules: Optional[Sequence[Any]] = None,
    *,
    target: Optional[DeploymentTarget] = None,
    batch_sizes: Optional[Sequence[int]] = None,
    include_full: bool = True,
    labels: Optional[Sequence[str]] = None,
    policy: Optional[TimingPolicy] = None,
    checkpoint=None,
    img_size=None,
    table=None,
    workdir=None,
    exporter: str = "auto",
    compile_backend: str = "inductor",
    verify_exports: bool = True,
    seed: int = 0,
    progress: Optional[Callable[[str], None]] = None,
) -> BenchReport:
    """Measure latency (p50/p90/p99), throughput and peak memory at token schedules.

    Args:
        model: what is measured: a token-drop model, a checkpoint path, a model name (``fgvc_tiny``), or an
            exported ``.onnx`` (backends onnxruntime, openvino) / OpenVINO ``.xml`` file.
        schedules: schedules to measure (TokenSchedule, counts, drop-config paths); default the
            model's own schedule if it has one. Not allowed for exported files (fixed schedule).
        target: where (:class:`~tavt_kit.target.DeploymentTarget`; default torch eager on the CPU, fp32, batch 1,
            torch's thread count). ``backend``: ``torch`` (eager), ``torch-compile``, ``onnxruntime`` or
            ``openvino``; the last two export the model at each schedule to ONNX first
            (:func:`tavt_kit.export.export_onnx`). ``device``: ``cpu`` or ``cuda`` (CUDA timing uses CUDA
            events). ``threads``: intra-op threads (torch, ONNX Runtime, OpenVINO). ``precision``: fp32, or with
            OpenVINO bf16 / fp16 (inference hints, refused on a CPU without them) or int8: each schedule's export
            quantised with NNCF (calibrated on random inputs: timing only) and run with the f32 hint; an
            exported file must then be a quantised one.
        batch_sizes: batch sizes, each measured separately (schedules round-robin); default the target's.
        include_full: also measure the full model, for the speed-up column.
        labels: names of ``schedules`` (default ``schedule 1``, ...; the full schedule is ``full``).
        policy: warm-up and repeat policy (:class:`~tavt_kit.bench.TimingPolicy`).
        checkpoint: for an exported file, the checkpoint it must match (input size, classes, shape).
        table: a :class:`~tavt_kit.bench.LatencyTable` (or path); adds its prediction to each result of its
            batch size (refused unless it was profiled on this target: backend, device, precision, threads).
        workdir: where exported files go (default: a temporary folder, removed afterwards).
        exporter: ONNX exporter for the exported backends (``auto``, ``dynamo``, ``torchscript``).
        compile_backend: torch.compile backend (``inductor``; ``eager`` for a quick check).
        verify_exports: check each export against PyTorch in ONNX Runtime (max abs logit difference
            in ``runtime.export_max_abs_diff``); off saves a PyTorch and an ONNX Runtime run per schedule.
    """
    target = with_threads(target if target is not None else DeploymentTarget(backend="torch"))
    check_target(target)
    policy = policy or TimingPolicy()
    batch_sizes = _check_batches(batch_sizes if batch_sizes is not None else [target.batch_size])
    target = target.with_(batch_size=batch_sizes[0])
    if table is not None:
        from .table import LatencyTable

        table = table if isinstance(table, LatencyTable) else LatencyTable.load(table)
        table.check(target=target, fields=("precision",))  # another precision predicts another model's time
    kind = file_kind(model) if isinstance(model, (str, os.PathLike)) else None
    notes = []
    load1 = busy_load()
    if load1 is not None:
        notes.append(f"the machine was busy when measuring (load average {load1:.1f} on {os.cpu_count()} "
                     "cores); figures may be noisy" + ("; fewer threads (threads=1) suffer less from other jobs"
                                                       if target.threads > 1 else ""))
    with torch_threads(target.threads):
        if kind is not None:
            return _measure_exported(model, kind, schedules, target, batch_sizes, policy, checkpoint, table, seed,
                                     notes, progress)
        return _measure_model(model, schedules, target, batch_sizes, include_full, labels, policy, img_size, table,
                              workdir, exporter, compile_backend, verify_exports, seed, notes, progress)


def _measure_model(source, schedules, target: DeploymentTarget, batch_sizes, include_full, labels, policy,
                   img_size, table, workdir, exporter, compile_backend, verify_exports, seed, notes,
                   progress) -> BenchReport:
    backend, device = target.backend, target.device
    model = load_model(source, img_size).eval()
    if backend not in TORCH_BACKENDS:  # the torch backends run a copy on the device (ModelRunners.deployed)
        model = model.to(device)
    scheds = _labelled(model, schedules, labels, include_full)
    ident = model_identity(model)
    if table is not None:
        table.check(ident, target, fields=("backend", "device", "threads"))
    from ..models import count_macs

    macs = {label: int(count_macs(model, s).total()) for label, s in scheds}
    builder = ModelRunners(model, target, workdir, exporter, compile_backend, progress, verify_exports)
    if backend == "torch-compile":
        set_compile_limits(4 * len(scheds) * len(batch_sizes) + 8)
    results: List[BenchResult] = []
    try:
        groups = _groups(model, scheds, backend)
        if len(groups) > 1:
            notes.append(f"{len(scheds)} exported models do not fit in memory at once: measured in "
                         f"{len(groups)} round-robin groups, each with the full model (speed-ups are "
                         "relative to the full model of the same group)")
        for b in batch_sizes:
            x = make_input(b, ident["img_size"], seed)
            full_runner, done_full = None, False
            for group in groups:
                runners = {}
                for label, s in group:
                    if s.is_full and full_runner is not None:
                        runners[label] = full_runner
                    else:
                        runners[label] = builder.runner(s, x)
                    if s.is_full:
                        full_runner = runners[label]
                if progress:
                    progress(f"measuring {len(runners)} schedules at batch {b} ({backend}, {device}, "
                             f"{threads_text(target.threads)})")
                measured = _measure(runners, policy, device, backend, progress)
                base = next((measured[l][0].p50 for l, s in group if s.is_full), None)
                for label, s in group:
                    if s.is_full and done_full:
                        continue  # the full model's figure comes from the first group
                    done_full = done_full or s.is_full
                    st, mem = measured[label]
                    pred = None
                    if table is not None and table.target.batch_size == b:
                        pred = table.predict(s, reducer=model.reducer)
                    results.append(BenchResult(label, list(s.counts), macs[label], b, st, mem,
                                               runners[label].info, predicted_ms=pred,
                                               predicted_statistic=_table_stat(table),
                                               speedup=(base / st.p50) if base else None,
                                               reducers=_block_reducers(model, s)))
                runners.clear()
            full_runner = None
    finally:
        builder.close()
    order = {label: i for i, (label, _) in enumerate(scheds)}
    results.sort(key=lambda r: (batch_sizes.index(r.batch_size), order[r.label]))
    exporters = sorted({r.info.get("exporter") for r in results if r.info.get("exporter")})
    return _report(ident, target, batch_sizes, policy, results, notes,
                   exporter=(exporters[0] if len(exporters) == 1 else exporters) or None,
                   compile_backend=compile_backend if backend == "torch-compile" else None,
                   source=os.fspath(source) if isinstance(source, (str, os.PathLike)) else None,
                   weights_sha256=_weights_digest(model))


def _labelled(model: nn.Module, schedules, labels, include_full: bool) -> List[tuple]:
    """``[(label, TokenSchedule)]`` to measure: ``schedules`` (default the model's own) under ``labels`` (default
    ``schedule 1``, ...; ``full`` for the full schedule), the full model first where ``include_full`` adds it."""
    scheds = []
    if schedules is None:
        schedules = [model.schedule] if model.schedule is not None else []
    schedules = list(schedules)
    if labels is not None and len(labels) != len(schedules):
        raise ConfigError(f"labels: got {len(labels)} labels for {len(schedules)} schedules")
    for i, s in enumerate(schedules):
        sched = model.make_schedule(s)
        label = labels[i] if labels is not None else ("full" if sched.is_full else f"schedule {i + 1}")
        scheds.append((label, sched))
    if include_full and not any(s.is_full for _, s in scheds):
        scheds.insert(0, ("full", model.full_schedule()))
    if not scheds:
        raise ConfigError("nothing to measure: give schedules or include_full=True")
    if len({l for l, _ in scheds}) != len(scheds):
        raise ConfigError("labels: schedule labels must be unique")
    return scheds


def _weights_digest(model: nn.Module) -> Optional[str]:
    """The content key of the measured weights (bench.json's ``model.weights_sha256``)."""
    from ..models import weights_digest

    try:
        return weights_digest(model)
    except Exception:  # descriptive only: a model whose state cannot be read still times
        return None


def _exported_weights_digest(path: str) -> Optional[str]:
    """The weights hash the ``export.json`` beside an exported file records for it (None: no record, or the
    file is not the one recorded)."""
    from ..export.record import ExportResult, check_files

    folder = os.path.dirname(os.path.abspath(path))
    try:
        res = ExportResult.load(folder)
    except Exception:  # no record beside the file: nothing to say about its weights
        return None
    for rec in res.records:
        if rec.path and os.path.abspath(os.path.join(folder, rec.path)) == os.path.abspath(path) \
                and check_files(folder, rec).ok:
            return rec.model_weights_sha256
    return None


def _block_reducers(model: nn.Module, s) -> Optional[List[str]]:
    """The reducer of every reducing block (None where a block keeps its tokens); None when nothing is reduced."""
    from ..export.onnx import schedule_reducers

    return schedule_reducers(model, s)


def _table_stat(table) -> str:
    return (table.data.get("statistic") or "median") if table is not None else "median"


#: weights of the exported models compiled at once (bytes)
_GROUP_BYTES = 1.5e9


def _groups(model: nn.Module, scheds: List[tuple], backend: str) -> List[List[tuple]]:
    """Schedules to time round-robin together: all of them, unless the exported copies of the
    weights would not fit in memory; then groups, each with the full model (the speed-up's base)."""
    if backend not in EXPORTED_BACKENDS:
        return [scheds]
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    size = max(2, int(_GROUP_BYTES // max(weights, 1)))
    if len(scheds) <= size:
        return [scheds]
    full = [(l, s) for l, s in scheds if s.is_full][:1]
    rest = [(l, s) for l, s in scheds if not s.is_full]
    step = size - len(full)
    return [full + rest[i:i + step] for i in range(0, len(rest), step)]


def _measure_exported(path, kind, schedules, target: DeploymentTarget, batch_sizes, policy, checkpoint, table, seed,
                      notes, progress) -> BenchReport:
    from ..export.onnx import check_exported_matches, read_onnx_info
    from ..models import count_macs

    path = os.fspath(path)
    if target.backend not in EXPORTED_BACKENDS:
        raise ConfigError(f"backend={target.backend}: {path} is an exported file; measure it with "
                          "backend=onnxruntime or openvino")
    if kind == "openvino" and target.backend != "openvino":
        raise ConfigError(f"backend={target.backend}: {path} is an OpenVINO IR; measure it with backend=openvino")
    if schedules:
        raise ConfigError(f"{path} has its schedule fixed at export; schedules apply to a model or checkpoint")
    if kind == "onnx":
        info = read_onnx_info(path)
    else:
        from ..export.openvino import read_openvino_info

        info = read_openvino_info(path)
    spec = None
    if checkpoint is not None:
        if isinstance(checkpoint, nn.Module):
            from ..models import spec_of

            spec = spec_of(checkpoint)
        else:
            from ..models import read_spec

            spec = read_spec(checkpoint)
        check_exported_matches(info, spec)
    spec = spec or info.spec
    img = info.img_size or (spec or {}).get("img_size")
    if img is None:
        raise ExportError(f"{path}: the input size is not static and no checkpoint says it; give the checkpoint it "
                          "was exported from (checkpoint=PATH)")
    if isinstance(info.batch, int) and any(b != info.batch for b in batch_sizes):
        raise ExportError(f"{path} has a static batch of {info.batch}; cannot measure batch "
                          f"{', '.join(str(b) for b in batch_sizes if b != info.batch)}")
    arch = model_from_spec(spec) if spec else None
    ident = model_identity(arch) if arch is not None else (identity_from_spec(spec) if spec else None)
    if table is not None and ident is not None:
        table.check(ident, target, fields=("backend", "device", "threads"))
    macs = None
    sched = None
    reducers = getattr(info, "reducers", None)
    schedule = None
    if info.schedule is not None:
        sched = list(info.schedule)
        if arch is not None:
            from ..schedules import TokenSchedule

            schedule = arch.make_schedule(TokenSchedule(tuple(sched), arch.num_patches, reducers=reducers))
            macs = int(count_macs(arch, schedule).total())
            reducers = _block_reducers(arch, schedule)
    if target.precision == Precision.INT8:
        from ..export.verify import onnx_file_precision, openvino_file_quantized

        quantized = openvino_file_quantized(path) if kind == "openvino" else onnx_file_precision(path) == "int8"
        if not quantized:
            raise ConfigError(f"precision=int8: {path} is not a quantised file; int8 times an int8 export (one "
                              "exported at precision=int8), or give a checkpoint to quantise each schedule")
    label = os.path.basename(path)
    results = []
    for b in batch_sizes:
        r = file_runner(path, make_input(b, img, seed).numpy(), target, free_dims={"batch": b})
        r.info["exporter"] = info.exporter
        measured = _measure({label: r}, policy, target.device, target.backend, progress)
        st, mem = measured[label]
        pred = table.predict(schedule or sched) if (table is not None and sched is not None
                                                    and table.target.batch_size == b) else None
        results.append(BenchResult(label, sched, macs, b, st, mem, r.info, predicted_ms=pred,
                                   predicted_statistic=_table_stat(table), reducers=reducers))
    return _report(ident, target, batch_sizes, policy, results, notes, exporter=info.exporter, source=path,
                   weights_sha256=_exported_weights_digest(path))
