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

import datetime
import hashlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from torch import nn

from ..errors import ConfigError, ExportError, TavtKitError
from ..files import write_json
from ..schedules import schedule_from_drop_file
from .verify import check_precision

EXPORT_FORMAT = "fgvc-kit/export"
EXPORT_FILE = "export.json"
FORMATS = ("onnx", "openvino")
#: precisions each format can be exported at (bf16 is an OpenVINO inference precision; ONNX Runtime's
#: CPU provider has no bf16 kernels)
FORMAT_PRECISIONS = {"onnx": ("fp32", "fp16", "int8"), "openvino": ("fp32", "fp16", "bf16", "int8")}


# ----------------------------------------------------------------- arguments
def parse_formats(value) -> Tuple[str, ...]:
    """``"onnx,openvino"`` (or a sequence) -> ``("onnx", "openvino")``, checked."""
    items = [v.strip().lower() for v in value.split(",")] if isinstance(value, str) else [str(v).lower()
                                                                                           for v in value]
    items = [v for v in items if v]
    aliases = {"ov": "openvino", "ir": "openvino"}
    out: List[str] = []
    for v in items:
        v = aliases.get(v, v)
        if v not in FORMATS:
            raise ConfigError(f"--format: unknown format {v!r}; expected one or more of {', '.join(FORMATS)} "
                              "(comma-separated)")
        if v not in out:
            out.append(v)
    if not out:
        raise ConfigError(f"--format: give at least one of {', '.join(FORMATS)}")
    return tuple(out)


def check_format_precision(formats: Sequence[str], precision: str) -> None:
    check_precision(precision)
    for f in formats:
        if precision not in FORMAT_PRECISIONS[f]:
            raise ConfigError(f"--precision {precision} is not available for --format {f} (ONNX Runtime has no "
                              f"bf16 CPU kernels; {f} takes {', '.join(FORMAT_PRECISIONS[f])}); export OpenVINO "
                              "alone at bf16")


# ------------------------------------------------------------------ results
@dataclass
class ExportResult:
    """What :func:`export_model` wrote: ``doc`` is the content of ``export.json``."""

    out_dir: str
    json_path: str
    doc: Dict[str, Any]

    @property
    def verified(self) -> bool:
        return bool(self.doc.get("verified"))

    @property
    def files(self) -> Dict[str, Dict[str, Any]]:
        return self.doc.get("files", {})

    def path(self, fmt: str) -> str:
        """The main file of a format (``.onnx`` / ``.xml``)."""
        return os.path.join(self.out_dir, self.doc["files"][fmt]["path"])


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _file_entry(out_dir: str, *paths: str) -> Dict[str, Any]:
    main = paths[0]
    entry: Dict[str, Any] = {"path": os.path.relpath(main, out_dir), "bytes": os.path.getsize(main),
                             "sha256": _sha256(main)}
    extra = [p for p in paths[1:] if os.path.exists(p)]
    if extra:
        entry["weights"] = os.path.relpath(extra[0], out_dir)
        entry["weights_bytes"] = os.path.getsize(extra[0])
        entry["weights_sha256"] = _sha256(extra[0])
    entry["total_bytes"] = sum(os.path.getsize(p) for p in (main, *extra))
    return entry


def _versions(extra: Sequence[str] = ()) -> Dict[str, str]:
    from .. import __version__
    from ..machine import library_versions

    v = {"fgvc_kit": __version__, **library_versions()}
    from importlib import metadata

    for pkg in extra:
        try:
            v[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return v


def _inference_params(model: nn.Module) -> int:
    """Parameters the exported graph needs (Mix-ViT's training-only branch left out)."""
    names = dict(model.named_parameters())
    state = model.inference_state_dict() if hasattr(model, "inference_state_dict") else model.state_dict()
    return int(sum(names[k].numel() for k in state if k in names))


def _toposort(graph) -> None:
    """Order a graph's nodes so that every input is produced before it is used (in place)."""
    known = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for n in pending:
            if all(i in known for i in n.input):
                ordered.append(n)
                known.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):  # inputs from outside (subgraphs): keep the remaining order
            ordered.extend(rest)
            break
        pending = rest
    nodes = [type(n)() for n in ordered]
    for new, old in zip(nodes, ordered):
        new.CopyFrom(old)
    del graph.node[:]
    graph.node.extend(nodes)


