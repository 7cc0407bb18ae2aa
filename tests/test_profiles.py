"""perfmodel.profiles: profiler CSV ingestion (both files, both header generations, malformed rows).

The fixtures in tests/data/ are synthetic (hand-made, see tests/data/README.md); the expected
values below are read off those files by hand.
"""
import math
from pathlib import Path

import pandas as pd
import perfmodel
import pytest

from perfmodel.profiles import OP_TYPES, parse_dtypes, parse_shapes, read_profiles, to_predict_args

DATA = Path(__file__).parent / "data"
NEW_OPS = DATA / "synthetic_op_summary_cann83.csv"
OLD_OPS = DATA / "synthetic_op_summary_cann80.csv"
NEW_KD = DATA / "synthetic_kernel_details_new.csv"
OLD_KD = DATA / "synthetic_kernel_details_old.csv"


def by_line(df, line):
    rows = df[df["line"] == line]
    assert len(rows) == 1, f"line {line}: {len(rows)} rows"
    return rows.iloc[0]


def test_parse_shapes_and_dtypes():
    assert parse_shapes('"8192,320;320,2560"') == [(8192, 320), (320, 2560)]
    assert parse_shapes("1024;") == [(1024,), ()]
    for bad in ("N/A", "", "1024,abc", "-1,4", "4.5"):
        with pytest.raises(ValueError):
            parse_shapes(bad)
    assert parse_dtypes("DT_BF16;FLOAT;INT8;UINT64") == ["bfloat16", "float32", "int8", "uint64"]
    assert parse_dtypes("N/A") == []


def test_op_summary_new_generation():
    df = read_profiles(NEW_OPS)
    assert sorted(df["line"]) == [2, 3, 4, 5, 10]
    assert set(df["format"]) == {"op_summary"} and set(df["generation"]) == {"new"}
    assert df.attrs["skipped"] == {"operator not modelled: Cast": 1,
                                   "duration missing, N/A, not finite or not positive": 1,
                                   "input shapes: malformed shape '1024,abc'": 1,
                                   "ragged line (10 fields, header has 34)": 1}
    dq = by_line(df, 2)
    assert dq["op"] == "npu_dynamic_quant" and dq["duration_us"] == 25.5 and dq["block_dim"] == 48
    assert dq["input_shapes"] == [(1024, 7168)] and dq["input_dtypes"] == ["float16"]
    assert dq["output_shapes"] == [(1024, 7168), (1024,)] and dq["output_dtypes"] == ["int8", "float32"]
    assert (dq["pipe_vector_us"], dq["pipe_scalar_us"], dq["pipe_mte2_us"], dq["pipe_mte3_us"]) == (9.5, 3.25, 18.75, 6.5)
    assert math.isnan(dq["pipe_cube_us"]) and dq["aicore_time_us"] == 24.1
    # DynamicQuantV2 with three outputs (y, scale, offset) is the asymmetric kernel
    assert by_line(df, 3)["op"] == "npu_dynamic_quant_asymmetric"
    mm = by_line(df, 4)
    assert mm["op"] == "npu_quant_matmul" and mm["pipe_cube_us"] == 35.5 and mm["pipe_fixpipe_us"] == 8.75
    # MIX task: the slower of the AIC and AIV views of a shared pipe is kept
    mix = by_line(df, 10)
    assert mix["task_type"] == "MIX_AIC" and mix["mix_block_dim"] == 48
    assert (mix["pipe_mte2_us"], mix["pipe_scalar_us"], mix["pipe_vector_us"]) == (95.0, 6.0, 20.0)


def test_op_summary_old_generation_unitless_headers():
    df = read_profiles(OLD_OPS)
    assert sorted(df["line"]) == [2, 3, 4] and set(df["generation"]) == {"old"}
    assert df.attrs["skipped"] == {"operator not modelled: TransData": 1, "input shapes: shapes missing": 1,
                                   "duration missing, N/A, not finite or not positive": 1}
    fq = by_line(df, 2)
    assert fq["op"] == "fake_quantize_per_channel_affine_cachemask" and fq["duration_us"] == 42.0
    assert (fq["pipe_mte2_us"], fq["pipe_vector_us"], fq["pipe_cube_us"]) == (30.0, 20.0, 0.0)
    add = by_line(df, 4)
    assert add["op"] == "add" and math.isnan(add["block_dim"])       # N/A block dim: row still usable
    # headers without a unit are read in the unit the caller names
    ns = read_profiles(OLD_OPS, unitless_unit="ns")
    assert by_line(ns, 2)["duration_us"] == pytest.approx(0.042)


