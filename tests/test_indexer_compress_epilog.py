"""indexer_compress_epilog: bit-exact against a slow NumPy reference written from ARITHMETIC.md section 2,
plus ml_dtypes / PyTorch casts and a DeepGEMM-style ceil_to_ue8m0 (PEERS.md 2b) as independent oracles."""
import re

import ml_dtypes
import numpy as np
import pytest

import npusim
from npusim import AclnnError
from npusim.plan import TensorSpec
from npusim.testing import assert_bitexact

E4M3 = np.dtype(ml_dtypes.float8_e4m3fn)
E5M2 = np.dtype(ml_dtypes.float8_e5m2)
E8M0 = np.dtype(ml_dtypes.float8_e8m0fnu)
BF16 = np.dtype(ml_dtypes.bfloat16)
D, NB = 4096, 32
FP8_MAX = {E4M3: 448.0, E5M2: 57344.0}
INV_MAX_BITS = {E4M3: 0x3B124925, E5M2: 0x37924925}     # f32(1/448), f32(1/57344) (ARITHMETIC.md 2.2)
NAN_CODE = {E4M3: 0x7F, E5M2: 0x7E}


# ------------------------------------------------------------------ reference (from the spec only)
def f32(bits):
    return np.array([bits & 0xFFFFFFFF], np.uint32).view(np.float32)[0]


def bits_of(v):
    return int(np.array([v], np.float32).view(np.uint32)[0])


def kernel_pow2(s):
    """ARITHMETIC.md 2.3 round_scale, literally: E = bits>>23 & 0xFF; bump = (E & 0x7FFFFF) != 0;
    s = ((E - 127 + bump) + 127) << 23, in 32-bit arithmetic."""
    e = (bits_of(s) >> 23) & 0xFF
    bump = 1 if (e & 0x7FFFFF) != 0 else 0
    return f32(((e - 127 + bump) + 127) << 23)


def ceil_to_ue8m0(s):
    """DeepGEMM's rule as PEERS.md 2b describes it: exponent + (mantissa != 0), clamped to [1, 254]."""
    b = bits_of(abs(s))
    e = ((b >> 23) & 0xFF) + (1 if (b & 0x7FFFFF) != 0 else 0)
    return f32(min(max(e, 1), 254) << 23)


def ref_mode1(blk, fp8):
    inv = f32(INV_MAX_BITS[fp8])
    valid = np.isfinite(blk)
    amax = np.abs(blk[valid]).max() if valid.any() else np.float32(0)
    scale = np.float32(amax * inv) if amax != 0 else np.float32(0)
    with np.errstate(all="ignore"):
        q = blk / scale
    q = np.where(np.isfinite(q), q, blk)
    return q.astype(fp8), np.array([scale], np.float32).view(np.uint8)


def ref_mode0(blk, fp8, round_scale, rule):
    inv = f32(INV_MAX_BITS[fp8])
    a = np.abs(blk)
    amax = np.float32(np.nan) if np.isnan(a).any() else a.max()
    s = amax if not amax < np.float32(1e-4) else np.float32(1e-4)
    s = np.float32(s * inv)
    if round_scale:
        if rule == "kernel":
            s = kernel_pow2(s)
        elif np.isfinite(s):
            s = ceil_to_ue8m0(s)
    byte = (bits_of(s) >> 23) & 0xFF
    m = np.float32(FP8_MAX[fp8])
    with np.errstate(all="ignore"):
        q = np.minimum(np.maximum(blk / s, -m), m)
    y = q.astype(fp8)
    y.view(np.uint8)[np.isnan(q)] = NAN_CODE[fp8]        # positive NaN code (documented choice)
    return y, np.array([byte], np.uint8)


