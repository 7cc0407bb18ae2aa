"""npu_quant_matmul on Ascend 950 (arch35): bit-exact against a NumPy reference written from ARITHMETIC.md
4.2-4.4 and the arch35 kernel's path choice, and compared with a NumPy transcription of the vendor arch35
golden's formulas (ops-nn matmul/quant_batch_matmul_v3/tests/assets/qbmmv3_kernel_golden.py: determine_quant_mode,
needs_scale_generate, compute_tc / compute_pertoken / compute_requant / compute_int32) on the vendor's own
test shapes (the Ascend950 rows of tests/ut/op_kernel/test_quant_batch_matmul_v3.csv and
tests/ut/op_host/test_quant_batch_matmul_v3.csv). The one documented difference: fp16 output through the
fixpipe saturates at +-65504 (the fixpipe's DEQF16 "does not support the INF_NAN mode"), where the golden's
numpy astype overflows to inf. The plan's base block is checked against the same tiling rows.
"""
import ml_dtypes
import numpy as np
import pytest

import npusim
from npusim import AclnnError, TensorSpec
from npusim.testing import assert_bitexact

F = np.float32
BF16 = ml_dtypes.bfloat16
MASK = np.uint32(0xFFFFE000)
RNG = np.random.default_rng(950)


def acc_of(x1, x2, bias_i32=None):
    """Exact int32 accumulator (float64 BLAS is exact here: |sum| < 2^53)."""
    acc = np.rint(x1.astype(np.float64) @ x2.astype(np.float64)).astype(np.int64)
    if bias_i32 is not None:
        acc = acc + bias_i32.astype(np.int64)
    return acc.astype(np.int32)


def trunc19(s):
    return (np.asarray(s, F).view(np.uint32) & MASK).view(F)


def packed(scale, offset=None):
    """torch_npu's npu_trans_quant_param(scale, offset), round_mode 0 (ARITHMETIC.md 4.1)."""
    q = (np.asarray(scale, F).view(np.uint32) & MASK).astype(np.uint64) | np.uint64(1 << 46)
    if offset is not None:
        o = np.clip(np.rint(np.asarray(offset, np.float64)), -256, 255).astype(np.int64)
        q = q | ((o.astype(np.uint64) & np.uint64(0x1FF)) << np.uint64(37))
    return q.view(np.int64)


def unpack(q):
    u = q.view(np.uint64)
    s = (u & np.uint64(0xFFFFE000)).astype(np.uint32).view(F)
    o = ((u >> np.uint64(37)) & np.uint64(0x1FF)).astype(np.int64)
    return s, np.where(o >= 256, o - 512, o)


def spec_reference(x1, x2, scale, offset=None, pertoken=None, bias=None, out="int8"):
    """What the 950 kernel computes, from ARITHMETIC.md 4.2-4.4 and the arch35 path choice:
    int64 scale (or a float32 scale torch_npu packs for int8/fp16 output) -> fixpipe with its 19-bit scale;
    bf16 output with a float scale: per-tensor without per-token scale or float bias -> fixpipe with the
    scale's 19 high bits, else the vector epilogue with the full scale; int32 bias first, float bias last."""
    b_i32 = bias if bias is not None and bias.dtype == np.int32 else None
    fbias = bias.astype(F) if bias is not None and bias.dtype != np.int32 else None
    acc = acc_of(x1, x2, b_i32).astype(F)
    if out == "int32":
        return acc_of(x1, x2, b_i32)
    if scale.dtype == F and pertoken is None and out in ("int8", "float16"):
        scale = packed(scale, offset if out == "int8" else None)
    with np.errstate(over="ignore"):
        if scale.dtype == np.int64:
            s, o = unpack(scale)
            v = (acc * s).astype(F)
            if out == "int8":
                return np.clip(np.clip(np.round(v), -256, 255) + o, -128, 127).astype(np.int8)
            if out == "float16":
                return np.clip(v, -65504, 65504).astype(np.float16)
            return v.astype(BF16)
        s = scale.astype(F)
        if scale.shape[0] == 1 and pertoken is None and fbias is None:
            s = trunc19(s)
        d = (acc * s).astype(F)
        if pertoken is not None:
            d = (d * pertoken.astype(F)[:, None]).astype(F)
        if fbias is not None:
            d = (d + fbias).astype(F)
        return d.astype(np.float16 if out == "float16" else BF16)


