"""npusim.testing.assert_bitexact: what users put in their own unit tests."""
import warnings

import numpy as np
import pytest

from npusim import formats
from npusim.testing import assert_bitexact


def test_equal_arrays_pass():
    a = np.array([[1.0, -0.0, np.inf], [np.nan, 2.5, -np.inf]], np.float32)
    assert_bitexact(a, a.copy())
    assert_bitexact(a.astype(formats.bfloat16), a.astype(formats.bfloat16))
    assert_bitexact(np.arange(5, dtype=np.int8), np.arange(5, dtype=np.int8))
    assert_bitexact(np.zeros((0, 3), np.float16), np.zeros((0, 3), np.float16))
    assert_bitexact(a[:, ::2], np.ascontiguousarray(a[:, ::2]))          # layout does not matter


def test_nan_compares_by_bit_pattern():
    q = np.array([0x7FC00000], np.uint32).view(np.float32)
    q2 = np.array([0x7FC00001], np.uint32).view(np.float32)
    neg = np.array([0xFFC00000], np.uint32).view(np.float32)
    assert_bitexact(q, q.copy())
    for other in (q2, neg):
        with pytest.raises(AssertionError, match="0x7fc00000"):
            assert_bitexact(q, other)


def test_signalling_nan_and_infinities_report_without_warnings():
    """A signalling NaN widened to float64, and inf - inf, raise numpy's 'invalid' warning: the report must not
    (users run their tests with -W error)."""
    snan = np.array([0x7F800001, 0x3F800000], np.uint32).view(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AssertionError, match="1 differing pairs not both finite"):
            assert_bitexact(np.float32([np.inf, 1.0]), snan)
        with pytest.raises(AssertionError, match=r"largest finite \|actual - expected\| = 1 "):
            assert_bitexact(np.float32([np.inf, 2.0]), np.float32([-np.inf, 1.0]))


def test_signed_zero_differs():
    with pytest.raises(AssertionError, match="0x8000"):
        assert_bitexact(np.float16([0.0]), np.float16([-0.0]))


def test_mismatch_report():
    e = np.zeros((4, 5), np.float32)
    a = e.copy()
    a[1, 2] = 1.0
    a[3, 4] = -2.0
    with pytest.raises(AssertionError) as exc:
        assert_bitexact(a, e, err_msg="my op")
    msg = str(exc.value)
    assert msg.startswith("my op: ")
    assert "2 of 20 elements differ" in msg
    assert "at (1, 2)" in msg and "at (3, 4)" in msg
    assert "0x3f800000" in msg and "0xc0000000" in msg and "0x00000000" in msg
    assert msg.index("  at (1, 2)") < msg.index("  at (3, 4)")          # first indices first


def test_report_is_limited():
    a = np.arange(100, dtype=np.int16)
    with pytest.raises(AssertionError) as exc:
        assert_bitexact(a, a + 1, max_report=3)
    msg = str(exc.value)
    assert "100 of 100 elements differ" in msg
    assert msg.count("  at ") == 3


def test_dtype_mismatch():
    with pytest.raises(AssertionError, match="dtype differs: actual float32, expected bfloat16"):
        assert_bitexact(np.zeros(2, np.float32), np.zeros(2, formats.bfloat16))
    with pytest.raises(AssertionError, match="dtype"):
        assert_bitexact(np.zeros(2, np.int32), np.zeros(2, np.uint32))


def test_shape_mismatch():
    with pytest.raises(AssertionError, match=r"shape differs: actual \(2, 3\), expected \(3, 2\)"):
        assert_bitexact(np.zeros((2, 3)), np.zeros((3, 2)))


def test_fp8_values_in_report():
    a = np.array([1.0, 2.0], np.float32).astype(formats.float8_e4m3fn)
    b = np.array([1.0, 3.0], np.float32).astype(formats.float8_e4m3fn)
    with pytest.raises(AssertionError, match=r"(?s)1 of 2 elements differ.*\(0x40\).*\(0x44\)"):
        assert_bitexact(a, b)


def test_int4_compares_the_four_value_bits():
    """One int4 value per byte: a sign-extended byte (an NPU dump unpacked by one's own int8 code) holds the same
    value as npusim's low-nibble one (golden-reference probe finding 5: 'actual -1 (0xff), expected -1 (0x0f)')."""
    values = np.int8([[-7, 7, -1, 1, 0, -3, 3, 5]])
    ours = values.astype(formats.int4)
    assert_bitexact(values.view(formats.int4), ours)
    other = values.copy()
    other[0, 2] = 2
    with pytest.raises(AssertionError, match=r"1 of 8 elements differ.*at \(0, 2\)"):
        assert_bitexact(other.view(formats.int4), ours)


def test_report_names_the_largest_difference():
    e = np.zeros((3, 4), np.float32)
    a = e.copy()
    a[0, 1], a[2, 3], a[1, 1] = 1e-3, -5.0, np.nan
    with pytest.raises(AssertionError, match=r"largest finite \|actual - expected\| = 5 at \(2, 3\) "
                                             r"\(1 differing pairs not both finite\)"):
        assert_bitexact(a, e)
    with pytest.raises(AssertionError, match=r"elements differ \(100%\); 1 differing pairs not both finite; first"):
        assert_bitexact(np.float32([np.inf]), np.float32([1.0]))
    with pytest.raises(AssertionError) as exc:
        assert_bitexact(np.array([True, False]), np.array([True, True]))
    assert "largest" not in str(exc.value)


def test_contiguous_arrays_are_not_copied(monkeypatch):
    """Equal contiguous arrays are compared where they lie (it copied both: +2.25 GiB for two 1 GiB arrays)."""
    a = np.arange(1 << 16, dtype=np.float32)
    seen = []
    real = formats.bits
    monkeypatch.setattr(formats, "bits", lambda x: seen.append(x) or real(x))
    assert_bitexact(a, a.copy())
    assert np.shares_memory(seen[0], a)