def reference(cache, scale, x, slots, quant_mode=1, round_scale=True, rule="kernel"):
    cache, scale = cache.copy(), scale.copy()
    xf = x.astype(np.float32)
    cb = cache.view(np.uint8)
    sb = scale.view(np.uint8).reshape(scale.shape[0], -1)
    w = 4 if quant_mode == 1 else 1
    for i, slot in enumerate(slots):
        if slot == -1:
            continue
        for b in range(xf.shape[1] // 128):
            blk = xf[i, b * 128:(b + 1) * 128]
            if quant_mode == 1:
                y, sbytes = ref_mode1(blk, cache.dtype)
            else:
                y, sbytes = ref_mode0(blk, cache.dtype, round_scale, rule)
            cb[slot, b * 128:(b + 1) * 128] = y.view(np.uint8)
            sb[slot, b * w:(b + 1) * w] = sbytes
    return cache, scale


# ------------------------------------------------------------------ data
def random_x(rng, T, xdt):
    """Blocks of very different magnitudes (1e-7 .. 1e4), some with a single large outlier."""
    mag = 10.0 ** rng.uniform(-7, 4, (T, NB, 1))
    x = rng.standard_normal((T, NB, 128)) * mag
    out = rng.random((T, NB)) < 0.1
    x[out, 0] *= 50
    lim = 60000.0 if xdt == np.float16 else 1e30
    return np.clip(x, -lim, lim).reshape(T, D).astype(xdt)


def filled(rng, rows, fp8, quant_mode):
    cache = rng.integers(0, 256, (rows, D), dtype=np.uint8).view(fp8)
    if quant_mode == 1:
        scale = rng.standard_normal((rows, NB)).astype(np.float32)
    else:
        scale = rng.integers(0, 255, (rows, NB), dtype=np.uint8).view(E8M0)
    return cache, scale


def slots_for(rng, T, rows, n_skip):
    s = rng.permutation(rows)[:T].astype(np.int32)
    s[rng.choice(T, n_skip, replace=False)] = -1
    return s


def run_both(cache, scale, x, slots, **kw):
    exp_c, exp_s = reference(cache, scale, x, slots, kw.get("quant_mode", 1), kw.get("round_scale", True),
                             kw.get("mx_scale_rule", "kernel"))
    npusim.indexer_compress_epilog(cache, scale, x, slots, **kw)
    assert_bitexact(cache, exp_c, err_msg="cache")
    assert_bitexact(scale, exp_s, err_msg="scale")


MODES = [dict(quant_mode=1), dict(quant_mode=0, round_scale=True), dict(quant_mode=0, round_scale=False),
         dict(quant_mode=0, round_scale=True, mx_scale_rule="ceil")]
MODE_IDS = ["mode1", "mx-kernel", "mx-noround", "mx-ceil"]


@pytest.mark.parametrize("kw", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("fp8", [E4M3, E5M2], ids=["e4m3fn", "e5m2"])
@pytest.mark.parametrize("xdt", [np.float16, BF16], ids=["fp16", "bf16"])
def test_random_bitexact(xdt, fp8, kw):
    rng = np.random.default_rng(1)
    T, rows = 24, 40                           # T >= 16: the parallel path
    x = random_x(rng, T, xdt)
    cache, scale = filled(rng, rows, fp8, kw["quant_mode"])
    run_both(cache, scale, x, slots_for(rng, T, rows, 5), **kw)


def adversarial_x(xdt, fp8):
    """One row per 32 blocks of hand-made edge cases."""
    m = FP8_MAX[fp8]
    blocks = []
    blocks.append(np.zeros(128))                                          # all zeros
    b = np.zeros(128); b[17] = 3.0; blocks.append(b)                      # single non-zero
    b = np.zeros(128); b[5] = -1e-30 if xdt == BF16 else -2.0 ** -24; blocks.append(b)   # single tiny
    for k in (-6, 0, 3):                                                  # amax = FP8MAX * 2^k
        if xdt == np.float16 and m * 2.0 ** k > 65504:
            k = -3
        b = np.linspace(-1, 1, 128) * m * 2.0 ** k; b[0] = m * 2.0 ** k; blocks.append(b)
    # amax = FP8MAX * 2^k with fp8 rounding ties: x/scale at midpoints of the fp8 grid
    mids = [1.0625, 1.1875, 1.125, 1.375, 3.5, 5.5, 0.5 + 0.0625 / 2, 2.0 ** -8 * 1.5] if fp8 == E4M3 else \
           [1.125, 1.375, 1.625, 1.875, 2.5, 7.0, 2.0 ** -15 * 1.5, 2.0 ** -16 * 3]
    for k in (-4, 1):
        if xdt == np.float16 and m * 2.0 ** k > 65504:
            k = -8
        b = np.resize(np.array(mids) * 2.0 ** k, 128); b[::7] *= -1; b[3] = m * 2.0 ** k; blocks.append(b)
    blocks.append(np.full(128, 3e-5))                                     # amax below 1e-4
    b = np.linspace(-9e-5, 9e-5, 128); blocks.append(b)
    b = np.full(128, 1e-6); b[0] = -5e-5; blocks.append(b)
    b = np.linspace(-1, 1, 128); b[9] = np.inf; blocks.append(b)          # +inf
    b = np.linspace(-1, 1, 128); b[10] = -np.inf; blocks.append(b)        # -inf
    b = np.linspace(-1, 1, 128); b[11] = np.nan; blocks.append(b)         # NaN
    b = np.zeros(128); b[1] = np.nan; b[2] = np.inf; b[3] = -np.inf; blocks.append(b)   # only non-finite + 0
    blocks.append(np.full(128, -np.inf))
    b = np.full(128, np.nan); blocks.append(b)
    b = np.linspace(0, 2, 128); b[64] = -0.0; b[0] = -0.0; blocks.append(b)              # signed zeros
    big = 60000.0 if xdt == np.float16 else 3e38
    b = np.linspace(-big, big, 128); blocks.append(b)                     # largest finite inputs
    b = np.linspace(-1, 1, 128) * 1e-3; b[40] = 7.0; blocks.append(b)     # tiny values next to an outlier
    rng = np.random.default_rng(7)
    while len(blocks) < NB:
        blocks.append(rng.standard_normal(128) * 10.0 ** rng.uniform(-5, 3))
    with np.errstate(over="ignore"):
        return np.concatenate(blocks[:NB]).astype(xdt)[None, :]


@pytest.mark.parametrize("kw", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("fp8", [E4M3, E5M2], ids=["e4m3fn", "e5m2"])
@pytest.mark.parametrize("xdt", [np.float16, BF16], ids=["fp16", "bf16"])
def test_adversarial_bitexact(xdt, fp8, kw):
    rng = np.random.default_rng(2)
    row = adversarial_x(xdt, fp8)
    x = np.concatenate([row, row[:, ::-1]])                # 2 rows (serial path)
    cache, scale = filled(rng, 5, fp8, kw["quant_mode"])
    run_both(cache, scale, x, np.array([3, 0], np.int32), **kw)


def test_nonfinite_semantics_spelled_out():
    """ARITHMETIC.md 2.2: inf/NaN are left out of the max and passed through the non-saturating cast."""
    x = np.zeros((1, D), np.float16)
    x[0, :4] = [np.inf, -np.inf, np.nan, 2.0]
    for fp8, inf_code in ((E5M2, 0x7C), (E4M3, 0x7F)):
        cache = np.zeros((1, D), fp8)
        scale = np.zeros((1, NB), np.float32)
        npusim.indexer_compress_epilog(cache, scale, x, np.array([0], np.int32))
        c = cache.view(np.uint8)[0]
        assert c[0] == inf_code and c[1] == 0x80 | inf_code          # +-inf (e4m3fn: +-NaN)
        assert np.isnan(cache[0, 2].astype(np.float32))
        assert cache[0, 3].astype(np.float32) == FP8_MAX[fp8]         # 2.0 is the finite block max
        assert scale[0, 0] == np.float32(np.float32(2.0) * f32(INV_MAX_BITS[fp8]))
        assert scale[0, 1] == 0 and c[128] == 0                       # all-zero block: scale 0, y 0


def test_torch_cast_oracle():
    """Mode 1 on finite data, recomputed with PyTorch float32 ops and torch's own fp8 casts."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    T = 20
    x = random_x(rng, T, BF16)
    for fp8, tdt in ((E4M3, torch.float8_e4m3fn), (E5M2, torch.float8_e5m2)):
        cache = np.zeros((T, D), fp8)
        scale = np.zeros((T, NB), np.float32)
        npusim.indexer_compress_epilog(cache, scale, x, np.arange(T, dtype=np.int32))
        xt = torch.from_numpy(x.astype(np.float32)).reshape(T, NB, 128)
        amax = xt.abs().amax(-1, keepdim=True)
        inv = torch.tensor(float(f32(INV_MAX_BITS[fp8])), dtype=torch.float32)
        s = torch.where(amax != 0, amax * inv, torch.zeros_like(amax))
        q = xt / s
        q = torch.where(torch.isfinite(q), q, xt)
        y = q.to(tdt).view(torch.uint8).reshape(T, D).numpy()
        assert_bitexact(cache.view(np.uint8), y)
        assert_bitexact(scale, s.reshape(T, NB).numpy())


def test_fp8_cast_hook_matches_ml_dtypes():
    from npusim._kernels import indexer_compress_epilog as k
    hi = np.arange(1 << 16, dtype=np.uint32) << 16
    for low in (0, 1, 0x7FFF, 0x8000, 0x8001, 0xFFFF):
        v = (hi | np.uint32(low)).view(np.float32)
        for fp8, code in ((E4M3, 3), (E5M2, 4)):
            with np.errstate(all="ignore"):
                assert_bitexact(k.fp8_codes(v, code), v.astype(fp8).view(np.uint8))


# ------------------------------------------------------------------ E8M0 rule vs DeepGEMM
def test_kernel_e8m0_rule_vs_deepgemm_ceil():
    rng = np.random.default_rng(4)
    s = np.concatenate([10.0 ** rng.uniform(-9, 30, 2000), 2.0 ** np.arange(-40, 100)]).astype(np.float32)
    pow2 = (s.view(np.uint32) & 0x7FFFFF) == 0
    for v, p in zip(s, pow2):
        k, c = kernel_pow2(v), ceil_to_ue8m0(v)
        assert c >= v and c / 2 < v                       # ceil is the least power of two >= s
        if p:
            assert k == 2 * c                             # exact powers of two are doubled by the kernel
        else:
            assert k == c                                 # elsewhere the two rules agree


@pytest.mark.parametrize("fp8", [E4M3, E5M2], ids=["e4m3fn", "e5m2"])
def test_mx_rules_differ_exactly_at_power_of_two_scales(fp8):
    m = FP8_MAX[fp8]
    rng = np.random.default_rng(5)
    amax = np.where(rng.random(NB) < 0.5, m * 2.0 ** rng.integers(-12, 5, NB), rng.uniform(0.01, 100, NB))
    amax = amax.astype(BF16).astype(np.float32)
    x = (rng.uniform(-1, 1, (1, NB, 128)) * amax[None, :, None])
    x[0, :, 0] = amax
    x = x.reshape(1, D).astype(BF16)
    s = (np.maximum(amax, np.float32(1e-4)) * f32(INV_MAX_BITS[fp8])).astype(np.float32)
    is_pow2 = (s.view(np.uint32) & 0x7FFFFF) == 0
    assert is_pow2.any() and not is_pow2.all()
    out = {}
    for rule in ("kernel", "ceil"):
        cache, scale = np.zeros((1, D), fp8), np.zeros((1, NB), E8M0)
        npusim.indexer_compress_epilog(cache, scale, x, np.array([0], np.int32), quant_mode=0, mx_scale_rule=rule)
        out[rule] = scale.view(np.uint8)[0].astype(int)
    diff = out["kernel"] - out["ceil"]
    assert np.array_equal(diff != 0, is_pow2)
    assert np.all(diff[is_pow2] == 1)
    expected_ceil = [(bits_of(ceil_to_ue8m0(v)) >> 23) for v in s]
    assert np.array_equal(out["ceil"], expected_ceil)


# ------------------------------------------------------------------ scatter semantics
def test_skipped_rows_and_untouched_slots_keep_old_bytes():
    rng = np.random.default_rng(6)
    x = random_x(rng, 20, np.float16)
    cache, scale = filled(rng, 30, E4M3, 1)
    old_c, old_s = cache.copy(), scale.copy()
    npusim.indexer_compress_epilog(cache, scale, x, np.full(20, -1, np.int32))
    assert_bitexact(cache, old_c)
    assert_bitexact(scale, old_s)
    slots = np.full(20, -1, np.int32)
    slots[[2, 11]] = [29, 4]
    npusim.indexer_compress_epilog(cache, scale, x, slots)
    untouched = np.setdiff1d(np.arange(30), [29, 4])
    assert_bitexact(cache[untouched], old_c[untouched])
    assert_bitexact(scale[untouched], old_s[untouched])
    one_c, one_s = np.zeros((1, D), E4M3), np.zeros((1, NB), np.float32)
    npusim.indexer_compress_epilog(one_c, one_s, x[11:12], np.array([0], np.int32))
    assert_bitexact(cache[4], one_c[0])
    assert_bitexact(scale[4], one_s[0])


def test_empty_batch_is_a_no_op():
    cache, scale = np.ones((3, D), E5M2), np.ones((3, NB), np.float32)
    npusim.indexer_compress_epilog(cache, scale, np.zeros((0, D), np.float16), np.zeros(0, np.int32))
    assert np.all(scale == 1)


# ------------------------------------------------------------------ validation
def _good(quant_mode=1):
    rng = np.random.default_rng(8)
    x = random_x(rng, 4, np.float16)
    cache, scale = filled(rng, 6, E4M3, quant_mode)
    return dict(indexer_compress_cache=cache, indexer_compress_scale=scale, x=x,
                slot_mapping=np.array([0, -1, 5, 2], np.int32))


def _noncontig(a):
    big = np.zeros((a.shape[0], 2 * a.shape[1]), a.dtype)
    big[:, ::2] = a
    return big[:, ::2]


BAD = {
    "product": (dict(product="atlas-a2"), "product", 161002),
    "x-dtype": (dict(x=lambda g: g["x"].astype(np.float32)), "x", 161002),
    "x-d": (dict(x=lambda g: g["x"][:, :4000].copy()), "x", 161002),        # not a multiple of 128
    "x-1d": (dict(x=lambda g: g["x"][0].copy()), "x", 161002),
    "cache-rows": (dict(indexer_compress_cache=lambda g: g["indexer_compress_cache"][:, :4000].copy()),
                   "indexer_compress_cache", 161002),                         # not whole rows of d
    "x-none": (dict(x=None), "x", 161001),
    "cache-dtype": (dict(indexer_compress_cache=lambda g: g["indexer_compress_cache"].view(np.int8)),
                    "indexer_compress_cache", 161002),
    "cache-noncontig": (dict(indexer_compress_cache=lambda g: _noncontig(g["indexer_compress_cache"])),
                        "indexer_compress_cache", 161002),
    "x-noncontig": (dict(x=lambda g: _noncontig(g["x"])), "x", 161002),
    "scale-dtype-mode1": (dict(indexer_compress_scale=lambda g: g["indexer_compress_scale"].astype(np.float16)),
                          "indexer_compress_scale", 161002),
    "scale-e8m0-in-mode1": (dict(indexer_compress_scale=lambda g: np.zeros((6, NB), E8M0)),
                            "indexer_compress_scale", 161002),
    "scale-shape": (dict(indexer_compress_scale=lambda g: np.zeros((6, 16), np.float32)),
                    "indexer_compress_scale", 161002),
    "slot-dtype": (dict(slot_mapping=lambda g: g["slot_mapping"].astype(np.int64)), "slot_mapping", 161002),
    "slot-shape": (dict(slot_mapping=np.array([[0, 1], [2, 3]], np.int32)), "slot_mapping", 161002),
    "slot-past-x": (dict(slot_mapping=np.array([0, -1, 5, 2, -1, 3], np.int32)), "slot_mapping", 161002),
    "slot-high": (dict(slot_mapping=np.array([0, 6, 1, 2], np.int32)), "slot_mapping", 161002),
    "slot-low": (dict(slot_mapping=np.array([0, -2, 1, 2], np.int32)), "slot_mapping", 161002),
    "slot-duplicate": (dict(slot_mapping=np.array([3, -1, 1, 3], np.int32)), "slot_mapping", 161002),
    "quant-mode-2-fp8-cache": (dict(quant_mode=2), "indexer_compress_cache", 161002),   # mode 2 wants uint8
    "quant-mode-2-scale-attr": (dict(quant_mode=2, scale="0.5"), "scale", 161002),
    "quant-mode-3": (dict(quant_mode=3), "quant_mode", 161002),
    "round-scale": (dict(round_scale="yes"), "round_scale", 161002),
    "mx-rule": (dict(mx_scale_rule="floor"), "mx_scale_rule", 161002),
    "readonly-cache": (dict(indexer_compress_cache=lambda g: _readonly(g["indexer_compress_cache"])),
                       "indexer_compress_cache", 161002),
    # a TensorSpec has no data: fine for make_plan, an error (not a crash) for the emulator
    "x-tensorspec": (dict(x=TensorSpec((4, D), "float16")), "x", 161002),
    "slot-tensorspec": (dict(slot_mapping=TensorSpec((4,), "int32")), "slot_mapping", 161002),
}


def _readonly(a):
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_rejected_call_changes_nothing(case):
    change, param, status = BAD[case]
    args = _good()
    cache, scale = args["indexer_compress_cache"], args["indexer_compress_scale"]
    for k, v in change.items():
        args[k] = v(args) if callable(v) else v
    snap = [a.copy() for a in (args["indexer_compress_cache"], args["indexer_compress_scale"], cache, scale)]
    with pytest.raises(AclnnError) as ei:
        npusim.indexer_compress_epilog(**args)
    assert ei.value.status == status
    assert ei.value.param == param
    assert "indexer_compress_epilog" in str(ei.value)
    for before, after in zip(snap, (args["indexer_compress_cache"], args["indexer_compress_scale"], cache, scale)):
        assert_bitexact(after, before)


def test_shapes_the_kernel_would_misread_are_refused_and_nothing_is_written():
    """The kernel reads T = len(slot_mapping) rows of x and the cache as flat [-1, d] rows: a shorter
    slot_mapping would drop x's last rows, and a cache (or scale) whose last dimension is not d (d / 128) would
    take rows across its own; the seed gives all of them as [T, ...]. Each is a 161002 naming the tensor."""
    rng = np.random.default_rng(11)
    x = random_x(rng, 4, np.float16)
    cache, scale = filled(rng, 8, E4M3, 1)
    slots = np.array([3, 1, 0, 2], np.int32)
    d = x.shape[-1]
    cases = [("slot_mapping", "must hold a slot for every row of x", cache, scale, slots[:2]),
             ("indexer_compress_cache", f"last dimension must be d = {d}", cache.reshape(4, 2 * d), scale, slots),
             ("indexer_compress_cache", f"last dimension must be d = {d}", cache.reshape(-1), scale, slots),
             ("indexer_compress_cache", f"last dimension must be d = {d}", cache.reshape(16, d // 2), scale, slots),
             ("indexer_compress_scale", f"last dimension must be d / 128 = {d // 128}", cache,
              scale.reshape(-1, 2 * (d // 128)), slots)]
    for param, rule, c, s_, sl in cases:
        before = (c.copy(), s_.copy())
        with pytest.raises(AclnnError, match=re.escape(rule)) as e:
            npusim.indexer_compress_epilog(c, s_, x, sl)
        assert e.value.param == param and e.value.status == 161002
        assert_bitexact(c, before[0])
        assert_bitexact(s_, before[1])
        with pytest.raises(AclnnError, match=re.escape(rule)):        # the plan refuses it too
            npusim.make_plan("indexer_compress_epilog", indexer_compress_cache=TensorSpec(c.shape, E4M3),
                             indexer_compress_scale=TensorSpec(s_.shape, "float32"),
                             x=TensorSpec(x.shape, x.dtype), slot_mapping=TensorSpec(sl.shape, "int32"))


def test_any_d_of_whole_blocks_and_flat_shapes_as_the_kernel_reads_them():
    """The doc fixes d at 4096; the vendor tiling takes d from x's last dimension and T from slot_mapping, and the
    kernel reads x, cache and scale as flat rows. DeepSeek-V4's indexer (cann-recipes-infer Compressor) passes
    d = 128, x [B, S, 128], cache [blocks, 128, 1, 128], scale [blocks, 128, 1, 1] and, in decode, a slot_mapping
    padded with -1 past x's rows: each row must equal the spec's reference on the flat 2-D arrays."""
    rng = np.random.default_rng(5)
    for d, kw in ((128, dict(quant_mode=1)), (128, dict(quant_mode=0)), (384, dict(quant_mode=1)),
                  (8192, dict(quant_mode=0, round_scale=False))):
        B, S, blocks = 3, 5, 2
        x = (rng.standard_normal((B, S, d)) * 10.0 ** rng.uniform(-3, 3, (B, S, 1))).astype(BF16)
        fp8 = E4M3
        rows = blocks * 128 if d == 128 else 40
        cache = rng.integers(0, 256, rows * d, dtype=np.uint8).view(fp8)
        scale = (rng.standard_normal(rows * d // 128).astype(np.float32) if kw["quant_mode"] == 1
                 else rng.integers(0, 255, rows * d // 128, dtype=np.uint8).view(E8M0))
        if d == 128:
            cache, scale = cache.reshape(blocks, 128, 1, 128), scale.reshape(blocks, 128, 1, 1)
        else:
            cache, scale = cache.reshape(rows, d), scale.reshape(rows, d // 128)
        slots = np.full(2 * B * S, -1, np.int32)                  # twice x's rows, the extra ones padding
        slots[:B * S] = slots_for(rng, B * S, rows, 4)
        exp_c, exp_s = reference(cache.reshape(rows, d), scale.reshape(rows, -1), x.reshape(-1, d), slots[:B * S],
                                 kw["quant_mode"], kw.get("round_scale", True))
        npusim.indexer_compress_epilog(cache, scale, x, slots, **kw)
        assert_bitexact(cache.reshape(rows, d), exp_c)
        assert_bitexact(scale.reshape(rows, -1), exp_s)
    # the plan says d and T
    plan = npusim.make_plan("indexer_compress_epilog", indexer_compress_cache=TensorSpec((64, 1, 128), E4M3),
                            indexer_compress_scale=TensorSpec((64, 1, 1), "float32"), x=TensorSpec((2, 3, 128), BF16),
                            slot_mapping=TensorSpec((12,), "int32"))
    assert (plan.tiles["d"], plan.tiles["bs"], plan.tiles["scaleCol"]) == (128, 12, 1)
    # a row that does not fit in the UB: the vendor tiling would divide by zero
    with pytest.raises(AclnnError, match="'x': last dimension d = 51200 is too large"):
        npusim.make_plan("indexer_compress_epilog", indexer_compress_cache=TensorSpec((4, 51200), E4M3),
                         indexer_compress_scale=TensorSpec((4, 400), "float32"), x=TensorSpec((4, 51200), BF16),
                         slot_mapping=TensorSpec((4,), "int32"))
    with pytest.raises(AclnnError, match="not a multiple of 128.* not emulate") as e:
        npusim.make_plan("indexer_compress_epilog", indexer_compress_cache=TensorSpec((4, 100), E4M3),
                         indexer_compress_scale=TensorSpec((4, 1), "float32"), x=TensorSpec((4, 100), BF16),
                         slot_mapping=TensorSpec((4,), "int32"))
    assert e.value.not_emulated


def test_larger_cache_than_batch_is_accepted():
    args = _good()
    run_both(args["indexer_compress_cache"], args["indexer_compress_scale"], args["x"], args["slot_mapping"])


# ------------------------------------------------------------------ plan and aclnn
def _specs(T, quant_mode=1, rows=None):
    rows = T if rows is None else rows
    return dict(indexer_compress_cache=TensorSpec((rows, D), "float8_e5m2"),
                indexer_compress_scale=TensorSpec((rows, NB), "float32" if quant_mode else "float8_e8m0"),
                x=TensorSpec((T, D), "bf16"), slot_mapping=TensorSpec((T,), "int32"), quant_mode=quant_mode)


@pytest.mark.parametrize("product", ["ascend-950pr", "ascend-950dt", "Ascend950PR_9599"])
def test_plan_tiling(product):
    soc = npusim.get_product(product)
    # largest r with double-buffered x (2 B) + y (1 B) + scale tiles + slot index <= UB (tiling.cpp)
    def fits(r, qm):
        sc = r * 32 * (4 if qm else 1) * 2
        return r * D * 2 * 2 + r * D * 2 + sc + -(-r // 8) * 8 * 4 <= soc.ub_bytes
    for qm in (1, 0):
        rmax = max(r for r in range(1, 64) if fits(r, qm))
        p = npusim.make_plan("indexer_compress_epilog", **_specs(soc.aiv, qm), product=product)
        assert p.tiling_key == (10001 if qm else 10000) and p.block_dim == soc.aiv
        assert p.tiles["rowFactor"] == 1 and p.core_type == "aiv"
        T = 8192
        p = npusim.make_plan("indexer_compress_epilog", **_specs(T, qm), product=product)
        assert p.tiling_key == (10011 if qm else 10010)
        per_core = -(-T // soc.aiv)
        assert p.block_dim == -(-T // per_core)
        assert p.tiles["rowOfFormerBlock"] == per_core
        assert p.tiles["rowFactor"] == min(rmax, per_core)
        assert p.tiles["rowLoopOfFormerBlock"] == -(-per_core // p.tiles["rowFactor"])
        assert p.tiles["ub_bytes_used"] <= soc.ub_bytes
    p = npusim.make_plan("indexer_compress_epilog", **_specs(soc.aiv + 1), product=product)
    assert p.tiling_key == 10011 and p.tiles["rowOfTailBlock"] == 1


def test_plan_rejects_like_the_emulator():
    with pytest.raises(AclnnError):
        npusim.make_plan("indexer_compress_epilog", **_specs(8), product="atlas-a3")
    bad = _specs(8)
    bad["x"] = TensorSpec((8, 1000), "bf16")             # d not a multiple of 128
    with pytest.raises(AclnnError):
        npusim.make_plan("indexer_compress_epilog", **bad)


def test_aclnn_two_phase():
    args = _good(quant_mode=0)
    exp_c, exp_s = reference(args["indexer_compress_cache"], args["indexer_compress_scale"], args["x"],
                             args["slot_mapping"], 0, False)
    ws, ex = npusim.aclnn.aclnnIndexerCompressEpilogGetWorkspaceSize(
        args["indexer_compress_cache"], args["indexer_compress_scale"], args["x"], args["slot_mapping"], 0, False)
    assert ex.plan.tiling_key == 10000
    assert npusim.aclnn.aclnnIndexerCompressEpilog(npusim.aclnn.workspace(ws), ws, ex) == 0
    assert_bitexact(args["indexer_compress_cache"], exp_c)
    assert_bitexact(args["indexer_compress_scale"], exp_s)
    with pytest.raises(AclnnError):
        npusim.aclnn.aclnnIndexerCompressEpilog(npusim.aclnn.workspace(ws), ws, ex)
    with pytest.raises(AclnnError) as ei:
        npusim.aclnn.aclnnIndexerCompressEpilogGetWorkspaceSize(
            args["indexer_compress_cache"], args["indexer_compress_scale"], args["x"], args["slot_mapping"], 1)
    assert ei.value.param == "indexerCompressScale"                    # the aclnn call's own names
    assert "aclnnIndexerCompressEpilog" in str(ei.value) and "quantMode=1" in str(ei.value)


# ------------------------------------------------------------------ quant_mode 2 (hifloat8 cache)
@pytest.mark.parametrize("xdt", [np.float16, BF16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("attr", [1.0, 0.5, 3.0e-3, 1.0e6])
def test_hifloat8_mode(xdt, attr):
    """y = hif8(f32(x * scale)) per the kernel's VFProcessHifp8Quant (saturating CAST_ROUND), from the
    table-based reference of test_hifloat8; the scale array and skipped slots keep their old bytes."""
    from test_hifloat8 import ref_encode
    rng = np.random.default_rng(31)
    T, rows = 5, 7
    x = random_x(rng, T, xdt)
    x[0, :4] = [np.inf, -np.inf, np.nan, 0.0]
    cache = rng.integers(0, 256, (rows, D), dtype=np.uint8)
    scale = rng.standard_normal((rows, NB)).astype(np.float32)
    slots = np.array([4, -1, 0, 6, 2], np.int32)
    want_c, want_s = cache.copy(), scale.copy()
    with np.errstate(over="ignore", invalid="ignore"):
        q = (x.astype(np.float32) * np.float32(attr)).astype(np.float32)
    for i, s in enumerate(slots):
        if s >= 0:
            want_c[s] = ref_encode(q[i], saturate=True)
    npusim.indexer_compress_epilog(cache, scale, x, slots, quant_mode=2, scale=attr)
    assert_bitexact(cache, want_c)
    assert_bitexact(scale, want_s)
    assert cache[4, :4].tolist() == [0x6E, 0xEE, 0x00, 0x00]         # +-inf saturate, NaN -> 0


def test_hifloat8_mode_plan_and_aclnn():
    spec = dict(indexer_compress_cache=TensorSpec((8192, D), "uint8"),
                indexer_compress_scale=TensorSpec((8192, NB), "float32"),
                x=TensorSpec((8192, D), "bf16"), slot_mapping=TensorSpec((8192,), "int32"))
    assert npusim.make_plan("indexer_compress_epilog", **spec, quant_mode=2).tiling_key == 10011
    rng = np.random.default_rng(5)
    x = random_x(rng, 3, np.float16)
    cache, scale = np.zeros((3, D), np.uint8), np.zeros((3, NB), np.float32)
    ws, ex = npusim.aclnn.aclnnIndexerCompressEpilogGetWorkspaceSize(cache, scale, x, np.arange(3, dtype=np.int32),
                                                                      2, True, 0.25)
    assert ex.plan.tiling_key == 10001 and ex.plan.attrs["scale"] == 0.25
    npusim.aclnn.aclnnIndexerCompressEpilog(npusim.aclnn.workspace(ws), ws, ex)
    want = np.zeros_like(cache)
    npusim.indexer_compress_epilog(want, np.zeros_like(scale), x, np.arange(3, dtype=np.int32), quant_mode=2,
                                   scale=0.25)
    assert_bitexact(cache, want)
    assert not scale.any()


@pytest.mark.parametrize("quant_mode", [0, 1, 2])
def test_a_scale_attribute_past_float32_is_refused_and_outputs_stay(quant_mode):
    # the attribute is a float32: 2^128 - 2^103 and beyond round to inf (a Python int past float64 too), in every
    # mode; FLT_MAX itself, inf and nan are float32 values and pass the check (the NPU would take them too)
    cdt = np.uint8 if quant_mode == 2 else E4M3
    sdt = E8M0 if quant_mode == 0 else np.float32
    cache, scale = np.zeros((4, D), cdt), np.ones((4, NB), sdt)
    x, slots = np.ones((4, D), BF16), np.arange(4, dtype=np.int32)
    before = cache.tobytes(), scale.tobytes()
    for bad in (10**400, 1e300, -3.5e38, np.float64(1e39), 2.0**128 - 2.0**103):
        with pytest.raises(AclnnError, match="scale.*must fit a float32") as ei:
            npusim.indexer_compress_epilog(cache, scale, x, slots, quant_mode=quant_mode, scale=bad,
                                           product="ascend-950pr")
        assert ei.value.status == 161002
        with pytest.raises(AclnnError, match="must fit a float32"):
            npusim.aclnn.aclnnIndexerCompressEpilogGetWorkspaceSize(cache, scale, x, slots, quant_mode, True, bad,
                                                                      product="ascend-950pr")
    assert (cache.tobytes(), scale.tobytes()) == before
    for fine in (2.0**128 - 2.0**104, float("inf"), 0.5):
        npusim.make_plan("indexer_compress_epilog", indexer_compress_cache=cache, indexer_compress_scale=scale, x=x,
                         slot_mapping=slots, quant_mode=quant_mode, scale=fine, product="ascend-950pr")
