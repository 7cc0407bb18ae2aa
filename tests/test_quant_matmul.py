"""npu_trans_quant_param / npu_quant_matmul / LinearA8W8Quant against slow NumPy references written
from ARITHMETIC.md 4.1-4.3 (independent of the kernel), plus torch._int_mm for the accumulator.

The accumulator tests run on every GEMM path (fixture `simd`: NPUSIM_GEMM_SIMD=c / avx2 / avx512_vnni;
a path this build or CPU cannot run is skipped)."""
import struct
import tracemalloc
import warnings
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

import npusim
from npusim import AclnnError, TensorSpec, formats, make_plan
from npusim._kernels import quant_matmul as qmm_kernels
from npusim.testing import assert_bitexact

RNG = np.random.default_rng(1234)


@pytest.fixture(params=qmm_kernels.SIMD_PATHS)
def simd(request, monkeypatch):
    """Force one GEMM path for the test (read per call from NPUSIM_GEMM_SIMD)."""
    if request.param not in qmm_kernels.simd_paths():
        pytest.skip(f"GEMM path {request.param} is not available in this build / on this CPU")
    monkeypatch.setenv("NPUSIM_GEMM_SIMD", request.param)
    return request.param


# ------------------------------------------------------------------ references
def f32_bits(x: float) -> int:
    return struct.unpack("<I", struct.pack("<f", x))[0]


def bits_f32(u: int) -> float:
    return struct.unpack("<f", struct.pack("<I", u & 0xFFFFFFFF))[0]


def ref_fp19(u: int, round_mode: int) -> int:
    """fp32 bits -> the 32-bit scale field of the quant parameter (4.1), via exact rationals."""
    if round_mode == 0:
        return u & 0xFFFFE000
    e = (u >> 23) & 0xFF
    sign = u & 0x80000000
    if e == 0:
        return sign                                   # zero / subnormal -> signed zero
    if e == 255:
        return u & 0xFFFFE000
    v = Fraction(bits_f32(u & 0x7FFFFFFF))
    ulp = Fraction(2) ** (e - 127 - 10)
    q = round(v / ulp)                                # Fraction rounding: half to even
    r = q * ulp
    if r >= Fraction(2) ** 128:
        return sign | 0x7F800000
    return sign | f32_bits(float(r))


def ref_trans_quant_param(scale, offset=None, round_mode=0):
    s = np.ascontiguousarray(scale, np.float32).reshape(-1).view(np.uint32)   # raw bits: NaN payloads kept
    n = s.size if offset is None else max(s.size, np.asarray(offset).size)
    out = []
    for i in range(n):
        u = int(s[0 if s.size == 1 else i])
        word = ref_fp19(u, round_mode) | (1 << 46)
        if offset is not None:
            o = np.asarray(offset, np.float32).reshape(-1)
            ov = float(o[0 if o.size == 1 else i])
            r = round(ov) if np.isfinite(ov) else (255 if ov > 0 else -256)   # Python round: half even
            r = min(max(r, -256), 255)
            word |= (r & 0x1FF) << 37
        out.append(word)
    return np.array(out, dtype=np.uint64).view(np.int64)


def ref_acc(x1, x2, bias_i32=None):
    acc = np.matmul(x1.astype(np.int64), x2.astype(np.int64))
    if bias_i32 is not None:
        acc = acc + bias_i32.astype(np.int64)
    return acc.astype(np.int32)


def scale_field(q: np.ndarray) -> np.ndarray:
    """The fp32 value of bits 0..31 & 0xFFFFE000 of each int64 quant parameter."""
    u = np.asarray(q).view(np.uint64)
    return (u & np.uint64(0xFFFFE000)).astype(np.uint32).view(np.float32)


def offset_field(q: np.ndarray) -> np.ndarray:
    o = ((np.asarray(q).view(np.uint64) >> np.uint64(37)) & np.uint64(0x1FF)).astype(np.int64)
    return np.where(o >= 256, o - 512, o)


def ref_req8(acc, q):
    v = acc.astype(np.float32) * scale_field(q)                    # float32 * float32 -> float32 (RNE)
    s9 = np.clip(np.round(v), -256, 255)
    return np.clip(s9 + offset_field(q), -128, 127).astype(np.int8)


def ref_deqf16(acc, q):
    v = acc.astype(np.float32) * scale_field(q)
    return np.clip(v, -65504, 65504).astype(np.float16)


def ref_vector(acc, scale, pertoken=None, fbias=None, out=ml_dtypes.bfloat16):
    d = acc.astype(np.float32) * np.asarray(scale).astype(np.float32)
    if pertoken is not None:
        d = pertoken.astype(np.float32)[:, None] * d
    if fbias is not None:
        d = d + fbias.astype(np.float32)
    with np.errstate(over="ignore"):
        return d.astype(out)


def i8(*shape, lo=-128, hi=128):
    return RNG.integers(lo, hi, shape, dtype=np.int8)


# ------------------------------------------------------------------ accumulator
@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (3, 5, 7), (17, 33, 9), (64, 256, 130), (129, 1000, 67)])
def test_accumulator_exact(m, k, n, simd):
    x1, x2 = i8(m, k), i8(k, n)
    y = npusim.npu_quant_matmul(x1, x2, np.ones(1, np.float32), output_dtype="int32")
    assert_bitexact(y, ref_acc(x1, x2))


def test_accumulator_extremes_k_65535(simd):
    k = 65535
    for a, b in ((-128, -128), (-128, 127), (127, 127)):
        x1 = np.full((5, k), a, np.int8)
        x2 = np.full((k, 6), b, np.int8)
        y = npusim.npu_quant_matmul(x1, x2, np.ones(1, np.float32), output_dtype="int32")
        assert (y == a * b * k).all()


