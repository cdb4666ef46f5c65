"""The ViTAE model with patch drop in the normal cells of one stage (see the package docstring)."""
from __future__ import annotations

import math
import numbers
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from ...errors import ConfigError, ImageSizeError, ScheduleError
from ...schedules import TokenSchedule
from ..token_drop import ScheduleHolder
from .layers import BasicLayer, GridState, NormalCell, ReductionCell
from .macs import nc_rows, rc_rows


class ViTAE(ScheduleHolder, nn.Module):
    """A ViTAE / ViTAEv2 classifier that takes token schedules (see the module docstring)."""

    #: the scorers its attention computes (``check_scorer`` refuses the others before a run records them)
    scorers = ("tavt",)

    def __init__(self, name: str, cfg: Dict[str, Any], img_size: Tuple[int, int], num_classes: int = 1000,
                 scorer: str = "tavt", drop_stage: Optional[int] = None, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0, in_chans: int = 3):
        super().__init__()
        self.variant = name
        self.version = cfg["version"]
        self.img_size = tuple(img_size)
        self.num_classes = num_classes
        self.scorer = scorer
        self.fuse = False
        self._default_schedule: Optional[TokenSchedule] = None
        stages = len(cfg["downsample"])
        self.total_stride = math.prod(cfg["downsample"])
        nc_depth = list(cfg["NC_depth"])
        total = sum(nc_depth)
        dpr = [drop_path_rate * i / (total - 1) if total > 1 else 0.0 for i in range(max(1, total))]
        layers, hw, chans = [], self.img_size, in_chans
        for s in range(stages):
            rc = ReductionCell(self.version, cfg["rc_types"][s], chans, cfg["embed_dims"][s], cfg["token_dims"][s],
                               cfg["downsample"][s], cfg["kernel_size"][s], cfg["dilations"][s], cfg["RC_heads"][s],
                               cfg["RC_group"][s], hw, drop=drop_rate, attn_drop=attn_drop_rate)
            # the official stochastic-depth slice starts at the previous stage's depth (not the running sum)
            start = 0 if s == 0 else nc_depth[s - 1]
            rates = dpr[start:start + nc_depth[s]] + [dpr[-1]] * nc_depth[s]
            window = cfg["window_size"] if cfg["nc_types"][s] == "window" else 0
            cells = [NormalCell(self.version, cfg["token_dims"][s], cfg["NC_heads"][s], cfg["mlp_ratio"],
                                cfg["NC_group"][s], rc.out_hw, window, True, drop_rate, attn_drop_rate, rates[i])
                     for i in range(nc_depth[s])]
            layers.append(BasicLayer(rc, cells))
            hw, chans = rc.out_hw, cfg["token_dims"][s]
        self.layers = nn.ModuleList(layers)
        self.embed_dim = cfg["token_dims"][-1]
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.global_stages = tuple(s for s in range(stages) if cfg["nc_types"][s] != "window" and nc_depth[s] > 0)
        self.window_stages = tuple(s for s in range(stages) if cfg["nc_types"][s] == "window")
        if not self.global_stages:
            raise ConfigError(f"{name}: no stage has global-attention normal cells (NC_depth={nc_depth})")
        if drop_stage is None:
            drop_stage = self.global_stages[0]
        self.drop_stage = self._check_drop_stage(drop_stage, cfg)
        self.apply(self._init_weights)

    def _check_drop_stage(self, s, cfg) -> int:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or not 0 <= s < len(self.layers):
            raise ConfigError(f"{self.variant}: drop_stage must be a stage index in 0..{len(self.layers) - 1}, "
                              f"got {s!r}")
        s = int(s)
        if cfg["nc_types"][s] == "window":
            raise ConfigError(f"{self.variant}: stage {s} uses window attention, which needs every position; patch "
                              f"drop runs only in the global-attention stages {self._stages_text()}")
        if not len(self.layers[s].NC):
            raise ConfigError(f"{self.variant}: stage {s} has no normal cells to drop tokens in; use stage "
                              f"{self._stages_text()}")
        return s

    def _stages_text(self) -> str:
        return ", ".join(str(s) for s in self.global_stages) or "(none)"

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    # ------------------------------------------------------------ geometry
    @property
    def drop_layer(self) -> BasicLayer:
        return self.layers[self.drop_stage]

    @property
    def depth(self) -> int:
        """Cells the schedule covers: the normal cells of the drop stage."""
        return len(self.drop_layer.NC)

    @property
    def grid_size(self) -> Tuple[int, int]:
        """The token grid of the drop stage."""
        return self.drop_layer.hw

    @property
    def num_patches(self) -> int:
        h, w = self.grid_size
        return h * w

    def geometry(self) -> Dict[str, Any]:
        s = self.total_stride
        return {"img_size": list(self.img_size), "patch_size": [s, s], "depth": self.depth,
                "num_patches": self.num_patches, "num_prefix_tokens": 0, "embed_dim": self.embed_dim,
                "drop_stage": self.drop_stage, "grid_size": list(self.grid_size)}

    def set_fused_attn(self, enable: bool) -> None:
        """Use the fused attention kernel where no scores are needed (False: explicit, e.g. for fvcore)."""
        for m in self.modules():
            if hasattr(m, "fused_attn"):
                m.fused_attn = bool(enable)

    # ------------------------------------------------------------ schedules
    def make_schedule(self, value) -> TokenSchedule:
        """Validate ``value`` (schedule, counts, drop-config path or dict) against the drop stage."""
        try:
            return self.check_reducers(TokenSchedule.coerce(value, self.depth, self.num_patches))
        except ScheduleError as e:
            if not self.window_stages:
                raise
            h, w = self.grid_size
            total = sum(len(layer.NC) for layer in self.layers)
            raise ScheduleError(f"{e}; {self.variant} drops patch tokens only in global-attention stage "
                                f"{self.drop_stage} ({self.depth} normal cells on its {h}x{w} grid), not in its "
                                f"window-attention stages ({total} cells in all)") from None

    def _counts(self, drop) -> Optional[Tuple[int, ...]]:
        if drop is None:
            return None if self._default_schedule is None else self._default_schedule.counts
        return self.make_schedule(drop).counts

    # -------------------------------------------------------------- forward
    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[-2:]) != self.img_size:
            got = "x".join(str(s) for s in x.shape[-2:]) if x.dim() == 4 else f"a {x.dim()}-d tensor"
            raise ImageSizeError(f"{self.variant} was built for {self.img_size[0]}x{self.img_size[1]} images, "
                                 f"got {got}; rebuild with img_size= to change it")

    def forward_tokens(self, x: torch.Tensor, drop=None) -> Tuple[torch.Tensor, Optional[GridState]]:
        """Run every stage; returns the last stage's tokens and the drop state when it dropped there."""
        self._check_input(x)
        counts = self._counts(drop)
        state = None
        for s, layer in enumerate(self.layers):
            x = layer.RC(x)
            if s == self.drop_stage and counts is not None and any(c < self.num_patches for c in counts):
                state = GridState(self.num_patches)
                n = self.num_patches
                for cell, k in zip(layer.NC, counts):
                    x = cell.forward_drop(x, state, k if k < n else None)
                    n = min(n, k)
                if s < len(self.layers) - 1:
                    x, state = state.restore(x), None  # the next reduction cell convolves the whole grid
            else:
                for cell in layer.NC:
                    x = cell(x)
        return x, state

    def forward_features(self, x: torch.Tensor, drop=None, restore: bool = False):
        """Tokens of the last stage (B, n, C): all of them, or the kept ones if that stage dropped.

        With ``restore=True`` also returns the last stage's full grid (B, h*w, C):
        kept tokens' final states, dropped tokens' last states. (The official
        ``forward_features`` returns the mean-pooled vector: ``forward_head(x, pre_logits=True)``.)
        """
        x, state = self.forward_tokens(x, drop)
        if not restore:
            return x
        return x, (x if state is None else state.restore(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=1)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor, drop=None) -> torch.Tensor:
        return self.forward_head(self.forward_features(x, drop))

    # ------------------------------------------------------------------ MACs
    def count_macs_rows(self, schedule: TokenSchedule) -> List[Tuple[str, str, int]]:
        """MACs per image, fvcore's conventions (one multiply-add = 1, LayerNorm 5 (4 without affine) and eval BatchNorm
        2 per element, nothing for softmax/activations/gathers); the convolution branches at full grid size."""
        counts = None if schedule is None or schedule.is_full else schedule.counts
        rows: List[Tuple[str, str, int]] = []
        for s, layer in enumerate(self.layers):
            rows += rc_rows(f"layers.{s}.RC", layer.RC)
            n = layer.hw[0] * layer.hw[1]
            for i, cell in enumerate(layer.NC):
                k = counts[i] if (counts is not None and s == self.drop_stage) else n
                rows += nc_rows(f"layers.{s}.NC.{i}", cell, n, min(k, n))
                n = min(k, n)
        if isinstance(self.head, nn.Linear):
            rows.append(("head", "head", self.head.in_features * self.head.out_features))
        return rows
