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
    """Best wall time of fn() over `repeat` rounds (each round at least min_time/repeat seconds)."""
    return best_times({"fn": fn}, repeat, min_time)["fn"]


def best_times(fns: dict[str, Callable[[], object]], repeat: int = 5, min_time: float = 0.2,
               slow: float = 5.0, settle: float = 0.15) -> dict[str, float]:
    """Best wall time of each function, with the rounds of all functions interleaved, so that a change in
    the machine's load hits all of them alike and their ratios stay meaningful. Each is warmed up first
    (page faults, thread pools); one that raises ImportError there is left out, and one slower than `slow`
    seconds is timed by that single call. Before each round of one of several functions the machine is left
    idle for `settle` seconds: thread pools spin-wait after a call (OpenBLAS for about 2^28 cycles), which
    would otherwise slow the next function's round. NumPy's overflow warnings are silenced: the inputs
    overflow on purpose (saturation cases)."""
    best, active = {}, []
    with np.errstate(over="ignore", invalid="ignore"):
        for name, fn in fns.items():
            try:
                t0 = time.perf_counter()
                fn()
            except ImportError:
                continue
            best[name] = time.perf_counter() - t0
            if best[name] <= slow:
                active.append(name)
                best[name] = float("inf")
        for _ in range(repeat):
            for name in active:
                if len(active) > 1:
                    time.sleep(settle)
                n, t0 = 0, time.perf_counter()
                while True:
                    fns[name]()
                    n += 1
                    el = time.perf_counter() - t0
                    if el >= min_time / repeat:
                        break
                best[name] = min(best[name], el / n)
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
        fns = {"npusim": lambda: case.kernel(state)}
        if case.numpy is not None:
            fns["numpy"] = lambda: case.numpy(state)
        fns.update({peer: (lambda fn=fn: fn(state)) for peer, fn in case.peers.items()})
        times = best_times(fns, repeat)
        t_k = times["npusim"]
        row = {"case": case.name, "group": case.group, "MB": case.nbytes / 1e6,
               "npusim_ms": t_k * 1e3, "npusim_GBps": case.nbytes / t_k / 1e9,
               "copy_fraction": (case.nbytes / t_k) / bw}
        if case.ops:
            row["npusim_GOPS"] = case.ops / t_k / 1e9
        for name, t in times.items():
            if name == "npusim":
                continue
            row[f"{name}_ms"] = t * 1e3
            if case.ops:
                row[f"{name}_GOPS"] = case.ops / t / 1e9
            row[f"speedup_vs_{name}"] = t / t_k
        rows.append(row)
    df = pd.DataFrame(rows)
    df.attrs["copy_GBps"] = bw / 1e9
    df.attrs["cpu"] = cpu_model()
    df.attrs["simd"] = simd_text()
    return df


def simd_text() -> str:
    """The SIMD paths the kernels run on here: the instruction set the build compiled the vectorised loops for,
    and the int8 GEMM path npu_quant_matmul picks at run time (NPUSIM_GEMM_SIMD overrides it)."""
    from npusim._kernels import casts
    from npusim.quant_matmul import gemm_path_name
    return f"kernels compiled for {casts.build_isa()}, int8 GEMM path {gemm_path_name()}"