def test_kernel_details_both_generations():
    new, old = read_profiles(NEW_KD), read_profiles(OLD_KD)
    assert set(new["format"]) == set(old["format"]) == {"kernel_details"}
    assert set(new["generation"]) == {"new"} and set(old["generation"]) == {"old"}
    assert list(new["op"]) == ["indexer_compress_epilog", "npu_dynamic_quant"]   # 2 outputs: symmetric
    assert new.attrs["skipped"] == {"operator not modelled: MoeInitRoutingQuantV2": 1,
                                    "duration missing, N/A, not finite or not positive": 1}
    ice = by_line(new, 2)
    assert ice["block_dim"] == 64 and ice["input_shapes"] == [(512, 4096), (512, 32), (512, 4096), (512,)]
    assert ice["input_dtypes"] == ["float8_e4m3fn", "float32", "bfloat16", "int32"]
    assert list(old["op"]) == ["matmul", "npu_quant_matmul", "fake_quantize_per_channel_affine_cachemask"]
    mm = by_line(old, 2)
    assert (mm["duration_us"], mm["block_dim"], mm["pipe_cube_us"], mm["pipe_mte2_us"]) == (4012.5, 24, 3076.5, 3435.5)


def test_directory_and_bad_paths_never_raise(tmp_path):
    df = read_profiles([DATA, tmp_path / "missing.csv"])
    assert len(df) == 13
    assert sum(df.attrs["skipped"].values()) == 10          # bad rows; the missing file is listed apart
    assert [(f["source"], f["reason"].split(":")[0]) for f in df.attrs["skipped_files"]] == [
        (str(tmp_path / "missing.csv"), "unreadable file")]
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    df = read_profiles([other, empty])
    assert len(df) == 0 and not df.attrs["skipped"] and df.attrs["skipped_files"] == [
        {"source": str(other), "reason": "not a profiler CSV: no 'OP Type' / 'Type' column; "
                                         "no 'Task Duration(us)' / 'Duration(us)' column"},
        {"source": str(empty), "reason": "empty file"}]


def _edited(tmp_path, name, old=None, new=None, rows=True):
    """The synthetic op_summary with one header renamed (or its rows dropped), written to tmp_path/name."""
    lines = NEW_OPS.read_text().splitlines()
    head = lines[0] if old is None else lines[0].replace(old, new)
    assert old is None or head != lines[0]
    f = tmp_path / name
    f.write_text("\n".join([head] + (lines[1:] if rows else [])) + "\n")
    return f


def test_header_mistakes_name_the_file_the_columns_and_a_close_header(tmp_path):
    """A misspelt Duration / OP Type header names the file, the columns looked for and the close header, and is
    listed as a file (not counted as a row); a misspelt Input Shapes says the column is absent; a header-only
    file says it has no data rows (new-user trial finding 7)."""
    dur = _edited(tmp_path, "dur.csv", "Task Duration(us)", "Task Duraton(us)")
    typ = _edited(tmp_path, "typ.csv", "OP Type", "OP Typ")
    head = _edited(tmp_path, "head.csv", rows=False)
    df = read_profiles([dur, typ, head])
    assert len(df) == 0 and not df.attrs["skipped"]
    assert df.attrs["skipped_files"] == [
        {"source": str(dur), "reason": "not a profiler CSV: no 'Task Duration(us)' / 'Duration(us)' column; "
                                       "did you mean 'Task Duraton(us)'?"},
        {"source": str(typ), "reason": "not a profiler CSV: no 'OP Type' / 'Type' column; did you mean 'OP Typ'?"},
        {"source": str(head), "reason": "no data rows (only the header)"}]
    shapes = _edited(tmp_path, "shapes.csv", "Input Shapes", "Input Shape")
    df = read_profiles(shapes)
    assert len(df) == 0 and not df.attrs["skipped_files"]
    reason = f"input shapes: {shapes} has no 'Input Shapes' column; did you mean 'Input Shape'?"
    assert df.attrs["skipped"][reason] == 6     # every modelled row with a duration (the 3 others: as before)
    assert not any("shapes missing" in r for r in df.attrs["skipped"])


def test_unit_suffixes(tmp_path):
    f = tmp_path / "op_summary_ns.csv"
    f.write_text("Op Name,OP Type,Task Duration(ns),Block Dim,Input Shapes,Input Data Types,Output Shapes,"
                 "Output Data Types,aiv_mte2_time(ms)\n"
                 'a,DynamicQuant,12500,8,"16,4096",FLOAT16,"16,4096;16",INT8;FLOAT,0.002\n')
    r = read_profiles(f).iloc[0]
    assert r["duration_us"] == pytest.approx(12.5) and r["pipe_mte2_us"] == pytest.approx(2.0)


def spec(args, name):
    return args[name].shape, str(args[name].dtype)


