"""Accuracy of a model on a dataset split: top-1, top-5, mean per-class accuracy, confusion matrix.

Works in one process or sharded over a ``torch.distributed`` group (each
rank evaluates every ``world_size``-th image; counts are summed), and on
pre-decoded tensors (:func:`evaluate_tensors`, for the search's cached splits).
"""
from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..files import atomic_path

#: class counts up to which the full confusion matrix is accumulated
CONFUSION_MAX_CLASSES = 1000


def logits_of(output) -> torch.Tensor:
    """A model's logits: heads may return ``(logits, aux_losses)`` (in training mode)."""
    return output[0] if isinstance(output, (tuple, list)) else output


class MetricAccumulator:
    """Running counts for top-1/top-5/per-class accuracy, loss and (for <= 1000 classes) the confusion matrix."""

    def __init__(self, num_classes: int, device=None, confusion: Optional[bool] = None):
        self.num_classes = int(num_classes)
        device = torch.device(device or "cpu")
        if confusion is None:
            confusion = self.num_classes <= CONFUSION_MAX_CLASSES
        self.cm = torch.zeros(self.num_classes, self.num_classes, dtype=torch.long, device=device) if confusion \
            else None
        self.total = torch.zeros(self.num_classes, dtype=torch.long, device=device)
        self.correct = torch.zeros(self.num_classes, dtype=torch.long, device=device)
        self.top5 = torch.zeros((), dtype=torch.long, device=device)
        self.loss = torch.zeros((), dtype=torch.float64, device=device)

    @torch.no_grad()
    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        logits = logits.float()
        labels = labels.to(logits.device).long()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        pred = top[:, 0]
        K = self.num_classes
        self.top5 += (top == labels[:, None]).any(dim=1).sum()
        self.total += torch.bincount(labels, minlength=K)[:K]
        self.correct += torch.bincount(labels[pred == labels], minlength=K)[:K]
        if self.cm is not None:
            self.cm.view(-1).index_add_(0, labels * K + pred, torch.ones_like(labels))
        self.loss += F.cross_entropy(logits, labels, reduction="sum").double()

    def all_reduce(self) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            for t in (self.total, self.correct, self.top5, self.loss) + ((self.cm,) if self.cm is not None else ()):
                dist.all_reduce(t)

    def result(self, class_names: Optional[Sequence[str]] = None, **info) -> "EvalResult":
        total = self.total.cpu().numpy()
        correct = self.correct.cpu().numpy()
        n = int(total.sum())
        present = total > 0
        per_class = np.where(present, correct / np.maximum(total, 1), np.nan)
        return EvalResult(
            n=n, top1=float(correct.sum() / n) if n else float("nan"),
            top5=float(self.top5.item() / n) if n else float("nan"),
            mean_class_acc=float(per_class[present].mean()) if present.any() else float("nan"),
            loss=float(self.loss.item() / n) if n else float("nan"),
            per_class=per_class, support=total, num_classes=self.num_classes,
            class_names=list(class_names) if class_names is not None else None,
            confusion=self.cm.cpu().numpy() if self.cm is not None else None, info=dict(info))


@dataclass
class EvalResult:
    """Accuracy figures (fractions in [0, 1]) and what they were measured on."""

    n: int
    top1: float
    top5: float
    mean_class_acc: float
    loss: float
    per_class: np.ndarray
    support: np.ndarray
    num_classes: int
    class_names: Optional[List[str]] = None
    confusion: Optional[np.ndarray] = None
    info: Dict[str, Any] = field(default_factory=dict)

    def summary(self) -> Dict[str, Any]:
        """top1, top5, mean_class_acc, loss (``None`` when nothing was evaluated) and n."""
        def num(x):
            return None if x != x else float(x)

        return {"top1": num(self.top1), "top5": num(self.top5), "mean_class_acc": num(self.mean_class_acc),
                "loss": num(self.loss), "n": self.n}

    def top_confusions(self, k: int = 20) -> List[Dict[str, Any]]:
        if self.confusion is None:
            return []
        off = self.confusion.copy()
        np.fill_diagonal(off, 0)
        flat = np.argsort(off, axis=None)[::-1][:k]
        names = self.class_names or [str(i) for i in range(self.num_classes)]
        out = []
        for f in flat:
            t, p = divmod(int(f), self.num_classes)
            if off[t, p] == 0:
                break
            out.append({"true": names[t], "predicted": names[p], "count": int(off[t, p])})
        return out

    def to_dict(self) -> Dict[str, Any]:
        names = self.class_names or [str(i) for i in range(self.num_classes)]
        per_class = [{"class": names[i], "accuracy": None if np.isnan(self.per_class[i]) else float(self.per_class[i]),
                      "support": int(self.support[i])} for i in range(self.num_classes)]
        return {**self.info, **self.summary(), "num_classes": self.num_classes, "per_class": per_class,
                "top_confusions": self.top_confusions()}


def _amp_context(device: torch.device, amp_dtype: Optional[torch.dtype]):
    if amp_dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


@torch.no_grad()
def evaluate_batches(model, batches: Iterable, num_classes: int, *, normalize=None, drop=None, device=None,
                     amp_dtype: Optional[torch.dtype] = None, class_names=None, reduce: bool = True,
                     **info) -> EvalResult:
    """Evaluate on ``(uint8 or float images, labels)`` batches; sums over the process group when ``reduce``."""
    device = torch.device(device or next(model.parameters()).device)
    if normalize is not None:
        normalize = normalize.to(device)
    was_training = model.training
    model.eval()
    acc = MetricAccumulator(num_classes, device)
    try:
        for images, labels in batches:
            images = images.to(device, non_blocking=True)
            if normalize is not None:
                images = normalize(images)
            with _amp_context(device, amp_dtype):
                out = model(images) if drop is None else model(images, drop=drop)
            acc.update(logits_of(out), labels.to(device))
    finally:
        model.train(was_training)
    if reduce:
        acc.all_reduce()
    return acc.result(class_names, **info)


