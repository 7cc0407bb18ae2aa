"""npusim.torch_npu (the torch CPU stand-in for torch_npu): every function, and its torch.ops.npu op, over each
dtype it accepts gives the numpy face's bits, dtypes and shapes; errors are the same AclnnErrors; fake quant's
gradient is torch's own; narrow floats cross without copies; install() puts the stand-in in sys.modules and
restores what was there.

Results are compared through torch's own integer views (torch.Tensor.view), not through the converter
under test, so a wrong dtype mapping or a byte mix-up in npusim.torch_npu.to_numpy / from_numpy fails here.
"""
import gc
import subprocess
import sys
import textwrap
import types
from unittest import mock

import ml_dtypes
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import npusim  # noqa: E402
from npusim import AclnnError  # noqa: E402
from npusim import torch_npu as tnpu  # noqa: E402

RNG = np.random.default_rng(2024)
_INT_OF_SIZE = {1: (torch.uint8, np.uint8), 2: (torch.int16, np.int16), 4: (torch.int32, np.int32),
                8: (torch.int64, np.int64)}
_TORCH_DTYPE = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32,
                "int8": torch.int8, "uint8": torch.uint8, "int32": torch.int32, "int64": torch.int64,
                "uint64": torch.uint64,
                "bool": torch.bool,
                "float8_e4m3fn": torch.float8_e4m3fn, "float8_e5m2": torch.float8_e5m2,
                "float8_e8m0": torch.float8_e8m0fnu}


def assert_same(t, a):
    """torch tensor t holds exactly numpy array a: dtype (by name), shape and every bit."""
    assert isinstance(t, torch.Tensor) and t.device.type == "cpu"
    name = npusim.formats.dtype_name(a.dtype)
    assert t.dtype == _TORCH_DTYPE[name], (t.dtype, name)
    assert tuple(t.shape) == a.shape
    if t.dtype == torch.bool:
        np.testing.assert_array_equal(t.numpy(), a)
        return
    tdt, ndt = _INT_OF_SIZE[t.element_size()]
    np.testing.assert_array_equal(t.contiguous().view(tdt).numpy(), np.ascontiguousarray(a).view(ndt))


def tensor(a):
    """A torch tensor with the bits of numpy array a (built with torch's views, independent of from_numpy)."""
    a = np.ascontiguousarray(a)
    name = npusim.formats.dtype_name(a.dtype)
    if name in ("bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e8m0"):
        tdt, ndt = _INT_OF_SIZE[a.dtype.itemsize]
        return torch.from_numpy(a.view(ndt).copy()).view(_TORCH_DTYPE[name])
    return torch.from_numpy(a.copy())


def same_error(torch_call, numpy_call):
    with pytest.raises(AclnnError) as et:
        torch_call()
    with pytest.raises(RuntimeError):   # what a test written against torch_npu expects of a rejected call
        torch_call()
    with pytest.raises(AclnnError) as en:
        numpy_call()
    assert (str(et.value), et.value.status) == (str(en.value), en.value.status)


# ------------------------------------------------------------------ dynamic quant
@pytest.mark.parametrize("product,xdt,dst", [
    ("atlas-a2", "bfloat16", None), ("atlas-a2", "float16", torch.int8), ("atlas-a3", "bfloat16", torch.quint4x2),
    ("atlas-inference", "float16", None),
    ("ascend-950pr", "bfloat16", torch.float8_e4m3fn), ("ascend-950dt", "float16", torch.float8_e5m2)])
def test_dynamic_quant_bit_identical(product, xdt, dst):
    H = 256
    x = (RNG.standard_normal((3, 5, H)) * 4).astype(npusim.formats.as_dtype(xdt))
    np_dst = {None: "int8", torch.int8: "int8", torch.quint4x2: "quint4x2"}.get(dst, str(dst)[6:])
    smooth = None if product == "atlas-inference" else RNG.uniform(0.5, 2, H).astype(x.dtype)
    with tnpu.install(product):
        y, s = tnpu.npu_dynamic_quant(tensor(x), smooth_scales=None if smooth is None else tensor(smooth),
                                      dst_type=dst)
    ry, rs = npusim.npu_dynamic_quant(x, smooth, dst_type=np_dst, product=product)
    assert_same(y, ry)
    assert_same(s, rs)
    if product != "atlas-inference":          # asymmetric, and MoE smooth rows with group_index
        group = np.array([4, 15], np.int32)
        smooth2 = RNG.uniform(0.5, 2, (2, H)).astype(x.dtype)
        with tnpu.install(product):
            out = tnpu.npu_dynamic_quant_asymmetric(tensor(x), smooth_scales=tensor(smooth2),
                                                    group_index=tensor(group), dst_type=dst)
        for t, a in zip(out, npusim.npu_dynamic_quant_asymmetric(x, smooth2, group, np_dst, product=product)):
            assert_same(t, a)


def test_dynamic_quant_non_contiguous_bf16_view():
    base = (RNG.standard_normal((64, 48)) * 3).astype(ml_dtypes.bfloat16)
    t = tensor(base).t()                       # (48, 64), strides (1, 48)
    assert not t.is_contiguous()
    y, s = tnpu.npu_dynamic_quant(t)
    ry, rs = npusim.npu_dynamic_quant(base.T, product=tnpu.DEFAULT_PRODUCT)
    assert_same(y, ry)
    assert_same(s, rs)


def test_dynamic_quant_errors_match_numpy_face():
    x = RNG.standard_normal((2, 30)).astype(ml_dtypes.bfloat16)
    group = np.array([2], np.int32)
    same_error(lambda: tnpu.npu_dynamic_quant(tensor(x), group_index=tensor(group)),
               lambda: npusim.npu_dynamic_quant(x, None, group, product=tnpu.current_product()))
    with tnpu.install("atlas-a2"):
        with pytest.raises(AclnnError, match="dst_type.*torch.quint4x2") as ei:
            tnpu.npu_dynamic_quant(tensor(x), dst_type=torch.float32)
    assert ei.value.status == 161002
    with pytest.raises(TypeError, match="smooth_scales"):
        tnpu.npu_dynamic_quant(tensor(x), smooth_scales=np.ones(30, ml_dtypes.bfloat16))


def test_dynamic_quant_errors_name_torch_npus_input():
    """torch_npu's first argument is `input` (aclnn's x): the torch face's errors name it so, with the numpy face's
    rule, status and product; the numpy and aclnn faces keep 'x'."""
    x = RNG.standard_normal((2, 30)).astype(ml_dtypes.bfloat16)
    for fn, np_fn in ((tnpu.npu_dynamic_quant, npusim.npu_dynamic_quant),
                      (tnpu.npu_dynamic_quant_asymmetric, npusim.npu_dynamic_quant_asymmetric)):
        for call, np_call in ((lambda: fn(tensor(x), dst_type=torch.quint4x2),
                               lambda: np_fn(x, dst_type="quint4x2", product=tnpu.current_product())),
                              (lambda: fn(torch.zeros(2, 32, dtype=torch.float64)),
                               lambda: np_fn(np.zeros((2, 32)), product=tnpu.current_product()))):
            with pytest.raises(AclnnError) as et:
                call()
            with pytest.raises(AclnnError) as en:
                np_call()
            assert en.value.param == "x" and et.value.param == "input"
            assert str(et.value) == str(en.value).replace("parameter 'x'", "parameter 'input'")
            assert (et.value.status, et.value.op, et.value.product) == (161002, en.value.op, en.value.product)
    with tnpu.install("atlas-a2"):
        with pytest.raises(AclnnError, match="npu_dynamic_quant, parameter 'input': last dimension must be"):
            torch.ops.npu.npu_dynamic_quant(tensor(x), dst_type=torch.quint4x2)
        # rules that mention the input name it as torch_npu does too
        with pytest.raises(AclnnError, match=r"parameter 'smooth_scales': dtype must equal the dtype of input \("):
            tnpu.npu_dynamic_quant(torch.zeros(4, 64, dtype=torch.bfloat16), smooth_scales=torch.ones(64, dtype=torch.float16))


def test_group_index_hint_is_in_torchs_words_in_the_torch_face():
    x = np.ones((8, 64), np.float16)
    smooth, counts = np.ones((2, 64), np.float16), np.array([5, 3], np.int32)     # counts, not cumulative ends
    with pytest.raises(AclnnError, match=r"e\.g\. np\.cumsum\(tokens_per_expert\)"):
        npusim.npu_dynamic_quant(x, smooth, counts)
    with pytest.raises(AclnnError, match=r"'group_index': .*\(e\.g\. torch\.cumsum\(tokens_per_expert, 0\)\)"):
        tnpu.npu_dynamic_quant(tensor(x), smooth_scales=tensor(smooth), group_index=tensor(counts))


def test_none_for_a_required_tensor_is_a_type_error_in_the_torch_face_only():
    """torch's argument parser refuses None for a Tensor (and a non-dtype for a ScalarType) with a TypeError
    before any kernel: the torch face's AclnnError is a TypeError there too, with its status and text; the numpy
    face's stays a plain AclnnError."""
    x1, x2 = i8(2, 64), i8(64, 8)
    calls = [(lambda: tnpu.npu_quant_matmul(tensor(x1), tensor(x2), None, output_dtype=torch.float16),
              "npu_quant_matmul, parameter 'scale'"),
             (lambda: tnpu.npu_dynamic_quant(None), "npu_dynamic_quant, parameter 'input'"),
             (lambda: tnpu.npu_trans_quant_param(None), "npu_trans_quant_param, parameter 'scale'"),
             (lambda: tnpu.fake_quantize_per_channel_affine(None, torch.ones(1), torch.zeros(1, dtype=torch.int32),
                                                            0, -128, 127),
              "fake_quantize_per_channel_affine_cachemask, parameter 'input'")]
    with tnpu.install("atlas-a2"):
        calls.append((lambda: torch.ops.npu.npu_quant_matmul(tensor(x1), tensor(x2), None,
                                                             output_dtype=torch.float16),
                      "npu_quant_matmul, parameter 'scale'"))
        for call, where in calls:
            with pytest.raises(TypeError, match=rf"\[aclnn 161001\] {where}: is required but got None") as e:
                call()
            assert isinstance(e.value, AclnnError) and e.value.status == 161001
        with pytest.raises(TypeError, match=r"\[aclnn 161002\] npu_dynamic_quant, parameter 'dst_type': .* got 2"):
            tnpu.npu_dynamic_quant(torch.ones(2, 64, dtype=torch.float16), dst_type=2)
        with pytest.raises(AclnnError) as e:                       # a dtype the NPU refuses: the aclnn error
            tnpu.npu_dynamic_quant(torch.ones(2, 64, dtype=torch.float16), dst_type=torch.int16)
        assert not isinstance(e.value, TypeError)
    with pytest.raises(AclnnError) as e:
        npusim.npu_quant_matmul(x1, x2, None, output_dtype="float16")
    assert e.value.status == 161001 and not isinstance(e.value, TypeError)


def test_dynamic_quant_hifloat8_on_950():
    # torch_npu.hifloat8 (torch_npu's dtype code, 290): uint8 HiFloat8 codes, the numpy face's bits
    x = (RNG.standard_normal((5, 96)) * 4).astype(ml_dtypes.bfloat16)
    with tnpu.install("ascend-950pr"):
        y, s = tnpu.npu_dynamic_quant(tensor(x), dst_type=tnpu.hifloat8)
    ry, rs = npusim.npu_dynamic_quant(x, dst_type="hifloat8", product="ascend-950pr")
    assert_same(y, ry)
    assert_same(s, rs)
    assert tnpu.hifloat8 == 290 and y.dtype == torch.uint8
    with tnpu.install("atlas-a2"):          # A2 has no hifloat8 output: the NPU's own rule
        with pytest.raises(AclnnError, match="'dst_type': output hifloat8 is not supported"):
            tnpu.npu_dynamic_quant(tensor(x), dst_type=tnpu.hifloat8)
    with tnpu.install("ascend-950pr"):      # torch.ops' ScalarType cannot carry 290: the error says what to call
        with pytest.raises(AclnnError, match="got torch.uint5 .*hifloat8.* call torch_npu.npu_dynamic_quant"):
            torch.ops.npu.npu_dynamic_quant(tensor(x), dst_type=tnpu.hifloat8)