def golden(x1, x2, scale, offset=None, pertoken=None, bias=None, out="int8"):
    """The vendor arch35 golden's formulas (aclnn level: an int64 scale is what torch_npu passes)."""
    if scale.dtype == F and pertoken is None and out in ("int8", "float16"):
        scale = packed(scale, offset if out == "int8" else None)
    bias_dtype = None if bias is None else {np.dtype(np.int32): "int32"}.get(bias.dtype, "float")
    mm = (x1.astype(np.float64) @ x2.astype(np.float64)).astype(np.int64).astype(np.int32)
    if scale.dtype == np.int64:
        x2s, off = unpack(scale)
        off = off.astype(F) if offset is not None else None
    else:
        x2s, off = scale.astype(F), None
    is_bias_vec = bias_dtype == "float"
    gen = scale.dtype != np.int64 and scale.shape[0] == 1 and (bias is None or bias.dtype == np.int32)
    with np.errstate(over="ignore"):
        if out == "int8":                                                   # compute_requant
            o = mm + bias if bias_dtype == "int32" else mm
            o = np.clip(np.round(o.astype(F) * x2s), -256, 255)
            if off is not None:
                o = np.clip(np.round(o), -256, 255) + np.clip(np.round(off), -256, 255)
            return np.clip(o, -128, 127).astype(np.int8)
        if out == "int32":                                                  # compute_int32
            return (mm + bias if bias is not None else mm).astype(np.int32)
        dt = np.float16 if out == "float16" else BF16
        if pertoken is not None:                                            # compute_pertoken (K-C)
            o = (mm + bias if bias_dtype == "int32" else mm).astype(F)
            o = o * x2s * pertoken.astype(F)[:, None]
            return (o + bias.astype(F) if is_bias_vec else o).astype(dt)
        o = mm + bias if bias_dtype == "int32" else mm                      # compute_tc (T-C / T-T)
        o = o.astype(F) * (trunc19(x2s) if gen else x2s)
        return (o + bias.astype(F) if is_bias_vec else o).astype(dt)


def i8(*shape):
    return RNG.integers(-128, 128, shape, dtype=np.int8)


def f32(*shape, lo=-1e-3, hi=1e-3):
    return RNG.uniform(lo, hi, shape).astype(F)


# The vendor's Ascend950 int8 cases: (m, k, n, scale, pertoken, bias, out)
VENDOR_CASES = [
    (4, 8192, 128, "int64", False, "int32", "float16"),        # op_kernel UT INT8_FLOW / BF16_FLOW
    (52, 4632, 7360, "bfloat16", False, "bfloat16", "bfloat16"),   # kernelTest/0-3
    (360, 6992, 1384, "float32", True, "bfloat16", "bfloat16"),    # generalTest/99
    (1789, 2784, 1056, "bfloat16", True, "int32", "bfloat16"),     # generalTest/100
    (2852, 1520, 2256, "float32", True, "float32", "bfloat16"),    # generalTest/101
    (360, 6992, 1384, "float32", True, "float16", "float16"),      # generalTest/102
    (2852, 1520, 2256, "float32", True, "float32", "float16"),     # generalTest/103
    (2906, 128, 1744, "bfloat16", False, None, "int32"),           # generalTest/105
    (128, 256, 1, "float32", False, "float32", "bfloat16"),        # kernelTest/10
    (185, 1240, 464, "float32", False, "float32", "bfloat16"),     # kernelTest/11
    (256, 128, 256, "float32", True, "int32", "float16"),          # kernelTest/12-15
    (209, 2840, 480, "float32", True, "int32", "float16"),         # kernelTest/16
]


