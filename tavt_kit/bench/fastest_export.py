"""``export_fastest`` (``fgvc-kit export --precision auto``): the fastest verified precision on this machine.

It takes the arguments of :func:`~tavt_kit.export.export_model` and shares its preparation
(:func:`~tavt_kit.export.prepare_export`: the model, the schedule, the verification images and PyTorch's
logits on them, loaded and computed once). The schedule is exported at every precision this machine can run
natively for each requested format (OpenVINO: fp32, bf16 and fp16 where the CPU has them,
int8 where NNCF is installed; ONNX: fp32, fp16, int8), each one verified
against PyTorch fp32 on the same images, and then all of them timed here round-robin in one process with
:func:`~tavt_kit.bench.measure_files` (median latency at one batch size and
thread count; a machine whose speed drifts slows them alike). Per format the fastest precision that passed
verification is published into ``--out`` under the file names a plain export at
that precision uses; ``export.json`` records every attempt (skipped ones with
the reason, failed ones with the verification's reason), the choice and its
speed-up over fp32. When no precision of a format passes, nothing is published,
the attempts are recorded (status ``failed``) and an
:class:`~tavt_kit.errors.ExportError` names each precision's reason.

The exports are built in temporary folders beside ``--out``; the fp32 ONNX
graph is exported once and shared by all of them.
"""
from __future__ import annotations

import copy
import datetime
import os
import shutil
import tempfile
import time
from dataclasses import replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..errors import BackendError, ConfigError, ExportError, TavtKitError
from ..machine import threads_text
from ..export.formats import BACKEND_OF_FORMAT, FORMAT_PRECISIONS
from ..export.options import ExportOptions, QuantizeOptions, VerifyOptions
from ..export.pipeline import run_export
from ..export.prepare import OnnxReuse, PreparedExport, check_options, prepare_export, resolve_target
from ..export.publish import choose_base, clean_stage, publish, record_failed_attempt
from ..export.record import EXPORT_FILE, EXPORT_FORMAT, EXPORT_VERSION, ExportResult, hint_lines
from ..target import DeploymentTarget, Precision
from .measure import measure_files
from .identity import model_identity
from .timing import TimingPolicy

#: the order precisions are tried in (fp32 first: the reference of the speed-ups)
AUTO_ORDER = Precision.ALL
#: OpenVINO's capability for each precision it runs natively only on some CPUs
_CAPABILITY = {Precision.BF16: "BF16", Precision.FP16: "FP16"}


def precision_availability(fmt: str, precisions: Optional[Sequence[str]] = None,
                           device: str = "cpu") -> List[Tuple[str, Optional[str]]]:
    """``[(precision, None if this machine can export and verify it, else "skipped: why")]`` for one format."""
    out: List[Tuple[str, Optional[str]]] = []
    for p in precisions or AUTO_ORDER:
        if p not in FORMAT_PRECISIONS[fmt]:
            out.append((p, f"skipped: {fmt} has no {p} export (it takes {', '.join(FORMAT_PRECISIONS[fmt])})"))
            continue
        reason = None
        if fmt == "openvino" and p in _CAPABILITY:
            from ..export.openvino import device_capabilities

            have = device_capabilities(device)
            if _CAPABILITY[p] not in have:
                reason = (f"skipped: this {device.upper()} has no native {p} (OpenVINO reports "
                          f"{', '.join(have) or 'no capabilities'})")
        elif p == Precision.INT8:
            from ..export.quantize import require_nncf

            try:
                require_nncf()
            except BackendError:
                reason = "skipped: nncf not installed (pip install nncf, or pip install 'fgvc-kit[int8]')"
        out.append((p, reason))
    return out


def _attempt(fmt: str, precision: str, status: str, reason: Optional[str] = None) -> Dict[str, Any]:
    # "file": the path in the output folder (the chosen attempt's; the others are not kept)
    return {"format": fmt, "precision": precision, "status": status, "passed": False, "reason": reason,
            "file": None, "precision_used": None, "accuracy": None, "accuracy_pytorch": None, "accuracy_drop": None,
            "agreement": None, "max_abs_logit_diff": None, "latency_ms": None, "latency_p90_ms": None,
            "latency_noisy": None, "latency_repeats": None, "batch_size": None, "threads": None}


