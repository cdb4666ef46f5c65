"""Publishing a staged export into its folder: whole files moved into place, ``export.json`` describing them all.

An export is built in a staging folder beside ``--out``; only a finished one
(verified, unverified on request, or failed verification) is moved in, so a
kill never leaves a new graph beside an old record. ``export.json`` keeps, in
``artefacts``, one record per file in the folder (path, sha256, format,
precision, schedule counts and reducers, the model's weights hash, verified;
:class:`~tavt_kit.export.record.ExportRecord`); the top level describes the
latest export. A record whose file is gone or changed is dropped at the next
publish (:func:`~tavt_kit.export.record.check_files`).
A failed verification never replaces a verified file: it goes to
``rejected/`` instead.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import Any, Dict, List, Optional, Sequence

from ..files import write_json
from .record import EXPORT_FILE, ExportRecord, check_files, export_records, records_of

REJECTED_DIR = "rejected"
#: each precision's file stem (``.onnx``, ``.xml`` + ``.bin`` follow): a name says what the file holds. bf16
#: is not a weight format of the IR (``openvino.save_model`` stores f32, or f16 when compressing): the bf16
#: export is the f32 IR that OpenVINO computes in bf16 when compiled with INFERENCE_PRECISION_HINT=bf16, and
#: is named for both (earlier versions named it ``model.bf16.xml``; their records still read).
FILE_STEMS = {"fp32": "model", "fp16": "model.fp16", "bf16": "model.f32-weights.bf16-hint", "int8": "model.int8"}


def read_record(out_dir: str) -> Optional[Dict[str, Any]]:
    """The folder's ``export.json`` (None when there is none or it is unreadable: it is rebuilt)."""
    path = os.path.join(out_dir, EXPORT_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def artefacts_of(doc: Optional[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One record per exported file of an ``export.json`` (older files without ``artefacts`` included)."""
    return [r for r in records_of(doc) if isinstance(r.get("path"), str)]


def choose_base(out_dir: str, precision: str, counts: Sequence[int]) -> str:
    """The file stem of a new export: ``model``, ``model.fp16``, ``model.int8`` or, for bf16,
    ``model.f32-weights.bf16-hint`` (:data:`FILE_STEMS`), unless the folder already holds an artefact of that
    name for another schedule; then a stem tagged with this schedule, so both stay."""
    base = FILE_STEMS.get(precision) or f"model.{precision}"
    for rec in artefacts_of(read_record(out_dir)):
        stem = os.path.splitext(rec["path"])[0]
        if stem == base and list(rec.get("schedule") or []) != list(counts):
            return f"{base}.s{hashlib.sha1(','.join(map(str, counts)).encode()).hexdigest()[:8]}"
    return base


def _present(out_dir: str, rec: Dict[str, Any]) -> bool:
    """Whether a record still describes a file beside it (same content)."""
    return check_files(out_dir, ExportRecord.from_dict(rec), require_digest=False).ok


def publish(stage: str, out_dir: str, doc: Dict[str, Any]) -> Dict[str, Any]:
    """Move the staged files into ``out_dir`` and write its ``export.json``; returns the record written."""
    os.makedirs(out_dir, exist_ok=True)
    old = [r for r in artefacts_of(read_record(out_dir)) if _present(out_dir, r)]
    verified_paths = {r["path"] for r in old if r.get("verified")}
    passed = doc.get("status") in ("verified", "unverified")
    for fmt, f in (doc.get("files") or {}).items():
        dest_dir = out_dir
        if not passed and f["path"] in verified_paths:  # never replace a verified file with a failed one
            dest_dir = os.path.join(out_dir, REJECTED_DIR)
            os.makedirs(dest_dir, exist_ok=True)
            f["path"] = os.path.join(REJECTED_DIR, f["path"])
            if f.get("weights"):
                f["weights"] = os.path.join(REJECTED_DIR, f["weights"])
        for key in ("weights", "path"):  # weights first: an .xml never points at a missing .bin
            if f.get(key):
                os.replace(os.path.join(stage, os.path.basename(f[key])), os.path.join(out_dir, f[key]))
        doc.get("exports", {}).get(fmt, {})["path"] = f["path"]
    new = export_records(doc)
    paths = {r["path"] for r in new} | {r["weights"] for r in new if r.get("weights")}
    doc["artefacts"] = [r for r in old if r["path"] not in paths] + new
    write_json(doc, os.path.join(out_dir, EXPORT_FILE))
    return doc


def record_failed_attempt(out_dir: str, doc: Dict[str, Any], extra_keys: Sequence[str] = ()) -> None:
    """An export that stopped before it had files: say so in ``export.json`` without touching what is there.

    With no record yet, ``doc`` becomes it; otherwise the attempt (its time, precision, formats, schedule, reason
    and ``extra_keys``) is appended to the record's ``failed_attempts``."""
    os.makedirs(out_dir, exist_ok=True)
    existing = read_record(out_dir)
    if existing is None:
        doc["artefacts"] = []
        write_json(doc, os.path.join(out_dir, EXPORT_FILE))
        return
    existing.setdefault("failed_attempts", []).append(
        {k: doc.get(k) for k in ("created", "precision", "formats", "schedule", "reason", *extra_keys)})
    write_json(existing, os.path.join(out_dir, EXPORT_FILE))


def clean_stage(stage: str) -> None:
    shutil.rmtree(stage, ignore_errors=True)
