"""npusim.torch_npu: a CPU stand-in for torch_npu over npusim's emulator (needs torch: pip install "npusim[torch]").

The functions here have torch_npu's names, signatures and dtype conventions; they take and return torch
CPU tensors and run npusim's bit-exact numpy core (the results are the numpy face's, bit for bit, and bad
arguments raise the same npusim.AclnnError). bfloat16 and float8 tensors cross without copies: the tensor
is viewed through a same-width integer dtype, and numpy views that as the ml_dtypes dtype.

    import npusim.torch_npu
    with npusim.torch_npu.install(product="atlas-a2"):     # sys.modules["torch_npu"] is the stand-in
        import torch_npu
        y, scale = torch_npu.npu_dynamic_quant(x_bf16)       # runs the Atlas A2 kernel's arithmetic

Product: install(product=...) while the block runs; otherwise the environment variable NPUSIM_PRODUCT;
otherwise DEFAULT_PRODUCT ("atlas-a2"). The pytest plugin (npusim.pytest_plugin) has the fixture
`npusim_torch_npu` and the option --npusim-torch-npu for test modules that `import torch_npu` at their top.

Emulated: npu_dynamic_quant, npu_dynamic_quant_asymmetric, npu_quant_matmul, npu_trans_quant_param,
npu_convert_weight_to_int4pack, npu_format_cast / npu_format_cast_ / get_npu_format (ND / FRACTAL_NZ, kept
with the tensor's storage; no value changes; the casts also as Tensor methods), each also as
torch.ops.npu.<name> while install() is in force, contrib.module.LinearA8W8Quant and LinearQuant,
torch.ops.custom.indexer_compress_epilog (registered on import, in place), and, under names a torch user
looks for: fake_quantize_per_channel_affine_cachemask / fake_quantize_per_channel_affine (torch's own op
names and straight-through gradient, here with the NPU kernel's forward; torch itself is not patched, except
that install(npu_device=True) runs torch's own fake quant calls with them, as torch_npu runs them on npu tensors).
npusim_moe_init_routing_quant is aclnnMoeInitRoutingQuant (V1) under npusim's own name: torch_npu's
npu_moe_init_routing_quant is the V2 op, which is not emulated. Anything else torch_npu has (other
operators, torch_npu.npu, .npu() devices, other formats) raises an error that says it is not emulated;
install(npu_device=True) makes the 'npu' device the CPU (x.npu(), x.is_npu, device="npu",
torch.npu.is_available()).
"""
from __future__ import annotations

import contextlib
import functools
import importlib.abc
import importlib.util
import numbers
import os
import re
import sys
import threading
import time
import types

import ml_dtypes
import numpy as np
import torch
from torch._subclasses.fake_tensor import is_fake as _torch_is_fake

import npusim
from npusim import quant_matmul
from npusim.errors import (ACLNN_ERR_PARAM_INVALID, ACLNN_ERR_PARAM_NULLPTR,
                           AclnnError, invalid, params_named)
from npusim.plan import TensorSpec, asked_missing, is_transposed, launch_details, launched, make_plan
from npusim.quant_matmul import ACL_FORMAT_ND

__all__ = ["install", "current_product", "to_numpy", "from_numpy", "NotEmulatedError", "NotEmulatedAttributeError",
           "NotEmulatedImportError", "AclnnTypeError",
           "DEFAULT_PRODUCT", "PRODUCT_ENV", "npu_dynamic_quant", "npu_dynamic_quant_asymmetric", "npu_quant_matmul",
           "npu_trans_quant_param", "npu_convert_weight_to_int4pack", "npu_format_cast", "npu_format_cast_",
           "get_npu_format",
           "fake_quantize_per_channel_affine_cachemask",
           "fake_quantize_per_channel_affine", "npusim_moe_init_routing_quant", "hifloat8", "contrib"]

DEFAULT_PRODUCT = "atlas-a2"
PRODUCT_ENV = "NPUSIM_PRODUCT"


class NotEmulatedError(NotImplementedError):
    """A torch_npu feature npusim's stand-in does not emulate (NPU devices, other operators, formats)."""


class NotEmulatedAttributeError(NotEmulatedError, AttributeError):
    """A torch_npu attribute the stand-in lacks: still an AttributeError, so hasattr() and getattr(m, name,
    default) behave as for any module."""


class NotEmulatedImportError(NotEmulatedError, ImportError):
    """A torch_npu module the stand-in lacks (torch_npu.contrib.transfer_to_npu): still an ImportError, so
    `try: import ... except ImportError` guards take their fallback."""


class AclnnTypeError(AclnnError, TypeError):
    """An AclnnError of the torch face that torch's argument parser raises as a TypeError before any kernel runs
    (a None for a required Tensor, a dst_type that is no dtype): tests written against torch_npu expect a
    TypeError there. Status, message and parts are the AclnnError's; the numpy and aclnn faces keep AclnnError."""