def _measure_all(timed: List[Tuple[Dict[str, Any], str]], model, batch_size: int, threads: Optional[int],
                 policy: Optional[TimingPolicy], log) -> None:
    """Every exported attempt timed round-robin in one process (bench's timing of exported files): a machine
    whose speed drifts while the precisions are exported one after another would otherwise decide the choice.
    Fills each attempt's latency fields in place."""
    if not timed:
        return
    files = {i: (path, DeploymentTarget(backend=BACKEND_OF_FORMAT[a["format"]],
                                        precision=a["precision"], threads=threads, batch_size=int(batch_size)))
             for i, (a, path) in enumerate(timed)}
    log(f"timing {len(files)} exports round-robin at batch {batch_size}")
    try:
        measured = measure_files(files, model_identity(model)["img_size"], policy=policy)
    except TavtKitError as e:
        for a, _ in timed:
            a.update(passed=False, reason=f"latency could not be measured: {e}")
        return
    for i, (a, _) in enumerate(timed):
        st, info = measured[i]
        a.update(latency_ms=1e3 * st.p50, latency_p90_ms=1e3 * st.pct(90), latency_noisy=bool(st.noisy),
                 latency_repeats=st.n,
                 batch_size=int(batch_size), threads=info.get("threads"),
                 inference_precision=info.get("precision_used"))


def export_fastest(
    model,
    out_dir,
    schedule=None,
    formats: Optional[Sequence[str]] = None,
    *,
    target: Optional[DeploymentTarget] = None,
    verify: VerifyOptions = VerifyOptions(),
    quantize: QuantizeOptions = QuantizeOptions(),
    options: ExportOptions = ExportOptions(),
    precisions: Optional[Sequence[str]] = None,
    policy: Optional[TimingPolicy] = None,
    log: Optional[Callable[[str], None]] = None,
) -> ExportResult:
    """Export ``model`` at every precision available here, verify and time each, keep the fastest that passes.

    Args:
        model, out_dir, schedule, formats, verify, quantize, options: as in
            :func:`~tavt_kit.export.export_model` (each format gets its own fastest precision; verification
            cannot be turned off: it decides which precisions may be kept).
        target: where the files are timed (:class:`~tavt_kit.target.DeploymentTarget`): ``batch_size`` (the
            latency of a batch of this many images; default 1), ``threads`` (default: torch's count; also
            verification's) and ``device``. Its ``precision`` is what this function chooses: the one given is
            not used (``precisions`` says which to try).
        precisions: the precisions to try (default: fp32, bf16, fp16, int8, as each format and this
            machine allow); fp32 is always tried, as the reference of the speed-up.
        policy: the timing policy (default :class:`~tavt_kit.bench.TimingPolicy`'s).
        log: progress lines.
    Returns:
        :class:`~tavt_kit.export.ExportResult` of the published files (``precisions``: each format's choice);
        ``doc["auto"]`` holds the attempts.
    Raises:
        :class:`~tavt_kit.errors.ExportError` when a format has no precision that passes (after recording).
    """
    log = log or (lambda s: None)
    check_options(verify, quantize, options)
    target, formats = resolve_target(target, formats)
    if not verify.enabled:
        raise ConfigError("export_fastest() keeps the fastest precision that passes verification; it cannot run "
                          "with verify.enabled=False")
    wanted = [Precision.parse(p, "precisions") for p in (AUTO_ORDER if precisions is None else precisions)]
    wanted = [Precision.FP32] + [p for p in AUTO_ORDER if p in wanted and p != Precision.FP32]
    prep = prepare_export(model, schedule, formats, target=target, verify=verify, quantize=quantize, options=options)
    out_dir = os.fspath(out_dir)
    if os.path.isfile(out_dir):
        raise ConfigError(f"out={out_dir!r}: is a file; expected an output folder")
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(out_dir))}.auto-", dir=parent)
    prep.onnx_reuse = OnnxReuse(os.path.join(work, "onnx"))  # the fp32 ONNX graph, exported once
    start = time.perf_counter()
    try:
        attempts, docs = _run_attempts(prep, work, wanted, policy, log)
        chosen = _choose(attempts, formats)
        summary = _summary(attempts, chosen, target.batch_size, target.threads, policy)
        _log_table(log, attempts, summary)
        missing = [f for f in formats if f not in chosen]
        if missing:
            why = "; ".join(
                f"{f}: " + ", ".join(f"{a['precision']} {a['reason'] or 'failed'}" for a in attempts
                                     if a["format"] == f) for f in missing)
            # export.json says it in the command line's words, as it always has
            _record_failure(out_dir, docs, formats, summary, f"--precision auto: no precision passed verification "
                            f"({why})", time.perf_counter() - start)
            raise ExportError(f"export_fastest(): no precision passed verification ({why}); the attempts are "
                              f"recorded in {os.path.join(out_dir, EXPORT_FILE)}")
        return _publish(out_dir, parent, formats, docs, chosen, summary, time.perf_counter() - start, log)
    finally:
        prep.close()
        shutil.rmtree(work, ignore_errors=True)


