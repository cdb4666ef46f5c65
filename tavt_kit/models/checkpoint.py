"""Checkpoints: safetensors weights with the model spec in the metadata.

``save_checkpoint(model, path)`` writes one file that rebuilds the model;
``load_checkpoint(path, **overrides)`` rebuilds it from that file alone, or
imports a foreign file (Google ``.npz``, timm/PyTorch state dicts, the seeds'
ViT-pytorch ``.bin``) by inferring the architecture from its tensors.
Loading never unpickles: safetensors, ``numpy.load(allow_pickle=False)`` and
``torch.load(weights_only=True)`` only.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Sequence

from torch import nn

from ..errors import CheckpointError, ConfigError
from ..files import atomic_path
from .convert import SPEC_KEY, infer_npz_args, infer_vit_args, read_weights
from .factory import SPEC_FORMAT, create_model, spec_of

#: overrides load_checkpoint accepts for an fgvc-kit file
SPEC_OVERRIDES = ("img_size", "scorer", "fuse", "num_classes", "class_names")


def save_checkpoint(model: nn.Module, path, *, class_names: Optional[Sequence[str]] = None,
                    extra: Optional[Dict[str, Any]] = None, inference_only: bool = False) -> str:
    """Write ``model`` to ``path`` (safetensors, spec in the metadata), atomically.

    ``extra`` adds JSON-able entries to the spec (e.g. a search space).
    ``inference_only`` leaves out the weights only training uses (Mix-ViT's
    substitution branch, ``mixvit.*``; see ``model.inference_state_dict()``); the
    spec records it and loading such a file restarts that branch from the backbone.
    """
    from safetensors.torch import save_file

    spec = spec_of(model)
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        if len(class_names) != spec["num_classes"]:
            raise ConfigError(f"class_names has {len(class_names)} names, the model has {spec['num_classes']} classes")
        spec["class_names"] = class_names
    if getattr(model, "schedule", None) is not None:
        sched = model.schedule  # with its reducers where it has them (a drop config then, else the counts)
        spec["schedule"] = sched.to_dict() if sched.reducers else list(sched.counts)
    if extra:
        spec.update(extra)
    state = model.state_dict()
    if inference_only and hasattr(model, "inference_state_dict"):
        state = model.inference_state_dict()
        spec["head"] = dict(spec["head"], inference_only=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    spec["weights_sha256"] = tensors_digest(tensors)  # what resume and reuse are keyed on, not the path
    path = os.fspath(path)
    with atomic_path(path, needed=sum(t.numel() * t.element_size() for t in tensors.values())) as tmp:
        save_file(tensors, tmp, metadata={SPEC_KEY: json.dumps(spec)})
    return path


def tensors_digest(tensors: Dict[str, Any]) -> str:
    """SHA-256 of a state dict's content (names, dtypes, shapes and bytes, in name order)."""
    from ..validate import tensors_digest as digest

    return digest(tensors)


def weights_digest(model: nn.Module) -> str:
    """The content key of a model's weights, computed from its tensors (a recorded one may be stale once the
    model trained in memory); equal to the ``weights_sha256`` its checkpoint's spec records when unchanged."""
    return tensors_digest(model.state_dict())


def read_spec(path, required: bool = True) -> Optional[Dict[str, Any]]:
    """The spec of an fgvc-kit checkpoint, without building the model.

    ``required=False``: ``None`` for any other weight file (not ``.safetensors``,
    or without a spec) instead of an error; an unreadable file is an error either way.
    """
    from safetensors import safe_open

    path = os.fspath(path)
    if not required and (not path.lower().endswith(".safetensors") or not os.path.isfile(path)):
        return None
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    not_weights = not_a_checkpoint(path)
    if not_weights:
        raise CheckpointError(f"{path}: {not_weights}")
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:
        raise CheckpointError(f"{path}: unreadable or truncated safetensors file ({e})") from None
    if SPEC_KEY not in meta:
        if not required:
            return None
        raise CheckpointError(f"{path}: safetensors file without an fgvc-kit model spec")
    try:
        return json.loads(meta[SPEC_KEY])
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: the model spec in the metadata is not valid JSON") from None


