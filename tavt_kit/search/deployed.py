"""Schedules run on the deployed runtime: the held-out and test scores of a (schedule, precision) pair as it ships.

A pair is exported to ONNX and converted to OpenVINO IR (int8: quantised with NNCF on training images, several at
once where the target has the cores, :meth:`DeployedScorer.prepare`), compiled at its precision and run on an image
set; or, where a torch target runs the precision here, the model itself is run with its weights cast.
"""
from __future__ import annotations

import os
import tempfile
import time
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..schedules.schedule import TokenSchedule
from ..target import TORCH_BACKENDS, DeploymentTarget, Precision
from .evaluate import ScheduleScores
from .evolution import gene_of

#: the autocast type of each half precision (held-out scores of bf16 / fp16 candidates in PyTorch)
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _runs_in_torch(target: DeploymentTarget) -> bool:
    """Whether ``target`` deploys the model itself in torch here: a torch backend at fp32, or at bf16 / fp16 on a
    CUDA device that runs it (int8, and half precision on a CPU, deploy through OpenVINO)."""
    from ..bench.backends import check_target
    from ..errors import BackendError, ConfigError

    if target.backend not in TORCH_BACKENDS or target.precision == Precision.INT8:
        return False
    try:
        check_target(target)
    except (BackendError, ConfigError):
        return False
    return True