def _run_attempts(prep: PreparedExport, work: str, wanted: Sequence[str], policy: Optional[TimingPolicy],
                  log) -> Tuple[List[Dict[str, Any]], Dict[str, Dict[str, Any]]]:
    """Export, verify and time every (format, precision); returns the attempts and each export's doc and folder."""
    formats, target = prep.formats, prep.target
    available = {f: dict(precision_availability(f, wanted, target.device)) for f in formats}
    attempts: List[Dict[str, Any]] = []
    docs: Dict[str, Dict[str, Any]] = {}
    timed: List[Tuple[Dict[str, Any], str]] = []
    for p in wanted:
        fmts = [f for f in formats if available[f][p] is None]
        for f in formats:
            if available[f][p] is not None:
                attempts.append(_attempt(f, p, "skipped", available[f][p]))
                log(f"[{f} {p}] {available[f][p]}")
        if not fmts:
            continue
        log(f"[{'+'.join(fmts)} {p}] export and verify")
        folder = os.path.join(work, p)
        try:
            # the same preparation (its images, PyTorch's logits, the fp32 ONNX graph), for these formats
            res = run_export(replace(prep, formats=tuple(fmts)), folder, p, raise_on_failure=False,
                             log=lambda s: log("  " + s))
        except (ExportError, BackendError) as e:  # this precision failed (bad input is raised as it is)
            for f in fmts:
                attempts.append(_attempt(f, p, "failed", f"export failed: {e}"))
            log(f"  export failed: {e}")
            continue
        docs[p] = {"doc": res.doc, "folder": folder}
        for f in fmts:
            a = _attempt(f, p, "failed")
            v = res.verification[f]
            a.update(precision_used=v.precision_used, accuracy=v.accuracy_exported,
                     accuracy_pytorch=v.accuracy_torch, accuracy_drop=v.accuracy_drop, agreement=v.agreement,
                     max_abs_logit_diff=v.max_logit_diff, passed=v.passed,
                     reason=None if v.passed else f"verification failed: {v.reason}")
            timed.append((a, res.path(f)))
            attempts.append(a)
    _measure_all(timed, prep.model, target.batch_size, target.threads, policy, log)
    for a, _ in timed:
        a["status"] = "passed" if a["passed"] else "failed"
        lat = f"{a['latency_ms']:.3f} ms" if a["latency_ms"] is not None else "no latency"
        log(f"  {a['format']} {a['precision']}: {lat}, " + ("passed" if a["passed"] else a["reason"]))
    return attempts, docs


