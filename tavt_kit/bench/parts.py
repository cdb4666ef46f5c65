"""The parts of a model a latency table times: embedding, blocks (plain, dropping, merging, with the size bias), head.

Each part is a module of one tensor input, so that it runs as it is in torch
and exports to ONNX like a whole model (:class:`PartRunners`). A dropping part
keeps ``k`` patch tokens of however many enter it (one export per ``k``, the
token axis dynamic); a merging part merges ``r = n_in - k`` tokens, which the
graph needs static, so every (n_in, k) pair is its own export. Parts that run
after a merge take token sizes derived from their input (``1 + |x[..., 0]|``),
so that the size bias is computed in the graph as the model computes it.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..models.token_drop import TokenState, attention_with_scores, drop_block_forward
from ..models.token_merge import biased_block_forward, merge_block_forward, size_bias
from ..target import TORCH_BACKENDS, DeploymentTarget, Precision
from .backends import (Runner, compile_module, compiled_runner, cudagraph_runner, file_runner, quantized_for_latency,
                       run_compiled_once, torch_dtype_of, torch_runner)
from .kept_exports import exported_once, kept
from .quantize_ahead import QuantizeJob


#: scores closer than this (relative to the largest) at a dropping part's keep boundary are a near tie
NEAR_TIE = 1e-5


def _sizes(x: torch.Tensor) -> torch.Tensor:
    """Token sizes (B, N, 1) >= 1 computed from the input, as a merged model carries them."""
    return 1.0 + x[..., :1].abs()


class EmbedPart(nn.Module):
    """Patch embedding, position embedding and prefix tokens, pre-norm (images -> tokens)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.m = model

    def forward(self, x):
        return self.m.embed_tokens(x)


