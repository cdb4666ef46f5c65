"""The training state of a run, stored without pickle.

One safetensors file holds every tensor (model weights, optimiser buffers,
RNG states of every rank) and, in its metadata, one JSON document with every
scalar (step, epoch, sampler position, scheduler, grad scaler, best
held-out score, optimiser hyper-parameters, Python RNG). The file is written
to a temporary name and moved into place with ``os.replace``: a run killed
while saving keeps its previous state intact.
"""
from __future__ import annotations

import json
import os
import random
from typing import Any, Dict, List, Tuple

import numpy as np
import torch

from ..errors import CheckpointError
from ..files import atomic_path

STATE_FORMAT = "fgvc-kit/train-state"
STATE_KEY = "fgvc-kit.train_state"


def save_state(path, tensors: Dict[str, torch.Tensor], scalars: Dict[str, Any]) -> str:
    """Write tensors + JSON scalars atomically."""
    from safetensors.torch import save_file

    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    doc = {"format": STATE_FORMAT, "version": 1, **scalars}
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(path, needed=sum(t.numel() * t.element_size() for t in tensors.values())) as tmp:
        save_file(tensors, tmp, metadata={STATE_KEY: json.dumps(doc)})
    return path


def load_state(path) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    from safetensors import SafetensorError, safe_open

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: training state not found")
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable or truncated training state ({e})") from None
    try:
        doc = json.loads(meta[STATE_KEY])
    except (KeyError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: not an fgvc-kit training state (no {STATE_KEY} metadata)") from None
    if doc.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: unknown training-state format {doc.get('format')!r}")
    return tensors, doc


def jsonable(v):
    """Tensors and containers of them as plain JSON values (scheduler and optimiser scalars)."""
    if isinstance(v, torch.Tensor):
        return v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    return v


# ---------------------------------------------------------------- optimiser
def flatten_optimizer(sd: Dict[str, Any], prefix: str = "optim.") -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """``optimizer.state_dict()`` -> (tensors, JSON): buffers go to tensors, the rest to JSON."""
    tensors: Dict[str, torch.Tensor] = {}
    state_json: Dict[str, Dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        entry = {}
        for name, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}{pid}.{name}"] = value
                entry[name] = {"tensor": f"{prefix}{pid}.{name}"}
            else:
                entry[name] = {"value": jsonable(value)}
        state_json[str(pid)] = entry
    return tensors, {"state": state_json, "param_groups": jsonable(sd["param_groups"])}


def unflatten_optimizer(tensors: Dict[str, torch.Tensor], doc: Dict[str, Any]) -> Dict[str, Any]:
    state = {}
    for pid, entry in doc["state"].items():
        st = {}
        for name, v in entry.items():
            st[name] = tensors[v["tensor"]] if "tensor" in v else v["value"]
        state[int(pid)] = st
    groups = []
    for g in doc["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


# ---------------------------------------------------------------------- RNG
def capture_rng() -> Dict[str, Any]:
    """This process's RNG states (torch CPU and CUDA, numpy, Python) as plain data."""
    np_state = np.random.get_state()
    py = random.getstate()
    out = {
        "torch": torch.get_rng_state(),
        "cuda": [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": [py[0], list(py[1]), py[2]],
    }
    return out


def rng_to_state(rngs: List[Dict[str, Any]], prefix: str = "rng.") -> Tuple[Dict[str, torch.Tensor], List[Dict]]:
    """RNG states of every rank -> (tensors, JSON)."""
    tensors, docs = {}, []
    for r, s in enumerate(rngs):
        p = f"{prefix}{r}."
        tensors[p + "torch"] = s["torch"]
        for i, c in enumerate(s["cuda"]):
            tensors[p + f"cuda.{i}"] = c
        tensors[p + "numpy"] = s["numpy"]["keys"]
        docs.append({"cuda": len(s["cuda"]),
                     "numpy": {k: v for k, v in s["numpy"].items() if k != "keys"},
                     "python": s["python"]})
    return tensors, docs


def restore_rng(tensors: Dict[str, torch.Tensor], docs: List[Dict[str, Any]], rank: int,
                prefix: str = "rng.") -> None:
    """Set this process's RNGs to the state saved for ``rank``."""
    d = docs[rank]
    p = f"{prefix}{rank}."
    torch.set_rng_state(tensors[p + "torch"])
    if torch.cuda.is_available() and d["cuda"]:
        states = [tensors[p + f"cuda.{i}"] for i in range(d["cuda"])]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    n = d["numpy"]
    np.random.set_state((n["name"], tensors[p + "numpy"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    py = d["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
