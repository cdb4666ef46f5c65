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


class UnreachableBudgetError(ConfigError):
    """A budget below every schedule a search can return for it, refused before any work: ``budget`` (the
    :class:`~tavt_kit.search.evolution.Budget`) and ``reason`` (what the space reaches, in words)."""

    def __init__(self, message: str, budget=None, reason: str = ""):
        super().__init__(message)
        self.budget, self.reason = budget, reason


class DatasetError(TavtKitError, ValueError):
    """A dataset is missing, has the wrong layout, or does not match the model."""


class BackendError(TavtKitError, RuntimeError):
    """An inference backend or device is not available (package missing, no CUDA, ...) or failed."""


class ExportError(TavtKitError, RuntimeError):
    """A model cannot be exported, or an exported file does not match the model or PyTorch's outputs."""


class LatencyTableError(TavtKitError, ValueError):
    """A latency table is malformed, or was made for another model, backend, device, batch or thread count."""


class FolderBusyError(TavtKitError, RuntimeError):
    """An output folder is being written by another process (one writer per folder; see :mod:`tavt_kit.lock`)."""

    #: the message names paths and the holder's command line, no parameters: the CLI prints it as it is
    verbatim = True


class DiskFullError(TavtKitError, OSError):
    """A file could not be written: no space left on the device (or the disk quota is used up).

    The message is one line naming the file, the space free in its folder and, where known, the bytes needed;
    files written before it (and the file's previous version) are intact. ``errno``, ``filename``, ``free``
    and ``needed`` say the same for callers.
    """

    #: the message names paths, no parameters: the CLI prints it as it is
    verbatim = True

    def __init__(self, message: str, *, errno: int = 28, filename=None, free=None, needed=None):
        OSError.__init__(self, errno, message, filename)
        self.message, self.free, self.needed = message, free, needed

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # picklable (DataLoader workers, multiprocessing)
        return (_disk_full, (self.message, self.errno, self.filename, self.free, self.needed))


def _disk_full(message, errno, filename, free, needed):
    return DiskFullError(message, errno=errno, filename=filename, free=free, needed=needed)
