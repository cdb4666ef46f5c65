"""fgvc-kit: deployable fine-grained vision transformers, the TAVT way.

Patch drop over any timm ViT, token schedules, MAC counting and checkpoints
that rebuild their model from one file. The model-side names are imported on
first use, so that ``import tavt_kit`` (and ``fgvc-kit --help``) loads no torch.
"""
from .errors import (BackendError, CheckpointError, ConfigError, DatasetError, DiskFullError, ExportError,
                     FolderBusyError, ImageSizeError, LatencyTableError, ScheduleError, TavtKitError,
                     UnknownModelError, UnreachableBudgetError, UnsupportedModelError)

__version__ = "0.1.0"

#: public name -> (module, attribute), imported on first access
_LAZY = {
    "DeploymentTarget": ("tavt_kit.target", "DeploymentTarget"),
    "LatencyObjective": ("tavt_kit.search", "LatencyObjective"),
    "MacCount": ("tavt_kit.models", "MacCount"),
    "Precision": ("tavt_kit.target", "Precision"),
    "SearchResult": ("tavt_kit.search", "SearchResult"),
    "TokenSchedule": ("tavt_kit.schedules", "TokenSchedule"),
    "count_macs": ("tavt_kit.models", "count_macs"),
    "create_model": ("tavt_kit.models", "create_model"),
    "load_checkpoint": ("tavt_kit.models", "load_checkpoint"),
    "patch": ("tavt_kit.models", "patch_model"),
    "folder_lock": ("tavt_kit.lock", "folder_lock"),
    "search_schedules": ("tavt_kit.search", "search_schedules"),
    "save_checkpoint": ("tavt_kit.models", "save_checkpoint"),
    "spec_of": ("tavt_kit.models", "spec_of"),
}

__all__ = [
    "BackendError", "CheckpointError", "ConfigError", "DatasetError", "DeploymentTarget", "DiskFullError",
    "ExportError", "FolderBusyError", "folder_lock", "ImageSizeError", "LatencyObjective", "LatencyTableError", "MacCount", "Precision", "ScheduleError",
    "SearchResult", "TavtKitError", "search_schedules",
    "TokenSchedule", "UnknownModelError", "UnreachableBudgetError", "UnsupportedModelError", "count_macs", "create_model",
    "load_checkpoint", "patch", "save_checkpoint", "spec_of", "__version__",
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tavt_kit' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