def test_bias_past_int32_wraps():
    """The README's documented choice: acc + an int32 bias beyond int32 wraps in two's complement."""
    bias = np.array([2**31 - 1 - 1000, -2**31 + 5], np.int32)
    x1, x2 = np.full((1, 3), 127, np.int8), np.array([[127, -128]] * 3, np.int8)
    y = npusim.npu_quant_matmul(x1, x2, np.ones(1, np.float32), bias=bias, output_dtype="int32")
    exact = np.array([3 * 127 * 127 + 2**31 - 1 - 1000, -3 * 127 * 128 - 2**31 + 5])
    assert (y[0].astype(np.int64) == (exact + 2**31) % 2**32 - 2**31).all()


def test_accumulator_batch_broadcast(simd):
    x1, x2 = i8(2, 1, 5, 40), i8(3, 40, 6)
    y = npusim.npu_quant_matmul(x1, x2, np.ones(1, np.float32), output_dtype="int32")
    assert y.shape == (2, 3, 5, 6)
    assert_bitexact(y, ref_acc(x1, x2))
    x1, x2 = i8(2, 3, 1, 2, 7, 16), i8(16, 5)
    assert_bitexact(npusim.npu_quant_matmul(x1, x2, np.ones(1, np.float32), output_dtype="int32"), ref_acc(x1, x2))


def test_accumulator_vs_torch_int_mm(simd):
    torch = pytest.importorskip("torch")
    x1, x2 = i8(32, 4096), i8(4096, 24)
    y = npusim.npu_quant_matmul(x1, x2, np.ones(1, np.float32), output_dtype="int32")
    expect = torch._int_mm(torch.from_numpy(x1), torch.from_numpy(x2)).numpy()
    assert_bitexact(y, expect)


def pack_words(v):
    """int4 values (rows, 8j) -> int32 words, element 8j+i at bits 4i..4i+3 (torch_npu's int32 int4 layout)."""
    nib = (v.astype(np.int64) & 0xF).reshape(*v.shape[:-1], -1, 8)
    words = sum(nib[..., i] << (4 * i) for i in range(8))
    return words.astype(np.uint32).view(np.int32)


def i4(*shape):
    return RNG.integers(-8, 8, shape).astype(np.int8)


def test_int4_packed_inputs(simd):
    m, k, n = 6, 64, 16
    v1, v2 = i4(m, k), i4(k, n)
    q = npusim.npu_trans_quant_param(np.array([0.25], np.float32))
    y = npusim.npu_quant_matmul(pack_words(v1), pack_words(v2), q, output_dtype="float16")
    assert_bitexact(y, ref_deqf16(ref_acc(v1, v2), q))


def _int32_mm(x1, x2):
    return npusim.npu_quant_matmul(x1, x2, np.ones(1, np.float32), output_dtype="int32")


# Shapes that reach every kernel branch of every path: M <= 32 (dot kernel for [N, K] weights), M <= 4 (AVX2's
# fused kernel for [K, N] weights: two tasks, k not a multiple of 4, a column tail), small M
# with short k blocks (128), M above the row block (96 / 128) with several k blocks (512 / 1024), and
# tails in M (register tile 4 / 8 rows), N (16 / 32 columns) and K (pairs, quads, 16- and 64-byte steps).
GEMM_SHAPES = [(1, 1, 1), (1, 67, 33), (2, 5, 2000), (3, 130, 50), (32, 300, 100), (40, 1100, 70),
               (130, 1100, 47), (250, 130, 31), (99, 2049, 17), (4, 1027, 4110)]


@pytest.mark.parametrize("m,k,n", GEMM_SHAPES)
def test_accumulator_weight_layouts(simd, m, k, n):
    """x2 as contiguous [K, N], as the transposed view of a contiguous [N, K] weight (LinearA8W8Quant),
    and as views with other strides; all against the float64-BLAS product (exact: |sum| < 2^53)."""
    x1, w = i8(m, k), i8(n, k)
    expect = (x1.astype(np.float64) @ w.T.astype(np.float64)).astype(np.int32)
    assert_bitexact(_int32_mm(x1, np.ascontiguousarray(w.T)), expect)
    assert_bitexact(_int32_mm(x1, w.T), expect)
    wide = np.zeros((n, 2 * k), np.int8)
    wide[:, ::2] = w
    assert_bitexact(_int32_mm(x1, wide[:, ::2].T), expect)              # no unit stride: copied first
    assert_bitexact(_int32_mm(x1[::-1], w.T[:, ::-1]), expect[::-1, ::-1])   # negative strides


def test_accumulator_extremes_every_kernel(simd):
    """|sum| reaches 2^30 (K = 65535 of -128 * -128) in the dot kernel, the small-M and the large-M kernels."""
    k = 65535
    for m, n, signs in ((2, 5, 3), (40, 20, 3), (131, 17, 1)):
        for a, b in ((-128, -128), (-128, 127), (127, -128))[:signs]:
            x1 = np.full((m, k), a, np.int8)
            w = np.full((n, k), b, np.int8)
            w[:, -1] = a                        # one different product, so the tails count too
            want = a * b * (k - 1) + a * a
            assert (_int32_mm(x1, w.T) == want).all() and (_int32_mm(x1, np.ascontiguousarray(w.T)) == want).all()


def test_accumulator_batched_transposed_weights(simd):
    x1, w = i8(2, 1, 5, 70), i8(3, 40, 70)
    y = _int32_mm(x1, w.swapaxes(-1, -2))
    assert y.shape == (2, 3, 5, 40)
    assert_bitexact(y, ref_acc(x1, w.swapaxes(-1, -2)))


