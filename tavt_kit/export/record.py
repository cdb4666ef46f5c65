"""The record of an export: ``export.json`` (files with their hashes, model, schedule, MACs, versions) and its result."""
from __future__ import annotations

import datetime
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from torch import nn

from ..errors import ConfigError
from .verify import Verification

EXPORT_FORMAT = "fgvc-kit/export"
#: the newest export.json version this code reads (and the one it writes)
EXPORT_VERSION = 1
EXPORT_FILE = "export.json"


@dataclass(frozen=True)
class ExportResult:
    """What :func:`~tavt_kit.export.export_model` wrote (or :meth:`load` read): ``doc`` is the content of
    ``export.json``; the properties read it as typed values."""

    out_dir: str
    json_path: str
    doc: Dict[str, Any]

    @classmethod
    def load(cls, path) -> "ExportResult":
        """Read an ``export.json`` (or the folder holding one); refuses another file or a newer version."""
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, EXPORT_FILE)
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except FileNotFoundError:
            raise ConfigError(f"{path}: file not found (expected the export.json of fgvc-kit export)") from None
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path}: not a readable export record ({e})") from None
        if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
            found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
            raise ConfigError(f"{path}: not an export record of fgvc-kit export (format {found!r}, expected "
                              f"{EXPORT_FORMAT!r})")
        version = doc.get("version", 1)
        if not isinstance(version, int) or version > EXPORT_VERSION:
            raise ConfigError(f"{path}: export record version {version!r} is newer than this fgvc-kit reads "
                              f"({EXPORT_VERSION}); upgrade fgvc-kit")
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
    from ..models import count_macs, spec_of
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
                  "token_drop": spec.get("token_drop")},
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
