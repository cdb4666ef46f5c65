"""The record of an export: ``export.json`` (files with their hashes, model, schedule, MACs, versions) and its result.

``export.json`` version 2 keeps, in ``artefacts``, one record per exported file in the folder
(:class:`ExportRecord`: path and sha256, format, precision, schedule counts and reducers, the exported
model's ``weights_sha256``, status); the top level describes the latest export. Version 1 (a single
export at the top level, no ``artefacts``, no weights hash) is still read: :func:`records_of` derives its
records. :func:`check_files` says whether a record's files are still the ones exported (:class:`FileCheck`).

Each OpenVINO record says the ``INFERENCE_PRECISION_HINT`` its file is compiled with
(``inference_precision_hint``: ``f32`` for fp32 and int8 files, ``bf16`` for the bf16 export, whose IR holds
f32 weights, ``f16`` for fp16); a record written before that field existed gets it from its format and
precision (:func:`inference_precision_hint`), so older files read the same.
"""
from __future__ import annotations

import datetime
import hashlib
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from torch import nn

from .verify import Verification

EXPORT_FORMAT = "fgvc-kit/export"
#: the newest export.json version this code reads (and the one it writes); 2: ``artefacts`` records carry the
#: schedule's reducers and the model's ``weights_sha256``, the top level ``model.weights_sha256``
EXPORT_VERSION = 2
EXPORT_FILE = "export.json"
#: what a reader says an export.json should be
EXPORT_EXPECTED = "the export.json of fgvc-kit export"


def read_export(path, where: Optional[str] = None) -> Dict[str, Any]:
    """The content of an ``export.json``: one :class:`ConfigError` line naming the file (``where``, default its
    path) when it is not JSON (a binary file is never loaded), another kind of fgvc-kit file (named for what it
    is) or a version newer than this fgvc-kit reads. Versions 1 and 2 are read (see :func:`records_of`)."""
    from ..validate import check_format, read_json

    path = os.fspath(path)
    doc = read_json(path, EXPORT_EXPECTED, kind="export record")
    check_format(doc, where or path, EXPORT_FORMAT, EXPORT_VERSION, "an export record of fgvc-kit export")
    validate_export(doc, where or path)
    return doc


#: what an export (and each file it recorded) can be
EXPORT_STATUSES = ("verified", "unverified", "failed")
#: the INFERENCE_PRECISION_HINT values an OpenVINO file can need
HINTS = ("f32", "bf16", "f16")


def inference_precision_hint(fmt: Optional[str], precision: Optional[str]) -> Optional[str]:
    """The ``INFERENCE_PRECISION_HINT`` an exported file is compiled with: OpenVINO's name of its precision
    (``f32`` for fp32 and int8 files, whose graph carries the quantisation; ``bf16``; ``f16``), None for an
    ONNX file (ONNX Runtime takes no such hint) or an unknown precision."""
    from ..target import Precision

    if fmt != "openvino" or precision is None:
        return None
    try:
        return Precision.OPENVINO_HINT[Precision.parse(precision)]
    except Exception:  # a precision this fgvc-kit does not know: no hint to give
        return None


def hint_lines(doc: Dict[str, Any]) -> List[str]:
    """One line per OpenVINO file of the export ``doc`` describes at its top level: the hint it is compiled with
    (``model.xml: compile with INFERENCE_PRECISION_HINT=f32``)."""
    out = []
    for fmt, f in (doc.get("files") or {}).items():
        if not isinstance(f, dict) or not isinstance(f.get("path"), str):
            continue
        exp = (doc.get("exports") or {}).get(fmt) or {}
        hint = exp.get("inference_precision_hint") or inference_precision_hint(fmt, exp.get("precision",
                                                                                             doc.get("precision")))
        if hint:
            out.append(f"{f['path']}: compile with INFERENCE_PRECISION_HINT={hint}")
    return out


