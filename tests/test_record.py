"""perfmodel.record and `npusim record`: every launch the emulator makes is recorded once, with the plan it ran,
and predicted as perfmodel.predict predicts the same call from shapes alone; failed calls, aclnn's first phase
and calls outside the block record nothing."""
import sys
import threading

import ml_dtypes
import numpy as np
import pandas as pd
import pytest

import npusim
import perfmodel
from npusim import aclnn
from npusim.errors import AclnnError
from npusim.plan import TensorSpec, launch_details, make_plan
from perfmodel import cli
from perfmodel.record import TABLE_COLUMNS

RNG = np.random.default_rng(7)


def _calls():
    """(operator, product, numpy-face call, the same call's perfmodel.predict arguments) for every operator."""
    x = RNG.standard_normal((24, 512)).astype(np.float16)
    x1 = RNG.integers(-128, 128, (24, 512), dtype=np.int8)
    x2 = RNG.integers(-128, 128, (512, 256), dtype=np.int8)
    scale = RNG.random(256).astype(np.float32)
    fx = RNG.standard_normal((4, 96)).astype(np.float32)
    fs, fz = np.full(4, 0.05, np.float32), np.zeros(4, np.int32)
    mx = RNG.standard_normal((6, 64)).astype(np.float16)
    rows = np.arange(12, dtype=np.int32).reshape(2, 6).T.copy()
    experts = RNG.integers(0, 4, (6, 2), dtype=np.int32)
    cache = np.zeros((32, 128), ml_dtypes.float8_e4m3fn)
    cscale = np.zeros((32, 1), np.float32)
    ix = RNG.standard_normal((8, 128)).astype(ml_dtypes.bfloat16)
    slots = np.arange(8, dtype=np.int32)
    return [
        ("npu_dynamic_quant", "atlas-a2", lambda: npusim.npu_dynamic_quant(x, product="atlas-a2"), dict(x=x)),
        ("npu_dynamic_quant_asymmetric", "ascend-950pr",
         lambda: npusim.npu_dynamic_quant_asymmetric(x, product="ascend-950pr"), dict(x=x)),
        ("npu_quant_matmul", "atlas-a3",
         lambda: npusim.npu_quant_matmul(x1, x2, scale, output_dtype="float16", product="atlas-a3"),
         dict(x1=x1, x2=x2, scale=scale, output_dtype="float16")),
        ("fake_quantize_per_channel_affine_cachemask", "atlas-a2",
         lambda: npusim.fake_quantize_per_channel_affine_cachemask(fx, fs, fz, 0, -128, 127, product="atlas-a2"),
         dict(x=fx, scale=fs, zero_point=fz, axis=0, quant_min=-128, quant_max=127)),
        ("moe_init_routing_quant", "atlas-a2",
         lambda: npusim.moe_init_routing_quant(mx, rows, experts, 12, 1.0, 0.0, product="atlas-a2"),
         dict(x=mx, row_idx=rows, expert_idx=experts, active_num=12, scale=1.0, offset=0.0)),
        ("npu_trans_quant_param", "atlas-a3", lambda: npusim.npu_trans_quant_param(scale, scale, 1, product="atlas-a3"),
         dict(scale=scale, offset=scale, round_mode=1)),
        ("indexer_compress_epilog", "ascend-950pr",
         lambda: npusim.indexer_compress_epilog(cache, cscale, ix, slots, product="ascend-950pr"),
         dict(indexer_compress_cache=cache, indexer_compress_scale=cscale, x=ix, slot_mapping=slots)),
    ]


@pytest.mark.parametrize("case", _calls(), ids=lambda c: c[0])
def test_each_operator_records_its_launch_and_predicts_it_as_predict_does(case):
    op, product, call, args = case
    with perfmodel.record() as rec:
        call()
    assert len(rec) == 1
    plan, details = rec.launches[0]
    assert plan == make_plan(op, product=product, **args) and details == {}
    row = rec.table().iloc[0]
    expected = perfmodel.predict(op, product, **{k: TensorSpec(v.shape, v.dtype) if isinstance(v, np.ndarray)
                                                  else v for k, v in args.items()})
    assert row["op"] == op and row["product"] == product
    assert row["latency_us"] == expected.latency_us > 0


