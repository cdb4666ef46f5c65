"""Where a model runs: one :class:`DeploymentTarget` (backend, device, precision, threads, batch size) and
the one precision vocabulary with its OpenVINO / ONNX Runtime / torch spellings.

A latency budget, a latency table, a bench report, an export and a search are each *for one target*; they
store ``target.to_dict()`` and read it back with :meth:`DeploymentTarget.from_dict`, which also accepts the
spellings files written before this type used (``"f32"`` for fp32, ``batch`` for ``batch_size``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Dict, Mapping, Optional

from .errors import ConfigError


class Precision:
    """The precisions fgvc-kit knows, under their one name (``fp32``, ``bf16``, ``fp16``, ``int8``), and how
    each runtime spells them."""

    FP32, BF16, FP16, INT8 = "fp32", "bf16", "fp16", "int8"
    ALL = (FP32, BF16, FP16, INT8)
    #: other spellings accepted on input (OpenVINO's element types, numpy/torch names)
    ALIASES = {"f32": FP32, "float32": FP32, "float": FP32, "bfloat16": BF16, "f16": FP16, "float16": FP16,
               "half": FP16, "i8": INT8, "u8": INT8}
    #: OpenVINO ``INFERENCE_PRECISION_HINT`` (int8 models carry their quantisation in the graph: they compile at f32)
    OPENVINO_HINT = {FP32: "f32", BF16: "bf16", FP16: "f16", INT8: "f32"}
    #: the OpenVINO element-type name a latency table records (int8 tables say "int8")
    OPENVINO_NAME = {FP32: "f32", BF16: "bf16", FP16: "f16", INT8: "int8"}
    #: ONNX Runtime runs fp32 graphs; fp16 and int8 are graphs of their own
    ONNXRUNTIME = {FP32: "fp32", FP16: "fp16", INT8: "int8"}

    @classmethod
    def parse(cls, value: Any, param: str = "precision") -> str:
        """Any accepted spelling -> the one name; :class:`ConfigError` naming ``param`` otherwise."""
        text = str(value).strip().lower() if value is not None else ""
        name = cls.ALIASES.get(text, text)
        if name not in cls.ALL:
            raise ConfigError(f"{param}={value!r}: expected one of {', '.join(cls.ALL)}")
        return name

    @classmethod
    def torch_dtype(cls, precision: str):
        """The autocast dtype of bf16/fp16; None for fp32 and int8 (int8 is a quantised graph, not a dtype)."""
        import torch

        return {cls.BF16: torch.bfloat16, cls.FP16: torch.float16}.get(cls.parse(precision))


def is_device_name(text: str) -> bool:
    """Whether ``text`` names a device in the one form fgvc-kit takes: ``cpu``, ``cuda`` or ``cuda:N``."""
    return text == "cpu" or text == "cuda" or (text.startswith("cuda:") and text[5:].isdigit())


def torch_device(device):
    """``device`` (``cpu``, ``cuda``, ``cuda:N``, a ``torch.device``) as a ``torch.device`` with its index: plain
    ``cuda`` is the current CUDA device, so that a model on ``cuda:0`` is where ``cuda`` says."""
    import torch

    d = torch.device(device)
    if d.type == "cuda" and d.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return d


def is_placed(model, device, dtype=None) -> bool:
    """Whether ``model``'s weights are on ``device`` (:func:`torch_device`) and, given ``dtype``, of that type (a
    model without parameters is anywhere)."""
    p = next(iter(model.parameters()), None)
    return p is None or (p.device == torch_device(device) and (dtype is None or p.dtype == dtype))


#: backends a target can name
BACKENDS = ("torch", "torch-compile", "torch-cudagraph", "onnxruntime", "openvino")
#: backends that run the PyTorch module itself: eager, ``torch.compile``, or eager captured once per
#: (schedule, batch) as a CUDA graph and replayed (a schedule's shapes are static, so one capture serves every call)
TORCH_BACKENDS = ("torch", "torch-compile", "torch-cudagraph")


@dataclass(frozen=True)
class DeploymentTarget:
    """Where and how a model is run: ``backend`` (torch, torch-compile, torch-cudagraph, onnxruntime, openvino),
    ``device`` (``cpu``, ``cuda``, ``cuda:N``), ``precision`` (:class:`Precision`), ``threads`` (None: the runtime's
    default) and ``batch_size`` (images per call: a latency is per batch)."""

    backend: str = "openvino"
    device: str = "cpu"
    precision: str = Precision.FP32
    threads: Optional[int] = None
    batch_size: int = 1

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend={self.backend!r}: expected one of {', '.join(BACKENDS)}")
        if not is_device_name(str(self.device)):
            raise ConfigError(f"device={self.device!r}: expected cpu, cuda or cuda:N")
        object.__setattr__(self, "precision", Precision.parse(self.precision))
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise ConfigError(f"threads={self.threads!r}: expected a positive number of threads or None")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"batch_size={self.batch_size!r}: expected a positive number of images")

    @classmethod
    def default(cls) -> "DeploymentTarget":
        """The runtime ``export`` ships: OpenVINO on the CPU where it is installed, torch eager otherwise."""
        try:
            import openvino  # noqa: F401
        except ImportError:
            return cls(backend="torch")
        return cls()

    def with_(self, **changes) -> "DeploymentTarget":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    @property
    def openvino_hint(self) -> str:
        """OpenVINO's ``INFERENCE_PRECISION_HINT`` for this precision."""
        return Precision.OPENVINO_HINT[self.precision]

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "target") -> "DeploymentTarget":
        """Reads ``to_dict()`` and the target dicts of older files (``"f32"``, ``batch``; a ``bench.json``'s
        ``precision_requested`` and, for several batch sizes, ``batch_size: null`` beside ``batch_sizes``)."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"{where}: expected an object with backend, device, precision, threads, batch_size; "
                              f"got {type(d).__name__}")
        batch = d.get("batch_size", d.get("batch", 1))
        if batch is None and d.get("batch_sizes"):  # bench.json of several batch sizes: the first one's target
            batch = list(d["batch_sizes"])[0]
        try:
            return cls(backend=d.get("backend") or "torch", device=d.get("device") or "cpu",
                       precision=d.get("precision") or d.get("precision_requested") or Precision.FP32,
                       threads=d.get("threads"),
                       batch_size=int(batch) if isinstance(batch, (int, float)) and not isinstance(batch, bool)
                       else batch)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None

    def describe(self) -> str:
        """``openvino cpu fp32, batch 1, 2 threads``."""
        threads = "default threads" if self.threads is None else \
            f"{self.threads} thread{'s' if self.threads != 1 else ''}"
        return f"{self.backend} {self.device} {self.precision}, batch {self.batch_size}, {threads}"

    def __str__(self) -> str:
        return self.describe()