def validate_export(doc: Dict[str, Any], where: str) -> None:
    """Check an export.json's values: one :class:`ConfigError` line naming ``where`` and the field for a status
    export does not write, a ``verified`` flag that contradicts it, a file record that is not an object, a
    top-1 outside [0, 100], or a file recorded verified by an export whose status is not (the records an export
    writes carry its ``created`` time: a file of the newest export cannot be verified when it failed)."""
    from ..validate import Fields

    f = Fields(where)
    status = f.choice(doc.get("status"), "status", EXPORT_STATUSES, what="an export status")
    verified = f.flag(doc.get("verified"), "verified")
    if status is not None and verified is not None and verified != (status == "verified"):
        f.fail("verified", verified, f"{str(status == 'verified').lower()}, as the export's status {status!r} says")
    if "files" in doc:  # export writes {} before its first file, then each format's file with its sha256
        files = doc["files"]
        if not isinstance(files, dict):
            f.fail("files", files, "an object: each exported format's file with its sha256 (no file is trusted "
                   "without one)")
        for fmt, rec in files.items():
            f.mapping(rec, f"files.{fmt}", optional=False)
            f.text(f.get(rec, "path", f"files.{fmt}.path", "the exported file", True), f"files.{fmt}.path", False)
            f.text(f.get(rec, "sha256", f"files.{fmt}.sha256", "the sha256 of the exported file", True),
                   f"files.{fmt}.sha256", False)
    for field, rec in f.each(doc.get("artefacts"), "artefacts"):
        f.mapping(rec, field, optional=False)
        rs = f.choice(rec.get("status"), f"{field}.status", EXPORT_STATUSES, what="a file's export status")
        f.flag(rec.get("verified"), f"{field}.verified")
        f.number(rec.get("top1"), f"{field}.top1", low=0, high=100)
        f.text(rec.get("path"), f"{field}.path")
        f.choice(rec.get("inference_precision_hint"), f"{field}.inference_precision_hint", HINTS,
                 what="an OpenVINO INFERENCE_PRECISION_HINT")
        if (rs == "verified" or rec.get("verified")) and status not in (None, "verified") and \
                rec.get("created") is not None and rec.get("created") == doc.get("created"):
            f.fail(f"{field}.status", rs, f"the status of the export that wrote it ({status!r}, created "
                   f"{doc.get('created')}): a file of a failed export is never verified")


@dataclass(frozen=True)
class ExportResult:
    """What :func:`~tavt_kit.export.export_model` wrote (or :meth:`load` read): ``doc`` is the content of
    ``export.json``; the properties read it as typed values."""

    out_dir: str
    json_path: str
    doc: Dict[str, Any]

    @classmethod
    def load(cls, path) -> "ExportResult":
        """Read an ``export.json`` (or the folder holding one) with :func:`read_export`: another kind of file or a
        newer version is refused."""
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, EXPORT_FILE)
        doc = read_export(path)
        return cls(out_dir=os.path.dirname(os.path.abspath(path)), json_path=path, doc=doc)

    @property
    def verified(self) -> bool:
        """Every file passed verification (False when unverified, failed or skipped)."""
        return bool(self.doc.get("verified"))

    @property
    def status(self) -> str:
        """``verified``, ``unverified`` (verification turned off) or ``failed``."""
        return str(self.doc.get("status"))

    @property
    def reason(self) -> Optional[str]:
        """Why the export is not verified (None when it is)."""
        return self.doc.get("reason")

    @property
    def formats(self) -> Tuple[str, ...]:
        return tuple(self.doc.get("formats") or ())

    @property
    def precision(self) -> Optional[str]:
        """The precision of the export (``auto`` when export_fastest chose different ones per format)."""
        return self.doc.get("precision")

    @property
    def precisions(self) -> Dict[str, str]:
        """Each format's precision."""
        return {fmt: e.get("precision", self.precision) for fmt, e in (self.doc.get("exports") or {}).items()}

    @property
    def inference_precision_hints(self) -> Dict[str, str]:
        """The ``INFERENCE_PRECISION_HINT`` each OpenVINO file is compiled with (``{"openvino": "bf16"}``; ONNX
        files take none)."""
        out = {}
        for fmt, e in (self.doc.get("exports") or {}).items():
            hint = (e or {}).get("inference_precision_hint") or inference_precision_hint(
                fmt, (e or {}).get("precision", self.precision))
            if hint:
                out[fmt] = hint
        return out

    @property
    def schedule(self) -> List[int]:
        """The schedule's patch-token counts per block."""
        return list((self.doc.get("schedule") or {}).get("counts") or [])

    @property
    def files(self) -> Dict[str, Dict[str, Any]]:
        return self.doc.get("files", {})

    def path(self, fmt: str) -> str:
        """The main file of a format (``.onnx`` / ``.xml``)."""
        return os.path.join(self.out_dir, self.doc["files"][fmt]["path"])

    @property
    def verification(self) -> Dict[str, Verification]:
        """Each format's :class:`~tavt_kit.export.Verification` (empty when verification was skipped)."""
        results = (self.doc.get("verification") or {}).get("results") or {}
        return {fmt: Verification.from_dict(r) for fmt, r in results.items()}

    @property
    def weights_sha256(self) -> Optional[str]:
        """The content key of the exported model's weights (``model.weights_sha256``; None in a version-1 file)."""
        return (self.doc.get("model") or {}).get("weights_sha256")

    @property
    def records(self) -> List["ExportRecord"]:
        """Every export the folder's ``export.json`` describes, one record per file (a version-1 file: its one
        export's files)."""
        return [ExportRecord.from_dict(r) for r in records_of(self.doc)]