def _spec_load(path: str, wf, overrides: Dict[str, Any]) -> nn.Module:
    from .factory import load_pretrained_weights

    spec = wf.spec
    if spec.get("format") != SPEC_FORMAT:
        raise CheckpointError(f"{path}: unknown spec format {spec.get('format')!r}, expected {SPEC_FORMAT!r}")
    from .heads import head_arg_names

    head = spec["head"]
    given_head = overrides.pop("head", None)
    if given_head is not None and given_head != head["name"]:
        raise CheckpointError(f"{path}: checkpoint has head '{head['name']}', head={given_head!r} was given")
    # head arguments that do not change the weights' shapes may be overridden (e.g. FFVT's num_token)
    head_overrides = {k: overrides.pop(k) for k in list(overrides) if k in head_arg_names(head["name"])}
    unknown = set(overrides) - set(SPEC_OVERRIDES)
    if unknown:
        allowed = list(SPEC_OVERRIDES) + ["head"] + list(head_arg_names(head["name"]))
        raise ConfigError(f"load_checkpoint: cannot override {', '.join(sorted(unknown))} of an fgvc-kit "
                          f"checkpoint; allowed: {', '.join(allowed)}")
    n = overrides.pop("num_classes", None)
    if n is not None and n != spec["num_classes"]:
        raise CheckpointError(f"{path}: checkpoint has {spec['num_classes']} classes, num_classes={n} was given")
    kwargs = dict(spec["backbone"]["kwargs"])
    img_size = overrides.pop("img_size", None)
    if img_size is not None:
        kwargs["img_size"] = img_size
    kwargs.update(head.get("args") or {})
    kwargs.update(head_overrides)
    class_names = overrides.pop("class_names", None) or spec.get("class_names")
    td = spec.get("token_drop", {})
    model = create_model(spec["backbone"]["name"], head=head["name"],
                         scorer=overrides.pop("scorer", td.get("scorer", "tavt")),
                         fuse=overrides.pop("fuse", td.get("fuse", False)), class_names=class_names,
                         **({"reducer": td["reducer"], "prop_attn": td.get("prop_attn", True)} if "reducer" in td else {}),
                         **kwargs)
    if spec.get("pruned"):  # structurally pruned: shrink the layers before loading
        from .widths import apply_pruned_shapes

        apply_pruned_shapes(model, spec["pruned"])
        model.spec["pruned"] = spec["pruned"]
    load_pretrained_weights(model, wf, reset_head=False)
    # keep what the file said about where the weights came from
    model.spec["provenance"] = spec.get("provenance", model.spec["provenance"])
    model.spec["normalization"] = spec.get("normalization", model.spec["normalization"])
    for key, value in spec.items():
        if key not in model.spec:
            model.spec[key] = value
    if head.get("inference_only"):
        model.spec["head"]["inference_only"] = True  # its training branch restarted from the backbone
    if spec.get("schedule") is not None:
        model.schedule = spec["schedule"]
    return model


def load_checkpoint(path, **overrides) -> nn.Module:
    """Rebuild a model from one file.

    fgvc-kit checkpoints: overrides ``img_size`` (position embeddings are
    resampled), ``scorer``, ``fuse``, ``class_names``; ``num_classes`` must
    match. Foreign files (``.npz``, timm state dicts, seeds' ViT-pytorch
    ``.bin``): the architecture is inferred from the tensors (heads = width/64
    unless ``num_heads`` is given); any ``create_model`` argument may be passed,
    and ``reset_head=True`` allows a different ``num_classes``. A seeds' FFVT
    checkpoint (``ff_last_layer``) is built with ``head="ffvt"`` (pass
    ``num_token=``, 12 by default; 24 for the Dogs models).

    fgvc-kit checkpoints keep their head; ``head=`` must match it, and head
    arguments that do not change weight shapes may be overridden (``num_token``,
    ``mask_topk``, ``mask_weight``, PIM's ``lambda_*``).
    """
    path = os.fspath(path)
    not_weights = not_a_checkpoint(path)
    if not_weights:
        raise CheckpointError(f"{path}: {not_weights}")
    wf = read_weights(path)
    if wf.kind == "fgvc-kit":
        return _spec_load(path, wf, dict(overrides))
    num_heads = overrides.pop("num_heads", None)
    reset_head = overrides.pop("reset_head", False)
    if getattr(wf, "head", None) == "ffvt":
        # an FFVT checkpoint (ff_last_layer / ff_encoder_norm) only computes what it was trained to as FFVT
        given = overrides.setdefault("head", "ffvt")
        if given != "ffvt":
            raise CheckpointError(f"{path}: an FFVT checkpoint (ff_last_layer, ff_encoder_norm) runs with "
                                  f"head='ffvt', head={given!r} was given")
    if wf.kind == "npz":
        base, kwargs = infer_npz_args(wf.tensors, num_heads, path)
    elif wf.kind == "vitae":
        from .vitae import infer_vitae_args

        base, kwargs = infer_vitae_args(wf.tensors, path)
    else:
        base, kwargs = infer_vit_args(wf.tensors, num_heads, path)
    n = overrides.get("num_classes")
    if n is not None and n != kwargs.get("num_classes") and not reset_head:
        raise CheckpointError(f"{path}: checkpoint has {kwargs.get('num_classes')} classes, num_classes={n} was "
                              "given (pass reset_head=True to fine-tune a new classifier)")
    kwargs.update(overrides)
    return create_model(base, pretrained=wf, **kwargs)  # the file read above, not read again