def test_to_predict_args():
    rows = {r["op"] + f":{r['line']}": r for _, r in read_profiles(DATA).iterrows()}
    a = to_predict_args(rows["npu_dynamic_quant_asymmetric:3"])
    assert spec(a, "x") == ((128, 4096), "bfloat16") and spec(a, "smooth_scales") == ((4096,), "bfloat16")
    assert a["dst_type"] == "int8" and "group_index" not in a
    a = to_predict_args(rows["npu_quant_matmul:4"])
    assert spec(a, "x2") == ((7168, 4096), "int8") and spec(a, "scale") == ((4096,), "int64")
    assert spec(a, "bias") == ((4096,), "int32") and a["output_dtype"] == "float16"
    # weight stored [n, k] (transposed), uint64 scale, int8 output
    a = to_predict_args(rows["npu_quant_matmul:3"])
    assert spec(a, "x1") == ((16, 7168), "int8") and spec(a, "x2") == ((7168, 4096), "int8")
    assert spec(a, "scale") == ((1,), "int64") and a["output_dtype"] == "int8"
    a = to_predict_args(rows["npu_quant_matmul:10"])
    assert spec(a, "pertoken_scale") == ((512,), "float32") and a["output_dtype"] == "bfloat16"
    a = to_predict_args(rows["moe_init_routing_quant:5"])
    assert a["active_num"] == 32 and spec(a, "expert_idx") == ((64, 8), "int32")
    a = to_predict_args(rows["fake_quantize_per_channel_affine_cachemask:2"])
    assert a["axis"] in (0, 1)
    fq = [r for k, r in rows.items() if k.startswith("fake") and r["input_shapes"][0] == (16, 1024, 64)][0]
    assert to_predict_args(fq)["axis"] == 1
    a = to_predict_args(rows["indexer_compress_epilog:2"])
    assert spec(a, "indexer_compress_scale") == ((512, 32), "float32") and a["quant_mode"] == 1
    a = to_predict_args(rows["matmul:2"])
    assert spec(a, "a") == ((8192, 8192), "float16") and spec(a, "b") == ((8192, 8192), "float16")
    gmm = {"op": "grouped_matmul", "input_shapes": [(1000, 512), (4, 768, 512), (4, 768), (4,)],
           "input_dtypes": ["bfloat16", "bfloat16", "float32", "int64"], "output_shapes": [(1000, 768)],
           "output_dtypes": ["bfloat16"]}
    a = to_predict_args(gmm)        # weight [E,N,K]: transposed; the rows split evenly over the 4 groups
    assert a["transpose_weight"] and a["group_list"] == (250, 500, 750, 1000)
    assert spec(a, "bias") == ((4, 768), "float32")
    # TransQuantParamV2, the kernel op-plugin launches before a float32-scale quant matmul, has a row of its own
    tqp = _row("npu_trans_quant_param", "TransQuantParamV2", '"4096;4096"', "FLOAT;FLOAT", "4096", "UINT64")
    a = to_predict_args(tqp)
    assert spec(a, "scale") == ((4096,), "float32") and spec(a, "offset") == ((4096,), "float32")
    assert OP_TYPES["transquantparamv2"] == "npu_trans_quant_param"
    bad = dict(rows["npu_quant_matmul:4"])
    bad["input_dtypes"] = ["int32", "int32", "int64", "int32"]
    with pytest.raises(ValueError):
        to_predict_args(bad)


# -- layouts real profiles use (found by probing published msprof / torch_npu outputs) ------------------------

def _row(op, op_type, shapes, dtypes, out_shapes, out_dtypes, formats=None):
    return {"op": op, "op_type": op_type, "input_shapes": parse_shapes(shapes), "input_dtypes": parse_dtypes(dtypes),
            "input_formats": (formats or "").split(";") if formats else [], "output_shapes": parse_shapes(out_shapes),
            "output_dtypes": parse_dtypes(out_dtypes)}


def test_absent_inputs_kept_as_empty_slots_are_absent():
    # absent optional inputs stay in the list as empty slots, with a dtype or DT_UNDEFINED
    a = to_predict_args(_row("npu_dynamic_quant_asymmetric", "DynamicQuantV2", '"2048,7168;;"', "DT_BF16;DT_BF16;INT32",
                             "2048,7168;2048;2048", "INT8;FLOAT;FLOAT"))
    assert set(a) == {"x", "dst_type"}
    for dtypes in ("INT8;INT8;FLOAT;FLOAT;INT32;FLOAT", "INT8;INT8;FLOAT;DT_UNDEFINED;DT_UNDEFINED;FLOAT"):
        a = to_predict_args(_row("npu_quant_matmul", "QuantBatchMatmulV3", "1024,7168;4096,7168;4096;;;1024", dtypes,
                                 "1024,4096", "DT_BF16"))
        assert spec(a, "pertoken_scale") == ((1024,), "float32") and "bias" not in a and "offset" not in a
        assert spec(a, "x2") == ((7168, 4096), "int8")
    # positions decide: the fifth slot is the bias, even an int32 one of length m
    a = to_predict_args(_row("npu_quant_matmul", "QuantBatchMatmulV3", "64,256;256,64;64;;64;", "INT8;INT8;FLOAT;FLOAT;"
                             "INT32;FLOAT", "64,64", "DT_BF16"))
    assert spec(a, "bias") == ((64,), "int32") and "pertoken_scale" not in a