@dataclass(frozen=True)
class FileCheck:
    """Whether a file named in a record can be trusted (``ok``), and if not, why (``reason``, one phrase)."""

    ok: bool
    reason: Optional[str] = None

    def __bool__(self) -> bool:
        return self.ok


PASSED = FileCheck(True)


@dataclass(frozen=True)
class ExportRecord:
    """One exported file of an ``export.json`` (an entry of ``artefacts``): where it is, its hashes, what was
    exported (format, precision, schedule counts and per-block reducers, the model's weights) and its status.

    ``weights``/``weights_sha256`` are the file's companion (OpenVINO's ``.bin``); ``model_weights_sha256`` is
    the content key of the exported model's tensors (:func:`tavt_kit.models.weights_digest`), the one
    ``search.json`` and ``bench.json`` record as ``model.weights_sha256``.
    """

    path: Optional[str]
    sha256: Optional[str] = None
    weights: Optional[str] = None
    weights_sha256: Optional[str] = None
    format: Optional[str] = None
    precision: Optional[str] = None
    counts: Optional[Tuple[int, ...]] = None
    #: each block's reducer as exported (None where a block keeps its tokens); None: not recorded
    reducers: Optional[Tuple[Optional[str], ...]] = None
    model_weights_sha256: Optional[str] = None
    checkpoint_sha256: Optional[str] = None
    verified: bool = False
    status: Optional[str] = None
    reason: Optional[str] = None
    top1: Optional[float] = None
    top1_pytorch: Optional[float] = None
    created: Optional[str] = None
    #: the OpenVINO ``INFERENCE_PRECISION_HINT`` the file is compiled with (None: an ONNX file); a record that
    #: does not say gets it from its format and precision (:func:`inference_precision_hint`)
    inference_precision_hint: Optional[str] = None

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ExportRecord":
        d = d if isinstance(d, dict) else {}
        counts = d.get("schedule")
        reducers = d.get("reducers")
        return cls(path=d.get("path") if isinstance(d.get("path"), str) else None, sha256=d.get("sha256"),
                   weights=d.get("weights") if isinstance(d.get("weights"), str) else None,
                   weights_sha256=d.get("weights_sha256"), format=d.get("format"), precision=d.get("precision"),
                   counts=tuple(int(c) for c in counts) if isinstance(counts, (list, tuple)) else None,
                   reducers=tuple(reducers) if isinstance(reducers, (list, tuple)) else None,
                   model_weights_sha256=d.get("model_weights_sha256"), checkpoint_sha256=d.get("checkpoint_sha256"),
                   verified=d.get("verified") is True, status=d.get("status"), reason=d.get("reason"),
                   top1=d.get("top1"), top1_pytorch=d.get("top1_pytorch"), created=d.get("created"),
                   inference_precision_hint=d.get("inference_precision_hint")
                   or inference_precision_hint(d.get("format"), d.get("precision")))