#: what a checkpoint is, said when a file is not one
CHECKPOINT_KINDS = ("an fgvc-kit .safetensors (fgvc-kit train/distill), a Google .npz, a timm/PyTorch .pth, the seeds' "
                    ".bin, a Hugging Face ViT/DeiT/DINOv2 .safetensors or the .onnx export of one")


def not_a_checkpoint(path) -> Optional[str]:
    """What ``path`` is when it is plainly not a weight file (read from its first bytes, never unpickled):
    an empty file, JSON (an fgvc-kit file named by its format: a search result, a latency table, ...), an
    exported ONNX or OpenVINO model, or binary data no loader knows; None for a file that may be one (a
    safetensors, zip or pickle file: its loader decides, and refuses pickled objects as before)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        return None
    size = os.path.getsize(path)
    if size == 0:
        return f"empty file (0 bytes); expected {CHECKPOINT_KINDS}"
    with open(path, "rb") as f:
        head = f.read(4096)
    lower = path.lower()
    if lower.endswith(".bin") and os.path.isfile(path[:-4] + ".xml") and not head.startswith(b"PK\x03\x04"):
        return (f"the weights of the OpenVINO model {os.path.basename(path[:-4])}.xml (fgvc-kit export's output), "
                f"not a checkpoint; time the model with fgvc-kit bench (exported={path[:-4]}.xml, backend=openvino)")
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # zip (.pth, .npz) or pickle: their loaders decide
        return None
    if len(head) >= 9 and head[8:9] == b"{":  # safetensors: 8-byte header size, then the JSON header
        n = int.from_bytes(head[:8], "little")
        if 0 < n <= size - 8:
            return None
    text = head.lstrip()
    if text.startswith(b"<"):
        if b"<net" in head:
            return ("an OpenVINO model (IR .xml, fgvc-kit export's output), not a checkpoint; time it with "
                    f"fgvc-kit bench (exported={path}, backend=openvino), with the .safetensors it was exported "
                    "from as its checkpoint=")
        return f"an XML/HTML text file, not a checkpoint; expected {CHECKPOINT_KINDS}"
    if text[:1] in (b"{", b"["):
        return _json_not_checkpoint(path)
    if lower.endswith(".onnx") or _looks_onnx(head):
        from .onnx_import import is_onnx_backbone

        if lower.endswith(".onnx") and is_onnx_backbone(path):
            return None  # an exported Hugging Face ViT: its backbone weights import (models/onnx_import.py)
        return ("an ONNX model (fgvc-kit export's output), not a checkpoint; time it with fgvc-kit bench "
                f"(exported={path}, backend=onnxruntime), with the .safetensors it was exported from as its "
                "checkpoint=")
    from ..validate import looks_binary

    if looks_binary(head):
        return f"unrecognised binary data (not safetensors, zip, pickle or .npz); expected {CHECKPOINT_KINDS}"
    return f"a text file, not a checkpoint; expected {CHECKPOINT_KINDS}"


def _json_not_checkpoint(path: str) -> str:
    from ..validate import describe_format

    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError):
        return f"a JSON-like text file, not a checkpoint; expected {CHECKPOINT_KINDS}"
    fmt = doc.get("format") if isinstance(doc, dict) else None
    what = describe_format(fmt)
    if what:
        use = {"fgvc-kit/search": "; give it as search=",
               "fgvc-kit/token-schedule": "; give it as drop=",
               "fgvc-kit/latency-table": "; give it as table= (fgvc-kit search, bench predict)"}
        return f"a JSON file: this is {what}, not a checkpoint{use.get(fmt, '')}"
    return (f"a JSON file{f' (format {fmt!r})' if fmt else ''}, not a checkpoint; expected {CHECKPOINT_KINDS}")


def _looks_onnx(head: bytes) -> bool:
    """An ONNX ModelProto: field 1 (ir_version, varint) first, and a producer or opset the exporters write."""
    return head[:1] == b"\x08" and any(w in head for w in (b"pytorch", b"onnx", b"ai.onnx", b"ir_version"))


def load_model(target, img_size=None) -> nn.Module:
    """A token-drop model from a module (checked), a checkpoint path or a model name (random weights)."""
    if isinstance(target, nn.Module):
        if not hasattr(target, "make_schedule"):
            raise ConfigError(f"expected a token-drop model (tavt_kit.create_model / load_checkpoint), got "
                              f"{type(target).__name__}")
        return target
    target = os.fspath(target)
    if img_size is not None and (isinstance(img_size, bool) or int(img_size) < 1):
        raise ConfigError(f"img_size={img_size!r}: expected a positive image size")
    kw = {"img_size": img_size} if img_size else {}
    if os.path.exists(target):
        return load_checkpoint(target, **kw)
    if os.sep in target or target.endswith((".safetensors", ".pth", ".pt", ".bin", ".npz")):
        raise CheckpointError(f"{target}: checkpoint not found")
    return create_model(target, **kw)


# ------------------------------------------------------------------ the parent of a distilled supernet
def parent_of(model_or_spec) -> Optional[Dict[str, Any]]:
    """The checkpoint a supernet was distilled from, as ``fgvc-kit distill`` recorded it: ``{"path": absolute
    path, "weights_sha256": content key of its weights}``; ``None`` for a model without that record.

    Takes a model or its spec; a checkpoint file's without building the model: ``parent_of(read_spec(path))``."""
    if isinstance(model_or_spec, (str, os.PathLike)):
        raise ConfigError(f"parent_of({os.fspath(model_or_spec)!r}): expected a model or its spec; a checkpoint "
                          "file's: parent_of(read_spec(path))")
    spec = model_or_spec if isinstance(model_or_spec, dict) else (getattr(model_or_spec, "spec", None) or {})
    parent = (spec.get("distillation") or {}).get("parent")
    if not isinstance(parent, dict) or not parent.get("path") or not parent.get("weights_sha256"):
        return None
    return {"path": str(parent["path"]), "weights_sha256": str(parent["weights_sha256"])}