def _args(m, k, n, scale_t, pertoken, bias_t, out, per_tensor=False):
    x1, x2 = i8(m, k), i8(k, n)
    t = 1 if per_tensor else n
    if scale_t == "int64":
        scale = packed(f32(t, lo=1e-4, hi=2e-3), f32(t, lo=-5, hi=5) if out == "int8" else None)
    else:
        scale = f32(t, lo=-2e-3, hi=2e-3).astype(BF16 if scale_t == "bfloat16" else F)
    pt = f32(m, lo=0.1, hi=2) if pertoken else None
    bias = None if bias_t is None else (RNG.integers(-5000, 5000, n).astype(np.int32) if bias_t == "int32"
                                        else f32(n, lo=-30, hi=30).astype(np.dtype(BF16) if bias_t == "bfloat16"
                                                                           else np.dtype(bias_t)))
    return dict(x1=x1, x2=x2, scale=scale, pertoken_scale=pt, bias=bias, output_dtype=out)


def _compare(kw, golden_too=True):
    got = npusim.npu_quant_matmul(**kw, product="ascend-950pr")
    ref_kw = dict(x1=kw["x1"], x2=kw["x2"], scale=kw["scale"], offset=kw.get("offset"), pertoken=kw["pertoken_scale"],
                  bias=kw["bias"], out=kw["output_dtype"])
    assert_bitexact(got, spec_reference(**ref_kw))
    if golden_too:
        q = ref_kw["scale"]
        if q.dtype == np.int64 and ref_kw["out"] == "int8" and ref_kw["offset"] is None:
            ref_kw["offset"] = np.zeros(q.shape, F)   # the golden reads the offset bits only when given an offset
        assert_bitexact(got, golden(**ref_kw))
    return got


@pytest.mark.parametrize("case", VENDOR_CASES, ids=[f"{c[0]}x{c[1]}x{c[2]}-{c[3]}-{c[6]}" for c in VENDOR_CASES])
def test_vendor_950_shapes_match_spec_and_golden(case):
    m, k, n, scale_t, pertoken, bias_t, out = case
    if m * k * n > 2e9:                     # keep the suite cheap: the vendor's three largest shapes at 1/4 m
        m //= 4
    _compare(_args(m, k, n, scale_t, pertoken, bias_t, out))


@pytest.mark.parametrize("out", ["int8", "float16", "bfloat16", "int32"])
@pytest.mark.parametrize("scale_t", ["float32", "bfloat16", "int64"])
@pytest.mark.parametrize("per_tensor", [True, False], ids=["T", "C"])
@pytest.mark.parametrize("bias_t", [None, "int32", "float32", "bfloat16"])
def test_every_combination_of_the_950_table(out, scale_t, per_tensor, bias_t):
    """Each combination the V4 doc's Ascend 950 table allows (torch face: float32 scales with int8/fp16
    output are packed by npu_trans_quant_param first), against the spec reference and the golden."""
    ok_scale = {"int8": ("int64", "float32"), "float16": ("int64", "float32"),
                "bfloat16": ("int64", "float32", "bfloat16"), "int32": ("float32", "bfloat16")}[out]
    ok_bias = {"int8": (None, "int32"), "float16": (None, "int32"), "int32": (None, "int32"),
               "bfloat16": (None, "int32") if scale_t == "int64" else (None, "int32", "float32", "bfloat16")}[out]
    kw = _args(24, 96, 40, scale_t, False, bias_t, out, per_tensor)
    if out == "int8" and scale_t == "float32":
        kw["offset"] = f32(1 if per_tensor else 40, lo=-5, hi=5)
    if scale_t not in ok_scale or bias_t not in ok_bias:
        with pytest.raises(AclnnError):
            npusim.npu_quant_matmul(**kw, product="ascend-950dt")
        return
    _compare(kw)
    if out != "int32":                        # and with a per-token scale where the table allows one
        kw["pertoken_scale"] = f32(24, lo=0.1, hi=2)
        if out in ("bfloat16", "float16") and scale_t != "int64" and (out == "bfloat16" or scale_t == "float32") \
                and bias_t != ("bfloat16" if out == "float16" else "float16"):
            _compare(kw)
        else:
            with pytest.raises(AclnnError):
                npusim.npu_quant_matmul(**kw, product="ascend-950pr")