def test_quant_matmul_per_token_scale_when_m_equals_n_and_nz_weights():
    # present inputs only: the last, float32 (m,) with a float output, is the per-token scale, also when m == n
    a = to_predict_args(_row("npu_quant_matmul", "QuantBatchMatmulV3", '"4096,7168;4096,7168;4096;4096"',
                             "INT8;INT8;DT_BF16;FLOAT", "4096,4096", "DT_BF16"))
    assert spec(a, "pertoken_scale") == ((4096,), "float32") and "bias" not in a
    # a weight cast to FRACTAL_NZ is recorded in its storage shape [N/32, K/16, 16, 32] (int8): K from x1, N from
    # the output, and x2_format NZ (vllm-ascend W8A8 on Atlas A3)
    a = to_predict_args(_row("npu_quant_matmul", "QuantBatchMatmulV3", '"15900,5120;544,320,16,32;17408;15900"',
                             "INT8;INT8;DT_BF16;FLOAT", "15900,17408", "DT_BF16", formats="ND;FRACTAL_NZ;ND;ND"))
    assert spec(a, "x2") == ((5120, 17408), "int8") and a["x2_format"] == "NZ"
    assert spec(a, "pertoken_scale") == ((15900,), "float32")
    # a 3-D activation with a 2-D weight: x2 stays 2-D
    a = to_predict_args(_row("npu_quant_matmul", "QuantBatchMatmulV3", "4,128,7168;4096,7168;4096;128",
                             "INT8;INT8;DT_BF16;FLOAT", "4,128,4096", "DT_BF16"))
    assert spec(a, "x2") == ((7168, 4096), "int8")
    g = to_predict_args(_row("grouped_matmul", "GroupedMatmul", "1000,512;4,48,32,16,16;;;;;;;4", "DT_BF16;DT_BF16",
                             "1000,768", "DT_BF16", formats="ND;FRACTAL_NZ"))
    assert spec(g, "weight") == ((4, 512, 768), "bfloat16") and g["weight_format"] == "NZ"


def test_torch_npu_result_directory_is_read_once(tmp_path):
    # a *_ascend_pt directory holds kernel_details.csv and, derived from the same data, PROF_*/.../op_summary_*.csv
    kd = NEW_KD.read_text()
    top = tmp_path / "host_123_ascend_pt"
    (top / "ASCEND_PROFILER_OUTPUT").mkdir(parents=True)
    (top / "ASCEND_PROFILER_OUTPUT" / "kernel_details.csv").write_text(kd)
    (top / "PROF_000001_x" / "mindstudio_profiler_output").mkdir(parents=True)
    (top / "PROF_000001_x" / "mindstudio_profiler_output" / "op_summary_1.csv").write_text(NEW_OPS.read_text())
    df = read_profiles(tmp_path)
    assert df.attrs["files"] == [str(top / "ASCEND_PROFILER_OUTPUT" / "kernel_details.csv")]
    assert len(df) == len(read_profiles(NEW_KD))
    # a bare PROF_ directory (msprof alone) is still read
    assert len(read_profiles(top / "PROF_000001_x")) == len(read_profiles(NEW_OPS))


def test_dynamic_quant_v2_on_950_is_the_symmetric_call_and_skips_name_the_operator(tmp_path):
    from perfmodel.compare import measured_from_profiles
    df = read_profiles(NEW_OPS)
    v2 = df[df["op_type"] == "DynamicQuantV2"]
    assert set(v2["op"]) == {"npu_dynamic_quant_asymmetric"}
    on_950 = measured_from_profiles(v2, "ascend-950pr")
    on_a2 = measured_from_profiles(v2, "atlas-a2")
    assert set(on_950["op"]) == {"npu_dynamic_quant"} and set(on_a2["op"]) == {"npu_dynamic_quant_asymmetric"}
    assert set(v2["op"]) == {"npu_dynamic_quant_asymmetric"}          # the frame given is not changed
    # a task-time l0 profile has no OP Type: said so
    header = NEW_KD.read_text().splitlines()[0]
    cols = header.split(",")
    row = ["N/A"] * len(cols)
    for name, value in (("Duration(us)", "12.5"), ("Name", "aclnnDynamicQuant_DynamicQuant_DynamicQuant")):
        if name in cols:
            row[cols.index(name)] = value
    (tmp_path / "kernel_details.csv").write_text(header + "\n" + ",".join(row) + "\n")
    [reason] = read_profiles(tmp_path).attrs["skipped"]
    assert reason.startswith("no OP Type (N/A): a profile taken with msprof --task-time l0 records no operator types")
    assert "torch_npu's profiler, profiler_level=ProfilerLevel.Level0" in reason


