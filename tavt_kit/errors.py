"""Exception types of fgvc-kit.

Every error a user can cause (a bad schedule, an unknown model, a broken
checkpoint) is raised as a subclass of :class:`TavtKitError` with a one-line
message naming what was wrong and what was expected. The command line prints
that line and exits non-zero; Python callers can catch the precise type.
"""


class TavtKitError(Exception):
    """Base class of every error fgvc-kit raises on bad input."""


class ScheduleError(TavtKitError, ValueError):
    """A token schedule is malformed or does not fit the model."""


class UnknownModelError(TavtKitError, ValueError):
    """A model name is not known to fgvc-kit or timm."""


class UnsupportedModelError(TavtKitError, TypeError):
    """A model (or one of its blocks) has a structure patch drop cannot handle."""


class ImageSizeError(TavtKitError, ValueError):
    """An image size does not fit the model (not divisible by the patch size, ...)."""


class CheckpointError(TavtKitError, ValueError):
    """A checkpoint file is missing, truncated, unrecognised or does not match."""


class ConfigError(TavtKitError, ValueError):
    """An argument or option has an invalid value."""
