"""aclnnFakeQuantPerChannelAffineCachemask / torch fake_quantize_per_channel_affine_cachemask on the NPU.

Two faces over one core:
  * `fake_quantize_per_channel_affine_cachemask(x, scale, zero_point, axis, quant_min, quant_max,
    product=...) -> (out, mask)`: what torch_npu runs for
    `torch.ops.aten.fake_quantize_per_channel_affine_cachemask` (op-plugin FakeQuantizeKernelNpuOpApi.cpp:
    out allocated like self, mask bool);
  * `npusim.aclnn.aclnnFakeQuantPerChannelAffineCachemaskGetWorkspaceSize(...)` and
    `npusim.aclnn.aclnnFakeQuantPerChannelAffineCachemask(...)`: the two-phase aclnn calls (seed 002).

Sources (facts, ARITHMETIC.md section 3): hicann/ops-nn quant/fake_quant_affine_cachemask/
op_api/aclnn_fake_quant_per_channel_affine_cachemask.cpp + fake_quant_common.cpp (checks, dtype
promotion, transpose of `axis` to 0, Cast of the result to out's dtype),
op_host/fake_quant_affine_cachemask_tiling.cpp (tiling), op_kernel/fake_quant_affine_cachemask_{fp32,fp16,base}.h
(arithmetic; the kernel body is documented in kernels_pyx/fake_quant.pyx).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from npusim import _checks, formats
from npusim._kernels import fake_quant as _kernel
from npusim.aclnn import aclnn_api, get_workspace_size, run_executor
from npusim.errors import invalid, nullptr
from npusim.plan import Plan, TensorSpec, launched, planner, spec_of

__all__ = ["fake_quantize_per_channel_affine_cachemask"]

ACLNN_OP = "aclnnFakeQuantPerChannelAffineCachemask"
TORCH_OP = "fake_quantize_per_channel_affine_cachemask"
# Seed 002 lists Atlas training and A2. The ops-nn doc lists A2 and A3 (ARITHMETIC.md 3.4), and A3 runs A2's
# DAV_2201 kernel, so A3 is accepted too (beyond the seed).
SUPPORTED_PRODUCTS = ("atlas-a3", "atlas-training", "atlas-a2")

# Tiling constants (fake_quant_affine_cachemask_tiling.cpp)
TILING_KEY = {"float32": 1, "float16": 2}
UB_BYTES_PER_ELEMENT = {"float32": 68, "float16": 46}   # bytesPerData: UB bytes one element needs
SELECT_TMP_UB = 8000                                     # UB kept back for Select mode 2
BYTE_REPEAT = 256                                        # bytes one vector repeat processes
BYTE_BLOCK = 32                                          # UB block (alignment) size
SYSTEM_WORKSPACE = 16 * 1024 * 1024                      # tiling's workspace request
BUFFER_NUM = 2                                           # double buffering (op_kernel base.h)
_ITEM = {"float32": 4, "float16": 2}


@dataclass(frozen=True)
class _Checked:
    """A validated call: shapes, dtypes, the kernel choice."""
    soc: object
    x: object                 # ndarray or TensorSpec
    scale: object
    zero_point: object
    axis: int                 # in [0, ndim) (0 for a 0-dim x)
    qmin: int
    qmax: int
    x_dtype: str
    kernel_dtype: str         # promote(x, scale): 'float16' only when both are fp16
    out_dtype: str
    shape: tuple


def _validate(op, names, x, scale, zero_point, axis, quant_min, quant_max, product, out_dtype=None,
              out=None, mask=None, check_outputs=False) -> _Checked:
    """Every check of the aclnn op_api, in its order (nullptr, dtype, shape, quant range)."""
    soc = _checks.resolve_product(op, product, SUPPORTED_PRODUCTS)
    p = soc.soc
    x = _checks.tensor(op, names["x"], x, p)
    scale = _checks.tensor(op, names["scale"], scale, p)
    zero_point = _checks.tensor(op, names["zero_point"], zero_point, p)
    if check_outputs:   # nullptr checks come first
        for name, arr in (("out", out), ("mask", mask)):
            if arr is None:
                raise nullptr(op, name, p)
            if not isinstance(arr, np.ndarray):
                raise invalid(op, name, f"must be a numpy array (it is written in place), "
                              f"got {type(arr).__name__}", p)
    axis = _checks.int_attr(op, names["axis"], axis, p)
    qmin = _checks.int_attr(op, names["quant_min"], quant_min, p)
    qmax = _checks.int_attr(op, names["quant_max"], quant_max, p)

    x_dtype = _checks.dtype_in(op, names["x"], x, ("float16", "float32"), p)
    s_dtype = _checks.dtype_in(op, names["scale"], scale, ("float16", "float32"), p)
    zp_name = formats.dtype_name(zero_point.dtype)
    if zp_name in ("float16", "float32"):
        raise invalid(op, names["zero_point"],
                      f"float zero points ({zp_name}) are not supported: aclnn intercepts them until the kernel "
                      "supports them (the aclnn doc's constraint up to CANN 8.x; CANN 9.2's doc adds a float path, "
                      "qval = lrintf(x / scale + zero_point), which npusim does not emulate); pass int32", p)
    _checks.dtype_in(op, names["zero_point"], zero_point, ("int32",), p)
    kernel_dtype = "float16" if (x_dtype == "float16" and s_dtype == "float16") else "float32"
    if check_outputs:
        out_dtype = _checks.dtype_in(op, "out", out, ("float16", "float32"), p)
        _checks.dtype_in(op, "mask", mask, (np.bool_,), p)
    elif out_dtype is None:
        out_dtype = x_dtype

    if len(scale.shape) != 1:
        raise invalid(op, names["scale"], f"must be 1-D, got shape {tuple(scale.shape)}", p)
    if len(zero_point.shape) != 1:
        raise invalid(op, names["zero_point"], f"must be 1-D, got shape {tuple(zero_point.shape)}", p)
    if scale.shape[0] != zero_point.shape[0]:
        raise invalid(op, names["zero_point"], f"must have as many elements as {names['scale']} "
                      f"({scale.shape[0]}), got {zero_point.shape[0]}", p)
    ndim = len(x.shape)
    if ndim > 8:
        raise invalid(op, names["x"], f"must have at most 8 dimensions, got {ndim}", p)
    lo_axis, hi_axis = (-1, 0) if ndim == 0 else (-ndim, ndim - 1)
    if not lo_axis <= axis <= hi_axis:
        raise invalid(op, names["axis"], f"must be in [{lo_axis}, {hi_axis}] for a {ndim}-D "
                      f"{names['x']}, got {axis}", p)
    axis = axis % ndim if ndim else 0
    channels = x.shape[axis] if ndim else 1      # a 0-dim tensor counts as one channel
    if scale.shape[0] != channels:
        raise invalid(op, names["scale"], f"must have {names['x']}.shape[{axis}] = {channels} elements "
                      f"(one per channel), got {scale.shape[0]}", p)
    if check_outputs:
        _checks.out_tensor(op, "out", out, x.shape, out_dtype, p)
        _checks.out_tensor(op, "mask", mask, x.shape, np.bool_, p)
    for name, v in (("quant_min", qmin), ("quant_max", qmax)):
        if not -2**31 <= v < 2**31:      # the kernel reads them as int32_t: a wider value would wrap
            raise invalid(op, names[name], f"must fit in int32 (the kernel reads it as int32_t, so a wider value "
                          f"would wrap to another range), got {v}", p)
    if qmin > qmax:
        raise invalid(op, names["quant_min"], f"must be <= {names['quant_max']}, got {qmin} > {qmax}", p)
    return _Checked(soc, x, scale, zero_point, axis, qmin, qmax, x_dtype, kernel_dtype, out_dtype,
                    tuple(int(d) for d in x.shape))


def _plan(ck: _Checked) -> Plan:
    soc = ck.soc
    numel = math.prod(int(d) for d in ck.shape)
    head = ck.shape[ck.axis] if ck.shape else 1
    calc = numel // head if head else 0
    kd = ck.kernel_dtype
    item = _ITEM[kd]
    align = BYTE_BLOCK // item
    per_repeat = BYTE_REPEAT // item
    # tileLength: the tiling's 910 branch (no SELECT_TMP_UB) is dead code (socVersion is fixed to
    # ASCEND910B there), so every product keeps the 8000 B back.
    tile = (soc.tiling_ub_bytes - SELECT_TMP_UB) // UB_BYTES_PER_ELEMENT[kd] // per_repeat * per_repeat
    cores = min(head, soc.aiv) if numel else 0
    loop_num, remain = (head // cores, head % cores) if cores else (0, 0)
    aligned = -(-calc // align) * align
    tiles = {
        "headNum": head, "calcLength": calc, "totalLength": numel,
        "loopNum": loop_num, "remainNum": remain,
        "channels_per_core_max": loop_num + (1 if remain else 0),
        "alignNum": align, "totalLengthAligned": aligned, "dataPerRepeat": per_repeat,
        "tileLength": tile, "tile_ub_bytes": tile * UB_BYTES_PER_ELEMENT[kd],
        # the kernel's own split of a channel (fake_quant_affine_cachemask_base.h BaseMemberDataInit)
        "tileNum": aligned // tile, "lastTileLength": aligned % tile, "lastActulTileLength": calc % tile,
        "double_buffer": True, "bytesPerData": UB_BYTES_PER_ELEMENT[kd],
        "quantMin": ck.qmin, "quantMax": ck.qmax,
        "transposes": (3 if ck.axis != 0 and len(ck.shape) > 1 else 0),
        "cast_self": ck.x_dtype != kd, "cast_scale": _dtype(ck.scale) != kd, "cast_out": ck.out_dtype != kd,
    }
    notes = ("empty input: the op_api returns before any launch" if numel == 0 else
             "axis moved to 0 by Transpose (input, then out and mask back)" if tiles["transposes"] else "")
    return Plan(op=TORCH_OP, soc=soc, kernel="FakeQuantAffineCachemask", tiling_key=TILING_KEY[kd],
                block_dim=cores, core_type="aiv" if soc.core_layout == "split" else "aicore", tiles=tiles,
                inputs={"x": spec_of(ck.x), "scale": spec_of(ck.scale), "zero_point": spec_of(ck.zero_point)},
                outputs={"out": TensorSpec(ck.shape, ck.out_dtype), "mask": TensorSpec(ck.shape, np.bool_)},
                attrs={"axis": ck.axis, "quant_min": ck.qmin, "quant_max": ck.qmax, "out_dtype": ck.out_dtype},
                notes=notes)


def _dtype(a) -> str:
    return formats.dtype_name(a.dtype)


_TORCH_NAMES = {"x": "x", "scale": "scale", "zero_point": "zero_point", "axis": "axis",
                "quant_min": "quant_min", "quant_max": "quant_max"}
_ACLNN_NAMES = {"x": "self", "scale": "scale", "zero_point": "zeroPoint", "axis": "axis",
                "quant_min": "quantMin", "quant_max": "quantMax"}


@planner(TORCH_OP, SUPPORTED_PRODUCTS)
def plan_fake_quantize_per_channel_affine_cachemask(x, scale, zero_point, axis, quant_min, quant_max,
                                                    product="atlas-a2", *, out_dtype=None) -> Plan:
    """The launch of FakeQuantAffineCachemask for these shapes/dtypes (arrays or TensorSpecs). out_dtype: the
    dtype of the aclnn face's `out` (float16 or float32), when it differs from x's (default): a Cast follows.

    tiling_key 1 (fp32 kernel) or 2 (fp16 kernel: self and scale both fp16); block_dim =
    min(headNum, AIV cores); core_type 'aiv' (A2 split cores) or 'aicore' (910 coupled cores).
    tiles (fake_quant_affine_cachemask_tiling.cpp terms, after `axis` is moved to 0):
      headNum: channels (self.shape[axis]); calcLength: elements per channel; totalLength: numel;
      loopNum / remainNum: channels per core and the remainder (the first remainNum cores take one
      more); channels_per_core_max; alignNum: elements per 32 B block; totalLengthAligned: calcLength
      rounded up to alignNum; dataPerRepeat: elements per 256 B vector repeat; tileLength: elements
      per UB tile; tile_ub_bytes: UB bytes one tile uses (tileLength * bytesPerData); tileNum: whole
      tiles per channel (totalLengthAligned // tileLength); lastTileLength: totalLengthAligned %
      tileLength, nonzero when one more tile follows; lastActulTileLength: the elements that tile copies
      (calcLength % tileLength), the kernel's own names (fake_quant_affine_cachemask_base.h);
      double_buffer: BUFFER_NUM = 2;
      bytesPerData: UB bytes per element (68 fp32, 46 fp16); quantMin / quantMax;
      transposes: Transpose ops around the kernel (3 when axis != 0: self, out, mask);
      cast_self / cast_scale / cast_out: whether the aclnn layer adds a Cast for dtype promotion or
      for out's dtype.
    """
    if out_dtype is not None:
        soc = _checks.resolve_product(TORCH_OP, product, SUPPORTED_PRODUCTS)
        try:
            name = formats.dtype_name(formats.as_dtype(out_dtype))
        except (TypeError, ValueError):
            name = repr(out_dtype)[:100]
        if name not in ("float16", "float32"):
            raise invalid(TORCH_OP, "out_dtype", f"must be float16 or float32, got {name}", soc.soc)
        out_dtype = name
    ck = _validate(TORCH_OP, _TORCH_NAMES, x, scale, zero_point, axis, quant_min, quant_max, product,
                   out_dtype=out_dtype)
    return _plan(ck)


def _compute(ck: _Checked, out: np.ndarray, mask: np.ndarray) -> None:
    """Run the kernel on the validated arrays and write out and mask (any strides)."""
    if 0 in ck.shape:
        return
    x = np.ascontiguousarray(ck.x)
    scale = np.ascontiguousarray(ck.scale, dtype=np.float32)   # fp16 -> fp32 is exact
    zp = np.ascontiguousarray(ck.zero_point, dtype=np.int32)
    x, scale, zp = _checks.unshared((x, scale, zp), (out, mask))     # out or mask may alias an input
    shape = ck.shape or (1,)
    outer = int(np.prod(shape[:ck.axis], dtype=np.int64))
    inner = int(np.prod(shape[ck.axis + 1:], dtype=np.int64))
    y = out if out.flags.c_contiguous and out.flags.aligned else np.empty(out.shape, out.dtype)
    m = mask if mask.flags.c_contiguous else np.empty(mask.shape, np.bool_)
    # Atlas training products have only the saturation overflow mode (CANN aclrtFloatOverflowMode doc): a
    # cast or product that overflows gives the largest finite value, not inf, in the fp16 kernel's mask
    # (half(t2)) as in out (x near the fp16 limit with a large scale)
    saturate = ck.soc.family == "310p910"
    _kernel.fake_quant_per_channel(
        x.reshape(-1).view(np.uint8), scale, zp, y.reshape(-1).view(np.uint8), m.reshape(-1).view(np.uint8),
        outer, shape[ck.axis], inner, ck.qmin, ck.qmax,
        ck.x_dtype == "float16", ck.kernel_dtype == "float16", ck.out_dtype == "float16", saturate)
    if saturate:
        big = np.finfo(y.dtype).max
        np.clip(y, -big, big, out=y)
    if y is not out:
        out[...] = y
    if m is not mask:
        mask[...] = m


def fake_quantize_per_channel_affine_cachemask(x, scale, zero_point, axis, quant_min, quant_max,
                                               product="atlas-a2"):
    """Per-channel fake quantization with a gradient mask, bit-exact to the Ascend kernel.

    Returns (out, mask): out has x's dtype and shape, mask is bool. x: float16/float32, 0 to 8
    dims, any strides; scale: float16/float32, 1-D, one per channel of `axis` (negative allowed);
    zero_point: int32, 1-D (float zero points are rejected, seed 002); quant_min <= quant_max.
    Products: atlas-training, atlas-a2 (seed 002) and atlas-a3 (the ops-nn doc; the A2 kernel).

    Follows the A2/A3 kernel (ARITHMETIC.md 3.2): x and scale are promoted to one dtype (the fp16
    kernel, tiling key 2, runs only when both are fp16, else the fp32 kernel, key 1), then per
    channel: t = f32(x * f32(1/s)); q = rint(rint(t) + zp) with int32 saturation;
    mask = qmin <= q <= qmax (the fp16 kernel compares half(q), which differs from the integer
    compare only when quant_min or quant_max lies outside +-2047; on Atlas training products that half
    cast saturates, so a q beyond +-65504 counts as +-65504); out = f32(f32(clamp(q) - zp) * s), rounded to
    the output dtype (RNE, overflow to inf; on Atlas training products, whose only overflow mode is
    saturation, to the largest finite value).
    This equals PyTorch's CPU op bit for bit for finite x and scale with |x / scale| < 2**63 (fp16
    kernel: and quant_min, quant_max within +-2047). A zero or subnormal scale or a huge x makes
    x / scale infinite or beyond int64, where PyTorch's cast is undefined; npusim treats such a quotient
    as the +-inf below. Non-finite inputs follow the kernel, not PyTorch: NaN x gives out = (0 - zp) * s and mask = (qmin <= zp <= qmax) (the
    kernel's Cast NaN -> int32 is taken as 0, undocumented); +-inf saturate (+inf -> quant_max,
    -inf -> quant_min, mask False), where PyTorch on x86 gives quant_min for both.
    Other documented deviations from PyTorch: zero points outside [quant_min, quant_max] are
    accepted (PyTorch raises); quant_min/quant_max must fit in int32, as the kernel reads them (the aclnn
    attributes are int64: a wider value, which the NPU would wrap, is refused).
    Version note: an older ops-nn kernel (int32 zero points only) selected quant_min instead of 0 for
    NaN and for +inf; this emulator follows the version ARITHMETIC.md was read from.
    """
    _checks.data_tensors(TORCH_OP, product, x=x, scale=scale, zero_point=zero_point)
    ck = _validate(TORCH_OP, _TORCH_NAMES, x, scale, zero_point, axis, quant_min, quant_max, product)
    out = np.empty(ck.shape, dtype=ck.out_dtype)
    mask = np.empty(ck.shape, dtype=np.bool_)
    _compute(ck, out, mask)
    launched(lambda: _plan(ck))
    return out, mask


@aclnn_api
def aclnnFakeQuantPerChannelAffineCachemaskGetWorkspaceSize(self, scale, zeroPoint, axis, quantMin, quantMax,
                                                            out, mask, product="atlas-a2"):
    """Phase one of aclnnFakeQuantPerChannelAffineCachemask: validate, plan, return (workspace_size, executor).

    out (float16 or float32, any strides, shape of self) and mask (bool) are written in place by
    phase two; nothing is written when a check fails. out's dtype may differ from the kernel's
    (promote(self, scale)): the result is then Cast (RNE) as the op_api does. workspace_size is the
    tiling's 16 MiB system workspace (0 for empty inputs; intermediate tensors are not counted).
    Arithmetic and deviations: see npusim.fake_quantize_per_channel_affine_cachemask.
    """
    def prepare():
        _checks.data_tensors(ACLNN_OP, product, self=self, scale=scale, zeroPoint=zeroPoint)
        ck = _validate(ACLNN_OP, _ACLNN_NAMES, self, scale, zeroPoint, axis, quantMin, quantMax, product,
                       out=out, mask=mask, check_outputs=True)
        _checks.written_apart(ACLNN_OP, ck.soc.soc, out=out, mask=mask)
        return _plan(ck), lambda: _compute(ck, out, mask)
    return get_workspace_size(ACLNN_OP, prepare, lambda plan: SYSTEM_WORKSPACE if plan.block_dim else 0,
                              dict(self=self, scale=scale, zeroPoint=zeroPoint, out=out, mask=mask))


@aclnn_api
def aclnnFakeQuantPerChannelAffineCachemask(workspace, workspaceSize, executor, stream=None):
    """Phase two: run the executor made by phase one (writes out and mask). Returns 0."""
    return run_executor(ACLNN_OP, workspace, workspaceSize, executor, stream)