def records_of(doc: Optional[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One record per exported file of an ``export.json``: its ``artefacts``, or for a version-1 file without
    them, the records of its one export (:func:`export_records`)."""
    if not isinstance(doc, dict):
        return []
    if isinstance(doc.get("artefacts"), list):
        return [r for r in doc["artefacts"] if isinstance(r, dict)]
    return export_records(doc)


def export_records(doc: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The records of the export ``doc`` describes at its top level, one per format with a file.

    A file is recorded verified only when its own verification passed and the export's status is
    ``verified``: a file of a failed export is never verified.
    """
    results = (doc.get("verification") or {}).get("results") or {}
    sched = doc.get("schedule") if isinstance(doc.get("schedule"), dict) else {}
    status = doc.get("status")
    files = doc.get("files") if isinstance(doc.get("files"), dict) else {}
    out = []
    for fmt, f in files.items():
        if not isinstance(f, dict) or not isinstance(f.get("path"), str):
            continue
        r = results.get(fmt) if isinstance(results.get(fmt), dict) else {}
        exp = (doc.get("exports") or {}).get(fmt) or {}
        verified = bool(r.get("passed")) and status == "verified" and doc.get("verified") is not False
        precision = exp.get("precision", doc.get("precision"))
        out.append({"path": f["path"], "sha256": f.get("sha256"), "weights": f.get("weights"),
                    "weights_sha256": f.get("weights_sha256"), "format": fmt, "precision": precision,
                    "inference_precision_hint": exp.get("inference_precision_hint")
                    or inference_precision_hint(fmt, precision),
                    "schedule": sched.get("counts"), "reducers": sched.get("reducers"),
                    "model_weights_sha256": (doc.get("model") or {}).get("weights_sha256"),
                    "checkpoint_sha256": (doc.get("checkpoint") or {}).get("sha256"),
                    "verified": verified, "status": status,
                    "reason": None if verified else (r.get("reason") or doc.get("reason")),
                    "top1": r.get("top1_exported"), "top1_pytorch": r.get("top1_pytorch"),
                    "created": doc.get("created")})
    return out


def check_files(out_dir: str, rec: "ExportRecord", require_digest: bool = True) -> FileCheck:
    """Whether the files a record names are there with the content it recorded (main file, then its weights);
    ``require_digest=False`` accepts a file whose record has no sha256 (nothing to compare)."""
    if not rec.path:
        return FileCheck(False, "the record names no file")
    for name, digest in ((rec.path, rec.sha256), (rec.weights, rec.weights_sha256)):
        if not name:
            continue
        p = os.path.join(out_dir, name)
        if not os.path.isfile(p):
            return FileCheck(False, f"{name}: missing (deleted or moved after export)")
        if not digest:
            if require_digest:
                return FileCheck(False, f"{name}: export.json records no sha256 for it")
            continue
        if sha256(p) != digest:
            return FileCheck(False, f"{name}: sha256 differs from export.json (modified after export)")
    return PASSED


def sha256(path: str) -> str:
    """The SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_entry(out_dir: str, *paths: str) -> Dict[str, Any]:
    """``export.json``'s record of a file (and its weights file, if any): path relative to ``out_dir``, size, hash."""
    main = paths[0]
    entry: Dict[str, Any] = {"path": os.path.relpath(main, out_dir), "bytes": os.path.getsize(main),
                             "sha256": sha256(main)}
    extra = [p for p in paths[1:] if os.path.exists(p)]
    if extra:
        entry["weights"] = os.path.relpath(extra[0], out_dir)
        entry["weights_bytes"] = os.path.getsize(extra[0])
        entry["weights_sha256"] = sha256(extra[0])
    entry["total_bytes"] = sum(os.path.getsize(p) for p in (main, *extra))
    return entry


def inference_params(model: nn.Module) -> int:
    """Parameters the exported graph needs (Mix-ViT's training-only branch left out)."""
    names = dict(model.named_parameters())
    state = model.inference_state_dict() if hasattr(model, "inference_state_dict") else model.state_dict()
    return int(sum(names[k].numel() for k in state if k in names))


def new_export_doc(model: nn.Module, sched, source: Dict[str, Any], formats: Sequence[str], precision: str,
                   checkpoint: Optional[str]) -> Dict[str, Any]:
    """The ``export.json`` of an export that has not produced anything yet (status ``running``)."""
    from .. import __version__
    from ..machine import cpu_description, library_versions
    from ..models import count_macs, spec_of, weights_digest
    from .onnx import schedule_reducers

    spec = spec_of(model)
    macs_full = count_macs(model, model.full_schedule()).total()
    macs = count_macs(model, sched).total()
    doc: Dict[str, Any] = {
        "format": EXPORT_FORMAT, "version": EXPORT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "verified": False, "status": "running", "reason": None,
        "checkpoint": {"path": checkpoint, "sha256": sha256(checkpoint)} if checkpoint else None,
        "model": {"backbone": spec["backbone"]["name"], "head": spec["head"]["name"],
                  "img_size": spec.get("img_size"), "num_classes": spec.get("num_classes"),
                  "depth": spec.get("depth"), "num_patches": spec.get("num_patches"),
                  "embed_dim": int(spec.get("embed_dim") or 0),
                  "params": int(sum(p.numel() for p in model.parameters())),
                  "inference_params": inference_params(model),
                  "pruned": spec.get("pruned") is not None,
                  "token_drop": spec.get("token_drop"),
                  # the content key of the exported weights: what search.json and bench.json record
                  "weights_sha256": weights_digest(model)},
        "schedule": {"counts": list(sched.counts), "num_patches": int(sched.num_patches),
                     "keep_ratios": [round(r, 6) for r in sched.keep_ratios()], "full": sched.is_full,
                     # each block's reducer as exported ("drop"/"merge"; null where a block keeps its tokens)
                     "reducers": schedule_reducers(model, sched), "source": source},
        "macs": {"full": macs_full, "schedule": macs, "reduction": macs_full / macs if macs else None},
        "formats": list(formats), "precision": precision,
        "input": {"name": "input", "shape": ["batch", 3, *spec["img_size"]], "dtype": "float32",
                  "normalization": spec.get("normalization")},
        "output": {"name": "logits", "shape": ["batch", spec.get("num_classes")]},
        "exporter": None, "files": {}, "exports": {}, "verification": None,
        "versions": {"fgvc_kit": __version__, **library_versions(["nncf"] if precision == "int8" else [])},
    }
    try:
        doc["machine"] = {"cpu": cpu_description()}
    except Exception:  # descriptive only
        pass
    return doc
