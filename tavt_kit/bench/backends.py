"""Inference backends for measurement: torch eager, torch.compile, torch captured as CUDA graphs, ONNX Runtime,
OpenVINO.

A :class:`Runner` runs one inference on an input prepared once (``runner()``)
and, on CUDA, times it with CUDA events (``runner.timer``). Backends are
imported only when used; a missing one is a one-line
:class:`~tavt_kit.errors.BackendError` that names the package to install.

On CUDA the torch backends also run bf16 and fp16 the way a deployed model does: a copy of the model with its
weights cast to that type, fed inputs of that type (:func:`deployed_module`), not autocast, which would cast every
weight again on every call.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

from ..errors import BackendError, ConfigError
from ..target import BACKENDS, TORCH_BACKENDS, DeploymentTarget, Precision  # noqa: F401  (BACKENDS: re-exported)

#: backends that run an exported file (the model is exported to ONNX first)
EXPORTED_BACKENDS = ("onnxruntime", "openvino")


@dataclass
class Runner:
    """One inference, ready to be called repeatedly."""

    fn: Callable[[], Any]
    timer: Optional[Callable[[], float]] = None  # returns seconds (CUDA events); None = perf_counter around fn
    info: Dict[str, Any] = field(default_factory=dict)
    owns: Any = None  # what must live as long as the runner (a captured CUDA graph and what it reads)

    def __call__(self):
        return self.fn()


def check_target(target: DeploymentTarget) -> None:
    """Raise a one-line error unless ``target`` can be measured here (before any work): its backend installed
    and able to run on its device, and its precision available (bf16 / fp16 need the CPU's native support, else
    OpenVINO would quietly time fp32; int8 needs NNCF; both need OpenVINO: torch and onnxruntime run the fp32
    graph)."""
    backend, kind = target.backend, target.device.split(":", 1)[0]
    if backend == "onnxruntime":
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendError("backend onnxruntime is not installed; pip install onnxruntime "
                               "(onnxruntime-gpu for CUDA)") from None
        if kind == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BackendError("CUDA was requested but this onnxruntime has no CUDAExecutionProvider; "
                               "pip install onnxruntime-gpu, or use device=cpu")
        _require_onnx_export()
    elif backend == "openvino":
        from ..export.openvino import require_openvino

        require_openvino()
        if kind == "cuda":
            raise BackendError("OpenVINO does not run on CUDA devices; use device=cpu "
                               "(or backend=torch / onnxruntime on CUDA)")
        _require_onnx_export()
    elif kind == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise BackendError("CUDA was requested but torch.cuda.is_available() is False "
                               f"(torch {torch.__version__}, no GPU or a CPU-only build); use device=cpu")
    elif backend == "torch-cudagraph":
        raise ConfigError(f"backend=torch-cudagraph captures CUDA graphs; device={target.device} is not a CUDA "
                          "device (use device=cuda, or backend=torch on the CPU)")
    _check_precision(target)


def _check_precision(target: DeploymentTarget) -> None:
    p = target.precision
    if p == Precision.FP32:
        return
    if target.backend in TORCH_BACKENDS:
        _check_torch_precision(target)
        return
    if target.backend != "openvino":
        raise ConfigError(f"precision={p} is only available with backend=openvino, or a torch backend on CUDA "
                          "(onnxruntime runs the fp32 graph)")
    if p == Precision.INT8:
        from ..export.quantize import require_nncf

        require_nncf()
        return
    from ..export.openvino import device_capabilities

    have = device_capabilities(target.device)
    if {Precision.BF16: "BF16", Precision.FP16: "FP16"}[p] not in have:
        raise BackendError(f"precision={p}: this {target.device.upper()} has no native {p} inference (OpenVINO "
                           f"reports {', '.join(have) or 'no capabilities'}); OpenVINO would quietly run fp32")


def _check_torch_precision(target: DeploymentTarget) -> None:
    """bf16 / fp16 with a torch backend: weights cast to that type on a CUDA device that runs it natively."""
    p = target.precision
    if p == Precision.INT8:
        raise ConfigError(f"precision=int8 with backend={target.backend}: int8 is a quantised OpenVINO graph (NNCF); "
                          "use backend=openvino")
    if not target.device.startswith("cuda"):
        raise ConfigError(f"precision={p} with backend={target.backend} runs on CUDA (weights cast to {p}); on "
                          f"device={target.device} use backend=openvino, which runs {p} where the CPU has it")
    import torch

    if p == Precision.BF16 and not torch.cuda.is_bf16_supported():
        raise BackendError(f"precision=bf16: {torch.cuda.get_device_name(target.device)} has no native bf16; "
                           "use precision=fp16")


def torch_dtype_of(target: DeploymentTarget):
    """The dtype a torch backend runs ``target`` in (its weights and inputs): float32, bfloat16 or float16."""
    import torch

    dtype = Precision.torch_dtype(target.precision) if target.backend in TORCH_BACKENDS else None
    return dtype or torch.float32


def deployed_module(model, target: DeploymentTarget):
    """``model`` as a torch backend of ``target`` runs it, in eval mode: the model itself where it is on the
    target's device at its precision, else a copy moved there with its weights cast (bf16 / fp16); the caller's
    model stays where it was, at its own precision."""
    import copy

    from ..target import is_placed

    dtype = torch_dtype_of(target)
    model = model.eval()
    return model if is_placed(model, target.device, dtype) else copy.deepcopy(model).to(target.device, dtype)


def quantized_for_latency(path: str, out_xml: str, input_shape: Sequence[int], seed: int = 0,
                          samples: int = 4) -> str:
    """An int8 copy of an exported model or part, for timing: NNCF post-training quantisation (transformer
    model type) calibrated on seeded random inputs of ``input_shape`` (one sample per batch row of 1: the
    latency of int8 kernels does not depend on the calibration values, nor on bias correction, which is skipped;
    accuracy is checked elsewhere)."""
    import numpy as np

    from ..export.quantize import quantize_openvino

    shape = [int(samples)] + [int(d) for d in list(input_shape)[1:]]
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return quantize_openvino(path, out_xml, x, bias_correction=False).path


def _require_onnx_export() -> None:
    for mod, pkg in (("onnx", "onnx"), ("onnxscript", "onnxscript")):
        try:
            __import__(mod)
        except ImportError:
            raise BackendError(f"exporting to ONNX needs {pkg}; pip install {pkg}") from None


def default_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def with_threads(target: DeploymentTarget) -> DeploymentTarget:
    """``target`` with its thread count resolved (None: torch's count, which every backend is then given)."""
    return target if target.threads is not None else target.with_(threads=default_threads())


# ---------------------------------------------------------------------- torch
def torch_runner(call: Callable[[], Any], device: str) -> Runner:
    """Runner for a torch callable; on CUDA synchronised and timed with CUDA events."""
    import torch

    if not device.startswith("cuda"):
        return Runner(call)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def fn():
        out = call()
        torch.cuda.synchronize()
        return out

    def timer() -> float:
        start.record()
        call()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    return Runner(fn, timer)


def cudagraph_runner(call: Callable[[], Any], device: str) -> Runner:
    """Runner that replays ``call`` captured once as a CUDA graph: one launch per inference instead of one per
    kernel, which is what batch 1 on a GPU is short of. ``call`` must read a fixed input tensor and have static
    shapes (a schedule's token counts are fixed); it is warmed up on a side stream first, as capture requires."""
    import torch

    if not device.startswith("cuda"):
        raise ConfigError(f"backend=torch-cudagraph captures CUDA graphs; device={device} is not a CUDA device")
    with torch.inference_mode():
        side = torch.cuda.Stream(device=device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):  # lazy initialisation (cuBLAS handles, workspaces) must not happen during capture
                call()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                out = call()
        except Exception as e:
            text = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            raise BackendError(f"capturing a CUDA graph failed ({type(e).__name__}: {text}); use backend=torch") \
                from None
    replay = graph.replay

    def run():
        replay()
        return out

    r = torch_runner(run, device)
    r.info = {"captured": "cuda-graph"}
    # the graph reads the memory ``call`` read when captured (its input tensor, the module's weights) and writes
    # its own pool: all must live as long as the runner, or a replay reads memory the allocator gave to others
    # (measured: fp16 logits 60 % off, then an illegal memory access)
    r.owns = (graph, call)
    return r


def compiled_runner(call: Callable[[], Any], device: str) -> Runner:
    """Runner of a ``torch.compile``d callable (compiled already): on CUDA captured once as a CUDA graph, which
    is what ``mode="reduce-overhead"`` does, through the graph runner the CUDA tests cover; elsewhere called as
    it is. Measured on an H200, ViT-B/16 at 448, batch 1, fp16: 0.83 ms compiled and captured, 0.90 ms
    captured eager (``docs/benchmarks/gpu.md``)."""
    if device.startswith("cuda"):
        return cudagraph_runner(call, device)
    return torch_runner(call, device)


def set_compile_limits(n: int) -> None:
    """Let torch.compile keep ``n`` specialisations of one function (one per schedule / token count)."""
    import torch._dynamo

    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit", "accumulated_cache_size_limit"):
        if hasattr(cfg, name):
            setattr(cfg, name, max(int(getattr(cfg, name)), int(n)))


def compile_module(module, compile_backend: str = "inductor", mode: Optional[str] = None):
    """``torch.compile`` with static shapes (each token count its own graph, like an export)."""
    import torch

    try:
        return torch.compile(module, backend=compile_backend, mode=mode, dynamic=False)
    except Exception as e:  # pragma: no cover - depends on the install
        raise BackendError(f"torch.compile is not usable here ({type(e).__name__}: {str(e).splitlines()[0][:200]})") \
            from None


def run_compiled_once(call: Callable[[], Any]) -> None:
    """First call of a compiled callable (compiles); a missing C++ compiler becomes a BackendError."""
    try:
        call()
    except Exception as e:
        text = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise BackendError(f"torch.compile failed ({type(e).__name__}: {text}); inductor on CPU needs a C++ "
                           "compiler (gcc/clang), or use backend=torch") from None


# ------------------------------------------------------------------ onnxruntime
def ort_runner(path: str, inputs, device: str = "cpu", threads: Optional[int] = None,
               free_dims: Optional[Mapping[str, int]] = None) -> Runner:
    """Runner for an ONNX file in ONNX Runtime (outputs copied to the host, so the call is synchronous)."""
    import onnxruntime as ort

    from ..export.onnx import ort_session

    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        idx = device.split(":", 1)[1] if ":" in device else "0"
        providers = [("CUDAExecutionProvider", {"device_id": int(idx)}), "CPUExecutionProvider"]
    sess = ort_session(path, threads=threads, providers=providers, free_dims=free_dims)
    name = sess.get_inputs()[0].name
    feed = {name: inputs}
    run = sess.run
    info = {"providers": sess.get_providers(), "onnxruntime": ort.__version__,
            "precision_used": Precision.FP32}
    return Runner(lambda: run(None, feed), None, info)


# --------------------------------------------------------------------- openvino
def openvino_runner(model_or_path, inputs, threads: Optional[int] = None, precision: str = Precision.FP32,
                    shape: Optional[Sequence[int]] = None) -> Runner:
    """Runner for an OpenVINO IR / ONNX file at ``precision`` (:class:`~tavt_kit.target.Precision`; fp32 unless
    asked otherwise); reports the precision used.

    ``precision="int8"``: the file is a quantised graph, compiled with the f32 hint (int8 kernels where
    quantised, fp32 elsewhere: ``int8+fp32``).
    """
    import openvino as ov

    from ..export.openvino import compile_openvino

    precision = Precision.parse(precision)
    compiled, used = compile_openvino(model_or_path, "cpu", precision=Precision.OPENVINO_HINT[precision],
                                      threads=threads, shape=shape if shape is not None else list(inputs.shape))
    used = Precision.ALIASES.get(used, used)
    if precision == Precision.INT8:
        used = f"int8+{used}"
    req = compiled.create_infer_request()
    req.set_input_tensor(ov.Tensor(inputs))
    info = {"precision_requested": precision, "precision_used": used, "openvino": ov.__version__}
    try:
        info["threads_used"] = int(compiled.get_property("INFERENCE_NUM_THREADS"))
    except Exception:
        pass
    return Runner(req.infer, None, info)


def file_runner(path: str, inputs, target: DeploymentTarget, shape: Optional[Sequence[int]] = None,
                free_dims: Optional[Mapping[str, int]] = None) -> Runner:
    """Runner of an exported file on ``target`` (onnxruntime or openvino; its device, threads and precision) on
    the numpy array ``inputs``; ``shape`` (OpenVINO) / ``free_dims`` (ONNX Runtime) fix the dynamic axes."""
    if target.backend == "onnxruntime":
        return ort_runner(path, inputs, target.device, target.threads, free_dims=free_dims)
    if target.backend == "openvino":
        return openvino_runner(path, inputs, target.threads, target.precision, shape=shape)
    raise ConfigError(f"backend={target.backend}: an exported file runs with onnxruntime or openvino")


def release(runner: Runner) -> None:
    runner.fn = None
    runner.timer = None
    runner.owns = None


def file_kind(path: str) -> Optional[str]:
    low = os.fspath(path).lower()
    if low.endswith(".onnx"):
        return "onnx"
    if low.endswith(".xml"):
        return "openvino"
    return None
