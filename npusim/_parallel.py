"""How many threads the kernels use, and OpenMP across fork().

GNU OpenMP's thread pool does not survive fork(): in the child, the first parallel region of more than one
thread waits forever for the parent's pool threads, which the child does not have (a multiprocessing pool
or a DataLoader worker forked after a golden was computed in the parent hung so). A forked child therefore
runs every kernel on one thread, as PyTorch's forked workers do; its results are the same bits.
"""
import os

from npusim._kernels import casts as _casts

_in_forked_child = False


def kernel_threads() -> int:
    """Threads for a kernel that sizes its own team: 1 in a forked child, else OMP_NUM_THREADS when set (as
    the other kernels' OpenMP default), else the CPUs this process may run on (as OpenMP's own default)."""
    if _in_forked_child:
        return 1
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "").split(",")[0]))
    except ValueError:
        pass
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:          # not on Linux
        return os.cpu_count() or 1


def _single_threaded_child() -> None:
    global _in_forked_child
    _in_forked_child = True
    _casts.set_openmp_threads(1)


os.register_at_fork(after_in_child=_single_threaded_child)