def test_matmul_rows_the_generic_model_cannot_cost_are_skipped_with_the_reason():
    ok = _row("matmul", "MatMulV2", "64,32;32,16", "FLOAT16;FLOAT16", "64,16", "FLOAT16")
    assert spec(to_predict_args(ok), "b") == ((32, 16), "float16")
    for shapes, dtypes, out in (("64,32;32,16;16", "FLOAT16;FLOAT16;FLOAT16", "FLOAT16"),
                                ("64,32;32,16", "FLOAT16;FLOAT16", "FLOAT")):
        with pytest.raises(ValueError, match="no bias and a float16/bfloat16 output"):
            to_predict_args(_row("matmul", "MatMulV2", shapes, dtypes, "64,16", out))
    # b is rebuilt from a's K and the output's N: a b that contradicts them, or an NZ b, is not costed as ND
    assert spec(to_predict_args(_row("matmul", "MatMulV2", "64,32;16,32", "FLOAT16;FLOAT16", "64,16", "FLOAT16")),
                "b") == ((32, 16), "float16")
    with pytest.raises(ValueError, match=r"b shape \(48, 48\) is not \[K, N\] or \[N, K\] of K = 32"):
        to_predict_args(_row("matmul", "MatMulV2", "64,32;48,48", "FLOAT16;FLOAT16", "64,16", "FLOAT16"))
    with pytest.raises(ValueError, match="ND weight; b is recorded FRACTAL_NZ"):
        to_predict_args(_row("matmul", "MatMulV2", "64,32;1,2,16,16", "FLOAT16;FLOAT16", "64,16", "FLOAT16",
                             formats="ND;FRACTAL_NZ"))


def test_compare_with_inputs_warm_in_l2():
    # a model run's kernels read what the kernel before wrote: --l2 warm predicts no slower than cold
    from perfmodel import compare as cmp
    measured = cmp.measured_from_profiles(NEW_KD, "ascend-950pr")
    cold, warm = cmp.compare(measured), cmp.compare(measured, l2="warm")
    ok = (cold["status"] == "ok").to_numpy()
    assert ok.any() and (warm["predicted_us"].to_numpy()[ok] <= cold["predicted_us"].to_numpy()[ok]).all()
    assert (warm["predicted_us"].to_numpy()[ok] < cold["predicted_us"].to_numpy()[ok]).any()
    with pytest.raises(ValueError, match="l2 must be one of"):
        cmp.compare(measured, l2="hot")


def test_launch_table_of_user_profiles_calls_their_rows_measured():
    # compare.csv (by_launch) says what the summary says: a profile's rows are measurements
    from perfmodel import compare as cmp
    joined = cmp.compare(cmp.measured_from_profiles(NEW_OPS, "atlas-a2"))
    launches = cmp.by_launch(joined)
    assert len(launches) and (launches["trust"] == "measured").all()
    assert set(cmp.summarize(joined)["trust"]) == {"measured"}


# -- profile-ingestion probe (reports/profile_probe.md findings 3-12) -----------------------------------------

_MINI_HEADER = ("Op Name,OP Type,Task Type,{duration},Block Num,Input Shapes,Input Data Types,Input Formats,"
                "Output Shapes,Output Data Types")