def is_own_model(model) -> bool:
    """Whether a model (or its spec) is a user's trained model rather than a supernet: a checkpoint that records
    training (made by ``fgvc-kit train``) or a foreign source (converted at load time), and neither a distillation
    nor a search space. A search takes such a model as its own reference
    (:func:`tavt_kit.search.parent.resolve_parent`). A model built by :func:`create_model` and never trained or
    loaded records neither: it is not one."""
    spec = model if isinstance(model, dict) else (getattr(model, "spec", None) or {})
    if spec.get("distillation") or spec.get("search_space"):
        return False
    return bool(spec.get("training")) or bool((spec.get("provenance") or {}).get("source"))


def parent_record(path, model: nn.Module) -> Dict[str, str]:
    """The parent record of a distillation that starts from ``model``, loaded from ``path``."""
    return {"path": os.path.abspath(os.fspath(path)), "weights_sha256": weights_digest(model)}


def load_parent(model, path=None) -> nn.Module:
    """The parent of a distilled supernet (a model or its spec), loaded and checked.

    The file is the recorded one unless ``path`` is given (the parent moved); its weights must be the ones
    distillation started from (the recorded ``weights_sha256``), else :class:`CheckpointError`. Returned in
    eval mode.
    """
    rec = parent_of(model)
    if rec is None:
        raise CheckpointError("the model: no parent recorded (expected a supernet made by fgvc-kit distill)")
    file = os.path.abspath(os.fspath(path)) if path is not None else rec["path"]
    if not os.path.isfile(file):
        raise CheckpointError(f"{file}: parent checkpoint not found (pass path= where it is now)")
    parent = load_checkpoint(file)
    digest = weights_digest(parent)
    if digest != rec["weights_sha256"]:
        raise CheckpointError(f"{file}: not the parent the supernet was distilled from (weights sha256 "
                              f"{digest[:12]}, recorded {rec['weights_sha256'][:12]})")
    return parent.eval()
