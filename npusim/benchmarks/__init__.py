"""Benchmark harness: each case times an npusim kernel against a plain NumPy implementation of the
same arithmetic (and a peer such as PyTorch or ml_dtypes when installed), all in one run, next to
this machine's memory-copy bandwidth measured in the same run. Only ratios are meaningful on a
shared, noisy machine.

Cases live in the modules of this package (casts.py, one module per operator); each module calls
`register(Case(...))` at import. `run()` imports every module and returns a pandas DataFrame.
"""
from __future__ import annotations

import importlib
import pkgutil
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

CASES: list["Case"] = []


@dataclass
class Case:
    """One benchmark entry.

    setup() -> state (inputs, built once); kernel(state) runs npusim; numpy(state) runs the plain
    NumPy reference of the same arithmetic; peers: {name: fn(state)} for other implementations
    (a peer raising ImportError is skipped); nbytes: bytes read + written by one call, used for
    GB/s and the fraction of copy bandwidth; ops: arithmetic operations of one call (2*M*N*K for a
    matmul), giving GOPS columns when set.
    """
    name: str
    setup: Callable[[], object]
    kernel: Callable[[object], object]
    numpy: Callable[[object], object] | None
    nbytes: int
    peers: dict[str, Callable[[object], object]] = field(default_factory=dict)
    group: str = "casts"
    ops: int = 0


def register(case: Case) -> Case:
    CASES.append(case)
    return case


def load_cases() -> list[Case]:
    if not CASES:
        for mod in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{mod.name}")
    return CASES


def best_time(fn: Callable[[], object], repeat: int = 5, min_time: float = 0.2) -> float:
    """Best wall time of fn() over `repeat` rounds (each round at least min_time/repeat seconds).
    NumPy's overflow warnings are silenced: the inputs overflow on purpose (saturation cases)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return _best_time(fn, repeat, min_time)


def _best_time(fn, repeat, min_time, slow=5.0):
    t0 = time.perf_counter()
    fn()  # warm up (page faults, thread pool start)
    warm = time.perf_counter() - t0
    if warm > slow:       # so slow (e.g. a peer without SIMD kernels) that one-time costs do not matter
        return warm
    best = float("inf")
    for _ in range(repeat):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            el = time.perf_counter() - t0
            if el >= min_time / repeat:
                break
        best = min(best, el / n)
    return best


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else platform.processor())."""
    import platform
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def copy_bandwidth(nbytes: int = 64 << 20) -> float:
    """This machine's memory-copy bandwidth (bytes read + written per second), np.copyto on nbytes."""
    src = np.ones(nbytes, dtype=np.uint8)
    dst = np.empty_like(src)
    t = best_time(lambda: np.copyto(dst, src))
    return 2 * nbytes / t


def run(select: str | None = None, repeat: int = 5) -> "pandas.DataFrame":
    """Time every registered case (or those whose name contains `select`)."""
    import pandas as pd
    rows = []
    bw = copy_bandwidth()
    for case in load_cases():
        if select and select not in case.name and select != case.group:
            continue
        state = case.setup()
        t_k = best_time(lambda: case.kernel(state), repeat)
        row = {"case": case.name, "group": case.group, "MB": case.nbytes / 1e6,
               "npusim_ms": t_k * 1e3, "npusim_GBps": case.nbytes / t_k / 1e9,
               "copy_fraction": (case.nbytes / t_k) / bw}
        if case.ops:
            row["npusim_GOPS"] = case.ops / t_k / 1e9
        if case.numpy is not None:
            t_n = best_time(lambda: case.numpy(state), repeat)
            row["numpy_ms"] = t_n * 1e3
            if case.ops:
                row["numpy_GOPS"] = case.ops / t_n / 1e9
            row["speedup_vs_numpy"] = t_n / t_k
        for peer, fn in case.peers.items():
            try:
                t_p = best_time(lambda: fn(state), repeat)
            except ImportError:
                continue
            row[f"{peer}_ms"] = t_p * 1e3
            if case.ops:
                row[f"{peer}_GOPS"] = case.ops / t_p / 1e9
            row[f"speedup_vs_{peer}"] = t_p / t_k
        rows.append(row)
    df = pd.DataFrame(rows)
    df.attrs["copy_GBps"] = bw / 1e9
    df.attrs["cpu"] = cpu_model()
    return df
