"""Fast evaluation of many token schedules on the same images.

TAVT evaluates every candidate from the images up. Here the shared work is
done once:

* inputs are decoded and preprocessed once for the whole search (a tensor);
* the patch embedding of every image, and the blocks that no schedule of the
  space drops at (the leading ``shared_blocks``), are computed once and kept
  (within a memory budget) for all generations;
* the candidates of a generation form a prefix tree over their per-block
  counts; each image batch walks the tree depth first, so a block runs once
  per distinct prefix, not once per candidate, and the siblings that drop at
  a block share its attention half (only top-k and the MLP differ);
* images are evaluated in batches.

The arithmetic of each node is exactly the model's own forward at that block,
in the same batch composition, so accuracies are identical to evaluating each
candidate with ``model(x, drop=schedule)`` (fp32, deterministic kernels).
Models whose head reads more than the final tokens (FFVT, PIM) or backbones
other than timm ViTs fall back to one full forward per candidate, still on the
cached inputs.

Besides top-1 hits, every candidate's summed cross-entropy with the labels
(``nll``) and summed KL divergence from the full model's predictions (``kl``,
no labels needed) are collected in the same pass: the search's fitness can be
any of the three (:mod:`tavt_kit.search.fitness`). Each one also gets its standard error as a
difference to the full model on the same images (``accuracy_se``, ``nll_se``, ``kl_se``): the noise a search's
pick carries, which :mod:`tavt_kit.search.shrinkage` corrects for.

Candidates run where the evaluator's ``device`` says (default: where the model is). The images stay in host
memory, decoded once, and each batch is copied to the device as it is needed; a model on another device is
copied there once (:func:`model_on`), so a search keeps its own model on the CPU for export and counting while
a GPU scores its candidates.
"""
from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..errors import ConfigError
from ..schedules.schedule import TokenSchedule
from ..target import is_device_name, is_placed
from ..models.token_drop import TokenState, drop_block_attention, drop_block_mlp
from ..models.token_merge import biased_block_forward, merge_block_forward, size_bias

#: per model, its copies on other devices and the parameters' version counters they were made at
_COPIES: "weakref.WeakKeyDictionary[nn.Module, Dict[str, Tuple[int, nn.Module]]]" = weakref.WeakKeyDictionary()


def evaluation_device(device: Optional[str] = "auto") -> str:
    """Where candidates are evaluated: ``auto`` (CUDA when torch sees a GPU, else the CPU), ``cpu``, ``cuda`` or
    ``cuda:N``; a CUDA device that is not there is a one-line :class:`~tavt_kit.errors.ConfigError`."""
    text = "auto" if device is None else str(device).strip().lower()
    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not is_device_name(text):
        raise ConfigError(f"eval_device={device!r}: expected auto, cpu, cuda or cuda:N")
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"eval_device={device}: torch sees no CUDA GPU here; use cpu or auto")
        if ":" in text and int(text[5:]) >= torch.cuda.device_count():
            raise ConfigError(f"eval_device={device}: there are {torch.cuda.device_count()} CUDA devices")
    return text


def model_on(model: nn.Module, device: Optional[str]) -> nn.Module:
    """``model`` on ``device`` for evaluation: the model itself where it already is there (or ``device`` is None),
    else a copy moved there, made once and made again only after its weights change in place (an optimiser
    step or ``load_state_dict`` bumps the parameters' version counters)."""
    if device is None or is_placed(model, device):
        return model
    version = sum(int(p._version) for p in model.parameters())
    copies = _COPIES.setdefault(model, {})
    known = copies.get(str(device))
    if known is None or known[0] != version:
        known = copies[str(device)] = (version, copy.deepcopy(model).to(device).eval())
    return known[1]


