"""``export_model``: a checkpoint at a token schedule -> ONNX / OpenVINO files, verified, with ``export.json``.

The steps (each a library call of its own):

1. preparation (:func:`~tavt_kit.export.prepare.prepare_export`, shared with
   :func:`tavt_kit.bench.export_fastest`): the model, the schedule (given, a
   drop config, or the chosen schedule of a budget in a ``search.json``:
   :meth:`tavt_kit.search.SearchResult.schedule`) checked against it, the
   formats, and the request checked before any work;
2. ONNX through PyTorch's current exporter at that schedule (static token
   counts, dynamic batch; :func:`~tavt_kit.export.onnx.export_onnx`, checked
   with ``onnx.checker`` and in ONNX Runtime);
3. per format and precision: the fp32 ONNX file, an fp16 ONNX file, an NNCF
   int8 file (:mod:`~tavt_kit.export.quantize`: accuracy-controlled on the
   held-out split when the dataset has one, else plain post-training
   quantisation), an OpenVINO IR converted from the checked ONNX graph (f32
   weights; fp16 compresses them; bf16 is that f32 IR, named
   ``model.f32-weights.bf16-hint.xml`` for the hint it is compiled with);
4. verification (:func:`~tavt_kit.export.verify.verify_export`): PyTorch and
   each exported file on the same real images — top-1, agreement, logit
   difference, the precision actually used — and the structural check that the
   graph holds the schedule's shorter token sequences;
5. ``export.json``: files, sizes, precision, schedule (counts and reducers),
   the model's ``weights_sha256``, MACs, verification per format, exporter,
   versions; ``artefacts`` keeps one record per export in the folder, earlier
   ones included (:mod:`~tavt_kit.export.publish`), each OpenVINO file with the
   ``inference_precision_hint`` it is compiled with (also said in the log, one line per
   file). A failed verification is recorded
   (``"verified": false`` with the reason) and raised as
   :class:`~tavt_kit.errors.ExportError`; nothing unverified is marked verified.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from torch import nn

from ..errors import ConfigError, DiskFullError, ExportError, TavtKitError
from ..files import atomic_path
from ..target import DeploymentTarget, Precision
from .options import ExportOptions, QuantizeOptions, VerifyOptions
from .prepare import PreparedExport, check_options, check_request, prepare_export, resolve_target
from .publish import choose_base, clean_stage, publish, record_failed_attempt
from .record import EXPORT_FILE, ExportResult, file_entry, hint_lines, new_export_doc
from .verify import Verification


# ------------------------------------------------------------------ the export
def export_model(
    model,
    out_dir,
    schedule=None,
    formats: Optional[Sequence[str]] = None,
    *,
    target: Optional[DeploymentTarget] = None,
    verify: VerifyOptions = VerifyOptions(),
    quantize: QuantizeOptions = QuantizeOptions(),
    options: ExportOptions = ExportOptions(),
    log: Optional[Callable[[str], None]] = None,
) -> ExportResult:
    """Export ``model`` at ``schedule`` to ONNX and/or OpenVINO, verify each file, write ``export.json``.

    Args:
        model: a token-drop model or a checkpoint path (:func:`tavt_kit.load_checkpoint`).
        out_dir: folder for ``model.onnx`` / ``model.xml`` + ``.bin`` (``model.fp16.*``, ``model.int8.*``;
            bf16: ``model.f32-weights.bf16-hint.xml`` + ``.bin``, f32 weights compiled with the bf16 hint) and
            ``export.json``.
        schedule: counts, :class:`~tavt_kit.TokenSchedule` or drop-config path (``None``: the model's own,
            else the full model); see :meth:`tavt_kit.search.SearchResult.schedule` for a search's budget.
        formats: ``"onnx"``, ``"openvino"`` (or ``"onnx,openvino"``); default the format ``target.backend``
            runs (ONNX without a target).
        target: where the files will run (:class:`~tavt_kit.target.DeploymentTarget`): ``precision`` is the
            precision exported — ``fp32`` (default), ``fp16`` (fp16 weights; OpenVINO compiles with the f16
            hint), ``bf16`` (OpenVINO only: the f32 IR run with the bf16 hint; ``export.json`` records each
            OpenVINO file's ``inference_precision_hint``) or ``int8`` (NNCF, see
            ``quantize``); ``threads`` and ``device`` are those verification runs with. bf16, and fp16 with
            OpenVINO, are refused when verification would run them on a CPU without native support (OpenVINO
            would quietly run f32 under that name). The fastest precision this machine runs is
            :func:`tavt_kit.bench.export_fastest`.
        verify: :class:`~tavt_kit.export.VerifyOptions`: the images every file is compared with PyTorch on,
            and the bounds it must meet (default: the checkpoint's test split, at most 0.5 points of top-1).
        quantize: :class:`~tavt_kit.export.QuantizeOptions` (int8 only): calibration images and NNCF's
            accuracy control on the held-out split.
        options: :class:`~tavt_kit.export.ExportOptions`: exporter, opset, the checkpoint and schedule source
            recorded, whether a failed verification raises.
        log: progress lines (``print`` for the command line): among them one ``warning:`` line when int8
            accuracy control or the verification of a lower precision runs on fewer than 200 images
            (:func:`~tavt_kit.data.splits.small_split_warning`), and one line per OpenVINO file saying the
            hint it is compiled with (``model.xml: compile with INFERENCE_PRECISION_HINT=f32``).
    Returns:
        :class:`ExportResult` (``doc`` = ``export.json``; ``verification[fmt]`` the typed check of each file).
    Raises:
        :class:`~tavt_kit.errors.ExportError` after writing ``export.json`` when a file fails verification
        (unless ``options.raise_on_failure`` is off); :class:`~tavt_kit.errors.ConfigError` /
        :class:`~tavt_kit.errors.BackendError` before any work for a request that cannot be met here.
    """
    check_options(verify, quantize, options)
    target, formats = resolve_target(target, formats)
    check_request(formats, target.precision, target, verify)
    prep = prepare_export(model, schedule, formats, target=target, verify=verify, quantize=quantize, options=options)
    return run_export(prep, out_dir, target.precision, log=log)


def run_export(prep: PreparedExport, out_dir, precision: str, *, raise_on_failure: Optional[bool] = None,
               log: Optional[Callable[[str], None]] = None) -> ExportResult:
    """One export of a prepared model (:func:`~tavt_kit.export.prepare_export`) at ``precision`` into ``out_dir``;
    ``raise_on_failure`` (default ``options.raise_on_failure``) as in :func:`export_model`."""
    precision = check_request(prep.formats, precision, prep.target, prep.verify)
    log = log or (lambda s: None)
    raise_on_failure = prep.options.raise_on_failure if raise_on_failure is None else raise_on_failure
    out_dir = os.fspath(out_dir)
    if os.path.isfile(out_dir):
        raise ConfigError(f"out={out_dir!r}: is a file; expected an output folder")
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    # everything is built here, beside out_dir, and moved in only when finished (see publish.py)
    stage = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(out_dir))}.staging-", dir=parent)
    sched = prep.schedule
    job = _Job(prep=prep, model=prep.model, sched=sched, out_dir=stage, formats=prep.formats, precision=precision,
               log=log, doc=new_export_doc(prep.model, sched, prep.source, prep.formats, precision, prep.checkpoint),
               base=choose_base(out_dir, precision, list(sched.counts)))
    json_path = os.path.join(out_dir, EXPORT_FILE)
    start = time.perf_counter()
    # the fp32 ONNX graph lives here when it is only a step towards the files asked for
    tmp = tempfile.mkdtemp(prefix=".export-", dir=stage)
    try:
        onnx_fp32, onnx_info = _onnx_step(job, tmp)
        calib = None
        if precision == Precision.INT8:
            calib, job.doc["calibration"] = prep.calibration()
            job.validation, job.ptq_reason = prep.held_out()
            if job.validation is None and prep.quantize.accuracy_control:
                job.log(f"int8: {job.ptq_reason}")
            elif job.validation is not None and job.validation["info"].get("warning"):
                job.log(f"warning: {job.validation['info']['warning']}")
        for fmt in prep.formats:
            _format_step(job, fmt, onnx_fp32, onnx_info, calib)
        failures = _verify_step(job) if prep.verify.enabled else _skip_verification(job)
    except TavtKitError as e:
        if isinstance(e, DiskFullError):  # said of the file in out_dir: the staging folder is gone with the error
            e = _in_out_dir(e, (tmp, stage), out_dir)
        _record(job, start, failure=str(e))
        clean_stage(stage)  # first: the space it held may be what the record needs
        _record_failed_attempt(out_dir, job.doc)
        raise e
    except BaseException as e:  # a kill (KeyboardInterrupt) too: the folder keeps what it had
        _record(job, start, failure=f"{type(e).__name__}: {e}")
        clean_stage(stage)
        if isinstance(e, Exception):
            _record_failed_attempt(out_dir, job.doc)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _record(job, start)
    try:
        doc = publish(stage, out_dir, job.doc)
    finally:
        clean_stage(stage)
    for line in hint_lines(doc):
        log(line)
    result = ExportResult(out_dir=out_dir, json_path=json_path, doc=doc)
    if failures and raise_on_failure:
        raise ExportError(f"export verification failed ({'; '.join(failures)}); recorded as verified=false "
                          f"in {json_path}")
    return result


def _in_out_dir(e: DiskFullError, staging: Sequence[str], out_dir: str) -> DiskFullError:
    """A full disk met in the staging folders (the innermost first), said of the same file in ``out_dir``."""
    if not any(d in str(e) for d in staging):
        return e

    def swap(s):
        if isinstance(s, str):
            for d in staging:
                s = s.replace(d, out_dir.rstrip(os.sep))
        return s

    msg = swap(str(e))
    msg = msg[:msg.rindex(")") + 1] if ")" in msg else msg  # what became of the staged file does not matter
    new = DiskFullError(f"{msg}; {out_dir} keeps what it had", errno=e.errno, filename=swap(e.filename),
                        free=e.free, needed=e.needed)
    new.__cause__ = e.__cause__
    return new


def _record_failed_attempt(out_dir: str, doc: Dict[str, Any]) -> None:
    """Say in ``export.json`` that this export failed, unless the disk is too full to: the error being raised
    says why, and the record there stays as it was."""
    try:
        record_failed_attempt(out_dir, doc)
    except DiskFullError:
        pass


# ---------------------------------------------------------------- the steps
@dataclass
class _Job:
    """What every step reads: the model at its schedule, where files go, and the record the steps fill in."""

    prep: PreparedExport
    model: nn.Module
    sched: Any
    out_dir: str
    formats: Tuple[str, ...]
    precision: str
    log: Callable[[str], None]
    doc: Dict[str, Any]
    #: the file name stem: the precision's in :data:`~tavt_kit.export.publish.FILE_STEMS` (``model`` at fp32;
    #: tagged with the schedule when the folder already holds that name for another schedule)
    base: str = "model"
    #: int8 accuracy control: the held-out images, labels, how they were chosen and the max drop (None: plain PTQ)
    validation: Optional[Dict[str, Any]] = None
    #: int8: why plain PTQ was used instead of accuracy control
    ptq_reason: Optional[str] = None

    def path(self, fmt: str) -> str:
        """The main file written for a format (recorded relative to ``out_dir``)."""
        return os.path.join(self.out_dir, self.doc["files"][fmt]["path"])


def _onnx_step(job: _Job, tmp: str) -> Tuple[str, Dict[str, Any]]:
    """The checked fp32 ONNX graph every format starts from; kept in ``out_dir`` when it is itself asked for."""
    import copy

    from .onnx import DEFAULT_OPSET, export_onnx

    opset, exporter = job.prep.options.opset, job.prep.options.exporter
    seed, reuse = job.prep.verify.seed, job.prep.onnx_reuse
    keep_fp32_onnx = "onnx" in job.formats and job.precision == "fp32"
    onnx_fp32 = os.path.join(job.out_dir if keep_fp32_onnx else tmp, f"{job.base}.onnx")
    key = (id(job.model), tuple(job.sched.counts), tuple(job.doc["schedule"]["reducers"] or ()), opset, exporter,
           seed)
    if reuse is not None and reuse.key == key and reuse.path and os.path.isfile(reuse.path):
        job.log(f"reusing the checked fp32 ONNX graph at schedule {list(job.sched.counts)}")
        with atomic_path(onnx_fp32, ".onnx") as part:
            shutil.copyfile(reuse.path, part)
        job.doc["exporter"] = copy.deepcopy(reuse.exporter)
        return onnx_fp32, dict(copy.deepcopy(reuse.info), reused=True)
    macs, macs_full = job.doc["macs"]["schedule"], job.doc["macs"]["full"]
    job.log(f"exporting to ONNX at schedule {list(job.sched.counts)} "
            f"({macs / 1e9:.4g} of {macs_full / 1e9:.4g} GMACs)")
    res = export_onnx(job.model, onnx_fp32, job.sched, opset=opset or DEFAULT_OPSET, exporter=exporter,
                      verify=True, seed=seed)
    job.doc["exporter"] = {"name": res.exporter, "fallback_reason": res.fallback_reason, "opset": res.opset,
                           "api": "torch.onnx.export(dynamo=True)" if res.exporter == "dynamo"
                           else "torch.onnx.export(dynamo=False)"}
    info = {"exporter": res.exporter, "fallback_reason": res.fallback_reason, "opset": res.opset,
            "dynamic_batch": res.dynamic_batch, "check": {"runtime": "onnxruntime", "inputs": "random",
                                                          "batches": res.checked_batches,
                                                          "max_abs_diff": res.max_abs_diff, "atol": res.atol},
            "seconds": round(res.seconds, 3)}
    if reuse is not None:
        os.makedirs(reuse.folder, exist_ok=True)
        reuse.path = os.path.join(reuse.folder, "model.fp32.onnx")
        with atomic_path(reuse.path, ".onnx") as part:
            shutil.copyfile(onnx_fp32, part)
        reuse.key, reuse.exporter, reuse.info = key, copy.deepcopy(job.doc["exporter"]), copy.deepcopy(info)
    return onnx_fp32, info


def _quantize_kwargs(job: _Job, what: str, calib: np.ndarray) -> Dict[str, Any]:
    """The accuracy-control arguments of a quantiser call (none for plain PTQ), with the line that says which."""
    v = job.validation
    if v is None:
        job.log(f"int8: NNCF post-training quantisation of the {what} ({calib.shape[0]} images)")
        return {}
    job.log(f"int8: NNCF accuracy-controlled quantisation of the {what} ({calib.shape[0]} calibration images, "
            f"{v['info']['images']} held-out images, max drop {v['max_accuracy_drop']:g} points)")
    return {"validation": (v["images"], v["labels"]), "max_accuracy_drop": v["max_accuracy_drop"],
            "validation_info": v["info"]}


def _quantization_entry(job: _Job, res, path: str) -> Dict[str, Any]:
    q = res.to_dict()
    q.update(source="model.onnx (fp32, this export)", path=os.path.basename(path))
    if q["mode"] == "ptq":
        q["reason"] = job.ptq_reason
    else:
        kept = q["kept_in_higher_precision"]
        names = f" ({', '.join(kept[:6])}{', ...' if len(kept) > 6 else ''})" if kept else ""
        job.log(f"  held-out top-1: fp32 {q['f32_accuracy']:.2f} %, plain PTQ {q['ptq_accuracy']:.2f} %, int8 "
                f"{q['int8_accuracy']:.2f} %; {len(kept)} of {q['quantized_layers_ptq']} quantised operations kept "
                f"in higher precision{names}")
        if not q["drop_met"]:
            job.log(f"  warning: NNCF could not bring the held-out drop within {q['max_accuracy_drop']:g} points")
    return q


def _format_step(job: _Job, fmt: str, onnx_fp32: str, onnx_info: Dict[str, Any],
                 calib: Optional[np.ndarray]) -> None:
    """The file(s) of one format at the precision asked for, checked for the schedule's token counts."""
    entry: Dict[str, Any] = {"precision": job.precision}
    if fmt == "onnx":
        job.doc["files"]["onnx"] = _onnx_file(job, entry, onnx_fp32, onnx_info, calib)
    else:
        job.doc["files"]["openvino"] = _openvino_file(job, entry, onnx_fp32, onnx_info, calib)
    _token_count_check(job, entry, fmt)
    job.doc["exports"][fmt] = entry


def _onnx_file(job: _Job, entry: Dict[str, Any], onnx_fp32: str, onnx_info: Dict[str, Any],
               calib: Optional[np.ndarray]) -> Dict[str, Any]:
    """The ``.onnx`` file at the precision asked for (fp32 as exported, fp16 converted, int8 quantised)."""
    entry.update(onnx_info)
    path = os.path.join(job.out_dir, f"{job.base}.onnx")
    if job.precision == "fp32":
        path = onnx_fp32
    elif job.precision == "fp16":
        from .graph import onnx_fp16

        job.log("converting the ONNX graph to fp16")
        onnx_fp16(onnx_fp32, path)
        entry["converted_with"] = "onnxruntime.transformers.float16 (fp32 input/output)"
    else:
        from .quantize import quantize_onnx

        res = quantize_onnx(onnx_fp32, path, calib, **_quantize_kwargs(job, "ONNX graph", calib))
        entry["quantization"] = _quantization_entry(job, res, path)
    return file_entry(job.out_dir, path)


def _openvino_file(job: _Job, entry: Dict[str, Any], onnx_fp32: str, onnx_info: Dict[str, Any],
                   calib: Optional[np.ndarray]) -> Dict[str, Any]:
    """The OpenVINO IR (``.xml`` + ``.bin``) converted from the checked ONNX graph, or quantised from it."""
    from .openvino import convert_openvino, tag_precision

    precision = job.precision
    path = os.path.join(job.out_dir, f"{job.base}.xml")
    if precision == "int8":
        from .quantize import quantize_openvino

        res = quantize_openvino(onnx_fp32, path, calib, **_quantize_kwargs(job, "OpenVINO IR", calib))
        entry["quantization"] = _quantization_entry(job, res, path)
    else:
        job.log("converting to OpenVINO IR")
        conv = convert_openvino(onnx_fp32, path, compress_to_fp16=precision == "fp16", verify=True)
        entry["conversion"] = {"source": "onnx", "exporter": onnx_info["exporter"],
                               "compress_to_fp16": conv.compress_to_fp16,
                               "check": {"runtime": "openvino", "reference": conv.reference,
                                         "precision": conv.precision_checked, "inputs": "random",
                                         "max_abs_diff": conv.max_abs_diff},
                               "seconds": round(conv.seconds, 3)}
        tag_precision(path, precision)
    entry["weights"] = "f16" if precision == "fp16" else "f32 (int8 where quantised)" \
        if precision == "int8" else "f32"
    entry["inference_precision_hint"] = Precision.OPENVINO_HINT[precision]
    return file_entry(job.out_dir, path, path[:-4] + ".bin")


def _token_count_check(job: _Job, entry: Dict[str, Any], fmt: str) -> None:
    """Structural check: the graph's token tensors (``embed_dim`` wide) have the schedule's shorter lengths."""
    width = job.doc["model"]["embed_dim"]
    if not width:  # no known token width: nothing to look for in the graph
        return
    from .verify import expected_token_counts, graph_token_counts

    counts = graph_token_counts(job.path(fmt), width)
    expected = expected_token_counts(job.model, job.sched)
    entry["graph_token_counts"] = counts
    entry["schedule_token_counts"] = expected
    # None: the lengths are unknown (an ONNX file read without OpenVINO; see graph_token_counts)
    entry["graph_keeps_token_drop"] = None if counts is None else set(expected) <= set(counts)
    if entry["graph_keeps_token_drop"] is False:
        job.log(f"  warning: {fmt} graph holds token counts {counts}, the schedule needs {expected}")


def _verify_step(job: _Job) -> List[str]:
    """PyTorch and every exported file on the same real images; returns the failures (recorded in ``doc``)."""
    from dataclasses import replace

    from .verify import verify_export

    prep, doc, failures = job.prep, job.doc, []
    v_opts = prep.verify
    data = prep.verify_data()
    job.log(f"verifying on {len(data)} images ({data.info.get('dataset', data.info.get('source'))} "
            f"{data.info.get('split', '')})")
    ref = prep.reference_logits()  # one PyTorch pass serves as the reference of every format (and precision)
    doc["verification"] = {"data": data.info, "split": v_opts.split, **v_opts.bounds, "results": {}}
    small = _small_verification(job, data)
    if small:
        doc["verification"]["warning"] = small
        job.log(f"warning: {small}")
    for fmt in job.formats:
        try:
            v = verify_export(job.model, job.path(fmt), data, schedule=job.sched, precision=job.precision,
                              batch_size=v_opts.batch_size, threads=prep.target.threads,
                              reference_logits=ref, format=fmt, device=prep.target.device, **v_opts.bounds)
            v = replace(v, path=doc["files"][fmt]["path"])
            job.log("  " + v.summary() + ("" if v.passed else f"  FAILED: {v.reason}"))
        except TavtKitError as e:  # the file cannot be loaded or run
            v = Verification(format=fmt, passed=False, reason=str(e))
        if not v.passed:
            failures.append(f"{fmt}: {v.reason}")
        doc["verification"]["results"][fmt] = v.to_dict()
        doc["exports"][fmt]["verified"] = v.passed
    if failures:
        doc.update(verified=False, status="failed", reason="; ".join(failures))
    else:
        doc.update(verified=True, status="verified", reason=None)
    return failures


def _small_verification(job: _Job, data) -> Optional[str]:
    """The line saying that a lower precision's accuracy is checked on too few images to tell a drop of
    ``max_accuracy_drop`` points (None at fp32, whose file computes what PyTorch does, or from 200 images)."""
    if job.precision == Precision.FP32:
        return None
    from ..data.splits import small_split_warning

    v, available = job.prep.verify, data.info.get("available")
    if v.images is not None and isinstance(available, int) and available > len(data):
        advice = f"a larger --verify-images, or none: all {available} {v.split} images"
    else:
        advice = f"a dataset with more {v.split} images, or another --verify-split"
    return small_split_warning(len(data), f"{job.precision} verification set", advice)


def _skip_verification(job: _Job) -> List[str]:
    """``--no-verify``: recorded as unverified with the reason, so nothing unchecked reads as verified."""
    job.doc.update(verified=False, status="unverified",
                   reason="verification skipped (--no-verify); nothing here was checked on real images")
    job.doc["verification"] = {"skipped": True}
    return []


def _record(job: _Job, start: float, failure: Optional[str] = None) -> None:
    """Finish the record with the time taken; ``failure``: the export stopped there (status ``failed``)."""
    if failure is not None:
        job.doc.update(verified=False, status="failed", reason=failure)
    job.doc["seconds"] = round(time.perf_counter() - start, 3)
