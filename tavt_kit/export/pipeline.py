"""``export_model``: a checkpoint at a token schedule -> ONNX / OpenVINO files, verified, with ``export.json``.

The steps (each a library call of its own):

1. the schedule: given, a drop config, or the chosen schedule of a budget in a
   ``search.json`` (:func:`tavt_kit.search.schedule_from_search`), checked against the model;
2. ONNX through PyTorch's current exporter at that schedule (static token
   counts, dynamic batch; :func:`~tavt_kit.export.onnx.export_onnx`, checked
   with ``onnx.checker`` and in ONNX Runtime);
3. per format and precision: the fp32 ONNX file, an fp16 ONNX file, an NNCF
   int8 file (:mod:`~tavt_kit.export.quantize`), an OpenVINO IR converted from
   the checked ONNX graph (f32 weights; fp16 compresses them);
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
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from torch import nn

from ..errors import ConfigError, ExportError, TavtKitError
from ..files import write_json
from ..schedules import schedule_from_drop_file
from .formats import check_format_precision, parse_formats
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
    exporter: str = "auto",
    opset: Optional[int] = None,
    batch_size: int = 32,
    threads: Optional[int] = None,
    seed: int = 0,
    raise_on_failure: bool = True,
    checkpoint: Optional[str] = None,
    log: Callable[[str], None] = lambda s: None,
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
            quantisation on ``calibration_images`` images of ``calibration_split``).
        verify: compare every file with PyTorch on real images (default on); off records
            ``"verified": false`` with the reason.
        verify_data: dataset name (+ ``verify_root``), DataSpec, dataset or ``(uint8 images, labels)``;
            default the dataset recorded in the checkpoint, else the built-in demo.
        verify_images: cap on the number of verification images (seeded subset).
        max_accuracy_drop: largest acceptable top-1 drop in points (default 0.5).
        max_logit_diff: optional bound on max |logit difference|.
        min_agreement: optional bound on the fraction of predictions that agree with PyTorch.
        calibration: int8 calibration images (normalised float ``N x 3 x H x W``), default from the data.
        raise_on_failure: raise :class:`~tavt_kit.errors.ExportError` after writing ``export.json`` when
            a file fails verification.
        checkpoint: the file ``model`` was loaded from (recorded with its sha256) when a model is given.
        log: progress lines (``print`` for the command line).
    Returns:
        :class:`ExportResult` (``doc`` = ``export.json``).
    """
    formats = parse_formats(formats)
    check_format_precision(formats, precision)
    if verify and not max_accuracy_drop >= 0:
        raise ConfigError(f"--max-accuracy-drop: expected a non-negative number of points, got {max_accuracy_drop}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size: expected a positive batch size, got {batch_size}")
    _require_backends(formats, precision)
    model, checkpoint = _resolve_model(model, checkpoint)
    sched, source = _resolve_schedule(model, schedule, schedule_source)
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    json_path = os.path.join(out_dir, EXPORT_FILE)
    doc = new_export_doc(model, sched, source, formats, precision, checkpoint)
    failures: List[str] = []
    start = time.perf_counter()

    def fail(reason: str) -> None:
        doc.update(verified=False, status="failed", reason=reason)
        doc["seconds"] = round(time.perf_counter() - start, 3)
        write_json(doc, json_path)

    tmp = tempfile.mkdtemp(prefix=".export-", dir=out_dir)
    try:
        onnx_fp32, onnx_info = _onnx_step(model, sched, doc, out_dir, tmp, formats, precision, opset, exporter,
                                          seed, log)
        calib = None
        if precision == "int8":
            calib = _calibration_step(model, doc, calibration, verify_data, verify_root, calibration_split,
                                      calibration_images, seed)
        base = "model" if precision == "fp32" else f"model.{precision}"
        for fmt in formats:
            entry = _format_step(fmt, doc, out_dir, base, onnx_fp32, onnx_info, precision, calib, log)
            _token_count_check(entry, os.path.join(out_dir, doc["files"][fmt]["path"]), model, sched,
                               doc["model"]["embed_dim"], fmt, log)
            doc["exports"][fmt] = entry
        if verify:
            failures = _verify_step(model, sched, doc, out_dir, formats, precision, verify_data, verify_root,
                                    verify_split, verify_images, max_accuracy_drop, max_logit_diff, min_agreement,
                                    batch_size, threads, seed, log)
        else:
            doc.update(verified=False, status="unverified",
                       reason="verification skipped (--no-verify); nothing here was checked on real images")
            doc["verification"] = {"skipped": True}
    except TavtKitError as e:
        fail(str(e))
        raise
    except Exception as e:
        fail(f"{type(e).__name__}: {e}")
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    doc["seconds"] = round(time.perf_counter() - start, 3)
    write_json(doc, json_path)
    result = ExportResult(out_dir=out_dir, json_path=json_path, doc=doc)
    if failures and raise_on_failure:
        raise ExportError(f"export verification failed ({'; '.join(failures)}); recorded as verified=false "
                          f"in {json_path}")
    return result


