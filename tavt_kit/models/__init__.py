"""Backbones with patch drop, token schedules, MAC counting and checkpoints."""
from .checkpoint import load_checkpoint, read_spec, save_checkpoint
from .factory import BACKBONES, BUILTIN_MODELS, BackboneEntry, create_model, patch_model, register_backbone, spec_of
from .macs import MacCount, count_macs
from .schedule import TokenSchedule
from .token_drop import TokenState, is_patched
from . import vitae  # registers the ViTAE family

__all__ = [
    "BUILTIN_MODELS", "MacCount", "TokenSchedule", "TokenState", "count_macs", "create_model", "is_patched",
    "load_checkpoint", "patch_model", "read_spec", "save_checkpoint", "spec_of",
]
