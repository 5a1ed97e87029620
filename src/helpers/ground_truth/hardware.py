"""The machine measurements run on: its stable id, its state at measurement time, its peaks.

Hardware id
    ``slug(<cpu model> <physical cores>c [<gpu name>])`` -- e.g. ``amd-epyc-2c``. Built only
    from what does not change while the machine is up: the CPU model string and the physical
    core count from ``/proc/cpuinfo`` (not the process's affinity or ``os.cpu_count()``, which
    ``taskset`` or a container quota change), and the first GPU's name when ``nvidia-smi``
    reports one. Lower case, every run of non-alphanumerics becomes one ``-``.

System state
    :func:`system_state` reads CPU clock and governor from ``/sys`` (falling back to
    ``/proc/cpuinfo`` for the clock), temperature from ``/sys/class/thermal``, the platform power
    profile from ``/sys/firmware/acpi``, GPU clocks from ``nvidia-smi``. Each field it cannot
    read is None, and the reason is returned beside the state so the caller can log it.

Theoretical peak (:func:`theoretical_peak_flops`)
    ``peak = cores x clock x fma_units x MACs per instruction x 2`` FLOP/s, where MACs per
    instruction follow the widest vector ISA in the CPU flags: 512-bit (``avx512f``), 256-bit
    (``avx``/``avx2``), 128-bit (``sse``), scalar otherwise, divided by the element width --
    fp32: width/32; bf16: width/16 with ``avx512_bf16`` (VDPBF16PS), 1024 FLOP/cycle/core with
    ``amx_bf16``, else the fp32 rate (converted); fp16: width/16 with ``avx512_fp16``, else the
    fp32 rate; int8: width/8 with ``avx512_vnni``/``avx_vnni`` (VPDPBUSD), width/16 without (the
    VPMADDUBSW/VPMADDWD pair), 2048 op/cycle/core with ``amx_int8``. ``fma_units`` defaults to 2
    (two FMA pipes, true of current x86 server cores) and halves without the ``fma`` flag. The
    clock is ``cpuinfo_max_freq`` from cpufreq when present, else the ``cpu MHz`` of
    ``/proc/cpuinfo``. Integer "FLOPs" are operations (one multiply-accumulate = 2).

Measured peaks (:func:`measure_gemm_flops`, :func:`measure_memory_bandwidth`)
    The practical compute peak is the best of a few float32 numpy GEMMs (``2 n^3`` FLOPs each,
    numpy's BLAS with its own threads); memory bandwidth is a STREAM-like triad
    ``a = b + s * c`` on arrays larger than the last-level cache, run by numpy as two passes
    (``a = s * c``; ``a += b``) that move 5 arrays' worth of bytes, which is what is counted.
    Both are stored with the machine's data as ``<store>/<hardware_id>/hardware.json``.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from helpers.ground_truth.records import (
    PRECISIONS,
    SystemState,
    read_dataclass,
    read_json_document,
    validate_precision,
)
from helpers.run import atomic
from helpers.run.run_record import now as utc_now

CPUINFO = Path("/proc/cpuinfo")
CPUFREQ = Path("/sys/devices/system/cpu/cpu0/cpufreq")
THERMAL = Path("/sys/class/thermal")
PLATFORM_PROFILE = Path("/sys/firmware/acpi/platform_profile")
DEFAULT_FMA_UNITS = 2


def parse_cpuinfo(text: str) -> list[dict[str, str]]:
    """``/proc/cpuinfo`` text as one dict per logical processor."""
    processors = []
    for block in text.strip().split("\n\n"):
        entry = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                entry[key.strip()] = value.strip()
        if entry:
            processors.append(entry)
    return processors


def read_cpuinfo() -> list[dict[str, str]]:
    """This machine's ``/proc/cpuinfo``, one dict per logical processor (empty where there is none)."""
    return parse_cpuinfo(CPUINFO.read_text()) if CPUINFO.is_file() else []


def cpu_model(cpuinfo: list[dict[str, str]] | None = None) -> str:
    cpuinfo = read_cpuinfo() if cpuinfo is None else cpuinfo
    for entry in cpuinfo:
        if entry.get("model name"):
            return entry["model name"]
    return platform.processor() or platform.machine() or "unknown-cpu"


def physical_core_count(cpuinfo: list[dict[str, str]] | None = None) -> int:
    """Distinct (physical id, core id) pairs; the logical processor count when those are absent."""
    cpuinfo = read_cpuinfo() if cpuinfo is None else cpuinfo
    cores = {(e.get("physical id"), e.get("core id")) for e in cpuinfo if "core id" in e}
    return len(cores) or len(cpuinfo) or os.cpu_count() or 1


def cpu_flags(cpuinfo: list[dict[str, str]] | None = None) -> frozenset[str]:
    cpuinfo = read_cpuinfo() if cpuinfo is None else cpuinfo
    return frozenset(cpuinfo[0].get("flags", "").split()) if cpuinfo else frozenset()