def _onnx_fp16(src: str, dst: str) -> None:
    """fp16 weights and compute, fp32 input/output (onnxruntime's converter; ops without fp16 kernels stay fp32)."""
    import onnx

    from .onnx import _first_line, _write_metadata

    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError:
        raise ExportError("--precision fp16 for ONNX needs onnxruntime's float16 converter "
                          "(onnxruntime.transformers); pip install onnxruntime") from None
    m = onnx.load(src)
    props = {p.key: p.value for p in m.metadata_props}
    try:
        h = convert_float_to_float16(m, keep_io_types=True, disable_shape_infer=False)
    except Exception as e:
        raise ExportError(f"{src}: fp16 conversion failed ({_first_line(e)})") from None
    _toposort(h.graph)  # the converter appends the input casts at the end of the node list
    onnx.save(h, dst)
    try:
        onnx.checker.check_model(dst)
    except Exception as e:
        raise ExportError(f"{dst}: the fp16 graph fails onnx.checker ({_first_line(e)})") from None
    props["fgvc_kit.precision"] = "fp16"
    _write_metadata(dst, props)


def _set_ov_precision(xml: str, precision: str) -> None:
    """Record the precision an IR was exported for in its rt_info (bf16: the inference hint to use)."""
    from .openvino import core, require_openvino

    ov = require_openvino()
    m = core().read_model(xml)
    m.set_rt_info(precision, ["fgvc_kit", "precision"])
    tmp_dir = tempfile.mkdtemp(prefix="fgvc-kit-ov-", dir=os.path.dirname(os.path.abspath(xml)))
    try:
        tmp = os.path.join(tmp_dir, os.path.basename(xml))
        ov.save_model(m, tmp, compress_to_fp16=False)
        del m
        os.replace(tmp, xml)
        os.replace(tmp[:-4] + ".bin", xml[:-4] + ".bin")
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


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
    from ..models import count_macs, load_checkpoint, spec_of
    from .onnx import DEFAULT_OPSET, export_onnx

    formats = parse_formats(formats)
    check_format_precision(formats, precision)
    if verify and not max_accuracy_drop >= 0:
        raise ConfigError(f"--max-accuracy-drop: expected a non-negative number of points, got {max_accuracy_drop}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size: expected a positive batch size, got {batch_size}")
    # the optional backends, before any work
    if "openvino" in formats:
        from .openvino import require_openvino

        try:
            require_openvino()
        except TavtKitError as e:
            raise type(e)(f"--format openvino: {e}") from None
    if precision == "int8":
        from .quantize import require_nncf

        require_nncf()
    if checkpoint is not None:
        checkpoint = os.fspath(checkpoint)
    if isinstance(model, (str, os.PathLike)):
        checkpoint = os.fspath(model)
        model = load_checkpoint(checkpoint)
    if not hasattr(model, "make_schedule"):
        raise ConfigError(f"export_model() takes a token-drop model or checkpoint, got {type(model).__name__}")
    model.eval()
    if schedule is None:
        sched = model.schedule if model.schedule is not None else model.full_schedule()
        source = schedule_source or {"kind": "checkpoint" if model.schedule is not None else "full"}
    else:
        if isinstance(schedule, (str, os.PathLike)):
            sched = schedule_from_drop_file(model, schedule)
            source = schedule_source or {"kind": "drop-config", "file": os.path.basename(os.fspath(schedule))}
        else:
            sched = model.make_schedule(schedule)
            source = schedule_source or {"kind": "given"}
    opset = opset or DEFAULT_OPSET
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    json_path = os.path.join(out_dir, EXPORT_FILE)
    spec = spec_of(model)
    full = model.full_schedule()
    macs_full = count_macs(model, full).total()
    macs = count_macs(model, sched).total()
    width = int(spec.get("embed_dim") or 0)
    doc: Dict[str, Any] = {
        "format": EXPORT_FORMAT, "version": 1,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "verified": False, "status": "running", "reason": None,
        "checkpoint": {"path": checkpoint, "sha256": _sha256(checkpoint)} if checkpoint else None,
        "model": {"backbone": spec["backbone"]["name"], "head": spec["head"]["name"],
                  "img_size": spec.get("img_size"), "num_classes": spec.get("num_classes"),
                  "depth": spec.get("depth"), "num_patches": spec.get("num_patches"), "embed_dim": width,
                  "params": int(sum(p.numel() for p in model.parameters())),
                  "inference_params": _inference_params(model),
                  "pruned": spec.get("pruned") is not None,
                  "token_drop": spec.get("token_drop")},
        "schedule": {"counts": list(sched.counts), "num_patches": int(sched.num_patches),
                     "keep_ratios": [round(r, 6) for r in sched.keep_ratios()], "full": sched.is_full,
                     "source": source},
        "macs": {"full": macs_full, "schedule": macs, "reduction": macs_full / macs if macs else None},
        "formats": list(formats), "precision": precision,
        "input": {"name": "input", "shape": ["batch", 3, *spec["img_size"]], "dtype": "float32",
                  "normalization": spec.get("normalization")},
        "output": {"name": "logits", "shape": ["batch", spec.get("num_classes")]},
        "exporter": None, "files": {}, "exports": {}, "verification": None,
        "versions": _versions(["nncf"] if precision == "int8" else []),
    }
    try:
        from ..machine import cpu_description

        doc["machine"] = {"cpu": cpu_description()}
    except Exception:  # descriptive only
        pass
    base = "model" if precision == "fp32" else f"model.{precision}"
    failures: List[str] = []
    start = time.perf_counter()

    def fail(reason: str) -> None:
        doc.update(verified=False, status="failed", reason=reason)
        doc["seconds"] = round(time.perf_counter() - start, 3)
        write_json(doc, json_path)

    tmp = tempfile.mkdtemp(prefix=".export-", dir=out_dir)
    try:
        # ---- 1. the checked fp32 ONNX graph every format starts from
        keep_fp32_onnx = "onnx" in formats and precision == "fp32"
        onnx_fp32 = os.path.join(out_dir if keep_fp32_onnx else tmp, "model.onnx")
        log(f"exporting to ONNX at schedule {list(sched.counts)} ({macs / 1e9:.4g} of {macs_full / 1e9:.4g} GMACs)")
        res = export_onnx(model, onnx_fp32, sched, opset=opset, exporter=exporter, verify=True, seed=seed)
        doc["exporter"] = {"name": res.exporter, "fallback_reason": res.fallback_reason, "opset": res.opset,
                           "api": "torch.onnx.export(dynamo=True)" if res.exporter == "dynamo"
                           else "torch.onnx.export(dynamo=False)"}
        onnx_info = {"exporter": res.exporter, "fallback_reason": res.fallback_reason, "opset": res.opset,
                     "dynamic_batch": res.dynamic_batch, "check": {"runtime": "onnxruntime", "inputs": "random",
                                                                   "batches": res.checked_batches,
                                                                   "max_abs_diff": res.max_abs_diff,
                                                                   "atol": res.atol},
                     "seconds": round(res.seconds, 3)}
        # ---- 2. the files of each format
        calib = None
        if precision == "int8":
            if calibration is not None:
                calib = np.asarray(calibration, dtype=np.float32)
                doc["calibration"] = {"source": "given", "images": int(calib.shape[0])}
            else:
                from .quantize import calibration_images as calib_fn

                # the verification images are never calibration images: given as tensors, calibrate on the
                # training split of the checkpoint's dataset (else the demo) instead
                given = isinstance(verify_data, (tuple, list))
                calib = calib_fn(model, None if given else verify_data, root=None if given else verify_root,
                                 split=calibration_split, n=calibration_images, seed=seed)
                name = verify_data if isinstance(verify_data, str) else \
                    ((getattr(model, "spec", None) or {}).get("data") or {}).get("name", "demo") \
                    if verify_data is None or given else getattr(verify_data, "name", None)
                doc["calibration"] = {"source": "dataset", "dataset": name, "split": calibration_split,
                                      "images": int(calib.shape[0]), "seed": seed}
        for fmt in formats:
            entry: Dict[str, Any] = {"precision": precision}
            if fmt == "onnx":
                entry.update(onnx_info)
                if precision == "fp32":
                    path = onnx_fp32
                elif precision == "fp16":
                    path = os.path.join(out_dir, f"{base}.onnx")
                    log("converting the ONNX graph to fp16")
                    _onnx_fp16(onnx_fp32, path)
                    entry["converted_with"] = "onnxruntime.transformers.float16 (fp32 input/output)"
                else:
                    path = os.path.join(out_dir, f"{base}.onnx")
                    log(f"int8: NNCF post-training quantisation of the ONNX graph ({calib.shape[0]} images)")
                    from .quantize import quantize_onnx

                    entry["quantization"] = quantize_onnx(onnx_fp32, path, calib).to_dict()
                    entry["quantization"]["source"] = "model.onnx (fp32, this export)"
                    entry["quantization"]["path"] = os.path.basename(path)
                doc["files"]["onnx"] = _file_entry(out_dir, path)
            else:
                from .openvino import convert_openvino

                path = os.path.join(out_dir, f"{base}.xml")
                if precision == "int8":
                    log(f"int8: NNCF post-training quantisation of the OpenVINO IR ({calib.shape[0]} images)")
                    from .quantize import quantize_openvino

                    entry["quantization"] = quantize_openvino(onnx_fp32, path, calib).to_dict()
                    entry["quantization"].update(source="model.onnx (fp32, this export)",
                                                 path=os.path.basename(path))
                else:
                    log("converting to OpenVINO IR")
                    conv = convert_openvino(onnx_fp32, path, compress_to_fp16=precision == "fp16", verify=True)
                    entry["conversion"] = {"source": "onnx", "exporter": res.exporter,
                                           "compress_to_fp16": conv.compress_to_fp16,
                                           "check": {"runtime": "openvino", "reference": conv.reference,
                                                     "precision": conv.precision_checked, "inputs": "random",
                                                     "max_abs_diff": conv.max_abs_diff},
                                           "seconds": round(conv.seconds, 3)}
                    _set_ov_precision(path, precision)
                entry["weights"] = "f16" if precision == "fp16" else "f32 (int8 where quantised)" \
                    if precision == "int8" else "f32"
                entry["inference_precision_hint"] = {"fp32": "f32", "fp16": "f16", "bf16": "bf16",
                                                     "int8": "f32"}[precision]
                doc["files"]["openvino"] = _file_entry(out_dir, path, path[:-4] + ".bin")
            # structural check: the graph holds the schedule's token counts
            if width:
                from .verify import expected_token_counts, graph_token_counts

                counts = graph_token_counts(path, width)
                expected = expected_token_counts(model, sched)
                entry["graph_token_counts"] = counts
                entry["schedule_token_counts"] = expected
                entry["graph_keeps_token_drop"] = set(expected) <= set(counts)
                if not entry["graph_keeps_token_drop"]:
                    log(f"  warning: {fmt} graph holds token counts {counts}, the schedule needs {expected}")
            doc["exports"][fmt] = entry
        # ---- 3. verification on real images
        if not verify:
            doc.update(verified=False, status="unverified",
                       reason="verification skipped (--no-verify); nothing here was checked on real images")
            doc["verification"] = {"skipped": True}
        else:
            from .verify import load_verify_data, pytorch_logits, verify_export

            data = load_verify_data(model, verify_data, root=verify_root, split=verify_split,
                                    max_images=verify_images, seed=seed)
            log(f"verifying on {len(data)} images ({data.info.get('dataset', data.info.get('source'))} "
                f"{data.info.get('split', '')})")
            ref = pytorch_logits(model, data.images, sched, batch_size)
            doc["verification"] = {"data": data.info, "split": verify_split, "max_accuracy_drop": max_accuracy_drop,
                                   "max_logit_diff": max_logit_diff, "min_agreement": min_agreement,
                                   "results": {}}
            for fmt in formats:
                path = os.path.join(out_dir, doc["files"][fmt]["path"])
                try:
                    v = verify_export(model, path, data, schedule=sched, precision=precision,
                                      max_accuracy_drop=max_accuracy_drop, max_logit_diff=max_logit_diff,
                                      min_agreement=min_agreement, batch_size=batch_size, threads=threads, reference_logits=ref, format=fmt)
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