def _mini_profile(path, rows, duration="Task Duration(us)"):
    """A small op_summary: rows of (op type, task type, duration, block num, input shapes, input dtypes, formats,
    output shapes, output dtypes), each cell as the CSV holds it."""
    lines = [_MINI_HEADER.format(duration=duration)]
    lines += [",".join([f"op{i}", *map(str, r)]) for i, r in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


_ADD = ("Add", "AI_VECTOR_CORE", 100.0, 40, '"4096,7168;4096,7168"', "DT_BF16;DT_BF16", "ND;ND", '"4096,7168"',
        "DT_BF16")
_MATMUL = ("MatMulV2", "AI_CORE", 170.0, 20, '"1024,4096;4096,4096"', "FLOAT16;FLOAT16", "ND;ND", '"1024,4096"',
           "FLOAT16")


def test_a_file_named_twice_is_read_once(tmp_path):
    """Finding 9: a directory and a file inside it (or the same file twice) give its rows once, in the order
    first named; the file named again is listed."""
    d = tmp_path / "prof"
    d.mkdir()
    f = _mini_profile(d / "op_summary_1.csv", [_ADD, _ADD])
    other = _mini_profile(tmp_path / "op_summary_2.csv", [_MATMUL])
    df = read_profiles([d, other, f, tmp_path / "prof" / ".." / "prof" / "op_summary_1.csv"])
    assert len(df) == 3 and df.attrs["files"] == [str(f), str(other)]
    assert df.attrs["repeated_files"] == [str(f)]
    assert list(df["op"]) == ["add", "add", "matmul"]


def test_tasks_off_the_ai_core_are_skipped_with_the_task_type(tmp_path):
    """Finding 10: an Add on the AI CPU, communication and copy tasks are no AI Core kernel: skipped, named by
    their Task Type (also in a kernel_details file's Accelerator Core column), before any other reason."""
    rows = [tuple(t if i != 1 else task for i, t in enumerate(_ADD))
            for task in ("AI_CPU", "AICPU", "HCCL", "COMMUNICATION", "MEMCPY_ASYNC", "AI_VECTOR_CORE")]
    rows.append(("hcom_allReduce_", "HCCL", 50.0, "N/A", "", "", "", "", ""))
    df = read_profiles(_mini_profile(tmp_path / "op_summary_1.csv", rows))
    assert list(df["line"]) == [7]
    assert df.attrs["skipped"] == {f"ran on {t}; the model costs the AI Core kernel": n for t, n in (
        ("AI_CPU", 1), ("AICPU", 1), ("HCCL", 2), ("COMMUNICATION", 1), ("MEMCPY_ASYNC", 1))}
    kd = tmp_path / "kernel_details.csv"
    kd.write_text("Name,Type,Accelerator Core,Duration(us),Block Dim,Input Shapes,Input Data Types,Output Shapes,"
                  'Output Data Types\na,Add,AI_CPU,850,N/A,"64,32;64,32",FLOAT;FLOAT,"64,32",FLOAT\n')
    assert read_profiles(kd).attrs["skipped"] == {"ran on AI_CPU; the model costs the AI Core kernel": 1}


def test_unitless_duration_is_noted_and_the_cli_reads_it_in_the_unit_given(tmp_path, capsys):
    """Finding 11: a duration header without a unit is listed (file, header, unit read in); `--time-unit ns`
    reads it in ns, and the command prints a note naming the file and the unit."""
    from perfmodel import cli
    f = _mini_profile(tmp_path / "op_summary_1.csv", [_ADD[:2] + (105000.0,) + _ADD[3:]], duration="Task Duration")
    assert read_profiles(f).attrs["unitless_durations"] == [{"source": str(f), "header": "Task Duration",
                                                              "unit": "us"}]
    unit_given = tmp_path / "op_summary_2.csv"
    _mini_profile(unit_given, [_ADD])
    assert read_profiles(unit_given).attrs["unitless_durations"] == []
    for unit, measured in (("us", 105000.0), ("ns", 105.0)):
        out = tmp_path / unit
        assert cli.main(["compare", "--profiles", str(f), "--product", "Ascend910B4", "--time-unit", unit,
                         "--no-plots", "--out", str(out)]) == 0
        text = capsys.readouterr().out
        assert f"note: {f}: 'Task Duration' has no unit; read as {unit}" in text
        assert pd.read_csv(out / "compare.csv")["measured_us"][0] == pytest.approx(measured)
    with pytest.raises(SystemExit):             # argparse's choices: us or ns
        cli.main(["compare", "--profiles", str(f), "--product", "Ascend910B4", "--time-unit", "ms"])
    assert "invalid choice: 'ms'" in capsys.readouterr().err


def test_semicolon_separated_header_gets_a_hint(tmp_path):
    """Finding 12: a file a spreadsheet re-saved with ';' between fields says so."""
    f = tmp_path / "op_summary_1.csv"
    f.write_text(_MINI_HEADER.format(duration="Task Duration(us)").replace(",", ";") + "\n"
                 "a;Add;AI_VECTOR_CORE;100.0;40;\"4096,7168;4096,7168\";DT_BF16;DT_BF16;ND;ND;\"4096,7168\";DT_BF16\n")
    [skipped] = read_profiles(f).attrs["skipped_files"]
    assert "looks ';'-separated" in skipped["reason"] and "re-saved by a spreadsheet?" in skipped["reason"]
    typo = _edited(tmp_path, "typ.csv", "OP Type", "OP Typ")         # a comma-separated header: no such hint
    assert "';'" not in read_profiles(typo).attrs["skipped_files"][0]["reason"]


def test_batched_per_token_scale_says_which_input_would_be_the_bias():
    """Finding 12: npusim.npu_quant_matmul takes pertoken_scale as (m,) only (x1's second-last dimension); a
    batched x1's one-scale-per-row input (b*m) is not silently passed as a bias: the reason names it."""
    row = _row("npu_quant_matmul", "QuantBatchMatmulV3", "4,1024,7168;7168,2048;2048;4096", "INT8;INT8;DT_BF16;FLOAT",
               "4,1024,2048", "DT_BF16")
    with pytest.raises(ValueError, match=r"the last input \(4096,\) float32 would be read as bias .* b\*m = 4096"):
        to_predict_args(row)
    # its (m,) per-token scale is read as such
    ok = to_predict_args(_row("npu_quant_matmul", "QuantBatchMatmulV3", "4,1024,7168;7168,2048;2048;1024",
                              "INT8;INT8;DT_BF16;FLOAT", "4,1024,2048", "DT_BF16"))
    assert spec(ok, "pertoken_scale") == ((1024,), "float32") and "bias" not in ok


def test_quant_matmul_x2_recorded_n_by_k_is_the_transposed_weight():
    """Finding 7: an ND x2 recorded [n, k] (n != k) is the transpose of a contiguous [n, k] weight, as aclnn passes
    w.T; [k, n], an NZ weight and n == k (undecidable) stay contiguous [k, n]."""
    from npusim.plan import TensorSpec

    def x2_of(shapes, out, formats=None):
        return to_predict_args(_row("npu_quant_matmul", "QuantBatchMatmulV3", shapes, "INT8;INT8;FLOAT", out,
                                    "DT_BF16", formats=formats))["x2"]
    assert x2_of("1,7168;576,7168;576", "1,576") == TensorSpec((576, 7168), "int8").T
    assert x2_of("1,7168;576,7168;576", "1,576").transposed
    assert x2_of("1,7168;7168,576;576", "1,576") == TensorSpec((7168, 576), "int8")
    assert x2_of("1,4096;4096,4096;4096", "1,4096") == TensorSpec((4096, 4096), "int8")
    assert x2_of("1,7168;18,448,16,32;576", "1,576", "ND;FRACTAL_NZ;ND") == TensorSpec((7168, 576), "int8")


def test_core_count_hint_names_the_smaller_socs_of_the_product():
    """Finding 4: block dims that never pass 20 AIC / 40 AIV under --product atlas-a2 (Ascend910B2: 24 / 48, per
    npusim/data/socs.csv) name the 20/40 SoCs of atlas-a2; a profile that fills 24 / 48, or the SoC named, none."""
    from perfmodel.compare import core_count_hint
    measured = pd.DataFrame({"task_type": ["AI_VECTOR_CORE", "AI_CORE", "MIX_AIC", None],
                             "block_dim": [40.0, 20.0, 8.0, 48.0]})       # the last: a packaged row, no task type
    hint = core_count_hint(measured, "atlas-a2")
    assert "max 20 AIC / 40 AIV" in hint and "Ascend910B2's 24 AIC / 48 AIV" in hint
    assert "Ascend910B3, Ascend910B4, Ascend910B4-1" in hint and "--product <SoC>" in hint
    assert core_count_hint(measured, "Ascend910B4") == ""
    full = measured.assign(block_dim=[48.0, 24.0, 8.0, 48.0])
    assert core_count_hint(full, "atlas-a2") == ""
    small = measured.assign(block_dim=[8.0, 4.0, 4.0, 48.0])                # fits any SoC: nothing to say
    assert core_count_hint(small, "atlas-a2") == ""


def test_cli_prints_the_core_count_hint_skipped_row_places_and_failed_launch_places(tmp_path, capsys):
    """Findings 4 and 5: `compare` prints the core-count hint, up to 3 file:line examples per skip reason, and the
    first file:line of each launch it could not predict; line numbers are plain ints."""
    from perfmodel import cli
    from perfmodel import compare as cmp
    from perfmodel.profiles import skipped_summary
    bad_add = ("Add", "AI_VECTOR_CORE", 30.0, 40, '"64,32;64,33"', "FLOAT16;FLOAT16", "ND;ND", '"64,33"', "FLOAT16")
    na = _ADD[:2] + ("N/A",) + _ADD[3:]
    f = _mini_profile(tmp_path / "op_summary_1.csv", [_ADD, _MATMUL, na, na, na, na, bad_add, bad_add])
    m = cmp.measured_from_profiles(f, "atlas-a2")
    assert [type(ex["line"]) for ex in m.attrs["skipped_rows"]] == [int]
    text = skipped_summary(m, examples=3)
    assert f"e.g. {f}:4 (Add)" in text and text.count("e.g.") == 1     # one example per reason and chunk
    launches = cmp.by_launch(cmp.compare(m))
    failed = launches[launches["status"] != "ok"].iloc[0]
    assert (failed["source"], failed["line"], failed["rows"]) == (str(f), 8, 2)
    assert cli.main(["compare", "--profiles", str(f), "--product", "atlas-a2", "--no-plots",
                     "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "SoCs of atlas-a2 with 20 AIC / 40 AIV cores: Ascend910B3, Ascend910B4, Ascend910B4-1" in out
    assert f"e.g. {f}:4 (Add)" in out
    could_not = out[out.index("launches the model could not predict"):]
    assert f"{f}:8" in could_not


def test_one_call_with_its_dtypes_spelled_two_ways_is_one_launch(tmp_path):
    # msprof writes DT_BF16 in one version and BF16 in another: the same call, counted once in the launch table
    from perfmodel import compare as cmp
    spelled = _ADD[:5] + ("BF16;BF16",) + _ADD[6:]
    path = _mini_profile(tmp_path / "op_summary_0.csv", [_ADD, spelled, _MATMUL])
    joined = cmp.compare(cmp.measured_from_profiles([path], "atlas-a2"))
    launches = cmp.by_launch(joined)
    assert len(joined) == 3 and len(launches) == 2
    assert sorted(launches["rows"]) == [1, 2]


def test_a_row_whose_shapes_disagree_is_refused_with_its_reason():
    # x2 is rebuilt from x1's K and the output's N: a recorded x2 that fits neither layout (nor the NZ storage
    # of K x N), or more dtypes than shapes, is refused rather than predicted as some other call
    def args(shapes, dtypes="INT8;INT8;FLOAT", formats=None):
        return to_predict_args(_row("npu_quant_matmul", "QuantBatchMatmulV3", shapes, dtypes, "16,2048", "DT_BF16",
                                    formats=formats))
    assert args('"16,7168;7168,2048;2048"')["x2"].shape == (7168, 2048)
    assert args('"16,7168;64,448,16,32;2048"', formats="ND;FRACTAL_NZ;ND")["x2_format"] == "NZ"
    with pytest.raises(ValueError, match=r"x2 shape \(4096, 2048\) is not \[K, N\] or \[N, K\] of K = 7168"):
        args('"16,7168;4096,2048;2048"')
    with pytest.raises(ValueError, match="nor the FRACTAL_NZ storage"):
        args('"16,7168;5,5,5,5;2048"', formats="ND;FRACTAL_NZ;ND")
    with pytest.raises(ValueError, match="4 input dtypes for 3 input shapes"):
        args('"16,7168;7168,2048;2048"', dtypes="INT8;INT8;FLOAT;FLOAT")


def test_a_byte_that_is_not_utf8_costs_no_row(tmp_path):
    # a GBK op name (a Windows export) is not UTF-8: the rows are still read; the op name is not needed
    path = _mini_profile(tmp_path / "op_summary_0.csv", [_ADD, _MATMUL])
    raw = path.read_bytes().replace(b"op0,", "\u91cf\u5316,".encode("gbk"))
    path.write_bytes(raw)
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    df = read_profiles(path)
    assert len(df) == 2 and not df.attrs["skipped_files"]


def test_a_profile_row_is_compared_with_its_own_kernel_only(tmp_path):
    """A float32 scale with float16 output launches TransQuantParamV2, then QuantBatchMatmulV3: the profile has a
    row for each, so the QuantBatchMatmulV3 row is predicted as that kernel alone (as the packaged set's rows
    that name their kernels), the TransQuantParamV2 row as its own."""
    from perfmodel import compare as cmp
    from npusim.plan import TensorSpec as T
    qbmm = ("QuantBatchMatmulV3", "AI_CORE", 93.0, 24, '"1024,4096;4096,4096;4096"', "INT8;INT8;FLOAT", "ND;ND;ND",
            '"1024,4096"', "FLOAT16")
    tqp = ("TransQuantParamV2", "AI_VECTOR_CORE", 3.0, 1, '"4096"', "FLOAT", "ND", '"4096"', "UINT64")
    joined = cmp.compare(cmp.measured_from_profiles([_mini_profile(tmp_path / "op_summary_0.csv", [qbmm, tqp])],
                                                    "atlas-a2"))
    whole = perfmodel.predict("npu_quant_matmul", "atlas-a2", x1=T((1024, 4096), "int8"), x2=T((4096, 4096), "int8"),
                              scale=T((4096,), "float32"), output_dtype="float16")
    (name, own), (extra, extra_us) = whole.kernels
    assert name.startswith("QuantBatchMatmulV3") and extra == "TransQuantParamV2"
    assert joined["predicted_us"].tolist() == pytest.approx([own, extra_us])


def test_a_quant_matmul_row_without_its_output_is_skipped_with_the_reason(tmp_path):
    """Without the output columns a quant matmul's output dtype would default to int8, which reads a per-token
    scale as a bias (and fails naming the bias): the row is skipped, saying what is missing."""
    from perfmodel import compare as cmp
    path = tmp_path / "op_summary_0.csv"
    path.write_text("Op Name,OP Type,Task Type,Task Duration(us),Block Num,Input Shapes,Input Data Types\n"
                    'q,QuantBatchMatmulV3,MIX_AIC,170,24,"1024,7168;7168,4096;4096;1024","INT8;INT8;BF16;FLOAT"\n')
    measured = cmp.measured_from_profiles([path], "atlas-a2")
    assert len(measured) == 0
    (reason,) = measured.attrs["skipped"]
    assert "output is not recorded" in reason and "Output Data Types" in reason