# ---------------------------------------------------------------- the steps
def _require_backends(formats: Sequence[str], precision: str) -> None:
    """The optional backends a request needs, checked before any work."""
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


def _onnx_step(model, sched, doc, out_dir, tmp, formats, precision, opset, exporter, seed, log):
    """The checked fp32 ONNX graph every format starts from; kept in ``out_dir`` when it is itself asked for."""
    from .onnx import DEFAULT_OPSET, export_onnx

    keep_fp32_onnx = "onnx" in formats and precision == "fp32"
    onnx_fp32 = os.path.join(out_dir if keep_fp32_onnx else tmp, "model.onnx")
    macs, macs_full = doc["macs"]["schedule"], doc["macs"]["full"]
    log(f"exporting to ONNX at schedule {list(sched.counts)} ({macs / 1e9:.4g} of {macs_full / 1e9:.4g} GMACs)")
    res = export_onnx(model, onnx_fp32, sched, opset=opset or DEFAULT_OPSET, exporter=exporter, verify=True,
                      seed=seed)
    doc["exporter"] = {"name": res.exporter, "fallback_reason": res.fallback_reason, "opset": res.opset,
                       "api": "torch.onnx.export(dynamo=True)" if res.exporter == "dynamo"
                       else "torch.onnx.export(dynamo=False)"}
    info = {"exporter": res.exporter, "fallback_reason": res.fallback_reason, "opset": res.opset,
            "dynamic_batch": res.dynamic_batch, "check": {"runtime": "onnxruntime", "inputs": "random",
                                                          "batches": res.checked_batches,
                                                          "max_abs_diff": res.max_abs_diff, "atol": res.atol},
            "seconds": round(res.seconds, 3)}
    return onnx_fp32, info


def _calibration_step(model, doc, calibration, verify_data, verify_root, split, n, seed) -> np.ndarray:
    """int8 calibration images: given, else the training split of the data (never the verification images)."""
    if calibration is not None:
        calib = np.asarray(calibration, dtype=np.float32)
        doc["calibration"] = {"source": "given", "images": int(calib.shape[0])}
        return calib
    from .quantize import calibration_images

    # the verification images are never calibration images: given as tensors, calibrate on the
    # training split of the checkpoint's dataset (else the demo) instead
    given = isinstance(verify_data, (tuple, list))
    calib = calibration_images(model, None if given else verify_data, root=None if given else verify_root,
                               split=split, n=n, seed=seed)
    name = verify_data if isinstance(verify_data, str) else \
        ((getattr(model, "spec", None) or {}).get("data") or {}).get("name", "demo") \
        if verify_data is None or given else getattr(verify_data, "name", None)
    doc["calibration"] = {"source": "dataset", "dataset": name, "split": split, "images": int(calib.shape[0]),
                          "seed": seed}
    return calib