def test_dynamic_quant_current_keywords_at_their_defaults_or_not_emulated():
    """torch_npu's current signature: (input, *, smooth_scales, group_index, dst_type, quant_mode='pertoken',
    dst_type_max=0.0); npusim emulates the defaults, and says so for anything else."""
    x = RNG.standard_normal((6, 64)).astype(ml_dtypes.bfloat16)
    ry, rs = npusim.npu_dynamic_quant(x, product=tnpu.DEFAULT_PRODUCT)
    ay, as_, ao = npusim.npu_dynamic_quant_asymmetric(x, product=tnpu.DEFAULT_PRODUCT)
    y, s = tnpu.npu_dynamic_quant(input=tensor(x), quant_mode="pertoken", dst_type_max=0.0)
    assert_same(y, ry)
    assert_same(s, rs)
    outs = tnpu.npu_dynamic_quant_asymmetric(tensor(x), quant_mode="pertoken", dst_type_max=0)
    for t, a in zip(outs, (ay, as_, ao)):
        assert_same(t, a)
    with tnpu.install(tnpu.DEFAULT_PRODUCT):
        y, s = torch.ops.npu.npu_dynamic_quant(tensor(x), quant_mode="pertoken", dst_type_max=0.0)
        assert_same(y, ry)
    for fn in (tnpu.npu_dynamic_quant, tnpu.npu_dynamic_quant_asymmetric):
        for kw, what in ((dict(quant_mode="pertensor"), "quant_mode 'pertensor'"),
                         (dict(quant_mode="perchannel"), "quant_mode 'perchannel'"),
                         (dict(dst_type_max=15.0), "dst_type_max 15.0")):
            with pytest.raises(tnpu.NotEmulatedError, match=f"{fn.__name__}: {what} is not emulated"):
                fn(tensor(x), **kw)


# ------------------------------------------------------------------ quant matmul / trans quant param
def i8(*shape):
    return RNG.integers(-128, 128, shape).astype(np.int8)


@pytest.mark.parametrize("scale_dt,out,pertoken,bias_dt", [
    ("float32", torch.int8, False, "int32"), ("int64", None, False, None), ("uint64", torch.float16, False, None),
    ("float32", torch.float16, False, "int32"),
    ("float32", torch.float16, True, "float16"), ("bfloat16", torch.bfloat16, True, "bfloat16"),
    ("float32", torch.bfloat16, False, "float32"), ("float32", torch.int32, False, "int32")])
def test_quant_matmul_bit_identical(scale_dt, out, pertoken, bias_dt):
    m, k, n = 7, 96, 24
    x1, x2 = i8(2, m, k), i8(k, n)
    scale = RNG.uniform(1e-3, 1e-2, n).astype(np.float32)
    if scale_dt in ("int64", "uint64"):
        scale = npusim.npu_trans_quant_param(scale, RNG.uniform(-5, 5, n).astype(np.float32)).view(scale_dt)
    else:
        scale = scale.astype(npusim.formats.as_dtype(scale_dt))
    pt = RNG.uniform(0.5, 2, m).astype(np.float32) if pertoken else None
    bias = None if bias_dt is None else (RNG.integers(-999, 999, n) if bias_dt == "int32" else
                                         RNG.uniform(-3, 3, n)).astype(npusim.formats.as_dtype(bias_dt))
    y = tnpu.npu_quant_matmul(tensor(x1), tensor(x2), tensor(scale), pertoken_scale=None if pt is None else tensor(pt),
                              bias=None if bias is None else tensor(bias), output_dtype=out)
    ref = npusim.npu_quant_matmul(x1, x2, scale, pertoken_scale=pt, bias=bias,
                                  output_dtype=None if out is None else str(out)[6:], product="atlas-a2")
    assert_same(y, ref)


def test_quant_matmul_float_offset_and_int4pack():
    x1, x2 = i8(6, 40), i8(40, 16)
    scale, offset = RNG.uniform(1e-3, 1e-2, 16).astype(np.float32), RNG.uniform(-20, 20, 16).astype(np.float32)
    assert_same(tnpu.npu_quant_matmul(tensor(x1), tensor(x2), tensor(scale), offset=tensor(offset)),
                npusim.npu_quant_matmul(x1, x2, scale, offset=offset))
    w = RNG.integers(-8, 8, (24, 16)).astype(np.int32)
    assert_same(tnpu.npu_convert_weight_to_int4pack(tensor(w)), npusim.npu_convert_weight_to_int4pack(w))
    # torch_npu's doc takes 2-D weights only (the aclnn op, the numpy face, also 3-D grouped ones)
    w3 = RNG.integers(-8, 8, (3, 24, 16)).astype(np.int32)
    with pytest.raises(npusim.AclnnError, match="'weight': must be 2-D"):
        tnpu.npu_convert_weight_to_int4pack(tensor(w3))


