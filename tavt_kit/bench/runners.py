"""Runners of a whole model at token schedules on one backend: torch eager, compiled or captured as CUDA graphs, ONNX
Runtime, OpenVINO.

A schedule is a :class:`~tavt_kit.schedules.TokenSchedule` (its per-block ``reducers`` included: a
merge and a drop at the same counts are two models) or plain counts (the model's reducer).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn

from ..target import DeploymentTarget, Precision
from .backends import (EXPORTED_BACKENDS, Runner, compile_module, compiled_runner, cudagraph_runner, deployed_module,
                       file_runner, quantized_for_latency, run_compiled_once, torch_dtype_of, torch_runner)
from .identity import model_identity, short_counts
from .kept_exports import exported_once, kept
from .quantize_ahead import QuantizeJob


#: the stem of the files of the model at its full schedule (every reducer: none reduces there)
FULL_NAME = "model_full"


@contextlib.contextmanager
def torch_threads(n: Optional[int]):
    """Run the block with ``n`` intra-op threads (``None``: leave the setting alone)."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


class _AtSchedule(nn.Module):
    """``model(x, drop=schedule)`` as a module of one input (for torch.compile)."""

    def __init__(self, model: nn.Module, schedule):
        super().__init__()
        self.model = model
        self.schedule = schedule

    def forward(self, x):
        return self.model(x, drop=self.schedule)


def schedule_key(schedule) -> tuple:
    """``(counts, reducers)``: what tells two schedules apart (reducers None = the model's)."""
    counts = tuple(schedule.counts if hasattr(schedule, "counts") else schedule)
    return counts, tuple(getattr(schedule, "reducers", None) or ())


def schedule_name(schedule) -> str:
    """A file-name tag of a schedule: counts, a block that merges marked ``m`` (``12m-8-8-5m``)."""
    counts, reducers = schedule_key(schedule)
    if not reducers:
        return "-".join(str(c) for c in counts)
    return "-".join(f"{c}{'m' if r == 'merge' else 'd' if r == 'drop' else ''}" for c, r in zip(counts, reducers))


def input_shape(batch: int, img_size) -> List[int]:
    """The shape of an image batch of ``batch`` images of ``img_size`` (H, W)."""
    return [int(batch), 3, int(img_size[0]), int(img_size[1])]


