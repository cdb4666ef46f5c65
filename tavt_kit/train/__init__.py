"""The generic training engine: fine-tuning, evaluation and the loop distillation plugs its step into.

:class:`Trainer` owns data (resumable, distributed sampling), AMP, DDP,
checkpoints, exact resume, progress and JSONL metrics around a pluggable
``step_fn(model, images, labels) -> (loss, metrics)``; :class:`ClassificationStep`
is fine-tuning's step. :func:`evaluate` measures top-1 / top-5 / mean per-class
accuracy at a schedule; :func:`build_model` makes the model a run starts from. :func:`fine_tune` runs a whole
fine-tuning job (:class:`FineTuneSettings` in, :class:`FineTuneResult` out), as ``fgvc-kit train`` does.
"""
from .build import build_model, check_model_fits
from .config import TrainConfig
from .distributed import amp_dtype_for, init_distributed
from .optim import WarmupDecay, build_optimizer, param_groups
from .steps import ClassificationStep
from .trainer import BEST_FILE, LAST_FILE, METRICS_FILE, STATE_FILE, Trainer, TrainResult
from ..files import write_json
from .evaluate import (EvalResult, MetricAccumulator, evaluate, evaluate_batches, evaluate_tensors, logits_of,
                       per_image_hits, plot_confusion)
from .sampler import ResumableBatchSampler, augmentation_seed
from .recipes import DataSettings, FineTuneSettings, OptimSettings
from .run import FineTuneResult, RunResult, fine_tune

__all__ = [
    "BEST_FILE", "ClassificationStep", "DataSettings", "FineTuneResult", "FineTuneSettings", "OptimSettings",
    "RunResult", "fine_tune", "LAST_FILE", "METRICS_FILE", "STATE_FILE", "EvalResult", "MetricAccumulator", "ResumableBatchSampler", "TrainConfig", "TrainResult",
    "Trainer", "WarmupDecay", "amp_dtype_for", "augmentation_seed", "build_model", "build_optimizer",
    "check_model_fits", "evaluate", "evaluate_batches", "evaluate_tensors", "init_distributed", "logits_of",
    "param_groups", "per_image_hits", "plot_confusion", "write_json",
]
