"""Reading weight files and converting foreign layouts to timm's.

Supported inputs (nothing here unpickles arbitrary objects):

* fgvc-kit ``.safetensors`` (spec in the metadata) and plain timm/HF ``.safetensors``;
* timm / PyTorch ``.pth``/``.pt``/``.bin`` state dicts, loaded with
  ``torch.load(weights_only=True)``; ``state_dict``/``model``/``state_dict_ema``
  wrappers and ``module.`` prefixes are unwrapped;
* the seeds' ViT-pytorch layout (TAVT, FFVT, TransFG ``.bin``), converted by
  :func:`vit_pytorch_to_timm` at load time;
* Google's JAX ``.npz`` ViT weights (``ViT-B_16.npz``), read with
  ``numpy.load(allow_pickle=False)`` and loaded by timm's own npz loader;
* Hugging Face ``transformers`` ViT / DeiT / DINOv2 state dicts
  (``model.safetensors``), converted by :func:`.hf.hf_vit_to_timm` at load time;
* the backbone of an ONNX graph exported from such a model
  (:mod:`.onnx_import`: the weights found by walking the graph).

:func:`infer_vit_args` recovers the architecture (depth, width, heads, patch
and image size, prefix tokens, pooling, classes) from the tensors.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import re
import types
import warnings
import zipfile
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from ..errors import CheckpointError

SPEC_KEY = "fgvc-kit.spec"

WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model", "module", "net")


class WeightFile:
    """Tensors of a checkpoint plus what kind of file it was."""

    def __init__(self, path: str, kind: str, tensors: Dict[str, Any], spec: Optional[dict] = None,
                 head: Optional[str] = None):
        self.path = path
        self.kind = kind  # "fgvc-kit" | "timm" | "vit-pytorch" | "npz" | "vitae" | "hf" | "onnx"
        self.tensors = tensors
        self.spec = spec
        self.head = head  # the head a foreign file was trained with, when its layout says so ("ffvt")


def _unwrap(obj: Any, path: str) -> Dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            for key in WRAPPER_KEYS:
                if isinstance(obj.get(key), dict):
                    obj = obj[key]
                    break
            else:
                break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path}: no state dict found (expected a dict of tensors, "
                              f"optionally under {', '.join(WRAPPER_KEYS[:4])})")
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise CheckpointError(f"{path}: the checkpoint holds no tensors")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def detect_layout(sd: Dict[str, Any]) -> str:
    if any(k.startswith("transformer.embeddings.") or k.startswith("transformer.encoder.") for k in sd):
        return "vit-pytorch"
    if "patch_embed.proj.weight" in sd or any(k.startswith("blocks.") for k in sd):
        return "timm"
    if any(k.startswith("layers.") and (".RC." in k or ".NC." in k) for k in sd):
        return "vitae"
    from .hf import hf_prefix

    if hf_prefix(sd) is not None:
        return "hf"  # transformers' ViT, DeiT, DINOv2  # official ViTAE / ViTAEv2 (layers.{stage}.RC.*, layers.{stage}.NC.{i}.*)
    return "unknown"


def read_weights(path: str) -> WeightFile:
    """Read any supported weight file; raise :class:`CheckpointError` if it is missing or broken."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: is a directory, expected a checkpoint file")
    lower = path.lower()
    if lower.endswith(".onnx"):
        from .hf import hf_vit_to_timm
        from .onnx_import import read_onnx_backbone

        return WeightFile(path, "onnx", hf_vit_to_timm(read_onnx_backbone(path), path))
    if lower.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
            raise CheckpointError(f"{path}: unreadable or truncated .npz file ({e})") from None
        if not any(k.endswith("embedding/kernel") for k in arrays):
            raise CheckpointError(f"{path}: not a ViT .npz (no 'embedding/kernel' array)")
        return WeightFile(path, "npz", arrays)
    if lower.endswith(".safetensors"):
        from safetensors import safe_open

        try:
            with safe_open(path, framework="pt") as f:
                meta = f.metadata() or {}
                sd = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # safetensors raises its own error type for truncated headers
            raise CheckpointError(f"{path}: unreadable or truncated safetensors file ({e})") from None
        if SPEC_KEY in meta:
            try:
                spec = json.loads(meta[SPEC_KEY])
            except json.JSONDecodeError:
                raise CheckpointError(f"{path}: the model spec in the metadata is not valid JSON") from None
            return WeightFile(path, "fgvc-kit", sd, spec)
        sd = _unwrap(sd, path)
    else:
        try:
            # timm-style training checkpoints (the official ViTAE ones) also pickle the run's
            # argparse.Namespace under 'args': a plain attribute bag, read as a SimpleNamespace
            with torch.serialization.safe_globals([(types.SimpleNamespace, "argparse.Namespace")]), \
                    warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch's own warning would precede the one line
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:  # objects weights_only refuses: never retried unsafely
            found = re.search(r"GLOBAL ([\w.]+)", str(e))
            raise CheckpointError(
                f"{path}: holds Python objects{' (' + found.group(1) + ')' if found else ''} that only unpickling "
                "could load, and fgvc-kit never unpickles; save the weights as tensors instead "
                "(torch.save(model.state_dict(), ...) or a .safetensors file)") from None
        except (RuntimeError, EOFError, OSError, ValueError) as e:
            raise CheckpointError(
                f"{path}: unreadable, truncated or unsafe checkpoint ({str(e).splitlines()[0][:200]})") from None
        sd = _unwrap(obj, path)
    layout = detect_layout(sd)
    if layout == "unknown":
        sample = ", ".join(list(sd)[:3])
        raise CheckpointError(f"{path}: unrecognised checkpoint layout (keys like {sample}); expected timm, "
                              "ViT-pytorch (transformer.embeddings.*), Hugging Face ViT/DeiT/DINOv2 "
                              "(embeddings.patch_embeddings.*, encoder.layer.N.*) or an fgvc-kit file")
    if layout == "hf":
        from .hf import hf_vit_to_timm

        return WeightFile(path, "hf", hf_vit_to_timm(sd, path))
    if layout == "vit-pytorch":
        ffvt = any(k.startswith("transformer.encoder.ff_last_layer.") for k in sd)
        sd = vit_pytorch_to_timm(sd, path)
        return WeightFile(path, "vit-pytorch", sd, head="ffvt" if ffvt else None)
    if layout == "vitae":
        return WeightFile(path, "vitae", sd)
    return WeightFile(path, "timm", sd)