def make_input(batch: int, img_size, seed: int) -> torch.Tensor:
    """A seeded random image batch (latency does not depend on the pixels)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*input_shape(batch, img_size), generator=g)


class ModelRunners:
    """Builds runners of a model at schedules on one :class:`~tavt_kit.target.DeploymentTarget` (its backend,
    device, threads and precision; the batch is the input's), exports cached per schedule."""

    def __init__(self, model: nn.Module, target: DeploymentTarget, workdir: Optional[str] = None,
                 exporter: str = "auto", compile_backend: str = "inductor",
                 progress: Optional[Callable[[str], None]] = None, verify_exports: bool = True):
        self.model, self.target = model, target
        self.verify_exports = verify_exports
        self.exporter, self.compile_backend = exporter, compile_backend
        self.progress = progress
        self._tmp = None
        if workdir is None and target.backend in EXPORTED_BACKENDS:
            self._tmp = tempfile.TemporaryDirectory(prefix="fgvc-kit-bench-")
            workdir = self._tmp.name
        self.workdir = workdir
        self.exports: Dict[tuple, Dict[str, Any]] = {}
        self._files: Dict[tuple, str] = {}
        self._deployed: Optional[nn.Module] = None

    @property
    def deployed(self) -> nn.Module:
        """The model a torch backend runs: on the target's device, weights at its precision (made once)."""
        if self._deployed is None:
            self._deployed = deployed_module(self.model, self.target)
        return self._deployed

    def close(self) -> None:
        self._deployed = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _say(self, text: str) -> None:
        if self.progress is not None:
            self.progress(text)

    def exported_file(self, schedule) -> str:
        """The exported file of the model at ``schedule`` (counts or a TokenSchedule with its reducers)."""
        from ..export.onnx import export_onnx
        from ..export.openvino import convert_openvino

        key = schedule_key(schedule)
        if key in self._files:
            return self._files[key]
        os.makedirs(self.workdir, exist_ok=True)
        counts = key[0]
        name = FULL_NAME if all(c == self.model.num_patches for c in counts) else "model_" + schedule_name(schedule)
        if len(name) > 120:
            name = f"model_{abs(hash(key)) % 10 ** 10}"
        sched = schedule if hasattr(schedule, "counts") else list(counts)
        onnx, xml = os.path.join(self.workdir, name + ".onnx"), os.path.join(self.workdir, name + ".xml")

        def export() -> dict:
            self._say(f"exporting {short_counts(counts)} to ONNX")
            res = export_onnx(self.model, onnx, sched, batch_size=1, exporter=self.exporter,
                              verify=self.verify_exports)
            made = {"onnx": res.path, "exporter": res.exporter, "export_max_abs_diff": res.max_abs_diff}
            if res.fallback_reason:
                made["exporter_fallback"] = res.fallback_reason
            return made

        info = dict(self._once(onnx, key, "onnx", export))
        path = onnx
        if self.target.backend == "openvino":
            self._once(xml, key, "openvino", lambda: {"openvino_ir": convert_openvino(onnx, xml, verify=False).xml_path})
            path = info["openvino_ir"] = xml
        self.exports[key] = info
        self._files[key] = path
        return path

    def quantized_file(self, schedule, path: str, shape) -> str:
        """The model at ``schedule`` quantised with NNCF (random calibration: for timing only), cached."""
        key = schedule_key(schedule) + ("int8",)
        if key not in self._files:
            out = path.rsplit(".", 1)[0] + ".int8.xml"

            def quantise() -> dict:
                self._say(f"quantising {short_counts(schedule_key(schedule)[0])} (int8)")
                quantized_for_latency(path, out, shape)
                return {}

            self._once(out, schedule_key(schedule), f"int8 {list(shape)}", quantise)
            self._quantized(schedule, out)
        return self._files[key]

    def _quantized(self, schedule, out: str) -> None:
        self._files[schedule_key(schedule) + ("int8",)] = out
        self.exports[schedule_key(schedule)]["int8"] = {"quantized_with": "NNCF PTQ (transformer)",
                                                      "calibration": "random inputs (latency only)"}

    def int8_job(self, schedule, shape) -> Optional[QuantizeJob]:
        """The quantisation :meth:`runner` would make for the model at ``schedule`` on inputs of ``shape`` on an
        int8 OpenVINO target, to be made ahead (:func:`~.quantize_ahead.quantize_ahead`; the model is exported
        now); None where there is none to make (another target, already made or kept)."""
        if self.target.backend != "openvino" or self.target.precision != Precision.INT8 or \
                schedule_key(schedule) + ("int8",) in self._files:
            return None
        path = self.exported_file(schedule)
        out, kind = path.rsplit(".", 1)[0] + ".int8.xml", f"int8 {list(shape)}"
        key = self._key(schedule_key(schedule), kind)
        if key is not None and kept(out, key) is not None:
            return None

        def done() -> None:
            exported_once(out, key, dict)  # made by a worker: kept under its key as if made here
            self._quantized(schedule, out)

        return QuantizeJob(path, out, list(shape), done)

    def _key(self, key: tuple, kind: str) -> Optional[dict]:
        """What a file of the model at schedule ``key`` is kept under (None: a folder of its own, nothing kept)."""
        return None if self._tmp is not None else {"model": model_identity(self.model), "schedule": key,
                                                   "exporter": self.exporter, "kind": kind,
                                                   "verified": self.verify_exports}

    def _once(self, path: str, key: tuple, kind: str, make: Callable[[], dict]) -> dict:
        """``make()``, or the record of ``path`` where it is kept from an earlier profile of this model in the
        folder given (:mod:`.kept_exports`; a folder of its own keeps nothing)."""
        return exported_once(path, self._key(key, kind), make)

    def runner(self, schedule, x: torch.Tensor) -> Runner:
        """A runner of the model at ``schedule`` (counts, or a TokenSchedule with per-block reducers) on ``x``."""
        b = int(x.shape[0])
        drop = schedule if hasattr(schedule, "counts") else tuple(schedule)
        counts = schedule_key(schedule)[0]
        backend, device = self.target.backend, self.target.device
        if backend in ("torch", "torch-cudagraph"):
            model = self.deployed
            xd = x.to(device, torch_dtype_of(self.target))
            if backend == "torch-cudagraph":
                r = cudagraph_runner(lambda: model(xd, drop=drop), device)
            else:
                r = torch_runner(lambda: model(xd, drop=drop), device)
            r.info["precision_used"] = self.target.precision
            return r
        if backend == "torch-compile":
            xd = x.to(device, torch_dtype_of(self.target))
            compiled = compile_module(_AtSchedule(self.deployed, drop), self.compile_backend)
            self._say(f"compiling {short_counts(counts)} (batch {b})")
            with torch.inference_mode():
                run_compiled_once(lambda: compiled(xd))
            r = compiled_runner(lambda: compiled(xd), device)
            r.info.update(compile_backend=self.compile_backend, precision_used=self.target.precision)
            return r
        path = self.exported_file(schedule)
        if backend == "openvino" and self.target.precision == Precision.INT8:
            path = self.quantized_file(schedule, path, list(x.shape))
        r = file_runner(path, x.numpy(), self.target, free_dims={"batch": b})
        r.info.update(self.exports[schedule_key(schedule)])
        return r
