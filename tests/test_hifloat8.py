"""HiFloat8 (formats.cast(..., 'hifloat8') and formats.hifloat8_to_float32) against the published format.

The code table below is built from the format definition alone (Luo et al., "Ascend HiFloat8 Format for
Deep Learning", arXiv 2409.16626; field table in hicann/amct docs/zh/context/hifloat8_quantization.md and
hicann/asc-tools cpudebug/include/kernel_hif8.h), by enumerating the fields forward: sign, a prefix-coded
Dot, a sign-magnitude exponent with an implicit leading 1, and the remaining mantissa bits. The kernel
parses codes the other way round, so the two are independent.

Encoding is checked against a slow reference that picks the nearer of the two neighbouring representable
values on that table, ties away from zero (CAST_ROUND, the deterministic mode of asc_float2hif8 /
asc_half2hif8), with the documented overflow and NaN rules. en_dtypes (the package the vendor's own
DynamicQuantV2 golden uses for hifloat8) is a peer when installed.
"""
import numpy as np
import pytest

from npusim import formats
from npusim._kernels import casts as _casts
from npusim.testing import assert_bitexact

RNG = np.random.default_rng(9)
INF_CODE, NAN_CODE, MAX_CODE = 0x6F, 0x80, 0x6E


def definition_table():
    """code -> float64 value for all 256 codes, from the field definition."""
    table = {}
    # Dot prefix -> (D = exponent width, prefix length)
    dots = [("11", 4), ("10", 3), ("01", 2), ("001", 1), ("0001", 0)]
    for sign in (0, 1):
        for prefix, d in dots:
            w = 7 - len(prefix) - d                                  # mantissa bits left
            for ebits in range(1 << d):
                if d == 0:
                    e = 0
                else:
                    esign, low = ebits >> (d - 1), ebits & ((1 << (d - 1)) - 1)
                    e = (1 << (d - 1)) + low                         # implicit top bit of the magnitude
                    e = -e if esign else e
                for m in range(1 << w):
                    bits = f"{sign}{prefix}{ebits:0{d}b}{m:0{w}b}" if d else f"{sign}{prefix}{m:0{w}b}"
                    code = int(bits, 2)
                    v = (1 + m / (1 << w)) * 2.0 ** e
                    table[code] = -v if sign else v
        for m in range(8):                                           # denormal: Dot 0000
            code = (sign << 7) | m
            v = 2.0 ** (m - 23) if m else 0.0
            table[code] = -v if sign else v
    table[0x80] = np.nan                                             # S=1, DML, M=0
    table[0x6F], table[0xEF] = np.inf, -np.inf                       # D=4, E=+15, M=1
    assert sorted(table) == list(range(256))
    return table


TABLE = definition_table()
FINITE_POS = sorted((v, c) for c, v in TABLE.items() if np.isfinite(v) and v >= 0 and not (c & 0x80))
GRID = np.array([v for v, _ in FINITE_POS])
GRID_CODES = np.array([c for _, c in FINITE_POS], np.uint8)
VIRTUAL_NEXT = 1.5 * 2.0 ** 15                                       # the inf slot: where overflow begins


def test_table_facts():
    assert len(GRID) == 127 and GRID[0] == 0 and GRID[-1] == formats.HIFLOAT8_MAX == 32768
    assert np.all(np.diff(GRID) > 0)                                 # no two codes share a value
    assert TABLE[0x01] == 2.0 ** -22 and TABLE[0x07] == 2.0 ** -16 and TABLE[0x08] == 1.0
    # tapered precision: 3 mantissa bits for |e| <= 3, 2 for 4..7, 1 for 8..15
    assert TABLE[0x09] == 1.125 and 2.0 ** 7 * 1.75 in GRID and 2.0 ** 15 * 1.5 not in GRID


def test_every_code_decodes_to_the_definition():
    codes = np.arange(256, dtype=np.uint8)
    got = formats.hifloat8_to_float32(codes).astype(np.float64)
    want = np.array([TABLE[c] for c in range(256)])
    np.testing.assert_array_equal(got, want)                         # NaN positions compare equal
    assert formats.hifloat8_to_float32(codes.view(np.int8)).dtype == np.float32
    assert_bitexact(formats.cast(codes.view(np.uint8), "float32"), codes.astype(np.float32))   # uint8 stays an int


def ref_encode(x, saturate):
    """The slow reference: nearest grid value, ties away from zero, then the overflow / NaN rules."""
    with np.errstate(invalid="ignore"):
        v = np.asarray(x, np.float64).reshape(-1)
    out = np.empty(v.size, np.uint8)
    over = MAX_CODE if saturate else INF_CODE
    ext = np.append(GRID, VIRTUAL_NEXT)
    for i, xi in enumerate(v):
        if np.isnan(xi):
            out[i] = 0 if saturate else NAN_CODE
            continue
        a, sbit = abs(xi), 0x80 if xi < 0 else 0
        if a >= VIRTUAL_NEXT:
            out[i] = sbit | over
            continue
        j = np.searchsorted(ext, a, side="right") - 1               # ext[j] <= a < ext[j + 1]
        lo, hi = ext[j], ext[j + 1]
        pick = j if a < (lo + hi) / 2 else j + 1                     # the midpoint is exact in float64
        if pick == len(GRID):
            out[i] = sbit | over
        elif pick == 0:
            out[i] = 0                                               # no negative zero
        else:
            out[i] = sbit | GRID_CODES[pick]
    return out


