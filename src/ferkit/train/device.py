"""Where training runs and in what precision: the device, and bf16 autocast only where it pays."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from ferkit.errors import ConfigError


def pick_device(name: str) -> torch.device:
    """auto (CUDA when there is one, else the CPU), cpu, cuda or cuda:N; ConfigError for a GPU this machine lacks."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", a CPU-only build")
            raise ConfigError(f"--device {name}: CUDA is not available here ({build}); use --device cpu or auto")
        index = torch.device(name).index
        if index is not None and index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(name)


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with AMX or AVX512-BF16. Elsewhere (e.g. AVX2-only AMD EPYC) bf16 autocast is
    emulated and runs ~13x slower than fp32, so 'auto' must not pick it."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def uses_bf16(device: torch.device, precision: str) -> bool:
    return precision == "bf16" or (
        precision == "auto"
        and (cpu_has_fast_bf16() if device.type == "cpu" else torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    )


def autocast_for(device: torch.device, precision: str):
    """bf16 autocast where it pays (CUDA with bf16, CPUs with AMX), else plain fp32."""
    return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if uses_bf16(device, precision) else nullcontext