def _format_step(fmt, doc, out_dir, base, onnx_fp32, onnx_info, precision, calib, log) -> Dict[str, Any]:
    """The file(s) of one format at the precision asked for; records them in ``doc["files"]``."""
    entry: Dict[str, Any] = {"precision": precision}
    if fmt == "onnx":
        entry.update(onnx_info)
        if precision == "fp32":
            path = onnx_fp32
        elif precision == "fp16":
            from .graph import onnx_fp16

            path = os.path.join(out_dir, f"{base}.onnx")
            log("converting the ONNX graph to fp16")
            onnx_fp16(onnx_fp32, path)
            entry["converted_with"] = "onnxruntime.transformers.float16 (fp32 input/output)"
        else:
            from .quantize import quantize_onnx

            path = os.path.join(out_dir, f"{base}.onnx")
            log(f"int8: NNCF post-training quantisation of the ONNX graph ({calib.shape[0]} images)")
            entry["quantization"] = quantize_onnx(onnx_fp32, path, calib).to_dict()
            entry["quantization"]["source"] = "model.onnx (fp32, this export)"
            entry["quantization"]["path"] = os.path.basename(path)
        doc["files"]["onnx"] = file_entry(out_dir, path)
        return entry
    from .openvino import convert_openvino, tag_precision

    path = os.path.join(out_dir, f"{base}.xml")
    if precision == "int8":
        from .quantize import quantize_openvino

        log(f"int8: NNCF post-training quantisation of the OpenVINO IR ({calib.shape[0]} images)")
        entry["quantization"] = quantize_openvino(onnx_fp32, path, calib).to_dict()
        entry["quantization"].update(source="model.onnx (fp32, this export)", path=os.path.basename(path))
    else:
        log("converting to OpenVINO IR")
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
    doc["files"]["openvino"] = file_entry(out_dir, path, path[:-4] + ".bin")
    return entry


def _token_count_check(entry: Dict[str, Any], path: str, model, sched, width: int, fmt: str, log) -> None:
    """Structural check: the graph's token tensors (``width`` wide) have the schedule's shorter sequence lengths."""
    if not width:
        return
    from .verify import expected_token_counts, graph_token_counts

    counts = graph_token_counts(path, width)
    expected = expected_token_counts(model, sched)
    entry["graph_token_counts"] = counts
    entry["schedule_token_counts"] = expected
    entry["graph_keeps_token_drop"] = set(expected) <= set(counts)
    if not entry["graph_keeps_token_drop"]:
        log(f"  warning: {fmt} graph holds token counts {counts}, the schedule needs {expected}")


def _verify_step(model, sched, doc, out_dir, formats, precision, verify_data, verify_root, verify_split,
                 verify_images, max_accuracy_drop, max_logit_diff, min_agreement, batch_size, threads, seed,
                 log) -> List[str]:
    """PyTorch and every exported file on the same real images; returns the failures (recorded in ``doc``)."""
    from .verify import load_verify_data, pytorch_logits, verify_export

    failures: List[str] = []
    data = load_verify_data(model, verify_data, root=verify_root, split=verify_split, max_images=verify_images,
                            seed=seed)
    log(f"verifying on {len(data)} images ({data.info.get('dataset', data.info.get('source'))} "
        f"{data.info.get('split', '')})")
    ref = pytorch_logits(model, data.images, sched, batch_size)
    doc["verification"] = {"data": data.info, "split": verify_split, "max_accuracy_drop": max_accuracy_drop,
                           "max_logit_diff": max_logit_diff, "min_agreement": min_agreement, "results": {}}
    for fmt in formats:
        path = os.path.join(out_dir, doc["files"][fmt]["path"])
        try:
            v = verify_export(model, path, data, schedule=sched, precision=precision,
                              max_accuracy_drop=max_accuracy_drop, max_logit_diff=max_logit_diff,
                              min_agreement=min_agreement, batch_size=batch_size, threads=threads,
                              reference_logits=ref, format=fmt)
            result = v.to_dict()
            result["path"] = doc["files"][fmt]["path"]
            log("  " + v.summary() + ("" if v.passed else f"  FAILED: {v.reason}"))
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
