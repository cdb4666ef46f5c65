"""The record of an export: ``export.json`` (files with their hashes, model, schedule, MACs, versions) and its result."""
from __future__ import annotations

import datetime
import hashlib
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence

from torch import nn

EXPORT_FORMAT = "fgvc-kit/export"
EXPORT_FILE = "export.json"


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
        "format": EXPORT_FORMAT, "version": 1,
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
