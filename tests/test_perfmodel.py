"""perfmodel: pipe costs and loop timelines on hand-checked numbers, sanity/monotonicity, roofline and
launch floors, every operator x product, clear errors, calibration round trip, the packaged calibration
set (read without ../shared) and the shipped fit's errors on it."""
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import perfmodel
from perfmodel import TensorSpec as T, ops
from perfmodel.calibration import Calibration, default_calibration
from perfmodel.fitting import fit, report
from perfmodel.hw import hardware
from perfmodel.model import Loop, Work, _write_hbm_fraction, combine
from perfmodel.predict import build_work

GIB = 2.0 ** 30


def op_args(op, product, n=1024):
    """Representative arguments of each operator on a product (rows = n tokens)."""
    coupled = product in ("atlas-training", "atlas-inference")
    if op == "npu_dynamic_quant":
        return dict(x=T((n, 4096), "float16"), **({} if coupled else {"smooth_scales": T((4096,), "float16")}))
    if op == "npu_dynamic_quant_asymmetric":
        return dict(x=T((n, 4096), "bfloat16"))
    if op == "indexer_compress_epilog":
        return dict(indexer_compress_cache=T((n, 4096), "float8_e4m3fn"), indexer_compress_scale=T((n, 32), "float32"),
                    x=T((n, 4096), "bfloat16"), slot_mapping=T((n,), "int32"))
    if op == "fake_quantize_per_channel_affine_cachemask":
        return dict(x=T((n, 1024), "float32"), scale=T((1024,), "float32"), zero_point=T((1024,), "int32"), axis=1,
                    quant_min=-128, quant_max=127)
    if op == "npu_quant_matmul":
        return dict(x1=T((n, 2048), "int8"), x2=T((2048, 1024), "int8"), scale=T((1024,), "float32"),
                    output_dtype="float16")
    if op == "npu_trans_quant_param":       # n channels' scales
        return dict(scale=T((n,), "float32"))
    if op == "moe_init_routing_quant":
        return dict(x=T((n, 1024), "float16"), row_idx=T((n, 4), "int32"), expert_idx=T((n, 4), "int32"),
                    active_num=n, scale=1.0, offset=0.0)
    if op in ("add", "maximum"):
        return dict(x=T((n, 4096), "float16"), y=T((n, 4096), "float16"))
    if op in ("sigmoid", "gelu", "sqrt"):
        return dict(x=T((n, 4096), "bfloat16"))
    if op == "matmul":
        return dict(a=T((n, 1024), "float16"), b=T((1024, 2048), "float16"))
    if op == "grouped_matmul":      # n rows over 8 experts, as routed tokens split unevenly
        ends = tuple(min(n, (n * (g + 1) * 3) // 16) for g in range(7)) + (n,)
        return dict(x=T((n, 1024), "bfloat16"), weight=T((8, 1024, 2048), "bfloat16"), group_list=ends)
    raise KeyError(op)


ALL_COMBOS = [(op, p) for op in perfmodel.OPERATORS for p in perfmodel.supported_products(op)]


# -- pipe costs on hand-checked numbers -------------------------------------------------------------------

def test_dma_cost_matches_mskpp_point():
    hw = hardware("Ascend910B2")                      # 1800 MHz, msKPP 910B1 tables
    # GM->UB 32 KiB = 77.2 GiB/s (Appendix A) + ATT load head 27.01 cycles
    want = 32768 / (77.2 * GIB) + 27.01 / 1.8e9
    assert hw.dma("gm_to_ub", 32768) == pytest.approx(want, rel=1e-12)
    # half way between the 32 KiB (77.2) and 33 KiB (76.1) points: time interpolated linearly
    t32, t33 = 32768 / (77.2 * GIB), 33792 / (76.1 * GIB)
    assert hw.dma("gm_to_ub", 33280) - 27.01 / 1.8e9 == pytest.approx((t32 + t33) / 2, rel=1e-12)
    # 8 KiB (42.7 GiB/s) would be faster than 7 KiB (37.0): the time is held non-decreasing in size
    assert hw.dma("gm_to_ub", 8192) == pytest.approx(hw.dma("gm_to_ub", 7168), rel=1e-12)
    # UB->GM 64 KiB = 110.7 GiB/s + store head 12.09 cycles, 3 copies
    assert hw.dma("ub_to_gm", 65536, 3) == pytest.approx(3 * (65536 / (110.7 * GIB) + 12.09 / 1.8e9), rel=1e-12)
    # a 100-byte copy is a 128-byte burst
    assert hw.dma("gm_to_ub", 100) == hw.dma("gm_to_ub", 128)


def test_a_curve_carried_to_a_chip_without_tables_keeps_its_per_transfer_latency():
    """310P/910A/310B have no msKPP tables: the 910B1 curves are carried to a new streaming rate keeping each
    size's time beyond streaming. msKPP's own tables show why: 910B3's GM->UB streams 2.4x faster than 910B1's, yet
    its 1-4 KiB copies are no faster. Carried to 910B3's top rate, 910B1's curve lands within 10% of the
    910B3 table there; scaling the whole curve made those copies twice too fast."""
    from perfmodel.hw import _dma_curves, streaming_rate_to
    curves = _dma_curves()
    b1, b3 = curves[("gm_to_ub", "910b1")], dict(curves[("gm_to_ub", "910b3")])
    carried = dict(streaming_rate_to(b1, b3[max(b3)] * GIB))
    for kib in (1, 2, 4):
        size = kib * 1024
        assert carried[size] == pytest.approx(b3[size], rel=0.1)
        assert dict(b1)[size] * b3[max(b3)] / b1[-1][1] > 1.9 * b3[size]      # the old, whole-curve scaling
    # a 1x4096x4096 int8 decode on 310P3 now streams its 16 MB weight at about half the DDR's 204.8 GB/s
    p = perfmodel.predict("npu_quant_matmul", "atlas-inference", x1=T((1, 4096), "int8"),
                          x2=T((4096, 4096), "int8"), scale=T((4096,), "int64"), output_dtype="float16")
    assert 80 < p.achieved_GBps < 205


def test_ini_rate_ratio_errors():
    """Why a chip without msKPP tables streams at 910B1's measured rate x (its INI rate x clock) / (910B1's),
    not at its INI rate x clock: on every chip with both, msKPP loads stream 1.4-4.8x above the INI figure
    (910B1, 910B3, 950), and on the two other chips the 910B1-relative rate lands closer on every load
    table (910B3 GM->UB, 950 GM->UB and GM->L1)."""
    from npusim.products import get_product
    from perfmodel.hw import PATHS, _dma_curves
    curves, b1 = _dma_curves(), get_product("Ascend910B1")
    for chip, soc in (("910b1", b1), ("910b3", get_product("Ascend910B3")), ("91095", get_product("Ascend950PR_9589"))):
        for path, (_pipe, table, field) in PATHS.items():
            if field != "ddr_rate" or (table, chip) not in curves:
                continue
            measured = curves[(table, chip)][-1][1] * GIB
            absolute = getattr(soc, field) * soc.cube_mhz * 1e6
            assert 1.4 < measured / absolute < 4.9, (chip, table)
            if chip != "910b1":
                ratio = curves[(table, "910b1")][-1][1] * GIB * absolute / (getattr(b1, field) * b1.cube_mhz * 1e6)
                assert abs(math.log(ratio / measured)) < abs(math.log(absolute / measured)), (chip, table)
    # and so the model carries them: 310P3's GM->L1 streams at 910B1's x (17 x 1060) / (32 x 1850)
    p3, big = get_product("Ascend310P3"), 1 << 24
    want = curves[("gm_to_l1", "910b1")][-1][1] * GIB * (17 * 1060) / (32 * 1850)
    assert (p3.ddr_rate, p3.cube_mhz, b1.ddr_rate, b1.cube_mhz) == (17, 1060, 32, 1850)
    assert big / hardware(p3).curves["gm_to_l1"].seconds(big) == pytest.approx(want, rel=0.02)


def test_vector_and_cube_costs():
    hw = hardware("Ascend910B2")
    assert hw.vec("add", "float16", 4096) == pytest.approx((0.0103 * 4096 + 22.5) / 1.8e9)
    assert hw.vec("reduce_max", "float32", 7168, 5) == pytest.approx(5 * (0.1094 * 7168 + 20.5) / 1.8e9)
    b1 = hardware("Ascend910B1")                      # 1850 MHz
    # 128x64x256 fp16 = 8*4*16 = 512 fractals, beyond the table: last efficiency 8074/8192
    assert b1.mmad(128, 64, 256, "float16") == pytest.approx(512 / (8074 / 8192) / 1.85e9)
    # int8 fractal 16x32x16: 128x128x256 int8 = 8*4*16 = 512 fractals too
    assert b1.mmad(128, 128, 256, "int8") == pytest.approx(512 / (8074 / 8192) / 1.85e9)
    assert b1.cube_peak_ops("float16") == pytest.approx(2 * 4096 * 24 * 1.85e9)


def test_op_heads_and_memory_peaks_from_hardware_md():
    # ATT v1 (HARDWARE.md sec. 4): op head 300 + VEC head 37.37 cycles at 1.8 GHz (910B2) on a vector
    # kernel, the op head alone on a cube kernel (1.8 GHz too); ATT v2 (950): op head 0, VF head 20, 1.65 GHz.
    # The MTE2/MTE3 heads are not added (the first transfers run on the measured curves), so the head does
    # not depend on the cores or the tile size.
    a2 = hardware("Ascend910B2")
    assert a2.head_seconds("aiv") == pytest.approx((300 + 37.37) / 1.8e9)
    assert a2.head_seconds("aic") == pytest.approx(300 / 1.8e9)
    assert hardware("ascend-950pr").head_seconds("aiv") == pytest.approx(20 / 1.65e9)
    # HBM peaks (HARDWARE.md sec. 1): A2 1.8 TB/s (Ascend C matmul docs), A3 ~1.6 TB/s per die (every
    # 910_93xx die), 950PR 1.6 TB/s, 950DT 4 TB/s, 310P3 204.8 GB/s
    assert hardware("Ascend910B1").hbm_peak_Bps == 1.8e12
    for soc in ("Ascend910_9391", "Ascend910_9392", "Ascend910_9381", "Ascend910_9382", "Ascend910_9372",
                "Ascend910_9362"):
        assert hardware(soc).hbm_peak_Bps == 1.6e12, soc
    assert hardware("atlas-a3").hbm_peak_Bps == 1.6e12
    assert hardware("ascend-950pr").hbm_peak_Bps == 1.6e12 and hardware("ascend-950dt").hbm_peak_Bps == 4.0e12
    assert hardware("atlas-inference").hbm_peak_Bps == pytest.approx(204.8e9)
    # L2 peaks [D] from the INI l2_rate (sec. 0): 110 B/cyc x 32 cores x 1.0 GHz (910A), 114 x 8 x 1.06 GHz
    # (310P3), 256 x 1 x 1.224 GHz (310B1)
    assert hardware("atlas-training").l2_peak_Bps == pytest.approx(110 * 32 * 1.0e9, rel=0.01)
    assert hardware("atlas-inference").l2_peak_Bps == pytest.approx(114 * 8 * 1.06e9, rel=0.001)
    assert hardware("atlas-200i-500-a2").l2_peak_Bps == pytest.approx(256 * 1.224e9, rel=0.005)


def _params(**over):
    p = dict(Calibration.defaults().params_for("a2a3"))
    p.update(launch_us=2.0, launch_per_core_us=0.0, vector_scale=1.0, dma_scale=1.0, barrier_cycles=0.0,
             scalar_read_cycles=0.0, load_latency_us=0.0)
    p.update(over)
    return p


def _one_loop(overlap, **kw):
    hw = hardware("Ascend910B2")
    lp = Loop(n=10, pipes={"mte2": 40e-6, "mte3": 20e-6, "vector": 10e-6}, overlap=overlap, **kw)
    return Work(hw=hw, core_type="aiv", block_dim=1, loops=[lp], bytes_read=0, bytes_written=0)


def test_loop_timelines_hand_checked():
    hw = hardware("Ascend910B2")
    head = 2.0 + hw.head_seconds("aiv") * 1e6
    # first iteration back to back (fill 70 us), then 9 at the period of each overlap rule
    cases = {"double": 70 + 9 * 40, "serial": 70 + 9 * (40 + 10), "none": 70 + 9 * 70,
             "early": 70 + 9 * max(40 + 2, 10, 20 + 3), "out1": 70 + 9 * max(40, 10 + 20),
             "in1out1": 70 + 9 * (10 + max(40, 20))}
    for overlap, body in cases.items():
        w = _one_loop(overlap, early=2e-6, late=3e-6)
        p = combine(w, _params(), "x", "atlas-a2")
        assert p.head_us == pytest.approx(head) and p.latency_us == pytest.approx(head + body), overlap
        assert p.pipes_us["mte2"] == pytest.approx(400) and p.bound == "memory"
    # a single-buffered load also waits for the GM latency under load: all of it with every AIV streaming, a
    # quarter with 12 of the 48; a continuing loop has no fill of its own
    for cores, lat in ((48, 1.5), (12, 1.5 * 12 / 48)):
        w = _one_loop("serial")
        w.block_dim = cores
        p = combine(w, _params(load_latency_us=1.5), "x", "atlas-a2")
        assert p.latency_us == pytest.approx(head + 70 + lat + 9 * (50 + lat)), cores
    w = _one_loop("double")
    w.loops.append(Loop(n=2, pipes={"mte2": 5e-6, "vector": 8e-6}, cont=True))
    assert combine(w, _params(), "x", "atlas-a2").latency_us == pytest.approx(head + 430 + 2 * 8)
    # dependent calls and scalar reads: cycles at the vector clock; scales multiply the table times
    w = _one_loop("double", barriers=900, scalar_reads=100)
    p = combine(w, _params(barrier_cycles=20, scalar_read_cycles=180, vector_scale=2.0), "x", "atlas-a2")
    v = 20 + (900 * 20 + 100 * 180) / 1.8e9 * 1e6                 # 20 + 20 = 40 us a pass
    assert p.pipes_us["vector"] == pytest.approx(10 * v)
    assert p.latency_us == pytest.approx(head + (40 + v + 20) + 9 * max(40, v))
    # launch: per core started, a kernel's own per-core cost where the calibration has one
    w = _one_loop("double")
    w.block_dim, w.kernel = 4, "K"
    p0 = combine(w, _params(launch_per_core_us=0.5), "x", "atlas-a2")
    p1 = combine(w, _params(launch_per_core_us=0.5, **{"launch_per_core_us@K": 1.0}), "x", "atlas-a2")
    assert p1.head_us - p0.head_us == pytest.approx(4 * 0.5)


def test_memory_contention_and_l2_write_absorption():
    hw = hardware("Ascend910B2")
    hbm, l2 = 1.8e12 * 0.5, 7e12 * 0.5
    p = _params(hbm_efficiency=0.5, l2_efficiency=0.5)
    # 48 cores each loading 1 MiB an iteration from HBM: the chip's share, not the core's own 40 us
    lp = Loop(n=1, pipes={"mte2": 1e-6}, read_bytes=2 ** 20, overlap="none")
    w = Work(hw=hw, core_type="aiv", block_dim=48, loops=[lp], bytes_read=48 * 2 ** 20, bytes_written=0)
    assert combine(w, p, "x", "atlas-a2").core_us == pytest.approx(48 * 2 ** 20 / hbm * 1e6)
    # the same from L2 (inputs already read once): the L2 rate
    w.hbm_read_fraction = 0.0
    assert combine(w, p, "x", "atlas-a2").core_us == pytest.approx(48 * 2 ** 20 / l2 * 1e6)
    # writes stay in L2 while they fit beside what the reads occupy (192 MiB on 910B2)
    st = Loop(n=1, pipes={"mte3": 1e-9}, write_bytes=2 ** 20, overlap="none")
    small = Work(hw=hw, core_type="aiv", block_dim=48, loops=[st], bytes_read=0, bytes_written=48 * 2 ** 20)
    big = Work(hw=hw, core_type="aiv", block_dim=48, loops=[st], bytes_read=300 * 2 ** 20,
               bytes_written=48 * 2 ** 20)
    assert combine(small, p, "x", "atlas-a2").core_us == pytest.approx(48 * 2 ** 20 / l2 * 1e6)
    assert combine(big, p, "x", "atlas-a2").core_us == pytest.approx(48 * 2 ** 20 / hbm * 1e6)


# -- every operator on every product ------------------------------------------------------------------

@pytest.mark.parametrize("op,product", ALL_COMBOS)
def test_every_op_every_product(op, product):
    p = perfmodel.predict(op, product, **op_args(op, product))
    hw = hardware(product)
    assert math.isfinite(p.latency_us) and p.latency_us > 0
    assert set(p.pipes_us) == {"mte1", "mte2", "mte3", "vector", "cube", "fixpipe", "scalar"}
    assert all(math.isfinite(v) and v >= 0 for v in p.pipes_us.values()) and max(p.pipes_us.values()) > 0
    assert p.bound in ("memory", "vector", "cube", "fixpipe", "scalar", "launch")
    # a pipe of the critical core is never busy longer than the loops it runs in
    assert max(p.pipes_us.values()) <= p.core_us * (1 + 1e-9), (p.pipes_us, p.core_us)
    assert p.block_dim >= 1 and p.bytes_read > 0 and p.bytes_written > 0
    # never faster than the roofline (reads must come from HBM; operations at the cube's peak) nor the launch floor
    params = perfmodel.calibration.default_calibration().params_for(hw.family)
    assert p.latency_us * 1e-6 >= p.bytes_read / hw.hbm_peak_Bps
    assert p.chip_us * 1e-6 >= p.bytes_read / hw.hbm_peak_Bps        # cold: every input byte comes from HBM once
    assert p.latency_us >= p.chip_us * (1 - 1e-9)                     # nor faster than its own HBM traffic
    if op in ("matmul", "npu_quant_matmul"):
        dt = "int8" if op == "npu_quant_matmul" else "float16"
        assert p.latency_us * 1e-6 >= p.flops / hw.cube_peak_ops(dt)
    assert p.latency_us >= params["launch_us"]
    row = p.to_row()
    assert row["latency_us"] == p.latency_us and "mte2_us" in row and row["soc"] == hw.soc.soc
    if p.plan is not None:
        assert p.tiling_key == p.plan.tiling_key and p.block_dim == p.plan.block_dim


@pytest.mark.parametrize("op", ["add", "maximum"])
def test_mixed_input_dtypes_are_refused_not_costed_at_xs_size(op):
    """aclnn casts a mixed pair first, with kernels of its own; costing y at x's element size was too fast."""
    with pytest.raises(ValueError, match=f"{op}: x and y must have the same dtype.*got bfloat16 and float32"):
        perfmodel.predict(op, "atlas-a2", x=T((4096, 7168), "bfloat16"), y=T((4096, 7168), "float32"))


def test_950_vector_epilogue_is_never_faster_than_its_hbm_writes():
    """Ascend 950's per-token quant matmul with K = 128 writes 940 MB of bf16, 7x its L2: both AIVs of each AIC
    store at once, so the stores share HBM among 64 vector cores (it once counted 32 and came out at 528 us,
    below its own 593 us of HBM traffic)."""
    p = perfmodel.predict("npu_quant_matmul", "ascend-950pr", x1=T((65536, 128), "int8"), x2=T((128, 7168), "int8"),
                          scale=T((7168,), "float32"), pertoken_scale=T((65536,), "float32"), output_dtype="bfloat16")
    assert p.bytes_written == 65536 * 7168 * 2 and p.latency_us >= p.chip_us


def test_pipes_within_the_loops_when_cores_drift():
    """A3 DynamicQuant 4096x7168 (an 'early' loop, cores drifting apart): its loads are busy for the core's own
    time; the chip's share bounds the period, not the pipe (it once reported mte2 above the loops' time)."""
    p = perfmodel.predict("npu_dynamic_quant", "atlas-a3", x=T((4096, 7168), "bfloat16"))
    assert max(p.pipes_us.values()) <= p.core_us


def test_an_epilogue_under_the_cube_does_not_add_its_pipes_to_the_cubes():
    """The per-token decode epilogue runs on the vector cores under the cube's loops (Loop.behind): those cores'
    MTE2/MTE3 are not the cube core's, so each pipe is the busier core's. Summed, A2 kv_b 128x512x32768 bf16
    per-token reported mte2 30.9 us inside 24.7 us of loops (capacity probe finding B6)."""
    from perfmodel.predict import build_work
    kv_b = dict(x1=T((128, 512), "int8"), x2=T((512, 32768), "int8"), scale=T((32768,), "bfloat16"),
                pertoken_scale=T((128,), "float32"), output_dtype="bfloat16")
    assert any(lp.behind for lp in build_work("npu_quant_matmul", "atlas-a2", **kv_b)[0].loops)
    p = perfmodel.predict("npu_quant_matmul", "atlas-a2", **kv_b)
    assert max(p.pipes_us.values()) <= p.core_us
    for op, product in ALL_COMBOS:
        for m in (1, 8, 128, 1024):
            for q in perfmodel.predict_many(op, product, [op_args(op, product, m)]):
                assert max(q.pipes_us.values()) <= q.core_us * (1 + 1e-12), (op, product, m, q.pipes_us, q.core_us)


def test_quant_matmul_start_follows_the_kernel_template():
    """Ascend 950's cube template (fp16 output, no per-token scale: AIC only) builds no Matmul API object and
    starts on the family's launch costs; its mix template (bf16 output) and every A2 template do build one
    and take the Matmul-API start fitted on GroupedMatmul and QuantBatchMatmulV3."""
    def work(product, out):
        w, _ = build_work("npu_quant_matmul", product, x1=T((32, 256), "int8"), x2=T((256, 512), "int8"),
                          scale=T((512,), "float32"), output_dtype=out)
        return w
    cube, mix = work("ascend-950pr", "float16"), work("ascend-950pr", "bfloat16")
    assert cube.core_type != "mix" and cube.launch_class == ""
    assert mix.core_type == "mix" and mix.launch_class == ops.MATMUL_API
    assert work("atlas-a2", "float16").launch_class == work("atlas-a2", "bfloat16").launch_class == ops.MATMUL_API

    def head(out, scale):     # an int64 scale: no TransQuantParamV2 launch (and its start) before the matmul
        return perfmodel.predict("npu_quant_matmul", "ascend-950pr", x1=T((32, 256), "int8"),
                                 x2=T((256, 512), "int8"), scale=T((512,), scale), output_dtype=out).head_us
    assert head("float16", "int64") < head("bfloat16", "float32") - 2.0      # the shipped fit: 2.0 us against 5.5


def test_unsupported_combinations_are_clear_errors():
    with pytest.raises(ValueError, match="does not run on atlas-a2"):
        perfmodel.predict("indexer_compress_epilog", "atlas-a2", **op_args("indexer_compress_epilog", "atlas-a2"))
    with pytest.raises(ValueError, match="does not run on ascend-950pr"):
        perfmodel.predict("moe_init_routing_quant", "ascend-950pr", **op_args("moe_init_routing_quant", "x"))
    with pytest.raises(ValueError, match="unknown operator"):
        perfmodel.predict("softmax", "atlas-a2")
    # the seed's module: what its forward launches, and how to cost it
    with pytest.raises(ValueError, match=r"torch_npu module.*npu_quant_matmul.*npu_trans_quant_param.*record"):
        perfmodel.predict("LinearA8W8Quant", "atlas-inference")
    with pytest.raises(ValueError, match="unknown product"):
        perfmodel.predict("add", "h100", **op_args("add", "x"))
    with pytest.raises(ValueError, match="float16 or bfloat16"):
        perfmodel.predict("matmul", a=T((16, 16), "float32"), b=T((16, 16), "float32"))
    assert perfmodel.supported_products("moe_init_routing_quant") == ["atlas-a2", "atlas-a3"]


def test_arrays_accepted_like_specs():
    x = np.zeros((64, 256), np.float16)
    a = perfmodel.predict("npu_dynamic_quant", "atlas-a2", x=x)
    b = perfmodel.predict("npu_dynamic_quant", "atlas-a2", x=T((64, 256), "float16"))
    assert a.latency_us == b.latency_us and a.tiles == b.tiles


def test_dtype_options_may_be_numpy_and_ml_dtypes_types():
    """np.int8 and ml_dtypes.bfloat16 are classes with shape and dtype attributes: options, not tensors."""
    import ml_dtypes
    x = T((16, 7168), "bfloat16")
    assert (perfmodel.predict("npu_dynamic_quant", "atlas-a2", x=x, dst_type=np.int8).latency_us
            == perfmodel.predict("npu_dynamic_quant", "atlas-a2", x=x, dst_type="int8").latency_us)
    qmm = dict(x1=T((16, 7168), "int8"), x2=T((7168, 256), "int8"), scale=T((256,), "float32"),
               pertoken_scale=T((16,), "float32"))
    assert (perfmodel.predict("npu_quant_matmul", "atlas-a2", output_dtype=ml_dtypes.bfloat16, **qmm).latency_us
            == perfmodel.predict("npu_quant_matmul", "atlas-a2", output_dtype="bfloat16", **qmm).latency_us)


# -- sanity and monotonicity -------------------------------------------------------------------------------

def _regime(p):
    """The launch's tiling regime: key, cores, for moe routing the gather split (the vendor kernel changes its
    loop structure there: SPLIT_K copies every source row on every core, SPLIT_N one each) and the cores that
    sort (each sorts less when there are more, with one more merge stage after), a cube kernel's base
    block (a GEMV's one fractal row streams its weight differently) and the named kernel variant (the quant
    matmul's weight copies: past L2 one k-step at a time up to M = 128)."""
    gather = p.tiles.get("gather") if isinstance(p.tiles.get("gather"), dict) else {}
    vbs = p.tiles.get("vbs") if isinstance(p.tiles.get("vbs"), dict) else {}
    return (p.tiling_key, p.block_dim, gather.get("split"), vbs.get("needCoreNum"), p.tiles.get("base_m"),
            p.tiles.get("base_n"), p.tiles.get("variant"))


TOKENS_DENSE = sorted(set(range(1, 70)) | {96, 97, 100, 127, 128, 129, 255, 256, 257, 511, 512, 513, 1000, 1024, 2047,
                                           2048, 2049, 3000, 4096, 5000, 8191, 8192})


@pytest.mark.parametrize("op,product", ALL_COMBOS)
def test_more_tokens_never_faster_within_a_regime(op, product):
    preds = perfmodel.predict_many(op, product, [op_args(op, product, n) for n in TOKENS_DENSE])
    for (n0, a), (n1, b) in zip(zip(TOKENS_DENSE, preds), zip(TOKENS_DENSE[1:], preds[1:])):
        if _regime(a) == _regime(b):
            assert b.latency_us >= a.latency_us * (1 - 1e-9), (n0, n1, a.latency_us, b.latency_us, _regime(a))


@pytest.mark.parametrize("op,product", [("add", "atlas-a2"), ("add", "atlas-inference"), ("matmul", "atlas-a2"),
                                        ("matmul", "ascend-950pr"), ("npu_dynamic_quant", "atlas-a2"),
                                        ("npu_dynamic_quant", "ascend-950pr"),
                                        ("npu_dynamic_quant_asymmetric", "atlas-a2"),
                                        ("indexer_compress_epilog", "ascend-950dt"),
                                        ("fake_quantize_per_channel_affine_cachemask", "atlas-a2"),
                                        ("npu_quant_matmul", "atlas-a2"), ("moe_init_routing_quant", "atlas-a2")])
def test_more_tokens_never_faster(op, product):
    # moe routing runs on one core while n*k <= 32 (vendor tiling): 8 tokens x top-4 on 1 core may
    # legitimately take longer than 48 tokens on 48 cores, so its sizes start past that regime. The quant
    # matmul streams the weight past L2 while M <= baseM (128), one block per 256 columns (4 cores here):
    # 100 tokens there may take longer than 512 on 16 cores, so its sizes are checked on each side
    ns = (1, 2, 8, 48, 100, 512, 2048, 8192) if op != "moe_init_routing_quant" else (9, 48, 100, 512, 2048, 8192)
    sides = [ns] if op != "npu_quant_matmul" else [(1, 2, 8, 48, 100, 128), (129, 512, 2048, 8192)]
    for side in sides:
        lat = [perfmodel.predict(op, product, **op_args(op, product, n)).latency_us for n in side]
        assert all(b >= a * (1 - 1e-9) for a, b in zip(lat, lat[1:])), (side, lat)


def test_moe_routing_scatter_and_gather_follow_the_plan():
    """The expanded_row_idx scatter is split over the src_to_dst cores and the gather over the gather
    tiling's cores, not over the sort's needCoreNum, which jumps 4 -> 16 between these sizes: there only the
    sort changes (each core sorts a quarter as much, then one more merge stage), so the latency moves by
    less than 5%, and it never falls as n grows on either side."""
    def moe(n):
        return perfmodel.predict("moe_init_routing_quant", "atlas-a2", x=T((n, 128), "float16"),
                                 row_idx=T((n, 8), "int32"), expert_idx=T((n, 8), "int32"), active_num=n)
    preds = [moe(n) for n in range(2400, 3801, 100)]
    sorters = [p.tiles["vbs"]["needCoreNum"] for p in preds]
    assert sorters[0] == 4 and sorters[-1] == 16
    jump = sorters.index(16)
    for side in (preds[:jump], preds[jump:]):
        assert len({_regime(p) for p in side}) == 1
        lat = [p.latency_us for p in side]
        assert all(b >= a for a, b in zip(lat, lat[1:])), lat
    assert preds[jump].latency_us == pytest.approx(preds[jump - 1].latency_us, rel=0.05)


def test_moe_routing_scalar_sets_up_every_scattered_store():
    """moe_quant_src_to_dst_op.h stores each expanded row index, and moe_quant_gather_out.h each quantized row
    at its destination, behind a GetValue of the index, the offset arithmetic and an S->MTE3 flag: the
    critical core's scalar time is scalar_element_cycles for each of its src_to_dst rows and for each gather
    store (its blocks of perCorePerLoopRows rows, k stores a row in each column tile), and grows with k at the
    same tokens."""
    def moe(k):
        n = 4096
        return perfmodel.predict("moe_init_routing_quant", "atlas-a2", x=T((n, 7168), "float16"),
                                 row_idx=T((n, k), "int32"), expert_idx=T((n, k), "int32"), active_num=n * k)
    p = moe(8)
    s2d, g = p.tiles["src_to_dst"], p.tiles["gather"]
    assert g["split"] == "n" and g["perCoreK"] == 8
    assert g["colsLoops"] == 2          # 7168 columns in tiles of at most 4094: each row is stored twice
    gather_stores = -(-g["perCoreRows"] // g["perCorePerLoopRows"]) * g["perCorePerLoopRows"] * 8 * g["colsLoops"]
    cycles = default_calibration().params_for("a2a3")["scalar_element_cycles"]
    hz = hardware("atlas-a2").vec_hz
    assert p.pipes_us["scalar"] == pytest.approx((s2d["perCoreRows"] + gather_stores) * cycles / hz * 1e6, rel=1e-9)
    assert moe(4).pipes_us["scalar"] < p.pipes_us["scalar"]


def _exhausted_suspension_merge(runs, chunk=1024):
    """Iterations of moe_quant_mrgsort.h's merge, slowly: every iteration takes up to `chunk` of what is left
    of each run, merges them (equal keys: the lower run first) and stops as soon as one of those chunks is
    used up; what it did not take is loaded again next time."""
    offs, its = [0] * len(runs), 0
    while any(o < len(r) for o, r in zip(offs, runs)):
        live = [i for i, r in enumerate(runs) if offs[i] < len(r)]
        ends = {i: min(offs[i] + chunk, len(runs[i])) for i in live}
        pos = {i: offs[i] for i in live}
        if len(live) == 1:               # a lone run is copied a chunk at a time
            pos[live[0]] = ends[live[0]]
        else:
            while all(pos[i] < ends[i] for i in live):
                i = min(live, key=lambda j: (runs[j][pos[j]], j))
                pos[i] += 1
        for i in live:
            offs[i] = pos[i]
        its += 1
    return its


@pytest.mark.parametrize("elements,lists,experts", [(8192, 4, 256), (32768, 4, 256), (32768, 4, 128),
                                                     (6144, 3, 448), (16384, 2, 64), (65536, 4, 256)])
def test_moe_merge_iterations_match_a_simulated_merge_of_random_routing(elements, lists, experts):
    """An exhausted-suspension MrgSort iteration yields less than the 4 x 1024 pairs it loads; the model's
    iteration count (MOE_MERGE_YIELD, and one more per run that ends early) is within 15% of the vendor's
    merge loop run on uniform random expert ids (of enough experts that one expert's pairs in a run are fewer
    than a chunk: with 8 experts, 32768 pairs take 22 iterations, not 12, as every chunk is one expert's)."""
    rng = np.random.default_rng(elements + lists)
    runs = [np.sort(rng.integers(0, experts, elements // lists)).tolist() for _ in range(lists)]
    simulated = _exhausted_suspension_merge(runs)
    assert ops.moe_merge_iterations(elements, lists) == pytest.approx(simulated, rel=0.15)
    assert simulated > elements / (1024 * lists)       # more than the chunks' count: no iteration takes all


def test_moe_routing_shows_its_merge_iterations():
    """The prediction's tiles list each merge stage's MrgSort iterations: 4096 tokens x top-8 on A2 sort on
    16 cores (2048 pairs each, one UB pass: copied), merge 4 runs at a time on 4 cores, then 4 on core 0."""
    p = perfmodel.predict("moe_init_routing_quant", "atlas-a2", x=T((4096, 2048), "float16"),
                          row_idx=T((4096, 8), "int32"), expert_idx=T((4096, 8), "int32"), active_num=4096)
    assert p.tiles["vbs"]["needCoreNum"] == 16 and p.tiles["vbs"]["perCoreLoops"] == 1
    assert p.tiles["merge_iterations"] == [ops.moe_merge_iterations(2048, 1), ops.moe_merge_iterations(8192, 4),
                                           ops.moe_merge_iterations(32768, 4)] == [2, 6, 12]


def test_moe_routing_bf16_gather_rounds_through_int32():
    """moe_quant_gather_out.h quantizes bf16 rows as bf16 -> fp32 -> fp16, Muls, Adds, then fp16 -> int32 (rint)
    -> fp16 -> int8: seven vector calls where fp16 rows take three (Muls, Adds, Cast), so the same rows cost
    bf16 more than twice the vector time of fp16 (the sort and scatter, the same for both, are small here)."""
    def moe(dt):
        n = 4096
        return perfmodel.predict("moe_init_routing_quant", "atlas-a2", x=T((n, 7168), dt),
                                 row_idx=T((n, 8), "int32"), expert_idx=T((n, 8), "int32"), active_num=n * 8)
    bf16, fp16 = moe("bfloat16"), moe("float16")
    assert bf16.tiles["gather"]["split"] == "n"
    assert bf16.pipes_us["vector"] > 2 * fp16.pipes_us["vector"]


def _fake_quant(x_dt, scale_dt, shape=(4096, 4096), axis=0, product="atlas-a2"):
    c = shape[axis]
    return perfmodel.predict("fake_quantize_per_channel_affine_cachemask", product, x=T(shape, x_dt),
                             scale=T((c,), scale_dt), zero_point=T((c,), "int32"), axis=axis,
                             quant_min=-128, quant_max=127)


def test_fake_quant_launches_what_its_aclnn_call_launches():
    """aclnn_fake_quant_per_channel_affine_cachemask.cpp: Cast self and scale to the promoted dtype, move axis
    to 0 with a Transpose and back (out and mask), Cast out to its dtype; each is a launch of its own, and
    the bytes they move add up (worked out here from that sequence, n elements, c channels)."""
    n, c = 4096 * 4096, 4096
    names = lambda p: [k for k, _ in p.kernels]                         # noqa: E731
    plain = _fake_quant("float32", "float32")
    assert names(plain) == ["FakeQuantAffineCachemask"]
    assert (plain.bytes_read, plain.bytes_written) == (4 * n + 8 * c, 5 * n)    # x, scale, zp in; out, mask out
    moved = _fake_quant("float32", "float32", axis=1)
    assert names(moved) == ["FakeQuantAffineCachemask", "Transpose", "Transpose", "Transpose"]
    # + x there (4n), out back (4n), mask back (n)
    assert (moved.bytes_read, moved.bytes_written) == (13 * n + 8 * c, 14 * n)
    assert moved.latency_us == pytest.approx(sum(us for _, us in moved.kernels))
    assert moved.kernels[0][1] == pytest.approx(plain.latency_us)       # the kernel itself runs the same
    hbm = hardware("Ascend910B2").hbm_peak_Bps
    # they read 9n bytes, cold from HBM (what they write may stay in L2): never faster than that
    assert (moved.latency_us - plain.latency_us) * 1e-6 > 9 * n / hbm
    # fp16 x with a float32 scale runs the float32 kernel between two Casts: x up (2n in, 4n out), out down
    widened = _fake_quant("float16", "float32")
    assert names(widened) == ["FakeQuantAffineCachemask", "Cast", "Cast"] and widened.tiling_key == 1
    assert (widened.bytes_read, widened.bytes_written) == (4 * n + 8 * c + 2 * n + 4 * n, 5 * n + 4 * n + 2 * n)
    # a float16 scale with float32 x: only the scale is cast; both float16: the fp16 kernel alone
    assert names(_fake_quant("float32", "float16")) == ["FakeQuantAffineCachemask", "Cast"]
    both = _fake_quant("float16", "float16")
    assert names(both) == ["FakeQuantAffineCachemask"] and both.tiling_key == 2
    # a middle axis keeps runs of 16 elements contiguous; the last axis keeps none: both are moved
    for axis in (1, 2):
        assert names(_fake_quant("float32", "float32", (4, 8, 16), axis)).count("Transpose") == 3
    # an empty self: the aclnn call returns before any launch, whatever the dtypes and axis ask for
    for shape, axis, x_dt in (((0, 128), 1, "float16"), ((4, 0), 0, "float32"), ((0,), 0, "float32")):
        empty = _fake_quant(x_dt, "float32", shape, axis)
        assert (empty.latency_us, empty.kernels, empty.block_dim, empty.bound) == (0.0, [], 0, "none")
        assert (empty.bytes_read, empty.bytes_written, empty.head_us) == (0, 0, 0.0)
        assert set(empty.pipes_us.values()) == {0.0}
        assert perfmodel.predict_many("fake_quantize_per_channel_affine_cachemask", "atlas-a2", [dict(
            x=T(shape, x_dt), scale=T((shape[axis],), "float32"), zero_point=T((shape[axis],), "int32"),
            axis=axis, quant_min=-128, quant_max=127)])[0].latency_us == 0.0
    # one element still launches the kernel
    assert _fake_quant("float32", "float32", (1,), 0).kernels[0][0] == "FakeQuantAffineCachemask"


def test_fake_quant_kernel_overlaps_nothing_and_computes_whole_tiles():
    """fake_quant_affine_cachemask_fp32.h: PipeBarrier<PIPE_ALL> after each tile's load, Compute and store,
    so the pipes add up; and Compute runs over tileLength even on a channel's last, shorter tile, so a
    channel of one element costs the vector as much as a channel of a whole tile (48 channels, one a core)."""
    full = _fake_quant("float32", "float32", (48, 2752))
    assert full.tiles["tileLength"] == 2752
    one = _fake_quant("float32", "float32", (48, 1))
    assert one.pipes_us["vector"] == pytest.approx(full.pipes_us["vector"])
    assert one.pipes_us["mte2"] < full.pipes_us["mte2"]
    p = _fake_quant("float32", "float32")
    assert p.core_us == pytest.approx(p.pipes_us["mte2"] + p.pipes_us["vector"] + p.pipes_us["mte3"], rel=0.02)


def test_dynamic_quant_db_kernel_computes_the_scale_on_the_vector_unit():
    """dynamic_quant_db.h (keys 2/3) forms each row's scale with Brcb, Div and Mul on the vector unit, and its
    one output buffer makes a pass wait for the previous store ('out1'); dynamic_quant.h (keys 0/1) reads the
    row max back into the scalar unit, once a row."""
    db, _ = build_work("npu_dynamic_quant", "atlas-a2", x=T((1023, 1023), "float16"))
    assert db.tiling_key == 3 and all(lp.scalar_reads == 0 and lp.overlap == "out1" for lp in db.loops)
    row, _ = build_work("npu_dynamic_quant", "atlas-a2", x=T((8192, 16384), "bfloat16"))
    assert row.tiling_key == 0
    assert all(lp.scalar_reads == row.tiles["multiRowNumHeadCore"] for lp in row.loops if lp.n >= 1)


def test_dynamic_quant_single_row_and_moe_kernels_release_their_buffers_as_written():
    """dynamic_quant_single_row.h (key 100) frees its input only after the scale's Mul, dynamic_quant_multi_row.h
    (key 10) right after the first Cast: the next pass's load waits for most of a key-100 pass's vector work
    and for little of a key-10 pass's. dynamic_quant_moe.h (key 7) has one-deep queues and reloads the
    expert's smooth row every pass."""
    single, _ = build_work("npu_dynamic_quant", "atlas-a2", x=T((384, 4096), "bfloat16"))
    multi, _ = build_work("npu_dynamic_quant", "atlas-a2", x=T((4096, 4096), "bfloat16"))
    assert (single.tiling_key, multi.tiling_key) == (100, 10)
    assert all(lp.early > 0.6 * lp.pipes["vector"] for lp in single.loops)
    assert all(lp.early < 0.2 * lp.pipes["vector"] for lp in multi.loops)
    moe, _ = build_work("npu_dynamic_quant", "atlas-a2", x=T((1024, 7168), "bfloat16"),
                        smooth_scales=T((8, 7168), "bfloat16"), group_index=T((8,), "int32"))
    assert moe.tiling_key == 7 and all(lp.overlap == "in1out1" for lp in moe.loops)
    rows = moe.tiles["multiRowNumHeadCore"]
    assert moe.loops[0].read_bytes == (rows + 1) * 7168 * 2


def test_dynamic_quant_rows_longer_than_ub_are_read_twice():
    """Key 6 (dynamic_quant_large_shape_opt.h) takes a row's max chunk by chunk, then loads every chunk again
    to quantize it; key 8 (the MoE variant) loads its tail chunk once and a smooth chunk beside every x
    chunk. 64 rows of 65536 bf16: two rows on the critical core, each read twice."""
    w, _ = build_work("npu_dynamic_quant", "atlas-a2", x=T((64, 65536), "bfloat16"))
    assert w.tiling_key == 6 and w.tiles["rows_per_core"] == 2
    assert sum(lp.n * lp.read_bytes for lp in w.loops) == 2 * 2 * 65536 * 2
    moe, _ = build_work("npu_dynamic_quant", "atlas-a2", x=T((64, 32768), "bfloat16"),
                        smooth_scales=T((4, 32768), "bfloat16"), group_index=T((4,), "int32"))
    tail = moe.tiles["innerLoopTail"]
    assert moe.tiling_key == 8 and tail > 0
    assert sum(lp.n * lp.read_bytes for lp in moe.loops) == 2 * 2 * (2 * 32768 - tail) * 2


def test_dynamic_quant_310p_hands_out_whole_passes():
    """dynamic_quant_tiling_310P.cpp deals whole passes of numCopyRow rows to the cores: 8 rows of 4096 are one
    pass on one core, 16 rows two passes on two cores, so both take about as long, and 9 rows (a pass and a
    one-row tail on the last core) no longer. 4096 rows are 512 passes, 64 on each of the 8 cores."""
    def dq(n, h=4096):
        return perfmodel.predict("npu_dynamic_quant", "atlas-inference", x=T((n, h), "float16"))
    eight, sixteen, nine = dq(8), dq(16), dq(9)
    assert eight.tiles["numCopyRow"] == 8 and eight.tiles["numHeadCore"] == 1
    assert eight.latency_us == pytest.approx(sixteen.latency_us, rel=0.05)
    assert nine.latency_us == pytest.approx(eight.latency_us, rel=0.05)
    assert dq(1).latency_us < 0.6 * eight.latency_us
    # wide rows (H > 4096, key 11001) are loaded twice, the row max chunk by chunk and then row chunk by row
    # chunk: rows twice as long as 4096, loaded twice (one 8-row pass a core either way), so more than 4x
    wide = dq(64, 8192)
    assert wide.tiling_key == 11001
    assert wide.pipes_us["mte2"] > 4 * dq(64, 4096).pipes_us["mte2"]


def test_indexer_vector_work_follows_each_quant_modes_vector_function():
    """indexer_compress_epilog_base.h: the fp8 block quant (mode 1) guards every element against inf/NaN
    before and after its Div, MX (mode 0) clamps instead, hifloat8 (mode 2) only casts and scales: the
    vector time of the same rows orders 2 < 0 < 1, and mode 2 does well under half of mode 1's work."""
    def vector(mode):
        t = 1024
        p = perfmodel.predict("indexer_compress_epilog", "ascend-950pr",
                              indexer_compress_cache=T((t, 4096), "uint8" if mode == 2 else "float8_e4m3fn"),
                              indexer_compress_scale=T((t, 32), "float8_e8m0" if mode == 0 else "float32"),
                              x=T((t, 4096), "bfloat16"), slot_mapping=T((t,), "int32"), quant_mode=mode)
        return p.pipes_us["vector"]
    assert vector(2) < vector(0) < vector(1)
    assert vector(2) < 0.5 * vector(1)


def test_fake_quant_cores_take_whole_channels():
    """The kernel deals whole channels to the cores: 49 channels on 48 AIV leave one core with two, so the
    critical core does about twice the work of 48 channels, though the tensor is only 2% larger."""
    one = _fake_quant("float32", "float32", (48, 1 << 16))
    two = _fake_quant("float32", "float32", (49, 1 << 16))
    assert one.tiles["channels_per_core_max"] == 1 and two.tiles["channels_per_core_max"] == 2
    assert two.core_us > 1.6 * one.core_us


def test_more_cores_faster_until_the_chip_is_saturated():
    x = T((4096, 4096), "float16")
    lat = [perfmodel.predict("add", "atlas-a2", x=x, y=x, block_dim=c).latency_us for c in (1, 2, 4, 8, 16, 32, 48)]
    assert all(b <= a * (1 + 1e-9) for a, b in zip(lat[:5], lat[1:5])), lat
    assert lat[0] / lat[-1] > 5                                   # it does scale,
    assert lat[-1] < 1.1 * min(lat)                               # and past saturation only the launch grows


def test_tiny_kernel_is_launch_bound_and_big_add_memory_bound():
    assert perfmodel.predict("add", x=T((16,), "float16"), y=T((16,), "float16")).bound == "launch"
    p = perfmodel.predict("add", x=T((8192, 8192), "float16"), y=T((8192, 8192), "float16"))
    assert p.bound == "memory" and 1000 < p.achieved_GBps < 1800
    m = perfmodel.predict("matmul", "Ascend910B1", a=T((8192, 8192), "float16"), b=T((8192, 8192), "float16"))
    assert 200 < m.achieved_TOPS < 364
    # the sample's measured pipe times (HARDWARE.md sec. 7.2): MAC 3076.4 us, MTE2 3435.6 us: MTE2 the longer
    assert m.bound == "memory" and m.pipes_us["mte2"] > m.pipes_us["cube"] > 3076.4


# -- calibration ----------------------------------------------------------------------------------------

def test_calibration_set_is_packaged_and_read_without_shared(tmp_path):
    """The measured and published sets load from the installed package alone: a fresh interpreter started in
    an empty directory (no ../shared beside it) reads every row, and the files live inside perfmodel/."""
    import subprocess
    import sys
    code = ("import pathlib, perfmodel, perfmodel.published as p; d = p.calibration_set(); "
            "root = pathlib.Path(perfmodel.__file__).parent; "
            "assert p.default_measured_path().is_relative_to(root) and p.default_published_path().is_relative_to(root); "
            "print(len(d), (d.trust == 'measured').sum())")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    total, trusted = map(int, out.stdout.split())
    assert total >= 100 and trusted >= 100


def test_shipped_fit_on_the_calibration_set():
    """The shipped calibration (python -m perfmodel.fit_report) on the packaged set: every operator group
    with 5+ trusted rows within the errors README's validation section states (in-sample)."""
    from perfmodel.fit_report import evaluate, summary
    from perfmodel.published import calibration_set
    rows = calibration_set()
    rep = report(perfmodel.calibration.default_calibration(), rows)
    rows = rows.assign(err=rep["error_pct"].to_numpy(), soc=rep["soc"].to_numpy())
    t = rows[rows.trust == "measured"]
    assert t.err.abs().mean() < 12.0
    for (op, soc), g in t.groupby(["op", "soc"]):
        if len(g) >= 5:
            assert g.err.abs().mean() < 30.0, (op, soc, g.err.abs().mean())
    # the fit in the report is the shipped one
    cal, per_row = evaluate()
    assert list(per_row["predicted_us"].round(6)) == list(
        pd.Series(perfmodel.fitting.predicted_us(perfmodel.calibration.default_calibration(),
                                                 perfmodel.fitting.works_of(calibration_set()))).round(6))
    # and the validation table the README shows was drawn from this fit
    table = pd.read_csv(Path(__file__).parents[1] / "perfmodel" / "validation" / "validation.csv")
    assert list(table["label"]) == list(per_row["label"])
    assert np.allclose(table["predicted_us"], per_row["predicted_us"], rtol=0, atol=6e-4)
    assert set(summary(per_row).columns) >= {"rows", "in_sample_mape", "worst_pct"}


def test_ascend_950_takes_the_a2_fits_kernel_starts_but_not_their_growth_with_cores():
    # ATT's MTE2 pipe head grows with the cores launched on A2/A3 and not on 950 (HARDWARE.md sec. 4)
    cal = perfmodel.calibration.default_calibration()
    a2, p950 = cal.params_for("a2a3"), cal.params_for("950")
    assert p950["launch_us@dynamic_quant"] == a2["launch_us@dynamic_quant"]
    assert p950["scalar_read_cycles"] == a2["scalar_read_cycles"]
    assert not any(k.startswith("launch_per_core_us@") for k in cal.params["950"]) and p950["launch_per_core_us"] == 0
    one, full = (perfmodel.predict("npu_dynamic_quant", "ascend-950pr", x=T(s, "float16")) for s in ((1, 4096),
                                                                                                     (1024, 1024)))
    assert (one.block_dim, full.block_dim) == (1, 64) and one.head_us == pytest.approx(full.head_us)
    one, full = (perfmodel.predict("npu_dynamic_quant", "atlas-a2", x=T(s, "float16")) for s in ((1, 4096),
                                                                                                 (1024, 1024)))
    assert full.head_us - one.head_us == pytest.approx((full.block_dim - 1) * a2["launch_per_core_us@dynamic_quant"])


def test_ascend_950_off_grid_row_cost_is_the_a2_fits_scaled_by_the_vendors_copy_sample():
    # asc-devkit's DataCopy sample (optimisation point 2) times one GM->L1 ND2NZ copy of half [12288, 12288]
    # and [12288, 12287] in [64, 256] tiles: aic_mte2_time 214.519 -> 422.515 us on A2/A3 (24 AIC at 1.8 GHz),
    # 187.19 -> 202.97 us on 950 (32 AIC at 1.65 GHz); each core copies its rows in 48 column tiles
    per_piece = [(slow - fast) * 1e-6 / (12288 // cores * 48) * hz
                 for fast, slow, cores, hz in ((214.519, 422.515, 24, 1.8e9), (187.19, 202.97, 32, 1.65e9))]
    ratio = perfmodel.hw.family_data("950")["dma"]["offgrid_cost_vs_a2a3"]
    assert ratio == pytest.approx(per_piece[1] / per_piece[0], rel=1e-3)
    cal = perfmodel.calibration.default_calibration()
    assert cal.params_for("950")["offgrid_row_cycles"] == pytest.approx(
        cal.params_for("a2a3")["offgrid_row_cycles"] * ratio)
    # a refit carries it over: whatever the A2/A3 rows make of the cost, 950 takes that share of it
    base = perfmodel.calibration.Calibration.defaults()
    base.params["a2a3"]["offgrid_row_cycles"] = 100.0
    perfmodel.fitting._inherit(base, "950")
    assert base.params["950"]["offgrid_row_cycles"] == pytest.approx(100.0 * ratio)
    perfmodel.fitting._inherit(base, "310p910")        # no vendor figure for 310P/910: its own estimate stays
    assert base.params["310p910"]["offgrid_row_cycles"] == perfmodel.hw.family_data("310p910")["calibration"][
        "offgrid_row_cycles"]


def _synthetic_rows():
    rows = []
    for n in (64, 1024, 4096, 16384, 65536):
        x = T((n, 1024), "float16")
        for bd in (1, 8, 48):
            rows.append({"op": "add", "product": "atlas-a2", "args": dict(x=x, y=x, block_dim=bd)})
    for m in (16, 1024, 4096):
        rows.append({"op": "matmul", "product": "atlas-a2", "args": dict(a=T((m, 4096), "float16"),
                                                                       b=T((4096, 4096), "float16"))})
    return pd.DataFrame(rows)


def test_calibration_round_trip(tmp_path):
    names = ["hbm_efficiency", "launch_us", "vector_scale", "cube_scale"]
    truth_p = {"hbm_efficiency": 0.62, "launch_us": 7.5, "vector_scale": 1.3, "cube_scale": 1.15}
    truth = Calibration.defaults()
    truth.params["a2a3"].update(truth_p)
    rows = _synthetic_rows()
    rows["measured_us"] = [perfmodel.predict(r.op, r.product, calibration=truth, **r.args).latency_us
                           for r in rows.itertuples()]
    cal = fit(rows, params=names, prior_weight=1e-8)
    for k, v in truth_p.items():
        assert cal.params["a2a3"][k] == pytest.approx(v, rel=0.02), (k, cal.params["a2a3"][k])
    assert report(cal, rows)["error_pct"].abs().max() < 0.5
    path = tmp_path / "cal.json"
    cal.save(path)
    back = Calibration.load(path)
    assert back.params == cal.params
    r = rows.iloc[3]
    assert perfmodel.predict(r["op"], r["product"], calibration=back, **r["args"]).latency_us == pytest.approx(
        perfmodel.predict(r["op"], r["product"], calibration=cal, **r["args"]).latency_us)
    for given in (path, str(path)):         # the file's path, as the CLI's --calibration takes it
        assert (perfmodel.predict(r["op"], r["product"], calibration=given, **r["args"]).latency_us
                == perfmodel.predict(r["op"], r["product"], calibration=back, **r["args"]).latency_us)
    with pytest.raises(ValueError, match="cannot be read"):
        perfmodel.predict(r["op"], r["product"], calibration=str(tmp_path / "missing.json"), **r["args"])


# -- the batched sweep path ---------------------------------------------------------------------------

@pytest.mark.parametrize("op,product", ALL_COMBOS)
def test_predict_many_equals_predict(op, product):
    """predict_many (memoised plans, one calibration lookup) gives exactly predict()'s results, in order,
    whatever else is in the batch; a bad point is returned as its exception with errors='return'."""
    ns = [1, 3, 17, 48, 100, 513, 2048, 8191]
    args = [op_args(op, product, n) for n in ns]
    many = perfmodel.predict_many(op, product, args)
    # single predictions with the plan memo cleared: plans rebuilt from scratch
    from perfmodel.predict import _PLAN_MEMO
    _PLAN_MEMO.clear()
    for a, m in zip(args, many):
        one = perfmodel.predict(op, product, **a)
        assert m.to_row() == one.to_row() and m.pipes_us == one.pipes_us and m.tiles == one.tiles
    rev = perfmodel.predict_many(op, product, args[::-1])
    assert [p.latency_us for p in rev] == [p.latency_us for p in many][::-1]
    bad = dict(args[0])
    bad[next(iter(bad))] = T((7,), np.complex64)
    out = perfmodel.predict_many(op, product, [args[1], bad, args[2]], errors="return")
    assert isinstance(out[1], Exception) and out[0].latency_us == many[1].latency_us
    assert out[2].latency_us == many[2].latency_us
    with pytest.raises(Exception):
        perfmodel.predict_many(op, product, [bad])


_WIDTHS = (16, 64, 100, 128, 511, 1024, 4096, 5120, 7168, 10240, 16384, 17000, 30000)


def random_args(op, product, rng):
    """Random, mostly valid, arguments of `op`: every size and option that picks a tiling regime is drawn
    (rows around the core counts and key 100's [4, 384], widths across the UB limits, smooth/group/int4,
    quant modes, epilogues, active_num)."""
    n = int(rng.choice([1, 2, 3, 4, 17, 40, 48, 100, 383, 384, 385, 1000, 4096, 20000]))
    h = int(rng.choice(_WIDTHS))
    if product == "atlas-inference" and rng.random() < 0.8:
        h = max(32, h // 32 * 32)           # its dynamic quant takes rows of 32k elements only
    coupled = product in ("atlas-training", "atlas-inference")
    fdt = "float16" if coupled else str(rng.choice(["float16", "bfloat16"]))
    if op in ("npu_dynamic_quant", "npu_dynamic_quant_asymmetric"):
        a = {"x": T((n, h), fdt)}
        r = rng.random()
        if coupled:
            pass
        elif r < 0.3:
            a["smooth_scales"] = T((h,), fdt)
        elif r < 0.45 and op == "npu_dynamic_quant":
            e = int(rng.integers(1, 9))
            a.update(smooth_scales=T((e, h), fdt), group_index=T((e,), "int32"))
        if not coupled and rng.random() < 0.2:
            a["dst_type"] = str(rng.choice(["int4", "int32"]))
        return a
    if op == "indexer_compress_epilog":
        mode = int(rng.integers(0, 3))
        return {"indexer_compress_cache": T((n, 4096), "uint8" if mode == 2 else "float8_e4m3fn"),
                "indexer_compress_scale": T((n, 32), "float8_e8m0" if mode == 0 else "float32"),
                "x": T((n, 4096), fdt), "slot_mapping": T((n,), "int32"), "quant_mode": mode}
    if op == "fake_quantize_per_channel_affine_cachemask":
        dt = str(rng.choice(["float16", "float32"]))
        shape = (n, h) if rng.random() < 0.7 else (int(rng.integers(1, 9)), n, 3)
        axis = int(rng.integers(0, len(shape)))
        return {"x": T(shape, dt), "scale": T((shape[axis],), dt), "zero_point": T((shape[axis],), "int32"),
                "axis": axis, "quant_min": -128, "quant_max": 127}
    if op == "npu_quant_matmul":
        nn = int(rng.choice([64, 1025, 4096, 7168]))
        a = {"x1": T((n, h), "int8"), "x2": T((h, nn), "int8")}
        r = rng.random()
        if r < 0.4:
            a.update(scale=T((nn,), "float32"), pertoken_scale=T((n,), "float32"), output_dtype=fdt)
        elif r < 0.7:
            a.update(scale=T((nn,), "int64"), output_dtype="float16")
        else:
            a.update(scale=T((nn,), "float32"), output_dtype=str(rng.choice(["float16", "int8", "int32"])))
        if rng.random() < 0.3:
            a["bias"] = T((nn,), "int32")
        return a
    if op == "moe_init_routing_quant":
        k = int(rng.choice([1, 2, 8]))
        return {"x": T((n, h), fdt), "row_idx": T((n, k), "int32"), "expert_idx": T((n, k), "int32"),
                "active_num": int(rng.choice([n, max(1, n // 3), 0])), "scale": 1.0, "offset": 0.0}
    if op == "matmul":
        return {"a": T((n, h), fdt), "b": T((h, int(rng.choice([64, 1025, 4096]))), fdt)}
    return op_args(op, product, n)


def _same(a, b) -> bool:
    """Identical predictions (every field, the plan's too), or the same error."""
    if isinstance(a, Exception) or isinstance(b, Exception):
        return type(a) is type(b) and str(a) == str(b)
    return (a.to_row() == b.to_row() and a.pipes_us == b.pipes_us and a.tiles == b.tiles
            and a.kernels == b.kernels and a.plan == b.plan)


@pytest.mark.parametrize("op,product", ALL_COMBOS)
def test_predict_many_equals_fresh_predict_on_random_shapes(op, product):
    """One predict_many batch (whose points share memoised plans, vector-call sequences and DMA times)
    gives exactly what predict() gives for each point alone with every memo forgotten first; the draws
    reach every tiling key of the operator on the product (checked for dynamic quant on A2 below)."""
    from perfmodel.predict import clear_memos
    rng = np.random.default_rng([len(op), len(product), sum(map(ord, op + product))])
    args = [random_args(op, product, rng) for _ in range(24)]
    clear_memos()
    many = perfmodel.predict_many(op, product, args, errors="return")
    for a, m in zip(args, many):
        clear_memos()
        try:
            one = perfmodel.predict(op, product, **a)
        except Exception as exc:        # noqa: BLE001 -- the same error is expected in the batch
            one = exc
        assert _same(m, one), a
    assert sum(not isinstance(m, Exception) for m in many) >= len(many) // 3


def test_random_shapes_reach_every_dynamic_quant_key():
    rng = np.random.default_rng(0)
    args = [random_args("npu_dynamic_quant", "atlas-a2", rng) for _ in range(200)]
    keys = {p.tiling_key for p in perfmodel.predict_many("npu_dynamic_quant", "atlas-a2", args, errors="return")
            if not isinstance(p, Exception)}
    assert keys >= {0, 1, 2, 3, 6, 7, 8, 10, 100}, keys


def test_plan_memo_tells_equal_values_of_other_types_apart():
    """1 == 1.0 == True in Python, but a planner takes quant_mode=1 and refuses True: the memoised plan of
    the first must not answer for the second."""
    a = op_args("indexer_compress_epilog", "ascend-950pr", 64)
    out = perfmodel.predict_many("indexer_compress_epilog", "ascend-950pr",
                                 [dict(a, quant_mode=1), dict(a, quant_mode=True)], errors="return")
    assert not isinstance(out[0], Exception) and isinstance(out[1], ValueError)
    assert "quant_mode" in str(out[1])


def test_predict_many_unsupported_product_raises():
    with pytest.raises(ValueError, match="does not run on atlas-a2"):
        perfmodel.predict_many("indexer_compress_epilog", "atlas-a2", [])


def test_sweep_uses_predict_many_and_matches_predict():
    from perfmodel import sweep
    pts = sweep.grid(ops=["npu_dynamic_quant", "npu_quant_matmul"], products=["atlas-a2", "atlas-inference"],
                     tokens=[1, 7, 300, 4096])
    df = sweep.run_sweep(pts, progress=False)
    assert (df["status"] == "ok").all() and len(df) == len(pts)
    for p, row in zip(pts, df.itertuples()):
        one = perfmodel.predict(p.op, p.product, **sweep.build_args(p))
        assert row.latency_us == one.latency_us and row.block_dim == one.block_dim


def test_sweep_rows_say_how_many_measurements_stand_behind_them():
    """fitted_rows / held_out_rows: the calibration set's rows of the operator on the point's SoC, by trust."""
    from perfmodel import sweep
    from npusim.products import get_product
    from perfmodel.published import calibration_set
    rows = calibration_set()
    rows = rows.assign(soc=[get_product(t).soc for t in rows.target])
    pts = sweep.grid(ops=["npu_dynamic_quant", "npu_quant_matmul"], products=["atlas-a2", "ascend-950pr", "atlas-a3"],
                     tokens=[16])
    df = sweep.run_sweep(pts, progress=False)
    for row in df.itertuples():
        mine = rows[(rows.op == row.op) & (rows.soc == row.soc)]
        assert (row.fitted_rows, row.held_out_rows) == ((mine.trust == "measured").sum(), (mine.trust == "holdout").sum())
    by = df.groupby("product")[["fitted_rows", "held_out_rows"]].min()
    assert by.loc["atlas-a2", "fitted_rows"] > 0 and by.loc["ascend-950pr", "held_out_rows"] > 0   # 950: checks only
    assert by.loc["atlas-a3"].sum() == 0 and by.loc["ascend-950pr", "fitted_rows"] == 0


def test_a_row_that_names_its_kernels_is_compared_with_those_alone():
    from perfmodel.compare import compare
    from perfmodel.fitting import works_of
    from perfmodel.published import measured_kernels
    assert measured_kernels("case 3; baseline_kernels: QuantBatchMatmulV3 x1") == ("QuantBatchMatmulV3",)
    assert measured_kernels("a; baseline_kernels: A x1, B \u00d72; b") == ("A", "B")
    assert measured_kernels("no list") == ()
    args = dict(x1=T((1024, 2048), "int8"), x2=T((2048, 2048), "int8"), scale=T((2048,), "float32"),
                output_dtype="float16")
    full = perfmodel.predict("npu_quant_matmul", "atlas-a2", **args)
    names = [k for k, _ in full.kernels]
    assert names == ["QuantBatchMatmulV3", "TransQuantParamV2"]     # op-plugin's launch before the matmul
    rows = pd.DataFrame([{"op": "npu_quant_matmul", "product": "atlas-a2", "target": "atlas-a2", "args": args,
                          "measured_us": 30.0, "block_dim": math.nan, "kernels": kernels} for kernels in ((), ("QuantBatchMatmulV3",))])
    got = compare(rows)["predicted_us"].to_list()
    assert got[0] == pytest.approx(full.latency_us)
    assert got[1] == pytest.approx(dict(full.kernels)["QuantBatchMatmulV3"]) and got[1] < got[0]
    (w_all, *_), (w_qbmm, *_) = works_of(rows)
    assert [w.kernel for w in w_all.extra] == ["TransQuantParamV2"] and w_qbmm.extra == []


def test_trans_quant_param_packs_on_the_scalar_unit_and_stores_64_kb_at_a_time():
    """TransQuantParamV2 as its kernel runs (trans_quant_param_v2.h Process): no MTE2 load (the scalar unit
    reads each scale from GM), one 64 KB store per 8192 packed words, the last one the rest; one core."""
    hw = hardware("atlas-a2")
    n = 2 * 8192 + 3616
    w = ops.trans_quant_param_work(hw, n)
    assert w.block_dim == 1 and [lp.scalar_elements for lp in w.loops] == [8192, 8192, 3616]
    assert all("mte2" not in lp.pipes for lp in w.loops)
    assert [lp.write_bytes for lp in w.loops] == [65536, 65536, 3616 * 8] and w.bytes_read == 4 * n
    assert [lp.pipes["mte3"] for lp in w.loops] == [hw.dma("ub_to_gm", b) for b in (65536, 65536, 3616 * 8)]


def test_nd_to_nz_copy_pays_per_source_row_off_the_32_byte_grid_that_it_fetches_from_hbm():
    from perfmodel.ops import cube_loops
    hw = hardware("atlas-a2")
    dims = dict(M=128, K=512, N=256, dtype="int8", in_bytes=1.0)
    aligned = cube_loops(hw, **dims)[0][0]
    off_a = cube_loops(hw, **dims, a_row_bytes=513)[0][0]
    off_b = cube_loops(hw, **dims, b_row_bytes=1025)[0][0]
    off_bt = cube_loops(hw, **dims, b_row_bytes=1025, b_transposed=True)[0][0]
    depth = hw.cube["l1_depth_k"]
    assert depth == 4
    a_step, b_step = 128 * 128, 128 * 256          # base 128 x 256, baseK 128 int8: one block, 4 k-steps
    a = hw.dma("gm_to_l1", depth * a_step) / depth
    b = hw.dma("gm_to_l1_trans", depth * b_step) / depth
    for lp in (aligned, off_a, off_b, off_bt):
        assert lp.n == 4 and lp.pipes["mte2"] == pytest.approx(a + b)
    # rows per k-step, all first touches: one A fill of 128 rows over the 4 k-steps; B [K,N]: each k-step's
    # 128 K-rows; B [N,K]: one fill of 256 rows
    assert (aligned.offgrid_rows, off_a.offgrid_rows, off_b.offgrid_rows, off_bt.offgrid_rows) == (0, 32, 128, 64)
    # M = 300: row blocks of 128, 128 and 44 rows; each A row is still loaded once, so every A fill is a first
    # touch (the blocks load 300 rows, not 3 x 128)
    assert cube_loops(hw, **dict(dims, M=300), a_row_bytes=513)[0][0].offgrid_rows == pytest.approx(32)
    # eight row blocks re-read the same B: one read in eight comes from HBM, unless B streams past L2
    re_read = dict(dims, M=1024)
    assert cube_loops(hw, **re_read, b_row_bytes=1025)[0][0].offgrid_rows == pytest.approx(128 / 8)
    assert cube_loops(hw, **re_read, b_row_bytes=1025, b_streamed=True)[0][0].offgrid_rows == 128
    # each row costs offgrid_row_cycles of MTE2 at the core clock
    for cycles in (0.0, 50.0, 200.0):
        w = Work(hw=hw, core_type="aic", block_dim=1, loops=[off_b], bytes_read=0, bytes_written=0)
        per_step = combine(w, _params(offgrid_row_cycles=cycles), "m", "atlas-a2").pipes_us["mte2"] / off_b.n
        assert per_step == pytest.approx((a + b + 128 * cycles / hw.vec_hz) * 1e6), cycles


def test_single_buffered_cores_drift_apart_after_the_first_iteration():
    # 48 AIVs, each iteration loads 1 MiB: in lockstep (the first iteration) the chip serves them together;
    # after it each core's load runs at its own rate, and the chip's bandwidth bounds the period
    hw = hardware("Ascend910B2")
    p = _params()
    hbm = hw.hbm_peak_Bps * p["hbm_efficiency"]
    rd = 2 ** 20
    shared = rd * 48 / hbm                          # seconds for 48 cores' loads through the chip at once
    for own, vec in ((5e-6, 40e-6), (5e-6, 1e-6)):
        lp = Loop(n=10, pipes={"mte2": own, "vector": vec}, read_bytes=rd, overlap="serial")
        w = Work(hw=hw, core_type="aiv", block_dim=48, loops=[lp], bytes_read=48 * 10 * rd, bytes_written=0)
        body = combine(w, p, "x", "atlas-a2").core_us * 1e-6
        fill = max(own, shared) + vec
        assert body == pytest.approx(fill + 9 * max(own + vec, shared)), (own, vec)


def test_per_channel_fixpipe_dequant_loads_each_blocks_scale_before_its_store():
    # the matmul API fetches a block's baseN uint64 scale words GM -> L1 before the block's FixPipe store;
    # a per-tensor scale is a register: nothing to load
    hw = hardware("atlas-a2")
    args = dict(x1=T((1024, 2048), "int8"), x2=T((2048, 2048), "int8"), output_dtype="float16")
    per_channel = build_work("npu_quant_matmul", "atlas-a2", scale=T((2048,), "int64"), **args)[0]
    per_tensor = build_work("npu_quant_matmul", "atlas-a2", scale=T((1,), "int64"), **args)[0]
    fix_c, fix_t = per_channel.loops[1], per_tensor.loops[1]
    base_n = per_channel.tiles["base_n"]
    assert set(fix_c.pipes) == {"fixpipe", "mte2"} and fix_c.overlap == "none"
    assert fix_c.pipes["mte2"] == pytest.approx(hw.dma("gm_to_l1", base_n * 8)) and fix_c.read_bytes == base_n * 8
    assert set(fix_t.pipes) == {"fixpipe"} and fix_t.read_bytes == 0
    assert fix_c.n == fix_t.n == per_channel.tiles["blocks_per_core"]
    # 64 blocks, 3 a core: on average 64 / 3 of the 24 AICs stream, so the GM latency is that share of its whole
    assert per_channel.block_dim == hw.soc.aic and fix_c.active == pytest.approx(64 / 3)
    p = _params(load_latency_us=0.5)
    slower = combine(per_channel, p, "q", "atlas-a2").core_us - combine(per_tensor, p, "q", "atlas-a2").core_us
    latency = 0.5 * (64 / 3) / hw.soc.aic
    assert slower == pytest.approx(fix_c.n * (fix_c.pipes["mte2"] * 1e6 + latency))    # per block: load + latency


def test_sigmoid_and_gelu_compute_fp16_in_fp32_as_bf16_while_add_stays_fp16():
    # the TBE Sigmoid and Gelu widen fp16 to fp32 (high-precision default on 910B): an fp16 tile costs what a
    # bf16 one does (Cast in, fp32 calls, Cast out); Add computes fp16 natively
    hw = hardware("atlas-a2")
    x16, xb = T((4096, 4096), "float16"), T((4096, 4096), "bfloat16")
    for op in ("sigmoid", "gelu"):
        f16, bf16 = ops.elementwise_work(hw, op, x16), ops.elementwise_work(hw, op, xb)
        assert [lp.pipes["vector"] for lp in f16.loops] == [lp.pipes["vector"] for lp in bf16.loops], op
        assert f16.tiles == bf16.tiles, op
    add16, addb = ops.add_work(hw, x16, x16), ops.add_work(hw, xb, xb)          # the same 32 KB tiles
    assert add16.loops[0].pipes["vector"] < addb.loops[0].pipes["vector"]


def test_a_broadcast_add_streams_one_input_not_two():
    # a bias row or a scalar is loaded once per core: the tiles move x alone, so the loads take about half the
    # time of a same-shape add, and the HBM traffic counts y once; either operand may be the small one
    x = T((4096, 7168), "bfloat16")
    full = perfmodel.predict("add", "atlas-a2", x=x, y=x)
    for y in (T((7168,), "bfloat16"), T((), "bfloat16"), T((4096, 1), "bfloat16")):
        for a, b in ((x, y), (y, x)):
            p = perfmodel.predict("add", "atlas-a2", x=a, y=b)
            assert p.bytes_read == x.nbytes + y.nbytes
            assert 0.45 < p.pipes_us["mte2"] / full.pipes_us["mte2"] < 0.6, (y.shape, p.pipes_us, full.pipes_us)
            assert p.latency_us < full.latency_us
    # a broadcast input larger than a tile is re-read with every tile, from L2 after its first touch: loads as
    # many as a same-shape add's, HBM traffic as the unique bytes
    hw = hardware("atlas-a2")
    x, y = T((8, 1 << 20), "float16"), T((1 << 20,), "float16")
    big, same = ops.add_work(hw, x, y), ops.add_work(hw, x, x)
    assert [lp.read_bytes for lp in big.loops] == [lp.read_bytes for lp in same.loops]
    assert big.hbm_read_fraction == pytest.approx((x.nbytes + y.nbytes) / (2 * x.nbytes))
    assert same.hbm_read_fraction == 1.0


def test_rows_held_out_of_the_fit_are_shown_not_fitted():
    from perfmodel.fit_report import evaluate
    from perfmodel.published import calibration_set, trust
    assert trust("kernel MatMulV2; held out of the fit: another chip") == "holdout"
    assert trust("LOOSE ANALOGUE: another op") == "analogue" and trust("placeholder values") == "doubtful"
    assert trust("cann-bench case 3") == "measured"
    rows = calibration_set()
    held = rows[rows["trust"] == "holdout"]
    assert len(held) >= 9 and set(held["target"]) == {"Ascend910B2", "Ascend910B4", "ascend-950pr"}
    # issue 13: 950 is predicted from its hardware facts; its only fitted rows are the two MatMul samples
    on_950 = rows[rows["product"].isin(["ascend-950pr", "ascend-950dt"])]
    assert set(on_950.loc[on_950["trust"] == "measured", "op"]) == {"matmul"}
    assert {"npu_dynamic_quant", "sigmoid"} <= set(on_950.loc[on_950["trust"] == "holdout", "op"])
    # the fit is the same without them: they only get predicted
    cal_all, per_row = evaluate(rows)
    cal_without, _ = evaluate(rows[rows["trust"] != "holdout"].reset_index(drop=True))
    assert cal_all.params == cal_without.params
    assert per_row.loc[per_row["trust"] == "holdout", "predicted_us"].notna().all()
    # their own summary: one MAPE per group (none of them was fitted), worked from the per-row errors
    from perfmodel.fit_report import summary
    s = summary(per_row, "holdout")
    assert list(s.columns) == ["rows", "mape", "worst_pct"]
    h = per_row[(per_row["trust"] == "holdout") & (per_row["soc"] == "Ascend950PR_9589")
                & (per_row["op"] == "npu_dynamic_quant")]
    assert s.loc["npu_dynamic_quant Ascend950PR_9589", "rows"] == len(h) == 20
    assert s.loc["npu_dynamic_quant Ascend950PR_9589", "mape"] == pytest.approx(h["error_pct"].abs().mean())
    assert s.loc["all", "rows"] == len(held)


def test_generic_matmul_tiles_shrink_to_one_cores_share_of_a_small_problem():
    # worked by hand in fractals of 16 (fp16): a core's load is ceil(m/m_dim) + ceil(n/n_dim) panels
    assert ops.core_grid_tile(64, 64, 64, 24) == (64, 64)            # A, B, C fit L0: one core (mini shape)
    # m = 8, n = 32 on 20 cores: m_dim 2 x n_dim 10 loads 4 + 4 panels; 2 x 8 ties and loses (fewer N splits)
    assert ops.core_grid_tile(128, 512, 1024, 20) == (64, 64)
    assert ops.core_grid_tile(1, 4096, 4096, 24) == (16, 176)        # decode: 1 x 24, ceil(256 / 24) = 11
    assert ops.core_grid_tile(4096, 4096, 4096, 24) == (1024, 688)   # 4 x 6: 64 + 43 panels, 6 x 4 ties
    hw = hardware("atlas-a2")
    # the same on 24 AICs: 2 x 12 loads 4 + 3 panels (3 x 8 ties and loses): 64 x 48 tiles, 2 x 11 of them
    small = ops.matmul_work(hw, T((128, 1024), "float16"), T((1024, 512), "float16"))
    big = ops.matmul_work(hw, T((4096, 4096), "float16"), T((4096, 4096), "float16"))
    assert (small.tiles["base_m"], small.tiles["base_n"], small.block_dim) == (64, 48, 22)
    assert (big.tiles["base_m"], big.tiles["base_n"], big.block_dim) == (128, 256, 24)   # capped at the sample's
    naive = ops.matmul_work(hw, T((128, 1024), "float16"), T((1024, 512), "float16"), tiling="naive")
    assert (naive.tiles["base_m"], naive.tiles["base_n"]) == (128, 128)


# -- grouped matmul -----------------------------------------------------------------------------------------

def test_grouped_matmul_deals_every_groups_blocks_to_the_cores_together():
    # groups of 300, 30, 0 and 170 rows, N = 600, K = 256 fp16 on 24 AICs, worked by hand: base blocks
    # 128 x 256 x 64; row blocks 3 + 1 + 0 + 2 = 6, column blocks ceil(600 / 256) = 3: 18 blocks, one per core
    hw = hardware("Ascend910B2")
    w = ops.grouped_matmul_work(hw, T((500, 256), "float16"), T((4, 256, 600), "float16"), (300, 330, 330, 500))
    assert (w.tiles["base_m"], w.tiles["base_n"], w.tiles["base_k"]) == (128, 256, 64)
    assert w.tiles["blocks"] == 18 and w.tiles["blocks_per_core"] == 1
    # the tiling cannot see group_list's values: it launches mDim = 4 + (500 - 4) // 128 = 7 row blocks (an upper
    # bound on the 6 used) x 3 = 21 AICs, three of them idle; the blocks still stream on 18
    assert w.block_dim == 21
    kloop, fix = w.loops
    assert kloop.active == fix.active == 18
    assert ops.grouped_matmul_work(hw, T((500, 256), "float16"), T((4, 256, 600), "float16"), (300, 330, 330, 500),
                                   block_dim=18).block_dim == 18
    assert kloop.n == 4 and fix.n == 1                          # K / 64 k-steps of the critical core's block
    # the chip's traffic is what the blocks move: row blocks of 128, 128, 44 | 30 | 128, 42 rows (500 in 6) and
    # column blocks of 256, 256, 88 (600 in 3), so each of the 18 blocks stands for 500/6 x 200 of C; the
    # critical core's own copies and mmads are whole 128 x 256 blocks
    assert kloop.read_bytes == pytest.approx((500 / 6 + 200) * 64 * 2)
    assert fix.write_bytes == pytest.approx(500 / 6 * 200 * 2)
    assert kloop.pipes["cube"] == pytest.approx(hw.mmad(128, 64, 256, "float16"))
    loaded = 18 * 4 * (500 / 6 + 200) * 64 * 2                 # = x read once per column block + w per row block
    assert loaded == pytest.approx(3 * 500 * 256 * 2 + 6 * 256 * 600 * 2)
    assert w.hbm_read_fraction == pytest.approx(w.bytes_read / loaded)
    assert w.bytes_read == (500 * 256 + 3 * 256 * 600) * 2       # x once, the weights of the 3 used groups once
    assert w.bytes_written == 500 * 600 * 2 and w.flops == 2.0 * 500 * 600 * 256
    assert w.core_type == "aic" and w.launch_class == ops.MATMUL_API


def test_grouped_matmul_weights_of_one_row_block_groups_pass_l2_by():
    # grouped_matmul.h marks a group's weight CACHE_MODE_DISABLE when the group has one row block (blockDimM 1):
    # 32 experts of 4096 x 2048 fp16 (512 MiB, more than the 910B2's 192 MiB L2), groups of 32 rows
    hw = hardware("Ascend910B2")
    x, w = T((1024, 4096), "float16"), T((32, 4096, 2048), "float16")
    small = ops.grouped_matmul_work(hw, x, w, ops.even_group_list(1024, 32))
    assert small.l2_bypass_bytes == 32 * 4096 * 2048 * 2
    # the 4 MiB output then stays in L2 (the reads that do occupy it, x, leave room); without the mark it would
    # not fit beside the weights
    assert _write_hbm_fraction(small) == 0.0
    small.l2_bypass_bytes = 0.0
    assert _write_hbm_fraction(small) == 1.0
    # 4 experts of 256 rows: two row blocks each (baseM 128), every weight read through L2
    assert ops.grouped_matmul_work(hw, x, T((4, 4096, 2048), "float16"),
                                   ops.even_group_list(1024, 4)).l2_bypass_bytes == 0.0
    # below 128 rows the tiling's baseM is M rounded up to 16: one row block however the rows are grouped
    tiny = ops.grouped_matmul_work(hw, T((64, 256), "float16"), T((2, 256, 512), "float16"), (10, 64))
    assert tiny.l2_bypass_bytes == 2 * 256 * 512 * 2


def test_grouped_matmul_on_950_follows_the_arch35_tiling():
    # arch35 grouped_no_quant_matmul_tiling.cpp: 256 x 256 x 64 blocks, A and B 4 k-steps a copy (3 with a
    # bias), every AIC when there is more than one group, and a weight passes L2 by only when x, the weights
    # and y fill L2 (128 MiB on 950) and its rows are whole 128 bytes, for groups of fewer than 256 rows
    hw = hardware("ascend-950pr")
    x, w = T((1024, 4096), "float16"), T((32, 4096, 2048), "float16")      # 512 MiB of weights
    work = ops.grouped_matmul_work(hw, x, w, ops.even_group_list(1024, 32))
    assert work.block_dim == hw.soc.aic
    assert (work.tiles["base_m"], work.tiles["base_n"], work.tiles["base_k"]) == (32, 256, 64)  # groups of 32 rows
    kloop = work.loops[0]
    assert kloop.pipes["mte2"] == pytest.approx(hw.dma("gm_to_l1", 4 * 32 * 64 * 2) / 4
                                                + hw.dma("gm_to_l1_trans", 4 * 64 * 256 * 2) / 4)
    assert work.l2_bypass_bytes == 32 * 4096 * 2048 * 2
    assert ops.grouped_matmul_work(hw, x, T((32, 4096, 2047), "float16"),            # rows of 4094 bytes
                                   ops.even_group_list(1024, 32)).l2_bypass_bytes == 0.0
    small = ops.grouped_matmul_work(hw, T((128, 256), "float16"), T((4, 256, 512), "float16"), (32, 64, 96, 128),
                                    bias=T((4, 512), "float16"))
    assert small.block_dim == hw.soc.aic and small.l2_bypass_bytes == 0.0      # 1 MiB: L2 holds it all
    assert small.loops[0].pipes["mte2"] == pytest.approx(hw.dma("gm_to_l1", 3 * 32 * 64 * 2) / 3
                                                         + hw.dma("gm_to_l1_trans", 3 * 64 * 256 * 2) / 3)
    # A2 keeps its own: 128-row blocks, A 8 k-steps a copy, the cores the row blocks could need
    a2 = ops.grouped_matmul_work(hardware("atlas-a2"), T((128, 256), "float16"), T((4, 256, 512), "float16"),
                                 (32, 64, 96, 128))
    assert a2.block_dim == 8


def test_grouped_matmul_more_groups_of_the_same_rows_never_faster():
    # the same 2048 rows over more experts: as many or more blocks, and one more weight to read per group
    x = T((2048, 1024), "bfloat16")
    lat = [perfmodel.predict("grouped_matmul", "atlas-a2", x=x, weight=T((e, 1024, 1536), "bfloat16"),
                             group_list=ops.even_group_list(2048, e)).latency_us for e in (1, 2, 4, 8, 16, 64)]
    assert all(b >= a for a, b in zip(lat, lat[1:])), lat


def test_grouped_matmul_bias_is_loaded_per_block_and_off_grid_rows_cost_more():
    hw = hardware("Ascend910B2")
    x, w = T((1024, 512), "float16"), T((4, 512, 256), "float16")
    plain = ops.grouped_matmul_work(hw, x, w, (256, 512, 768, 1024))
    biased = ops.grouped_matmul_work(hw, x, w, (256, 512, 768, 1024), T((4, 256), "float16"))
    assert "mte2" not in plain.loops[1].pipes
    assert biased.loops[1].pipes["mte2"] == pytest.approx(hw.dma("gm_to_l1", 256 * 2))
    # A is copied 8 k-steps at a time (stepKa), 4 when the bias's L1 reserve leaves no room; B 4 at a time
    a_step, b_step = 128 * 64 * 2, 64 * 256 * 2
    b = hw.dma("gm_to_l1_trans", 4 * b_step) / 4
    assert plain.loops[0].pipes["mte2"] == pytest.approx(hw.dma("gm_to_l1", 8 * a_step) / 8 + b)
    assert biased.loops[0].pipes["mte2"] == pytest.approx(hw.dma("gm_to_l1", 4 * a_step) / 4 + b)
    # N = 511: C's rows (1022 bytes) are off the 32-byte grid, like B's, and a row takes two blocks: the FixPipe
    # store of a block's pieces of them writes twice the sectors. The kernel's Matmul sets enUnitFlag
    # (matmulCFGUnitFlag): the FixPipe drains L0C behind the last k-step's mmad, so only what it takes beyond
    # that mmad is left
    off = ops.grouped_matmul_work(hw, x, T((4, 512, 511), "float16"), (256, 512, 768, 1024))
    mmad = hw.mmad(128, 64, 256, "float16")
    assert plain.loops[1].pipes["fixpipe"] == pytest.approx(max(0.0, hw.dma("l0c_to_gm", 128 * 256 * 2) - mmad))
    assert off.loops[1].pipes["fixpipe"] == pytest.approx(max(0.0, hw.dma("l0c_to_gm", 2 * 128 * 256 * 2) - mmad))
    assert off.loops[1].pipes["fixpipe"] > plain.loops[1].pipes["fixpipe"] > 0
    assert "mte2" not in off.loops[1].pipes         # a store loads nothing: no GM load latency
    # B [K,N] rows of 1022 bytes: each k-step's 64 K-rows (fp16 baseK); each group's B is read by its two row
    # blocks, so of the 16 blocks x 8 k-steps of 64 x 255.5 they load, the 4 weights' 512 x 511 come from HBM:
    # half
    assert plain.loops[0].offgrid_rows == 0
    assert off.loops[0].offgrid_rows == pytest.approx(64 * (4 * 512 * 511) / (16 * 8 * 64 * 255.5)) == 32
    t = [combine(off, _params(offgrid_row_cycles=c), "g", "atlas-a2").latency_us for c in (30.0, 90.0)]
    assert t[1] > t[0]


def test_off_grid_rows_whole_or_strided():
    """cube_loops: an off-grid operand copied as whole rows laid back to back (A with K within one copy of
    depth_a k-steps, [K,N] B and C with N within a block, [N,K] B with K within one copy) pays a load head a
    row and copy (two a C row) and no HBM row cost; a strided off-grid row pays the HBM row cost once per
    block, however many k-chunks copy it. Ascend 950's DMA does not take the whole-row rule (950.toml)."""
    hw = hardware("Ascend910B2")
    assert hw.data["dma"]["offgrid_whole_rows"] is True
    gl = (256, 512, 768, 1024)
    plain = ops.grouped_matmul_work(hw, T((1024, 128), "float16"), T((4, 128, 256), "float16"), gl)
    # K = 127: A's rows (254 bytes) are whole in each block's one copy of them (stepKa 8 x 64 >= 127)
    a_whole = ops.grouped_matmul_work(hw, T((1024, 127), "float16"), T((4, 127, 256), "float16"), gl)
    assert a_whole.tiles["k_steps"] == plain.tiles["k_steps"] == 2
    assert a_whole.loops[0].offgrid_rows == 0
    assert a_whole.loops[0].pipes["mte2"] == pytest.approx(plain.loops[0].pipes["mte2"] + 128 / 2 * hw.load_head_s)
    # N = 255 with [K,N] B: B's and C's rows are whole (a block is all 255 columns): a head per B row (its 64
    # K-rows a k-step) and two per C row, one FixPipe pass (not twice the sectors)
    nw = ops.grouped_matmul_work(hw, T((1024, 512), "float16"), T((4, 512, 255), "float16"), gl)
    n256 = ops.grouped_matmul_work(hw, T((1024, 512), "float16"), T((4, 512, 256), "float16"), gl)
    assert nw.loops[0].offgrid_rows == 0
    assert nw.loops[0].pipes["mte2"] == pytest.approx(n256.loops[0].pipes["mte2"] + 64 * hw.load_head_s)
    assert nw.loops[1].pipes["fixpipe"] == pytest.approx(n256.loops[1].pipes["fixpipe"] + 2 * 128 * hw.load_head_s)
    # [N,K] B (transpose_weight) with K = 127: its 256 rows a block, one copy, and A's 128
    tw = ops.grouped_matmul_work(hw, T((1024, 127), "float16"), T((4, 256, 127), "float16"), gl,
                                 transpose_weight=True)
    tw128 = ops.grouped_matmul_work(hw, T((1024, 128), "float16"), T((4, 256, 128), "float16"), gl,
                                    transpose_weight=True)
    assert tw.loops[0].offgrid_rows == 0
    assert tw.loops[0].pipes["mte2"] == pytest.approx(tw128.loops[0].pipes["mte2"] + (128 + 256) / 2 * hw.load_head_s)
    # K = 1023: A's rows (2046 bytes) are copied in two chunks of 8 k-steps (512 columns): strided, from HBM once
    # per block (the one n-block reads x once: all of it first touches, 1023 of the 16 x 64 columns its k-steps
    # load): bm rows over the 16 k-steps, not bm a chunk
    strided = ops.grouped_matmul_work(hw, T((1024, 1023), "float16"), T((4, 1023, 256), "float16"), gl)
    assert strided.tiles["k_steps"] == 16
    assert strided.loops[0].offgrid_rows == pytest.approx(128 / 16 * 1023 / 1024)
    # 950 (arch35): no whole-row rule, its K = 127 rows pay the HBM row cost
    hw950 = hardware("Ascend950PR_9589")
    assert not hw950.data["dma"].get("offgrid_whole_rows", False)
    w950 = ops.grouped_matmul_work(hw950, T((1024, 127), "float16"), T((4, 127, 256), "float16"), gl)
    assert w950.loops[0].offgrid_rows > 0


@pytest.mark.parametrize("kw,rule", [
    (dict(group_list=(64, 128)), "E = 4"), (dict(group_list=(64, 32, 96, 128)), "non-decreasing"),
    (dict(group_list=(32, 64, 96, 200)), "at most at M = 128"), (dict(group_list=(32.0, 64, 96, 128)), "ints"),
    (dict(group_list=(32, 64, 96, 128), bias=T((4, 100), "float16")), "bias must be [E,N]"),
    (dict(group_list=(32, 64, 96, 128), bias=T((4, 512), "int32")), "bias must be [E,N]"),
    (dict(group_list=(32, 64, 96, 128), bias=T((4, 512), "bfloat16")), "float16 with float16 x"),
    (dict(group_list={32, 64, 96, 128}), "list or tuple"),
    (dict(group_list=(32, 64, 96, 128), transpose_weight="false"), "True or False"),
    (dict(group_list=(32, 64, 96, 128), transpose_weight=True), "does not match x's K"),
])
def test_grouped_matmul_bad_arguments_name_the_rule(kw, rule):
    with pytest.raises(ValueError, match="grouped_matmul") as e:
        perfmodel.predict("grouped_matmul", "atlas-a2", x=T((128, 256), "float16"),
                          weight=T((4, 256, 512), "float16"), **kw)
    assert rule in str(e.value)


def test_group_list_may_be_an_array_of_counts():
    args = dict(x=T((128, 256), "float16"), weight=T((4, 256, 512), "float16"))
    want = perfmodel.predict("grouped_matmul", "atlas-a2", group_list=(32, 64, 96, 128), **args).latency_us
    got = perfmodel.predict("grouped_matmul", "atlas-a2", group_list=np.array([32, 64, 96, 128]), **args)
    assert got.latency_us == want


def test_predict_takes_torch_tensors_and_reads_a_weights_nz_mark():
    """Torch tensors and dtypes are read like arrays (shape and dtype); a weight cast with the torch face's
    npu_format_cast(w, 29) is costed as FRACTAL_NZ unless the option says otherwise."""
    torch = pytest.importorskip("torch")
    from npusim import torch_npu as tnpu
    q, w = torch.zeros(16, 2048, dtype=torch.int8), torch.zeros(2048, 1024, dtype=torch.int8)
    s = torch.zeros(1024, dtype=torch.int64)
    spec = dict(x1=T((16, 2048), "int8"), x2=T((2048, 1024), "int8"), scale=T((1024,), "int64"))

    def qmm(**kw):
        return perfmodel.predict("npu_quant_matmul", "atlas-a2", **kw).latency_us
    nd = qmm(**spec, output_dtype="float16")
    assert qmm(x1=q, x2=w, scale=s, output_dtype=torch.float16) == nd
    nz_w = tnpu.npu_format_cast(w, 29)
    nz = qmm(x1=q, x2=nz_w, scale=s, output_dtype=torch.float16)
    assert nz == qmm(**spec, output_dtype="float16", x2_format="NZ") and nz < nd
    assert qmm(x1=q, x2=nz_w, scale=s, output_dtype=torch.float16, x2_format="ND") == nd     # the option wins
    meta = {k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in dict(x1=q, x2=w, scale=s).items()}
    assert qmm(**meta, output_dtype=torch.float16) == nd                   # shapes only: no storage to read
    many = perfmodel.predict_many("npu_quant_matmul", "atlas-a2",
                                  [dict(x1=q, x2=nz_w, scale=s, output_dtype=torch.float16)] * 2)
    assert [p.latency_us for p in many] == [nz] * 2
    x, gw = torch.zeros(2048, 1024, dtype=torch.float16), torch.zeros(4, 1024, 1024, dtype=torch.float16)

    def gmm(weight, **kw):
        return perfmodel.predict("grouped_matmul", "atlas-a2", x=x, weight=weight,
                                 group_list=[512, 1024, 1536, 2048], **kw).latency_us
    assert gmm(tnpu.npu_format_cast(gw, 29)) == gmm(gw, weight_format="NZ") != gmm(gw)
    assert perfmodel.predict("npu_dynamic_quant", "atlas-a2", x=torch.zeros(16, 4096, dtype=torch.bfloat16)) \
        .latency_us == perfmodel.predict("npu_dynamic_quant", "atlas-a2", x=T((16, 4096), "bfloat16")).latency_us


def test_quant_matmul_weight_stored_nz_is_copied_as_it_lies():
    # npu_format_cast(w, 29) before npu_quant_matmul (vllm-ascend's W8A8 weights): B's tiles are whole fractals
    # in GM, so they move on msKPP's plain GM->L1 curve, and an NZ B has no row off the grid
    from perfmodel.ops import cube_loops
    hw = hardware("atlas-a2")
    dims = dict(M=128, K=512, N=256, dtype="int8", in_bytes=1.0)
    depth = hw.cube["l1_depth_k"]
    a_step, b_step = 128 * 128, 128 * 256
    nz = cube_loops(hw, **dims, b_nz=True, b_row_bytes=1025)[0][0]
    assert nz.pipes["mte2"] == pytest.approx((hw.dma("gm_to_l1", depth * a_step) + hw.dma("gm_to_l1", depth * b_step))
                                             / depth)
    assert nz.offgrid_rows == 0 and cube_loops(hw, **dims, b_row_bytes=1025)[0][0].offgrid_rows == 128
    # the NZ weight is stored padded to the int8 fractal (32 K x 16 N): K = 500 moves as 512
    unique = cube_loops(hw, **dict(dims, K=500), b_nz=True)[2] * 4 * 128 * (128 + 256) * 1.0
    assert unique == pytest.approx(128 * 500 + 512 * 256)

    def qmm(m, k, n, **fmt):
        return perfmodel.predict("npu_quant_matmul", "atlas-a2", x1=T((m, k), "int8"), x2=T((k, n), "int8"),
                                 scale=T((n,), "int64"), output_dtype="float16", **fmt).latency_us
    for m, k, n in ((1, 4096, 4096), (16, 7168, 4096), (1024, 4096, 4096), (1024, 4096, 1025)):
        nd = qmm(m, k, n)
        assert qmm(m, k, n, x2_format="ND") == qmm(m, k, n, x2_format=2) == nd       # ND is the default
        assert qmm(m, k, n, x2_format="NZ") == qmm(m, k, n, x2_format=29) == qmm(m, k, n, x2_format="fractal_nz")
        assert qmm(m, k, n, x2_format="NZ") < nd, (m, k, n)
    # a decode GEMV on an NZ weight is still bound by HBM: never faster than its weight over the peak bandwidth
    assert qmm(1, 7168, 7168, x2_format="NZ") > 7168 * 7168 / hw.hbm_peak_Bps * 1e6
    args = dict(x1=T((1, 4096), "int8"), x2=T((4096, 4096), "int8"), scale=T((4096,), "int64"), output_dtype="float16",
                x2_format="NZ")
    assert perfmodel.predict_many("npu_quant_matmul", "atlas-a2", [args])[0].latency_us == qmm(1, 4096, 4096,
                                                                                             x2_format="NZ")
    for bad in ("NCHW", 3, True, None, 29.0):
        with pytest.raises(ValueError, match="x2_format"):
            qmm(1, 256, 256, x2_format=bad)
    # the MoE expert matmul's weights likewise (grouped_matmul weight_format)
    g = dict(x=T((4096, 7168), "bfloat16"), weight=T((8, 7168, 2048), "bfloat16"),
             group_list=[512 * e for e in range(1, 9)])
    nd = perfmodel.predict("grouped_matmul", "atlas-a2", **g).latency_us
    assert perfmodel.predict("grouped_matmul", "atlas-a2", weight_format="ND", **g).latency_us == nd
    assert perfmodel.predict("grouped_matmul", "atlas-a2", weight_format=29, **g).latency_us < nd
    with pytest.raises(ValueError, match="weight_format"):
        perfmodel.predict("grouped_matmul", "atlas-a2", weight_format="nd2", **g)
    # bytes read: x, and each used expert's weight as stored (N = 2040 pads to 2048 in NZ)
    g["weight"] = T((8, 7168, 2040), "bfloat16")
    for fmt, n in (("ND", 2040), ("NZ", 2048)):
        got = perfmodel.predict("grouped_matmul", "atlas-a2", weight_format=fmt, **g).bytes_read
        assert got == (4096 * 7168 + 8 * 7168 * n) * 2, fmt


def test_quant_matmul_and_grouped_matmul_start_as_one_launch_class():
    # both are Ascend C kernels on the Matmul API: the calibration fits one start cost for them, so either one
    # held out is predicted from the other's measurements
    q = build_work("npu_quant_matmul", "atlas-a2", **op_args("npu_quant_matmul", "atlas-a2"))[0]
    g = build_work("grouped_matmul", "atlas-a2", **op_args("grouped_matmul", "atlas-a2"))[0]
    m = build_work("matmul", "atlas-a2", **op_args("matmul", "atlas-a2"))[0]
    assert q.launch_class == g.launch_class == ops.MATMUL_API != (m.launch_class or m.kernel)


def test_grouped_matmul_rows_of_the_measured_set():
    from perfmodel.published import calibration_set, measured_args
    rows = calibration_set()
    g = rows[rows["op"] == "grouped_matmul"]
    fitted, held = g[g["trust"] == "measured"], g[g["trust"] == "holdout"]
    assert len(fitted) == 18 and set(fitted["target"]) == {"Ascend910B2"}
    on950 = held[held["target"] == "ascend-950pr"]
    assert len(on950) == 18 and sorted(map(repr, on950["args"])) == sorted(map(repr, fitted["args"]))  # same cases
    # and four 32-expert MoE layers (FlagGems' benchmark), their chip not named
    moe = held[held["target"] != "ascend-950pr"]
    assert len(moe) == 4 and set(moe["target"]) == {"Ascend910B2"}
    assert all(a["weight"].shape[0] == 32 and len(a["group_list"]) == 32 for a in moe["args"])
    a = measured_args("grouped_matmul", "x 2048x1024; w 8x2048x1024; bias 8x2048; group_list [256, 512]",
                      "x float16; w float16; bias float16; out float16", "split_item=2; transpose_weight=true")
    assert a["weight"].shape == (8, 2048, 1024) and a["transpose_weight"] and a["group_list"] == (256, 512)
    assert a["bias"].shape == (8, 2048) and str(a["x"].dtype) == "float16"
    assert not measured_args("grouped_matmul", "x 64x32; w 4x32x32; group_list [16, 32, 48, 64]",
                             "x float16; w float16; out float16", "transpose_weight=false")["transpose_weight"]


def test_quant_matmul_int32_bias_goes_to_the_bias_table_each_block():
    # SetBias per block: GM -> L1 -> bias table, an unprefetched load of baseN int32 before the block's mmad
    # (beside the per-channel scale words before its store); a float bias is the vector epilogue's
    hw = hardware("atlas-a2")
    args = dict(x1=T((1024, 2048), "int8"), x2=T((2048, 2048), "int8"), scale=T((2048,), "int64"),
                output_dtype="float16")
    plain = build_work("npu_quant_matmul", "atlas-a2", **args)[0]
    biased = build_work("npu_quant_matmul", "atlas-a2", bias=T((2048,), "int32"), **args)[0]
    base_n = biased.tiles["base_n"]
    assert biased.loops[1].pipes["mte2"] == pytest.approx(plain.loops[1].pipes["mte2"] + hw.dma("gm_to_l1", base_n * 4))
    assert biased.loops[1].read_bytes == plain.loops[1].read_bytes + base_n * 4


def test_950_mix_epilogue_takes_the_block_in_ub_on_two_aivs_under_the_next_block():
    # arch35 qbmm_mix_online_dynamic.h: the FixPipe copies each int32 block into both AIVs' UB (no GM
    # workspace), each AIV dequantizes half the rows while the AIC computes the next block; A2's TBE mix
    # kernel writes the block to GM and one AIV reads it back after it
    args = dict(x1=T((1024, 4096), "int8"), x2=T((4096, 4096), "int8"), scale=T((4096,), "float32"),
                output_dtype="bfloat16")
    a2 = build_work("npu_quant_matmul", "atlas-a2", **args)[0]
    w = build_work("npu_quant_matmul", "ascend-950pr", **args)[0]
    hw = hardware("ascend-950pr")
    cube, fix, epi = w.loops
    bm, bn = w.tiles["base_m"], w.tiles["base_n"]
    assert fix.write_bytes == 0 and a2.loops[1].write_bytes > 0
    assert epi.behind and not a2.loops[2].behind
    assert (bm, bn) == (256, 256)
    assert epi.n == 4 * w.tiles["blocks_per_core"]                  # four chunks of each AIV's half of a block
    assert epi.read_bytes == bn * 4 and epi.pipes["mte2"] == pytest.approx(hw.dma("gm_to_ub", bn * 4))  # the scale
    assert epi.write_bytes == 32 * bn * 2                           # 128 of the block's rows an AIV, 32 a chunk
    # behind the cube: the dequant adds only its last block (and any excess) to the critical core
    cal = perfmodel.calibration.default_calibration()
    fp16 = build_work("npu_quant_matmul", "ascend-950pr", **{**args, "scale": T((4096,), "int64"),
                                                              "output_dtype": "float16"})[0]
    p, q = (combine(x, cal.params_for("950"), "npu_quant_matmul", "ascend-950pr") for x in (w, fp16))
    assert p.core_us < q.core_us * 1.15


def test_sweep_points_of_grouped_matmul_split_the_tokens_over_eight_experts():
    from perfmodel.sweep import GROUPED_MATMUL_EXPERTS, Point, build_args
    for t in (1, 5, 8, 1001):
        a = build_args(Point("grouped_matmul", "atlas-a2", t, 256, "bfloat16", 512))
        sizes = ops.group_sizes(a["group_list"])
        assert len(sizes) == GROUPED_MATMUL_EXPERTS == a["weight"].shape[0] and sum(sizes) == t
        assert max(sizes) - min(sizes) <= 1            # as evenly as they go (fewer tokens than experts: empty groups)
        assert perfmodel.predict("grouped_matmul", "atlas-a2", **a).latency_us > 0


def test_bound_of_a_multi_kernel_operator_agrees_with_its_pipe_times():
    """Fake quant along axis 1 launches Transposes around its kernel: the bound is read off the pipe times the
    breakdown adds up over every kernel (it once came from the fake-quant kernel alone: vector-bound next to a
    larger mte2)."""
    p = perfmodel.predict("fake_quantize_per_channel_affine_cachemask", "atlas-a2", x=T((16384, 7168), "float32"),
                          scale=T((7168,), "float32"), zero_point=T((7168,), "int32"), axis=1, quant_min=-128,
                          quant_max=127)
    assert len(p.kernels) > 1
    memory = max(p.pipes_us["mte1"], p.pipes_us["mte2"], p.pipes_us["mte3"], p.chip_us)
    others = {k: p.pipes_us[k] for k in ("vector", "cube", "fixpipe", "scalar")}
    want = "memory" if memory >= max(others.values()) else max(others, key=others.get)
    assert p.bound == want, (p.bound, p.pipes_us, p.chip_us)


def test_sweep_rows_carry_core_chip_and_kernels():
    from perfmodel import sweep
    df = sweep.run_sweep(sweep.grid(ops=["fake_quantize_per_channel_affine_cachemask"], products=["atlas-a2"],
                                    tokens=[64], dtypes=["float16"]), progress=False)
    row = df.iloc[0]
    p = perfmodel.predict("fake_quantize_per_channel_affine_cachemask", "atlas-a2",
                          **sweep.build_args(sweep.Point("fake_quantize_per_channel_affine_cachemask", "atlas-a2", 64,
                                                         dtype="float16")))
    assert (row["core_us"], row["chip_us"], row["latency_us"]) == (p.core_us, p.chip_us, p.latency_us)
    assert row["kernels"] == "; ".join(f"{k} {t:.4g} us" for k, t in p.kernels) and "Transpose" in row["kernels"]


def test_310p_vector_work_runs_at_the_ai_core_clock():
    """On 310P the kernels run on the AI Cores (coupled), whose vector unit runs at the AI Core's clock (1060, 800
    and 550 MHz on P3, P5, P7); the INI's vec_freq (1000 MHz) is the standalone Vector Cores'. The same
    DynamicQuant's vector pipe scales with the AI Core clock."""
    x = T((8192, 4096), "float16")
    vec = {s: perfmodel.predict("npu_dynamic_quant", s, x=x).pipes_us["vector"] for s in
           ("Ascend310P3", "Ascend310P5", "Ascend310P7")}
    assert vec["Ascend310P7"] / vec["Ascend310P3"] == pytest.approx(1060 / 550)
    assert vec["Ascend310P5"] / vec["Ascend310P3"] == pytest.approx(1060 / 800)