def test_per_tensor_bf16_uses_the_19_bit_scale_and_per_channel_the_full_one():
    """The arch35 cube kernel keeps only bits 31..13 of a per-tensor float scale; A2/A3 (vector
    epilogue) and arch35 per-channel (mix kernel) use all 32."""
    x1, x2 = i8(8, 64), i8(64, 16)
    s = np.array([1.0 + 2.0 ** -20], F)                      # differs from its 19-bit truncation
    a35 = npusim.npu_quant_matmul(x1, x2, s, output_dtype="bfloat16", product="ascend-950pr")
    a2 = npusim.npu_quant_matmul(x1, x2, s, output_dtype="bfloat16", product="atlas-a2")
    acc = acc_of(x1, x2).astype(F)
    assert_bitexact(a35, (acc * trunc19(s)).astype(BF16))
    assert_bitexact(a2, (acc * s).astype(BF16))
    chan = npusim.npu_quant_matmul(x1, x2, np.full(16, s[0], F), output_dtype="bfloat16", product="ascend-950pr")
    assert_bitexact(chan, a2)
    p = npusim.make_plan("npu_quant_matmul", x1=x1, x2=x2, scale=s, output_dtype="bfloat16", product="ascend-950pr")
    assert p.tiles["epilogue_unit"] == "fixpipe" and p.core_type == "aic"


def test_fp16_fixpipe_saturates_where_the_golden_overflows():
    """The one difference from the golden (documented): DEQF16 clips to +-65504, astype gives inf."""
    x1 = np.full((2, 64), 127, np.int8)
    x2 = np.full((64, 4), 127, np.int8)
    s = np.array([1.0], F)                                   # 64 * 127^2 = 1032256 > 65504
    got = npusim.npu_quant_matmul(x1, x2, s, output_dtype="float16", product="ascend-950pr")
    assert (got == np.float16(65504)).all()
    with np.errstate(over="ignore"):
        assert np.isinf(golden(x1, x2, s, out="float16")).all()


def test_int64_offset_bits_apply_without_an_offset_tensor():
    """Kernel vs golden: the fixpipe reads bits 37..45 of the int64 quant parameter whatever the offset
    argument (qbmm_cube_on_the_fly.h passes the uint64 on); the golden adds an offset only when an offset
    tensor is given. npusim follows the kernel (as on A2/A3)."""
    x1, x2 = i8(4, 32), i8(32, 8)
    q = packed(np.full(8, 0.01, F), np.full(8, -3.0, F))
    got = npusim.npu_quant_matmul(x1, x2, q, product="ascend-950pr")
    assert_bitexact(got, spec_reference(x1, x2, q, out="int8"))
    assert not np.array_equal(got, golden(x1, x2, q, out="int8"))
    assert_bitexact(got, golden(x1, x2, q, offset=np.zeros(8, F), out="int8"))


def test_empty_m_or_n_and_int8_only():
    x2 = i8(32, 8)
    out = npusim.npu_quant_matmul(np.zeros((0, 32), np.int8), x2, np.ones(8, F), output_dtype="bfloat16",
                                  product="ascend-950pr")
    assert out.shape == (0, 8) and out.dtype == BF16
    assert npusim.npu_quant_matmul(i8(3, 32), np.zeros((32, 0), np.int8), np.ones(1, F),
                                   product="ascend-950pr").shape == (3, 0)
    with pytest.raises(AclnnError, match="x1"):             # k = 0 stays an error
        npusim.npu_quant_matmul(np.zeros((3, 0), np.int8), np.zeros((0, 8), np.int8), np.ones(8, F),
                                product="ascend-950pr")
    with pytest.raises(AclnnError, match="x1"):             # packed int4 is A2/A3 only
        npusim.npu_quant_matmul(np.zeros((3, 4), np.int32), np.zeros((32, 1), np.int32), np.ones(8, F),
                                output_dtype="float16", product="ascend-950pr")
    with pytest.raises(AclnnError, match="x1"):
        npusim.npu_quant_matmul(np.zeros((0, 32), np.int8), x2, np.ones(8, F), product="atlas-a2")