def test_quant_matmul_int4_and_trans_quant_param():
    m, k, n = 5, 64, 16
    x1 = RNG.integers(-2**31, 2**31, (m, k // 8)).astype(np.int32)
    x2 = RNG.integers(-2**31, 2**31, (k, n // 8)).astype(np.int32)
    scale, offset = RNG.uniform(1e-4, 1e-3, n).astype(np.float32), RNG.uniform(-9, 9, n).astype(np.float32)
    for round_mode in (0, 1):
        assert_same(tnpu.npu_trans_quant_param(tensor(scale), tensor(offset), round_mode),
                    npusim.npu_trans_quant_param(scale, offset, round_mode))
    q = tnpu.npu_trans_quant_param(tensor(scale))
    y = tnpu.npu_quant_matmul(tensor(x1), tensor(x2), q, output_dtype=torch.float16)
    assert_same(y, npusim.npu_quant_matmul(x1, x2, npusim.npu_trans_quant_param(scale), output_dtype="float16"))


def test_trans_quant_param_round_mode_none_is_the_default():
    # op-plugin's schema is `int? round_mode=0` and its kernel takes None as 0 (round_mode.value_or(0))
    scale, offset = RNG.uniform(1e-4, 1e-3, 16).astype(np.float32), RNG.uniform(-9, 9, 16).astype(np.float32)
    want = npusim.npu_trans_quant_param(scale, offset, 0)
    assert_same(tnpu.npu_trans_quant_param(tensor(scale), tensor(offset), round_mode=None), want)
    with tnpu.install("atlas-a2"):
        assert_same(torch.ops.npu.npu_trans_quant_param(tensor(scale), tensor(offset), None), want)
        with pytest.raises(AclnnError, match="'round_mode': must be 0 .* or 1") as e:
            tnpu.npu_trans_quant_param(tensor(scale), round_mode=2)
    assert e.value.status == 161002
    with pytest.raises(AclnnError, match="'round_mode'"):        # the numpy face has no optional round_mode
        npusim.npu_trans_quant_param(scale, offset, None)


def test_quant_matmul_per_group_int4_is_not_emulated():
    """The per-group int4 row of torch_npu's npu_quant_matmul doc (A2/A3: 2-D (k / group, n) scale, float16 offset,
    (m, 1) pertoken_scale, group_sizes) is not emulated: NotEmulatedError, not the NPU's shape rule."""
    m, k, n, group = 4, 512, 16, 256
    x1 = RNG.integers(-2**31, 2**31, (m, k // 8)).astype(np.int32)
    x2 = RNG.integers(-2**31, 2**31, (k, n // 8)).astype(np.int32)
    scale = RNG.uniform(1e-3, 1e-2, (k // group, n)).astype(np.float32)
    offset, pt = np.zeros((k // group, n), np.float16), np.ones((m, 1), np.float32)
    args = (tensor(x1), tensor(x2), tensor(scale))
    for kw in (dict(offset=tensor(offset), pertoken_scale=tensor(pt), output_dtype=torch.bfloat16),
               dict(pertoken_scale=tensor(pt[:, 0]), output_dtype=torch.float16), dict(output_dtype=torch.float16),
               dict(offset=tensor(offset), pertoken_scale=tensor(pt), output_dtype=torch.bfloat16,
                    group_sizes=[1, 1, group])):
        for product in ("atlas-a2", "atlas-a3"):
            with tnpu.install(product):
                with pytest.raises(tnpu.NotEmulatedError, match="per-group quantization.* not emulated by npusim"):
                    tnpu.npu_quant_matmul(*args, **kw)
                with pytest.raises(tnpu.NotEmulatedError, match="per-group quantization.* not emulated by npusim"):
                    torch.ops.npu.npu_quant_matmul(*args, **kw)
    # the numpy face says the same, as its AclnnError for what the NPU takes and npusim does not model
    with pytest.raises(AclnnError, match="'scale': .*per-group quantization.* not emulated by npusim") as e:
        npusim.npu_quant_matmul(x1, x2, scale, output_dtype="float16")
    assert e.value.status == 161002
    # the NPU's own rules stand: a 2-D int8 scale, a (1, n) int4 scale, int4 on Atlas inference products
    for a1, a2, s, product, rule in (
            (i8(4, 64), i8(64, 16), scale, "atlas-a2", "'scale': shape must be"),
            (x1, x2, scale[:1], "atlas-a2", "'scale': shape must be"),
            (x1, x2, scale, "atlas-inference", "'x1': int4 .* not supported on Atlas inference")):
        with tnpu.install(product):
            with pytest.raises(AclnnError, match=rule):
                tnpu.npu_quant_matmul(tensor(a1), tensor(a2), tensor(s), output_dtype=torch.float16)


def test_quant_matmul_a8w4_is_not_emulated_and_int4_rules_run_where_int4_exists():
    """int8 x1 with an int4 (int32-packed) x2 is torch_npu's A8W4 path on A2/A3 (op-plugin's meta and eager kernel,
    aclnnQuantMatmulV5): NotEmulatedError, not a dtype rule; elsewhere the product's dtype rule, and the int4 layout
    rules only where int4 runs."""
    x1, x2 = i8(4, 512), RNG.integers(-2**31, 2**31, (512, 2)).astype(np.int32)
    scale = np.ones(16, np.float32)
    for product in ("atlas-a2", "atlas-a3"):
        with tnpu.install(product):
            with pytest.raises(tnpu.NotEmulatedError, match="A8W4.* not emulated by npusim"):
                tnpu.npu_quant_matmul(tensor(x1), tensor(x2), tensor(scale), output_dtype=torch.bfloat16)
    with pytest.raises(AclnnError, match="'x2': .*A8W4.* not emulated by npusim") as e:
        npusim.npu_quant_matmul(x1, x2, scale, output_dtype="bfloat16")
    assert e.value.status == 161002
    pt = tensor(np.ones(4, np.float32))
    for product, rule in (("atlas-inference", "'x2': dtype must be one of int8"),
                          ("ascend-950pr", "'x2': dtype must be one of int8")):
        with tnpu.install(product):      # the NPU's own dtype rule, before npusim's pertoken note on 310P
            with pytest.raises(AclnnError, match=rule):
                tnpu.npu_quant_matmul(tensor(x1), tensor(x2), tensor(scale), pertoken_scale=pt,
                                      output_dtype=torch.float16)
    # a non-contiguous int4 x1 on a product without int4: the product's rule, not the A2/A3 layout rule
    w1 = torch.from_numpy(RNG.integers(-2**31, 2**31, (64, 4)).astype(np.int32)).t()
    w2 = torch.from_numpy(RNG.integers(-2**31, 2**31, (32, 2)).astype(np.int32))
    for product, error, rule in (
            (("atlas-inference", AclnnError, "not supported on Atlas inference"),
             ("ascend-950pr", tnpu.NotEmulatedError, "'x1': int4 .* on Ascend 950 .* not emulated"))):  # 950: V5's
        with tnpu.install(product):
            with pytest.raises(error, match=rule):
                tnpu.npu_quant_matmul(w1, w2, tensor(scale), output_dtype=torch.float16)
    with tnpu.install("atlas-a2"):
        with pytest.raises(AclnnError, match="'x1': int4 .* must be contiguous"):
            tnpu.npu_quant_matmul(w1, w2, tensor(scale), output_dtype=torch.float16)


def test_trans_quant_param_offset_no_longer_than_a_2d_scale():
    # torch_npu's kernel gives a 2-D scale's shape to the output (op-plugin TransQuantParamKernelNpuOpApi.cpp)
    s11, s1n, off = np.full((1, 1), 0.5, np.float32), np.full((1, 16), 0.5, np.float32), np.ones(16, np.float32)
    with pytest.raises(AclnnError, match="'offset': must not be longer than a 2-D scale") as e:
        npusim.npu_trans_quant_param(s11, off)
    assert e.value.status == 161002
    with tnpu.install("atlas-a2"):
        with pytest.raises(AclnnError, match="'offset': must not be longer"):
            tnpu.npu_trans_quant_param(tensor(s11), tensor(off.reshape(1, 16)))
    assert npusim.npu_trans_quant_param(s1n, off).shape == (1, 16)
    assert npusim.npu_trans_quant_param(s1n, off[:1]).shape == (1, 16)
    # a 1-D scale takes the longer of the two shapes, as the kernel does (scale.size(0) > offset.size(0))
    assert npusim.npu_trans_quant_param(s11[0], off.reshape(1, 16)).shape == (1, 16)


def test_int4pack_rejects_empty_weights():
    for shape in ((0, 64), (16, 0)):
        with pytest.raises(AclnnError, match="'weight': dimensions must be greater than 0") as e:
            tnpu.npu_convert_weight_to_int4pack(torch.zeros(shape, dtype=torch.int32))
        assert e.value.status == 161002


def test_quant_matmul_errors_and_not_emulated():
    x1, x2, s = i8(4, 8), i8(9, 4), np.ones(4, np.float32)
    same_error(lambda: tnpu.npu_quant_matmul(tensor(x1), tensor(x2), tensor(s)),
               lambda: npusim.npu_quant_matmul(x1, x2, s, product=tnpu.current_product()))
    with pytest.raises(tnpu.NotEmulatedError, match="group_sizes"):
        tnpu.npu_quant_matmul(tensor(x1), tensor(i8(8, 4)), tensor(s), group_sizes=[0, 0, 32])
    with pytest.raises(tnpu.NotEmulatedError, match="device 'meta'"):
        tnpu.npu_quant_matmul(torch.empty(4, 8, dtype=torch.int8, device="meta"), tensor(i8(8, 4)), tensor(s))


def test_quant_matmul_float8_is_not_emulated_on_950_and_rejected_elsewhere():
    # torch_npu calls aclnnQuantMatmulV5 on Ascend 950, which takes float8 x1 / x2; npusim's is V4's, int8 there
    x1 = RNG.standard_normal((4, 32)).astype(ml_dtypes.float8_e4m3fn)
    x2 = RNG.standard_normal((32, 8)).astype(ml_dtypes.float8_e4m3fn)
    s = np.ones(8, np.float32)
    with tnpu.install("ascend-950pr"):
        with pytest.raises(tnpu.NotEmulatedError, match=r"'x1': float8_e4m3fn inputs .* 950\) are not emulated"):
            tnpu.npu_quant_matmul(tensor(x1), tensor(x2), tensor(s), output_dtype=torch.bfloat16)
    with pytest.raises(AclnnError, match="'x1': float8_e4m3fn inputs .* are not emulated by npusim"):
        npusim.npu_quant_matmul(x1, x2, s, output_dtype="bfloat16", product="ascend-950pr")
    with tnpu.install("atlas-a2"):          # A2 / A3 take no float8: the NPU's own rule
        with pytest.raises(AclnnError, match="'x1': dtype must be one of int8, int32"):
            tnpu.npu_quant_matmul(tensor(x1), tensor(x2), tensor(s), output_dtype=torch.bfloat16)


def test_quant_matmul_on_950_beyond_int8_v4_is_not_emulated():
    """torch_npu's 950 npu_quant_matmul doc lists int4 x1 / x2, float32 output, a (1, n) bias with a 2-D output and
    a (1,) pertoken_scale; npusim's 950 quant matmul is aclnnQuantMatmulV4's: not emulated (NotEmulatedError, the
    numpy face's AclnnError marked not_emulated), while the NPU's own rules stay AclnnErrors."""
    x1, x2, s, pt = i8(8, 64), i8(64, 32), np.ones(32, np.float32), np.ones(8, np.float32)
    w4 = RNG.integers(-2**31, 2**31, (8, 8)).astype(np.int32), RNG.integers(-2**31, 2**31, (64, 4)).astype(np.int32)
    cases = [("'x1': int4", dict(x1=w4[0], x2=w4[1], scale=s, output_dtype="float16")),
             ("'output_dtype': float32 output", dict(x1=x1, x2=x2, scale=s, pertoken_scale=pt, output_dtype="float32")),
             ("'bias': shape \\(1, 32\\)", dict(x1=x1, x2=x2, scale=s, pertoken_scale=pt,
                                               bias=np.ones((1, 32), np.float32), output_dtype="bfloat16")),
             ("'pertoken_scale': shape \\(1,\\)", dict(x1=x1, x2=x2, scale=s, pertoken_scale=pt[:1],
                                                     output_dtype="bfloat16"))]
    for rule, kw in cases:
        with pytest.raises(AclnnError, match=rule + ".* not emulated by npusim") as e:
            npusim.npu_quant_matmul(**kw, product="ascend-950pr")
        assert e.value.not_emulated and e.value.status == 161002
        targs = {k: (None if k == "output_dtype" else tensor(v)) for k, v in kw.items()}
        targs["output_dtype"] = getattr(torch, kw["output_dtype"])
        with tnpu.install("ascend-950pr"):
            with pytest.raises(tnpu.NotEmulatedError, match=rule):
                tnpu.npu_quant_matmul(**targs)
        with tnpu.install("atlas-a2"):     # not on the A2/A3 list: the NPU's own rule
            if "int4" not in rule:
                with pytest.raises(AclnnError) as e:
                    tnpu.npu_quant_matmul(**targs)
                assert not e.value.not_emulated
    with pytest.raises(AclnnError, match="'bias': shape must be") as e:      # (2, n) is no 950 shape either
        npusim.npu_quant_matmul(x1, x2, s, pertoken_scale=pt, bias=np.ones((2, 32), np.float32),
                                output_dtype="bfloat16", product="ascend-950pr")
    assert not e.value.not_emulated


def test_quant_matmul_pertoken_on_atlas_inference_is_not_emulated():
    # vllm-ascend's 310P W8A8 dynamic linear passes a pertoken_scale, which another ops-nn version takes (float32 scale,
    # float16 output) and the torch_npu doc does not list; npusim says it does not model that kernel
    x1, x2, s, pt = i8(4, 32), i8(32, 16), np.ones(16, np.float32), np.ones(4, np.float32)
    with tnpu.install("atlas-inference"):
        with pytest.raises(tnpu.NotEmulatedError, match="'pertoken_scale': is not emulated on Atlas inference"):
            tnpu.npu_quant_matmul(tensor(x1), tensor(x2), tensor(s), pertoken_scale=tensor(pt),
                                  output_dtype=torch.float16)
    with pytest.raises(AclnnError, match="'pertoken_scale': is not emulated on Atlas inference products"):
        npusim.npu_quant_matmul(x1, x2, s, pertoken_scale=pt, output_dtype="float16", product="atlas-inference")


# keywords of torch_npu's current npu_quant_matmul signature that npusim takes as None only
QMM_NONE_ONLY = {"x1_dtype": 1, "x2_dtype": 1, "pertoken_scale_dtype": 1, "scale_dtype": 1,
                 "group_sizes": [1, 128, 128], "y_scale": torch.ones(1, 8, dtype=torch.int64)}


def test_quant_matmul_current_keywords_none_or_not_emulated():
    x1, x2 = i8(5, 32), i8(32, 8)
    scale, pt = RNG.uniform(1e-3, 1e-2, 8).astype(np.float32), RNG.uniform(0.5, 2, 5).astype(np.float32)
    expected = npusim.npu_quant_matmul(x1, x2, scale, pertoken_scale=pt, output_dtype="bfloat16")
    args = (tensor(x1), tensor(x2), tensor(scale))
    y = tnpu.npu_quant_matmul(*args, pertoken_scale=tensor(pt), output_dtype=torch.bfloat16,
                              **dict.fromkeys(QMM_NONE_ONLY))          # forwarded as a kwargs dict, all None
    assert_same(y, expected)
    for name, value in QMM_NONE_ONLY.items():
        with pytest.raises(tnpu.NotEmulatedError, match=f"'{name}'.*only None"):
            tnpu.npu_quant_matmul(*args, pertoken_scale=tensor(pt), output_dtype=torch.bfloat16, **{name: value})


# ------------------------------------------------------------------ LinearA8W8Quant module
@pytest.mark.parametrize("out,offset,pertoken", [(None, True, False), (torch.float16, False, False),
                                                 (torch.bfloat16, False, True), (torch.float16, False, True)])
def test_linear_a8w8_quant_module(out, offset, pertoken):
    k, n, m = 32, 12, 6
    w, x = i8(n, k), i8(m, k)
    scale = RNG.uniform(1e-3, 1e-2, n).astype(np.float32)
    off = RNG.uniform(-6, 6, n).astype(np.float32)
    pt = RNG.uniform(0.5, 2, m).astype(np.float32)
    bias = RNG.integers(-300, 300, n).astype(np.int32)
    layer = tnpu.contrib.module.LinearA8W8Quant(k, n, bias=True, offset=offset, pertoken_scale=pertoken,
                                                output_dtype=out)
    assert isinstance(layer, torch.nn.Module)
    assert [p for p, _ in layer.named_parameters()] == ["weight", "scale"] + ["offset"] * offset \
        + ["pertoken_scale"] * pertoken + ["bias"]
    layer.weight.data, layer.scale.data, layer.bias.data = tensor(w), tensor(scale), tensor(bias)
    if offset:
        layer.offset.data = tensor(off)
    if pertoken:
        layer.pertoken_scale.data = tensor(pt)
    ref_layer = npusim.LinearA8W8Quant(k, n, bias=True, offset=offset, pertoken_scale=pertoken,
                                       output_dtype=None if out is None else str(out)[6:])
    ref_layer.weight, ref_layer.scale, ref_layer.bias = w, scale, bias
    ref_layer.offset = off if offset else None
    ref_layer.pertoken_scale = pt if pertoken else None
    ref = ref_layer(x)
    assert_same(layer(tensor(x)), ref)
    # state_dict round trip: a fresh module takes the saved int8 weight / float scale as they are
    again = tnpu.contrib.module.LinearA8W8Quant(k, n, bias=True, offset=offset, pertoken_scale=pertoken,
                                                output_dtype=out)
    again.load_state_dict(layer.state_dict())
    assert_same(again(tensor(x)), ref)


def test_linear_a8w8_quant_module_takes_a_batched_weight():
    """Seed 003's weight (batch, n, k) through the module, eager and compiled, as the numpy layer computes it."""
    k, n, m = 32, 12, 6
    w, x = i8(2, n, k), i8(2, m, k)
    scale = RNG.uniform(1e-3, 1e-2, n).astype(np.float32)
    layer = tnpu.contrib.module.LinearA8W8Quant(k, n, bias=False, output_dtype=torch.float16)
    layer.weight.data, layer.scale.data = tensor(w), tensor(scale)
    ref_layer = npusim.LinearA8W8Quant(k, n, bias=False, output_dtype="float16")
    ref_layer.weight, ref_layer.scale = w, scale
    assert_same(layer(tensor(x)), ref_layer(x))
    torch._dynamo.reset()
    assert_same(torch.compile(layer, fullgraph=True)(tensor(x)), ref_layer(x))


def test_linear_a8w8_quant_int64_scale_state_dict_and_errors():
    layer = tnpu.contrib.module.LinearA8W8Quant(16, 8, bias=False)
    layer.weight.data = tensor(i8(8, 16))
    layer.scale.data = tnpu.npu_trans_quant_param(tensor(np.full(8, 0.01, np.float32)))
    again = tnpu.contrib.module.LinearA8W8Quant(16, 8, bias=False)
    again.load_state_dict(layer.state_dict())
    assert again.scale.dtype == torch.int64
    x = i8(3, 16)
    assert torch.equal(again(tensor(x)), layer(tensor(x)))
    layer.output_dtype = torch.int32
    with pytest.raises(AclnnError, match="output_dtype"):
        layer(tensor(x))
    with pytest.raises(tnpu.NotEmulatedError):
        tnpu.contrib.module.LinearA8W8Quant(16, 8, device="meta")
    # torch_npu starts the weight as a float32 torch.empty: a forward before an int8 weight is set fails, as there
    for cls, error in ((tnpu.contrib.module.LinearA8W8Quant, AclnnError), (tnpu.contrib.module.LinearQuant, ValueError)):
        fresh = cls(16, 8, bias=False, output_dtype=torch.float16)
        assert fresh.weight.dtype == torch.float32
        with pytest.raises(error, match="x2|weight"):
            fresh(tensor(x))


def test_linear_a8w8_quant_forward_calls_torch_npus_operators_so_mocks_see_them():
    """torch_npu's forward calls torch_npu.npu_trans_quant_param / npu_quant_matmul through the module: patches and
    wraps= spies on those names see the stand-in's calls too (vllm-ascend's tests are mostly such patches)."""
    w, x = tensor(i8(32, 64)), tensor(i8(4, 64))
    scale = torch.tensor(RNG.uniform(1e-3, 1e-2, 32), dtype=torch.float32)
    with tnpu.install("atlas-a3"):
        import torch_npu
        from torch_npu.contrib.module import LinearA8W8Quant
        model = LinearA8W8Quant(64, 32, bias=False, output_dtype=torch.float16)
        model.weight.data, model.scale.data = w, scale
        with mock.patch("torch_npu.npu_quant_matmul", wraps=torch_npu.npu_quant_matmul) as qmm, \
                mock.patch("torch_npu.npu_trans_quant_param", wraps=torch_npu.npu_trans_quant_param) as tqp:
            spied = model(x)
        tqp.assert_called_once()
        qmm.assert_called_once()
        assert qmm.call_args.args[1].shape == (64, 32)         # weight^T, as torch_npu passes it
        packed = npusim.npu_trans_quant_param(scale.numpy())
        assert_same(spied, npusim.npu_quant_matmul(x.numpy(), w.numpy().T, packed, output_dtype="float16"))
        sentinel = torch.full((4, 32), 7.0, dtype=torch.float16)
        with mock.patch("torch_npu.npu_quant_matmul", return_value=sentinel) as qmm:
            assert model(x) is sentinel
        # no packing with pertoken_scale (the vector epilogue takes the float scale)
        pt = LinearA8W8Quant(64, 32, bias=False, pertoken_scale=True, output_dtype=torch.bfloat16)
        pt.weight.data, pt.scale.data, pt.pertoken_scale.data = w, scale, torch.ones(4)
        with mock.patch("torch_npu.npu_trans_quant_param") as tqp, \
                mock.patch("torch_npu.npu_quant_matmul", return_value=sentinel) as qmm:
            pt(x)
        tqp.assert_not_called()
        assert qmm.call_args.args[2] is pt.scale
        # the module's own rules still come first (seed 003: no int32 output for LinearA8W8Quant)
        model.output_dtype = torch.int32
        with mock.patch("torch_npu.npu_quant_matmul") as qmm, pytest.raises(AclnnError, match="LinearA8W8Quant"):
            model(x)
        qmm.assert_not_called()


def test_linear_a8w8_quant_load_state_dict_takes_the_dtype_and_checks_the_shape():
    """A checkpoint of another layer size is torch's size-mismatch error, as for any nn.Module (torch_npu's module
    has no loader of its own); the saved dtypes are adopted; per-tensor (1,) scales and any pertoken_scale load."""
    src = tnpu.contrib.module.LinearA8W8Quant(64, 32)
    src.weight.data = tensor(i8(32, 64))
    dst = tnpu.contrib.module.LinearA8W8Quant(128, 64)
    with pytest.raises(RuntimeError, match=r"size mismatch for weight: copying a param with shape "
                                           r"torch.Size\(\[32, 64\]\) from checkpoint"):
        dst.load_state_dict(src.state_dict())
    assert dst.weight.shape == (64, 128)
    same = tnpu.contrib.module.LinearA8W8Quant(64, 32)
    same.load_state_dict(src.state_dict())
    assert same.weight.dtype == torch.int8 and torch.equal(same.weight, src.weight)
    per_tensor = tnpu.contrib.module.LinearA8W8Quant(64, 32, offset=True, pertoken_scale=True)
    per_tensor.scale.data, per_tensor.offset.data = torch.tensor([0.5]), torch.tensor([2.0])
    per_tensor.pertoken_scale.data = torch.rand(5)
    again = tnpu.contrib.module.LinearA8W8Quant(64, 32, offset=True, pertoken_scale=True)
    again.load_state_dict(per_tensor.state_dict())
    assert (again.scale.shape, again.offset.shape, again.pertoken_scale.shape) == ((1,), (1,), (5,))
    wrong_scale = {**src.state_dict(), "scale": torch.ones(31)}
    with pytest.raises(RuntimeError, match="size mismatch for scale"):
        tnpu.contrib.module.LinearA8W8Quant(64, 32).load_state_dict(wrong_scale)


@pytest.mark.parametrize("out,offset,pertoken", [(None, True, False), (torch.float16, False, False),
                                                 (torch.bfloat16, False, True), (torch.float16, False, True)])
def test_linear_quant_module(out, offset, pertoken):
    """LinearQuant as torch_npu's forward composes it: npu_trans_quant_param(scale, offset) for a float32 scale
    without pertoken_scale (whatever the output), then npu_quant_matmul(x1, weight^T, ...)."""
    k, n, m = 32, 12, 6
    w, x = i8(n, k), i8(m, k)
    scale = RNG.uniform(1e-3, 1e-2, n).astype(np.float32)
    off = RNG.uniform(-6, 6, n).astype(np.float32) if offset else None
    pt = RNG.uniform(0.5, 2, m).astype(np.float32) if pertoken else None
    bias = RNG.integers(-300, 300, n).astype(np.int32)
    layer = tnpu.contrib.module.LinearQuant(k, n, offset=offset, pertoken_scale=pertoken, output_dtype=out)
    layer.weight.data, layer.scale.data, layer.bias.data = tensor(w), tensor(scale), tensor(bias)
    if offset:
        layer.offset.data = tensor(off)
    if pertoken:
        layer.pertoken_scale.data = tensor(pt)
    packed = npusim.npu_trans_quant_param(scale, off) if not pertoken else scale
    ref = npusim.npu_quant_matmul(x, w.T, packed, offset=off, pertoken_scale=pt, bias=bias,
                                  output_dtype=None if out is None else str(out)[6:])
    assert_same(layer(tensor(x)), ref)


def test_linear_quant_int4_and_its_own_checks():
    m, k, n = 5, 64, 16
    x1 = RNG.integers(-2**31, 2**31, (m, k // 8)).astype(np.int32)
    w = RNG.integers(-2**31, 2**31, (n, k // 8)).astype(np.int32)          # (n, k // 8), contiguous
    scale = RNG.uniform(1e-4, 1e-3, n).astype(np.float32)
    layer = tnpu.contrib.module.LinearQuant(k, n, bias=False, output_dtype=torch.float16)
    layer.weight.data, layer.scale.data = tensor(w), tensor(scale)
    assert_same(layer(tensor(x1)), npusim.npu_quant_matmul(x1, w.T, npusim.npu_trans_quant_param(scale),
                                                          output_dtype="float16"))
    with pytest.raises(ValueError, match="must both be torch.int32 or both torch.int8"):
        layer(tensor(i8(m, k)))                 # int8 input, int32 weight: torch_npu's own check
    with pytest.raises(TypeError):
        tnpu.contrib.module.LinearQuant(k, n, False)        # bias is keyword-only there
    # bfloat16 output without pertoken_scale: the scale is packed all the same, and the NPU rejects the call
    layer.output_dtype = torch.bfloat16
    with pytest.raises(AclnnError, match="'pertoken_scale'"):
        layer(tensor(x1))
    int8_layer = tnpu.contrib.module.LinearQuant(16, 8, bias=False, output_dtype=torch.bfloat16)
    int8_layer.weight.data = tensor(i8(8, 16))
    with pytest.raises(AclnnError, match="'scale'.*int64"):
        int8_layer(tensor(i8(3, 16)))


# ------------------------------------------------------------------ fake quant, moe, indexer custom op
@pytest.mark.parametrize("xdt,sdt", [("float32", "float32"), ("float16", "float16"), ("float16", "float32")])
def test_fake_quant_bit_identical(xdt, sdt):
    x = (RNG.standard_normal((4, 6, 5)) * 20).astype(xdt)
    scale = RNG.uniform(0.05, 0.5, 6).astype(sdt)
    zp = RNG.integers(-3, 4, 6).astype(np.int32)
    out, mask = tnpu.fake_quantize_per_channel_affine_cachemask(tensor(x), tensor(scale), tensor(zp), 1, -128, 127)
    ro, rm = npusim.fake_quantize_per_channel_affine_cachemask(x, scale, zp, 1, -128, 127)
    assert_same(out, ro)
    assert_same(mask, rm)
    assert_same(tnpu.fake_quantize_per_channel_affine(tensor(x), tensor(scale), tensor(zp), 1, -128, 127), ro)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_fake_quant_gradient_is_torchs_straight_through(dtype):
    """QAT: the output requires grad like torch's CPU op, and the input gradient is torch's own where the
    forward outputs agree (torch's backward: grad * mask, zero where the value was clamped)."""
    gen = torch.Generator().manual_seed(5)
    x = (torch.randn(4, 6, 5, generator=gen) * 40).to(dtype)
    scale = torch.rand(6, generator=gen) * 0.45 + 0.05
    zp = torch.randint(-3, 4, (6,), generator=gen, dtype=torch.int32)
    grad = torch.randn(4, 6, 5, generator=gen).to(dtype)
    x_npu, x_torch = x.clone().requires_grad_(), x.clone().requires_grad_()
    y = tnpu.fake_quantize_per_channel_affine(x_npu, scale, zp, 1, -128, 127)
    y_torch = torch.fake_quantize_per_channel_affine(x_torch, scale, zp, 1, -128, 127)
    assert y.requires_grad and y.dtype == y_torch.dtype
    y.backward(grad)
    y_torch.backward(grad)
    agree = y.detach() == y_torch.detach()
    assert agree.float().mean() > 0.99
    clamped = x_torch.grad[agree] == 0
    assert clamped.any() and not clamped.all()            # both sides of the straight-through mask are checked
    assert torch.equal(x_npu.grad[agree], x_torch.grad[agree])
    # the cachemask form: out differentiable, mask not; no grad wanted, none recorded
    out, mask = tnpu.fake_quantize_per_channel_affine_cachemask(x.clone().requires_grad_(), scale, zp, 1, -128, 127)
    assert out.requires_grad and not mask.requires_grad and mask.dtype == torch.bool
    assert not tnpu.fake_quantize_per_channel_affine(x, scale, zp, 1, -128, 127).requires_grad
    with torch.no_grad():
        assert not tnpu.fake_quantize_per_channel_affine(x_npu, scale, zp, 1, -128, 127).requires_grad


def test_npu_device_runs_torchs_fake_quant_with_the_npu_kernel():
    """Inside install(npu_device=True) tensors are on the 'npu' device, where torch_npu runs aten's
    fake_quantize_per_channel_affine_cachemask with aclnnFakeQuantPerChannelAffineCachemask: torch's own calls
    give the stand-in's NPU arithmetic there (checked against the numpy face), torch's CPU kernel outside."""
    x = np.array([[np.inf, 1.0, -3.7], [2.5, -np.inf, 130.0]], np.float32)
    scale, zp = np.ones(2, np.float32), np.zeros(2, np.int32)
    npu_out, npu_mask = npusim.fake_quantize_per_channel_affine_cachemask(x, scale, zp, 0, -128, 127)
    cpu_out = torch.fake_quantize_per_channel_affine(tensor(x), tensor(scale), tensor(zp), 0, -128, 127)
    assert not torch.equal(cpu_out, tensor(npu_out))         # the case tells the two kernels apart (inf)
    with tnpu.install("atlas-a2", npu_device=True):
        xt = tensor(x).npu()
        assert_same(torch.fake_quantize_per_channel_affine(xt, tensor(scale), tensor(zp), 0, -128, 127), npu_out)
        assert_same(torch.fake_quantize_per_channel_affine(input=xt, scale=tensor(scale), zero_point=tensor(zp),
                                                           axis=0, quant_min=-128, quant_max=127), npu_out)
        assert_same(torch.ops.aten.fake_quantize_per_channel_affine(xt, tensor(scale), tensor(zp), 0, -128, 127),
                    npu_out)
        for op in (torch.ops.aten.fake_quantize_per_channel_affine_cachemask,
                   torch.ops.aten.fake_quantize_per_channel_affine_cachemask.default):
            out, mask = op(xt, tensor(scale), tensor(zp), 0, -128, 127)
            assert_same(out, npu_out)
            assert_same(mask, npu_mask)
        # float16, which the NPU kernel takes and torch's CPU kernel refuses
        xh = np.array([[1.3, 2.6]], np.float16)
        sh = np.ones(1, np.float16)
        want = npusim.fake_quantize_per_channel_affine_cachemask(xh, sh, zp[:1], 0, -128, 127)[0]
        assert_same(torch.fake_quantize_per_channel_affine(tensor(xh), tensor(sh), tensor(zp[:1]), 0, -128, 127),
                    want)
        # QAT code: torch.ao's FakeQuantize calls torch.fake_quantize_per_channel_affine, with torch's gradient
        fq = torch.ao.quantization.FakeQuantize(observer=torch.ao.quantization.MovingAveragePerChannelMinMaxObserver,
                                                quant_min=-128, quant_max=127, dtype=torch.qint8,
                                                qscheme=torch.per_channel_symmetric, ch_axis=0)
        xs = torch.randn(3, 8).npu().requires_grad_()
        y = fq(xs)
        y.sum().backward()
        want = npusim.fake_quantize_per_channel_affine_cachemask(xs.detach().numpy(), fq.scale.numpy(),
                                                                 fq.zero_point.numpy(), 0, -128, 127)
        assert_same(y.detach(), want[0])
        assert torch.equal(xs.grad, torch.from_numpy(want[1]).float())
    # outside the block torch's own CPU kernel runs again (the golden a test compares with)
    assert torch.equal(torch.fake_quantize_per_channel_affine(tensor(x), tensor(scale), tensor(zp), 0, -128, 127),
                       cpu_out)


def test_fake_quant_errors_name_torchs_input():
    x = torch.randn(2, 3)
    scale, zp = torch.ones(3), torch.zeros(3, dtype=torch.int32)
    with tnpu.install("atlas-a2"):
        with pytest.raises(AclnnError, match=r"parameter 'input': dtype must be one of float16, float32, got "
                                             r"bfloat16"):
            tnpu.fake_quantize_per_channel_affine(x.bfloat16(), scale, zp, 1, -128, 127)
        with pytest.raises(AclnnError, match=r"parameter 'axis': must be in \[-2, 1\] for a 2-D input, got 2"):
            tnpu.fake_quantize_per_channel_affine(x, scale, zp, 2, -128, 127)
        with pytest.raises(AclnnError, match=r"parameter 'scale': must have input.shape\[1\] = 3 elements"):
            tnpu.fake_quantize_per_channel_affine_cachemask(x, torch.ones(2), zp[:2], 1, -128, 127)


def test_fake_quant_scale_and_zero_point_are_not_differentiable_as_in_torch():
    x, zp = torch.randn(2, 3), torch.zeros(3, dtype=torch.int32)
    scale = torch.full((3,), 0.1, requires_grad=True)
    with pytest.raises(RuntimeError, match="not differentiable"):          # torch's own op refuses it too
        torch.fake_quantize_per_channel_affine(x, scale, zp, 1, -128, 127)
    with pytest.raises(RuntimeError, match="'scale' must not require grad"):
        tnpu.fake_quantize_per_channel_affine(x, scale, zp, 1, -128, 127)


@pytest.mark.parametrize("xdt", ["float16", "bfloat16", "float32"])
def test_moe_init_routing_quant_v1_bit_identical(xdt):
    n, k, H = 6, 2, 32
    x = (RNG.standard_normal((n, H)) * 3).astype(npusim.formats.as_dtype(xdt))
    row_idx = np.arange(n * k, dtype=np.int32).reshape(k, n).T.copy()
    expert_idx = RNG.integers(0, 4, (n, k)).astype(np.int32)
    outs = tnpu.npusim_moe_init_routing_quant(tensor(x), tensor(row_idx), tensor(expert_idx), 4, 1.7, -0.5)
    for t, a in zip(outs, npusim.moe_init_routing_quant(x, row_idx, expert_idx, 4, 1.7, -0.5)):
        assert_same(t, a)


def test_moe_init_routing_quant_v2_name_is_not_emulated():
    """torch_npu.npu_moe_init_routing_quant is the V2 op: neither its call nor V1's binds to V1 silently."""
    x = torch.randn(3, 32)
    expert_idx = torch.tensor([[1, 2], [0, 1], [0, 2]], dtype=torch.int32)
    row_idx = torch.arange(6, dtype=torch.int32).reshape(2, 3).t().contiguous()
    with tnpu.install("atlas-a2"):
        import torch_npu
        for call in (lambda: torch_npu.npu_moe_init_routing_quant(      # op-plugin doc's call (V2)
                         x, expert_idx, scale=torch.ones(1), offset=torch.zeros(1), active_num=0, expert_capacity=0,
                         expert_num=3, drop_pad_mode=0, expert_tokens_num_mode=1, quant_mode=0),
                     lambda: torch_npu.npu_moe_init_routing_quant(x, row_idx, expert_idx, 3, 1.0, 0.0)):
            with pytest.raises(tnpu.NotEmulatedError, match="V2.*npusim_moe_init_routing_quant"):
                call()
        assert "npu_moe_init_routing_quant" not in torch_npu.__all__
        # not an attribute at all, so that hasattr() guards (vllm-ascend's) take their fallback
        assert not hasattr(torch_npu, "npu_moe_init_routing_quant")


@pytest.mark.parametrize("xdt,cache_dt,quant_mode", [("bfloat16", "float8_e4m3fn", 1), ("float16", "float8_e5m2", 1),
                                                     ("bfloat16", "float8_e4m3fn", 0)])
def test_indexer_compress_epilog_custom_op_in_place(xdt, cache_dt, quant_mode):
    T, rows = 4, 6
    x = (RNG.standard_normal((T, 4096)) * 2).astype(npusim.formats.as_dtype(xdt))
    slots = np.array([5, -1, 0, 2], np.int32)
    cache = np.zeros((rows, 4096), npusim.formats.as_dtype(cache_dt))
    scale = np.zeros((rows, 32), np.float32 if quant_mode else ml_dtypes.float8_e8m0fnu)
    t_cache, t_scale = tensor(cache), tensor(scale)
    with tnpu.install("ascend-950pr"):
        assert torch.ops.custom.indexer_compress_epilog(t_cache, t_scale, tensor(x), tensor(slots),
                                                        quant_mode=quant_mode) is None
    npusim.indexer_compress_epilog(cache, scale, x, slots, quant_mode=quant_mode, product="ascend-950pr")
    assert_same(t_cache, cache)
    assert_same(t_scale, scale)
    before = t_cache.clone()
    with pytest.raises(AclnnError, match="product"):        # default product atlas-a2: not an indexer product
        torch.ops.custom.indexer_compress_epilog(t_cache, t_scale, tensor(x), tensor(slots))
    assert torch.equal(t_cache.view(torch.uint8), before.view(torch.uint8))


def test_indexer_compress_epilog_custom_op_as_deepseek_v4_calls_it():
    # cann-recipes-infer's DeepSeek-V4 Compressor (indexer, li_cache_quant_mode float8): x [B, S, 128] bf16,
    # cache [blocks, 128, 1, 128] float8_e4m3fn, scale [blocks, 128, 1, 1] float32, keyword arguments, slot_mapping
    # padded with -1 past x's rows in decode; the numpy face on the same arrays gives the same bytes
    B, S, blocks = 2, 3, 2
    x = (RNG.standard_normal((B, S, 128)) * 5).astype(ml_dtypes.bfloat16)
    cache = np.zeros((blocks, 128, 1, 128), ml_dtypes.float8_e4m3fn)
    scale = np.zeros((blocks, 128, 1, 1), np.float32)
    slots = np.array([7, 130, -1, 3, 200, 5] + [-1] * 6, np.int32)
    t_cache, t_scale = tensor(cache), tensor(scale)
    with tnpu.install("ascend-950pr"):
        torch.ops.custom.indexer_compress_epilog(indexer_compress_cache=t_cache, indexer_compress_scale=t_scale,
                                                 x=tensor(x), slot_mapping=tensor(slots))
    npusim.indexer_compress_epilog(cache, scale, x, slots, product="ascend-950pr")
    assert_same(t_cache, cache)
    assert_same(t_scale, scale)
    assert np.count_nonzero(scale) == 5 and t_cache.shape == (blocks, 128, 1, 128)


def test_indexer_compress_epilog_custom_op_hifloat8():
    x = (RNG.standard_normal((3, 4096)) * 3).astype(ml_dtypes.bfloat16)
    slots = np.array([1, 0, -1], np.int32)
    cache, scale = np.zeros((2, 4096), np.uint8), np.zeros((2, 32), np.float32)
    t_cache, t_scale = tensor(cache), tensor(scale)
    with tnpu.install("ascend-950pr"):
        torch.ops.custom.indexer_compress_epilog(t_cache, t_scale, tensor(x), tensor(slots), quant_mode=2, scale=0.25)
    npusim.indexer_compress_epilog(cache, scale, x, slots, quant_mode=2, scale=0.25, product="ascend-950pr")
    assert_same(t_cache, cache)
    assert cache.any()


# ------------------------------------------------------------------ torch.ops.npu.<name>
def test_torch_ops_npu_run_the_emulator():
    """Each emulated operator is torch.ops.npu.<name> inside install(), called the way compile passes and
    sglang / vllm-ascend code call it, with the numpy face's bits and errors and the block's product."""
    x = (RNG.standard_normal((4, 256)) * 3).astype(ml_dtypes.bfloat16)
    smooth = RNG.uniform(0.5, 2, 256).astype(ml_dtypes.bfloat16)
    x1, x2 = i8(4, 64), i8(64, 16)
    scale, offset = RNG.uniform(1e-3, 1e-2, 16).astype(np.float32), RNG.uniform(-5, 5, 16).astype(np.float32)
    pt, bias = RNG.uniform(0.5, 2, 4).astype(np.float32), RNG.uniform(-3, 3, 16).astype(np.float32)
    w4 = RNG.integers(-8, 8, (32, 16)).astype(np.int32)
    with tnpu.install("atlas-a3"):
        ops = torch.ops.npu
        y, s = ops.npu_dynamic_quant(input=tensor(x), smooth_scales=tensor(smooth), dst_type=torch.quint4x2)
        for t, a in zip((y, s), npusim.npu_dynamic_quant(x, smooth, dst_type="quint4x2", product="atlas-a3")):
            assert_same(t, a)
        for t, a in zip(ops.npu_dynamic_quant_asymmetric(tensor(x)),
                        npusim.npu_dynamic_quant_asymmetric(x, product="atlas-a3")):
            assert_same(t, a)
        assert_same(ops.npu_quant_matmul(tensor(x1), tensor(x2), tensor(scale), pertoken_scale=tensor(pt),
                                         bias=tensor(bias), output_dtype=torch.bfloat16, x1_dtype=None, y_scale=None),
                    npusim.npu_quant_matmul(x1, x2, scale, pertoken_scale=pt, bias=bias, output_dtype="bfloat16",
                                            product="atlas-a3"))
        assert_same(ops.npu_trans_quant_param(tensor(scale), tensor(offset), 1),
                    npusim.npu_trans_quant_param(scale, offset, 1))
        assert_same(ops.npu_convert_weight_to_int4pack(tensor(w4)), npusim.npu_convert_weight_to_int4pack(w4))
        w = tensor(x2)
        nz = ops.npu_format_cast(w, 29)
        assert nz is not w and torch.equal(nz, w) and ops.get_npu_format(nz) == 29 and ops.get_npu_format(w) == 2
        assert ops.npu_format_cast(nz, 29) is nz and ops.npu_format_cast_(w, 29) is w and ops.get_npu_format(w) == 29
        same_error(lambda: ops.npu_quant_matmul(tensor(x1), tensor(i8(63, 16)), tensor(scale)),
                   lambda: npusim.npu_quant_matmul(x1, i8(63, 16), scale, product="atlas-a3"))
        with pytest.raises(tnpu.NotEmulatedError, match="'group_sizes'"):
            ops.npu_quant_matmul(tensor(x1), tensor(x2), tensor(scale), group_sizes=[1, 128, 128])
        # meta tensors: the compute ops give the plan's output shapes, the weight-preparation ops are eager only
        y, s = ops.npu_dynamic_quant(torch.empty(2, 64, dtype=torch.bfloat16, device="meta"), dst_type=torch.quint4x2)
        assert (y.device.type, y.shape, y.dtype, s.shape, s.dtype) == ("meta", (2, 8), torch.int32, (2,), torch.float32)
        with pytest.raises(tnpu.NotEmulatedError, match="meta tensors"):
            ops.npu_convert_weight_to_int4pack(torch.empty(32, 16, dtype=torch.int32, device="meta"))
    with tnpu.install("ascend-950pr"):                       # the product of the block in force
        y, s = torch.ops.npu.npu_dynamic_quant(tensor(x), dst_type=torch.float8_e4m3fn)
    for t, a in zip((y, s), npusim.npu_dynamic_quant(x, dst_type="float8_e4m3fn", product="ascend-950pr")):
        assert_same(t, a)


def test_formats_live_with_the_storage_as_on_the_npu():
    """npu_format_cast / npu_format_cast_ / get_npu_format: the format belongs to the storage (torch_npu's NPU
    storage descriptor), so views and a Parameter whose .data is replaced by a cast tensor report it;
    values never change, and a quant matmul on an NZ weight gives the ND result bit for bit."""
    w = torch.from_numpy(RNG.integers(-128, 128, (64, 32), dtype=np.int8))
    assert tnpu.get_npu_format(w) == 2
    view = w.t()                                        # a transposed view: the cast keeps its strides
    nz = tnpu.npu_format_cast(view, 29)
    assert (nz.shape, nz.stride(), nz.storage_offset()) == (view.shape, view.stride(), view.storage_offset())
    assert torch.equal(nz, view) and tnpu.get_npu_format(nz) == 29 and tnpu.get_npu_format(w) == 2
    assert tnpu.get_npu_format(nz.t()) == 29 and tnpu.get_npu_format(nz[:3]) == 29      # views share it
    w[0, 0] = 7 if w[0, 0] != 7 else 8                  # a new storage: the original can change alone
    assert nz[0, 0] != w[0, 0]
    assert tnpu.npu_format_cast(nz, 29) is nz           # already NZ
    back = tnpu.npu_format_cast(nz, torch.zeros(1))      # a tensor argument: its format (ND)
    assert tnpu.get_npu_format(back) == 2 and torch.equal(back, nz)
    layer = torch.nn.Linear(32, 64, bias=False)          # vllm-ascend: layer.weight.data = npu_format_cast(...)
    layer.weight.data = tnpu.npu_format_cast(layer.weight.data, 29)
    gc.collect()
    assert tnpu.get_npu_format(layer.weight) == 29
    assert tnpu.npu_format_cast_(w, 29) is w and tnpu.get_npu_format(w[1:]) == 29
    assert tnpu.npu_format_cast_(w, 2) is w and tnpu.get_npu_format(w) == 2
    # the emulator computes from values: an NZ weight gives the ND weight's result
    x1 = torch.from_numpy(RNG.integers(-128, 128, (5, 32), dtype=np.int8))
    scale = torch.rand(64, dtype=torch.float32)
    assert torch.equal(tnpu.npu_quant_matmul(x1, nz, scale, output_dtype=torch.bfloat16).view(torch.int16),
                       tnpu.npu_quant_matmul(x1, back, scale, output_dtype=torch.bfloat16).view(torch.int16))
    before = tnpu.get_npu_format(w)
    for bad, error in ((3, tnpu.NotEmulatedError), (True, AclnnError), (29.0, AclnnError)):
        with pytest.raises(error, match="acl_format"):       # 3 is an NPU format npusim does not emulate
            tnpu.npu_format_cast_(w, bad)
    assert tnpu.get_npu_format(w) == before              # a failed call changes nothing
    with pytest.raises(TypeError, match="torch.Tensor"):
        tnpu.get_npu_format(np.zeros(3))



def test_operators_not_emulated_can_be_mocked_with_create():
    """vllm-ascend's unit tests mock what npusim does not emulate; the names are absent (hasattr() guards take their
    fallback), so mock.patch needs create=True, and the name is absent again afterwards (README)."""
    from unittest import mock
    with tnpu.install("atlas-a2"):
        import torch_npu
        with pytest.raises(AttributeError):
            with mock.patch("torch_npu.npu_swiglu"):
                pass
        with mock.patch("torch_npu.npu_swiglu", create=True) as swiglu:
            swiglu.return_value = torch.zeros(2)
            assert torch.equal(torch_npu.npu_swiglu(torch.ones(2, 4)), torch.zeros(2))
            x = torch.from_numpy(RNG.standard_normal((2, 64)).astype(np.float32)).to(torch.bfloat16)
            assert torch_npu.npu_dynamic_quant(x)[0].dtype == torch.int8        # emulated ones still run
        assert not hasattr(torch_npu, "npu_swiglu")


def test_atlas_inference_takes_an_nz_weight_only_transposed():
    """310P's QuantBatchMatmulV3 tiling takes transpose_x2 true only; the aclnn layer transposes an ND x2 to fit but
    not an NZ one (ops-nn AnalyzeAttrs without L0C2OUT; vllm-ascend issue #1736, where the 300I Duo refused a
    [k, n] NZ weight): 561002, after the parameter checks. A2 has no such rule."""
    x1 = torch.from_numpy(i8(8, 64))
    w_nk = torch.from_numpy(i8(128, 64))
    scale = tnpu.npu_trans_quant_param(torch.rand(128) * 0.01)
    with tnpu.install("atlas-inference"):
        kn_nz = tnpu.npu_format_cast(w_nk.t().contiguous(), 29)
        with pytest.raises(AclnnError, match="transpose_x2 true") as e:
            tnpu.npu_quant_matmul(x1, kn_nz, scale, output_dtype=torch.float16)
        assert e.value.status == 561002 and e.value.param == "x2" and e.value.product == "Ascend310P3"
        with pytest.raises(AclnnError) as e:            # a parameter check fails first: 161002
            tnpu.npu_quant_matmul(x1, kn_nz, scale, output_dtype=torch.bfloat16)
        assert e.value.status == 161002
        compiled = torch.compile(lambda a, b, c: tnpu.npu_quant_matmul(a, b, c, output_dtype=torch.float16),
                                 fullgraph=True)
        with pytest.raises(RuntimeError, match="transpose_x2 true"):      # traced too
            compiled(x1, kn_nz, scale)
        ref = tnpu.npu_quant_matmul(x1, w_nk.t().contiguous(), scale, output_dtype=torch.float16)   # ND: fine
        assert torch.equal(tnpu.npu_quant_matmul(x1, tnpu.npu_format_cast(w_nk, 29).t(), scale,
                                                 output_dtype=torch.float16), ref)
    with tnpu.install("atlas-a2"):
        assert torch.equal(tnpu.npu_quant_matmul(x1, kn_nz, scale, output_dtype=torch.float16), ref)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_torch_compile_calls_the_stand_in_eagerly(dtype):
    """Code under torch.compile (vllm-ascend compiles its model code) gets the emulator's bits: the compute ops are
    traced with the output shapes of npusim's plans (never a numpy view of a fake tensor) and run eagerly."""
    import torch_npu                      # the stand-in (installed for the session, or just below)

    def layer(x, w, w_scale):
        q, pertoken = torch_npu.npu_dynamic_quant(x)
        y = torch_npu.npu_quant_matmul(q, w, w_scale, pertoken_scale=pertoken, output_dtype=x.dtype)
        q2, s2 = torch.ops.npu.npu_dynamic_quant(y)
        return y * 2, q2, s2

    x = torch.tensor(RNG.standard_normal((8, 64)) * 3, dtype=dtype)
    w, w_scale = tensor(i8(64, 32)), torch.tensor(RNG.uniform(1e-3, 1e-2, 32), dtype=torch.float32)
    with tnpu.install("atlas-a2"):
        torch._dynamo.reset()
        compiled = torch.compile(layer, backend="eager")(x, w, w_scale)
        eager = layer(x, w, w_scale)
    for c, e in zip(compiled, eager):
        assert c.dtype == e.dtype and torch.equal(c.view(torch.int8), e.view(torch.int8))


@pytest.mark.parametrize("product", ["atlas-a2", "ascend-950pr"])
def test_torch_compile_fullgraph_traces_the_compute_ops(product):
    """torch.compile(fullgraph=True), where a graph break is an error, and FakeTensorMode trace the compute ops
    through their Meta kernels (the output shapes of npusim's plans, as torch_npu's meta functions give them);
    the compiled graph runs the emulator, bit for bit, and an invalid call fails at trace time with npusim's
    rule."""
    import torch_npu                      # the stand-in (installed for the session, or just below)
    from torch._subclasses.fake_tensor import FakeTensorMode

    def layer(x, w, w_scale, smooth):
        q, pertoken = torch_npu.npu_dynamic_quant(x, smooth_scales=smooth)
        y = torch_npu.npu_quant_matmul(q, w, w_scale, pertoken_scale=pertoken, output_dtype=x.dtype)
        q2, s2, o2 = torch_npu.npu_dynamic_quant_asymmetric(y.reshape(2, 4, 32))
        return y + 1, q2, s2, o2

    x = torch.tensor(RNG.standard_normal((8, 64)) * 3, dtype=torch.bfloat16)
    smooth = torch.tensor(RNG.uniform(0.5, 2, 64), dtype=torch.bfloat16)
    w, w_scale = tensor(i8(64, 32)), torch.tensor(RNG.uniform(1e-3, 1e-2, 32), dtype=torch.float32)
    with tnpu.install(product):
        torch._dynamo.reset()
        compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
        got = compiled(x, w, w_scale, smooth)
        want = layer(x, w, w_scale, smooth)
        for g, e in zip(got, want):
            assert g.dtype == e.dtype and g.shape == e.shape and torch.equal(g.view(torch.int8), e.view(torch.int8))
        with FakeTensorMode() as mode:
            y, s = torch.ops.npu.npu_dynamic_quant(mode.from_tensor(x))
            out = torch.ops.npu.npu_quant_matmul(mode.from_tensor(tensor(i8(3, 8, 64))), mode.from_tensor(w),
                                                 mode.from_tensor(w_scale), output_dtype=torch.float16)
            fy, fs = torch_npu.npu_dynamic_quant(mode.from_tensor(x))       # the functions too
        assert (y.shape, y.dtype, s.shape, s.dtype) == ((8, 64), torch.int8, (8,), torch.float32)
        assert (out.shape, out.dtype) == ((3, 8, 32), torch.float16)
        assert (fy.shape, fy.dtype, fs.shape) == ((8, 64), torch.int8, (8,))
        meta = torch_npu.npu_quant_matmul(torch.empty(5, 64, dtype=torch.int8, device="meta"), w.to("meta"),
                                          w_scale.to("meta"), output_dtype=torch.bfloat16)
        assert (meta.device.type, meta.shape, meta.dtype) == ("meta", (5, 32), torch.bfloat16)
        with pytest.raises(tnpu.NotEmulatedError, match="device 'meta'"):      # meta mixed with data
            torch_npu.npu_quant_matmul(torch.empty(5, 64, dtype=torch.int8, device="meta"), w, w_scale)
        with pytest.raises(tnpu.NotEmulatedError, match="meta tensors mixed with a tensor on 'cpu'"):
            torch.ops.npu.npu_quant_matmul(torch.empty(5, 64, dtype=torch.int8, device="meta"), w, w_scale)
        with FakeTensorMode() as mode:        # a graph break's function on fake tensors: not emulated, clearly
            with pytest.raises(tnpu.NotEmulatedError, match="fake tensor"):
                torch_npu.npu_convert_weight_to_int4pack(mode.from_tensor(torch.zeros(8, 16, dtype=torch.int32)))
            # npu_trans_quant_param is traced (torch_npu has its meta function): the plan's shape, a longer
            # offset's when the scale is one value
            packed = torch_npu.npu_trans_quant_param(mode.from_tensor(torch.ones(1)), mode.from_tensor(torch.ones(1, 16)))
            assert (packed.shape, packed.dtype) == ((1, 16), torch.int64)
        # the tensor methods install() adds are graph breaks as well, on inputs and on tensors made inside
        for cast in (lambda t: t.npu_format_cast(29) * 1, lambda t: (t * 1).npu_format_cast(29),
                     lambda t: t.clone().npu_format_cast_(29)):
            torch._dynamo.reset()
            nz = torch.compile(cast, backend="aot_eager")(w_scale)
            assert torch.equal(nz, w_scale) and torch_npu.get_npu_format(w_scale) == 2
        assert torch_npu.get_npu_format(nz) == 29
        torch._dynamo.reset()
        # LinearA8W8Quant's forward is one op (its scale packed inside, as torch_npu's module does); LinearQuant's
        # packs with the traced npu_trans_quant_param
        for out in (None, torch.bfloat16):
            m = torch_npu.contrib.module.LinearA8W8Quant(64, 32, offset=out is None, output_dtype=out)
            m.weight.data, m.scale.data, m.bias.data = tensor(i8(32, 64)), w_scale, torch.arange(32, dtype=torch.int32)
            torch._dynamo.reset()
            for rows in (4, 7):
                q = tensor(i8(2, rows, 64))
                got, want = torch.compile(m, backend="aot_eager", fullgraph=True)(q), m(q)
                assert got.dtype == want.dtype and torch.equal(got.view(torch.int8), want.view(torch.int8))
        lq = torch_npu.contrib.module.LinearQuant(64, 32, bias=False, output_dtype=torch.float16)
        lq.weight.data, lq.scale.data = tensor(i8(32, 64)), w_scale
        torch._dynamo.reset()
        q = tensor(i8(4, 64))
        assert torch.equal(torch.compile(lq, backend="aot_eager", fullgraph=True)(q), lq(q))
        prep = torch.compile(lambda s: torch_npu.npu_trans_quant_param(s), backend="aot_eager", fullgraph=True)
        assert torch.equal(prep(w_scale), torch_npu.npu_trans_quant_param(w_scale))
        torch._dynamo.reset()
        rule = r"parameter 'x2': shape\[-2\] \(63\) must equal"                     # npusim's rule
        with pytest.raises(torch._dynamo.exc.TorchRuntimeError, match=rule):
            torch.compile(layer, backend="aot_eager", fullgraph=True)(x, tensor(i8(63, 32)), w_scale, smooth)


def test_meta_and_fake_calls_keep_torch_npus_meta_scale_rules():
    """torch_npu's npu_quant_matmul meta function (Ascend/op-plugin@f299d83 _meta_registrations.py) refuses a
    uint64 scale and an int64 scale with bfloat16 output, which eager calls accept (the aclnn rules): compiled and
    fake-tensor calls fail as on the NPU, eager ones run, in the function and in LinearA8W8Quant's forward."""
    import torch_npu                      # the stand-in
    from torch._subclasses.fake_tensor import FakeTensorMode
    x, w = tensor(i8(5, 64)), tensor(i8(64, 32))
    packed = tnpu.npu_trans_quant_param(torch.tensor(RNG.uniform(1e-3, 1e-2, 32), dtype=torch.float32))
    cases = [("atlas-a2", packed.view(torch.uint64), torch.float16, "scale.dtype is torch.uint64"),
             ("ascend-950pr", packed, torch.bfloat16, "scale's dtype is torch.int64")]
    for product, scale, out, rule in cases:
        with tnpu.install(product):
            eager = torch_npu.npu_quant_matmul(x, w, scale, output_dtype=out)
            assert eager.dtype == out and eager.shape == (5, 32)
            with FakeTensorMode() as mode, pytest.raises(RuntimeError, match=rule):
                torch.ops.npu.npu_quant_matmul(mode.from_tensor(x), mode.from_tensor(w), mode.from_tensor(scale),
                                               output_dtype=out)
            torch._dynamo.reset()
            with pytest.raises(torch._dynamo.exc.TorchRuntimeError, match=rule):
                torch.compile(lambda a, b, s: torch_npu.npu_quant_matmul(a, b, s, output_dtype=out),
                              backend="aot_eager", fullgraph=True)(x, w, scale)
            layer = tnpu.contrib.module.LinearA8W8Quant(64, 32, bias=False, output_dtype=out)
            layer.weight.data, layer.scale.data = w.t().contiguous(), scale
            assert torch.equal(layer(x).view(torch.int16), eager.view(torch.int16))
            torch._dynamo.reset()
            with pytest.raises(torch._dynamo.exc.TorchRuntimeError, match=rule):
                torch.compile(layer, backend="aot_eager", fullgraph=True)(x)
        # the scale dtypes the meta function takes still trace
        with tnpu.install("ascend-950pr"), FakeTensorMode() as mode:
            y = torch.ops.npu.npu_quant_matmul(mode.from_tensor(x), mode.from_tensor(w),
                                               mode.from_tensor(packed), output_dtype=torch.float16)
            assert (y.shape, y.dtype) == ((5, 32), torch.float16)


def test_torch_compile_with_dynamic_shapes():
    """Symbolic sizes (torch.compile's dynamic shapes, vLLM's token dimension): the plan checks the traced sizes
    and the output shapes keep the inputs' symbols, so one graph serves every token count, int4 included."""
    import torch_npu

    def layer(x, w, w_scale, w4):
        q, pertoken = torch_npu.npu_dynamic_quant(x)
        y = torch_npu.npu_quant_matmul(q, w, w_scale, pertoken_scale=pertoken, output_dtype=torch.bfloat16)
        q4, s4 = torch_npu.npu_dynamic_quant(y.reshape(-1, 2, 16), dst_type=torch.quint4x2)
        y4 = torch_npu.npu_quant_matmul(q4.reshape(-1, 4), w4, w_scale, pertoken_scale=pertoken,
                                        output_dtype=torch.float16)
        return y, q4, s4, torch_npu.npu_quant_matmul(q.reshape(2, -1, 64), w, w_scale, output_dtype=torch.float16), y4

    w, w_scale = tensor(i8(64, 32)), torch.tensor(RNG.uniform(1e-3, 1e-2, 32), dtype=torch.float32)
    w4 = tensor(npusim.npu_convert_weight_to_int4pack(RNG.integers(-8, 8, (32, 32)).astype(np.int32)))
    with tnpu.install("atlas-a2"):
        torch._dynamo.reset()
        compiled = torch.compile(layer, backend="aot_eager", fullgraph=True, dynamic=True)
        for m in (4, 10, 2):
            x = torch.tensor(RNG.standard_normal((m, 64)) * 3, dtype=torch.bfloat16)
            for g, e in zip(compiled(x, w, w_scale, w4), layer(x, w, w_scale, w4)):
                assert g.dtype == e.dtype and g.shape == e.shape and torch.equal(g.view(torch.int8), e.view(torch.int8))


def test_torch_ops_npu_exist_only_while_installed():
    """Outside install() torch.ops.npu stays free for a real torch_npu (a fresh process: this session may run
    with the stand-in installed throughout)."""
    code = textwrap.dedent("""
        import torch, npusim.torch_npu as tnpu
        def defined():
            return hasattr(torch.ops.npu, "npu_dynamic_quant") and hasattr(torch.ops.npu, "npu_format_cast")
        assert not defined()
        for _ in range(2):
            with tnpu.install("atlas-a2"):
                with tnpu.install():
                    assert defined()
                assert defined()
                y, s = torch.ops.npu.npu_dynamic_quant(torch.ones(2, 64, dtype=torch.float16))
                assert int(y[0, 0]) == 127
            assert not defined()
    """)
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------ conversions, product, install
@pytest.mark.parametrize("dt", [torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e8m0fnu,
                                torch.float16, torch.int8])
def test_to_numpy_shares_memory_no_copy(dt):
    t = torch.zeros(8, 6).to(dt).t()
    a = tnpu.to_numpy(t)
    assert a.shape == (6, 8) and a.ctypes.data == t.data_ptr()
    assert a.strides == tuple(s * t.element_size() for s in t.stride())
    back = tnpu.from_numpy(a)
    assert back.dtype == dt and back.data_ptr() == t.data_ptr()


def test_product_selection_env_default_and_nesting(monkeypatch):
    monkeypatch.delenv(tnpu.PRODUCT_ENV, raising=False)
    assert tnpu.current_product() == "atlas-a2" == tnpu.DEFAULT_PRODUCT
    monkeypatch.setenv(tnpu.PRODUCT_ENV, "atlas-a3")
    assert tnpu.current_product() == "atlas-a3"
    with tnpu.install("ascend-950pr"):
        with tnpu.install():
            assert tnpu.current_product() == "ascend-950pr"
        with tnpu.install("atlas-inference"):
            assert tnpu.current_product() == "atlas-inference"
    assert tnpu.current_product() == "atlas-a3"
    with pytest.raises(ValueError):
        with tnpu.install("no-such-npu"):
            pass


def test_install_in_several_threads():
    """Each thread emulates its own blocks' product (golden-reference probe finding 2: threads in install() blocks
    of different products ran each other's product, and interleaved exits left the stand-in installed). A thread
    without blocks emulates the other threads' product when they agree, else it is asked which; npu_device must
    agree (it changes torch for the process); the last block to end, in whichever thread, restores what the
    first found."""
    import threading
    x = torch.zeros(4, 64, dtype=torch.float16)          # the asymmetric scale of a zero row: A2 1e-12, 950 0
    def scale():
        return float(tnpu.npu_dynamic_quant_asymmetric(x)[1][0])
    a2 = float(npusim.npu_dynamic_quant_asymmetric(x.numpy(), product="atlas-a2")[1][0])
    a950 = float(npusim.npu_dynamic_quant_asymmetric(x.numpy(), product="ascend-950pr")[1][0])
    assert a2 != a950
    before = (sys.modules.get("torch_npu"), torch.Tensor.__dict__.get("npu"))
    entered, go_on, leave, left = (threading.Event() for _ in range(4))
    seen = {}
    def holder():
        with tnpu.install("ascend-950pr"):
            seen["holder"] = scale()
            entered.set()
            go_on.wait(30)
            seen["holder, while the main thread holds atlas-a2"] = scale()
            leave.wait(30)
        left.set()
    def no_block(key):
        try:
            seen[key] = scale()
        except RuntimeError as exc:
            seen[key] = str(exc)
    def in_thread(key):
        t = threading.Thread(target=no_block, args=(key,))
        t.start()
        t.join(30)
    t = threading.Thread(target=holder)
    t.start()
    assert entered.wait(30)
    try:
        with pytest.raises(RuntimeError, match="npu_device"):
            with tnpu.install("ascend-950pr", npu_device=True):
                pass
        in_thread("a thread without blocks")                  # only the holder's product is in force
        with tnpu.install("atlas-a2"):
            go_on.set()
            seen["main"] = scale()
            in_thread("a thread without blocks, two products")
            leave.set()                                       # the holder's block ends first ...
            assert left.wait(30)
            import torch_npu                                  # ... and this one's stand-in stays in place
            assert torch_npu is tnpu and scale() == a2
    finally:
        go_on.set()
        leave.set()
        t.join(30)
    assert seen.pop("a thread without blocks, two products").startswith("this thread has no install() block")
    assert seen == {"holder": a950, "a thread without blocks": a950, "main": a2,
                    "holder, while the main thread holds atlas-a2": a950}
    assert (sys.modules.get("torch_npu"), torch.Tensor.__dict__.get("npu")) == before


def test_install_restores_sys_modules_and_tensor_npu():
    stub = types.ModuleType("torch_npu")
    stub.npu_quant_matmul = mock.MagicMock()
    saved = {name: sys.modules.get(name) for name in ("torch_npu", "torch_npu.contrib", "torch_npu.contrib.module")}
    npu_before = torch.Tensor.__dict__.get("npu")      # the session may run with the stand-in installed
    cast_before = torch.Tensor.__dict__.get("npu_format_cast")
    try:
        sys.modules["torch_npu"] = stub
        sys.modules.pop("torch_npu.contrib", None)
        sys.modules.pop("torch_npu.contrib.module", None)
        with tnpu.install("atlas-a2") as mod:
            import torch_npu
            from torch_npu.contrib.module import LinearA8W8Quant
            assert torch_npu is mod is tnpu and LinearA8W8Quant is tnpu.contrib.module.LinearA8W8Quant
            with pytest.raises(tnpu.NotEmulatedError, match="npu"):
                torch.ones(2).npu()
            with pytest.raises(AttributeError, match="npu_rms_norm is not emulated"):
                torch_npu.npu_rms_norm
            assert not hasattr(torch_npu, "npu")
            import torch_npu.contrib.module as contrib_module            # and in contrib, contrib.module
            for owner, name in ((torch_npu.contrib, "transfer_to_npu"), (contrib_module, "LinearWeightQuant")):
                with pytest.raises(tnpu.NotEmulatedAttributeError, match=f"contrib.*{name} is not emulated"):
                    getattr(owner, name)
                assert not hasattr(owner, name)
            # no torch_npu version is claimed: the not-emulated error, still an AttributeError for getattr()
            with pytest.raises(tnpu.NotEmulatedError, match="__version__ is not emulated"):
                torch_npu.__version__
            assert getattr(torch_npu, "__version__", "none") == "none"
            # torch_npu's tensor methods for formats (its doc: x.npu_format_cast(29), x.npu_format_cast_(29))
            x = torch.ones(32, 16, dtype=torch.float16)
            assert torch_npu.get_npu_format(x.npu_format_cast(29)) == 29 and torch_npu.get_npu_format(x) == 2
            assert x.npu_format_cast_(29) is x and torch_npu.get_npu_format(x) == 29
        assert sys.modules["torch_npu"] is stub and "torch_npu.contrib" not in sys.modules
        assert torch.Tensor.__dict__.get("npu") is npu_before
        assert torch.Tensor.__dict__.get("npu_format_cast") is cast_before
    finally:
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod


def test_npu_device_mode_runs_npu_code_unchanged_on_the_cpu():
    """install(npu_device=True): the device idioms of torch_npu's doc examples leave tensors on the CPU, and the
    operators give the bits they give without them; everything is restored on exit."""
    owners = (torch.Tensor, torch.nn.Module, torch)       # each gets an `npu` attribute in the block
    before = [(o.__dict__.get("npu"), "npu" in o.__dict__) for o in owners]
    is_npu_before = torch.Tensor.__dict__.get("is_npu", None)
    x = torch.from_numpy(RNG.standard_normal((8, 256)).astype(ml_dtypes.bfloat16).view(np.int16)).view(torch.bfloat16)
    with tnpu.install("atlas-a2"):
        import torch_npu
        want_y, want_scale = torch_npu.npu_dynamic_quant(x)
        with pytest.raises(tnpu.NotEmulatedError, match="npu_device=True"):
            x.npu()
        assert x.is_npu is False                          # no npu device: no tensor is on one
    with tnpu.install("atlas-a2", npu_device=True) as torch_npu:
        xs = [x.npu(), x.to("npu"), x.to("npu:0"), x.to(device="npu"), x.to(torch.device("npu", 0))]
        assert xs[0] is x and all(t.device.type == "cpu" and torch.equal(t, x) for t in xs)
        assert torch.randn(2, device="npu:0").device.type == "cpu" == torch.zeros(2, device="npu").device.type
        assert torch.device("npu") == torch.device("cpu")
        layer = torch.nn.Linear(4, 2)
        assert layer.npu() is layer and layer.to("npu").weight.device.type == "cpu"
        # torch_npu's Tensor.is_npu: the 'npu' device is the CPU, so CPU tensors are on it, as .device says
        assert x.is_npu and x.npu().is_npu and torch.zeros(2, device="npu").is_npu and layer.weight.is_npu
        assert x.is_npu == (x.device == torch.device("npu")) and not torch.empty(2, device="meta").is_npu
        assert torch.npu is torch_npu.npu and torch.npu.is_available() and torch.npu.device_count() == 1
        assert torch.npu.current_device() == 0 and torch.npu.get_device_name() == "Ascend910B2"
        torch_npu.npu.set_device(0)
        torch.npu.synchronize()
        for y, scale in (torch_npu.npu_dynamic_quant(x.npu()), torch.ops.npu.npu_dynamic_quant(x.to("npu"))):
            assert torch.equal(y, want_y) and torch.equal(scale, want_scale)
        with pytest.raises(tnpu.NotEmulatedError, match="torch.npu.memory_summary is not emulated"):
            torch.npu.memory_summary
        assert not hasattr(torch.npu, "NPUGraph")
        # torch_npu's SocVersion numbers (NpuVariables.h), as vllm-ascend's check_ascend_device_type reads them:
        # 220-225 A2, 250-255 A3, 200-205 310P, 260 Ascend 950 (its A5)
        assert torch.npu.get_soc_version() == 221
        for product, lo, hi in (("atlas-a3", 250, 255), ("Ascend910B4", 224, 224), ("atlas-inference", 200, 205),
                                ("ascend-950dt", 260, 260)):
            with tnpu.install(product):
                assert lo <= torch_npu.npu.get_soc_version() <= hi, product
        with tnpu.install("ascend-950pr"):               # a nested block keeps the npu device
            assert x.npu() is x and torch.npu.get_device_name() == "Ascend950PR_9589"
        assert torch.npu.get_device_name() == "Ascend910B2"
        # only exact device names change: other strings pass through
        assert torch.tensor([1.0]).to("cpu", dtype=torch.float64).dtype == torch.float64
    assert [(o.__dict__.get("npu"), "npu" in o.__dict__) for o in owners] == before
    assert torch.Tensor.__dict__.get("is_npu", None) is is_npu_before
    if not before[2][1]:                                 # unless a real torch_npu is around, torch has no npu again
        with pytest.raises(RuntimeError):
            torch.device("npu")
    with pytest.raises(TypeError, match="npu_device"):
        with tnpu.install(npu_device="yes"):
            pass


def test_npu_device_mode_has_the_torch_npu_calls_tests_and_harnesses_make():
    """Streams and events are synchronous on the CPU (exact as no-ops), events time with perf_counter, memory is
    the host's (the allocator counters 0), bfloat16 is per product; `import torch_npu.npu` works; transfer_to_npu
    says it is not emulated."""
    import time
    before = sys.modules.get("torch_npu.npu")
    with tnpu.install("atlas-a2", npu_device=True):
        import torch_npu.npu
        assert torch_npu.npu is torch.npu is sys.modules["torch_npu.npu"]
        s = torch.npu.current_stream()
        assert s is torch.npu.default_stream() and s.query()
        s.synchronize()
        side = torch.npu.Stream()
        side.wait_stream(s)
        with torch.npu.stream(side):
            assert torch.npu.current_stream() is side
        assert torch.npu.current_stream() is s
        start, end = torch.npu.Event(enable_timing=True), torch.npu.Event(enable_timing=True)
        start.record()
        time.sleep(0.02)
        end.record(s)
        end.synchronize()
        assert 15 <= start.elapsed_time(end) < 2000 and end.query()
        side.wait_event(side.record_event())
        with pytest.raises(RuntimeError, match="enable_timing=True"):
            torch.npu.Event().elapsed_time(end)
        with torch.npu.device(0):
            assert torch.zeros(1, device="npu").is_npu
        torch.npu.config.allow_internal_format = False
        assert torch.npu.config.allow_internal_format is False
        free, total = torch.npu.mem_get_info()
        assert 0 <= free <= total and torch.npu.get_device_properties(0).total_memory == total
        assert torch.npu.get_device_properties(0).name == "Ascend910B2"
        assert torch.npu.memory_allocated() == torch.npu.max_memory_allocated() == 0
        torch.npu.reset_peak_memory_stats()
        assert torch.npu.is_bf16_supported()
        for product, bf16 in (("atlas-inference", False), ("atlas-training", False), ("atlas-a3", True),
                              ("ascend-950pr", True)):
            with tnpu.install(product):
                assert torch.npu.is_bf16_supported() is bf16, product
        for import_it in (lambda: __import__("torch_npu.contrib.transfer_to_npu"),
                          lambda: exec("from torch_npu.contrib import transfer_to_npu", {})):
            with pytest.raises(tnpu.NotEmulatedError, match="transfer_to_npu is not emulated.*npu_device=True") as e:
                import_it()
            assert isinstance(e.value, ImportError)          # `except ImportError` guards take their fallback
        assert not hasattr(torch_npu.contrib, "transfer_to_npu")
    assert sys.modules.get("torch_npu.npu") is before
    with tnpu.install("atlas-a2"):                           # without npu_device there is no torch_npu.npu
        with pytest.raises(ImportError):
            import torch_npu.npu  # noqa: F401


def test_npu_device_mode_has_the_compile_mode_options_and_utils_real_scripts_set():
    """MindIE and torchair scripts call torch_npu.npu.set_compile_mode / set_option at import and read the SoC through
    torch_npu.npu.utils: with npu_device=True they run. is_jit_compile_false's default is torch_npu's doc's
    ("(beta)torch_npu.npu.set_compile_mode": jit_compile=True on Atlas training / inference, False on A2/A3)."""
    before = sys.modules.get("torch_npu.npu.utils")
    with tnpu.install("atlas-a2", npu_device=True):
        import torch_npu
        import torch_npu.npu.utils as npu_utils
        assert torch.npu.is_jit_compile_false()
        with tnpu.install("atlas-inference"):
            assert not torch.npu.is_jit_compile_false()
        torch_npu.npu.set_compile_mode(jit_compile=True)
        assert not torch.npu.is_jit_compile_false()
        torch.npu.set_compile_mode(jit_compile=False)
        assert torch_npu.npu.is_jit_compile_false()
        torch.npu.set_option({"ACL_OP_COMPILER_CACHE_MODE": "enable"})
        with pytest.raises(TypeError, match="must be a dict"):
            torch.npu.set_option("enable")
        assert npu_utils.get_soc_version() == torch.npu.utils.get_soc_version() == 221
        npu_utils.set_device(0)
        with pytest.raises(tnpu.NotEmulatedError, match="memory_summary is not emulated"):
            npu_utils.memory_summary()
    assert sys.modules.get("torch_npu.npu.utils") is before


def test_without_npu_device_device_calls_say_how_to_get_one():
    """Without npu_device=True: Module.npu() as Tensor.npu() (NotEmulatedError naming the option), torch_npu.npu
    likewise; op-plugin's torch_npu.testing says what to use instead; all still the error types guards expect."""
    before = torch.nn.Module.__dict__.get("npu")
    with tnpu.install("atlas-a2"):
        import torch_npu
        layer = torch.nn.Linear(4, 2)
        with pytest.raises(tnpu.NotEmulatedError, match=r"Linear.npu\(\).*npu_device=True"):
            layer.npu()
        with pytest.raises(AttributeError, match="npu_device=True"):
            torch_npu.npu.set_device(0)
        assert not hasattr(torch_npu, "npu")
        for stmt in ("from torch_npu.testing.testcase import TestCase, run_tests", "import torch_npu.testing"):
            with pytest.raises(ImportError, match="torch_npu.testing is not emulated.*assert_bitexact"):
                exec(stmt, {})
    assert torch.nn.Module.__dict__.get("npu") is before


def test_quant_matmul_output_dtype_of_another_kind_names_the_allowed_ones():
    """torch.qint8 is a torch dtype npusim has no name for: refused with the product's list, as any other."""
    x1, x2, s = tensor(i8(4, 32)), tensor(i8(32, 8)), torch.ones(8)
    with pytest.raises(AclnnError, match="'output_dtype': must be one of int8, float16, bfloat16, int32, got qint8"):
        tnpu.npu_quant_matmul(x1, x2, s, output_dtype=torch.qint8)


def test_import_npusim_does_not_import_torch():
    code = ("import sys, npusim, npusim.pytest_plugin, npusim.testing; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_stand_in_checks_name_the_product_as_the_core_does():
    """An error raised by the stand-in's own checks and one raised by npusim's core name the product alike."""
    x = torch.randn(2, 32, dtype=torch.float16)
    with tnpu.install("atlas-a3"):
        with pytest.raises(AclnnError) as own:
            tnpu.npu_dynamic_quant(x, dst_type=torch.int16)
        with pytest.raises(AclnnError) as core:
            tnpu.npu_dynamic_quant(torch.randn(2, 32, dtype=torch.float64))
    assert own.value.product == core.value.product == npusim.get_product("atlas-a3").soc


def test_unknown_product_from_the_environment_is_the_error_reported(monkeypatch):
    # the stand-in's own dst_type check must not report its rule "(product bogus)" before the bad product
    monkeypatch.setenv(tnpu.PRODUCT_ENV, "bogus")
    for call in (lambda: tnpu.npu_dynamic_quant(torch.randn(2, 32, dtype=torch.float16), dst_type=torch.int16),
                 lambda: tnpu.npu_dynamic_quant(torch.randn(2, 32, dtype=torch.float16))):
        with pytest.raises(AclnnError, match="unknown product 'bogus'") as e:
            call()
        assert e.value.param == "product"


def test_dir_of_the_stand_in_lists_what_it_offers_not_its_imports():
    import npusim.torch_npu as stand_in
    names = dir(stand_in)
    assert "npu_quant_matmul" in names and "contrib" in names and "install" in names
    assert not {"np", "os", "sys", "torch", "functools", "make_plan"} & set(names)
