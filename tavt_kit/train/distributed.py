"""Processes and precision: joining torchrun's process group, the device of this rank, the AMP dtype."""
from __future__ import annotations

import os
from typing import Optional, Tuple

import torch

from ..errors import ConfigError


def dist_env() -> Tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment (0, 1, 0 when not launched by it)."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def local_world_size() -> int:
    """Processes torchrun started on this node (1 when not launched by it)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", 1))


def init_distributed(device: Optional[str] = None) -> Tuple[int, int, torch.device]:
    """Join the process group torchrun set up (NCCL on CUDA, gloo on CPU); returns (rank, world, device).

    ``auto`` gives each local rank its own GPU, and runs every rank on the CPU (gloo) where this node has fewer
    GPUs than processes: NCCL cannot share one GPU between ranks, and all ranks must pick the same backend. An
    explicit CUDA device with more processes than GPUs is refused in one line."""
    import torch.distributed as dist

    rank, world, local = dist_env()
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device in (None, "auto"):
        dev = torch.device(f"cuda:{local}" if gpus and local_world_size() <= gpus else "cpu")
    else:
        try:
            dev = torch.device(device)
        except RuntimeError:
            raise ConfigError(f"device={device!r}: expected auto, cpu, cuda or cuda:N") from None
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise ConfigError(f"device={device!r}: no CUDA device is available; use device='cpu'")
            if dev.index is None:
                dev = torch.device(f"cuda:{local if world > 1 else torch.cuda.current_device()}")
            if dev.index >= gpus:
                raise ConfigError(f"device={device!r}: this node has {gpus} CUDA device(s) and this is local rank "
                                  f"{local} of {local_world_size()}; start at most {gpus} process(es) per node, "
                                  "or use device='cpu'")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    if world > 1:
        rank, world = dist.get_rank(), dist.get_world_size()
    return rank, world, dev


def barrier(world: int) -> None:
    """Wait for every rank (a no-op in one process)."""
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def amp_dtype_for(amp: Optional[str], device: torch.device) -> Optional[torch.dtype]:
    if amp is None:
        return None
    if amp == "auto":
        return torch.float16 if device.type == "cuda" else torch.bfloat16
    if amp == "fp16":
        if device.type != "cuda":
            raise ConfigError("amp='fp16' needs a CUDA device (fp16 with loss scaling); use amp='bf16' on CPU")
        return torch.float16
    return torch.bfloat16
