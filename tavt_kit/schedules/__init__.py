"""Token schedules: how many patch tokens each block keeps, the space of them, the hand-made families, drop configs.

The lowest layer beside :mod:`tavt_kit.errors`: models, distillation, bench and
search all speak in :class:`TokenSchedule`; nothing here imports torch models.
"""
from .drop_config import check_model_info, schedule_from_drop_file
from .families import evit_blocks, evit_schedule, random_schedules, tome_schedule, uniform_schedule
from .schedule import SCHEDULE_FORMAT, TokenSchedule, ceil_count
from .space import SPACE_FORMAT, SearchSpace

__all__ = [
    "SCHEDULE_FORMAT", "SPACE_FORMAT", "SearchSpace", "TokenSchedule", "ceil_count", "check_model_info",
    "evit_blocks", "evit_schedule", "random_schedules", "schedule_from_drop_file", "tome_schedule",
    "uniform_schedule",
]