def test_only_launches_inside_the_block_and_of_successful_calls_are_recorded():
    x = np.ones((4, 64), np.float16)
    npusim.npu_dynamic_quant(x)
    with perfmodel.record() as rec:
        with pytest.raises(AclnnError):
            npusim.npu_dynamic_quant(x.astype(np.float64))          # rejected: nothing launched
        npusim.npu_dynamic_quant(x)
    npusim.npu_dynamic_quant(x)
    assert len(rec) == 1


def test_an_aclnn_call_records_its_launch_once_when_it_runs_and_predicts_it_as_the_numpy_face():
    x = RNG.standard_normal((4, 64)).astype(np.float16)
    y, s, o = np.zeros((4, 64), np.int8), np.zeros(4, np.float32), np.zeros(4, np.float32)
    with perfmodel.record() as rec:
        ws, ex = aclnn.aclnnDynamicQuantV2GetWorkspaceSize(x, None, None, 2, y, s, None, product="atlas-a2")
        assert len(rec) == 0                    # phase one plans, it launches nothing
        aclnn.aclnnDynamicQuantV2(aclnn.workspace(ws), ws, ex)
        ws, ex2 = aclnn.aclnnDynamicQuantV2GetWorkspaceSize(x, None, None, 2, y, s, o, product="atlas-a2")
        aclnn.aclnnDynamicQuantV2(aclnn.workspace(ws), ws, ex2)
    assert len(rec) == 2 and rec.launches[0][0] == ex.plan
    spec = TensorSpec(x.shape, x.dtype)
    assert rec.table()["latency_us"].tolist() == [
        perfmodel.predict("npu_dynamic_quant", x=spec).latency_us,
        perfmodel.predict("npu_dynamic_quant_asymmetric", x=spec).latency_us]


