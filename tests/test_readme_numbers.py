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


def test_transposed_weight_on_950dt(readme):
    x1 = T((1, 7168), "int8")
    t, nd = (perfmodel.predict("npu_quant_matmul", "ascend-950dt", x1=x1, x2=x2, scale=T((576,), "float32"),
                               output_dtype="bfloat16") for x2 in (T((576, 7168), "int8").T, T((7168, 576), "int8")))
    assert (f"runs on ascend-950dt on {t.block_dim} cores ({t.latency_us:.1f} µs) with\n`w.T`, against "
            f"{nd.block_dim} cores ({nd.latency_us:.1f} µs)") in readme


def test_nz_mark_in_the_record_prose(readme):
    nd, nz = (perfmodel.predict("npu_quant_matmul", "atlas-a2", x1=T((16, 7168), "int8"), x2=T((7168, 2048), "int8"),
                                scale=T((2048,), "bfloat16"), pertoken_scale=T((16,), "float32"),
                                output_dtype="bfloat16", x2_format=f).latency_us for f in ("ND", "NZ"))
    assert f"predicted at {nd:.1f} µs, not {nz:.1f})" in readme


def test_fake_quant_prose(readme):
    def fq(shape, x_dt, s_dt, axis):
        return perfmodel.predict("fake_quantize_per_channel_affine_cachemask", "atlas-a2", x=T(shape, x_dt),
                                 scale=T((shape[axis],), s_dt), zero_point=T((shape[axis],), "int32"), axis=axis,
                                 quant_min=-128, quant_max=127)
    a0, a1 = fq((4096, 4096), "float32", "float32", 0), fq((4096, 4096), "float32", "float32", 1)
    transposes = sum(us for k, us in a1.kernels if k == "Transpose")
    assert (f"that is {a0.latency_us:.0f} µs\n  for axis 0 and {a1.latency_us:.0f} µs for axis 1, of which "
            f"{transposes:.0f} µs are the three Transposes") in readme
    h1, h0, f1, f0 = (fq((1, 7168), "float16", s, axis).latency_us
                      for s in ("float16", "float32") for axis in (1, 0))
    assert f"is predicted at {h1:.0f} µs, along axis 0 (one channel) at {h0:.1f} µs" in readme
    assert f"{f1:.0f} µs and {f0:.1f} µs)" in readme


def test_moe_routing_steps_and_310p_matmul(readme):
    from perfmodel.sweep import Point, build_args
    lat = {t: perfmodel.predict("moe_init_routing_quant", "atlas-a2",
                                **build_args(Point("moe_init_routing_quant", "atlas-a2", t, dtype="bfloat16"))).latency_us
           for t in (4, 7, 8)}
    assert f"({lat[7]:.1f} µs, against {lat[4]:.1f} µs at 4 and {lat[8]:.1f} µs at 8" in readme
    p = perfmodel.predict("npu_quant_matmul", "atlas-inference", x1=T((8192, 8192), "int8"),
                          x2=T((8192, 8192), "int8"), scale=T((8192,), "int64"), output_dtype="float16")
    assert f"takes {p.latency_us / 1000:.1f} ms" in readme


def test_quant_matmul_weight_copy_step_at_m_129(readme):
    # the README names the step where the weight's copies change (same cores, fewer µs), and sweeps ring it
    import pandas as pd
    from perfmodel.plots import _regimes

    def p(m):
        return perfmodel.predict("npu_quant_matmul", "atlas-a2", x1=T((m, 29568), "int8"), x2=T((29568, 8192), "int8"),
                                 scale=T((8192,), "float32"), pertoken_scale=T((m,), "float32"),
                                 output_dtype="bfloat16")
    a, b = p(128), p(129)
    assert a.block_dim == b.block_dim and b.latency_us < a.latency_us
    assert f"atlas-a2: {a.latency_us:.0f} µs, then {b.latency_us:.0f} µs" in readme
    assert f'("{b.tiles["variant"]}")' in readme and a.tiles["variant"] != b.tiles["variant"]
    line = pd.DataFrame({"tokens": [128, 129], "latency_us": [a.latency_us, b.latency_us],
                         "block_dim": [a.block_dim, b.block_dim], "tiling_key": [a.tiling_key, b.tiling_key],
                         "variant": [a.tiles["variant"], b.tiles["variant"]]})
    assert _regimes(line) == [(129, b.latency_us, b.tiles["variant"])]
