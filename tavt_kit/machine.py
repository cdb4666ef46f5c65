"""The machine a result was produced on: CPU, GPU, load and library versions (bench, export, search, report)."""
from __future__ import annotations

import os
import platform
import sys
from typing import Dict, List, Optional, Sequence

#: distributions whose versions a measurement records (when installed)
LIBRARIES = ("torch", "timm", "numpy", "onnx", "onnxscript", "onnxruntime", "onnxruntime-gpu", "openvino")

#: CPU flags that decide which kernels (and, for OpenVINO, which default precision) a CPU gets
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8",
             "amx_tile", "asimd", "sve")


def cpu_load() -> Optional[List[float]]:
    """The 1, 5 and 15 minute load averages (``None`` where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def library_versions(extra: Sequence[str] = ()) -> Dict[str, str]:
    """Python and the versions of :data:`LIBRARIES` (and of the ``extra`` distributions) that are installed."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in (*LIBRARIES, *extra):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def _cpuinfo() -> Dict[str, str]:
    info: Dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if ":" not in line:
                    if info:
                        break  # first processor only
                    continue
                k, v = line.split(":", 1)
                info.setdefault(k.strip(), v.strip())
    except OSError:
        pass
    return info


def available_cores() -> int:
    """The cores this process may run on (``taskset``, a container's CPU set), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_description() -> Dict[str, object]:
    info = _cpuinfo()
    model = info.get("model name") or info.get("Model") or info.get("Hardware") or platform.processor() \
        or platform.machine()
    if sys.platform == "darwin" and not info:
        try:
            import subprocess

            model = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                   timeout=5).stdout.strip() or model
        except Exception:
            pass
    flags = set((info.get("flags") or info.get("Features") or "").split())
    physical = None
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except Exception:
        pass
    available = available_cores()
    return {
        "model": model,
        "arch": platform.machine(),
        "logical_cores": os.cpu_count(),
        "physical_cores": physical,
        "available_cores": available,
        "flags": sorted(f for f in CPU_FLAGS if f in flags),
    }


def gpu_description(device: str) -> Optional[Dict[str, object]]:
    if not device.startswith("cuda"):
        return None
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        idx = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(idx)
        return {"name": props.name, "memory_gb": round(props.total_memory / 2 ** 30, 2),
                "capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version()}
    except Exception:
        return None


def machine_info(device: str = "cpu", threads: Optional[int] = None) -> Dict[str, object]:
    """CPU model, cores, threads used, GPU, OS, library versions and the load when measuring."""
    return {
        "cpu": cpu_description(),
        "gpu": gpu_description(device),
        "threads": threads,
        "os": platform.platform(),
        "libraries": library_versions(),
        "load_average": cpu_load(),
    }


def count(n, one: str, many: Optional[str] = None) -> str:
    """``1 thread``, ``4 threads`` (``many`` defaults to ``one`` + ``s``)."""
    return f"{n} {one if n == 1 else (many or one + 's')}"


def threads_text(threads) -> str:
    """A thread count in words: ``1 thread``, ``4 threads``, ``default threads`` (None: the runtime's own)."""
    if threads is None or threads == "None":
        return "default threads"
    try:
        return count(int(threads), "thread")
    except (TypeError, ValueError):
        return f"{threads} threads"


def describe(machine: Dict[str, object]) -> str:
    """One line: CPU model, cores, threads, GPU."""
    cpu = machine.get("cpu") or {}
    cores = cpu.get("available_cores")
    text = f"{cpu.get('model')} ({count(cores, 'core') if cores is not None else 'unknown cores'} available"
    if machine.get("threads"):
        text += f", {threads_text(machine['threads'])} used"
    text += ")"
    gpu = machine.get("gpu")
    if gpu:
        text += f", GPU {gpu.get('name')}"
    return text


def brief(threads: Optional[int] = None) -> Dict[str, str]:
    """CPU model, cores, threads, Python and torch: the short description a search result carries."""
    import torch

    return {"cpu": str(cpu_description()["model"]), "cores": str(os.cpu_count()),
            "threads": str(threads if threads is not None else torch.get_num_threads()),
            "python": platform.python_version(), "torch": torch.__version__.split("+")[0]}


def runnable_elsewhere(samples: int = 5, interval: float = 0.02) -> Optional[int]:
    """Threads of other processes ready to run now: the median of ``samples`` readings of the kernel's count of
    runnable threads (``procs_running`` of ``/proc/stat``), this process's reading thread taken off; None where
    the OS does not say."""
    import statistics
    import time

    counts = []
    for i in range(max(1, samples)):
        try:
            with open("/proc/stat") as f:
                counts += [int(line.split()[1]) for line in f if line.startswith("procs_running")]
        except (OSError, ValueError, IndexError):
            return None
        if i + 1 < samples:
            time.sleep(interval)
    return max(0, int(statistics.median(counts)) - 1) if counts else None


def busy_load() -> Optional[float]:
    """The 1-minute load average where the machine is busy now: above its cores, with other processes' threads
    ready to run (:func:`runnable_elsewhere`: not only a job that just ended); None otherwise."""
    load, cores = cpu_load(), os.cpu_count() or 1
    if not load or load[0] <= cores:
        return None
    return None if runnable_elsewhere() == 0 else load[0]


def oversubscribed(load1: Optional[float], cores: Optional[int], threads: int,
                   remedy: Optional[str] = None, runnable: Optional[int] = None) -> Optional[str]:
    """A warning when the machine is oversubscribed: the 1-minute load average ``load1`` above its ``cores``
    while torch runs ``threads`` intra-op threads (more than one) in this process; None otherwise.

    Each of those threads then waits for a core, which made training 7-9x slower on a busy 2-core machine.
    ``runnable``: the other processes' threads ready to run now (:func:`runnable_elsewhere`); with room for
    ``threads`` beside them, the load average is the past (a job that just ended) and nothing is said.
    ``remedy``: another way out, in the caller's terms (e.g. a command-line option)."""
    if load1 is None or not cores or threads is None or int(threads) <= 1 or load1 <= cores:
        return None
    if runnable is not None and runnable + int(threads) <= cores:
        return None
    return (f"the machine is oversubscribed: load average {load1:.1f} on {count(int(cores), 'core')} while torch "
            f"uses {int(threads)} threads in this process, which can make it several times slower; set "
            "OMP_NUM_THREADS=1" + (f" or {remedy}" if remedy else "") + ", or run fewer jobs at once")


def oversubscription(threads: Optional[int] = None, remedy: Optional[str] = None) -> Optional[str]:
    """:func:`oversubscribed` for this machine now (``threads``: default torch's intra-op thread count)."""
    load = cpu_load()
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    return oversubscribed(load[0] if load else None, os.cpu_count(), threads, remedy,
                          runnable_elsewhere() if load and load[0] > (os.cpu_count() or 0) else None)
