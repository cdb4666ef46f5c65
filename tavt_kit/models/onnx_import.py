"""Importing the ViT backbone weights of an ONNX graph exported from a Hugging Face ViT-family model.

Exporters keep the names of parameters the graph uses as they are (norms,
biases, the class token, the patch embedding) but fold a ``Linear``'s weight
into an anonymous, transposed ``onnx::MatMul_*`` initializer, and turn a
position embedding that is resized at run time (DINOv2) into a subgraph. So the
weights are found by walking the graph, not by name order:

* each named bias ``...attention.attention.query.bias`` (and key, value,
  ``attention.output.dense``, ``mlp.fc1``/``fc2``, ``intermediate.dense``,
  ``output.dense``) is added to the output of a ``MatMul`` whose constant
  operand is that layer's weight, stored (in, out);
* the position embedding is whatever the graph adds to the token sequence (the
  ``Concat`` that holds the class token): it is evaluated by ONNX Runtime at the
  graph's own input size, so a resize inside the graph (DINOv2's cubic
  ``Resize`` of its 37x37 grid) is taken exactly as the graph computes it.

Everything else in the graph (a task decoder, say) is ignored. The result is a
state dict in the ``transformers`` layout, converted by :mod:`.hf` as any
Hugging Face checkpoint is; :func:`tavt_kit.models.convert.read_weights` calls
:func:`read_onnx_backbone` for ``.onnx`` files, so ``--checkpoint model.onnx``
works wherever a checkpoint does. :func:`last_hidden_state` names the graph's
backbone output (the final layer norm) for checking an import against the graph.
"""
from __future__ import annotations

import functools
import os
import re
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from ..errors import CheckpointError
from .hf import PATCH_KEY, hf_prefix

#: named biases whose weight is the constant operand of the MatMul they are added to
_LINEAR_BIAS = re.compile(r"encoder\.layer\.\d+\.(attention\.attention\.(query|key|value)|attention\.output\.dense|"
                          r"mlp\.fc[12]|intermediate\.dense|output\.dense)\.bias$")


class _Graph:
    """Producers, consumers and constant initializers of an ONNX graph."""

    def __init__(self, model, path: str):
        from onnx import numpy_helper

        self.model = model
        self.path = path
        g = model.graph
        self.init = {i.name: i for i in g.initializer}
        self.producer = {o: n for n in g.node for o in n.output}
        self.consumers: Dict[str, List] = {}
        for n in g.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self._array = numpy_helper.to_array

    def array(self, name: str) -> np.ndarray:
        return self._array(self.init[name])

    def constant(self, name: str) -> Optional[str]:
        """The initializer behind ``name`` (through Identity nodes), or None."""
        while name not in self.init:
            node = self.producer.get(name)
            if node is None or node.op_type != "Identity":
                return None
            name = node.input[0]
        return name


