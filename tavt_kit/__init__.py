"""fgvc-kit: deployable fine-grained vision transformers, the TAVT way.

Patch drop over any timm ViT, token schedules, MAC counting and checkpoints
that rebuild their model from one file.
"""
from .errors import (BackendError, CheckpointError, ConfigError, DatasetError, ExportError, ImageSizeError,
                     LatencyTableError, ScheduleError, TavtKitError, UnknownModelError, UnsupportedModelError)
from .models import (MacCount, TokenSchedule, count_macs, create_model, load_checkpoint, save_checkpoint,
                     spec_of)
from .models import patch_model as patch

__version__ = "0.1.0"

__all__ = [
    "BackendError", "CheckpointError", "ConfigError", "DatasetError", "ExportError", "ImageSizeError",
    "LatencyTableError", "MacCount", "ScheduleError", "TavtKitError",
    "TokenSchedule", "UnknownModelError", "UnsupportedModelError", "count_macs", "create_model",
    "load_checkpoint", "patch", "save_checkpoint", "spec_of", "__version__",
]