# The Ascend950 int8 rows of the vendor tiling UT (op_host/test_quant_batch_matmul_v3.csv):
# (m, k, n, transB) -> (baseM, baseN, baseK, numBlocks)
TILING_ROWS = [((52, 4632, 7360, False), (64, 256, 128, 29)), ((52, 4632, 7360, True), (64, 240, 128, 31)),
               ((256, 128, 256, False), (16, 128, 128, 32)), ((256, 128, 256, True), (32, 64, 128, 32)),
               ((209, 2840, 480, False), (32, 128, 256, 28)), ((360, 6992, 1384, True), (96, 176, 128, 32)),
               ((1789, 2784, 1056, True), (256, 256, 128, 32)), ((4, 8192, 128, True), (16, 16, 2048, 8)),
               ((2906, 128, 1744, False), (256, 256, 128, 32))]


@pytest.mark.parametrize("shape,want", TILING_ROWS, ids=[str(r[0]) for r in TILING_ROWS])
def test_plan_base_block_matches_the_vendor_tiling(shape, want):
    m, k, n, trans_b = shape
    x2 = np.zeros((n, k), np.int8).T if trans_b else TensorSpec((k, n), "int8")
    p = npusim.make_plan("npu_quant_matmul", x1=TensorSpec((m, k), "int8"), x2=x2,
                         scale=TensorSpec((n,), "float32"), output_dtype="bfloat16", product="ascend-950pr")
    t = p.tiles
    assert (t["baseM"], t["baseN"], t["baseK"], p.block_dim) == want
    assert p.soc.aic == 32 and t["mCnt"] * t["nCnt"] == t["total_blocks"]


@pytest.mark.parametrize("shape,want", [r for r in TILING_ROWS if r[0][3]], ids=[str(r[0]) for r in TILING_ROWS if r[0][3]])
def test_a_transposed_tensorspec_plans_as_the_transposed_array(shape, want):
    """The layout torch_npu passes for `w.T` (is_transpose_last_two_dims) changes the vendor's 950 base block:
    a TensorSpec says so with transposed=True (or .T), and perfmodel.predict keeps it from an array's strides."""
    import perfmodel
    m, k, n, _ = shape
    common = dict(x1=TensorSpec((m, k), "int8"), scale=TensorSpec((n,), "float32"), output_dtype="bfloat16")
    by_spec = npusim.make_plan("npu_quant_matmul", x2=TensorSpec((n, k), "int8").T, product="ascend-950pr", **common)
    assert (by_spec.tiles["baseM"], by_spec.tiles["baseN"], by_spec.tiles["baseK"], by_spec.block_dim) == want
    arr = perfmodel.predict("npu_quant_matmul", "ascend-950pr", x2=np.zeros((n, k), np.int8).T, **common)
    spec = perfmodel.predict("npu_quant_matmul", "ascend-950pr", x2=TensorSpec((k, n), "int8", transposed=True),
                             **common)
    assert arr.tiles == spec.tiles and by_spec.tiles.items() <= arr.tiles.items() and arr.latency_us == spec.latency_us


def test_tensorspec_layout():
    from npusim.plan import is_transposed, spec_of
    w = np.zeros((6, 4), np.int8)
    assert not is_transposed(w) and is_transposed(w.T) and spec_of(w.T) == TensorSpec((6, 4), "int8").T
    assert not is_transposed(np.zeros((1, 1), np.int8).T)
    assert not is_transposed(w[:, ::2].T)                           # a strided view is not the transpose layout
    assert is_transposed(np.zeros((3, 6, 4), np.int8).transpose(0, 2, 1))
    assert TensorSpec((4, 6), "int8").T.T == TensorSpec((4, 6), "int8") != TensorSpec((4, 6), "int8", True)
    with pytest.raises(ValueError, match="2 dimensions"):
        TensorSpec((4,), "int8", transposed=True)
    with pytest.raises(TypeError, match="True or False"):
        TensorSpec((4, 6), "int8", transposed=1)
    torch = pytest.importorskip("torch")
    t = torch.zeros(6, 4, dtype=torch.int8)
    assert is_transposed(t.t()) and not is_transposed(t) and spec_of(t.t()).transposed