def evaluate(model, dataset, *, drop=None, batch_size: int = 64, num_workers: Optional[int] = None, device=None,
             amp_dtype: Optional[torch.dtype] = None, normalize=None, distributed: Optional[bool] = None
             ) -> EvalResult:
    """Accuracy of ``model`` on a dataset split built by :func:`tavt_kit.data.build_dataset`.

    ``drop`` is a schedule for the model (default: its own ``schedule``). In a
    ``torch.distributed`` group each rank evaluates its shard and the counts
    are summed (``distributed=False`` evaluates everything on this process).
    """
    import torch.distributed as dist

    from ..data import Normalize, make_eval_loader

    if normalize is None:
        normalize = Normalize.from_model(model)
    rank, world = 0, 1
    if distributed is not False and dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(device or next(model.parameters()).device)
    loader = make_eval_loader(dataset, batch_size, num_workers, rank, world, pin_memory=device.type == "cuda")
    schedule = None
    if drop is not None:
        schedule = model.make_schedule(drop)
    elif getattr(model, "schedule", None) is not None:
        schedule = model.schedule
    info = {"dataset": dataset.name, "split": dataset.split,
            "schedule": list(schedule.counts) if schedule is not None else None}
    return evaluate_batches(model, loader, dataset.num_classes, normalize=normalize, drop=schedule, device=device,
                            amp_dtype=amp_dtype, class_names=dataset.class_names, reduce=world > 1, **info)


@torch.no_grad()
def per_image_hits(model, batches: Iterable, *, drop=None, normalize=None, device=None) -> torch.Tensor:
    """Whether ``model`` (at ``drop``; None: its own schedule) gets each image right, in the order of ``batches``
    (``(uint8 or float images, labels)``; e.g. :func:`tavt_kit.data.make_eval_loader`): what a paired comparison
    (:func:`tavt_kit.stats.paired_difference`) takes. ``normalize``: default the model's."""
    from ..data import Normalize

    device = torch.device(device or next(model.parameters()).device)
    normalize = (normalize if normalize is not None else Normalize.from_model(model)).to(device)
    was_training = model.training
    model.eval()
    hits = []
    try:
        for images, labels in batches:
            x = normalize(images.to(device, non_blocking=True))
            out = model(x) if drop is None else model(x, drop=drop)
            hits.append((logits_of(out).argmax(1) == labels.to(device)).cpu())
    finally:
        model.train(was_training)
    return torch.cat(hits) if hits else torch.zeros(0, dtype=torch.bool)


def evaluate_tensors(model, images: torch.Tensor, labels: torch.Tensor, *, num_classes: Optional[int] = None,
                     drop=None, batch_size: int = 64, device=None, normalize=None,
                     amp_dtype: Optional[torch.dtype] = None, class_names=None) -> EvalResult:
    """Accuracy on pre-decoded uint8 images (:func:`tavt_kit.data.cached_tensors`)."""
    from ..data import Normalize

    if normalize is None:
        normalize = Normalize.from_model(model)
    if num_classes is None:
        num_classes = int(getattr(model, "num_classes", 0)) or int(labels.max()) + 1
    batches = ((images[i:i + batch_size], labels[i:i + batch_size]) for i in range(0, len(images), batch_size))
    return evaluate_batches(model, batches, num_classes, normalize=normalize, drop=drop, device=device,
                            amp_dtype=amp_dtype, class_names=class_names, reduce=False)


# ------------------------------------------------------------------- outputs
def plot_confusion(result: EvalResult, path, max_classes: int = 300, coarse: int = 50, title: str = "") -> Optional[str]:
    """Write the row-normalised confusion matrix as a PNG (matplotlib, Agg; no pyplot state).

    Up to ``max_classes`` classes the whole matrix is drawn; beyond, the
    ``coarse`` classes with the most errors (as true or predicted class).
    Returns the path, or ``None`` when no confusion matrix was accumulated.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if result.confusion is None:
        return None
    cm = result.confusion.astype(np.float64)
    names = result.class_names or [str(i) for i in range(result.num_classes)]
    K = cm.shape[0]
    idx = np.arange(K)
    note = ""
    if K > max_classes:
        off = cm.copy()
        np.fill_diagonal(off, 0)
        errors = off.sum(0) + off.sum(1)
        idx = np.sort(np.argsort(-errors, kind="stable")[:coarse])
        note = f" ({len(idx)} most-confused of {K} classes)"
    sub = cm[np.ix_(idx, idx)]
    rows = cm[idx].sum(1, keepdims=True)
    norm = np.divide(sub, rows, out=np.zeros_like(sub), where=rows > 0)
    n = len(idx)
    size = min(24.0, max(5.0, 0.18 * n + 3.0))
    fig = Figure(figsize=(size + 1.2, size))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if n <= 60:
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
        fs = 8 if n <= 30 else 5
        ax.set_xticklabels([names[i][:24] for i in idx], rotation=90, fontsize=fs)
        ax.set_yticklabels([names[i][:24] for i in idx], fontsize=fs)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if sub[i, j]:
                    ax.text(j, i, str(int(sub[i, j])), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title((title or "confusion matrix") + note + f"\ntop-1 {result.top1:.2%}, n = {result.n}", fontsize=10)
    fig.tight_layout()
    path = os.fspath(path)
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=100)
    return path