class PlainPart(nn.Module):
    """A block that keeps every token (timm's own block)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x):
        return self.block(x)


class DropPart(nn.Module):
    """A block that keeps ``keep`` patch tokens (the model's scorer and fuse setting)."""

    def __init__(self, block: nn.Module, keep: int, num_prefix: int, num_patches: int, fused_in: bool, scorer: str,
                 fuse: bool):
        super().__init__()
        self.block = block
        self.keep, self.num_prefix, self.num_patches = keep, num_prefix, num_patches
        self.fused_in, self.scorer, self.fuse = fused_in, scorer, fuse

    def forward(self, x):
        state = TokenState(self.num_prefix, self.num_patches, track=False)
        state.has_fused = self.fused_in
        return drop_block_forward(self.block, x, self.keep, state, self.scorer, self.fuse)

    def near_tie(self, x: torch.Tensor, rel: float = NEAR_TIE) -> bool:
        """Whether the ``keep``-th and the next patch score of ``x`` are closer than ``rel`` of the largest score
        (any row): float rounding may then keep a different token in an exported graph than in torch."""
        n = x.shape[1] - self.num_prefix - int(self.fused_in)
        if n <= self.keep:
            return False
        with torch.no_grad():
            _, s = attention_with_scores(self.block.attn, self.block.norm1(x), self.scorer)
        v = s[:, self.num_prefix:self.num_prefix + n].topk(self.keep + 1, dim=1).values
        return bool(((v[:, -2] - v[:, -1]) <= rel * v.abs().amax(dim=1)).any())

    def all_kept(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` cut to the prefix, ``keep`` patch tokens (and the fused token): an input the part keeps whole."""
        cut = x[:, :self.num_prefix + self.keep]
        return torch.cat([cut, x[:, -1:]], dim=1) if self.fused_in else cut


def verify_inputs(module: nn.Module, example: torch.Tensor) -> List[torch.Tensor]:
    """What a part's export is checked on: the example's first row, or for a dropping part whose scores nearly tie
    at the keep boundary on it, that row cut to the tokens it keeps (a randomly initialised model attends almost
    uniformly, so its scores tie to 1e-7; which of two such tokens is kept is float rounding, not an export error,
    and the latency of a part does not depend on it)."""
    x = example[:1]
    if isinstance(module, DropPart) and module.near_tie(x):
        return [module.all_kept(x)]
    return [x]


class PropPart(nn.Module):
    """A block that keeps every token but attends with the size bias (every block after a merge)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x):
        return biased_block_forward(self.block, x, size_bias(_sizes(x)))


class MergePart(nn.Module):
    """A block that merges ``r`` of its patch tokens (ToMe), with the size bias when ``prop``."""

    def __init__(self, block: nn.Module, r: int, num_prefix: int, num_patches: int, prop: bool):
        super().__init__()
        self.block = block
        self.r, self.num_prefix, self.num_patches, self.prop = r, num_prefix, num_patches, prop

    def forward(self, x):
        state = TokenState(self.num_prefix, self.num_patches, track=False)
        state.size = _sizes(x) if self.prop else None
        if self.r == 0:
            # the fit's diagonal (n_in == n_out): ToMe merges nothing at r = 0, and an exported graph of an empty
            # matching does not compile (OpenVINO) or divides by zero; time the block unmerged
            return biased_block_forward(self.block, x, size_bias(state.size)) if self.prop else self.block(x)
        return merge_block_forward(self.block, x, self.r, state, size_bias(state.size))


class HeadPart(nn.Module):
    """Final norm and head (pooling, classifier); drops the fused token first when there is one."""

    def __init__(self, model: nn.Module, fused: bool):
        super().__init__()
        self.m = model
        self.fused = fused

    def forward(self, x):
        if self.fused:
            x = x[:, :-1]
        return self.m.forward_head(self.m.norm(x))


# ----------------------------------------------------------------- runners
class PartRunners:
    """Runners of model parts on one :class:`~tavt_kit.target.DeploymentTarget` (its backend, device, threads,
    precision and batch size), exported parts cached per part; ``embed_dim``: the width of the tokens."""

    def __init__(self, target: DeploymentTarget, embed_dim: int, workdir: Optional[str] = None,
                 exporter: str = "auto", compile_backend: str = "inductor", progress=None,
                 identity: Optional[dict] = None):
        self.target, self.C = target, int(embed_dim)
        self.workdir, self.exporter, self.compile_backend = workdir, exporter, compile_backend
        #: the model's structure (:func:`~.identity.model_identity`): given, the exported parts are kept in
        #: ``workdir`` for the next table of the same model there (:mod:`.kept_exports`)
        self.identity = identity
        self.progress = progress
        self.files: Dict[str, str] = {}
        self.exporters: Dict[str, str] = {}

    @property
    def batch(self) -> int:
        return self.target.batch_size

    def _say(self, text):
        if self.progress:
            self.progress(text)

    def _export(self, name: str, module: nn.Module, example: torch.Tensor, token_min: Optional[int]) -> str:
        from ..export.onnx import export_module

        if name in self.files:
            return self.files[name]
        path = os.path.join(self.workdir, f"{name}.onnx")

        def export() -> dict:
            self._say(f"exporting part {name}")
            axes = {0: "batch"} if token_min is None else {0: "batch", 1: "tokens"}
            out_axes = {0: "batch"}
            if isinstance(module, (PlainPart, PropPart)):
                out_axes = {0: "batch", 1: "tokens"}
            res = export_module(module, example, path, exporter=self.exporter, input_name="input",
                                output_name="output", dynamic_axes=axes, output_axes=out_axes,
                                dim_min={0: 1, 1: token_min} if token_min is not None else {0: 1},
                                verify_inputs=verify_inputs(module, example))
            return {"exporter": res.exporter}

        info = exported_once(path, self._key(name, list(example.shape), token_min), export)
        self.files[name] = path
        self.exporters[name] = info.get("exporter", self.exporter)
        return path

    def _key(self, name: str, shape, token_min, kind: str = "onnx") -> Optional[dict]:
        """What an exported part is kept under (None: no identity given, nothing kept)."""
        if self.identity is None:
            return None
        return {"model": self.identity, "part": name, "shape": shape, "token_min": token_min,
                "exporter": self.exporter, "kind": kind}

    def runner(self, name: str, module: nn.Module, shape: Sequence[int], token_min: Optional[int] = None,
               export_tokens: Optional[int] = None) -> Runner:
        """Runner of ``module`` on a random input of ``shape``; ``token_min``: dim 1 is a token axis."""
        g = torch.Generator().manual_seed(len(self.files) + 1)
        x = torch.randn(*shape, generator=g)
        backend, device = self.target.backend, self.target.device
        if backend in TORCH_BACKENDS:
            # the part wraps the table model's own block, already at the target's device and precision
            xd = x.to(device, torch_dtype_of(self.target))
            module = module.to(device)
            if backend == "torch-compile":
                compiled = compile_module(module, self.compile_backend)
                with torch.inference_mode():
                    run_compiled_once(lambda: compiled(xd))
                return compiled_runner(lambda: compiled(xd), device)
            if backend == "torch-cudagraph":
                return cudagraph_runner(lambda: module(xd), device)
            return torch_runner(lambda: module(xd), device)
        path, ex_shape = self._exported(name, module, shape, token_min, export_tokens, g)
        free = {"batch": int(shape[0])}
        if token_min is not None:
            free["tokens"] = int(shape[1])
        if backend == "openvino" and self.target.precision == Precision.INT8:
            path = self._quantized(name, path, ex_shape)
        return file_runner(path, x.numpy(), self.target, shape=list(shape), free_dims=free)

    def _exported(self, name: str, module: nn.Module, shape: Sequence[int], token_min: Optional[int],
                  export_tokens: Optional[int], g: torch.Generator) -> Tuple[str, List[int]]:
        """The part's exported file and the shape it was exported at (batch 2; ``export_tokens`` on a token
        axis)."""
        ex_shape = list(shape)
        ex_shape[0] = 2
        if token_min is not None and export_tokens is not None:
            ex_shape[1] = export_tokens
        return self._export(name, module, torch.randn(*ex_shape, generator=g), token_min), ex_shape

    def _int8_path(self, name: str) -> str:
        return os.path.join(self.workdir, f"{name}.int8.xml")

    def _quantized(self, name: str, path: str, shape: Sequence[int]) -> str:
        """The part quantised once (at its export's token count) and reshaped per token count like the f32 one."""
        key = name + ".int8"
        if key not in self.files:
            out = self._int8_path(name)

            def quantise() -> dict:
                self._say(f"quantising part {name} (int8)")
                quantized_for_latency(path, out, shape)
                return {}

            exported_once(out, self._key(name, list(shape), None, "int8"), quantise)
            self.files[key] = out
        return self.files[key]

    def int8_job(self, name: str, module: nn.Module, shape: Sequence[int], token_min: Optional[int] = None,
                 export_tokens: Optional[int] = None) -> Optional[QuantizeJob]:
        """The quantisation :meth:`runner` would make for this part on an int8 OpenVINO target, to be made ahead
        (:func:`~.quantize_ahead.quantize_ahead`; the part is exported now); None where there is none to make
        (another target, already made or kept)."""
        if self.target.backend != "openvino" or self.target.precision != Precision.INT8 or \
                name + ".int8" in self.files:
            return None
        path, ex_shape = self._exported(name, module, shape, token_min, export_tokens,
                                        torch.Generator().manual_seed(len(self.files) + 1))
        out, key = self._int8_path(name), self._key(name, list(ex_shape), None, "int8")
        if key is not None and kept(out, key) is not None:
            return None

        def done() -> None:
            exported_once(out, key, dict)  # made by a worker: kept under its key as if made here
            self.files[name + ".int8"] = out

        return QuantizeJob(path, out, ex_shape, done)


def part_plan(model: nn.Module, grid: List[int], reducers: Sequence[str] = ("drop",)):
    """Keys of every part to time, grouped by the exported file they come from.

    ``drop``: dropping blocks at every pair n_out <= n_in of the grid; ``merge``: merging blocks at
    every pair n_out < n_in (past half of n_in in several bipartite rounds; a pair merging nothing
    would time a plain block) and, with proportional attention, the non-reducing block with the
    size bias.
    """
    P, N = int(model.num_prefix_tokens), int(model.num_patches)
    fuse = bool(model.fuse)
    f = int(fuse)
    groups: Dict[str, List[tuple]] = {"embed": [("embed",)], "plain": [("plain", P + g) for g in grid],
                                      "head": [("head", P + g + f) for g in grid]}
    if fuse:
        groups["head"].append(("head_nodrop", P + N))
    if "drop" in reducers:
        for k in grid:
            groups[f"drop{k}"] = [("drop", P + n + f, P + k + f, n, k) for n in grid if n >= k]
    if "merge" in reducers:
        for n in grid:
            for k in grid:
                if k < n:
                    groups[f"merge{n}_{k}"] = [("merge", P + n, P + k, n, k)]
        if getattr(model, "prop_attn", True):
            groups["prop"] = [("prop", P + g) for g in grid]
    return groups


def make_part(model: nn.Module, key: tuple, pr: PartRunners) -> Runner:
    """The runner of one part key of :func:`part_plan` (at the batch size of ``pr``'s target)."""
    name, module, shape, kw = part_of(model, key, pr)
    return pr.runner(name, module, shape, **kw)


def part_of(model: nn.Module, key: tuple, pr: PartRunners) -> Tuple[str, nn.Module, tuple, dict]:
    """One part key of :func:`part_plan` as :meth:`PartRunners.runner` takes it: its file name, its module, the
    input shape it is timed at (the batch size of ``pr``'s target) and its token axis (``token_min``,
    ``export_tokens``)."""
    batch, C = pr.batch, pr.C
    P, N = int(model.num_prefix_tokens), int(model.num_patches)
    fuse = bool(model.fuse)
    blk = model.blocks[0]
    kind = key[0]
    if kind == "embed":
        H, W = model.patch_embed.img_size
        return "embed", EmbedPart(model), (batch, 3, H, W), {}
    if kind == "plain":
        return "plain", PlainPart(blk), (batch, key[1], C), dict(token_min=1, export_tokens=P + N)
    if kind == "head":
        return "head", HeadPart(model, fuse), (batch, key[1], C), dict(token_min=P + 1 + int(fuse),
                                                                        export_tokens=P + N + int(fuse))
    if kind == "prop":
        return "prop", PropPart(blk), (batch, key[1], C), dict(token_min=1, export_tokens=P + N)
    if kind == "merge":
        _, L_in, L_out, n, k = key
        part = MergePart(blk, n - k, P, N, bool(getattr(model, "prop_attn", True)))
        return f"merge{n}_{k}", part, (batch, L_in, C), {}
    if kind == "head_nodrop":
        return "head_nodrop", HeadPart(model, False), (batch, key[1], C), dict(token_min=P + 1, export_tokens=P + N)
    _, L_in, L_out, n, k = key
    part = DropPart(blk, k, P, N, fuse, model.scorer, fuse)
    return f"drop{k}", part, (batch, L_in, C), dict(token_min=P + k + int(fuse), export_tokens=P + N + int(fuse))


def int8_jobs(model: nn.Module, keys: Sequence[tuple], pr: PartRunners) -> List[QuantizeJob]:
    """The int8 quantisations the parts ``keys`` need on ``pr``'s target, one per exported file (exported now)."""
    jobs: Dict[str, QuantizeJob] = {}
    for key in keys:
        name, module, shape, kw = part_of(model, key, pr)
        if name not in jobs:
            job = pr.int8_job(name, module, shape, **kw)
            if job is not None:
                jobs[name] = job
    return list(jobs.values())