def _key(path: str) -> Tuple[str, int, int, str]:
    """What identifies a version of a file: its real path, modification time and size (and the name given)."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror or e}); expected an ONNX file") from None
    return os.path.realpath(path), st.st_mtime_ns, st.st_size, path


def _load(path: str):
    """The parsed graph (parsed once per process and file version: a checkpoint load asks several times)."""
    return _parse(*_key(path))


@functools.lru_cache(maxsize=2)
def _parse(real: str, mtime_ns: int, size: int, path: str):
    import onnx

    try:
        return onnx.load(real, load_external_data=True)
    except Exception as e:  # onnx raises DecodeError / ValueError / OSError for broken files
        raise CheckpointError(f"{path}: unreadable ONNX file ({str(e).splitlines()[0][:200]})") from None


def backbone_prefix(model) -> Optional[str]:
    """The prefix of the Hugging Face ViT-family parameters in an ONNX graph (``backbone.``, ``vit.``, ``""``), or
    None when the graph holds no such backbone (an fgvc-kit export, say)."""
    return hf_prefix([i.name for i in model.graph.initializer])


def is_onnx_backbone(path) -> bool:
    """Whether ``path`` is an ONNX graph with importable ViT backbone weights."""
    try:
        return backbone_prefix(_load(os.fspath(path))) is not None
    except CheckpointError:
        return False


def read_onnx_backbone(path) -> Dict[str, torch.Tensor]:
    """The backbone weights of an ONNX graph as a ``transformers``-layout state dict (prefix kept).

    Raises :class:`CheckpointError` naming the file and the tensor when the graph is not such a model or a
    layer's weight cannot be found by the walk.
    """
    return dict(_backbone(_key(os.fspath(path))))


@functools.lru_cache(maxsize=2)
def _backbone(key: Tuple[str, int, int, str]) -> Dict[str, torch.Tensor]:
    """:func:`read_onnx_backbone` of a file version (the walk and the ONNX Runtime run made once)."""
    path, model = key[-1], _parse(*key)
    pre = backbone_prefix(model)
    if pre is None:
        raise CheckpointError(f"{path}: no Hugging Face ViT-family backbone in the graph (no initializer named "
                              f"...{PATCH_KEY}); expected an ONNX export of a ViT, DeiT or DINOv2 model")
    g = _Graph(model, path)
    sd: Dict[str, torch.Tensor] = {}
    for name in g.init:
        if not name.startswith(pre) or name.startswith(pre + "embeddings.position_embeddings"):
            continue
        sd[name] = torch.from_numpy(g.array(name).copy())
        if _LINEAR_BIAS.search(name):
            sd[name[: -len("bias")] + "weight"] = torch.from_numpy(_linear_weight(g, name).copy())
    pos_name = pre + "embeddings.position_embeddings"
    if pos_name in g.init and _added_directly(g, pos_name):
        sd[pos_name] = torch.from_numpy(g.array(pos_name).copy())
    else:
        sd[pos_name] = torch.from_numpy(_position_embedding(g, pre))
    return sd


def _linear_weight(g: _Graph, bias: str) -> np.ndarray:
    """The (out, in) weight of the MatMul that ``bias`` is added to."""
    for node in g.consumers.get(bias, []):
        if node.op_type != "Add":
            continue
        other = node.input[1] if node.input[0] == bias else node.input[0]
        mm = g.producer.get(other)
        if mm is None or mm.op_type not in ("MatMul", "Gemm"):
            continue
        w = g.constant(mm.input[1])
        if w is None:
            continue
        a = g.array(w)
        if mm.op_type == "Gemm" and any(at.name == "transB" and at.i for at in mm.attribute):
            return a
        return a.T
    raise CheckpointError(f"{g.path}: no MatMul with a constant weight feeds the Add of {bias}; expected the "
                          "graph of a Linear layer (MatMul + Add)")


def _added_directly(g: _Graph, name: str) -> bool:
    return any(n.op_type == "Add" for n in g.consumers.get(name, []))


def _embedding_add(g: _Graph, pre: str) -> Tuple[object, str]:
    """The Add that puts the position embedding on the tokens, and its position-embedding input."""
    start = pre + "embeddings.cls_token"
    if start not in g.init:
        raise CheckpointError(f"{g.path}: no {start} initializer; expected a ViT with a class token")
    seen, frontier = set(), [start]
    while frontier:
        name = frontier.pop()
        for node in g.consumers.get(name, []):
            if node.name in seen:
                continue
            seen.add(node.name)
            if node.op_type == "Add":
                other = node.input[1] if node.input[0] == name else node.input[0]
                return node, other
            if node.op_type in ("Expand", "Concat", "Tile", "Reshape", "Cast", "Identity"):
                frontier.extend(node.output)
    raise CheckpointError(f"{g.path}: cannot find where the position embedding is added to the tokens")


def _input_feed(g: _Graph, size: Optional[int]) -> Dict[str, np.ndarray]:
    feeds = {}
    for inp in g.model.graph.input:
        if inp.name in g.init:
            continue
        dims = [d.dim_value if d.dim_value > 0 else None for d in inp.type.tensor_type.shape.dim]
        if len(dims) != 4:
            raise CheckpointError(f"{g.path}: input {inp.name} has {len(dims)} dimensions; expected images "
                                  "(N, C, H, W)")
        h = dims[2] or size or 224
        w = dims[3] or size or 224
        feeds[inp.name] = np.zeros((1, dims[1] or 3, h, w), dtype=np.float32)
    return feeds


def _run(model, outputs: List[str], feeds: Dict[str, np.ndarray], path: str) -> List[np.ndarray]:
    """Values of named tensors of ``model`` (any node output, not only the graph's outputs) in ONNX Runtime."""
    import onnx
    import onnxruntime as ort

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.graph.output[:]
    copy.graph.output.extend(onnx.helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None) for o in outputs)
    try:
        sess = ort.InferenceSession(copy.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(outputs, feeds)
    except Exception as e:  # onnxruntime's own error types
        raise CheckpointError(f"{path}: ONNX Runtime cannot evaluate {', '.join(outputs)} "
                              f"({str(e).splitlines()[0][:200]})") from None


def run_nodes(path, outputs: List[str], images: np.ndarray) -> List[np.ndarray]:
    """Values of named graph tensors on ``images`` (N, C, H, W), run in ONNX Runtime."""
    path = os.fspath(path)
    model = _load(path)
    name = next(i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer})
    return _run(model, outputs, {name: np.ascontiguousarray(images, dtype=np.float32)}, path)


def _position_embedding(g: _Graph, pre: str) -> np.ndarray:
    _, pos = _embedding_add(g, pre)
    (value,) = _run(g.model, [pos], _input_feed(g, None), g.path)
    value = np.asarray(value, dtype=np.float32)
    if value.ndim != 3 or value.shape[0] != 1:
        raise CheckpointError(f"{g.path}: the position embedding evaluates to shape {value.shape}; expected "
                              "(1, tokens, width)")
    return value


def last_hidden_state(path) -> str:
    """The name of the graph tensor that is the backbone's output: the final layer norm, its bias added."""
    model = _load(os.fspath(path))
    pre = backbone_prefix(model)
    if pre is None:
        raise CheckpointError(f"{path}: no Hugging Face ViT-family backbone in the graph")
    g = _Graph(model, os.fspath(path))
    for node in g.consumers.get(pre + "layernorm.bias", []):
        if node.op_type == "Add":
            return node.output[0]
    raise CheckpointError(f"{path}: no Add of {pre}layernorm.bias (the final norm) in the graph")