class DeployedScorer:
    """Schedules run on the deployed runtime: exported to ONNX, converted to OpenVINO IR (int8: quantised with
    NNCF on training images), compiled at the precision, run on an image set; exports cached per pair. Where
    ``targets`` gives a precision a torch target that runs it here (:func:`_runs_in_torch`: fp32, or bf16 / fp16
    on a GPU), the deployed model is the model itself, its weights cast, on that device: no export."""

    def __init__(self, model: nn.Module, transform: Callable[[torch.Tensor], torch.Tensor],
                 calibration: Callable[[], np.ndarray], batch_size: int = 64, threads: Optional[int] = None,
                 targets: Optional[Dict[str, DeploymentTarget]] = None):
        self.model, self.transform, self.batch_size, self.threads = model, transform, int(batch_size), threads
        self.targets = {p: t for p, t in (targets or {}).items() if _runs_in_torch(t)}
        self._calibration_fn, self._calibration = calibration, None
        self._tmp = tempfile.TemporaryDirectory(prefix="fgvc-kit-deployed-")
        self._files: Dict[tuple, str] = {}
        self._modules: Dict[str, nn.Module] = {}
        self._reference: Dict[int, torch.Tensor] = {}
        self._pool = None  # worker processes of prepare(), started on its first use
        self._exported = 0
        self.seconds = 0.0
        self.quantized = 0

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        self._tmp.cleanup()
        self._modules.clear()  # the weights cast and moved to a GPU

    @property
    def workers(self) -> int:
        """How many quantisations :meth:`prepare` runs at once: one per thread of the target (its cores)."""
        from ..bench.quantize_ahead import default_workers

        return int(self.threads or default_workers())

    def prepare(self, scheds: Sequence[TokenSchedule], precision: str = "int8") -> None:
        """The int8 models of ``scheds`` quantised ahead, :attr:`workers` at once in worker processes (NNCF's work
        is mostly single-threaded): the same files :meth:`scores` would make one by one. Other precisions, and
        a precision deployed in torch, have nothing to prepare."""
        from ..bench.quantize_ahead import QuantizeJob, WorkerPool, quantize_ahead

        if precision != "int8" or precision in self.targets or self.workers <= 1:
            return
        jobs: Dict[tuple, QuantizeJob] = {}
        for sched in scheds:
            key = self._key(sched, "int8")
            if key in self._files or key in jobs:
                continue
            stem, onnx = self._onnx(sched)

            def done(key=key, out=stem + ".int8.xml") -> None:
                self._files[key] = out
                self.quantized += 1

            jobs[key] = QuantizeJob(onnx, stem + ".int8.xml", [], done, self.calibration())
        if len(jobs) > 1:
            if self._pool is None:
                self._pool = WorkerPool(self.workers)
            start = time.perf_counter()
            quantize_ahead(list(jobs.values()), self.workers, what="models", pool=self._pool)
            self.seconds += time.perf_counter() - start

    def calibration(self) -> np.ndarray:
        if self._calibration is None:
            self._calibration = self._calibration_fn()
        return self._calibration

    @staticmethod
    def _key(sched: TokenSchedule, precision: str) -> tuple:
        """What a deployed file is cached under: the schedule, and whether it is int8 (other precisions share the
        f32 IR and are set when compiled)."""
        return gene_of(sched), precision == "int8"

    def _onnx(self, sched: TokenSchedule) -> Tuple[str, str]:
        """A new file stem in this scorer's folder and the model's ONNX export at ``sched`` there."""
        from ..export.onnx import export_onnx

        self._exported += 1
        stem = os.path.join(self._tmp.name, f"m{self._exported}")
        return stem, export_onnx(self.model, stem + ".onnx", sched, verify=False).path

    def _file(self, sched: TokenSchedule, precision: str) -> str:
        from ..export.openvino import convert_openvino

        key = self._key(sched, precision)
        if key not in self._files:
            stem, onnx = self._onnx(sched)
            if precision == "int8":
                from ..export.quantize import quantize_openvino

                self._files[key] = quantize_openvino(onnx, stem + ".int8.xml", self.calibration()).path
                self.quantized += 1
            else:
                self._files[key] = convert_openvino(onnx, stem + ".xml", verify=False).xml_path
        return self._files[key]

    def _torch_logits(self, sched: Optional[TokenSchedule], precision: str, images: torch.Tensor) -> torch.Tensor:
        """Logits of the model deployed on the torch target of ``precision`` (the fp32 reference on the fp32
        target where it is a torch one, else on the CPU as given)."""
        from ..bench.backends import deployed_module

        target = self.targets.get(precision)
        if target is None:
            model, device, dtype = self.model, next(self.model.parameters()).device, None
        else:
            if precision not in self._modules:
                self._modules[precision] = deployed_module(self.model, target)
            model, device = self._modules[precision], torch.device(target.device)
            dtype = next(model.parameters()).dtype
        with torch.inference_mode():
            return torch.cat([model(self.transform(images[i:i + self.batch_size]).to(device, dtype), drop=sched)
                              .float().cpu() for i in range(0, len(images), self.batch_size)])

    def _full_logp(self, images: torch.Tensor) -> torch.Tensor:
        key = id(images)
        if key not in self._reference:
            self._reference[key] = self._torch_logits(None, "fp32", images).log_softmax(-1)
        return self._reference[key]

    def scores(self, sched: TokenSchedule, precision: str, images: torch.Tensor, labels: torch.Tensor
               ) -> Tuple[ScheduleScores, str]:
        """Hits and cross-entropy (per image), NLL and KL to the full fp32 model of the deployed pair; and the
        runtime's name."""
        from ..export.verify import ExportedRunner

        start = time.perf_counter()
        if precision in self.targets:  # a torch target deploys the model itself at the precision
            logp = self._torch_logits(sched, precision, images).log_softmax(-1)
            runtime = f"PyTorch {self.targets[precision].backend} on {self.targets[precision].device}, {precision}"
        else:
            runner = ExportedRunner(self._file(sched, precision), threads=self.threads,
                                    precision="fp32" if precision == "int8" else precision)
            logp = torch.cat([torch.from_numpy(np.asarray(runner(self.transform(images[i:i + self.batch_size])
                                                                 .numpy()))).float()
                              for i in range(0, len(images), self.batch_size)]).log_softmax(-1)
            runtime = f"{runner.runtime}, {runner.precision_used}"
        ref = self._full_logp(images)
        hit = logp.argmax(-1) == labels
        nll_i = -logp.gather(1, labels.view(-1, 1)).squeeze(1)
        kl = float((ref.exp() * (ref - logp)).sum())
        self.seconds += time.perf_counter() - start
        return ScheduleScores(len(labels), [int(hit.sum())], [float(nll_i.sum())], [kl], hit.view(1, -1),
                              losses=nll_i.view(1, -1)), runtime
