"""Build the Cython kernels in kernels_pyx/ as extension modules npusim._kernels.<name>.

Flags: -O3 for the CPU of the building machine (-march=native); set NPUSIM_PORTABLE=1 for
portable wheels, or NPUSIM_MARCH=<arch> (e.g. x86-64-v3) to build for that instruction set and
nothing beyond it: the int8 GEMM's run-time SIMD paths (kernels_pyx/int8_gemm.h) are then limited
to the ones <arch> enables, so NPUSIM_MARCH=x86-64-v3 gives a build without any AVX-512 instruction,
as on an AVX2-only machine. -ffp-contract=off is essential: a fused multiply-add would round once where
the NPU rounds twice and break bit-exactness (the integer SIMD code is unaffected). OpenMP is used
when the compiler has it. NPUSIM_ONLY=name1,name2 builds only those kernels (handy while developing
one kernel).
"""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent
KERNELS = HERE / "kernels_pyx"


def _compiler_has_openmp() -> bool:
    if os.environ.get("NPUSIM_NO_OPENMP"):
        return False
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "t.c"
        src.write_text("#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n")
        cmd = [cc, "-fopenmp", str(src), "-o", str(Path(tmp) / "t")]
        return subprocess.run(cmd, capture_output=True).returncode == 0


def _extensions():
    only = {n for n in os.environ.get("NPUSIM_ONLY", "").split(",") if n}
    portable = os.environ.get("NPUSIM_PORTABLE", "") not in ("", "0")
    march = os.environ.get("NPUSIM_MARCH", "")
    openmp = _compiler_has_openmp()
    cflags = ["-O3", "-ffp-contract=off", "-fno-strict-aliasing", "-Wno-unused-function"]
    macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"), ("NPUSIM_OPENMP", "1" if openmp else "0")]
    if march:
        cflags.append(f"-march={march}")
        macros.append(("NPUSIM_SIMD_FROM_MARCH", "1"))
    else:
        cflags.append("-mtune=generic" if portable else "-march=native")
    lflags = []
    if openmp:
        cflags.append("-fopenmp")
        lflags.append("-fopenmp")
    print(f"npusim build: openmp={openmp} portable={portable} march={march or '-'}", file=sys.stderr)
    exts = []
    for pyx in sorted(KERNELS.glob("*.pyx")):
        if only and pyx.stem not in only:
            continue
        exts.append(Extension(
            f"npusim._kernels.{pyx.stem}",
            [str(pyx.relative_to(HERE))],
            include_dirs=[np.get_include(), str(KERNELS)],
            depends=[str(h.relative_to(HERE)) for h in KERNELS.glob("*.h")],      # C headers the .pyx includes
            define_macros=macros,
            extra_compile_args=cflags,
            extra_link_args=lflags,
        ))
    return cythonize(
        exts,
        include_path=[str(KERNELS)],
        compiler_directives={"language_level": 3, "boundscheck": False, "wraparound": False,
                             "cdivision": True, "initializedcheck": False},
        quiet=True,
    )


setup(ext_modules=_extensions())