@dataclass
class ScheduleScores:
    """What each schedule scored on the evaluator's images (sums over the images; ``n`` of them)."""

    n: int
    correct: List[int]
    nll: List[float]  # summed cross-entropy with the labels
    kl: List[float]  # summed KL(full model || schedule) of the predicted class distributions
    hits: Optional[torch.Tensor] = None  # (schedules, images) bool, when asked for
    #: per schedule, sums over the images of its per-image difference to the full model and of its square:
    #: (hit, hit², nll, nll², kl²) -- the paired noise of each metric (None: not collected)
    paired: Optional[List[List[float]]] = None
    losses: Optional[torch.Tensor] = None  # (schedules, images) float cross-entropy per image, with ``hits``

    def metrics(self, i: int) -> Dict[str, float]:
        """Means for schedule ``i``: ``accuracy``, ``nll``, ``kl``; with ``paired`` sums, each one's standard
        error as a difference to the full model on these images (``accuracy_se``, ``nll_se``, ``kl_se``)."""
        n = max(self.n, 1)
        out = {"accuracy": self.correct[i] / n, "nll": self.nll[i] / n, "kl": self.kl[i] / n}
        if self.paired is not None:
            dh, dh2, dn, dn2, k2 = self.paired[i]
            for key, s1, s2 in (("accuracy", dh, dh2), ("nll", dn, dn2), ("kl", self.kl[i], k2)):
                out[f"{key}_se"] = max(s2 / n - (s1 / n) ** 2, 0.0) ** 0.5 / n ** 0.5
        return out

    def summed_over_ranks(self, n: int) -> "ScheduleScores":
        """These sums over every rank's shard of ``n`` images (hits per image are only kept on a single process)."""
        from .data import _dist, all_reduce

        paired = self.paired
        if paired:  # the five paired sums of every schedule, in one reduction
            flat = all_reduce([v for row in paired for v in row], torch.float64)
            paired = [flat[5 * i:5 * i + 5] for i in range(len(self.paired))]
        one = _dist()[1] == 1
        return ScheduleScores(n, all_reduce(self.correct), all_reduce(self.nll, torch.float64),
                              all_reduce(self.kl, torch.float64), self.hits if one else None, paired,
                              self.losses if one else None)


@dataclass
class EvalStats:
    block_runs: float = 0  # block forwards executed per image batch (a shared attention half counts 0.5)
    block_runs_naive: int = 0  # what one forward per candidate would have executed
    images: int = 0


def supports_prefix_tree(model: nn.Module) -> bool:
    from ..models.token_drop import TokenDropMixin

    head = (getattr(model, "spec", None) or {}).get("head", {}).get("name", "linear")
    return isinstance(model, TokenDropMixin) and head == "linear" and not getattr(model, "grad_checkpointing", False)


class _Node:
    __slots__ = ("children", "leaves")

    def __init__(self):
        self.children: Dict[Tuple[int, str], "_Node"] = {}  # (count, "merge" where the block merges, else "")
        self.leaves: List[int] = []  # candidate indices ending here


def _build_tree(paths: Sequence[Sequence[Tuple[int, str]]]) -> _Node:
    root = _Node()
    for idx, path in enumerate(paths):
        node = root
        for step in path:
            node = node.children.setdefault(step, _Node())
        node.leaves.append(idx)
    return root


def _paths(schedules: Sequence[TokenSchedule], num_patches: int, default: str, skip: int) -> List[list]:
    """Each schedule as tree steps from block ``skip`` on: (count, "merge" where that block merges, else "")."""
    out = []
    for s in schedules:
        steps, prev = [], num_patches
        for i, c in enumerate(s.counts):
            r = (s.reducers[i] if s.reducers and s.reducers[i] else default) if c < prev else ""
            if i >= skip:
                steps.append((int(c), "merge" if r == "merge" else ""))
            prev = c
        out.append(steps)
    return out


def _child(state: TokenState) -> TokenState:
    """A sibling branch's own copy of the token bookkeeping the arithmetic needs (fused token, sizes)."""
    child = TokenState(state.num_prefix, state.num_patches, False)
    child.has_fused, child.size, child.merged = state.has_fused, state.size, state.merged
    return child