def _choose(attempts: List[Dict[str, Any]], formats: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    """Per format, the passing attempt with the lowest median latency (ties: the earlier precision)."""
    chosen = {}
    for f in formats:
        ok = [a for a in attempts if a["format"] == f and a["passed"] and a["latency_ms"] is not None]
        if ok:
            best = min(ok, key=lambda a: (a["latency_ms"], AUTO_ORDER.index(a["precision"])))
            best["status"] = "chosen"
            chosen[f] = best
    return chosen


def _summary(attempts, chosen, batch_size, threads, policy) -> Dict[str, Any]:
    out: Dict[str, Any] = {
        "latency": {"statistic": "median", "unit": "ms", "batch_size": batch_size,
                    "threads": next((a["threads"] for a in attempts if a["threads"] is not None), threads),
                    "measured_with": "tavt_kit.bench.measure_files (round-robin)",
                    "policy": (policy or TimingPolicy()).to_dict()},
        "attempts": attempts, "chosen": {}}
    for f, a in chosen.items():
        ref = next((b for b in attempts if b["format"] == f and b["precision"] == "fp32"
                    and b["latency_ms"] is not None), None)
        out["chosen"][f] = {"precision": a["precision"], "file": None, "latency_ms": a["latency_ms"],
                            "fp32_latency_ms": ref["latency_ms"] if ref else None,
                            "speedup_over_fp32": ref["latency_ms"] / a["latency_ms"] if ref else None}
    return out


def _log_table(log, attempts, summary) -> None:
    lat = summary["latency"]
    log(f"precision auto: median latency at batch {lat['batch_size']}, {threads_text(lat['threads'])}")
    for a in attempts:
        ms = f"{a['latency_ms']:8.3f} ms" if a["latency_ms"] is not None else " " * 11
        acc = f"  top-1 {a['accuracy']:.2f} %" if a["accuracy"] is not None else ""
        why = "" if a["passed"] else f"  {a['reason']}"
        log(f"  {a['format']:<9}{a['precision']:<6}{a['status']:<8}{ms}{acc}{why}")
    for f, c in summary["chosen"].items():
        speed = f", speed-up over fp32 {c['speedup_over_fp32']:.2f}x" if c["speedup_over_fp32"] else ""
        log(f"chosen for {f}: {c['precision']} ({c['latency_ms']:.3f} ms{speed})")


def _publish(out_dir, parent, formats, docs, chosen, summary, seconds, log) -> ExportResult:
    """Move each format's chosen file(s) into ``out_dir`` and write ``export.json`` describing them."""
    stage = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(out_dir))}.staging-", dir=parent)
    try:
        first = docs[chosen[formats[0]]["precision"]]["doc"]
        doc = copy.deepcopy(first)
        doc.pop("artefacts", None)
        doc.update(files={}, exports={}, formats=list(formats), verified=True, status="verified", reason=None,
                   created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
        doc["verification"] = copy.deepcopy(first["verification"])
        doc["verification"]["results"] = {}
        counts = doc["schedule"]["counts"]
        for f in formats:
            p = chosen[f]["precision"]
            src = docs[p]
            entry = copy.deepcopy(src["doc"]["files"][f])
            stem = choose_base(out_dir, p, counts)
            for key in ("path", "weights"):
                if entry.get(key):
                    name = os.path.basename(entry[key])
                    old_stem = name.rsplit(".", 1)[0]
                    new = stem + name[len(old_stem):] if stem != old_stem else name
                    shutil.move(os.path.join(src["folder"], entry[key]), os.path.join(stage, new))
                    entry[key] = new
            doc["files"][f] = entry
            doc["exports"][f] = copy.deepcopy(src["doc"]["exports"][f])
            result = copy.deepcopy(src["doc"]["verification"]["results"][f])
            result["path"] = entry["path"]
            doc["verification"]["results"][f] = result
            doc["versions"].update(src["doc"].get("versions") or {})
            if p == "int8" and src["doc"].get("calibration"):
                doc["calibration"] = copy.deepcopy(src["doc"]["calibration"])
            summary["chosen"][f]["file"] = chosen[f]["file"] = entry["path"]
        precisions = {chosen[f]["precision"] for f in formats}
        doc["precision"] = precisions.pop() if len(precisions) == 1 else "auto"
        if "int8" not in {chosen[f]["precision"] for f in formats}:
            doc.pop("calibration", None)
        doc["auto"] = summary
        doc["seconds"] = round(seconds, 3)
        doc = publish(stage, out_dir, doc)
        for line in hint_lines(doc):  # once, for the files kept (each attempt said its own)
            log(line)
    finally:
        clean_stage(stage)
    return ExportResult(out_dir=out_dir, json_path=os.path.join(out_dir, EXPORT_FILE), doc=doc)


def _record_failure(out_dir, docs, formats, summary, reason, seconds) -> None:
    """No precision passed: ``export.json`` records the attempts; the folder's files stay as they were."""
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    if docs:
        doc = copy.deepcopy(next(iter(docs.values()))["doc"])
        doc.pop("artefacts", None)
    else:
        doc = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION}
    doc.update(created=now, verified=False, status="failed", reason=reason, formats=list(formats), precision="auto",
               files={}, exports={}, verification=None, auto=summary, seconds=round(seconds, 3))
    record_failed_attempt(out_dir, doc, extra_keys=("auto",))