def all_patterns(dtype):
    dt = formats.as_dtype(dtype)
    n = 1 << (8 * dt.itemsize)
    return np.arange(n, dtype={1: np.uint8, 2: np.uint16}[dt.itemsize]).view(dt)


def fp32_samples():
    mids = (GRID[:-1] + GRID[1:]) / 2
    edges = np.concatenate([GRID, mids, [VIRTUAL_NEXT, (GRID[-1] + VIRTUAL_NEXT) / 2, 2.0 ** 16, 2.0 ** -23,
                                         2.0 ** -24, 1e-30, 3e38]]).astype(np.float32)
    near = np.concatenate([edges, np.nextafter(edges, np.float32(0)), np.nextafter(edges, np.float32(np.inf))])
    rand = RNG.integers(0, 2 ** 32, 20_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    logn = (RNG.standard_normal(20_000) * np.exp2(RNG.integers(-26, 18, 20_000))).astype(np.float32)
    special = np.float32([0.0, -0.0, np.inf, -np.inf, np.nan])
    x = np.concatenate([near, rand, logn, special])
    return np.concatenate([x, -x])


@pytest.mark.parametrize("saturate", [True, False])
@pytest.mark.parametrize("source", ["float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"])
def test_encode_every_pattern(source, saturate):
    x = all_patterns(source)
    with np.errstate(invalid="ignore"):
        want = ref_encode(x.astype(np.float64), saturate)
    assert_bitexact(formats.cast(x, "hifloat8", saturate=saturate), want)


@pytest.mark.parametrize("saturate", [True, False])
def test_encode_fp32_and_fp64_samples(saturate):
    x = fp32_samples()
    assert_bitexact(formats.cast(x, "hifloat8", saturate=saturate), ref_encode(x, saturate))
    f = x[np.isfinite(x)].astype(np.float64)
    up = np.nextafter(f.astype(np.float32), np.float32(np.inf)).astype(np.float64)
    x64 = np.concatenate([f, (f + up) / 2, np.nextafter(GRID[1:] / 2 + GRID[:-1] / 2, 0)])[::3]
    assert_bitexact(formats.cast(x64, "hifloat8", saturate=saturate), ref_encode(x64, saturate))


def test_encode_decode_round_trip_and_documented_values():
    codes = np.array([c for c in range(256) if c not in (0x80, 0x6F, 0xEF)], np.uint8)
    assert_bitexact(formats.cast(formats.hifloat8_to_float32(codes), "hifloat8"), codes)
    x = np.float32([1.75, 1.0625, 15.5, 40959, 40960, 1e9, -1e9, np.inf, np.nan, -0.0, 2.0 ** -23, -2.0 ** -24])
    sat = formats.cast(x, "hifloat8")
    nosat = formats.cast(x, "hifloat8", saturate=False)
    # 1.75 is exact (asc-devkit Cast.md's example "1.75 -> 2" is copied from its integer rows); ties go away
    assert sat.tolist() == [0x0E, 0x09, 0x40, 0x6E, 0x6E, 0x6E, 0xEE, 0x6E, 0x00, 0x00, 0x01, 0x00]
    assert nosat.tolist() == [0x0E, 0x09, 0x40, 0x6E, 0x6F, 0x6F, 0xEF, 0x6F, 0x80, 0x00, 0x01, 0x00]


def test_generic_kernel_path_is_the_one_used():
    """hifloat8 always takes the double-precision routine: forcing it changes nothing."""
    x = fp32_samples()
    out = np.empty(x.size, np.uint8)
    _casts.cast_buffer(x.view(np.uint8), 0, out, 6, x.size, formats.ROUND_MODES["round"], True, True)
    assert_bitexact(out, formats.cast(x, "hifloat8"))


def test_api_errors():
    x = np.float32([1.0])
    with pytest.raises(ValueError, match="CAST_HYBRID"):
        formats.cast(x, "hifloat8", round_mode="rint")
    with pytest.raises(ValueError, match="stochastic"):
        formats.cast(x, "hif8", round_mode="hybrid")
    with pytest.raises(TypeError):
        formats.hifloat8_to_float32(np.float32([1.0]))
    assert formats.is_hifloat8("torch_npu.hifloat8") and not formats.is_hifloat8(np.uint8)
    assert formats.cast(np.zeros((2, 0), np.float16), "hifloat8").shape == (2, 0)


def test_matches_en_dtypes():
    """Peer: en_dtypes.hifloat8 (non-saturating astype; the vendor golden's hifloat8)."""
    en_dtypes = pytest.importorskip("en_dtypes")
    h = en_dtypes.hifloat8
    codes = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(formats.hifloat8_to_float32(codes), codes.view(h).astype(np.float32))
    for x in (all_patterns("float16").astype(np.float32), all_patterns("bfloat16").astype(np.float32),
              fp32_samples()):
        with np.errstate(invalid="ignore", over="ignore"):
            theirs = x.astype(h).view(np.uint8)
        assert_bitexact(formats.cast(x, "hifloat8", saturate=False), theirs)