# ----------------------------------------------------------------- ViT-pytorch
_VP_BLOCK = {
    "attention_norm": "norm1",
    "ffn_norm": "norm2",
    "ffn.fc1": "mlp.fc1",
    "ffn.fc2": "mlp.fc2",
    "attn.out": "attn.proj",
}


def vit_pytorch_to_timm(sd: Dict[str, torch.Tensor], path: str = "checkpoint") -> Dict[str, torch.Tensor]:
    """Convert the ViT-pytorch layout (TAVT, FFVT, TransFG) to timm's ``VisionTransformer`` keys.

    FFVT's ``ff_last_layer``/``ff_encoder_norm`` and TransFG's
    ``part_layer``/``part_norm`` become the last block and the final norm. For
    FFVT that is exactly the layout of fgvc-kit's ``ffvt`` head (whose fusion
    block is the backbone's last block): :func:`read_weights` marks such files
    (``WeightFile.head == "ffvt"``) and ``load_checkpoint`` builds them with
    ``head="ffvt"``, so they run as FFVT, not as a plain ViT.
    """
    if any("hybrid_model" in k for k in sd):
        raise CheckpointError(f"{path}: hybrid (ResNet+ViT) ViT-pytorch checkpoints are not supported")
    pre = "transformer."
    out: Dict[str, torch.Tensor] = {}
    layer_ids = sorted({int(m.group(1)) for k in sd
                        if (m := re.match(r"transformer\.encoder\.layer\.(\d+)\.", k))})
    n = (max(layer_ids) + 1) if layer_ids else 0
    last_name = None
    for cand in ("ff_last_layer", "part_layer"):
        if any(k.startswith(f"{pre}encoder.{cand}.") for k in sd):
            last_name = cand
    qkv: Dict[Tuple[int, str], Dict[str, torch.Tensor]] = {}
    for key, t in sd.items():
        if key.startswith(pre + "embeddings."):
            rest = key[len(pre + "embeddings."):]
            if rest.startswith("patch_embeddings."):
                out["patch_embed.proj." + rest.split(".", 1)[1]] = t
            elif rest == "position_embeddings":
                out["pos_embed"] = t
            elif rest == "cls_token":
                out["cls_token"] = t
            continue
        m = re.match(r"transformer\.encoder\.(?:layer\.(\d+)|(ff_last_layer|part_layer))\.(.+)$", key)
        if m:
            i = int(m.group(1)) if m.group(1) is not None else n
            rest = m.group(3)
            qm = re.match(r"attn\.(query|key|value)\.(weight|bias)$", rest)
            if qm:
                qkv.setdefault((i, qm.group(2)), {})[qm.group(1)] = t
                continue
            for src, dst in _VP_BLOCK.items():
                if rest.startswith(src + "."):
                    out[f"blocks.{i}.{dst}.{rest[len(src) + 1:]}"] = t
                    break
            continue
        m = re.match(r"transformer\.encoder\.(encoder_norm|ff_encoder_norm|part_norm)\.(weight|bias)$", key)
        if m:
            out[f"norm.{m.group(2)}"] = t
            continue
        if key.startswith("head."):
            out[key] = t
    for (i, kind), parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise CheckpointError(f"{path}: block {i} lacks one of attn.query/key/value.{kind}")
        out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]], 0)
    if "patch_embed.proj.weight" not in out:
        raise CheckpointError(f"{path}: ViT-pytorch checkpoint without transformer.embeddings.patch_embeddings")
    if last_name is None and n == 0:
        raise CheckpointError(f"{path}: ViT-pytorch checkpoint without encoder layers")
    return out


