"""The predictions the README quotes are the model's: a model change that moves them fails here until the README
is updated (they drifted unnoticed before)."""
from pathlib import Path

import pytest

import perfmodel
from npusim.plan import TensorSpec as T

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def readme():
    if not README.is_file():
        pytest.skip("README.md is not beside the tests (an installed package)")
    return README.read_text(encoding="utf-8")


def _qmm(m, k, n, scale_dtype, **kw):
    return perfmodel.predict("npu_quant_matmul", "atlas-a2", x1=T((m, k), "int8"), x2=T((k, n), "int8"),
                             scale=T((n,), scale_dtype), output_dtype="float16", **kw)


def test_predict_example(readme):
    p = _qmm(1024, 7168, 4096, "float32")
    (qbmm, qbmm_us), (tqp, tqp_us) = p.kernels
    assert f"npu_quant_matmul on atlas-a2 (Ascend910B2): {p.latency_us:.1f} us" in readme
    assert f"{qbmm} {qbmm_us:.1f} us, {tqp} {tqp_us:.2f} us" in readme


def test_record_table_kernels_example(readme):
    (qbmm, qbmm_us), (tqp, tqp_us) = _qmm(1024, 4096, 4096, "float32").kernels
    assert f"{qbmm} {qbmm_us:.2f} + {tqp} {tqp_us:.2f}" in readme


def test_nz_weight_prose(readme):
    for m, k, n, decode in ((1, 7168, 7168, True), (1024, 4096, 4096, False)):
        nz, nd = (_qmm(m, k, n, "int64", x2_format=f).latency_us for f in ("NZ", "ND"))
        if decode:
            assert f"{nz:.1f} µs for a {m}×{k}×{n} decode ({nd:.1f} µs with an ND weight)" in readme
        else:
            assert f"{nz:.1f} µs for {m}×{k}×{n} ({nd:.1f} µs)" in readme


def test_record_example_total(readme):
    """The record example's launches, planned as the stand-in plans them (NZ weight, bf16 scale, per-token)."""
    k, n = 7168, 2048
    total = 0.0
    for tokens in (16, 16, 16, 4096):
        total += perfmodel.predict("npu_dynamic_quant", "atlas-a2", x=T((tokens, k), "bfloat16")).latency_us
        total += perfmodel.predict(
            "npu_quant_matmul", "atlas-a2", x1=T((tokens, k), "int8"), x2=T((k, n), "int8"),
            scale=T((n,), "bfloat16"), pertoken_scale=T((tokens,), "float32"), output_dtype="bfloat16",
            x2_format="NZ").latency_us
    assert f"8 launches on atlas-a2 (Ascend910B2): {total:.2f} us predicted in all" in readme


def test_grouped_matmul_nz_prose(readme):
    from perfmodel.ops import even_group_list
    for tokens in (16, 8192):
        nd, nz = (perfmodel.predict("grouped_matmul", "atlas-a2", x=T((tokens, 7168), "bfloat16"),
                                    weight=T((8, 7168, 2048), "bfloat16"), group_list=even_group_list(tokens, 8),
                                    weight_format=f).latency_us for f in ("ND", "NZ"))
        if tokens == 16:
            assert nd == nz and f"{nd:.1f} µs either way for\n16 tokens" in readme
        else:
            assert f"NZ gives {nz:.1f} µs, ND {nd:.1f} µs" in readme
