"""MoeInitRoutingQuant: bit-exact against a slow NumPy reference written from ARITHMETIC.md section 5
(stable argsort + numpy float16 arithmetic, as the vendor golden gen_data.py and the vllm-ascend golden
describe it), against torch as an independent peer, plus validation and plan checks."""
import sys

import numpy as np
import pytest

import npusim
from npusim import AclnnError, TensorSpec, formats, make_plan
from npusim.testing import assert_bitexact

BF16 = formats.bfloat16


# ---------------------------------------------------------------- reference (independent of the kernel)

def ref_quant(x, scale, offset):
    """sat_int8(rint(fp16(fp16(fp16(x) * fp16(scale)) + fp16(offset)))), numpy float16 arithmetic.
    numpy rounds each float16 op once (computed in float32, which is wide enough for exact f16 rounding).
    scale/offset: double -> float32 attribute -> half. Overflow gives inf (saturates), NaN gives 0."""
    with np.errstate(over="ignore", invalid="ignore"):
        h = x.astype(np.float32).astype(np.float16) if x.dtype == BF16 else x.astype(np.float16)
        sh = np.float16(np.float32(scale))
        oh = np.float16(np.float32(offset))
        v = (h * sh).astype(np.float16)
        v = (v + oh).astype(np.float16)
        r = np.rint(v.astype(np.float64))
    r = np.where(np.isnan(r), 0.0, r)
    return np.clip(r, -128, 127).astype(np.int8)


def reference(x, row_idx, expert_idx, active_num, scale, offset):
    n, k = expert_idx.shape
    order = np.argsort(expert_idx.reshape(-1), kind="stable")
    expanded_expert = expert_idx.reshape(-1)[order].astype(np.int32)
    sorted_row = row_idx.reshape(-1)[order]
    expanded_row = np.full(n * k, -1, np.int32)
    for t, src in enumerate(sorted_row):
        expanded_row[src] = t
    rows = min(n, active_num) * k
    expanded_x = np.zeros((rows, x.shape[1]), np.int8)
    for t in range(rows):
        expanded_x[t] = ref_quant(x[sorted_row[t] % n], scale, offset)
    return expanded_x, expanded_row, expanded_expert


def standard_row_idx(n, k):
    return np.arange(n * k, dtype=np.int32).reshape(k, n).T.copy()


def check(x, row_idx, expert_idx, active_num, scale, offset, product="atlas-a2"):
    got = npusim.moe_init_routing_quant(x, row_idx, expert_idx, active_num, scale, offset, product=product)
    want = reference(x, row_idx, expert_idx, active_num, scale, offset)
    for name, g, w in zip(("expanded_x", "expanded_row_idx", "expanded_expert_idx"), got, want):
        assert_bitexact(g, w, err_msg=name)
    return got


def make_x(rng, n, h, dtype, mag=5.0):
    return (rng.standard_normal((n, h)) * mag).astype(dtype)


# ---------------------------------------------------------------- golden-like grid

