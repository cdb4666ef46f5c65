"""Backbones with patch drop, token schedules, MAC counting and checkpoints."""
from ..schedules import SearchSpace, TokenSchedule
from .checkpoint import load_checkpoint, load_model, read_spec, save_checkpoint, weights_digest
from .factory import (BACKBONES, BUILTIN_MODELS, BackboneEntry, create_model, describe_backbone, patch_model,
                      register_backbone, spec_of)
from .macs import MacCount, count_macs
from .token_drop import TokenState, is_patched, token_drop_record, use_recorded_token_drop
from . import vitae  # noqa: F401  (registers the ViTAE family)

__all__ = [
    "BACKBONES", "BUILTIN_MODELS", "BackboneEntry", "MacCount", "SearchSpace", "TokenSchedule", "TokenState", "count_macs", "create_model", "describe_backbone", "is_patched",
    "load_checkpoint", "load_model", "patch_model", "read_spec", "register_backbone", "save_checkpoint", "spec_of", "token_drop_record",
    "use_recorded_token_drop", "weights_digest",
]
