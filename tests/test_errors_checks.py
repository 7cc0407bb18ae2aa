"""npusim.errors (AclnnError, status codes, message) and the shared validation in npusim._checks."""
import numpy as np
import pytest

import npusim
from npusim import _checks, formats
from npusim.errors import ACLNN_ERR_PARAM_INVALID, ACLNN_ERR_PARAM_NULLPTR, AclnnError, invalid, nullptr

OP = "aclnnDemoOp"


def test_aclnn_error_is_value_error_with_status():
    # a RuntimeError too, as torch_npu raises a failed aclnn call (vllm-ascend tests catch RuntimeError)
    assert issubclass(AclnnError, ValueError) and issubclass(AclnnError, RuntimeError)
    assert npusim.AclnnError is AclnnError
    assert (ACLNN_ERR_PARAM_NULLPTR, ACLNN_ERR_PARAM_INVALID) == (161001, 161002)
    assert npusim.ACLNN_ERR_PARAM_INVALID == 161002


def test_invalid_message_names_op_param_rule_product():
    e = invalid(OP, "scale", "must be positive", "Ascend910B2")
    assert e.status == 161002 and (e.op, e.param, e.product) == (OP, "scale", "Ascend910B2")
    msg = str(e)
    for part in ["161002", OP, "scale", "must be positive", "Ascend910B2"]:
        assert part in msg


def test_nullptr():
    e = nullptr(OP, "x", "Ascend310P3")
    assert e.status == 161001
    assert "x" in str(e) and "None" in str(e) and OP in str(e) and "Ascend310P3" in str(e)
    with pytest.raises(ValueError):        # catchable as ValueError by users
        raise e


def test_bare_error():
    e = AclnnError("something", 561000)
    assert e.status == 561000 and "something" in str(e) and "561000" in str(e)


# ------------------------------------------------------------ _checks
def test_resolve_product():
    soc = _checks.resolve_product(OP, "910b4", ("atlas-a2", "atlas-a3"))
    assert soc.soc == "Ascend910B4"
    with pytest.raises(AclnnError) as exc:
        _checks.resolve_product(OP, "atlas-inference", ("atlas-a2", "atlas-a3"))
    e = exc.value
    assert e.status == 161002 and e.param == "product" and e.op == OP
    assert "atlas-a2" in str(e) and "Ascend310P3" in str(e)
    with pytest.raises(AclnnError) as exc:
        _checks.resolve_product(OP, "Ascend999", ("atlas-a2",))
    assert exc.value.status == 161002 and "valid names" in str(exc.value)


def test_tensor():
    a = _checks.tensor(OP, "x", [[1, 2], [3, 4]])
    assert isinstance(a, np.ndarray) and a.shape == (2, 2)
    assert _checks.tensor(OP, "x", None, optional=True) is None
    with pytest.raises(AclnnError) as exc:
        _checks.tensor(OP, "x", None, "atlas-a2")
    # named by its SoC, as every error raised after the product is resolved names it
    assert exc.value.status == 161001 and exc.value.param == "x" and "(product Ascend910B2)" in str(exc.value)
    with pytest.raises(AclnnError, match=r"\(product my-npu\)"):       # a name npusim does not know: as given
        _checks.tensor(OP, "x", None, "my-npu")
    with pytest.raises(AclnnError) as exc:
        _checks.tensor(OP, "x", [[1, 2], [3]])
    assert exc.value.status == 161002
    with pytest.raises(AclnnError):
        _checks.tensor(OP, "x", np.array([object()]))
    big = np.arange(4, dtype=">f4")
    got = _checks.tensor(OP, "x", big)
    assert got.dtype.byteorder in ("=", "<") and got.tolist() == [0.0, 1.0, 2.0, 3.0]


def test_dtype_in():
    x = np.zeros(3, formats.bfloat16)
    assert _checks.dtype_in(OP, "x", x, ("float16", "bf16")) == "bfloat16"
    with pytest.raises(AclnnError) as exc:
        _checks.dtype_in(OP, "x", np.zeros(3, np.float64), ("float16", "bfloat16"), "Ascend910B2")
    msg = str(exc.value)
    assert exc.value.status == 161002 and "float16, bfloat16" in msg and "float64" in msg and "Ascend910B2" in msg


def test_out_tensor():
    out = np.zeros((2, 3), np.int8)
    assert _checks.out_tensor(OP, "y", out, (2, 3), "int8") is out
    with pytest.raises(AclnnError) as exc:
        _checks.out_tensor(OP, "y", None, (2, 3), "int8")
    assert exc.value.status == 161001
    bad = [
        ([[0, 0, 0]], "numpy array"),
        (np.zeros((2, 3), np.int32), "dtype must be int8"),
        (np.zeros((3, 2), np.int8), "shape must be (2, 3)"),
    ]
    for arr, text in bad:
        with pytest.raises(AclnnError, match=text.replace("(", r"\(").replace(")", r"\)")):
            _checks.out_tensor(OP, "y", arr, (2, 3), "int8")
    ro = np.zeros((2, 3), np.int8)
    ro.flags.writeable = False
    with pytest.raises(AclnnError, match="writable"):
        _checks.out_tensor(OP, "y", ro, (2, 3), "int8")


def test_int_attr():
    assert _checks.int_attr(OP, "k", 3) == 3
    assert _checks.int_attr(OP, "k", np.int64(4)) == 4
    for v in [True, 2.0, "3", None]:
        with pytest.raises(AclnnError) as exc:
            _checks.int_attr(OP, "k", v)
        assert exc.value.status == 161002 and exc.value.param == "k"