def _missing_names(module: str, emulates: str):
    """A module-level __getattr__ for the stand-in's modules: dunders stay plain AttributeErrors (what tools probe
    for); any other missing name is a NotEmulatedAttributeError that says what `module` does emulate."""
    def missing(name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise NotEmulatedAttributeError(f"{module}.{name} is not emulated by npusim's torch_npu stand-in; {emulates}")
    return missing


def _eager(fn):
    """fn as the stand-in runs it: never traced by torch.compile (it does not trace into the emulator: numpy views
    of narrow dtypes, C kernels; inside install() the compute operators are recorded as their torch.ops.npu op
    instead, _traced, whose Meta kernel takes the output shapes from npusim's plan; anything else is a graph
    break and runs eagerly), and a call npusim does not model (an AclnnError marked not_emulated) raised as
    NotEmulatedError, not as the NPU's rejection."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AclnnError as exc:
            if exc.not_emulated:
                raise NotEmulatedError(str(exc)) from exc
            if exc.status == ACLNN_ERR_PARAM_NULLPTR and not isinstance(exc, TypeError):   # a None for a Tensor
                raise AclnnTypeError(exc.rule, exc.status, op=exc.op, param=exc.param,
                                     product=exc.product).with_traceback(exc.__traceback__) from None
            raise
    return torch.compiler.disable(run)


def _is_fake(t: torch.Tensor) -> bool:
    # a plain tensor is never fake: the check every eager call makes costs nothing then
    return type(t) is not torch.Tensor and _torch_is_fake(t)


# ------------------------------------------------------------------ tensors <-> arrays, no copies
# dtypes numpy has no own type for: the same-width integer torch views them through, and the ml_dtypes type
_NARROW = {
    torch.bfloat16: (torch.int16, np.dtype(ml_dtypes.bfloat16)),
    torch.float8_e4m3fn: (torch.uint8, np.dtype(ml_dtypes.float8_e4m3fn)),
    torch.float8_e5m2: (torch.uint8, np.dtype(ml_dtypes.float8_e5m2)),
    torch.float8_e8m0fnu: (torch.uint8, np.dtype(ml_dtypes.float8_e8m0fnu)),
}
_FROM_NARROW = {np_dt: t_dt for t_dt, (_, np_dt) in _NARROW.items()}


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A CPU tensor as a numpy array over the same memory (strides kept, nothing copied).

    bfloat16 / float8 tensors become ml_dtypes arrays through a same-width integer view. Raises
    NotEmulatedError for tensors on another device, TypeError for non-tensors."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise NotEmulatedError(f"npusim's torch_npu stand-in runs on CPU tensors; a tensor on device "
                               f"'{t.device}' is not emulated (keep it on the CPU)")
    if _is_fake(t):          # (a NotImplementedError: torch.compile runs the call eagerly instead)
        raise NotEmulatedError("npusim's torch_npu stand-in computes on data; a fake tensor (torch.compile tracing, "
                               "FakeTensorMode) is not emulated here")
    if t.layout != torch.strided or t.is_quantized:
        raise NotEmulatedError(f"npusim's torch_npu stand-in takes dense strided tensors, got layout {t.layout}"
                               + (" (quantized)" if t.is_quantized else ""))
    t = t.detach()
    if t.is_conj() or t.is_neg():
        t = t.resolve_conj().resolve_neg()
    narrow = _NARROW.get(t.dtype)
    if narrow is None:
        return t.numpy()
    return t.view(narrow[0]).numpy().view(narrow[1])


def from_numpy(a: np.ndarray) -> torch.Tensor:
    """A numpy array (ml_dtypes bfloat16 / float8 included) as a CPU tensor over the same memory."""
    a = np.asarray(a)
    if not a.flags.writeable:      # torch tensors are writable: never share read-only memory
        a = a.copy()
    t_dt = _FROM_NARROW.get(a.dtype)
    if t_dt is None:
        return torch.from_numpy(a)
    return torch.from_numpy(a.view(np.int16 if a.dtype.itemsize == 2 else np.uint8)).view(t_dt)


def _size_hint(d) -> int:
    """A size as an int: a symbolic one (torch.compile's dynamic shapes) by the value it was traced with, which
    adds no guard; an unbacked one raises NotEmulatedError (torch.compile then runs the op eagerly)."""
    if type(d) is int:
        return d
    hint = getattr(getattr(d, "node", None), "hint", None)
    if hint is None:
        raise NotEmulatedError(f"npusim plans from concrete shapes; a size {d} without a value to trace with is not "
                               "emulated: the operator runs eagerly (a graph break)")
    return int(hint)


def _from_input(planned: int, size):
    """A planned output size as a function of the input size it comes from (the same, or eight times or an
    eighth: int4 words), symbolic when that size is."""
    hint = _size_hint(size)
    for candidate, value in ((size, hint), (size * 8, hint * 8), (size // 8, hint // 8)):
        if planned == value:
            return candidate
    return planned


def _spec(t: torch.Tensor) -> TensorSpec:
    """A meta or fake tensor's shape (symbolic sizes by their traced values) and dtype as npusim's TensorSpec:
    what a plan needs. A tensor holding data among them is an error, as torch's own ops make it."""
    if t.device.type != "meta" and not _is_fake(t):
        raise NotEmulatedError(f"meta tensors mixed with a tensor on '{t.device}' are not emulated (torch's own "
                               "operators refuse such a mix too)")
    return _shape_and_dtype(t)


def _shape_and_dtype(t: torch.Tensor) -> TensorSpec:
    """Any tensor's shape (symbolic sizes by their traced values) and dtype as npusim's TensorSpec, and its
    layout (w.T of a contiguous weight, as some tilings see it) where its strides are plain numbers (not
    torch.compile's fake tensors, whose symbolic strides a test would guard on)."""
    narrow = _NARROW.get(t.dtype)
    return TensorSpec(tuple(_size_hint(d) for d in t.shape),
                      narrow[1] if narrow else torch.empty(0, dtype=t.dtype).numpy().dtype,
                      not _is_fake(t) and is_transposed(t))


def _torch_dtype(dt: np.dtype) -> torch.dtype:
    return _FROM_NARROW.get(dt) or torch.from_numpy(np.empty(0, dt)).dtype


def _arrays(op: str, convert=to_numpy, **tensors):
    """Each tensor argument as an array (or what `convert` makes of it; None stays None); a non-tensor is a
    TypeError naming it."""
    out = []
    for name, t in tensors.items():
        if t is None:
            out.append(None)
        elif isinstance(t, torch.Tensor):
            out.append(convert(t))
        else:
            raise TypeError(f"{op}: '{name}' must be a torch.Tensor (the torch_npu stand-in takes tensors), "
                            f"got {type(t).__name__}")
    return out


def _dtype_name(op: str, param: str, dt) -> str | None:
    """A torch dtype as npusim's dtype name (None stays None)."""
    if dt is None:
        return None
    if not isinstance(dt, torch.dtype):
        raise TypeError(f"{op}: '{param}' must be a torch.dtype or None, got {dt!r}")
    return str(dt).removeprefix("torch.")


# ------------------------------------------------------------------ product selection
# Each thread emulates the product of its own install() blocks. What install() changes (sys.modules, torch's
# attributes) is one for the process: the first block in force sets it up, the last one restores it, and blocks
# in several threads at once must agree on npu_device, which changes it.
_frames: list = []            # install() blocks in force, oldest first: [thread id, product or None, npu_device]
_frames_lock = threading.RLock()
_outer_state: list = []       # what the first block found (sys.modules, torch attributes), restored by the last


def _thread_product(frames, thread: int):
    """The innermost product of `thread`'s blocks (None if none names one)."""
    for t, p, _ in reversed(frames):
        if t == thread and p is not None:
            return p
    return None


def current_product() -> str:
    """The product the stand-in emulates now in this thread: the innermost install(product=...) of this thread's
    blocks; in a thread without blocks of its own, the product other threads' blocks name, when they all name
    one SoC (else RuntimeError: which one is meant?); else $NPUSIM_PRODUCT, else DEFAULT_PRODUCT ('atlas-a2')."""
    frames = list(_frames)
    me = threading.get_ident()
    default = os.environ.get(PRODUCT_ENV) or DEFAULT_PRODUCT
    if any(t == me for t, _, _ in frames):
        return _thread_product(frames, me) or default
    theirs = {_thread_product(frames, t) for t, _, _ in frames} - {None}     # the threads that name one
    socs = {_soc_or_name(p) for p in theirs}
    if len(socs) > 1:
        raise RuntimeError(f"this thread has no install() block, and other threads' blocks emulate different "
                           f"products ({', '.join(sorted(theirs))}): enter install(product=...) in this thread too")
    return theirs.pop() if theirs else default


def _soc_or_name(product: str) -> str:
    try:
        return npusim.get_product(product).soc
    except ValueError:
        return product


def _product_named(op: str) -> str:
    """The product in force as npusim's own errors name it (its SoC), for the stand-in's checks; an unknown
    one (e.g. from $NPUSIM_PRODUCT) is the error to report, as npusim's own operators report it."""
    try:
        return npusim.get_product(current_product()).soc
    except ValueError as exc:
        raise AclnnError(str(exc), op=op, param="product") from None


_MODULE_NAMES = ("torch_npu", "torch_npu.contrib", "torch_npu.contrib.module", "torch_npu.npu", "torch_npu.npu.utils")
_MISSING = object()


_NO_NPU_DEVICE = ("npusim's torch_npu stand-in emulates NPU operators on CPU tensors; NPU devices are not "
                  "emulated (keep the tensors on the CPU and drop .npu(), or install(npu_device=True), pytest "
                  "--npusim-npu-device, to have the 'npu' device mean the CPU)")


def _tensor_npu(self, *args, **kwargs):
    raise NotEmulatedError(f"Tensor.npu(): {_NO_NPU_DEVICE}")


def _module_npu(self, *args, **kwargs):
    raise NotEmulatedError(f"{type(self).__name__}.npu() (Module.npu): {_NO_NPU_DEVICE}")


# ------------------------------------------------------------------ install(npu_device=True): 'npu' is the CPU
_NPU_DEVICE = re.compile(r"npu(:\d+)?")


def _cpu_if_npu(value):
    return "cpu" if isinstance(value, str) and _NPU_DEVICE.fullmatch(value) else value


class _NpuIsCpu(torch.overrides.TorchFunctionMode):
    """Every torch call sees 'npu' / 'npu:N' (a device argument, or the string torch.device parses) as 'cpu'.
    torch itself has no npu device without the real torch_npu; only strings that are exactly a device name
    change. torch's ops that torch_npu runs with an emulated NPU kernel run the stand-in's (_TORCH_OPS_ON_NPU)."""

    def __torch_function__(self, func, _types, args=(), kwargs=None):
        kwargs = kwargs or {}
        args = tuple(_cpu_if_npu(a) for a in args)
        if "device" in kwargs or "type" in kwargs:
            kwargs = {k: _cpu_if_npu(v) if k in ("device", "type") else v for k, v in kwargs.items()}
        on_npu = _TORCH_OPS_ON_NPU.get(id(func))      # (by id: some callables torch passes are not hashable)
        return (on_npu[1] if on_npu else func)(*args, **kwargs)


def _to_cpu(self, *args, **kwargs):
    """Tensor.npu() / Module.npu() with install(npu_device=True): the tensor or module stays on the CPU."""
    return self


# torch_npu's Tensor.is_npu property. With npu_device=True the 'npu' device is the CPU, so a CPU tensor is on it
# (as x.device == torch.device("npu") says there); without it there is no npu device and no tensor is on one.
_IS_NPU_CPU = property(lambda self: self.device.type == "cpu", doc="True: the 'npu' device is the CPU here")
_IS_NPU_NEVER = property(lambda self: False, doc="False: npusim's stand-in has no npu device (npu_device=False)")


# torch_npu.npu.get_soc_version(): c10_npu::SocVersion of the SoC (Ascend/pytorch torch_npu/csrc/core/npu/
# NpuVariables.h; vllm-ascend's check_ascend_device_type reads 220-225 as A2, 250-255 as A3, 200-205 as 310P).
# Ascend 950 is 260, the value vllm-ascend reads as A5: the header we read does not list it yet.
_SOC_VERSION = {"Ascend910PremiumA": 100, "Ascend910ProA": 101, "Ascend910A": 102, "Ascend910ProB": 103,
                "Ascend310P1": 200, "Ascend310P3": 202, "Ascend310P5": 204, "Ascend310P7": 205,
                "Ascend910B1": 220, "Ascend910B2": 221, "Ascend910B2C": 222, "Ascend910B3": 223, "Ascend910B4": 224,
                "Ascend910B4-1": 225, "Ascend310B1": 240, "Ascend310B4": 243,
                "Ascend910_9391": 250, "Ascend910_9392": 251, "Ascend910_9381": 252, "Ascend910_9382": 253,
                "Ascend910_9372": 254, "Ascend910_9362": 255}


def _soc_version() -> int:
    soc = _product_named("torch.npu.get_soc_version")
    return 260 if soc.startswith("Ascend950") else _SOC_VERSION[soc]


# torch.npu's streams and events with install(npu_device=True): the CPU runs each operator before its call
# returns, so work is always complete and there is never anything to wait for; the calls are exact as no-ops.
class _Stream:
    """torch.npu.Stream on the CPU: synchronous (query() is True, the waits return at once)."""

    def __init__(self, device=None, priority=0, **kwargs):
        self.device, self.priority = torch.device("cpu"), priority

    def synchronize(self) -> None:
        pass

    def wait_stream(self, stream) -> None:
        pass

    def wait_event(self, event) -> None:
        pass

    def query(self) -> bool:
        return True

    def record_event(self, event=None):
        event = _Event() if event is None else event
        event.record(self)
        return event


class _Event:
    """torch.npu.Event on the CPU: record() notes time.perf_counter(), so elapsed_time() is the host time between
    two records, which is where the emulated operators ran."""

    def __init__(self, enable_timing=False, blocking=False, interprocess=False):
        self.enable_timing, self._recorded_at = enable_timing, None

    def record(self, stream=None) -> None:
        self._recorded_at = time.perf_counter()

    def wait(self, stream=None) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def query(self) -> bool:
        return True

    def elapsed_time(self, end_event) -> float:
        """Milliseconds from this event's record() to end_event's, as torch's Event.elapsed_time."""
        if not (self.enable_timing and end_event.enable_timing):
            raise RuntimeError("torch.npu.Event.elapsed_time: both events must be created with enable_timing=True")
        if self._recorded_at is None or end_event._recorded_at is None:
            raise RuntimeError("torch.npu.Event.elapsed_time: both events must be recorded first")
        return (end_event._recorded_at - self._recorded_at) * 1e3


def _host_memory() -> tuple[int, int]:
    """(free, total) bytes of the host's RAM, the 'npu' device's memory here; (0, 0) where the OS does not say."""
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return os.sysconf("SC_AVPHYS_PAGES") * page, os.sysconf("SC_PHYS_PAGES") * page
    except (ValueError, OSError, AttributeError):
        return 0, 0


def _npu_module() -> types.ModuleType:
    """torch.npu (and torch_npu.npu) with install(npu_device=True): one device, the CPU; its housekeeping calls
    do nothing, its streams and events are synchronous, its memory is the host's (the allocator counters 0:
    torch's CPU allocator keeps none); anything else is not emulated."""
    m = types.ModuleType("torch.npu", "npusim's stand-in for torch.npu: one 'npu' device, which is the CPU")
    m.is_available = lambda: True
    m.is_initialized = lambda: True
    m.device_count = lambda: 1
    m.current_device = lambda: 0
    m.set_device = lambda device: None
    m.device = lambda device: contextlib.nullcontext()         # `with torch.npu.device(i):`, the one device
    m.synchronize = lambda device=None: None
    m.empty_cache = lambda: None
    m.manual_seed = m.manual_seed_all = lambda seed: torch.manual_seed(seed)
    m.get_device_name = lambda device=None: _product_named("torch.npu.get_device_name")
    m.get_soc_version = _soc_version
    # bfloat16: not on the 310p910 family (Atlas inference 310P, Atlas training 910A), whose npu_dynamic_quant
    # takes float16 only
    m.is_bf16_supported = lambda including_emulation=True: npusim.get_product(
        _product_named("torch.npu.is_bf16_supported")).family != "310p910"
    m.config = types.SimpleNamespace(allow_internal_format=False)    # a flag to set; npusim's formats ignore it
    m.mem_get_info = lambda device=None: _host_memory()
    m.get_device_properties = lambda device=None: types.SimpleNamespace(
        name=_product_named("torch.npu.get_device_properties"), total_memory=_host_memory()[1])
    m.memory_allocated = m.max_memory_allocated = lambda device=None: 0
    m.reset_peak_memory_stats = lambda device=None: None
    m.Stream, m.Event = _Stream, _Event
    # set_compile_mode chooses how the NPU builds its operators (jit or prebuilt binaries), which the emulator does
    # not do: the setting is only kept for is_jit_compile_false. Default (torch_npu's "(beta)
    # torch_npu.npu.set_compile_mode" doc): jit_compile=True on Atlas training / inference products, False on A2/A3
    jit = []

    def set_compile_mode(jit_compile=False):
        jit[:] = [bool(jit_compile)]

    def is_jit_compile_false():
        fam = npusim.get_product(_product_named("torch.npu.is_jit_compile_false")).family
        return not (jit[0] if jit else fam == "310p910")

    def set_option(option):
        """torch.npu.set_option({...}): NPU runtime options, none of which the emulator has."""
        if not isinstance(option, dict):
            raise TypeError("npu option must be a dict.")      # torch_npu's own check
    m.set_compile_mode, m.is_jit_compile_false, m.set_option = set_compile_mode, is_jit_compile_false, set_option
    streams = [_Stream()]                 # the default stream, then those torch.npu.stream(s) blocks made current
    m.default_stream = lambda device=None: streams[0]
    m.current_stream = lambda device=None: streams[-1]

    @contextlib.contextmanager
    def stream(s):
        """torch.npu.stream(s): current_stream() is s inside the block (None: the current one stays)."""
        streams.append(streams[-1] if s is None else s)
        try:
            yield
        finally:
            streams.pop()
    m.stream = stream

    m.__getattr__ = _missing_names("torch.npu", "with npu_device=True it has "
                                   + ", ".join(sorted(n for n in vars(m) if not n.startswith("_"))))
    # torch_npu.npu.utils (`import torch_npu.npu.utils as npu_utils`, torch.npu.utils.get_soc_version()): torch_npu
    # defines the device calls there and re-exports them from torch.npu; here the same functions
    m.utils = types.ModuleType("torch.npu.utils", "npusim's stand-in for torch_npu.npu.utils: torch.npu's calls")
    m.utils.__getattr__ = lambda name: getattr(m, name)
    return m


_npu_device: list = []        # the modes of the install(npu_device=True) blocks in force, innermost last


@contextlib.contextmanager
def install(product: str | None = None, *, npu_device: bool = False):
    """Make `import torch_npu` give this stand-in while the block runs, emulating `product`.

    Puts the stand-in (and its contrib, contrib.module) into sys.modules and restores whatever was there
    before (a real torch_npu, a MagicMock stub, or nothing) on exit; inside the block Tensor.npu() raises
    NotEmulatedError and Tensor.is_npu is False, Tensor.npu_format_cast / npu_format_cast_ are torch_npu's
    tensor methods, and the emulated operators are torch.ops.npu.<name> too (see _NPU_OPS). Nested blocks
    are allowed; the innermost product wins. Each thread emulates the product of its own blocks (a thread
    without blocks, the one product other threads' blocks emulate); blocks in force in several threads at once
    must agree on npu_device (RuntimeError otherwise). Yields the stand-in module.

    npu_device=True: code written for the NPU runs unchanged on the CPU. The 'npu' device is the CPU
    (x.npu(), x.to("npu"), torch.randn(..., device="npu:0"), torch.device("npu"), module.npu() leave the
    tensors on the CPU, and x.is_npu is True for CPU tensors), and torch.npu / torch_npu.npu (`import
    torch_npu.npu` too) answer is_available() etc. for one device, with synchronous streams and events. Every
    torch call in the block then goes through a TorchFunctionMode that rewrites those device names and runs
    torch's fake quant ops with the NPU kernel (_TORCH_OPS_ON_NPU). A block nested in one with npu_device=True
    keeps it."""
    if product is not None:
        npusim.get_product(product)          # an unknown product fails here, not at the first call
    if not isinstance(npu_device, bool):
        raise TypeError(f"install(): npu_device must be True or False, got {npu_device!r}"[:200])
    this = sys.modules[__name__]
    me = threading.get_ident()
    mode = None
    with _frames_lock:
        npu_device = npu_device or any(d for t, _, d in _frames if t == me)
        _check_other_threads(me, npu_device)
        state = _saved_state()
        if not _frames:
            _outer_state[:] = [state]
        frame = [me, product, npu_device]
        _frames.append(frame)
        try:
            sys.modules.update({"torch_npu": this, "torch_npu.contrib": contrib,
                                "torch_npu.contrib.module": contrib.module})
            torch.Tensor.npu = _to_cpu if npu_device else _tensor_npu
            torch.Tensor.is_npu = _IS_NPU_CPU if npu_device else _IS_NPU_NEVER
            torch.Tensor.npu_format_cast, torch.Tensor.npu_format_cast_ = (_npu_format_cast_method,
                                                                             _npu_format_cast__method)
            for name in ("torch_npu.npu", "torch_npu.npu.utils"):     # (a real torch_npu's, unless npu_device
                sys.modules.pop(name, None)                               # sets them)
            torch.nn.Module.npu = _to_cpu if npu_device else _module_npu
            if npu_device:
                torch.npu = sys.modules["torch_npu.npu"] = _npu_module()     # `import torch_npu.npu` works too
                sys.modules["torch_npu.npu.utils"] = torch.npu.utils
                mode = _NpuIsCpu()
                mode.__enter__()
                _npu_device.append(mode)
            if len(_frames) == 1:                # the outermost block defines torch.ops.npu.*
                _npu_lib.append(_define_ops("npu", _NPU_OPS))
        except BaseException:
            _leave(frame, mode, state)
            raise
    try:
        yield this
    finally:
        with _frames_lock:
            _leave(frame, mode, state)


def _check_other_threads(me: int, npu_device: bool) -> None:
    """install() in a thread while other threads hold blocks: npu_device changes torch for the whole process
    (Tensor.npu, torch.npu), so every block in force must agree on it."""
    for t, _, theirs in _frames:
        if t != me and theirs != npu_device:
            raise RuntimeError(
                f"install(npu_device={npu_device}) while another thread is inside install(npu_device={theirs}): "
                "npu_device changes torch for the whole process (Tensor.npu, torch.npu), so blocks in force in "
                "several threads at once must agree on it")


def _saved_state():
    """What install() changes: the torch_npu modules in sys.modules and the torch attributes it patches."""
    patched = [(torch.Tensor, "npu"), (torch.Tensor, "is_npu"), (torch.nn.Module, "npu"), (torch, "npu"),
               (torch.Tensor, "npu_format_cast"), (torch.Tensor, "npu_format_cast_")]
    return ({name: sys.modules.get(name, _MISSING) for name in _MODULE_NAMES},
            [(owner, name, owner.__dict__.get(name, _MISSING)) for owner, name in patched])


def _restore(state) -> None:
    modules, attrs = state
    for name, mod in modules.items():
        if mod is _MISSING:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = mod
    for owner, name, value in attrs:
        if value is _MISSING:
            if name in owner.__dict__:
                delattr(owner, name)
        else:
            setattr(owner, name, value)


def _leave(frame, mode, state) -> None:
    """End one install() block (under _frames_lock): the last block restores what the first found; a block
    nested in its own thread's restores what it found (its outer block's setting); while another thread's
    blocks remain, the shared state stays as they need it."""
    if mode is not None and mode in _npu_device:      # (not always the last: another thread's may follow it)
        _npu_device.remove(mode)
        mode.__exit__(None, None, None)
    _frames.remove(frame)
    if not _frames:
        _npu_lib.clear()                     # dropping the Library removes its ops again (a real torch_npu
        _restore(_outer_state.pop())         # imported later defines its own)
    elif all(t == frame[0] for t, _, _ in _frames):
        _restore(state)


# ------------------------------------------------------------------ operators
# torch_npu's own dtype code for HiFloat8, which torch has no dtype for (torchair's converters: TORCH_HIFLOAT8 =
# 290; vllm-ascend's test stubs give torch_npu.hifloat8 the same value); its tensors hold the uint8 codes
hifloat8 = 290


def _dst_type(op: str, dst_type) -> str:
    """torch_npu's dst_type (a torch dtype, or torch_npu.hifloat8) as the numpy face's name; quint4x2 = int4
    packed 8 per int32."""
    if dst_type is None:
        return "int8"
    allowed = {torch.int8: "int8", torch.quint4x2: "quint4x2", torch.float8_e4m3fn: "float8_e4m3fn",
               torch.float8_e5m2: "float8_e5m2"}
    if type(dst_type) is int and dst_type == hifloat8:
        return "hifloat8"
    if not isinstance(dst_type, torch.dtype) or dst_type not in allowed:
        # torch.ops.npu's ScalarType argument keeps the low 8 bits of hifloat8's 290: it arrives as torch.uint5
        hint = "" if dst_type is not torch.uint5 else (
            " (torch_npu.hifloat8 arrives as torch.uint5 through torch.ops.npu's ScalarType argument, which cannot "
            "carry its code 290: call torch_npu.npu_dynamic_quant for it)")
        rule = (f"must be None, torch.int8, torch.quint4x2 (int4 packed eight per int32) or, on Ascend 950, "
                f"torch.float8_e4m3fn / torch.float8_e5m2 / torch_npu.hifloat8; got {dst_type!r}" + hint)
        if not isinstance(dst_type, torch.dtype):     # torch's parser refuses a non-dtype ScalarType: a TypeError
            raise AclnnTypeError(rule, ACLNN_ERR_PARAM_INVALID, op=op, param="dst_type", product=_product_named(op))
        raise invalid(op, "dst_type", rule, _product_named(op))
    return allowed[dst_type]


def _per_token_only(op: str, quant_mode, dst_type_max) -> None:
    """The dynamic-quant keywords of torch_npu's current signature that npusim takes at their defaults only:
    quant_mode 'pertoken' (the doc's default; its other modes are Ascend 950 features) and dst_type_max 0.0
    (the output dtype's own maximum)."""
    if quant_mode != "pertoken":
        raise NotEmulatedError(f"{op}: quant_mode {quant_mode!r} is not emulated by npusim; only 'pertoken' "
                               f"(the default) is"[:300])
    if isinstance(dst_type_max, (bool, np.bool_)) or not isinstance(dst_type_max, numbers.Real) or dst_type_max != 0:
        raise NotEmulatedError(f"{op}: dst_type_max {dst_type_max!r} is not emulated by npusim; only 0.0 (the "
                               f"default: the output dtype's maximum) is"[:300])


def _traced(tensors, attrs=()) -> bool:
    """True inside install() (torch.ops.npu.* defined) while torch.compile traces, or when every tensor argument
    is a meta or fake tensor, and the call's attributes fit op-plugin's schema: the call then goes to its
    torch.ops.npu op, whose Meta kernel gives the output shapes from npusim's plan and whose CPU kernel runs the
    emulator (when the graph runs)."""
    if not _npu_lib or any(type(a) is int for a in attrs):
        return False
    if torch.compiler.is_compiling():
        return True
    given = [t for t in tensors if isinstance(t, torch.Tensor)]
    return bool(given) and all(t.device.type == "meta" or _is_fake(t) for t in given)


def _meta_outputs(plan, names, shapes) -> tuple:
    """Meta tensors with the dtypes of the outputs `names` of an npusim plan (made from TensorSpecs: a Meta
    kernel checks what the emulator checks, on shapes and dtypes), shaped by shapes(plan shapes): the plan's,
    with the sizes that come from the inputs taken from them (symbolic under dynamic shapes)."""
    planned = [plan.outputs[n] for n in names]
    return tuple(torch.empty(shape, dtype=_torch_dtype(o.dtype), device="meta")
                 for shape, o in zip(shapes([o.shape for o in planned]), planned))


def _on_meta(t) -> bool:
    """t is a tensor on the meta device, not one of torch.compile's fake tensors."""
    return isinstance(t, torch.Tensor) and t.device.type == "meta" and not _is_fake(t)


def _meta_launch(plan, tensor) -> None:
    """A call on meta tensors (`tensor`, its first, on the meta device; not torch.compile's tracing, whose
    fake tensors run again when the graph runs): a launch planned from shapes alone, which the recorders that
    ask for such calls hear of (perfmodel.record(meta=True))."""
    if _on_meta(tensor) and not torch.compiler.is_compiling():
        launched(plan, meta=True)


def _matmul_lead(x1, x2) -> tuple:
    """A matmul output's sizes but n: the broadcast batch and x1's m (symbolic where theirs are)."""
    return tuple(torch.broadcast_shapes(x1.shape[:-2], x2.shape[:-2])) + (x1.shape[-2],)


_DQ_OUTPUTS = {"npu_dynamic_quant": ("y", "scale"), "npu_dynamic_quant_asymmetric": ("y", "scale", "offset")}


@_eager
def _dynamic_quant(op, input, smooth_scales, group_index, dst_type, quant_mode, dst_type_max, meta=False):
    """npu_dynamic_quant / _asymmetric on the current product (meta: the output shapes only)."""
    _per_token_only(op, quant_mode, dst_type_max)
    x, smooth_scales, group_index = _arrays(op, _spec if meta else to_numpy, input=input,
                                            smooth_scales=smooth_scales, group_index=group_index)
    dst = _dst_type(op, dst_type)
    # torch_npu's name for the numpy face's x, and group_index's hint in torch's words
    with params_named({"x": "input", "np.cumsum(tokens_per_expert)": "torch.cumsum(tokens_per_expert, 0)"},
                      in_rules=True):
        if meta:      # y: input's rows and H (or H / 8 int4 words); the scales: input's rows
            rows = tuple(input.shape[:-1])
            plan = make_plan(op, product=current_product(), x=x, smooth_scales=smooth_scales,
                             group_index=group_index, dst_type=dst)
            _meta_launch(plan, input)
            return _meta_outputs(plan, _DQ_OUTPUTS[op], lambda planned: [
                rows + (_from_input(planned[0][-1], input.shape[-1]),)] + [rows] * (len(planned) - 1))
        outs = getattr(npusim, op)(x, smooth_scales, group_index, dst, product=current_product())
    return tuple(from_numpy(a) for a in outs)


def npu_dynamic_quant(input, *, smooth_scales=None, group_index=None, dst_type=None, quant_mode="pertoken",
                      dst_type_max=0.0):
    """torch_npu.npu_dynamic_quant -> (y, scale): npusim.npu_dynamic_quant on the current product.

    dst_type None / torch.int8 gives int8 y; torch.quint4x2 gives int32 y with input's last dim / 8 (eight
    int4 per word); Ascend 950 also takes torch.float8_e4m3fn / torch.float8_e5m2 and torch_npu.hifloat8
    (uint8 y holding HiFloat8 codes). scale is float32.
    quant_mode and dst_type_max are taken at their defaults only ('pertoken', 0.0; NotEmulatedError)."""
    if _traced((input, smooth_scales, group_index), (dst_type,)):
        return torch.ops.npu.npu_dynamic_quant(input, smooth_scales=smooth_scales, group_index=group_index,
                                               dst_type=dst_type, quant_mode=quant_mode, dst_type_max=dst_type_max)
    return _dynamic_quant("npu_dynamic_quant", input, smooth_scales, group_index, dst_type, quant_mode,
                          dst_type_max)


def npu_dynamic_quant_asymmetric(input, *, smooth_scales=None, group_index=None, dst_type=None,
                                 quant_mode="pertoken", dst_type_max=0.0):
    """torch_npu.npu_dynamic_quant_asymmetric -> (y, scale, offset), as npu_dynamic_quant."""
    if _traced((input, smooth_scales, group_index), (dst_type,)):
        return torch.ops.npu.npu_dynamic_quant_asymmetric(input, smooth_scales=smooth_scales,
                                                          group_index=group_index, dst_type=dst_type,
                                                          quant_mode=quant_mode, dst_type_max=dst_type_max)
    return _dynamic_quant("npu_dynamic_quant_asymmetric", input, smooth_scales, group_index, dst_type, quant_mode,
                          dst_type_max)


def _dq_kernel(op, meta=False):
    """The torch.ops.npu kernel (CPU, or Meta) of a dynamic quant op, with op-plugin's keywords."""
    def kernel(input, *, smooth_scales=None, group_index=None, dst_type=None, quant_mode="pertoken",
               dst_type_max=0.0):
        return _dynamic_quant(op, input, smooth_scales, group_index, dst_type, quant_mode, dst_type_max, meta)
    return kernel


# npu_quant_matmul keywords of the current signature that npusim accepts only as None (torch_npu doc: reserved
# on Atlas A2/A3; Ascend 950 features the stand-in does not model)
_QMM_NONE_ONLY = {"x1_dtype": "read x1 as another dtype", "x2_dtype": "read x2 as another dtype",
                  "pertoken_scale_dtype": "read pertoken_scale as another dtype",
                  "scale_dtype": "read scale as another dtype", "group_sizes": "per-group quantization",
                  "y_scale": "dequantizing the output"}


def npu_quant_matmul(x1, x2, scale, *, offset=None, pertoken_scale=None, bias=None, output_dtype=None,
                     x1_dtype=None, x2_dtype=None, pertoken_scale_dtype=None, scale_dtype=None, group_sizes=None,
                     y_scale=None):
    """torch_npu.npu_quant_matmul: npusim.npu_quant_matmul on the current product.

    output_dtype: None (int8), torch.int8, torch.float16, torch.bfloat16, torch.int32. x1_dtype, x2_dtype,
    pertoken_scale_dtype, scale_dtype, group_sizes and y_scale are accepted as None only (NotEmulatedError)."""
    kw = dict(offset=offset, pertoken_scale=pertoken_scale, bias=bias, output_dtype=output_dtype, x1_dtype=x1_dtype,
              x2_dtype=x2_dtype, pertoken_scale_dtype=pertoken_scale_dtype, scale_dtype=scale_dtype,
              group_sizes=group_sizes, y_scale=y_scale)
    if _traced((x1, x2, scale, offset, pertoken_scale, bias), (x1_dtype, x2_dtype, pertoken_scale_dtype, scale_dtype)):
        return torch.ops.npu.npu_quant_matmul(x1, x2, scale, **kw)
    return _quant_matmul(x1, x2, scale, **kw)


@_eager
def _quant_matmul(x1, x2, scale, *, offset=None, pertoken_scale=None, bias=None, output_dtype=None, x1_dtype=None,
                  x2_dtype=None, pertoken_scale_dtype=None, scale_dtype=None, group_sizes=None, y_scale=None,
                  meta=False):
    """npu_quant_matmul on the current product (meta: the output's shape only); its torch.ops.npu kernels."""
    op = "npu_quant_matmul"
    given = locals()                      # the arguments by name, for the reserved keywords below
    for name in _QMM_NONE_ONLY:
        value = given[name]
        if value is not None:
            raise NotEmulatedError(f"{op}: '{name}' ({_QMM_NONE_ONLY[name]}) is not emulated by npusim; "
                                   f"only None is accepted")
    _int4_layout_rules(op, x1, x2)
    x1_t, x2_t = x1, x2                 # the tensors (x1, x2 become arrays or specs)
    x1, x2, scale, offset, pertoken_scale, bias = _arrays(op, _spec if meta else to_numpy, x1=x1, x2=x2,
                                                          scale=scale, offset=offset, pertoken_scale=pertoken_scale,
                                                          bias=bias)
    out = _dtype_name(op, "output_dtype", output_dtype)
    product, x2_format = current_product(), _format_name(x2_t)
    if x2_format == "NZ" and npusim.get_product(product).family == "310p910" and not is_transposed(x2):
        # the aclnn checks come first (the plan makes them), then the tiling's check of an NZ weight
        quant_matmul.check_weight_format(make_plan(op, product=product, x1=x1, x2=x2, scale=scale, offset=offset,
                                                   pertoken_scale=pertoken_scale, bias=bias, output_dtype=out),
                                         x2_format)
    if meta:      # y: the broadcast batch, x1's m, x2's n (int4: as the plan reads x2's layout)
        _meta_only_rules(op, scale, out)
        plan = make_plan(op, product=product, x1=x1, x2=x2, scale=scale, offset=offset,
                         pertoken_scale=pertoken_scale, bias=bias, output_dtype=out)
        with launch_details(x2_format=x2_format):
            _meta_launch(plan, x1_t)
        lead = _matmul_lead(x1_t, x2_t)
        return _meta_outputs(plan, ("y",), lambda planned: [
            lead + (_from_input(planned[0][-1], x2_t.shape[-1]),)])[0]
    with launch_details(x2_format=x2_format):
        y = npusim.npu_quant_matmul(x1, x2, scale, offset=offset, pertoken_scale=pertoken_scale, bias=bias,
                                    output_dtype=out, product=product)
    return from_numpy(y)


def _meta_only_rules(op, scale, out):
    """Two scale rules of torch_npu's npu_quant_matmul meta function (Ascend/op-plugin@f299d83
    _meta_registrations.py) that its eager path and the aclnn checker do not make: no uint64 scale, and no int64
    scale with a bfloat16 output (the 950 V4 table's fixpipe path). Meta and fake tensors (torch.compile,
    FakeTensorMode) run that meta function on the NPU too, so the stand-in raises its RuntimeError there;
    eager calls follow the aclnn rules and accept both (scale: the TensorSpec the plan takes)."""
    dt = None if scale is None else scale.dtype.name          # a TensorSpec's numpy dtype
    if dt == "uint64":
        raise RuntimeError(f"{op}: scale's type supported for float32, int64 and bfloat16, but scale.dtype is "
                           "torch.uint64 (torch_npu's meta function, which torch.compile and fake tensors run; "
                           "an eager call takes a uint64 scale)")
    if dt == "int64" and out == "bfloat16":
        raise RuntimeError(f"{op}: when output_dtype is bfloat16, scale's dtype must be bfloat16 or float32, but "
                           "scale's dtype is torch.int64 (torch_npu's meta function, which torch.compile and fake "
                           "tensors run; an eager call on Ascend 950 takes it)")


def _int4_layout_rules(op, x1, x2):
    """torch_npu's int4 layout rules that only a tensor shows: x1 (m, k // 8) contiguous; a (k // 8, n) x2 is
    the transpose of a contiguous (n, k // 8) (torch_npu npu_quant_matmul doc, int4 constraints)."""
    if not (isinstance(x1, torch.Tensor) and isinstance(x2, torch.Tensor)
            and x1.dtype == x2.dtype == torch.int32 and x1.dim() >= 2 and x2.dim() == 2):
        return
    try:
        if npusim.get_product(current_product()).family != "a2a3":
            return          # no int4 there: npusim's dtype check says so, not a layout rule
    except ValueError:
        return
    if not x1.is_contiguous():
        raise invalid(op, "x1", "int4 (int32-packed) x1 must be contiguous (m, k // 8) (torch_npu doc)",
                      _product_named(op))
    k = 8 * x1.shape[-1]
    if x2.shape[0] != k and 8 * x2.shape[0] == k and not x2.t().is_contiguous():
        raise invalid(op, "x2", "an int4 weight given as (k // 8, n) must be the transpose of a contiguous "
                      "(n, k // 8) tensor, e.g. npu_convert_weight_to_int4pack(w).t() (torch_npu doc)",
                      _product_named(op))


@_eager
def npu_convert_weight_to_int4pack(weight, inner_k_tiles=0):
    """torch_npu.npu_convert_weight_to_int4pack: int32 int4 values (k, n) / (n, k) -> int32 (., last / 8).
    torch_npu takes 2-D contiguous weights only (the aclnn op, npusim's numpy face, also 3-D grouped ones)."""
    op = "npu_convert_weight_to_int4pack"
    (w,) = _arrays(op, weight=weight)
    if not weight.is_contiguous():
        raise invalid(op, "weight", "must be contiguous (torch_npu doc)", _product_named(op))
    if weight.dim() != 2:
        raise invalid(op, "weight", f"must be 2-D (k, n) or (n, k) (torch_npu doc), got shape "
                      f"{tuple(weight.shape)}", _product_named(op))
    if 0 in weight.shape:
        raise invalid(op, "weight", f"dimensions must be greater than 0, got shape {tuple(weight.shape)} "
                      "(op-plugin int4pack_params_check)", _product_named(op))
    return from_numpy(npusim.npu_convert_weight_to_int4pack(w, inner_k_tiles, product=current_product()))


# torch_npu keeps a tensor's format in its storage's NPU descriptor: views of it, and a Parameter whose .data
# is replaced by it, report it too. The stand-in keeps it the same way, on the storage's Python object, which
# torch keeps alive (with its attributes) as long as the storage lives.
_FORMAT_ATTR = "_npusim_acl_format"


def _acl_format(op: str, tensor, acl_format) -> int:
    """The checked ACL format code of a cast (an int, or a tensor whose format is taken), npusim's rule."""
    (x,) = _arrays(op, _spec if _on_meta(tensor) else to_numpy, input=tensor)
    if isinstance(acl_format, torch.Tensor):
        acl_format = get_npu_format(acl_format)
    npusim.npu_format_cast(x, acl_format)          # 2 (ND) or 29 (FRACTAL_NZ), else an AclnnError
    return int(acl_format)


def _format_of(t: torch.Tensor) -> int:
    return getattr(t.untyped_storage(), _FORMAT_ATTR, ACL_FORMAT_ND)


def _format_name(t: torch.Tensor) -> str:
    """'NZ' or 'ND': a quant matmul weight's storage format, which the arrays npusim computes from do not carry;
    told to perfmodel.record's hook (npusim.plan.launch_details), whose cost model depends on it."""
    return "NZ" if _format_of(t) == quant_matmul.ACL_FORMAT_FRACTAL_NZ else "ND"


def get_npu_format(input) -> int:
    """torch_npu.get_npu_format: the ACL format of the tensor's storage, 29 (FRACTAL_NZ) when npu_format_cast
    made it or npu_format_cast_ set it, else 2 (ND)."""
    # a dense CPU tensor (or a meta one: its storage carries the mark too), else a clear error
    _arrays("get_npu_format", _spec if _on_meta(input) else to_numpy, input=input)
    return _format_of(input)


@_eager
def npu_format_cast(input, acl_format, customize_dtype=None):
    """torch_npu.npu_format_cast: `input` itself if its storage has the format already, else the same view of
    a copy of its storage in that format (torch_npu's FormatCast.cpp writes a new tensor); get_npu_format
    reports it. ACL format 2 (ND) or 29 (FRACTAL_NZ), or a tensor whose format to take; the values never
    change (npusim computes from values). Other formats and customize_dtype are not emulated."""
    if customize_dtype is not None:
        raise NotEmulatedError("npu_format_cast: customize_dtype is not emulated by npusim")
    fmt = _acl_format("npu_format_cast", input, acl_format)      # (input checked there)
    if _format_of(input) == fmt:
        return input
    # the whole storage is cast and the view keeps its sizes, strides and offset (FormatCast.cpp: set_)
    storage = input.untyped_storage().clone()
    setattr(storage, _FORMAT_ATTR, fmt)
    return torch.empty(0, dtype=input.dtype, device=input.device).set_(storage, input.storage_offset(), input.size(),
                                                                        input.stride())


@_eager
def npu_format_cast_(input, acl_format):
    """torch_npu.npu_format_cast_: sets the format of `input`'s storage in place (ACL format 2 or 29, or a
    tensor's) and returns `input`; its values stay as they are."""
    setattr(input.untyped_storage(), _FORMAT_ATTR, _acl_format("npu_format_cast_", input, acl_format))
    return input


@_eager
def _linear_a8w8_quant_packs_scale(x1, weight, scale, offset, pertoken_scale, output_dtype) -> bool:
    """LinearA8W8Quant's own rules on the current product (npusim.quant_matmul's, checked on shapes and dtypes:
    nothing runs) and whether its forward packs the scale with npu_trans_quant_param (npusim's packing rule)."""
    op = "LinearA8W8Quant"
    x1, weight, scale, offset, pertoken_scale = _arrays(op, _shape_and_dtype, x1=x1, weight=weight, scale=scale,
                                                        offset=offset, pertoken_scale=pertoken_scale)
    _, matmul_scale = quant_matmul._linear_a8w8_quant_args(x1, weight, scale, offset, pertoken_scale,
                                                           _dtype_name(op, "output_dtype", output_dtype),
                                                           current_product())
    return matmul_scale is not scale          # (packed: the int64 scale npu_trans_quant_param's plan gives)


@_eager
def _linear_a8w8_quant(x1, weight, scale, offset=None, pertoken_scale=None, bias=None, output_dtype=None,
                       meta=False):
    """contrib.module.LinearA8W8Quant's forward on the current product as one op (meta: the output's shape only):
    the kernels of torch.ops.npu.npusim_linear_a8w8_quant, which the module calls while torch.compile traces."""
    op = "LinearA8W8Quant"
    args = _arrays(op, _spec if meta else to_numpy, x1=x1, weight=weight, scale=scale, offset=offset,
                   pertoken_scale=pertoken_scale, bias=bias)
    out = _dtype_name(op, "output_dtype", output_dtype)
    if meta:      # y: x1's rows, n = the weight's out_features
        _meta_only_rules("npu_quant_matmul", args[2], out)      # torch_npu's module calls it with an int scale as given
        plan = quant_matmul.plan_linear_a8w8_quant(*args, out, product=current_product())
        lead = _matmul_lead(x1, weight)
        return _meta_outputs(plan, ("y",), lambda planned: [lead + (_from_input(planned[0][-1], weight.shape[-2]),)])[0]
    with launch_details(x2_format=_format_name(weight)):
        return from_numpy(quant_matmul.linear_a8w8_quant_forward(*args, out, product=current_product()))


# the tensor methods: plain functions, so that torch.compile inlines them and meets the graph break of the
# functions they call (a disabled function set on torch.Tensor itself is run on fake tensors, and fails)
def _npu_format_cast_method(self, acl_format, customize_dtype=None):
    return npu_format_cast(self, acl_format, customize_dtype)


def _npu_format_cast__method(self, acl_format):
    return npu_format_cast_(self, acl_format)


def npu_trans_quant_param(scale, offset=None, round_mode=0):
    """torch_npu.npu_trans_quant_param -> int64 tensor: npusim.npu_trans_quant_param. round_mode None is 0.
    Traced as its torch.ops.npu op, as torch_npu's has a meta function (a compiled forward may pack its scale)."""
    if _traced((scale, offset)):
        return torch.ops.npu.npu_trans_quant_param(scale, offset, round_mode)
    return _trans_quant_param(scale, offset, round_mode)


@_eager
def _trans_quant_param(scale, offset=None, round_mode=0, meta=False):
    """npu_trans_quant_param on the current product (meta: the output's shape only); its torch.ops.npu kernels."""
    op = "npu_trans_quant_param"
    scale_t, offset_t = scale, offset
    scale, offset = _arrays(op, _spec if meta else to_numpy, scale=scale, offset=offset)
    if round_mode is None:      # op-plugin's schema: int? round_mode=0; its kernel takes round_mode.value_or(0)
        round_mode = 0          # (Ascend/op-plugin@d1eaa64e, op_plugin/ops/opapi/TransQuantParamKernelNpuOpApi.cpp)
    if meta:      # y: the scale's shape, or a longer offset's when the scale is one value (symbolic as theirs)
        plan = make_plan(op, product=current_product(), scale=scale, offset=offset, round_mode=round_mode)
        _meta_launch(plan, scale_t)
        src = offset_t if offset is not None and plan.outputs["y"].shape == offset.shape else scale_t
        return _meta_outputs(plan, ("y",), lambda planned: [tuple(src.shape)])[0]
    return from_numpy(npusim.npu_trans_quant_param(scale, offset, round_mode, product=current_product()))


class _FakeQuantPerChannel(torch.autograd.Function):
    """The NPU kernel's (out, mask) forward with torch's straight-through backward: grad_input = grad * mask
    (torch's fake_quantize_per_channel_affine_cachemask_backward). As in torch, scale and zero_point are
    not differentiable, so QAT code that needs no more than torch's op runs unchanged."""

    @staticmethod
    def forward(ctx, input, scale, zero_point, axis, quant_min, quant_max):
        op = "fake_quantize_per_channel_affine_cachemask"
        for name, needs_grad in zip(("scale", "zero_point"), ctx.needs_input_grad[1:3]):
            if needs_grad:
                raise RuntimeError(f"{op}: not differentiable with respect to '{name}' (as in torch); "
                                   f"'{name}' must not require grad")
        x, scale, zero_point = _arrays(op, input=input, scale=scale, zero_point=zero_point)
        with params_named({"x": "input"}, in_rules=True):      # torch's name for the numpy face's x
            out, mask = npusim.fake_quantize_per_channel_affine_cachemask(x, scale, zero_point, axis, quant_min,
                                                                          quant_max, product=current_product())
        out, mask = from_numpy(out), from_numpy(mask)
        ctx.mark_non_differentiable(mask)
        ctx.save_for_backward(mask)
        return out, mask

    @staticmethod
    def backward(ctx, grad_out, _grad_mask):
        (mask,) = ctx.saved_tensors
        return grad_out * mask, None, None, None, None, None


@_eager
def fake_quantize_per_channel_affine_cachemask(input, scale, zero_point, axis, quant_min, quant_max):
    """torch.fake_quantize_per_channel_affine_cachemask's signature with the NPU kernel's arithmetic
    (aclnnFakeQuantPerChannelAffineCachemask): returns (out, mask). out carries torch's straight-through
    gradient (grad * mask) when input requires grad. torch itself is not patched (but see _TORCH_OPS_ON_NPU)."""
    return _FakeQuantPerChannel.apply(input, scale, zero_point, axis, quant_min, quant_max)


@_eager
def fake_quantize_per_channel_affine(input, scale, zero_point, axis, quant_min, quant_max):
    """torch.fake_quantize_per_channel_affine on the NPU: the cachemask kernel's out (the mask is dropped)."""
    return fake_quantize_per_channel_affine_cachemask(input, scale, zero_point, axis, quant_min, quant_max)[0]


# torch's own ops that NPU code reaches an emulated kernel through: torch_npu registers op-plugin's
# fake_quantize_per_channel_affine_cachemask (aclnnFakeQuantPerChannelAffineCachemask) for aten's op, which
# torch.fake_quantize_per_channel_affine calls. Inside install(npu_device=True) every tensor is on the 'npu'
# device, so _NpuIsCpu runs these there: {id(torch's op): (torch's op, the stand-in's)}
_TORCH_OPS_ON_NPU = {id(torch_op): (torch_op, stand_in) for torch_op, stand_in in (
    (torch.fake_quantize_per_channel_affine, fake_quantize_per_channel_affine),
    (torch.ops.aten.fake_quantize_per_channel_affine, fake_quantize_per_channel_affine),
    (torch.ops.aten.fake_quantize_per_channel_affine.default, fake_quantize_per_channel_affine),
    (torch.ops.aten.fake_quantize_per_channel_affine_cachemask, fake_quantize_per_channel_affine_cachemask),
    (torch.ops.aten.fake_quantize_per_channel_affine_cachemask.default, fake_quantize_per_channel_affine_cachemask))}


@_eager
def npusim_moe_init_routing_quant(x, row_idx, expert_idx, active_num, scale, offset):
    """aclnnMoeInitRoutingQuant (V1) on tensors, under npusim's own name (torch_npu has no binding for V1)
    -> (expanded_x int8, expanded_row_idx, expanded_expert_idx). scale and offset are Python numbers (the
    kernel's float attributes). The numpy face is npusim.moe_init_routing_quant."""
    op = "npusim_moe_init_routing_quant"
    if _on_meta(x):     # shapes only: the outputs as planned (for a shapes-only record, perfmodel.record(meta=True))
        x, row_idx, expert_idx = _arrays(op, _spec, x=x, row_idx=row_idx, expert_idx=expert_idx)
        plan = make_plan("moe_init_routing_quant", x=x, row_idx=row_idx, expert_idx=expert_idx, active_num=active_num,
                         scale=scale, offset=offset, product=current_product())
        launched(plan, meta=True)
        return _meta_outputs(plan, ("expanded_x", "expanded_row_idx", "expanded_expert_idx"),
                             lambda planned: planned)
    x, row_idx, expert_idx = _arrays(op, x=x, row_idx=row_idx, expert_idx=expert_idx)
    outs = npusim.moe_init_routing_quant(x, row_idx, expert_idx, active_num, scale, offset, product=current_product())
    return tuple(from_numpy(a) for a in outs)


# torch_npu.npu_moe_init_routing_quant is the V2 op (x, expert_idx, *, scale=None, offset=None, ...,
# quant_mode=1) -> 5 tensors: not emulated. Its name gets its own message (module __getattr__), so that a call
# fails there, not with V1's semantics, and hasattr() guards (vllm-ascend's) take their fallback.
_V2_ROUTING = ("npu_moe_init_routing_quant: torch_npu's op is MoeInitRoutingQuantV2 "
               "(x, expert_idx, *, scale, offset, active_num, expert_capacity, expert_num, ...) -> 5 tensors, "
               "which npusim does not emulate; aclnnMoeInitRoutingQuant (V1) is "
               "npusim.torch_npu.npusim_moe_init_routing_quant(x, row_idx, expert_idx, active_num, scale, offset)")


# torch.ops.custom.indexer_compress_epilog, with the schema of the vendor's torch binding (in place), plus
# npusim's `scale` (the hifloat8 multiplier of quant_mode 2; see npusim.indexer_compress_epilog)
_INDEXER_SCHEMA = ("indexer_compress_epilog(Tensor(a!) indexer_compress_cache, Tensor(b!) indexer_compress_scale, "
                   "Tensor x, Tensor slot_mapping, *, int quant_mode=1, bool round_scale=True, "
                   "float scale=1.0) -> ()")


@_eager
def _indexer_compress_epilog(indexer_compress_cache, indexer_compress_scale, x, slot_mapping, *, quant_mode=1,
                             round_scale=True, scale=1.0):
    cache, scales, x, slot = _arrays("indexer_compress_epilog", indexer_compress_cache=indexer_compress_cache,
                                     indexer_compress_scale=indexer_compress_scale, x=x, slot_mapping=slot_mapping)
    npusim.indexer_compress_epilog(cache, scales, x, slot, quant_mode=quant_mode, round_scale=round_scale,
                                   scale=scale, product=current_product())


# torch.ops.npu.<name> with op-plugin's schemas (op_plugin_functions.yaml; npu_quant_matmul with the keywords of
# its current doc, npu_format_cast as torch_npu's doc): the kernels are the functions above themselves
_NPU_OPS = (
    ("npu_dynamic_quant(Tensor input, *, Tensor? smooth_scales=None, Tensor? group_index=None, "
     "ScalarType? dst_type=None, str quant_mode=\"pertoken\", float dst_type_max=0.0) -> (Tensor, Tensor)",
     _dq_kernel("npu_dynamic_quant"), _dq_kernel("npu_dynamic_quant", meta=True)),
    ("npu_dynamic_quant_asymmetric(Tensor input, *, Tensor? smooth_scales=None, Tensor? group_index=None, "
     "ScalarType? dst_type=None, str quant_mode=\"pertoken\", float dst_type_max=0.0) "
     "-> (Tensor, Tensor, Tensor)", _dq_kernel("npu_dynamic_quant_asymmetric"),
     _dq_kernel("npu_dynamic_quant_asymmetric", meta=True)),
    ("npu_quant_matmul(Tensor x1, Tensor x2, Tensor scale, *, Tensor? offset=None, Tensor? pertoken_scale=None, "
     "Tensor? bias=None, ScalarType? output_dtype=None, int? x1_dtype=None, int? x2_dtype=None, "
     "int? pertoken_scale_dtype=None, int? scale_dtype=None, SymInt[]? group_sizes=None, Tensor? y_scale=None) "
     "-> Tensor", _quant_matmul, functools.partial(_quant_matmul, meta=True)),
    ("npu_trans_quant_param(Tensor scale, Tensor? offset=None, int? round_mode=0) -> Tensor", _trans_quant_param,
     functools.partial(_trans_quant_param, meta=True)),
    # npusim's own: contrib.module.LinearA8W8Quant's forward as one op, for torch.compile
    ("npusim_linear_a8w8_quant(Tensor x1, Tensor weight, Tensor scale, Tensor? offset=None, "
     "Tensor? pertoken_scale=None, Tensor? bias=None, ScalarType? output_dtype=None) -> Tensor", _linear_a8w8_quant,
     functools.partial(_linear_a8w8_quant, meta=True)),
    ("npu_convert_weight_to_int4pack(Tensor weight, int inner_k_tiles=0) -> Tensor", npu_convert_weight_to_int4pack,
     None),
    ("npu_format_cast(Tensor self, int acl_format, int? customize_dtype=None) -> Tensor", npu_format_cast, None),
    ("npu_format_cast_(Tensor(a!) self, int acl_format) -> Tensor(a!)", npu_format_cast_, None),
    ("get_npu_format(Tensor self) -> int", get_npu_format, None),
)
def _indexer_compress_epilog_meta(indexer_compress_cache, indexer_compress_scale, x, slot_mapping, *, quant_mode=1,
                                  round_scale=True, scale=1.0):
    """Its Meta kernel: nothing to shape (in place), as the vendor's; on meta tensors outside torch.compile,
    a launch planned from shapes for the recorders that ask for them (perfmodel.record(meta=True))."""
    if _on_meta(x) and not torch.compiler.is_compiling():
        launched(lambda: make_plan("indexer_compress_epilog", product=current_product(), **dict(zip(
            ("indexer_compress_cache", "indexer_compress_scale", "x", "slot_mapping"),
            _arrays("indexer_compress_epilog", _spec, indexer_compress_cache=indexer_compress_cache,
                    indexer_compress_scale=indexer_compress_scale, x=x, slot_mapping=slot_mapping))),
            quant_mode=quant_mode, round_scale=round_scale, scale=scale), meta=True)


_CUSTOM_OPS = ((_INDEXER_SCHEMA, _indexer_compress_epilog, _indexer_compress_epilog_meta),)


def _no_fake_shapes(*args, **kwargs):
    # the Meta kernel of the weight-preparation ops: a NotImplementedError here makes torch.compile call the op
    # eagerly (a graph break) instead of failing
    raise NotEmulatedError("torch.ops.npu.*: npusim's stand-in runs the weight-preparation operators eagerly on CPU "
                           "tensors; fake / meta tensors (torch.compile tracing) are not emulated for them")


def _define_ops(namespace: str, ops):
    """A torch.library Library defining torch.ops.<namespace>.<name> for each (schema, CPU kernel, Meta kernel)
    whose op is not defined yet (by an earlier call or by the vendor's package), or None if none was missing
    (a Meta kernel of None: _no_fake_shapes). The ops live as long as the Library is referenced."""
    lib = None
    for schema, kernel, meta in ops:
        name = schema.split("(", 1)[0]
        try:
            getattr(getattr(torch.ops, namespace), name)
            continue
        except (AttributeError, RuntimeError):
            pass
        if lib is None:
            lib = torch.library.Library(namespace, "FRAGMENT")
        lib.define(schema)
        lib.impl(name, kernel, "CPU")
        lib.impl(name, meta or _no_fake_shapes, "Meta")
    return lib


_CUSTOM_LIB = _define_ops("custom", _CUSTOM_OPS)   # from import on
_npu_lib: list = []                                   # torch.ops.npu.*: the Library while install() is in force

from npusim.torch_npu import contrib  # noqa: E402  (contrib.module uses the operators above)


class _NotEmulatedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """torch_npu's modules that code imports and the stand-in lacks: importing one (`from torch_npu.contrib import
    transfer_to_npu`) raises NotEmulatedImportError saying so, not a bare "No module named". It answers only
    when the parent package is the stand-in's (never for a real torch_npu), after every other finder."""
    WHY = {"torch_npu.contrib.transfer_to_npu":
           "it maps CUDA device calls to the NPU; for code written for the NPU, install(npu_device=True) (pytest "
           "--npusim-npu-device) makes the 'npu' device the CPU",
           "torch_npu.testing":
           "op-plugin's TestCase, run_tests, SupportedDevices and create_common_tensor need an NPU; write the test "
           "with pytest or unittest.TestCase, compare with npusim.testing.assert_bitexact or "
           "torch.testing.assert_close, and run it under install() (pytest --npusim-torch-npu)",
           "torch_npu.npu":
           "NPU devices exist only with install(npu_device=True) (pytest --npusim-npu-device), where torch_npu.npu "
           "answers for one device, the CPU"}

    @staticmethod
    def _name(fullname: str) -> str:
        # `from torch_npu.contrib import x` asks for the stand-in's own name, npusim.torch_npu.contrib.x
        return fullname.removeprefix("npusim.")

    def find_spec(self, fullname, path, target=None):
        name = self._name(fullname)
        parent = sys.modules.get("npusim." + name.rpartition(".")[0])
        if name in self.WHY and parent is not None and path is getattr(parent, "__path__", None):
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, mod):
        name = self._name(mod.__name__)
        raise NotEmulatedImportError(f"{name} is not emulated by npusim's torch_npu stand-in ({self.WHY[name]})")


sys.meta_path.append(_NotEmulatedModules())


def __dir__():
    """What the stand-in offers (not its imports and helpers): code that lists torch_npu's names sees these."""
    return sorted({*__all__, *(["npu"] if _npu_device else [])})


def __getattr__(name: str):
    if name.startswith("__") and name != "__version__":     # dunders: what tools probe for, left plain
        raise AttributeError(name)
    if name == "npu" and _npu_device:
        return torch.npu
    if name.startswith("_") and not name.startswith(("_npu", "__version__")):  # tools' probes (_mock_name)
        raise AttributeError(f"module 'torch_npu' has no attribute {name!r}")
    asked_missing(f"torch_npu.{name}")          # perfmodel.record lists what the run used and npusim lacks
    if name == "npu":
        raise NotEmulatedAttributeError(
            "torch_npu.npu (set_device, synchronize, streams, ...) is not emulated here: NPU devices exist only with "
            "install(npu_device=True) (pytest --npusim-npu-device), where the 'npu' device is the CPU")
    if name == "npu_moe_init_routing_quant":
        raise NotEmulatedAttributeError(_V2_ROUTING)
    raise NotEmulatedAttributeError(
        f"torch_npu.{name} is not emulated by npusim's torch_npu stand-in; it emulates "
        f"{', '.join(n for n in __all__ if n.startswith(('npu_', 'fake_', 'get_npu')))}, "
        "contrib.module.LinearA8W8Quant, contrib.module.LinearQuant and torch.ops.custom.indexer_compress_epilog")