def gpu_name() -> str | None:
    """The first GPU's name as ``nvidia-smi`` reports it; None without an NVIDIA GPU."""
    values = _nvidia_smi("name")
    return values[0] if values else None


def _nvidia_smi(query: str) -> list[str] | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    first = out.strip().splitlines()[0] if out.strip() else ""
    return [v.strip() for v in first.split(",")] if first else None


def slugify(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if not slug:
        raise ValueError(f"cannot make an id from {text!r}: it has no letters or digits")
    return slug


def hardware_id(cpuinfo: list[dict[str, str]] | None = None, gpu: str | None | bool = True) -> str:
    """The machine's stable id (see the module docstring). ``gpu=True`` asks ``nvidia-smi``."""
    cpuinfo = read_cpuinfo() if cpuinfo is None else cpuinfo
    gpu = gpu_name() if gpu is True else gpu
    parts = [cpu_model(cpuinfo), f"{physical_core_count(cpuinfo)}c"] + ([gpu] if gpu else [])
    return slugify(" ".join(parts))


def _read_sys(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cpu_clock_mhz(cpuinfo: list[dict[str, str]] | None = None) -> tuple[float | None, str]:
    """(maximum clock in MHz, where it came from): cpufreq's max, else /proc/cpuinfo's ``cpu MHz``."""
    if (khz := _read_sys(CPUFREQ / "cpuinfo_max_freq")) is not None:
        return int(khz) / 1e3, f"{CPUFREQ / 'cpuinfo_max_freq'}"
    cpuinfo = read_cpuinfo() if cpuinfo is None else cpuinfo
    mhz = [float(e["cpu MHz"]) for e in cpuinfo if "cpu MHz" in e]
    if mhz:
        return max(mhz), "/proc/cpuinfo cpu MHz (no cpufreq driver: the nominal or current clock)"
    return None, "no cpufreq in /sys and no 'cpu MHz' in /proc/cpuinfo"


def system_state() -> tuple[SystemState, dict[str, str]]:
    """The machine's state now, and for each field left None the reason it is unknown."""
    reasons: dict[str, str] = {}
    cur = _read_sys(CPUFREQ / "scaling_cur_freq")
    if cur is not None:
        cpu_freq = int(cur) / 1e3
    else:
        mhz = [float(e["cpu MHz"]) for e in read_cpuinfo() if "cpu MHz" in e]
        cpu_freq = float(np.mean(mhz)) if mhz else None
        if cpu_freq is None:
            reasons["cpu_freq_mhz"] = "no cpufreq scaling_cur_freq and no 'cpu MHz' in /proc/cpuinfo"
    governor = _read_sys(CPUFREQ / "scaling_governor")
    if governor is None:
        reasons["cpu_governor"] = f"{CPUFREQ / 'scaling_governor'} absent (no cpufreq driver, e.g. a VM)"
    temperature = _cpu_temperature_c()
    if temperature is None:
        reasons["temperature_c"] = f"no readable thermal zone under {THERMAL}"
    power_mode = _read_sys(PLATFORM_PROFILE)
    if power_mode is None:
        reasons["power_mode"] = f"{PLATFORM_PROFILE} absent (no ACPI platform profile)"
    clocks = _nvidia_smi("clocks.sm,clocks.mem")
    if clocks is None:
        reasons["gpu_clock_mhz"] = reasons["mem_clock_mhz"] = "no NVIDIA GPU (nvidia-smi absent or failing)"
    gpu_clock, mem_clock = (float(c) for c in clocks) if clocks else (None, None)
    state = SystemState(
        gpu_clock_mhz=gpu_clock,
        mem_clock_mhz=mem_clock,
        power_mode=power_mode,
        temperature_c=temperature,
        cpu_freq_mhz=cpu_freq,
        cpu_governor=governor,
    )
    return state, reasons


def _cpu_temperature_c() -> float | None:
    zones = sorted(THERMAL.glob("thermal_zone*")) if THERMAL.is_dir() else []
    preferred = [z for z in zones if _read_sys(z / "type") in ("x86_pkg_temp", "k10temp", "cpu-thermal")]
    for zone in preferred + zones:
        if (milli := _read_sys(zone / "temp")) is not None and milli.lstrip("-").isdigit():
            return int(milli) / 1e3
    return None


def vector_width_bits(flags: frozenset[str]) -> int:
    for flag, bits in (("avx512f", 512), ("avx2", 256), ("avx", 256), ("sse", 128)):
        if flag in flags:
            return bits
    return 32


def flops_per_cycle_per_core(precision: str, flags: frozenset[str], fma_units: int = DEFAULT_FMA_UNITS) -> float:
    """FLOPs (operations for int8) one core retires per cycle at ``precision`` (module docstring)."""
    validate_precision(precision)
    if precision == "bf16" and "amx_bf16" in flags:
        return 1024.0
    if precision == "int8" and "amx_int8" in flags:
        return 2048.0
    width = vector_width_bits(flags)
    element_bits = {
        "fp32": 32,
        "bf16": 16 if "avx512_bf16" in flags else 32,
        "fp16": 16 if "avx512_fp16" in flags else 32,
        "int8": 8 if flags & {"avx512_vnni", "avx_vnni"} else 16,
    }[precision]
    units = fma_units if "fma" in flags else fma_units / 2
    return units * max(width // element_bits, 1) * 2.0


def theoretical_peak_flops(
    precision: str,
    *,
    flags: frozenset[str] | None = None,
    cores: int | None = None,
    clock_mhz: float | None = None,
    fma_units: int = DEFAULT_FMA_UNITS,
) -> float:
    """cores x clock x FLOPs per cycle per core, at ``precision``; defaults read this machine."""
    flags = cpu_flags() if flags is None else flags
    cores = physical_core_count() if cores is None else cores
    if clock_mhz is None:
        clock_mhz, source = cpu_clock_mhz()
        if clock_mhz is None:
            raise RuntimeError(f"cannot compute a theoretical peak without the CPU clock ({source}); pass clock_mhz=")
    return cores * clock_mhz * 1e6 * flops_per_cycle_per_core(precision, flags, fma_units)


def _best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: page faults, BLAS thread start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure_gemm_flops(n: int = 1024, repeats: int = 5, seed: int = 0) -> float:
    """Practical float32 compute peak: best FLOP/s of ``repeats`` n x n numpy GEMMs."""
    if n < 64 or repeats < 1:
        raise ValueError(f"need n >= 64 and repeats >= 1, got n={n}, repeats={repeats}")
    rng = np.random.default_rng(seed)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    out = np.empty((n, n), dtype=np.float32)
    return 2.0 * n**3 / _best_seconds(lambda: np.matmul(a, b, out=out), repeats)


def measure_memory_bandwidth(elements: int = 1 << 24, repeats: int = 5) -> float:
    """Practical memory bandwidth in bytes/s: best of ``repeats`` numpy triads (module docstring).

    The default, 16 Mi float32 elements (64 MiB per array), exceeds common last-level caches.
    """
    if elements < 1 << 16 or repeats < 1:
        raise ValueError(f"need elements >= 65536 and repeats >= 1, got {elements}, {repeats}")
    a = np.zeros(elements, dtype=np.float32)
    b = np.ones(elements, dtype=np.float32)
    c = np.full(elements, 2.0, dtype=np.float32)

    def triad():
        np.multiply(c, np.float32(3.0), out=a)
        np.add(a, b, out=a)

    return 5 * elements * a.itemsize / _best_seconds(triad, repeats)


@dataclass(frozen=True)
class HardwareProfile:
    """What the store keeps about a machine: identity, flags used, theoretical and measured peaks."""

    hardware_id: str
    cpu_model: str
    physical_cores: int
    gpu_name: str | None
    vector_flags: list[str]
    clock_mhz: float
    clock_source: str
    fma_units: int
    theoretical_peak_flops: dict[str, float]
    measured_gemm_flops: float | None
    measured_bandwidth_bytes_per_s: float | None
    measurement_date: str

    def __post_init__(self):
        for precision in self.theoretical_peak_flops:
            validate_precision(precision)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> HardwareProfile:
        return read_dataclass(cls, data)

    def save(self, path: str | Path) -> Path:
        return atomic.write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> HardwareProfile:
        return cls.from_dict(read_json_document(path))


RELEVANT_FLAGS = (
    "sse",
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512_bf16",
    "avx512_fp16",
    "avx512_vnni",
    "avx_vnni",
    "amx_bf16",
    "amx_int8",
)


def profile_hardware(measure: bool = True, fma_units: int = DEFAULT_FMA_UNITS) -> HardwareProfile:
    """This machine's profile; ``measure=False`` skips the GEMM and bandwidth measurements."""
    cpuinfo = read_cpuinfo()
    flags = cpu_flags(cpuinfo)
    cores = physical_core_count(cpuinfo)
    clock, source = cpu_clock_mhz(cpuinfo)
    if clock is None:
        raise RuntimeError(f"cannot profile this machine: {source}")
    peaks = {
        p: theoretical_peak_flops(p, flags=flags, cores=cores, clock_mhz=clock, fma_units=fma_units) for p in PRECISIONS
    }
    gpu = gpu_name()
    return HardwareProfile(
        hardware_id=hardware_id(cpuinfo, gpu=gpu),
        cpu_model=cpu_model(cpuinfo),
        physical_cores=cores,
        gpu_name=gpu,
        vector_flags=sorted(flags & set(RELEVANT_FLAGS)),
        clock_mhz=clock,
        clock_source=source,
        fma_units=fma_units,
        theoretical_peak_flops=peaks,
        measured_gemm_flops=measure_gemm_flops() if measure else None,
        measured_bandwidth_bytes_per_s=measure_memory_bandwidth() if measure else None,
        measurement_date=utc_now(),
    )