@pytest.mark.parametrize("dtype", [np.float16, BF16, np.float32])
def test_vllm_ascend_like_grid(dtype):
    rng = np.random.default_rng(7)
    for _ in range(14):
        e = int(rng.integers(2, 501))
        n = int(rng.integers(1, 101))
        h = int(rng.integers(12, 101))
        k = int(rng.integers(1, 13))
        active = int(rng.choice([0, max(n // 3, 0), n // 2, n - 1, n, n + 5, 10 * n]))
        x = make_x(rng, n, h, dtype)
        experts = rng.integers(0, e, (n, k)).astype(np.int32)
        scale, offset = float(rng.uniform(0.1, 30)), float(rng.uniform(-20, 20))
        check(x, standard_row_idx(n, k), experts, active, scale, offset)


def test_atlas_a3_runs_the_a2_kernel():
    """Atlas A3 (beyond seed 004: the op definition and the current doc list it) follows the same reference."""
    rng = np.random.default_rng(11)
    x = make_x(rng, 33, 64, BF16)
    experts = rng.integers(0, 256, (33, 8)).astype(np.int32)
    check(x, standard_row_idx(33, 8), experts, 33 * 8, 2.5, -1.0, product="atlas-a3")


def test_ties_in_expert_ids_keep_flattened_position():
    rng = np.random.default_rng(1)
    n, k, h = 37, 6, 16
    x = make_x(rng, n, h, np.float16)
    experts = rng.integers(0, 3, (n, k)).astype(np.int32)       # many ties
    _, _, ee = check(x, standard_row_idx(n, k), experts, n, 2.0, 0.5)
    assert np.all(np.diff(ee) >= 0)
    check(x, standard_row_idx(n, k), np.zeros((n, k), np.int32), n, 2.0, 0.5)   # all tied


def test_non_standard_row_idx_permutation():
    rng = np.random.default_rng(2)
    n, k, h = 23, 5, 20
    x = make_x(rng, n, h, BF16)
    experts = rng.integers(0, 9, (n, k)).astype(np.int32)
    row_idx = rng.permutation(n * k).astype(np.int32).reshape(n, k)
    for active in (0, 4, n, 3 * n):
        check(x, row_idx, experts, active, 7.5, -3.0)


def test_large_multi_core_sort_and_wide_expert_range():
    rng = np.random.default_rng(3)
    n, k, h = 1500, 8, 24                    # n*k = 12000 > one-core sort capacity (tiling key 2)
    x = make_x(rng, n, h, np.float32, mag=20)
    experts = rng.integers(-(1 << 24), (1 << 24) + 1, (n, k)).astype(np.int32)   # two radix passes, negatives
    check(x, standard_row_idx(n, k), experts, n, 3.0, 1.0)
    experts = rng.integers(0, 256, (n, k)).astype(np.int32)
    check(x, standard_row_idx(n, k), experts, 100, 3.0, 1.0)      # n/2 > active: gather by activated row
    exact_big = np.where(rng.random((n, k)) < 0.5, 1 << 30, -(1 << 28)).astype(np.int32)
    check(x, standard_row_idx(n, k), exact_big, n, 3.0, 1.0)      # beyond 2^24 but exact in fp32


# ---------------------------------------------------------------- quantization pipeline, exhaustively

SCALE_OFFSETS = [(1.0, 0.0), (0.5, 3.3), (37.0, -5.25), (1000.0, -7.0), (1e-3, 127.6), (-2.5, -128.4),
                 (1e5, 0.0), (3.0, -7e4), (65504.0, 65504.0)]


def _quant_rows_match_reference(x):
    """One expert, k = 1: expanded_x is x quantized row by row; compare under every scale/offset pair."""
    n = x.shape[0]
    for scale, offset in SCALE_OFFSETS:
        ex, _, _ = npusim.moe_init_routing_quant(x, standard_row_idx(n, 1), np.zeros((n, 1), np.int32), n,
                                                 scale, offset)
        assert_bitexact(ex, ref_quant(x, scale, offset), err_msg=f"scale={scale} offset={offset}")


@pytest.mark.parametrize("dtype", [np.float16, BF16])
def test_every_16bit_code(dtype):
    """All 65536 codes (incl. inf, NaN, subnormals): fp16 overflow and int8 saturation."""
    x = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(dtype).reshape(256, 256)
    _quant_rows_match_reference(x)


def test_fp32_rounding_boundaries_and_specials():
    rng = np.random.default_rng(4)
    halves = np.arange(0, 0x7C00, dtype=np.uint16).view(np.float16).astype(np.float32)
    mids = ((halves[:-1].astype(np.float64) + halves[1:]) / 2).astype(np.float32)     # exact fp16 ties
    near = np.concatenate([mids, np.nextafter(mids, np.float32(np.inf)), np.nextafter(mids, np.float32(0))])
    vals = np.concatenate([near, -near, rng.standard_normal(2000).astype(np.float32) * 1e5,
                           np.array([np.inf, -np.inf, np.nan, 65504, 65520, 65519.99, 7e4, -7e4, 1e-8],
                                    np.float32)])
    vals = np.concatenate([vals, np.zeros((-len(vals)) % 128, np.float32)]).reshape(-1, 128)
    _quant_rows_match_reference(vals)


def test_scale_goes_through_fp32_attribute():
    """double -> fp32 -> fp16 rounds twice: 1 + 2^-11 + 2^-30 gives 1.0 (a direct fp16 cast gives 1 + 2^-10)."""
    scale = 1 + 2.0 ** -11 + 2.0 ** -30
    x = np.full((1, 4), 1024.0, np.float16)
    ex, _, _ = npusim.moe_init_routing_quant(x, np.zeros((1, 1), np.int32), np.zeros((1, 1), np.int32), 1,
                                             scale, -1000.0)
    assert ex.tolist() == [[24] * 4]


# ---------------------------------------------------------------- independent peer: torch

def test_against_torch_stable_sort_and_fp16_ops():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    n, k, h = 300, 4, 40
    x = make_x(rng, n, h, np.float32, mag=40)
    experts = rng.integers(0, 17, (n, k)).astype(np.int32)
    row_idx = standard_row_idx(n, k)
    scale, offset = 3.7, -2.2
    ex, er, ee = npusim.moe_init_routing_quant(x, row_idx, experts, n, scale, offset)
    sorted_e, order = torch.sort(torch.from_numpy(experts).flatten(), stable=True)
    src = torch.from_numpy(row_idx).flatten()[order]
    want_er = torch.empty(n * k, dtype=torch.int32)
    want_er[src] = torch.arange(n * k, dtype=torch.int32)
    sh = torch.tensor(np.float32(scale)).half()
    oh = torch.tensor(np.float32(offset)).half()
    q = torch.from_numpy(x).half()[src % n] * sh + oh          # two fp16 ops, each rounded
    want_ex = torch.clamp(torch.round(q.float()), -128, 127).to(torch.int8)   # torch.round: half to even
    assert_bitexact(ee, sorted_e.numpy().astype(np.int32))
    assert_bitexact(er, want_er.numpy())
    assert_bitexact(ex, want_ex.numpy())


# ---------------------------------------------------------------- aclnn face

def _aclnn_args(n=6, k=2, h=8, active=6):
    rng = np.random.default_rng(6)
    x = make_x(rng, n, h, np.float16)
    experts = rng.integers(0, 4, (n, k)).astype(np.int32)
    outs = (np.full((min(n, active) * k, h), 99, np.int8), np.full(n * k, -5, np.int32),
            np.full(n * k, -5, np.int32))
    return x, standard_row_idx(n, k), experts, active, outs


def test_aclnn_two_phase_matches_function():
    x, r, e, active, outs = _aclnn_args()
    ws, ex = npusim.aclnn.aclnnMoeInitRoutingQuantGetWorkspaceSize(x, r, e, active, 4.0, 1.0, *outs)
    assert ws >= 16 * 1024 * 1024
    assert all((o == v).all() for o, v in zip(outs, (99, -5, -5)))     # nothing written in phase one
    assert npusim.aclnn.aclnnMoeInitRoutingQuant(npusim.aclnn.workspace(ws), ws, ex) == 0
    for g, w in zip(outs, reference(x, r, e, active, 4.0, 1.0)):
        assert_bitexact(g, w)
    with pytest.raises(AclnnError):
        npusim.aclnn.aclnnMoeInitRoutingQuant(npusim.aclnn.workspace(ws), ws, ex)           # single use


def test_gather_never_reads_the_callers_row_index_buffer(monkeypatch):
    # the gather indexes output rows by expanded_row_idx: read from the caller's buffer, another thread
    # rewriting it mid-gather could send a write out of bounds (it crashed before this rule)
    m = sys.modules["npusim.moe_init_routing_quant"]      # (the package attribute is the function)
    x, r, e, active, outs = _aclnn_args()
    seen = []
    real = m._k.gather_quant

    def spy(x_, table, index, active_rows, out):
        seen.append(np.shares_memory(index, outs[1]))
        return real(x_, table, index, active_rows, out)

    monkeypatch.setattr(m._k, "gather_quant", spy)
    ws, ex = npusim.aclnn.aclnnMoeInitRoutingQuantGetWorkspaceSize(x, r, e, active, 4.0, 1.0, *outs)
    npusim.aclnn.aclnnMoeInitRoutingQuant(npusim.aclnn.workspace(ws), ws, ex)
    assert seen == [False]
    for g, w in zip(outs, reference(x, r, e, active, 4.0, 1.0)):
        assert_bitexact(g, w)


def test_aclnn_rejects_bad_outputs_untouched():
    x, r, e, active, outs = _aclnn_args()
    bad = [     # the aclnn doc lists a wrong output shape as a tiling error (561002)
        ((np.zeros((11, 8), np.int8), outs[1], outs[2]), 561002),
        ((outs[0].astype(np.int16), outs[1], outs[2]), 161002),
        ((outs[0], np.zeros(12, np.int64), outs[2]), 161002),
        ((outs[0], outs[1], np.zeros(13, np.int32)), 561002),
        ((outs[0], outs[1], None), 161001),
    ]
    for o, status in bad:
        with pytest.raises(AclnnError) as ei:
            npusim.aclnn.aclnnMoeInitRoutingQuantGetWorkspaceSize(x, r, e, active, 4.0, 1.0, *o)
        assert ei.value.status == status
    r_bad = r.copy()
    r_bad[0, 0] = r_bad[1, 0]
    with pytest.raises(AclnnError, match="rowIdx"):
        npusim.aclnn.aclnnMoeInitRoutingQuantGetWorkspaceSize(x, r_bad, e, active, 4.0, 1.0, *outs)
    assert all((o == v).all() for o, v in zip(outs, (99, -5, -5)))
    ws, ex = npusim.aclnn.aclnnMoeInitRoutingQuantGetWorkspaceSize(x, r, e, active, 4.0, 1.0, *outs)
    with pytest.raises(AclnnError, match="workspaceSize"):
        npusim.aclnn.aclnnMoeInitRoutingQuant(npusim.aclnn.workspace(ws - 1), ws - 1, ex)


def test_aclnn_outputs_sharing_memory_with_inputs_or_each_other():
    """An output array that is also an input's storage still gets the function's answer (inputs are read
    before anything is written); two outputs in one buffer cannot both be right and are rejected."""
    rng = np.random.default_rng(9)
    n, k, h = 20, 3, 8
    x = make_x(rng, n, h, np.float16)
    r, e = standard_row_idx(n, k), rng.integers(0, 5, (n, k)).astype(np.int32)
    want = npusim.moe_init_routing_quant(x, r, e, n, 2.0, 0.5)
    for alias in ("expert", "row"):
        r2, e2 = r.copy(), e.copy()
        outs = [np.zeros((n * k, h), np.int8), np.zeros(n * k, np.int32), np.zeros(n * k, np.int32)]
        if alias == "expert":
            outs[2] = e2.reshape(-1)
        else:
            outs[1] = r2.reshape(-1)
        ws, ex = npusim.aclnn.aclnnMoeInitRoutingQuantGetWorkspaceSize(x, r2, e2, n, 2.0, 0.5, *outs)
        npusim.aclnn.aclnnMoeInitRoutingQuant(npusim.aclnn.workspace(ws), ws, ex)
        for g, w in zip(outs, want):
            assert_bitexact(g, w, err_msg=alias)
    shared = np.zeros(n * k, np.int32)
    with pytest.raises(AclnnError) as ei:
        npusim.aclnn.aclnnMoeInitRoutingQuantGetWorkspaceSize(x, r, e, n, 2.0, 0.5, np.zeros((n * k, h), np.int8),
                                                              shared, shared)
    assert ei.value.param == "expandedExpertIdxOut"


# ---------------------------------------------------------------- validation

def _args():
    x = np.ones((4, 8), np.float16)
    return dict(x=x, row_idx=standard_row_idx(4, 2), expert_idx=np.zeros((4, 2), np.int32), active_num=4,
                scale=1.0, offset=0.0)


@pytest.mark.parametrize("change, status, param", [
    (dict(x=None), 161001, "x"),
    (dict(expert_idx=None), 161001, "expert_idx"),
    (dict(product="atlas-inference"), 161002, "product"),
    (dict(product="ascend-950pr"), 161002, "product"),
    (dict(x=np.ones((4, 8), np.int8)), 161002, "x"),
    (dict(x=np.ones((4, 8, 1), np.float16)), 561002, "x"),            # the aclnn doc: a tiling error
    (dict(row_idx=standard_row_idx(4, 2).astype(np.int64)), 161002, "row_idx"),
    (dict(expert_idx=np.zeros((4, 2), np.float32)), 161002, "expert_idx"),
    (dict(row_idx=np.arange(8, dtype=np.int32).reshape(2, 4)), 561002, "row_idx"),
    (dict(expert_idx=np.zeros((3, 2), np.int32), row_idx=standard_row_idx(3, 2)), 161002, "expert_idx"),
    (dict(active_num=-1), 561002, "active_num"),
    (dict(active_num=2.0), 161002, "active_num"),
    (dict(active_num=True), 161002, "active_num"),
    (dict(scale=float("nan")), 161002, "scale"),
    (dict(offset=float("inf")), 161002, "offset"),
    (dict(scale="1"), 161002, "scale"),
    (dict(row_idx=standard_row_idx(4, 2) + 1), 161002, "row_idx"),            # 8 out of range
    (dict(row_idx=np.zeros((4, 2), np.int32)), 161002, "row_idx"),            # duplicates
    (dict(row_idx=-standard_row_idx(4, 2)), 161002, "row_idx"),
    (dict(expert_idx=np.full((4, 2), (1 << 24) + 1, np.int32)), 161002, "expert_idx"),
    (dict(expert_idx=np.full((4, 2), -(1 << 31), np.int32) + 1), 161002, "expert_idx"),
    (dict(active_num=1 << 63), 161002, "active_num"),                         # aclnn's activeNum is int64
    (dict(scale=10 ** 400), 161002, "scale"),                                 # no double holds it
    (dict(x=TensorSpec((4, 8), "float16")), 161002, "x"),                     # specs have no data
    (dict(row_idx=TensorSpec((4, 2), "int32")), 161002, "row_idx"),
    (dict(expert_idx=TensorSpec((4, 2), "int32")), 161002, "expert_idx"),
])
def test_validation_errors(change, status, param):
    args = _args()
    args.update(change)
    with pytest.raises(AclnnError) as ei:
        npusim.moe_init_routing_quant(**args)
    assert ei.value.status == status
    assert ei.value.param == param
    assert "moe_init_routing_quant" in str(ei.value)


def test_empty_and_accepted_edge_inputs():
    args = _args()
    args.update(active_num=0)
    ex, er, ee = npusim.moe_init_routing_quant(**args)
    assert ex.shape == (0, 8) and er.shape == (8,) and ee.shape == (8,)
    ex, er, ee = npusim.moe_init_routing_quant(np.ones((0, 8), BF16), np.zeros((0, 3), np.int32),
                                               np.zeros((0, 3), np.int32), 5, 1.0, 0.0)
    assert ex.shape == (0, 8) and er.shape == (0,)
    # big-endian and non-contiguous inputs, an Atlas A2 SoC name
    x = np.arange(32, dtype=">f4").reshape(4, 8)
    got = npusim.moe_init_routing_quant(x, standard_row_idx(4, 2).astype(">i4"), np.ones((2, 4), np.int32).T, 4,
                                        2.0, 0.0, product="Ascend910B4")
    want = reference(x.astype(np.float32), standard_row_idx(4, 2), np.ones((4, 2), np.int32), 4, 2.0, 0.0)
    for g, w in zip(got, want):
        assert_bitexact(g, w)


# ---------------------------------------------------------------- plan (moe_init_routing_quant_tiling.cpp rules)

def _plan(n, k, h, active, dtype="bfloat16", product="atlas-a2"):
    return make_plan("moe_init_routing_quant", x=TensorSpec((n, h), dtype), row_idx=TensorSpec((n, k), "int32"),
                     expert_idx=TensorSpec((n, k), "int32"), active_num=active, product=product)


def test_plan_benchmark_shape():
    p = _plan(8192, 8, 7168, 8192)
    # hand-derived: UB 196608 B, 48 AIV: sort capacity (196608 - 48*32)/32 = 6096 -> 6080 (32-aligned);
    # 65536 > 6080 -> multi-core sort, ceil(65536/6080) = 11 -> 4^2 = 16 cores of 4096; 16/4 = 4 merge cores.
    assert p.tiling_key == 2 and p.block_dim == 48 and p.core_type == "aiv"
    t = p.tiles
    assert t["sortLoopMaxElement"] == 6080 and t["sort_mode"] == "multi_core"
    assert t["vbs"]["needCoreNum"] == 16 and t["vbs"]["perCoreElements"] == 4096
    assert t["vms_middle_need_core_num"] == 4
    g = t["gather"]
    # SPLIT_N: ceil(8192/48) = 171 rows per core; 4094 columns per tile; (98304 - 8*32) // 41260 = 2 rows per loop
    assert g["split"] == "n" and g["perCoreRows"] == 171 and g["maxColsOneLoop"] == 4094
    assert g["perCorePerLoopRows"] == 2 and g["colsLoops"] == 2 and g["activateRows"] == 65536
    assert t["double_buffer"] is False
    assert p.outputs["expanded_x"].shape == (65536, 7168)


def test_plan_key_selection():
    assert _plan(100, 8, 64, 100).tiling_key == 1                 # 800 <= 6080: one-core sort
    assert _plan(100, 8, 64, 49).tiling_key == 3                  # 100/2 > 49: gather by activated row
    assert _plan(100, 8, 64, 50).tiling_key == 1
    assert _plan(2000, 8, 64, 10).tiling_key == 4
    small = _plan(4, 8, 64, 4)                                    # 32 elements: one core launched
    assert small.block_dim == 1
    assert _plan(4, 9, 64, 4).block_dim == 48
    assert _plan(4, 9, 64, 4).tiles["gather"]["split"] == "k"     # n < cores and n < k
    assert _plan(4, 9, 64, 4).tiles["gather"]["perCoreK"] == 1
    with pytest.raises(AclnnError):
        _plan(4, 9, 64, 4, product="atlas-inference")
    with pytest.raises(AclnnError):
        _plan(4, 9, 64, 4, dtype="int8")
