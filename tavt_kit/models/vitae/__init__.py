"""ViTAE and ViTAEv2 backbones with patch drop, in the official checkpoint layout.

The models are re-statements of the official ViTAE-Transformer image
classification code (``ViTAE_ViT_basic`` / ``ViTAEv2_basic``): the same
modules under the same names, so an official checkpoint
(``state_dict`` or ``state_dict_ema``, with or without ``module.``) loads
strictly and gives the official outputs. Names (case-insensitive):

* ViTAE v1: ``ViTAE_basic_Tiny``, ``ViTAE_basic_6M``, ``ViTAE_basic_13M``,
  ``ViTAE_basic_Small`` (aliases ``vitae_t``, ``vitae_6m``, ``vitae_13m``,
  ``vitae_s``). Three reduction cells (downsampling 4, 2, 2) then all normal
  cells on the 1/16 grid; mean-pooled head, no class token.
* ViTAEv2: ``ViTAEv2_S``, ``ViTAEv2_48M``, ``ViTAEv2_B``. Four stages
  (downsampling 4, 2, 2, 2); stages 0-1 use window attention (7x7 windows, no
  shift), stages 2-3 global attention.

What patch drop changes (nothing, under the full schedule: every cell then runs
the official computation):

* The schedule covers the normal cells of one *drop stage*: ViTAE v1's only
  stage with normal cells (``depth`` = all normal cells, grid = 1/16 of the
  image), ViTAEv2's first global-attention stage 2 by default (``depth`` = its
  normal cells, grid = 1/16 of the image); ``drop_stage=3`` selects ViTAEv2's
  last stage instead (grid 1/32). Window-attention stages never drop: their
  windows partition the whole grid. Such requests are refused.
* In a normal cell of the drop stage, attention (``norm1``, ``attn``) runs on
  the tokens still kept; the convolution branch (``PCM``, three grouped 3x3
  convolutions) needs the whole grid, so it runs on the full grid with every
  dropped position holding that token's last state, and the kept positions
  of its output are added to the kept tokens.
* A cell whose count is below its input count scores tokens with ``tavt``
  (attention probabilities summed over heads and queries: the attention each
  token receives, computed explicitly) and keeps the top-k *after* the
  attention and convolution residuals, *before* the MLP (TAVT's place); the
  MLP (``norm2``, ``mlp``) then runs on the kept tokens only. Kept tokens stay
  in grid order. The state a dropped token has at that point is its last state.
* After the drop stage, a later reduction cell (ViTAEv2 with ``drop_stage=2``)
  convolves the restored grid (kept tokens' final states, dropped tokens' last
  states). The mean-pooled head averages the tokens of the last stage that
  survive (all of them unless the last stage is the drop stage), as the timm
  ViT path averages kept tokens; ``forward_features(x, restore=True)`` also
  returns the restored grid.

There is no class token, so the ``cls`` scorer is refused; ``fuse`` (EViT's
merged token) is refused too, as a merged token has no grid position for the
convolution branch. Every image of a batch keeps the same number of tokens.
"""
from ..factory import BackboneEntry, register_backbone
from .build import build_vitae, check_vitae_image_size
from .layers import GridState, NormalCell, ReductionCell
from .model import ViTAE
from .variants import ALIASES, VARIANTS, canonical_name
from .weights import infer_vitae_args, load_vitae_weights

register_backbone(BackboneEntry(list(VARIANTS) + list(ALIASES), build_vitae, load_vitae_weights))

__all__ = ["ALIASES", "VARIANTS", "GridState", "NormalCell", "ReductionCell", "ViTAE", "build_vitae",
           "canonical_name", "check_vitae_image_size", "infer_vitae_args", "load_vitae_weights"]