# --------------------------------------------------------------- architecture
def _square(n: int) -> Optional[int]:
    r = math.isqrt(n)
    return r if r * r == n else None


def infer_vit_args(sd: Dict[str, Any], num_heads: Optional[int] = None, path: str = "checkpoint") -> Tuple[str, dict]:
    """Base timm model name and kwargs that rebuild the ViT these timm-layout tensors belong to.

    Heads: from qk-norm weights when present, else ``num_heads`` if given,
    else width / 64 (all ViT/DeiT models use 64-wide heads).
    """
    try:
        w = sd["patch_embed.proj.weight"]
    except KeyError:
        raise CheckpointError(f"{path}: no patch embedding (patch_embed.proj.weight) in the checkpoint") from None
    embed_dim, in_chans, ph, pw = (int(s) for s in w.shape)
    if ph != pw:
        raise CheckpointError(f"{path}: non-square patches {ph}x{pw} are not supported")
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k)))
    hidden = int(sd["blocks.0.mlp.fc1.weight"].shape[0])
    if "blocks.0.attn.q_norm.weight" in sd:
        heads = embed_dim // int(sd["blocks.0.attn.q_norm.weight"].shape[0])
    elif num_heads is not None:
        heads = int(num_heads)
    else:
        heads = max(1, embed_dim // 64)
    if embed_dim % heads:
        raise CheckpointError(f"{path}: width {embed_dim} is not divisible by num_heads={heads}; pass num_heads")
    distilled = "dist_token" in sd
    class_token = "cls_token" in sd
    reg_tokens = int(sd["reg_token"].shape[1]) if "reg_token" in sd else 0
    prefix = int(class_token) + int(distilled) + reg_tokens
    kwargs: Dict[str, Any] = dict(
        patch_size=ph, embed_dim=embed_dim, depth=depth, num_heads=heads,
        mlp_ratio=hidden / embed_dim, qkv_bias="blocks.0.attn.qkv.bias" in sd, in_chans=in_chans,
    )
    if "pos_embed" in sd:
        npos = int(sd["pos_embed"].shape[1])
        grid = _square(npos - prefix)
        if grid is None and _square(npos) is not None:
            grid = _square(npos)
            kwargs["no_embed_class"] = True
        if grid is None:
            raise CheckpointError(f"{path}: position embedding of {npos} tokens is not a square grid "
                                  f"plus {prefix} prefix tokens (overlapping patches are not supported)")
        kwargs["img_size"] = grid * ph
    if not class_token:
        kwargs["class_token"] = False
    if reg_tokens:
        kwargs["reg_tokens"] = reg_tokens
    if "blocks.0.ls1.gamma" in sd:
        kwargs["init_values"] = 1e-5
    if "blocks.0.attn.q_norm.weight" in sd:
        kwargs["qk_norm"] = True
    if "norm_pre.weight" in sd:
        kwargs["pre_norm"] = True
    if any(k.startswith("attn_pool.") for k in sd):
        kwargs["global_pool"] = "map"
    elif "fc_norm.weight" in sd or not class_token:
        kwargs["global_pool"] = "avg"
        kwargs["fc_norm"] = "fc_norm.weight" in sd
    if "head.weight" in sd:
        kwargs["num_classes"] = int(sd["head.weight"].shape[0])
    else:
        kwargs["num_classes"] = 0
    if "blocks.0.attn.proj.bias" not in sd:
        kwargs["proj_bias"] = False
    name = "deit_base_distilled_patch16_224" if distilled else "vit_base_patch16_224"
    return name, kwargs


def infer_npz_args(arrays: Dict[str, np.ndarray], num_heads: Optional[int] = None,
                   path: str = "checkpoint") -> Tuple[str, dict]:
    """Architecture of a Google JAX ViT ``.npz`` (ViT-B_16.npz and friends)."""
    prefix = ""
    for p in ("", "opt/target/", "params/"):
        if f"{p}embedding/kernel" in arrays:
            prefix = p
            break
    kernel = arrays[f"{prefix}embedding/kernel"]
    if kernel.ndim != 4:
        raise CheckpointError(f"{path}: unexpected embedding kernel shape {tuple(kernel.shape)}")
    ph, pw, in_chans, embed_dim = (int(s) for s in kernel.shape)
    blocks = {int(m.group(1)) for k in arrays if (m := re.search(r"encoderblock_(\d+)/", k))}
    if not blocks:
        raise CheckpointError(f"{path}: no Transformer/encoderblock_* arrays (only unstacked JAX ViTs are supported)")
    depth = max(blocks) + 1
    b0 = f"{prefix}Transformer/encoderblock_0/"
    q = arrays.get(b0 + "MultiHeadDotProductAttention_1/query/kernel")
    heads = int(q.shape[1]) if q is not None and q.ndim == 3 else (num_heads or embed_dim // 64)
    hidden = int(arrays[b0 + "MlpBlock_3/Dense_0/kernel"].shape[1])
    class_token = f"{prefix}cls" in arrays
    kwargs: Dict[str, Any] = dict(patch_size=ph, embed_dim=embed_dim, depth=depth, num_heads=heads,
                                  mlp_ratio=hidden / embed_dim, in_chans=in_chans, qkv_bias=True)
    pos = arrays.get(f"{prefix}Transformer/posembed_input/pos_embedding")
    if pos is not None:
        grid = _square(int(pos.shape[1]) - int(class_token))
        if grid is None:
            raise CheckpointError(f"{path}: position embedding of {pos.shape[1]} tokens is not a square grid")
        kwargs["img_size"] = grid * ph
    if not class_token:
        kwargs.update(class_token=False, global_pool="avg")
    head = arrays.get(f"{prefix}head/kernel")
    kwargs["num_classes"] = int(head.shape[-1]) if head is not None else 0
    return "vit_base_patch16_224", kwargs


def mismatch_message(missing, unexpected) -> str:
    """``missing a, b ...; unexpected c`` for a state dict that does not fit a model (at most four names each)."""
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
    if unexpected:
        parts.append(f"unexpected {', '.join(unexpected[:4])}{' ...' if len(unexpected) > 4 else ''}")
    return "; ".join(parts)