@pytest.mark.parametrize("transposed", [False, True])
def test_weight_is_not_copied(transposed):
    """Decode shape: neither weight layout is copied per call (traced NumPy allocations stay far below
    the 4 MiB weight; the kernel's own work buffers are a few KiB)."""
    w = i8(1024, 4096)
    x2 = w.T if transposed else np.ascontiguousarray(w.T)
    x1 = i8(1, 4096)
    _int32_mm(x1, x2)
    tracemalloc.start()
    try:
        _int32_mm(x1, x2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < w.nbytes // 8, peak


def test_simd_switch(monkeypatch):
    paths = qmm_kernels.simd_paths()
    assert paths[0] == "c" and set(paths) <= set(qmm_kernels.SIMD_PATHS)
    monkeypatch.setenv("NPUSIM_GEMM_SIMD", "sse9")
    with pytest.raises(ValueError, match="NPUSIM_GEMM_SIMD"):
        _int32_mm(i8(2, 8), i8(8, 3))


def test_benchmarks_name_the_simd_paths_they_run_on(monkeypatch):
    # every benchmark figure names the CPU and the SIMD paths: the build's vector ISA and the GEMM path in force
    import platform
    from npusim._kernels import casts
    from npusim.benchmarks import simd_text
    isa = casts.build_isa()
    assert isa in ("AVX-512", "AVX2", "AVX", "SSE2", "SVE", "NEON", "scalar")
    if platform.machine() in ("x86_64", "AMD64"):
        assert isa in ("AVX-512", "AVX2", "AVX", "SSE2")        # SSE2 is x86-64's baseline
    if isa == "AVX-512":            # compiled for it, so this CPU has it: the VNNI GEMM path may exist
        assert "avx2" in qmm_kernels.simd_paths()
    assert simd_text() == f"kernels compiled for {isa}, int8 GEMM path {qmm_kernels.simd_paths()[-1]}"
    monkeypatch.setenv("NPUSIM_GEMM_SIMD", "c")
    assert simd_text().endswith("int8 GEMM path c")
# ------------------------------------------------------------------ int4: support matrix, transposed weights
@pytest.mark.parametrize("product", ["atlas-a2", "atlas-a3"])
@pytest.mark.parametrize("out,scale_dt,bias_dt", [
    (ml_dtypes.bfloat16, np.float32, None), (ml_dtypes.bfloat16, ml_dtypes.bfloat16, np.float32),
    (np.float16, np.float32, np.int32), (np.float16, np.float32, np.float16)])
def test_int4_pertoken_vector_epilogue(product, out, scale_dt, bias_dt):
    """op-plugin test_npu_quant_matmul_a4w4_pertoken / vllm-ascend W4A4: int4 + per-token scale -> bf16 / fp16."""
    m, k, n = 9, 128, 24
    v1, v2 = i4(m, k), i4(k, n)
    scale = RNG.uniform(1e-3, 1e-2, n).astype(scale_dt)
    pt = RNG.uniform(0.5, 2, m).astype(np.float32)
    bias = None if bias_dt is None else (RNG.integers(-99, 99, n) if bias_dt == np.int32
                                         else RNG.uniform(-2, 2, n)).astype(bias_dt)
    y = npusim.npu_quant_matmul(pack_words(v1), pack_words(v2), scale, pertoken_scale=pt, bias=bias,
                                output_dtype=np.dtype(out).name, product=product)
    ibias = bias if bias_dt == np.int32 else None
    fbias = None if bias_dt in (None, np.int32) else bias
    assert_bitexact(y, ref_vector(ref_acc(v1, v2, ibias), scale, pt, fbias, out))


@pytest.mark.parametrize("product", ["atlas-a2", "atlas-a3"])
def test_int4_transposed_weight_is_bit_identical(product):
    """x2 as (k // 8, n): the transpose of npu_convert_weight_to_int4pack's (n, k // 8) (torch_npu doc)."""
    m, k, n = 5, 96, 40
    v1, w = i4(m, k), i4(n, k)                           # weight (n, k), as checkpoints hold it
    x2_t = pack_words(w).T                                 # (k // 8, n) view of the contiguous (n, k // 8)
    assert x2_t.shape == (k // 8, n) and not x2_t.flags.c_contiguous
    scale, pt = RNG.uniform(1e-3, 1e-2, n).astype(np.float32), RNG.uniform(0.5, 2, m).astype(np.float32)
    y = npusim.npu_quant_matmul(pack_words(v1), x2_t, scale, pertoken_scale=pt, output_dtype="bfloat16",
                                product=product)
    assert_bitexact(y, ref_vector(ref_acc(v1, w.T), scale, pt))
    assert_bitexact(y, npusim.npu_quant_matmul(pack_words(v1), pack_words(w.T), scale, pertoken_scale=pt,
                                               output_dtype="bfloat16", product=product))
    q = npusim.npu_trans_quant_param(scale)
    assert_bitexact(npusim.npu_quant_matmul(pack_words(v1), np.ascontiguousarray(x2_t), q, output_dtype="float16",
                                            product=product), ref_deqf16(ref_acc(v1, w.T), q))
    with pytest.raises(AclnnError, match="multiple of 8") as ei:    # (k // 8, n) with n = 12
        npusim.npu_quant_matmul(pack_words(v1), pack_words(i4(12, k)).T, np.ones(1, np.float32),
                                pertoken_scale=pt, output_dtype="bfloat16")
    assert ei.value.param == "x2"
    with pytest.raises(AclnnError, match=r"neither \(k, n // 8\) nor \(k // 8, n\)"):
        npusim.npu_quant_matmul(pack_words(v1), pack_words(i4(k // 2, 8)), np.ones(1, np.float32),
                                output_dtype="float16")


@pytest.mark.parametrize("kw,param,match", [
    (dict(output_dtype="bfloat16"), "pertoken_scale", "need a pertoken_scale"),
    (dict(output_dtype="int8"), "output_dtype", "float16 or bfloat16"),
    (dict(output_dtype="int32"), "output_dtype", "float16 or bfloat16"),
    (dict(output_dtype="float16", bias=np.zeros((1, 1, 8), np.int32)), "bias", "1-D")])
def test_int4_support_matrix_rejections(kw, param, match):
    x1, x2 = pack_words(i4(4, 16)), pack_words(i4(16, 8))
    with pytest.raises(AclnnError, match=match) as ei:
        npusim.npu_quant_matmul(x1[None], x2, np.ones(1, np.float32), **kw)
    assert ei.value.param == param and ei.value.status == 161002
    with pytest.raises(AclnnError) as ei:           # Atlas inference (310P): int8 only
        npusim.npu_quant_matmul(x1, x2, np.ones(1, np.float32), output_dtype="float16", product="atlas-inference")
    assert ei.value.param == "x1" and "Ascend310P" in str(ei.value) and "table 1" in str(ei.value)


# ------------------------------------------------------------------ weight preparation helpers
def test_convert_weight_to_int4pack_layout_and_errors():
    w = RNG.integers(-8, 8, (2, 6, 16)).astype(np.int32)
    packed = npusim.npu_convert_weight_to_int4pack(w)
    ref = np.zeros((2, 6, 2), np.uint32)                 # the spec, element by element
    for idx in np.ndindex(w.shape):
        ref[idx[:-1] + (idx[-1] // 8,)] |= np.uint32((int(w[idx]) & 0xF) << (4 * (idx[-1] % 8)))
    assert_bitexact(packed, ref.view(np.int32))
    assert_bitexact(npusim.npu_convert_weight_to_int4pack(w[0], inner_k_tiles=1, product="atlas-a3"), packed[0])
    for bad, param in ((w.astype(np.int8), "weight"), (w[..., :12], "weight"), (w * 2, "weight"),
                       (w[0, 0], "weight")):
        with pytest.raises(AclnnError) as ei:
            npusim.npu_convert_weight_to_int4pack(bad)
        assert ei.value.param == param
    with pytest.raises(AclnnError) as ei:
        npusim.npu_convert_weight_to_int4pack(w, product="atlas-inference")
    assert ei.value.param == "product"


def test_format_cast_changes_no_values():
    w = i8(64, 32)
    for fmt in (2, 29):
        assert npusim.npu_format_cast(w, fmt) is w
    with pytest.raises(AclnnError, match="not emulated"):
        npusim.npu_format_cast(w, 4)


# ------------------------------------------------------------------ npu_trans_quant_param
def _special_scales():
    vals = [1.0, -1.0, 0.1, -0.1, 3.0e38, -3.4028235e38, 1e-40, -1e-45, 0.0, -0.0, np.inf, -np.inf]
    s = np.array(vals, np.float32)
    ties = np.array([0x3F801000, 0x3F803000, 0x3F801001, 0x3F802FFF, 0x7F7FF000, 0x7F7FFFFF, 0x00800000 | 0x1000],
                    np.uint32).view(np.float32)          # exact halfway (even / odd), just above/below, overflow
    nans = np.array([0x7FC00000, 0x7F800001, 0xFFC01234], np.uint32).view(np.float32)
    rand = (RNG.standard_normal(200) * 10.0 ** RNG.integers(-8, 8, 200)).astype(np.float32)
    return np.concatenate([s, ties, nans, rand])


@pytest.mark.parametrize("round_mode", [0, 1])
def test_trans_quant_param_bits(round_mode):
    s = _special_scales()
    got = npusim.npu_trans_quant_param(s, round_mode=round_mode)
    assert_bitexact(got, ref_trans_quant_param(s, round_mode=round_mode))


def test_trans_quant_param_offsets():
    offs = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 254.5, 255.49, 255.5, 300.0, -256.5, -257.0, -1000.0,
                     1e10, -1e10, 3.7, -3.7, 0.0], np.float32)
    s = RNG.uniform(-1, 1, offs.size).astype(np.float32)
    got = npusim.npu_trans_quant_param(s, offs)
    assert_bitexact(got, ref_trans_quant_param(s, offs))
    # spot values straight from the layout: 2.5 -> 2 (ties to even), 300 -> 255, -1000 -> -256 (0x100)
    assert (int(got.view(np.uint64)[2]) >> 37) & 0x1FF == 2
    assert (int(got.view(np.uint64)[8]) >> 37) & 0x1FF == 255
    assert (int(got.view(np.uint64)[11]) >> 37) & 0x1FF == 0x100


def test_trans_quant_param_broadcast_and_layout():
    got = npusim.npu_trans_quant_param(np.array([0.5], np.float32), np.array([1.0, -1.0, 3.0], np.float32))
    assert got.shape == (3,)
    assert_bitexact(got, ref_trans_quant_param([0.5], [1.0, -1.0, 3.0]))
    one = npusim.npu_trans_quant_param(np.array([1.0], np.float32))
    assert int(one[0]) == 0x3F800000 | (1 << 46)
    two_d = npusim.npu_trans_quant_param(np.array([[1.0, 2.0]], np.float32), np.array([7.0], np.float32))
    assert two_d.shape == (1, 2) and two_d.dtype == np.int64


@pytest.mark.parametrize("kw,param", [
    (dict(scale=np.ones(3, np.float64)), "scale"),
    (dict(scale=np.ones((2, 3), np.float32)), "scale"),
    (dict(scale=np.ones(3, np.float32), offset=np.ones(2, np.float32)), "offset"),
    (dict(scale=np.ones(3, np.float32), round_mode=2), "round_mode"),
    (dict(scale=np.ones(3, np.float32), offset=np.ones(3, np.int32)), "offset"),
    (dict(scale=None), "scale"),
    (dict(scale=np.ones(3, np.float32), product="atlas-training"), "product"),
])
def test_trans_quant_param_errors(kw, param):
    with pytest.raises(AclnnError) as ei:
        npusim.npu_trans_quant_param(**kw)
    assert ei.value.param == param
    assert "npu_trans_quant_param" in str(ei.value)


# ------------------------------------------------------------------ fixpipe epilogues
def test_req8_ties_saturation_and_offsets():
    # acc = x1 . x2 with K = 1 makes acc = x1 * x2 (every value from -16256 to 16384 reachable)
    x1 = np.arange(-128, 128, dtype=np.int8).reshape(-1, 1)
    x2 = np.array([[1, -1, 3, 127, -128, 1, 1, 1]], np.int8)
    scales = np.array([0.5, 0.5, 1.5, 1.0, 0.0078125, 2.0, -0.5, 1e-40], np.float32)
    offs = np.array([0.0, 255.0, -256.0, 300.0, -300.0, 100.0, -7.5, 2.5], np.float32)
    q = npusim.npu_trans_quant_param(scales, offs)
    y = npusim.npu_quant_matmul(x1, x2, q, output_dtype="int8")
    assert_bitexact(y, ref_req8(ref_acc(x1, x2), q))
    # ties: acc * 0.5 with odd acc is exactly k + 0.5 -> half to even
    assert y[128 + 1, 0] == 0 and y[128 + 3, 0] == 2 and y[128 - 1, 0] == 0 and y[128 - 3, 0] == -2
    # column 3: acc * 1.0 + offset 255 (clamped from 300): s9 saturates at -256/255 first, then int8 saturates
    assert y[0, 3] == -1 and y[-1, 3] == 127
    assert y.min() == -128 and y.max() == 127


def test_req8_without_the_sign_bit_gives_unsigned_int8():
    # bit 46 of the int64 scale makes REQ8's result signed (npu_trans_quant_param sets it); a scale made from a
    # float32's raw bits (msModelSlim deqscale2int64) lacks it: the result is saturated to [0, 255] (uint8 bits)
    x1 = np.arange(-128, 128, dtype=np.int8).reshape(-1, 1)
    x2 = np.array([[1, -1, 3, 127]], np.int8)
    scales = np.array([0.5, 0.5, 1.5, 1.0], np.float32)
    signed = npusim.npu_trans_quant_param(scales)
    raw = signed & ~np.int64(1 << 46)
    y = npusim.npu_quant_matmul(x1, x2, raw, output_dtype="int8").view(np.uint8)
    v = ref_acc(x1, x2).astype(np.float32) * scale_field(signed)          # round half to even, then clip
    assert np.array_equal(y, np.clip(np.round(v), 0, 255).astype(np.uint8))
    assert y.max() == 255 and y.min() == 0
    # with float16 output the bit is not read
    assert np.array_equal(npusim.npu_quant_matmul(x1, x2, raw, output_dtype="float16").view(np.uint16),
                          npusim.npu_quant_matmul(x1, x2, signed, output_dtype="float16").view(np.uint16))


def test_req8_fp32_scale_auto_converted_with_bias():
    x1, x2 = i8(40, 96), i8(96, 33)
    scale = RNG.uniform(0.0001, 0.01, 33).astype(np.float32)
    offset = RNG.uniform(-20, 20, 33).astype(np.float32)
    bias = RNG.integers(-5000, 5000, 33).astype(np.int32)
    y = npusim.npu_quant_matmul(x1, x2, scale, offset=offset, bias=bias)
    q = ref_trans_quant_param(scale, offset)
    assert y.dtype == np.int8
    assert_bitexact(y, ref_req8(ref_acc(x1, x2, bias), q))
    # the same through an int64 scale
    assert_bitexact(npusim.npu_quant_matmul(x1, x2, q, bias=bias), y)


def test_req8_per_tensor_negative_scale():
    x1, x2 = i8(9, 50), i8(50, 11)
    q = ref_trans_quant_param(np.array([-0.0123], np.float32), np.array([-3.0], np.float32))
    y = npusim.npu_quant_matmul(x1, x2, q, output_dtype=np.int8)
    assert_bitexact(y, ref_req8(ref_acc(x1, x2), np.broadcast_to(q, (11,))))


def test_int64_scale_with_separate_offset_is_ignored_with_warning():
    x1, x2 = i8(4, 8), i8(8, 4)
    q = ref_trans_quant_param(np.array([0.1], np.float32))
    with pytest.warns(RuntimeWarning, match="offset"):
        y = npusim.npu_quant_matmul(x1, x2, q, offset=np.array([50.0], np.float32))
    assert_bitexact(y, npusim.npu_quant_matmul(x1, x2, q))


def test_deqf16_per_channel_saturation_and_subnormal():
    x1, x2 = i8(16, 300), i8(300, 12)
    scale = np.array([1e-3, -1e-3, 3.0, -3.0, 1e-7, 5e-8, 1.0, 2.0 ** -20, 0.1, 7.77, -1e-40, 1e4], np.float32)
    bias = RNG.integers(-100000, 100000, 12).astype(np.int32)
    y = npusim.npu_quant_matmul(x1, x2, scale, bias=bias, output_dtype="float16")
    q = ref_trans_quant_param(scale)
    assert y.dtype == np.float16
    assert_bitexact(y, ref_deqf16(ref_acc(x1, x2, bias), q))
    assert np.isfinite(y).all() and np.abs(y[:, 11]).max() == 65504      # saturates, never inf


def test_deqf16_int64_scale_batched_bias_3d():
    x1, x2 = i8(3, 5, 20), i8(3, 20, 7)
    q = ref_trans_quant_param(np.array([0.037], np.float32))
    bias = RNG.integers(-300, 300, (3, 1, 7)).astype(np.int32)
    y = npusim.npu_quant_matmul(x1, x2, q, bias=bias, output_dtype="float16")
    assert_bitexact(y, ref_deqf16(ref_acc(x1, x2, bias), q))


# ------------------------------------------------------------------ vector epilogue
@pytest.mark.parametrize("bias_dtype", [None, np.int32, ml_dtypes.bfloat16, np.float32])
@pytest.mark.parametrize("pertoken", [False, True])
def test_bf16_output(bias_dtype, pertoken):
    m, k, n = 24, 200, 20
    x1, x2 = i8(m, k), i8(k, n)
    scale = RNG.uniform(1e-4, 1e-2, n).astype(np.float32)
    pt = RNG.uniform(0.01, 2.0, m).astype(np.float32) if pertoken else None
    bias = None if bias_dtype is None else (RNG.uniform(-50, 50, n).astype(bias_dtype) if bias_dtype != np.int32
                                            else RNG.integers(-1000, 1000, n).astype(np.int32))
    y = npusim.npu_quant_matmul(x1, x2, scale, pertoken_scale=pt, bias=bias, output_dtype="bfloat16")
    ibias = bias if bias_dtype == np.int32 else None
    fbias = bias if bias_dtype not in (None, np.int32) else None
    assert_bitexact(y, ref_vector(ref_acc(x1, x2, ibias), scale, pt, fbias))


def test_bf16_scale_bf16_output_full_precision():
    x1, x2 = i8(8, 64), i8(64, 9)
    scale = RNG.uniform(1e-3, 1e-1, 9).astype(ml_dtypes.bfloat16)
    y = npusim.npu_quant_matmul(x1, x2, scale, output_dtype="bf16")
    assert_bitexact(y, ref_vector(ref_acc(x1, x2), scale))


@pytest.mark.parametrize("bias_dtype", [None, np.int32, np.float16, np.float32])
def test_fp16_output_with_pertoken_uses_full_scale(bias_dtype):
    m, k, n = 10, 128, 17
    x1, x2 = i8(m, k), i8(k, n)
    scale = (RNG.uniform(1e-3, 1e-2, n).astype(np.float32).view(np.uint32) | 0x1FFF).view(np.float32)  # low bits set
    pt = RNG.uniform(0.1, 3.0, m).astype(np.float32)
    bias = None if bias_dtype is None else (RNG.integers(-99, 99, n).astype(np.int32) if bias_dtype == np.int32
                                            else RNG.uniform(-5, 5, n).astype(bias_dtype))
    y = npusim.npu_quant_matmul(x1, x2, scale, pertoken_scale=pt, bias=bias, output_dtype="float16")
    ibias = bias if bias_dtype == np.int32 else None
    fbias = bias if bias_dtype not in (None, np.int32) else None
    expect = ref_vector(ref_acc(x1, x2, ibias), scale, pt, fbias, out=np.float16)
    assert_bitexact(y, expect)
    # and it differs from the 19-bit fixpipe scale somewhere (the full scale really is used)
    trunc = ref_vector(ref_acc(x1, x2, ibias), scale_field(ref_trans_quant_param(scale)), pt, fbias, out=np.float16)
    assert not np.array_equal(expect.view(np.uint16), trunc.view(np.uint16))


def test_int32_output_with_bias():
    x1, x2 = i8(2, 7, 30), i8(30, 5)
    bias = RNG.integers(-(2 ** 20), 2 ** 20, 5).astype(np.int32)
    y = npusim.npu_quant_matmul(x1, x2, np.array([0.5], ml_dtypes.bfloat16), bias=bias, output_dtype="int32")
    assert_bitexact(y, ref_acc(x1, x2, bias))


# ------------------------------------------------------------------ dtype table and errors
S32 = np.ones(4, np.float32)
Q64 = np.full(4, 0x3F800000 | (1 << 46), np.int64)


@pytest.mark.parametrize("kw,param", [
    (dict(output_dtype="float32"), "output_dtype"),
    (dict(output_dtype="bfloat16", scale=Q64), "scale"),
    (dict(output_dtype="int32", scale=Q64), "scale"),
    (dict(output_dtype="float16", offset=S32), "offset"),
    (dict(output_dtype="int8", pertoken_scale=np.ones(3, np.float32)), "pertoken_scale"),
    (dict(output_dtype="int32", pertoken_scale=np.ones(3, np.float32)), "pertoken_scale"),
    (dict(output_dtype="float16", scale=Q64, pertoken_scale=np.ones(3, np.float32)), "scale"),
    (dict(output_dtype="int8", bias=np.ones(4, np.float32)), "bias"),
    (dict(output_dtype="bfloat16", bias=np.ones(4, np.float16)), "bias"),
    (dict(output_dtype="float16", pertoken_scale=np.ones(3, np.float32), bias=np.ones(4, ml_dtypes.bfloat16)), "bias"),
    (dict(output_dtype="bfloat16", pertoken_scale=np.ones(4, np.float32)), "pertoken_scale"),
    (dict(output_dtype="bfloat16", pertoken_scale=np.ones(3, np.float64)), "pertoken_scale"),
    (dict(scale=np.ones(3, np.float32)), "scale"),
    (dict(scale=np.ones((1, 4), np.float32)), "scale"),
    (dict(scale=np.ones(4, np.float16)), "scale"),
    (dict(offset=np.ones(4, np.float16)), "offset"),
    (dict(bias=np.ones(5, np.int32)), "bias"),
    (dict(bias=np.ones((1, 1, 4), np.int32)), "bias"),     # 3-D bias only with 3-D output
    (dict(x1=i8(3, 9)), "x2"),
    (dict(x1=i8(3, 8).astype(np.int16)), "x1"),
    (dict(x2=i8(8, 4).astype(np.int32)), "x2"),
    (dict(x1=i8(8)), "x1"),
    (dict(x1=i8(1, 1, 1, 1, 1, 3, 8)), "x1"),
    (dict(x1=i8(0, 8)), "x1"),
    (dict(x1=i8(2, 3, 8), x2=i8(3, 8, 4)), "x2"),
    (dict(x1=None), "x1"),
    (dict(scale=None), "scale"),
    (dict(product="atlas-training"), "product"),
    (dict(scale=np.full(4, (1 << 46) | (1 << 33), np.int64)), "scale"),
])
def test_invalid_combinations(kw, param):
    args = dict(x1=i8(3, 8), x2=i8(8, 4), scale=S32)
    args.update(kw)
    x1, x2, scale = args.pop("x1"), args.pop("x2"), args.pop("scale")
    with pytest.raises(AclnnError) as ei:
        npusim.npu_quant_matmul(x1, x2, scale, **args)
    assert ei.value.param == param, str(ei.value)
    assert "npu_quant_matmul" in str(ei.value)
    assert ei.value.status == (161001 if kw.get(param, 0) is None else 161002)


@pytest.mark.parametrize("kw, param, condition", [
    # the same bf16 scale is fine with bf16 output: the message says which rule refused it
    (dict(output_dtype="float16"), "scale", "with float16 output and no pertoken_scale"),
    (dict(output_dtype="float16", pertoken_scale=np.ones(3, np.float32)), "scale",
     "with float16 output and pertoken_scale"),
    (dict(output_dtype="int32"), None, None),
    (dict(output_dtype="bfloat16"), None, None),
])
def test_dtype_rules_name_their_condition(kw, param, condition):
    scale = np.ones(4, ml_dtypes.bfloat16)
    if param is None:
        npusim.npu_quant_matmul(i8(3, 8), i8(8, 4), scale, **kw)
        return
    with pytest.raises(AclnnError) as ei:
        npusim.npu_quant_matmul(i8(3, 8), i8(8, 4), scale, **kw)
    assert ei.value.param == param and ei.value.status == 161002
    assert condition in str(ei.value) and "bfloat16 or int32 output" in str(ei.value), str(ei.value)
    with pytest.raises(AclnnError) as ei:       # int8 output: an int32 bias only, and the message says why
        npusim.npu_quant_matmul(i8(3, 8), i8(8, 4), S32, bias=np.ones(4, np.float32))
    assert ei.value.param == "bias" and "with int8 output" in str(ei.value)


def test_last_dim_limit():
    with pytest.raises(AclnnError, match="65535"):
        npusim.npu_quant_matmul(i8(1, 65536), i8(65536, 1), np.ones(1, np.float32))


def test_atlas_inference_restrictions():
    x1, x2 = i8(4, 32), i8(32, 8)
    y = npusim.npu_quant_matmul(x1, x2, np.full(8, 0.01, np.float32), output_dtype="float16", product="atlas-inference")
    assert_bitexact(y, ref_deqf16(ref_acc(x1, x2), ref_trans_quant_param(np.full(8, 0.01, np.float32))))
    for kw, param in ((dict(output_dtype="bfloat16"), "output_dtype"), (dict(output_dtype="int32"), "output_dtype"),
                      (dict(output_dtype="float16", pertoken_scale=np.ones(4, np.float32)), "pertoken_scale")):
        with pytest.raises(AclnnError) as ei:
            npusim.npu_quant_matmul(x1, x2, np.ones(1, np.float32), product="atlas-inference", **kw)
        assert ei.value.param == param
    with pytest.raises(AclnnError) as ei:
        npusim.npu_quant_matmul(np.zeros((4, 4), np.int32), np.zeros((32, 1), np.int32), np.ones(1, np.float32),
                                output_dtype="float16", product="atlas-inference")
    assert ei.value.param == "x1"


def test_int4_only_fp16_output():
    with pytest.raises(AclnnError) as ei:
        npusim.npu_quant_matmul(np.zeros((4, 4), np.int32), np.zeros((32, 1), np.int32), np.ones(1, np.float32),
                                output_dtype="int8")
    assert ei.value.param == "output_dtype"


# ------------------------------------------------------------------ LinearA8W8Quant
def test_linear_a8w8_quant_int8_with_offset_and_bias():
    layer = npusim.LinearA8W8Quant(48, 20, bias=True, offset=True)
    layer.weight = i8(20, 48)
    layer.scale = RNG.uniform(1e-3, 1e-2, 20).astype(np.float32)
    layer.offset = RNG.uniform(-10, 10, 20).astype(np.float32)
    layer.bias = RNG.integers(-500, 500, 20).astype(np.int32)
    x = i8(2, 6, 48)
    y = layer(x)
    q = ref_trans_quant_param(layer.scale, layer.offset)
    assert y.shape == (2, 6, 20) and y.dtype == np.int8
    assert_bitexact(y, ref_req8(ref_acc(x, layer.weight.T, layer.bias), q))


def test_linear_a8w8_quant_fp16_and_pertoken():
    layer = npusim.LinearA8W8Quant(32, 8, bias=False, output_dtype="float16")
    layer.weight = i8(8, 32)
    layer.scale = RNG.uniform(1e-3, 1e-2, 8).astype(np.float32)
    x = i8(5, 32)
    assert_bitexact(layer(x), ref_deqf16(ref_acc(x, layer.weight.T), ref_trans_quant_param(layer.scale)))
    pt_layer = npusim.LinearA8W8Quant(32, 8, bias=False, pertoken_scale=True, output_dtype="bfloat16")
    pt_layer.weight, pt_layer.scale = layer.weight, layer.scale
    pt = RNG.uniform(0.5, 2, 5).astype(np.float32)
    assert_bitexact(pt_layer(x, pertoken_scale=pt), ref_vector(ref_acc(x, layer.weight.T), layer.scale, pt))
    with pytest.raises(AclnnError):
        pt_layer(x)
    with pytest.raises(AclnnError):
        layer(x, pertoken_scale=pt)


def test_linear_a8w8_quant_torch_npu_module_contract():
    """torch_npu's LinearA8W8Quant keeps pertoken_scale as a parameter and passes offset= next to the int64
    scale it folded the offset into: no warning, the offset is not applied twice; with float16 output the
    offset is rejected, as the NPU's aclnn checker does (offset only with int8 output)."""
    w, x = i8(8, 32), i8(5, 32)
    layer = npusim.LinearA8W8Quant(32, 8, bias=True, offset=True)
    layer.weight, layer.bias = w, RNG.integers(-500, 500, 8).astype(np.int32)
    layer.scale = RNG.uniform(1e-3, 1e-2, 8).astype(np.float32)
    layer.offset = RNG.uniform(-10, 10, 8).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = layer(x)
    assert_bitexact(y, ref_req8(ref_acc(x, w.T, layer.bias), ref_trans_quant_param(layer.scale, layer.offset)))
    layer.output_dtype = "float16"
    with pytest.raises(AclnnError) as ei:
        layer(x)
    assert ei.value.param == "offset"
    pt_layer = npusim.LinearA8W8Quant(32, 8, bias=False, pertoken_scale=True, output_dtype="bfloat16")
    assert pt_layer.pertoken_scale.shape == (8,) and pt_layer.pertoken_scale.dtype == np.float32
    pt_layer.weight, pt_layer.scale = w, layer.scale
    pt_layer.pertoken_scale = RNG.uniform(0.5, 2, 5).astype(np.float32)
    assert_bitexact(pt_layer(x), ref_vector(ref_acc(x, w.T), layer.scale, pt_layer.pertoken_scale))


@pytest.mark.parametrize("product,output_dtype", [("atlas-a2", "int32"), ("atlas-a3", "int32"),
                                                    ("atlas-inference", "bfloat16")])
def test_linear_a8w8_quant_output_dtypes_of_the_seed(product, output_dtype):
    """Seed 003: LinearA8W8Quant outputs int8/float16/bfloat16 (Atlas inference: int8/float16), even though
    npu_quant_matmul itself also has an int32 output."""
    layer = npusim.LinearA8W8Quant(16, 4, bias=False, output_dtype=output_dtype, product=product)
    layer.weight = i8(4, 16)
    layer.scale = np.ones(4, np.float32)
    with pytest.raises(AclnnError) as ei:
        layer(i8(3, 16))
    assert ei.value.param == "output_dtype" and ei.value.status == 161002
    for ok in ("int8", "float16") + (("bfloat16",) if product != "atlas-inference" else ()):
        layer.output_dtype = ok
        assert layer(i8(3, 16)).dtype == formats.as_dtype(ok)


def test_linear_a8w8_quant_int8_only():
    """Seed 003: x1 and weight are int8 (no int32-packed int4 through this module)."""
    layer = npusim.LinearA8W8Quant(64, 8, bias=False, output_dtype="float16")
    layer.weight = np.zeros((64, 1), np.int32)          # int4-packed [k, n // 8] weight^T layout
    layer.scale = np.ones(8, np.float32)
    with pytest.raises(AclnnError) as ei:
        layer(np.zeros((3, 8), np.int32))
    assert ei.value.param in ("x1", "weight") and ei.value.status == 161002


def test_linear_a8w8_quant_scale_is_1d_and_weight_errors_name_the_weight():
    """Seed 003: scale is 1-D (t,), t = 1 or out_features, whatever its dtype and the output; the weight is
    [out_features, in_features] and its errors name it (the module's user passes no x2)."""
    for out in ("int8", "float16", "bfloat16"):
        layer = npusim.LinearA8W8Quant(64, 32, bias=False, output_dtype=out)
        layer.weight = np.ones((32, 64), np.int8)
        for bad in (np.full((1, 32), 0.01, np.float32), np.full((2, 16), 0.01, np.float32)):
            layer.scale = bad
            with pytest.raises(AclnnError, match="'scale': must be 1-D") as ei:
                layer(np.ones((4, 64), np.int8))
            assert ei.value.op == "LinearA8W8Quant"
        layer.scale = np.full(32, 0.01, np.float32)
        assert layer(np.ones((4, 64), np.int8)).shape == (4, 32)
    layer.weight = np.ones((32, 63), np.int8)
    with pytest.raises(AclnnError, match=r"'weight': in_features \(shape\[-1\] = 63\) must equal x1.shape\[-1\] = 64"):
        layer(np.ones((4, 64), np.int8))
    layer.weight = np.ones((1, 1, 1, 1, 1, 2, 32, 64), np.int8)
    with pytest.raises(AclnnError, match="'weight': must have 2 to 6 dimensions"):
        layer(np.ones((4, 64), np.int8))


@pytest.mark.parametrize("out", ["int8", "float16", "bfloat16"])
def test_linear_a8w8_quant_takes_a_batched_weight(out):
    """Seed 003: weight (batch, n, k), 2 to 6 dimensions; the forward is npu_quant_matmul(x1, weight^T over its
    last two dimensions): each batch is the 2-D layer of that batch's weight, and the batch broadcasts."""
    w = RNG.integers(-128, 128, (3, 32, 64)).astype(np.int8)
    x = RNG.integers(-128, 128, (3, 5, 64)).astype(np.int8)
    scale = RNG.uniform(1e-3, 1e-2, 32).astype(np.float32)
    layer = npusim.LinearA8W8Quant(64, 32, bias=False, output_dtype=out)
    layer.weight, layer.scale = w, scale
    y = layer(x)
    assert y.shape == (3, 5, 32)
    for b in range(3):
        one = npusim.LinearA8W8Quant(64, 32, bias=False, output_dtype=out)
        one.weight, one.scale = w[b], scale
        assert_bitexact(y[b], one(x[b]))
        assert_bitexact(layer(x[b])[b], y[b])          # a 2-D x1 broadcasts over the weight's batch


# ------------------------------------------------------------------ plan
def test_plan_from_specs():
    plan = make_plan("npu_quant_matmul", x1=TensorSpec((2048, 7168), "int8"), x2=TensorSpec((7168, 4096), "int8"),
                     scale=TensorSpec((4096,), "float32"), pertoken_scale=TensorSpec((2048,), "float32"),
                     output_dtype="bfloat16", product="atlas-a2")
    soc = npusim.get_product("atlas-a2")
    assert plan.core_type == "mix" and plan.tiles["epilogue_unit"] == "vector"
    assert plan.block_dim == min(soc.aic, plan.tiles["total_blocks"])
    assert plan.tiles["mCnt"] * plan.tiles["baseM"] >= 2048 and plan.tiles["nCnt"] * plan.tiles["baseN"] >= 4096
    p2 = make_plan("npu_quant_matmul", x1=TensorSpec((8, 64), "int8"), x2=TensorSpec((64, 16), "int8"),
                   scale=TensorSpec((1,), "int64"), output_dtype="float16", product="atlas-inference")
    assert p2.core_type == "aicore" and p2.tiles["epilogue"] == "deqf16" and p2.block_dim == 1
    p3 = make_plan("npu_quant_matmul", x1=TensorSpec((8, 64), "int8"), x2=TensorSpec((64, 16), "int8"),
                   scale=TensorSpec((16,), "float32"), output_dtype="int8", product="atlas-a3")
    assert p3.core_type == "aic" and p3.tiles["epilogue"] == "req8"
    with pytest.raises(AclnnError):
        make_plan("npu_quant_matmul", x1=TensorSpec((8, 64), "int8"), x2=TensorSpec((63, 16), "int8"),
                  scale=TensorSpec((16,), "float32"))



def test_pertoken_scale_of_every_row_of_a_3d_x1_gets_a_hint():
    x1, x2 = np.ones((2, 8, 64), np.int8), np.ones((64, 32), np.int8)
    with pytest.raises(npusim.AclnnError, match=r"got \(16,\) \(m is x1's second-last dimension; .*flatten it to 2-D\)"):
        npusim.npu_quant_matmul(x1, x2, np.ones(32, np.float32), pertoken_scale=np.ones(16, np.float32),
                                output_dtype="bfloat16")