def test_launches_of_other_threads_are_recorded():
    x = np.ones((4, 64), np.float16)
    with perfmodel.record() as rec:
        threads = [threading.Thread(target=npusim.npu_dynamic_quant, args=(x,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(rec) == 4


def test_the_summary_groups_equal_launches_and_adds_them_up():
    small, big = np.ones((4, 64), np.float16), np.ones((4096, 1024), np.float16)
    with perfmodel.record() as rec:
        for _ in range(3):
            npusim.npu_dynamic_quant(small)
        npusim.npu_dynamic_quant(big)
    s = rec.summary()
    one = perfmodel.predict("npu_dynamic_quant", x=TensorSpec(small.shape, small.dtype)).latency_us
    many = perfmodel.predict("npu_dynamic_quant", x=TensorSpec(big.shape, big.dtype)).latency_us
    assert list(s["calls"]) == [1, 3]
    assert [c.split(" ->")[0] for c in s["call"]] == ["x 4096x1024 float16", "x 4x64 float16"]
    assert s["us_total"].tolist() == pytest.approx([many, 3 * one])
    assert s["share_pct"].sum() == pytest.approx(100.0)
    assert rec.total_us() == pytest.approx(many + 3 * one)
    assert "4 launches on atlas-a2" in rec.report()
    with perfmodel.record() as empty:
        pass
    assert empty.report().startswith("no launches recorded")
    assert empty.table().columns.tolist() == TABLE_COLUMNS == rec.table().columns.tolist()


def test_launches_that_differ_in_an_output_dtype_an_attribute_or_the_soc_are_not_merged():
    x1 = RNG.integers(-128, 128, (64, 256), dtype=np.int8)
    w = RNG.integers(-128, 128, (256, 256), dtype=np.int8)
    s = np.full(256, 1e-3, np.float32)
    x = RNG.standard_normal((64, 256)).astype(np.float16)
    with perfmodel.record() as rec:
        for out in ("float16", "int8", "float16"):
            npusim.npu_quant_matmul(x1, w, s, output_dtype=out)
        npusim.npu_dynamic_quant(x, dst_type="int8")
        npusim.npu_dynamic_quant(x, dst_type="int4")
        npusim.npu_dynamic_quant(x, product="Ascend910B1")
    t, summary = rec.table(), rec.summary()
    assert len(summary) == 5 and sorted(summary["calls"]) == [1, 1, 1, 1, 2]
    assert (summary["us_total"] == summary["calls"] * summary["us_each"]).all()
    assert set(summary["soc"]) == {"Ascend910B2", "Ascend910B1"}
    assert any("dst_type=int4" in c for c in summary["call"]) and any("-> y int8" in c for c in summary["call"])
    # the packing a float32 scale costs the quant matmul shows as a kernel of its own
    assert t["kernels"][0].startswith("QuantBatchMatmulV3 ") and "+ TransQuantParamV2 " in t["kernels"][0]
    qmm = summary[summary["op"] == "npu_quant_matmul"]
    assert qmm["kernel"].tolist() == ["QuantBatchMatmulV3+TransQuantParamV2"] * 2


def test_each_soc_gets_its_own_total_and_shares():
    # two SoCs of one product (a planner's two choices) are two totals, not one sum
    x = np.ones((64, 512), np.float16)
    with perfmodel.record() as rec:
        npusim.npu_dynamic_quant(x, product="atlas-a2")
        npusim.npu_dynamic_quant(x, product="ascend-950pr")
        npusim.npu_dynamic_quant(x, product="Ascend910B4")
    s, text = rec.summary(), rec.report(l2="warm")
    assert s["share_pct"].tolist() == pytest.approx([100.0, 100.0, 100.0])
    for line in ("1 launch on atlas-a2 (Ascend910B2):", "1 launch on atlas-a2 (Ascend910B4):",
                 "1 launch on ascend-950pr (Ascend950PR"):
        assert line in text, text
    assert "inputs read from L2 where they fit" in text and "npusim's operators only" in text


def test_launch_details_reach_the_prediction():
    x1 = RNG.integers(-128, 128, (16, 1024), dtype=np.int8)
    x2 = RNG.integers(-128, 128, (1024, 1000), dtype=np.int8)
    scale = RNG.random(1000).astype(np.float32)
    with perfmodel.record() as rec:
        npusim.npu_quant_matmul(x1, x2, scale, output_dtype="float16")
        with launch_details(x2_format="NZ"):
            npusim.npu_quant_matmul(x1, x2, scale, output_dtype="float16")
    t = rec.table()
    args = dict(x1=TensorSpec(x1.shape, x1.dtype), x2=TensorSpec(x2.shape, x2.dtype),
                scale=TensorSpec(scale.shape, scale.dtype), output_dtype="float16")
    assert list(t["details"]) == ["", "x2_format=NZ"]
    assert t["latency_us"].tolist() == [perfmodel.predict("npu_quant_matmul", **args).latency_us,
                                        perfmodel.predict("npu_quant_matmul", x2_format="NZ", **args).latency_us]


def test_predict_plan_checks_its_arguments():
    plan = make_plan("npu_dynamic_quant", x=TensorSpec((4, 64), "float16"))
    with pytest.raises(TypeError, match="must be an npusim.plan.Plan"):
        perfmodel.predict_plan("npu_dynamic_quant")
    with pytest.raises(TypeError, match="unknown option 'x2_format'"):
        perfmodel.predict_plan(plan, x2_format="NZ")
    with pytest.raises(ValueError, match="l2 must be one of"):
        perfmodel.predict_plan(plan, l2="hot")


def test_npusim_record_runs_a_script_with_its_arguments_and_reports_its_launches(tmp_path, capsys):
    script = tmp_path / "layer.py"
    script.write_text("import sys\nimport numpy as np\nimport npusim\n"
                      "for _ in range(int(sys.argv[1])):\n"
                      "    npusim.npu_dynamic_quant(np.ones((8, 256), np.float16), product='atlas-a3')\n")
    out_csv = tmp_path / "launches.csv"
    assert cli.main(["record", "--csv", str(out_csv), str(script), "5"]) == 0
    text = capsys.readouterr().out
    assert "npu_dynamic_quant" in text and "5 launches on atlas-a3" in text
    assert len(out_csv.read_text().splitlines()) == 6


def test_npusim_record_reports_what_ran_before_the_script_failed(tmp_path, capsys, monkeypatch):
    script = tmp_path / "broken.py"
    script.write_text("import numpy as np\nimport npusim\nnpusim.npu_dynamic_quant(np.ones((8, 256), np.float16))\n"
                      "raise KeyError('the script fails here')\n")
    assert cli.main(["record", str(script)]) == 1
    out = capsys.readouterr()
    assert "KeyError: 'the script fails here'" in out.err and "1 launch on atlas-a2" in out.out
    assert out.err.startswith("Traceback") and "cli.py" not in out.err      # the script's frames only
    script.write_text("import numpy as np\nimport npusim\nnpusim.npu_dynamic_quant(np.ones((8, 256), np.float16))\n"
                      "raise KeyboardInterrupt\n")
    assert cli.main(["record", str(script)]) == 130 and "1 launch on atlas-a2" in capsys.readouterr().out
    script.write_text("import torch_npu\n")
    monkeypatch.setitem(sys.modules, "torch_npu", None)         # no torch_npu (this session installs the stand-in)
    assert cli.main(["record", str(script)]) == 1
    out = capsys.readouterr()
    assert "hint: --torch-npu" in out.err and "no launches recorded" in out.out
    ran = tmp_path / "ran"
    script.write_text(f"open({str(ran)!r}, 'w').close()\n")
    assert cli.main(["record", "--csv", str(tmp_path / "no" / "such.csv"), str(script)]) == 2
    assert "does not exist" in capsys.readouterr().err and not ran.exists()       # refused before the run
    assert cli.main(["record", str(tmp_path / "missing.py")]) == 2
    assert "is not a file" in capsys.readouterr().err


def test_npusim_record_runs_a_module_as_python_m_does(tmp_path, capsys, monkeypatch):
    (tmp_path / "layer_module.py").write_text(
        "import sys\nimport numpy as np\nimport npusim\n"
        "npusim.npu_trans_quant_param(np.ones(int(sys.argv[1]), np.float32))\n")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["record", "-m", "layer_module", "4096"]) == 0
    out = capsys.readouterr().out
    assert "npusim record: -m layer_module 4096" in out and "scale 4096 float32" in out
    for argv, message in ((["record"], "give a SCRIPT or -m MODULE"), (["record", "-m"], "needs a module name"),
                          (["record", "x.py", "-m", "y"], "is not a file")):
        assert cli.main(argv) == 2 and message in capsys.readouterr().err


def test_the_torch_face_tells_the_weights_storage_format():
    torch = pytest.importorskip("torch")
    from npusim import torch_npu as tnpu
    x1 = torch.randint(-128, 128, (16, 1024), dtype=torch.int8)
    w = torch.randint(-128, 128, (1024, 1000), dtype=torch.int8)
    scale = torch.rand(1000)
    with perfmodel.record() as rec, tnpu.install(product="atlas-a2"):
        tnpu.npu_quant_matmul(x1, w, scale, output_dtype=torch.float16)
        tnpu.npu_quant_matmul(x1, tnpu.npu_format_cast(w, 29), scale, output_dtype=torch.float16)
        linear = tnpu.contrib.module.LinearA8W8Quant(1024, 1000, bias=False, output_dtype=torch.float16)
        linear.weight.data = tnpu.npu_format_cast(w.t().contiguous(), 29)
        linear.scale.data = scale
        linear(x1)
    # the module packs its float32 scale with npu_trans_quant_param, a launch of its own, as torch_npu's does
    assert [(p.op, d) for p, d in rec.launches] == [
        ("npu_quant_matmul", {"x2_format": "ND"}), ("npu_quant_matmul", {"x2_format": "NZ"}),
        ("npu_trans_quant_param", {}), ("npu_quant_matmul", {"x2_format": "NZ"})]
    nz = perfmodel.predict("npu_quant_matmul", x1=x1, x2=w, scale=scale, output_dtype="float16", x2_format="NZ")
    packing = perfmodel.predict("npu_trans_quant_param", scale=scale)
    w_t = w.t().contiguous().t()            # the module's weight.t(): the transpose of a contiguous [n, k]
    nz_int64 = perfmodel.predict("npu_quant_matmul", x1=x1, x2=w_t, scale=TensorSpec((1000,), "int64"),
                                 output_dtype="float16", x2_format="NZ")
    assert rec.table()["latency_us"].tolist()[1:] == [nz.latency_us, packing.latency_us, nz_int64.latency_us]
    # a float32 scale costs the quant matmul the same packing kernel, launched by op-plugin
    assert nz.latency_us == pytest.approx(packing.latency_us + nz_int64.latency_us, rel=0.05)


def test_npusim_record_installs_the_torch_npu_stand_in(tmp_path, capsys):
    pytest.importorskip("torch")
    script = tmp_path / "npu_test.py"
    script.write_text("import torch\nimport torch_npu\n"
                      "x = torch.randn(4, 256, dtype=torch.bfloat16, device='npu')\n"
                      "torch_npu.npu_dynamic_quant(x)\n")
    assert cli.main(["record", "--npu-device", "--product", "Ascend910_9392", str(script)]) == 0
    assert "1 launch on atlas-a3" in capsys.readouterr().out


@pytest.mark.parametrize("case", _calls(), ids=lambda c: c[0])
def test_on_plans_each_launch_for_another_product_as_predict_does(case):
    op, product, call, args = case
    specs = {k: TensorSpec(v.shape, v.dtype) if isinstance(v, np.ndarray) else v for k, v in args.items()}
    with perfmodel.record() as rec:
        call()
    for other in perfmodel.supported_products(op):
        moved = rec.on(other)
        assert not moved.refused and moved.numbers == [0]
        assert moved.launches[0][0] == make_plan(op, product=other, **specs)
        assert moved.total_us() == perfmodel.predict(op, other, **specs).latency_us


def test_on_lists_what_another_product_refuses():
    x = RNG.standard_normal((8, 128)).astype(ml_dtypes.bfloat16)
    cache, cscale = np.zeros((8, 128), ml_dtypes.float8_e4m3fn), np.zeros((8, 1), np.float32)
    with perfmodel.record() as rec:
        npusim.indexer_compress_epilog(cache, cscale, x, np.arange(8, dtype=np.int32), product="ascend-950pr")
        npusim.npu_dynamic_quant(x, product="ascend-950pr")
        npusim.npu_dynamic_quant(x.astype(np.float16), product="ascend-950pr")
    a2, p310 = rec.on("atlas-a2"), rec.on("Ascend310P3")
    assert [(n, kind) for n, _, _, kind in a2.refused] == [(0, "absent")] and "not run on atlas-a2" in a2.refused[0][2]
    assert a2.numbers == [1, 2] and len(a2) == 2 and a2.planned_for == "Ascend910B2"
    # Atlas inference takes fp16 x only: the bf16 launch is refused with the emulator's own error
    assert [(n, kind) for n, _, _, kind in p310.refused] == [(0, "absent"), (1, "refused")]
    assert "dtype must be one of float16" in p310.refused[1][2]
    assert p310.numbers == [2] and p310.table()["launch"].tolist() == [2]
    text = p310.report()
    assert "2 of the run's launches not planned for Ascend310P3:" in text
    assert "(the run's other 2 not planned here, below: not counted)" in text
    t = p310.table(include_refused=True)
    assert t["launch"].tolist() == [0, 1, 2] and t["refused"].tolist()[:2] != ["", ""] and t["refused"][2] == ""
    assert set(t["source"]) == {"planned"} and set(rec.table()["source"]) == {"recorded"}
    # planned again from a planned recording, launches keep their numbers in the run
    assert a2.on("atlas-a3").numbers == [1, 2] and [n for n, *_ in p310.on("Ascend310P3").refused] == []
    with pytest.raises(ValueError, match="unknown product"):
        rec.on("atlas-z9")


def test_refused_launches_are_reported_once_per_reason():
    x = RNG.standard_normal((4, 64)).astype(ml_dtypes.bfloat16)
    with perfmodel.record() as rec:
        for _ in range(50):
            npusim.npu_dynamic_quant(x)
    moved = rec.on("atlas-inference")
    text = moved.report()
    assert text.startswith("no launch planned for Ascend310P3") and len(text.splitlines()) == 3
    assert "npu_dynamic_quant, 50 launches (0-49): this product's rules refuse the call" in text


def test_not_emulated_is_told_apart_from_refused():
    x1 = RNG.integers(-2**31, 2**31, (4, 8)).astype(np.int32)          # int4: k = 64
    x2 = RNG.integers(-2**31, 2**31, (64, 2)).astype(np.int32)          # [k, n // 8], n = 16
    with perfmodel.record() as rec:
        npusim.npu_quant_matmul(x1, x2, RNG.random(16).astype(np.float32), output_dtype="float16")
    assert [kind for *_, kind in rec.on("ascend-950pr").refused] == ["not emulated"]
    assert "the NPU may run it; npusim does not model it" in rec.on("ascend-950pr").report()


def test_an_aclnn_out_dtype_is_kept_when_planned_again():
    x = RNG.standard_normal((64, 32)).astype(np.float32)
    out, mask = np.empty((64, 32), np.float16), np.empty((64, 32), bool)
    with perfmodel.record() as rec:
        ws, ex = aclnn.aclnnFakeQuantPerChannelAffineCachemaskGetWorkspaceSize(
            x, np.ones(32, np.float32), np.zeros(32, np.int32), 1, -128, 127, out, mask)
        aclnn.aclnnFakeQuantPerChannelAffineCachemask(aclnn.workspace(ws), ws, ex)
    again = rec.on("atlas-a2")
    assert again.launches[0][0] == rec.launches[0][0] and again.launches[0][0].tiles["cast_out"]
    assert again.total_us() == rec.total_us()


def test_npusim_record_also_reports_other_products(tmp_path, capsys):
    script = tmp_path / "layer.py"
    script.write_text("import numpy as np\nimport npusim\nnpusim.npu_dynamic_quant(np.ones((8, 256), np.float16))\n")
    out_csv = tmp_path / "launches.csv"
    assert cli.main(["record", "--also", "atlas-a3,ascend-950pr", "--also", "Ascend910B4", "--csv", str(out_csv),
                     str(script)]) == 0
    text = capsys.readouterr().out
    for soc, product in (("Ascend910_9391", "atlas-a3"), ("Ascend950PR_9589", "ascend-950pr"),
                         ("Ascend910B4", "atlas-a2")):            # a SoC name stays that SoC
        assert f"the same launches planned for {soc} ({product}):" in text and f"1 launch on {product} ({soc}):" in text
    t = pd.read_csv(out_csv)
    assert t["soc"].tolist() == ["Ascend910B2", "Ascend910_9391", "Ascend950PR_9589", "Ascend910B4"]
    assert t["source"].tolist() == ["recorded"] + ["planned"] * 3
    # nothing recorded: the CSV is written all the same (its header), as a pipeline expects a file
    script.write_text("pass\n")
    assert cli.main(["record", "--csv", str(out_csv), str(script)]) == 0
    assert pd.read_csv(out_csv).columns.tolist() == TABLE_COLUMNS + ["l2"] and "wrote:" in capsys.readouterr().out


def test_npusim_record_says_what_is_left_out(tmp_path, capsys):
    """What a planner would otherwise take for the whole layer's time: a run that failed says it is partial,
    --also the recorded SoC is not reported twice, record's options after SCRIPT are pointed out."""
    script = tmp_path / "layer.py"
    script.write_text("import numpy as np\nimport npusim\nnpusim.npu_dynamic_quant(np.ones((8, 256), np.float16))\n"
                      "raise SystemExit(3)\n")
    out_csv = tmp_path / "launches.csv"
    assert cli.main(["record", "--also", "atlas-a2,atlas-a3", str(script), "--csv", str(out_csv)]) == 3
    out, err = capsys.readouterr()
    assert "exit status 3" in out and "partial" in out
    assert out.count("1 launch on atlas-a2 (Ascend910B2)") == 1 and "planned for Ascend910_9391" in out
    assert "--csv came after SCRIPT" in err and not out_csv.exists()


def test_operators_the_run_asked_for_and_npusim_lacks_are_listed():
    torch = pytest.importorskip("torch")
    import npusim.torch_npu as stand_in
    x = torch.ones((8, 256), dtype=torch.float16)
    with perfmodel.record() as rec, stand_in.install("atlas-a2"):
        import torch_npu
        for _ in range(2):
            if not hasattr(torch_npu, "npu_rms_norm"):      # the guard real code writes, then its fallback
                x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
            torch_npu.npu_dynamic_quant(x)
        # what tools probe for (unittest.mock, pytest) is not an operator the run lacks; torch_npu's own
        # private operators (_npu_*) are
        assert not hasattr(torch_npu, "_mock_name") and not hasattr(torch_npu, "_npu_dropout")
    assert rec.missing == {"torch_npu.npu_rms_norm": 2, "torch_npu._npu_dropout": 1} and len(rec) == 2
    text = rec.report()
    assert "does not emulate" in text and "torch_npu.npu_rms_norm x2" in text
    with pytest.warns(UserWarning, match="npu_rms_norm"):
        rec.total_us()
    assert rec.on("atlas-a3").missing == rec.missing


def test_an_nz_weight_310p_refuses_is_refused_when_planned_and_predicted_too():
    """Atlas inference takes an NZ weight only transposed (the emulator's torch face refuses it with 561002): a
    run on A2 planned for it lists the launch as refused, and predict() refuses it, naming x2; the transposed
    view is planned and predicted."""
    torch = pytest.importorskip("torch")
    import npusim.torch_npu as stand_in
    from perfmodel import TensorSpec as T
    with perfmodel.record() as rec, stand_in.install("atlas-a2"):
        import torch_npu
        w = torch_npu.npu_format_cast(torch.randint(-128, 128, (1024, 512), dtype=torch.int8), 29)
        torch_npu.npu_quant_matmul(torch.ones((16, 1024), dtype=torch.int8), w, torch.rand(512),
                                   output_dtype=torch.float16)
    planned = rec.on("atlas-inference")
    assert len(planned) == 0 and [(i, kind) for i, _op, _why, kind in planned.refused] == [(0, "refused")]
    assert "561002" in planned.refused[0][2] and "transposed" in planned.refused[0][2]
    args = dict(x1=T((16, 1024), "int8"), scale=T((512,), "float32"), output_dtype="float16", x2_format="NZ")
    with pytest.raises(AclnnError) as ei:
        perfmodel.predict("npu_quant_matmul", "atlas-inference", x2=T((1024, 512), "int8"), **args)
    assert ei.value.status == 561002 and ei.value.param == "x2"
    assert perfmodel.predict("npu_quant_matmul", "atlas-inference", x2=T((512, 1024), "int8").T, **args).latency_us > 0


def test_sections_give_each_step_its_own_total():
    """A planner's steps in one run (decode and prefill): each section's launches, calls and total apart, in
    the report, summary and table; the launches outside any section are a total of their own."""
    x = np.ones((16, 512), np.float16)
    big = np.ones((1024, 512), np.float16)
    with perfmodel.record() as rec:
        with perfmodel.section("decode"):
            for _ in range(3):
                npusim.npu_dynamic_quant(x)
        with perfmodel.section("prefill"), perfmodel.section("layer 0"):
            npusim.npu_dynamic_quant(big)
            npusim.npu_dynamic_quant(x)
        npusim.npu_dynamic_quant(x)
    assert rec.sections == ["decode"] * 3 + ["prefill / layer 0"] * 2 + [""]
    s = rec.summary()
    calls = {(r.section, r.call.split(" -> ")[0]): r.calls for r in s.itertuples()}
    assert calls == {("decode", "x 16x512 float16"): 3, ("prefill / layer 0", "x 1024x512 float16"): 1,
                     ("prefill / layer 0", "x 16x512 float16"): 1, ("", "x 16x512 float16"): 1}
    one = s[s["section"] == ""]["us_each"].iloc[0]
    text = rec.report()
    assert f"3 launches on atlas-a2 (Ascend910B2) in section 'decode': {3 * one:.2f} us" in text
    assert "in section 'prefill / layer 0'" in text and "outside any section" in text
    assert rec.table()["section"].tolist() == rec.sections
    assert rec.table()["notes"].tolist() == [plan.notes for plan, _ in rec.launches] and rec.launches[0][0].notes
    assert rec.on("atlas-a3").sections == rec.sections
    with pytest.raises(ValueError, match="label"):
        with perfmodel.section(""):
            pass


def _layer_launches(torch, tnpu, device, rec, moe=True):
    """A W8A8 layer's calls (dynamic quant, LinearA8W8Quant, a pertoken quant matmul, MoE routing) on `device`,
    recorded."""
    x = torch.ones((48, 512), dtype=torch.bfloat16, device=device)
    y, s = tnpu.npu_dynamic_quant(x)
    linear = tnpu.contrib.module.LinearA8W8Quant(512, 256, bias=False, output_dtype=torch.float16).to(device)
    linear.weight.data = tnpu.npu_format_cast(torch.ones((256, 512), dtype=torch.int8, device=device), 29)
    linear.scale.data = torch.ones(256, device=device)
    linear(y)
    tnpu.npu_quant_matmul(y, torch.ones((512, 384), dtype=torch.int8, device=device), torch.ones(384, device=device),
                          pertoken_scale=s, output_dtype=torch.bfloat16)
    if moe:
        tnpu.npusim_moe_init_routing_quant(torch.ones((8, 64), dtype=torch.float16, device=device),
                                           torch.arange(16, dtype=torch.int32, device=device).reshape(2, 8).T
                                           .contiguous(), torch.zeros((8, 2), dtype=torch.int32, device=device),
                                           8, 1.0, 0.0)
    return [p.op for p, _ in rec.launches]


@pytest.mark.parametrize("product", ["atlas-a2", "ascend-950pr"])
def test_a_shapes_only_record_of_meta_tensors_plans_what_a_run_on_data_launches(product):
    """record(meta=True): calls on meta tensors are planned, not computed, and recorded as the same launches, with
    the same predictions, as the same code on CPU tensors (MoE routing on A2; the indexer's in-place op on Ascend
    950)."""
    torch = pytest.importorskip("torch")
    from npusim import torch_npu as tnpu
    tables = {}
    for device in ("cpu", "meta"):
        with perfmodel.record(meta=True) as rec, tnpu.install(product=product):
            ops = _layer_launches(torch, tnpu, device, rec, moe=product == "atlas-a2")
            if product == "ascend-950pr":
                torch.ops.custom.indexer_compress_epilog(
                    torch.zeros((16, 128), dtype=torch.float8_e4m3fn, device=device),
                    torch.zeros((16, 1), dtype=torch.float32, device=device),
                    torch.ones((4, 128), dtype=torch.bfloat16, device=device),
                    torch.arange(4, dtype=torch.int32, device=device))
        tables[device] = rec.table().drop(columns=["launch"])
    assert ops[:4] == ["npu_dynamic_quant", "npu_trans_quant_param", "npu_quant_matmul", "npu_quant_matmul"]
    assert tables["meta"]["details"].tolist()[2:4] == ["x2_format=NZ", "x2_format=ND"]     # the NZ weight's mark
    assert len(tables["cpu"]) == 5
    pd.testing.assert_frame_equal(tables["meta"], tables["cpu"])


def test_meta_calls_are_left_out_unless_asked_for_and_the_report_says_so():
    torch = pytest.importorskip("torch")
    from npusim import torch_npu as tnpu
    with perfmodel.record() as rec, tnpu.install(product="atlas-a2"):
        _layer_launches(torch, tnpu, "meta", rec)
    assert len(rec) == 0 and rec.meta_left_out == 5
    assert "5 calls on meta tensors not recorded" in rec.report() and "record(meta=True)" in rec.report()


def test_torch_compile_tracing_is_not_a_launch_even_in_a_shapes_only_record():
    """torch.compile traces on fake tensors (their Meta kernels plan the shapes) and then runs the graph on data:
    only the runs are launches."""
    torch = pytest.importorskip("torch")
    from npusim import torch_npu as tnpu
    x = torch.ones((16, 256), dtype=torch.float16)
    with perfmodel.record(meta=True) as rec, tnpu.install(product="atlas-a2"):
        step = torch.compile(lambda t: tnpu.npu_dynamic_quant(t * 2), fullgraph=True, backend="eager")
        for _ in range(3):
            step(x)
    assert [p.op for p, _ in rec.launches] == ["npu_dynamic_quant"] * 3


def test_npusim_record_meta_records_a_script_on_meta_tensors(tmp_path, capsys):
    pytest.importorskip("torch")
    script = tmp_path / "prefill.py"
    script.write_text("import torch\nimport torch_npu\n"
                      "x = torch.empty(32768, 7168, dtype=torch.bfloat16, device='meta')\n"
                      "y, s = torch_npu.npu_dynamic_quant(x)\n"
                      "torch_npu.npu_quant_matmul(y, torch.empty(7168, 4096, dtype=torch.int8, device='meta'),\n"
                      "    torch.empty(4096, device='meta'), pertoken_scale=s, output_dtype=torch.bfloat16)\n")
    assert cli.main(["record", "--torch-npu", str(script)]) == 0
    out = capsys.readouterr().out
    assert "no launches recorded" in out and "2 calls on meta tensors not recorded" in out and "--meta" in out
    assert cli.main(["record", "--torch-npu", "--meta", str(script)]) == 0
    assert "2 launches on atlas-a2" in capsys.readouterr().out