def test_perfmodel_costs_every_shape_the_950_emulator_accepts():
    """perfmodel.predict on ascend-950pr/dt for each dtype path, batched, tiny, long-K and empty shapes;
    the latency is finite and at least the launch floor, and vector-epilogue plans cost the vector pipe."""
    import perfmodel
    T = TensorSpec
    shapes = [((1, 7168), (7168, 4096)), ((4096, 7168), (7168, 4096)), ((5, 3, 64), (5, 64, 40)),
              ((2, 1, 16, 32), (32, 8)), ((4, 65535), (65535, 16)), ((0, 64), (64, 32)), ((8, 64), (64, 0))]
    combos = [("int64", None, "int32", "int8"), ("int64", None, None, "float16"), ("int64", None, "int32", "bfloat16"),
              ("float32", None, "float32", "bfloat16"), ("bfloat16", "pt", "int32", "bfloat16"),
              ("float32", "pt", "float16", "float16"), ("float32", None, "int32", "int32"),
              ("float32", None, None, "int8")]
    for product in ("ascend-950pr", "ascend-950dt"):
        for (s1, s2) in shapes:
            n, m = s2[-1], s1[-2]
            for scale_t, pt, bias_t, out in combos:
                kw = dict(x1=T(s1, "int8"), x2=T(s2, "int8"), scale=T((n if n else 1,), scale_t),
                          pertoken_scale=T((m,), "float32") if pt else None,
                          bias=T((n,), bias_t) if bias_t else None, output_dtype=out)
                p = perfmodel.predict("npu_quant_matmul", product=product, **kw)
                assert np.isfinite(p.latency_us) and p.latency_us > 0, (s1, s2, kw)
                if m * n and p.tiles["epilogue_unit"] == "vector":
                    assert p.pipes_us["vector"] > 0
    assert set(perfmodel.supported_products("npu_quant_matmul")) >= {"ascend-950pr", "ascend-950dt"}


def test_cube_template_counts_the_batch_as_blocks_and_the_mix_template_does_not():
    """base_block_calculator.cpp: oriBlock = batchCoreCnt * mCnt * nCnt; batchCoreCnt is the batch in the cube
    (FixPipe) template (AdaptiveSlidingWindowCubeBasicAPITiling::GetBatchCoreCnt) and 1 in the mix template
    (AdaptiveSlidingWindowTiling's). By hand, x1 8x128x4096 and x2 4096x4096 on 32 AICs: default blocks
    128 x 256 x 128, 1 x 16 of them a batch; with the batch 8 x 16 = 128 >= 32, so the cube template keeps
    them, while the mix template (16 < 32) re-splits M x N as for a 2-D 128 x 4096 call."""
    from npusim.plan import make_plan
    T = TensorSpec
    kw = dict(x1=T((8, 128, 4096), "int8"), x2=T((4096, 4096), "int8"))
    cube = make_plan("npu_quant_matmul", product="ascend-950pr", scale=T((4096,), "int64"), output_dtype="float16",
                     **kw)
    assert (cube.tiles["baseM"], cube.tiles["baseN"], cube.tiles["baseK"]) == (128, 256, 128)
    mix = make_plan("npu_quant_matmul", product="ascend-950pr", scale=T((4096,), "float32"),
                    pertoken_scale=T((128,), "float32"), output_dtype="bfloat16", **kw)
    flat = make_plan("npu_quant_matmul", product="ascend-950pr", x1=T((128, 4096), "int8"), x2=T((4096, 4096), "int8"),
                     scale=T((4096,), "float32"), pertoken_scale=T((128,), "float32"), output_dtype="bfloat16")
    assert [mix.tiles[k] for k in ("baseM", "baseN", "baseK")] == [flat.tiles[k] for k in ("baseM", "baseN", "baseK")]
    assert (mix.tiles["baseM"], mix.tiles["baseN"]) != (128, 256)
