"""``export_model``: a checkpoint at a token schedule -> ONNX / OpenVINO files, verified, with ``export.json``.

The steps (each a library call of its own):

1. the schedule: given, a drop config, or the chosen schedule of a budget in a
   ``search.json`` (:func:`tavt_kit.search.schedule_from_search`), checked against the model;
2. ONNX through PyTorch's current exporter at that schedule (static token
   counts, dynamic batch; :func:`~tavt_kit.export.onnx.export_onnx`, checked
   with ``onnx.checker`` and in ONNX Runtime);
3. per format and precision: the fp32 ONNX file, an fp16 ONNX file, an NNCF
   int8 file (:mod:`~tavt_kit.export.quantize`: accuracy-controlled on the
   held-out split when the dataset has one, else plain post-training
   quantisation), an OpenVINO IR converted from the checked ONNX graph (f32
   weights; fp16 compresses them);
4. verification (:func:`~tavt_kit.export.verify.verify_export`): PyTorch and
   each exported file on the same real images — top-1, agreement, logit
   difference, the precision actually used — and the structural check that the
   graph holds the schedule's shorter token sequences;
5. ``export.json``: files, sizes, precision, schedule, MACs, verification per
   format, exporter, versions. A failed verification is recorded
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

from ..errors import ConfigError, ExportError, TavtKitError
from ..schedules import schedule_from_drop_file
from .formats import check_format_precision, parse_formats
from .publish import choose_base, clean_stage, publish, record_failed_attempt
from .record import EXPORT_FILE, ExportResult, file_entry, new_export_doc


# ------------------------------------------------------------------ the export
def export_model(
    model,
    out_dir,
    *,
    schedule=None,
    schedule_source: Optional[Dict[str, Any]] = None,
    formats: Sequence[str] = ("onnx",),
    precision: str = "fp32",
    verify: bool = True,
    verify_data=None,
    verify_root: Optional[str] = None,
    verify_split: str = "test",
    verify_images: Optional[int] = None,
    max_accuracy_drop: float = 0.5,
    max_logit_diff: Optional[float] = None,
    min_agreement: Optional[float] = None,
    calibration=None,
    calibration_split: str = "train",
    calibration_images: int = 300,
    accuracy_control: bool = True,
    accuracy_control_images: Optional[int] = None,
    exporter: str = "auto",
    opset: Optional[int] = None,
    batch_size: int = 32,
    threads: Optional[int] = None,
    seed: int = 0,
    raise_on_failure: bool = True,
    checkpoint: Optional[str] = None,
    log: Callable[[str], None] = lambda s: None,
    onnx_reuse: Optional["OnnxReuse"] = None,
) -> ExportResult:
    """Export ``model`` at ``schedule`` to ONNX and/or OpenVINO, verify each file, write ``export.json``.

    Args:
        model: a token-drop model or a checkpoint path (:func:`tavt_kit.load_checkpoint`).
        out_dir: folder for ``model.onnx`` / ``model.xml`` + ``.bin`` (``model.<precision>.*`` below fp32)
            and ``export.json``.
        schedule: counts, :class:`~tavt_kit.TokenSchedule` or drop-config path (``None``: the model's own,
            else the full model); see :func:`tavt_kit.search.schedule_from_search` for a search's budget.
        schedule_source: how the schedule was chosen (recorded in ``export.json``).
        formats: ``"onnx"``, ``"openvino"`` (or ``"onnx,openvino"``).
        precision: ``fp32`` (default), ``fp16`` (fp16 weights; OpenVINO compiles with the f16 hint),
            ``bf16`` (OpenVINO only: f32 IR run with the bf16 hint) or ``int8`` (NNCF post-training
            quantisation on ``calibration_images`` images of ``calibration_split``). bf16, and fp16 with
            OpenVINO, are refused when verification would run them on a CPU without native support (OpenVINO
            would quietly run f32 under that name).
        verify: compare every file with PyTorch on real images (default on); off records
            ``"verified": false`` with the reason.
        verify_data: dataset name (+ ``verify_root``), DataSpec, dataset or ``(uint8 images, labels)``;
            default the dataset recorded in the checkpoint, else the built-in demo.
        verify_images: cap on the number of verification images (seeded subset).
        max_accuracy_drop: largest acceptable top-1 drop in points (default 0.5).
        max_logit_diff: optional bound on max |logit difference|.
        min_agreement: optional bound on the fraction of predictions that agree with PyTorch.
        calibration: int8 calibration images (normalised float ``N x 3 x H x W``), default from the data.
        calibration_split: the split calibration images come from (never ``test``).
        accuracy_control: int8 with NNCF's ``quantize_with_accuracy_control`` (default): validated on the
            dataset's held-out split, quantised operations that cost more than ``max_accuracy_drop`` points of
            top-1 there are kept in float. Without a held-out split (or off) it is plain post-training
            quantisation, and ``export.json`` says why.
        accuracy_control_images: cap on the held-out images accuracy control validates on (seeded subset;
            default all).
        raise_on_failure: raise :class:`~tavt_kit.errors.ExportError` after writing ``export.json`` when
            a file fails verification.
        checkpoint: the file ``model`` was loaded from (recorded with its sha256) when a model is given.
        log: progress lines (``print`` for the command line).
        onnx_reuse: an :class:`OnnxReuse` shared by several exports of one model at one schedule (other
            precisions): the fp32 ONNX graph is exported and checked once.
    Returns:
        :class:`ExportResult` (``doc`` = ``export.json``).
    """
    formats = _check_request(formats, precision, verify, max_accuracy_drop, batch_size, calibration_split,
                             accuracy_control_images)
    model, checkpoint = _resolve_model(model, checkpoint)
    sched, source = _resolve_schedule(model, schedule, schedule_source)
    out_dir = os.fspath(out_dir)
    if os.path.isfile(out_dir):
        raise ConfigError(f"--out {out_dir}: is a file; expected an output folder")
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    # everything is built here, beside --out, and moved in only when finished (see publish.py)
    stage = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(out_dir))}.staging-", dir=parent)
    job = _Job(model=model, sched=sched, out_dir=stage, formats=formats, precision=precision, log=log,
               doc=new_export_doc(model, sched, source, formats, precision, checkpoint),
               base=choose_base(out_dir, precision, list(sched.counts)))
    json_path = os.path.join(out_dir, EXPORT_FILE)
    start = time.perf_counter()
    # the fp32 ONNX graph lives here when it is only a step towards the files asked for
    tmp = tempfile.mkdtemp(prefix=".export-", dir=stage)
    try:
        onnx_fp32, onnx_info = _onnx_step(job, tmp, opset, exporter, seed, onnx_reuse)
        calib = None
        if precision == "int8":
            calib = _calibration_step(job, calibration, verify_data, verify_root, calibration_split,
                                      calibration_images, seed)
            job.validation = _held_out_step(job, accuracy_control, verify_data, verify_root,
                                            accuracy_control_images, calibration_split, max_accuracy_drop, seed)
        for fmt in formats:
            _format_step(job, fmt, onnx_fp32, onnx_info, calib)
        if verify:
            failures = _verify_step(job, verify_data, verify_root, verify_split, verify_images, max_accuracy_drop,
                                    max_logit_diff, min_agreement, batch_size, threads, seed)
        else:
            failures = _skip_verification(job)
    except TavtKitError as e:
        _record(job, start, failure=str(e))
        record_failed_attempt(out_dir, job.doc)
        clean_stage(stage)
        raise
    except BaseException as e:  # a kill (KeyboardInterrupt) too: the folder keeps what it had
        _record(job, start, failure=f"{type(e).__name__}: {e}")
        if isinstance(e, Exception):
            record_failed_attempt(out_dir, job.doc)
        clean_stage(stage)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _record(job, start)
    try:
        doc = publish(stage, out_dir, job.doc)
    finally:
        clean_stage(stage)
    result = ExportResult(out_dir=out_dir, json_path=json_path, doc=doc)
    if failures and raise_on_failure:
        raise ExportError(f"export verification failed ({'; '.join(failures)}); recorded as verified=false "
                          f"in {json_path}")
    return result


# ---------------------------------------------------------------- the steps
@dataclass
class _Job:
    """What every step reads: the model at its schedule, where files go, and the record the steps fill in."""

    model: nn.Module
    sched: Any
    out_dir: str
    formats: Tuple[str, ...]
    precision: str
    log: Callable[[str], None]
    doc: Dict[str, Any]
    #: the file name stem: ``model`` at fp32, ``model.<precision>`` otherwise (tagged with the schedule when the
    #: folder already holds that name for another schedule)
    base: str = "model"
    #: int8 accuracy control: the held-out images, labels, how they were chosen and the max drop (None: plain PTQ)
    validation: Optional[Dict[str, Any]] = None
    #: int8: why plain PTQ was used instead of accuracy control
    ptq_reason: Optional[str] = None

    def path(self, fmt: str) -> str:
        """The main file written for a format (recorded relative to ``out_dir``)."""
        return os.path.join(self.out_dir, self.doc["files"][fmt]["path"])


def _check_request(formats, precision: str, verify: bool, max_accuracy_drop: float, batch_size: int,
                   calibration_split: str, accuracy_control_images: Optional[int]) -> Tuple[str, ...]:
    """The formats asked for, once every argument and the backends they need are checked (before any work)."""
    from .quantize import check_calibration_split

    formats = parse_formats(formats)
    check_format_precision(formats, precision)
    if not max_accuracy_drop >= 0:
        raise ConfigError(f"--max-accuracy-drop: expected a non-negative number of points, got {max_accuracy_drop}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size: expected a positive batch size, got {batch_size}")
    if accuracy_control_images is not None and (isinstance(accuracy_control_images, bool)
                                                or int(accuracy_control_images) < 1):
        raise ConfigError(f"--accuracy-control-images: expected a positive number of images, "
                          f"got {accuracy_control_images!r}")
    check_calibration_split(calibration_split)
    _require_backends(formats, precision)
    if verify and "openvino" in formats and precision in ("bf16", "fp16"):
        check_native_precision(precision)
    return formats


def check_native_precision(precision: str, device: str = "cpu") -> None:
    """Refuse to verify (or time) an OpenVINO file at bf16 / fp16 on a CPU that would quietly run f32 instead."""
    from .openvino import check_device_precision
    from .verify import OV_HINT

    try:
        check_device_precision(OV_HINT[precision], device=device)
    except TavtKitError as e:
        raise type(e)(f"{e}: verification would measure f32 and record it as {precision}; export at fp32 or int8 "
                      f"here, or build the file with --no-verify and verify it on a machine that has {precision}"
                      ) from None


def _require_backends(formats: Sequence[str], precision: str) -> None:
    """The optional backends a request needs."""
    if "openvino" in formats:
        from .openvino import require_openvino

        try:
            require_openvino()
        except TavtKitError as e:
            raise type(e)(f"--format openvino: {e}") from None
    if precision == "int8":
        from .quantize import require_nncf

        require_nncf()


def _resolve_model(model, checkpoint: Optional[str]) -> Tuple[nn.Module, Optional[str]]:
    """A token-drop model in eval mode, and the checkpoint it came from (recorded with its hash)."""
    from ..models import load_checkpoint

    if checkpoint is not None:
        checkpoint = os.fspath(checkpoint)
    if isinstance(model, (str, os.PathLike)):
        checkpoint = os.fspath(model)
        model = load_checkpoint(checkpoint)
    if not hasattr(model, "make_schedule"):
        raise ConfigError(f"export_model() takes a token-drop model or checkpoint, got {type(model).__name__}")
    model.eval()
    return model, checkpoint


def _resolve_schedule(model: nn.Module, schedule, schedule_source: Optional[Dict[str, Any]]):
    """The schedule to export (given, a drop-config file, the model's own or the full model) and its source."""
    if schedule is None:
        sched = model.schedule if model.schedule is not None else model.full_schedule()
        return sched, schedule_source or {"kind": "checkpoint" if model.schedule is not None else "full"}
    if isinstance(schedule, (str, os.PathLike)):
        return (schedule_from_drop_file(model, schedule),
                schedule_source or {"kind": "drop-config", "file": os.path.basename(os.fspath(schedule))})
    return model.make_schedule(schedule), schedule_source or {"kind": "given"}


@dataclass
class OnnxReuse:
    """The checked fp32 ONNX graph of one model at one schedule, shared by the exports of several precisions
    (``--precision auto``): exported once into ``folder``, copied by the later exports."""

    folder: str
    key: Optional[tuple] = None
    path: Optional[str] = None
    exporter: Optional[Dict[str, Any]] = None
    info: Optional[Dict[str, Any]] = None


def _onnx_step(job: _Job, tmp: str, opset: Optional[int], exporter: str, seed: int,
               reuse: Optional[OnnxReuse] = None) -> Tuple[str, Dict[str, Any]]:
    """The checked fp32 ONNX graph every format starts from; kept in ``out_dir`` when it is itself asked for."""
    import copy

    from .onnx import DEFAULT_OPSET, export_onnx

    keep_fp32_onnx = "onnx" in job.formats and job.precision == "fp32"
    onnx_fp32 = os.path.join(job.out_dir if keep_fp32_onnx else tmp, f"{job.base}.onnx")
    key = (id(job.model), tuple(job.sched.counts), tuple(job.doc["schedule"]["reducers"] or ()), opset, exporter,
           seed)
    if reuse is not None and reuse.key == key and reuse.path and os.path.isfile(reuse.path):
        job.log(f"reusing the checked fp32 ONNX graph at schedule {list(job.sched.counts)}")
        shutil.copyfile(reuse.path, onnx_fp32)
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
        shutil.copyfile(onnx_fp32, reuse.path)
        reuse.key, reuse.exporter, reuse.info = key, copy.deepcopy(job.doc["exporter"]), copy.deepcopy(info)
    return onnx_fp32, info


def _calibration_step(job: _Job, calibration, verify_data, verify_root, split: str, n: int,
                      seed: int) -> np.ndarray:
    """int8 calibration images: given, else the training split of the data (never the verification images)."""
    if calibration is not None:
        calib = np.asarray(calibration, dtype=np.float32)
        job.doc["calibration"] = {"source": "given", "images": int(calib.shape[0])}
        return calib
    from .quantize import calibration_images

    model = job.model
    # the verification images are never calibration images: given as tensors, calibrate on the
    # training split of the checkpoint's dataset (else the demo) instead
    given = isinstance(verify_data, (tuple, list))
    calib = calibration_images(model, None if given else verify_data, root=None if given else verify_root,
                               split=split, n=n, seed=seed)
    name = verify_data if isinstance(verify_data, str) else \
        ((getattr(model, "spec", None) or {}).get("data") or {}).get("name", "demo") \
        if verify_data is None or given else getattr(verify_data, "name", None)
    job.doc["calibration"] = {"source": "dataset", "dataset": name, "split": split, "images": int(calib.shape[0]),
                              "seed": seed}
    return calib


def _held_out_step(job: _Job, enabled: bool, verify_data, verify_root, n: Optional[int], calibration_split: str,
                   max_accuracy_drop: float, seed: int) -> Optional[Dict[str, Any]]:
    """int8 accuracy control's held-out images (the dataset's ``holdout`` split), or None (plain PTQ; why is
    recorded in ``job.ptq_reason``)."""
    from ..errors import DatasetError
    from .quantize import held_out_images

    if not enabled:
        job.ptq_reason = "accuracy control turned off (--no-accuracy-control)"
        return None
    given = isinstance(verify_data, (tuple, list))  # verification tensors: the checkpoint's dataset instead
    try:
        x, y, info = held_out_images(job.model, None if given else verify_data, root=None if given else verify_root,
                                     split="holdout", n=n, seed=seed)
    except (ConfigError, DatasetError) as e:
        job.ptq_reason = f"no held-out images to control the accuracy on ({e}); plain post-training quantisation"
        job.log(f"int8: {job.ptq_reason}")
        return None
    if calibration_split in ("holdout", "trainval"):
        info["note"] = (f"the calibration images (--calibration-split {calibration_split}) may include "
                        "these held-out images")
    return {"images": x, "labels": y, "info": info, "max_accuracy_drop": float(max_accuracy_drop)}


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
        job.log(f"  held-out top-1: f32 {q['f32_accuracy']:.2f} %, plain PTQ {q['ptq_accuracy']:.2f} %, int8 "
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
    entry["inference_precision_hint"] = {"fp32": "f32", "fp16": "f16", "bf16": "bf16", "int8": "f32"}[precision]
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
    entry["graph_keeps_token_drop"] = set(expected) <= set(counts)
    if not entry["graph_keeps_token_drop"]:
        job.log(f"  warning: {fmt} graph holds token counts {counts}, the schedule needs {expected}")


def _verify_step(job: _Job, verify_data, verify_root, verify_split, verify_images, max_accuracy_drop,
                 max_logit_diff, min_agreement, batch_size, threads, seed) -> List[str]:
    """PyTorch and every exported file on the same real images; returns the failures (recorded in ``doc``)."""
    from .verify import load_verify_data, pytorch_logits, verify_export

    doc, failures = job.doc, []
    data = load_verify_data(job.model, verify_data, root=verify_root, split=verify_split, max_images=verify_images,
                            seed=seed)
    job.log(f"verifying on {len(data)} images ({data.info.get('dataset', data.info.get('source'))} "
            f"{data.info.get('split', '')})")
    # one PyTorch pass serves as the reference of every format
    ref = pytorch_logits(job.model, data.images, job.sched, batch_size)
    doc["verification"] = {"data": data.info, "split": verify_split, "max_accuracy_drop": max_accuracy_drop,
                           "max_logit_diff": max_logit_diff, "min_agreement": min_agreement, "results": {}}
    for fmt in job.formats:
        try:
            v = verify_export(job.model, job.path(fmt), data, schedule=job.sched, precision=job.precision,
                              max_accuracy_drop=max_accuracy_drop, max_logit_diff=max_logit_diff,
                              min_agreement=min_agreement, batch_size=batch_size, threads=threads,
                              reference_logits=ref, format=fmt)
            result = v.to_dict()
            result["path"] = doc["files"][fmt]["path"]
            job.log("  " + v.summary() + ("" if v.passed else f"  FAILED: {v.reason}"))
            if not v.passed:
                failures.append(f"{fmt}: {v.reason}")
        except TavtKitError as e:  # the file cannot be loaded or run
            result = {"format": fmt, "passed": False, "reason": str(e)}
            failures.append(f"{fmt}: {e}")
        doc["verification"]["results"][fmt] = result
        doc["exports"][fmt]["verified"] = bool(result.get("passed"))
    if failures:
        doc.update(verified=False, status="failed", reason="; ".join(failures))
    else:
        doc.update(verified=True, status="verified", reason=None)
    return failures


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