class CandidateEvaluator:
    """Top-1 correct counts of many schedules on a fixed set of preprocessed images.

    Args:
        model: a token-drop model (eval mode is set here).
        images: (N, 3, H, W) decoded, cropped images (uint8 or float).
        labels: (N,) class indices.
        transform: applied to each batch of ``images`` (e.g. :class:`tavt_kit.data.Normalize`).
        batch_size: images per forward.
        embed_cache_bytes: memory allowed for caching patch embeddings across calls.
        autocast: run the candidates at this lower precision (``torch.bfloat16`` / ``torch.float16``, CPU or
            CUDA autocast: matrix products in that type, reductions in fp32), as a deployment at that precision
            would; the full model's reference predictions (for KL) stay fp32.
        reference: an fp32 evaluator on the same images whose full-model predictions this one reuses.
        device: where the candidates run (``cpu``, ``cuda``, ``cuda:N``; None: where ``model`` is); the images stay
            in host memory and go to the device a batch at a time (:func:`model_on` makes the device's copy).
    """

    def __init__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 64,
                 embed_cache_bytes: int = 2 << 30, use_tree: Optional[bool] = None,
                 transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None, shared_blocks: int = 0,
                 autocast: Optional[torch.dtype] = None, reference: Optional["CandidateEvaluator"] = None,
                 device: Optional[str] = None):
        self.model = model_on(model, device).eval()
        self.autocast = autocast
        self._reference_source = reference
        self.shared_blocks = int(shared_blocks)
        self.images = images
        self.transform = transform
        self.labels = labels
        self.batch_size = int(batch_size)
        self.use_tree = supports_prefix_tree(model) if use_tree is None else use_tree
        self.embed_cache_bytes = embed_cache_bytes
        self._embeds: Dict[int, torch.Tensor] = {}
        # full model's (log-probabilities, probabilities) per batch, for KL: computed once, reused every generation
        self._reference: Dict[int, Tuple[torch.Tensor, torch.Tensor]] = {}
        self._embed_bytes = 0
        self.stats = EvalStats()

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def _batches(self):
        n = len(self)
        for start in range(0, n, self.batch_size):
            yield start, min(n, start + self.batch_size)

    def _inputs(self, start: int, end: int) -> torch.Tensor:
        x = self.images[start:end].to(self._device(), non_blocking=True)
        return self.transform(x) if self.transform is not None else x

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _embed(self, start: int, end: int) -> torch.Tensor:
        cached = self._embeds.get(start)
        if cached is not None:
            return cached
        m = self.model
        x = self._inputs(start, end)
        x = m.embed_tokens(x)
        for blk in m.blocks[: self.shared_blocks]:
            x = blk(x)
        size = x.numel() * x.element_size()
        if self._embed_bytes + size <= self.embed_cache_bytes:
            self._embeds[start] = x
            self._embed_bytes += size
        return x

    def _reference_logp(self, start: int, end: int,
                        full_logits: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """The full model's (log-probabilities, probabilities) on a batch, computed once; ``full_logits``: the
        full schedule's logits of this batch where it was just scored at fp32 (the same forward: not run twice)."""
        if self._reference_source is not None:
            return self._reference_source._reference_logp(start, end)
        ref = self._reference.get(start)
        if ref is None:
            if full_logits is None:
                with torch.autocast(self._device_type(), enabled=False):
                    full_logits = self.model(self._inputs(start, end))
            logp = full_logits.float().log_softmax(-1)
            ref = self._reference[start] = (logp, logp.exp())
        return ref

    def _device_type(self) -> str:
        return self._device().type

    def correct(self, schedules: Sequence[TokenSchedule], progress: Optional[Callable[[int], None]] = None
                ) -> List[int]:
        """Number of correctly classified images for each schedule."""
        return self.scores(schedules, progress=progress).correct

    @torch.inference_mode()
    def scores(self, schedules: Sequence[TokenSchedule], progress: Optional[Callable[[int], None]] = None,
               per_image: bool = False) -> ScheduleScores:
        """Hits, summed NLL and summed KL to the full model for each schedule (``per_image``: keep each hit and
        each image's cross-entropy)."""
        if self.autocast is not None:
            with torch.autocast(self._device_type(), dtype=self.autocast):
                return self._scores(schedules, progress, per_image)
        return self._scores(schedules, progress, per_image)

    def _scores(self, schedules: Sequence[TokenSchedule], progress: Optional[Callable[[int], None]],
                per_image: bool) -> ScheduleScores:
        counts = [tuple(s.counts) for s in schedules]
        out = ScheduleScores(len(self), [0] * len(counts), [0.0] * len(counts), [0.0] * len(counts),
                             torch.zeros(len(counts), len(self), dtype=torch.bool) if per_image else None,
                             [[0.0] * 5 for _ in counts],
                             torch.zeros(len(counts), len(self)) if per_image else None)
        if not counts:
            return out
        F = self.shared_blocks
        full = self.model.num_patches
        if F and any(any(n != full for n in c[:F]) for c in counts):
            raise ValueError(f"every schedule must keep the full grid in the first {F} (shared) blocks")
        tree = _build_tree(_paths(schedules, self.model.num_patches, getattr(self.model, "reducer", "drop"), F)) \
            if self.use_tree else None
        # the full schedule's fp32 logits are the full model's: the KL reference of its batch, not computed again
        full_index = next((i for i, c in enumerate(counts) if all(n == full for n in c)), None) \
            if self.autocast is None else None
        for start, end in self._batches():
            y = self.labels[start:end].to(self._device())
            leaves: List[Tuple[torch.Tensor, Sequence[int]]] = []  # (logits, schedule indices) of this batch
            collect = lambda logits, indices: leaves.append((logits, indices))  # noqa: E731
            if tree is not None:
                self._walk(tree, self._embed(start, end), F, self.model.num_patches,
                           TokenState(self.model.num_prefix_tokens, self.model.num_patches, False), collect)
                self.stats.block_runs_naive += len(counts) * self.model.depth
            else:
                x = self._inputs(start, end)
                for i, s in enumerate(schedules):
                    collect(self.model(x, drop=s), [i])
            full_logits = next((lg for lg, idx in leaves if full_index in idx), None)
            ref = self._reference_logp(start, end, full_logits)
            for logits, indices in leaves:
                self._score(out, y, ref, start, logits, indices)
            self.stats.images += end - start
            if progress is not None:
                progress(end - start)
        return out

    @staticmethod
    def _score(out: ScheduleScores, y: torch.Tensor, ref: Tuple[torch.Tensor, torch.Tensor], start: int,
               logits: torch.Tensor, indices: Sequence[int]) -> None:
        ref_logp, ref_p = ref
        logp = logits.float().log_softmax(-1)
        hit = logp.argmax(-1) == y
        hits = int(hit.sum())
        nll_i = -logp.gather(1, y.view(-1, 1)).squeeze(1)
        nll = float(nll_i.sum())
        kl_i = (ref_p * (ref_logp - logp)).sum(-1)
        kl = float(kl_i.sum())
        # per-image differences to the full model (its predictions are the reference): the paired noise
        d_hit = hit.double() - (ref_logp.argmax(-1) == y).double()
        d_nll = (nll_i + ref_logp.gather(1, y.view(-1, 1)).squeeze(1)).double()
        sums = [float(d_hit.sum()), float((d_hit * d_hit).sum()), float(d_nll.sum()), float((d_nll * d_nll).sum()),
                float((kl_i.double() ** 2).sum())]
        for idx in indices:
            out.correct[idx] += hits
            out.nll[idx] += nll
            out.kl[idx] += kl
            if out.paired is not None:
                out.paired[idx] = [a + b for a, b in zip(out.paired[idx], sums)]
            if out.hits is not None:
                out.hits[idx, start:start + len(y)] = hit
            if out.losses is not None:
                out.losses[idx, start:start + len(y)] = nll_i

    def _walk(self, node: _Node, x: torch.Tensor, depth: int, n: int, state: TokenState,
              leaf: Callable[[torch.Tensor, Sequence[int]], None]) -> None:
        m = self.model
        if node.leaves:
            feats = x[:, :-1] if state.has_fused else x
            leaf(m.forward_head(m.norm(feats)), node.leaves)
        # siblings that drop at this block share its attention half (same input, same arithmetic)
        bias = size_bias(state.size) if getattr(m, "prop_attn", True) else None  # after a merge (ToMe)
        dropping = [key for key in node.children if key[0] < n and key[1] != "merge"]
        shared = None
        if len(dropping) > 1:
            shared = drop_block_attention(m.blocks[depth], x, m.scorer, bias)
            self.stats.block_runs += 0.5
        for (count, reducer), child in node.children.items():
            blk = m.blocks[depth]
            if count < n and reducer == "merge":
                child_state = _child(state)
                out = merge_block_forward(blk, x, n - count, child_state, bias)
                self.stats.block_runs += 1
            elif count < n:
                child_state = _child(state)
                xa, scores = shared if shared is not None else drop_block_attention(blk, x, m.scorer, bias)
                out = drop_block_mlp(blk, xa, scores, count, child_state, m.fuse)
                self.stats.block_runs += 0.5 if shared is not None else 1
            else:
                child_state, out = state, (biased_block_forward(blk, x, bias) if bias is not None else blk(x))
                self.stats.block_runs += 1
            self._walk(child, out, depth + 1, count, child_state, leaf)
