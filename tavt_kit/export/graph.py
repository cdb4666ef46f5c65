"""ONNX graph files: metadata, node order, fp16 conversion, and the one-line form of a converter's error."""
from __future__ import annotations

from typing import Mapping

from ..errors import ExportError
from ..files import atomic_path


def first_line(e: BaseException) -> str:
    """An exception as one short line (exporters and converters raise pages)."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200] if text else ''}"


def write_metadata(path: str, metadata: Mapping[str, str]) -> None:
    """Set (add or replace) metadata properties of an ONNX file, in place."""
    import onnx

    model = onnx.load(path, load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    props.update({k: str(v) for k, v in metadata.items()})
    del model.metadata_props[:]
    for k, v in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    with atomic_path(path, ".onnx") as tmp:  # external weights (``.onnx.data``) are named relative to the folder
        onnx.save(model, tmp)


def toposort(graph) -> None:
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


def onnx_fp16(src: str, dst: str) -> None:
    """fp16 weights and compute, fp32 input/output (onnxruntime's converter; ops without fp16 kernels stay fp32)."""
    import onnx

    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError:
        raise ExportError("precision='fp16' for ONNX needs onnxruntime's float16 converter "
                          "(onnxruntime.transformers); pip install onnxruntime") from None
    m = onnx.load(src)
    props = {p.key: p.value for p in m.metadata_props}
    try:
        h = convert_float_to_float16(m, keep_io_types=True, disable_shape_infer=False)
    except Exception as e:
        raise ExportError(f"{src}: fp16 conversion failed ({first_line(e)})") from None
    toposort(h.graph)  # the converter appends the input casts at the end of the node list
    with atomic_path(dst, ".onnx") as tmp:
        onnx.save(h, tmp)
    try:
        onnx.checker.check_model(dst)
    except Exception as e:
        raise ExportError(f"{dst}: the fp16 graph fails onnx.checker ({first_line(e)})") from None
    props["fgvc_kit.precision"] = "fp16"
    write_metadata(dst, props)
