"""perfmodel.sweep / compare / plots / cli end to end.

Most tests run against a FAKE perfmodel.predict (monkeypatched) whose latency is a simple formula,
so the expected numbers (MAPE etc.) can be worked out by hand; one test runs the real model when it
is importable.
"""
import json
import math
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import perfmodel
from npusim.plan import TensorSpec
from perfmodel import cli, compare as cmp, sweep

DATA = Path(__file__).parent / "data"
SUPPORTED = ["atlas-a2", "ascend-950pr"]


@dataclass
class FakePrediction:
    op: str
    product: str
    soc: str
    latency_us: float
    pipes_us: dict = field(default_factory=dict)
    head_us: float = 2.0
    bound: str = "mte2"
    bytes_read: int = 0
    bytes_written: int = 0
    flops: int = 0
    block_dim: int = 48
    tiling_key: int = 0
    tiles: dict = field(default_factory=dict)
    achieved_GBps: float = 0.0
    achieved_TOPS: float = 0.0
    plan: object = None


def fake_predict(op, product="atlas-a2", *, calibration=None, **args):
    """latency = 2 us + input bytes / 1e6 (1 TB/s), times calibration['factor'] when given."""
    if product not in SUPPORTED + ["Ascend910B1"]:
        raise ValueError(f"{op} is not supported on {product}")
    nbytes = sum(v.nbytes for v in args.values() if isinstance(v, TensorSpec))
    lat = (2.0 + nbytes / 1e6) * (calibration["factor"] if calibration else 1.0)
    return FakePrediction(op, product, "FakeSoC", lat, {"mte2": lat - 2.0, "vector": 0.5 * lat, "scalar": 1.0},
                          bytes_read=nbytes, bytes_written=nbytes // 2, flops=nbytes, achieved_GBps=nbytes / lat / 1e3,
                          achieved_TOPS=nbytes / lat / 1e6)


class FakeCalibration(dict):
    def save(self, path):
        Path(path).write_text(json.dumps(self))

    @classmethod
    def load(cls, path):
        return cls(json.loads(Path(path).read_text()))


def fake_fit(measured, product=None, **kw):
    # factor = mean of measured / uncalibrated prediction
    ratios = [r["measured_us"] / fake_predict(r["op"], r["product"], **r["args"]).latency_us
              for _, r in measured.iterrows()]
    return FakeCalibration(factor=sum(ratios) / len(ratios))


def fake_predict_many(op, product="atlas-a2", args_list=(), *, calibration=None, l2="cold", errors="raise"):
    out = []
    for a in args_list:
        try:
            out.append(fake_predict(op, product, calibration=calibration, **a))
        except ValueError as exc:
            out.append(exc)
    return out


@pytest.fixture
def fake_model(monkeypatch):
    """The fake model in place of perfmodel.predict_many (in the rows layer, which sweep and compare share)."""
    from perfmodel import rows
    monkeypatch.setattr(rows, "predict_many", fake_predict_many)
    fake_load = lambda c: FakeCalibration.load(c) if isinstance(c, (str, Path)) else c   # noqa: E731
    for module in (sweep, cmp, cli):               # where the commands read a calibration file
        monkeypatch.setattr(module, "load_calibration", fake_load)
    monkeypatch.setattr(sweep, "supported_products", lambda op: list(SUPPORTED))
    cal = types.ModuleType("perfmodel.calibration")
    cal.Calibration, cal.PARAMS = FakeCalibration, ("factor",)
    cal.default_calibration = lambda: None
    fitting = types.ModuleType("perfmodel.fitting")
    fitting.fit = fake_fit
    fitting.calibrate = lambda measured, path=None, product=None, params=None, **kw: fake_fit(measured, product)
    fitting.works_of = lambda measured: []          # (no Works: nothing for the under-determined check to count)
    monkeypatch.setattr(perfmodel, "calibration", cal)
    monkeypatch.setattr(perfmodel, "fitting", fitting)
    sweep._runs.cache_clear()          # dtype support probes ran against the fake
    yield
    sweep._runs.cache_clear()


def nonempty(path):
    p = Path(path)
    return p.exists() and p.stat().st_size > 1000


# ---------------------------------------------------------------------------------------------

def test_grid_axes_and_overrides(fake_model):
    pts = sweep.grid()
    assert {p.op for p in pts} == set(sweep.OPERATORS)
    # the fake runs everything: bf16 and fp16 for each op, times both epilogues for the quant matmul
    combos = 2 * (len(sweep.OPERATORS) - 1) + 2 * 2
    assert len(pts) == combos * len(SUPPORTED) * 15 and sorted({p.tokens for p in pts}) == [2 ** i for i in range(15)]
    assert {p.hidden for p in pts if p.op == "indexer_compress_epilog"} == {4096}
    qmm = {(p.dtype, p.epilogue) for p in pts if p.op == "npu_quant_matmul"}
    assert qmm == {("bfloat16", "pertoken"), ("bfloat16", "fixpipe"), ("float16", "pertoken"), ("float16", "fixpipe")}
    # axes an operator does not have are blank
    assert all(p.n is None and p.topk is None and p.epilogue is None for p in pts if p.op == "npu_dynamic_quant")
    assert all(p.topk == 8 and p.n is None for p in pts if p.op == "moe_init_routing_quant")
    pts = sweep.grid(ops=["npu_quant_matmul", "npu_dynamic_quant"], products=["atlas-a2"], tokens=[1, 2],
                     n=[1024, 2048], dtypes=["bf16"], epilogues=["pertoken"],
                     overrides={"npu_dynamic_quant": {"tokens": [7]}})
    assert sorted((p.op, p.tokens, p.n or 0) for p in pts) == [
        ("npu_dynamic_quant", 7, 0), ("npu_quant_matmul", 1, 1024), ("npu_quant_matmul", 1, 2048),
        ("npu_quant_matmul", 2, 1024), ("npu_quant_matmul", 2, 2048)]
    assert {p.dtype for p in pts} == {"bfloat16"}          # the alias is normalised
    with pytest.raises(ValueError):
        sweep.grid(ops=["add"], overrides={"add": {"bogus": 1}})


def test_grid_rejects_mistakes_with_the_choices():
    cases = [(dict(ops=["npu_dynamic_quantt"]), "'npu_dynamic_quantt'.*did you mean 'npu_dynamic_quant'"),
             (dict(products=["atlas_a2"]), "'atlas_a2'.*did you mean 'atlas-a2'.*atlas-training"),
             (dict(dtypes=["bf17"]), "'bf17'.*bfloat16, float16, float32"),
             (dict(epilogues=["per_token"]), "did you mean 'pertoken'"),
             (dict(weight_formats=["nz"]), "weight_formats: .*'nz'.*did you mean 'NZ'.*ND, ND-T, NZ"),
             (dict(tokens=[[1]]), r"tokens: .*integers.*\[1\]"), (dict(tokens=[0]), "tokens"),
             (dict(hidden=[1.5]), "hidden"), (dict(n=[True]), "n: "), (dict(tokens=[]), "empty"),
             (dict(ops=[5]), "ops: .*names"),
             (dict(overrides={"npu_dynamic_quantt": {}}), "did you mean 'npu_dynamic_quant'"),
             (dict(overrides=5), r"\[op\]"), (dict(overrides={"add": {"tokenz": [1]}}), "did you mean 'tokens'"),
             (dict(ops=["add"], overrides={"matmul": {"tokens": [1]}}), "not among the swept operators")]
    for kw, match in cases:
        with pytest.raises(ValueError, match=match):
            sweep.grid(**kw)


def test_default_dtypes_follow_what_each_product_supports():
    """No skipped rows in the default sweep: bf16 only where the operator takes it (not on 310P/910, not for
    fake quant), the fixpipe epilogue only with fp16 output, per-token on A2 but not on 310P."""
    pts = sweep.grid(tokens=[16])
    got: dict = {}
    for p in pts:
        got.setdefault((p.op, p.product), set()).add((p.dtype, p.epilogue or ""))
    got = {k: sorted(v) for k, v in got.items()}
    assert got[("npu_dynamic_quant", "atlas-inference")] == [("float16", "")]
    assert got[("npu_dynamic_quant", "atlas-a2")] == [("bfloat16", ""), ("float16", "")]
    assert got[("fake_quantize_per_channel_affine_cachemask", "atlas-a2")] == [("float16", "")]
    assert got[("npu_quant_matmul", "atlas-a2")] == [("bfloat16", "pertoken"), ("float16", "fixpipe"),
                                                    ("float16", "pertoken")]
    assert got[("npu_quant_matmul", "atlas-inference")] == [("float16", "fixpipe")]
    df = sweep.run_sweep(pts, progress=False)
    assert (df["status"] == "ok").all()


def test_build_args_shapes():
    a = sweep.build_args(sweep.Point("npu_quant_matmul", "atlas-a2", 16, 7168, "bfloat16", 2048))
    assert a["x1"].shape == (16, 7168) and a["x2"].shape == (7168, 2048) and a["pertoken_scale"].shape == (16,)
    a = sweep.build_args(sweep.Point("moe_init_routing_quant", "atlas-a2", 64, 1024, topk=4))
    assert a["expert_idx"].shape == (64, 4) and a["active_num"] == 64
    with pytest.raises(ValueError):
        sweep.build_args(sweep.Point("nope", "atlas-a2", 1))


def test_run_sweep_records_failures(fake_model):
    pts = sweep.grid(ops=["add", "npu_dynamic_quant"], products=["atlas-a2", "atlas-inference"], tokens=[1, 1000],
                     hidden=[1000], dtypes=["float16"])
    df = sweep.run_sweep(pts, progress=False)
    assert len(df) == 8
    skipped = df[df["status"] == "skipped"]
    assert set(skipped["product"]) == {"atlas-inference"} and skipped["reason"].str.contains("not supported").all()
    ok = df[(df["status"] == "ok") & (df["op"] == "add") & (df["tokens"] == 1000)].iloc[0]
    assert ok["latency_us"] == pytest.approx(2.0 + 4e6 / 1e6)      # x, y: 1000x1000 fp16
    assert ok["pipe_mte2_us"] == pytest.approx(4.0) and math.isnan(ok["pipe_cube_us"])


def test_run_sweep_survives_a_failing_model(monkeypatch):
    from perfmodel import rows

    def broken(*a, **k):
        raise RuntimeError("model exploded")
    monkeypatch.setattr(rows, "predict_many", broken)
    df = sweep.run_sweep(sweep.grid(ops=["add"], products=["atlas-a2"], tokens=[1], dtypes=["float16"]),
                         progress=False)
    assert list(df["status"]) == ["skipped"] and "model exploded" in df["reason"][0]


def test_sweep_csv_columns_say_what_ran():
    """W8A8 rows record the matmul's int8 input, bf16 output and per-token epilogue; n/topk/epilogue are
    blank where they do not apply."""
    pts = sweep.grid(ops=["npu_dynamic_quant", "npu_quant_matmul", "moe_init_routing_quant"], products=["atlas-a2"],
                     tokens=[4], dtypes=["bfloat16"])
    df = sweep.run_sweep(pts, progress=False).set_index("op")
    assert tuple(df.loc["npu_quant_matmul", ["in_dtype", "out_dtype", "epilogue", "n"]]) == (
        "int8", "bfloat16", "pertoken", 4096)
    assert tuple(df.loc["npu_dynamic_quant", ["in_dtype", "out_dtype"]]) == ("bfloat16", "int8")
    for op, blank in (("npu_dynamic_quant", ("n", "topk", "epilogue")), ("moe_init_routing_quant", ("n", "epilogue"))):
        assert all(pd.isna(df.loc[op, c]) for c in blank)
    assert df.loc["moe_init_routing_quant", "topk"] == 8


def test_weight_format_axis_sweeps_nd_and_nz_weights():
    """The matmuls' weight stored ND (default) or FRACTAL_NZ: an axis of npu_quant_matmul and grouped_matmul
    only, passed to perfmodel.predict as x2_format / weight_format; an ND point keeps the emulator's own
    arguments."""
    pts = sweep.grid(ops=["npu_quant_matmul", "grouped_matmul", "npu_dynamic_quant"], products=["atlas-a2"],
                     tokens=[1], dtypes=["float16"], epilogues=["fixpipe"], weight_formats=["ND", "NZ"])
    assert sorted((p.op, p.weight_format or "") for p in pts) == [
        ("grouped_matmul", "ND"), ("grouped_matmul", "NZ"), ("npu_dynamic_quant", ""),
        ("npu_quant_matmul", "ND"), ("npu_quant_matmul", "NZ")]
    by = {(p.op, p.weight_format): sweep.build_args(p) for p in pts}
    assert "x2_format" not in by["npu_quant_matmul", "ND"] and by["npu_quant_matmul", "NZ"]["x2_format"] == "NZ"
    assert "weight_format" not in by["grouped_matmul", "ND"] and by["grouped_matmul", "NZ"]["weight_format"] == "NZ"
    df = sweep.run_sweep(pts, progress=False).set_index(["op", "weight_format"])
    assert set(df["status"]) == {"ok"}
    nz, nd = (df.loc[("npu_quant_matmul", f), "latency_us"] for f in ("NZ", "ND"))
    assert nz == perfmodel.predict("npu_quant_matmul", "atlas-a2", x2_format="NZ",
                                   **by["npu_quant_matmul", "ND"]).latency_us < nd
    # the default: ND on the two matmuls, blank elsewhere
    assert {p.weight_format for p in sweep.grid(ops=["npu_quant_matmul", "moe_init_routing_quant"],
                                                products=["atlas-a2"], tokens=[1])} == {"ND", None}


def test_weight_format_nd_t_is_the_transposed_weight():
    """'ND-T': the transpose of a row-major [n, k] weight (w.T), the emulator's own arguments for it: a transposed
    x2 TensorSpec for the quant matmul (Ascend 950 tiles it another way), [E, N, K] with transpose_weight=True
    for GroupedMatmul."""
    pts = sweep.grid(ops=["npu_quant_matmul", "grouped_matmul"], products=["ascend-950dt"], tokens=[1],
                     n=[576], dtypes=["bfloat16"], epilogues=["pertoken"], weight_formats=["ND", "ND-T"])
    by = {(p.op, p.weight_format): sweep.build_args(p) for p in pts}
    from npusim.plan import spec_of
    assert by["npu_quant_matmul", "ND-T"]["x2"] == spec_of(np.zeros((576, 7168), np.int8).T)
    g = by["grouped_matmul", "ND-T"]
    assert g["transpose_weight"] is True and g["weight"].shape == (8, 576, 7168)
    df = sweep.run_sweep(pts, progress=False).set_index(["op", "weight_format"])
    assert set(df["status"]) == {"ok"}
    t = perfmodel.predict("npu_quant_matmul", "ascend-950dt", **by["npu_quant_matmul", "ND-T"])
    assert df.loc[("npu_quant_matmul", "ND-T"), "latency_us"] == t.latency_us
    assert df.loc[("npu_quant_matmul", "ND-T"), "block_dim"] != df.loc[("npu_quant_matmul", "ND"), "block_dim"]


def test_progress_plain_text():
    import io
    buf = io.StringIO()
    bar = sweep.Progress(20, stream=buf, after_s=0.0)
    for _ in range(20):
        bar.step()
    lines = buf.getvalue().splitlines()
    assert lines[-1].startswith("sweep: 20/20 (100%)") and 5 <= len(lines) <= 11


def test_progress_quiet_on_quick_sweeps():
    import io
    buf = io.StringIO()
    bar = sweep.Progress(20, stream=buf)           # the default waits a second before drawing
    for _ in range(20):
        bar.step()
    assert buf.getvalue() == ""


def test_compare_numbers_by_hand(fake_model, tmp_path):
    xy = {"x": TensorSpec((1000, 1000), "float16"), "y": TensorSpec((1000, 1000), "float16")}   # predicted 6 us
    measured = pd.DataFrame([
        {"op": "add", "product": "atlas-a2", "args": xy, "measured_us": 5.0, "block_dim": 48.0},
        {"op": "add", "product": "atlas-a2", "args": xy, "measured_us": 30.0, "block_dim": 48.0},   # a warm-up
        {"op": "add", "product": "atlas-a2", "args": xy, "measured_us": 5.0, "block_dim": 48.0},
        {"op": "add", "product": "atlas-a2", "args": xy, "measured_us": 6.0, "block_dim": math.nan},
        {"op": "add", "product": "atlas-a2", "args": xy, "measured_us": 12.0, "block_dim": 1.0},
        {"op": "add", "product": "atlas-inference", "args": xy, "measured_us": 6.0, "block_dim": math.nan},
    ])
    joined = cmp.compare(measured)
    assert list(joined["status"]) == ["ok"] * 5 + ["skipped"]
    assert list(joined["error_pct"][:5]) == pytest.approx([20.0, -80.0, 20.0, 0.0, -50.0])
    assert list(joined["same_launch"][:5]) == [True, True, True, True, False]
    # the headline is over launches (block dim 48: median 5 us, +20%; unknown: 0%; 1 core: -50%), the rows
    # apart: (20 + 80 + 20 + 0 + 50) / 5
    s = cmp.summarize(joined).iloc[0]
    assert (s["op"], s["product"], s["launches"], s["rows"]) == ("add", "atlas-a2", 3, 5)
    assert s["mape_pct"] == pytest.approx(70 / 3) and s["median_ape_pct"] == pytest.approx(20.0)
    assert s["max_ape_pct"] == pytest.approx(50.0) and s["bias_pct"] == pytest.approx(-10.0)
    assert (s["within_10pct_launches"], s["within_25pct_launches"], s["same_launch_launches"]) == (1, 2, 2)
    assert s["mape_same_launch_pct"] == pytest.approx(10.0)
    assert s["mape_over_rows_pct"] == pytest.approx(170 / 5)
    assert list(cmp.worst(joined, 2)["measured_us"]) == [30.0, 12.0]


def test_read_published_hand_made(tmp_path):
    f = tmp_path / "pub.csv"
    f.write_text("kernel,product,soc,shape,dtype,config,task_duration_us,aiv_or_aic_time_us,vec_or_mac_time_us,"
                 "mte2_time_us,mte3_or_fixpipe_time_us,source\n"
                 'add,atlas-a2,x,"64x32 (z=x+y)",fp16,"48 AIV, 8 KB",10.5,,1.5,7.0,2.0,s1\n'
                 'matmul,ascend-950pr,Ascend950PR_9589,"M=16,N=32,K=64",bf16,"32 AIC",20,,18,,,s2\n'
                 'matmul,nowhere,x,"M=N=K=8",fp16,"",3,,,,,s3\n'
                 'softmax,atlas-a2,x,"8x8",fp16,"",3,,,,,s4\n')
    df = cmp.read_published(f)
    assert list(df["op"]) == ["add", "matmul"] and list(df["measured_us"]) == [10.5, 20.0]
    assert df["args"][0]["x"].shape == (64, 32) and df["args"][1]["b"].shape == (64, 32)
    assert list(df["block_dim"]) == [48.0, 32.0] and df["target"][1] == "Ascend950PR_9589"
    assert (df["pipe_vector_us"][0], df["pipe_mte3_us"][0], df["pipe_cube_us"][1]) == (1.5, 2.0, 18.0)
    assert sum(df.attrs["skipped"].values()) == 2
    assert set(df["trust"]) == {"measured"}         # no note column: every row is fitted


def test_a_published_row_whose_note_holds_it_out_is_shown_not_fitted(tmp_path):
    f = tmp_path / "pub.csv"
    f.write_text("kernel,product,soc,shape,dtype,config,task_duration_us,aiv_or_aic_time_us,vec_or_mac_time_us,"
                 "mte2_time_us,mte3_or_fixpipe_time_us,source,note\n"
                 'add,atlas-a2,x,"64x32 (z=x+y)",fp16,"48 AIV, 8 KB",10.5,,,,,s1,\n'
                 'add,ascend-950pr,x,"64x32 (z=x+y)",fp16,"64 AIV, 8 KB",9.5,,,,,s2,"held out of the fit: a check"\n')
    df = cmp.read_published(f)
    assert list(df["trust"]) == ["measured", "holdout"]
    # the packaged set: Ascend 950's Add sample rows are checks, its two MatMul rows the only fitted 950 rows
    from perfmodel.published import FITTED_TRUST, read_published
    pub = read_published()
    on950 = pub[pub["product"] == "ascend-950pr"]
    assert set(on950[on950["op"] == "add"]["trust"]) == {"holdout"} and len(on950[on950["op"] == "add"]) == 5
    assert set(on950[on950["op"] == "matmul"]["trust"]) == {FITTED_TRUST}


def test_cli_sweep_end_to_end(fake_model, tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli.main(["sweep", "--ops", "npu_dynamic_quant", "npu_quant_matmul", "--products", "atlas-a2",
                   "atlas-inference", "--tokens", "1:64", "--out", str(out), "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    df = pd.read_csv(out / "sweep.csv")
    # atlas-a2: bf16 + fp16 (the fake runs both), the quant matmul with both epilogues: 6 combinations; the fake
    # runs nothing on atlas-inference: one combination per operator, kept as skipped rows that say why
    assert len(df) == (6 + 2) * 7 and (df["status"] == "ok").sum() == 6 * 7
    assert "not supported" in text
    # the skipped points, one wrapped entry per operator, product and reason (not a table hundreds wide)
    assert "npu_dynamic_quant on atlas-inference, 7 points: " in text
    assert max(len(line) for line in text.splitlines() if not line.startswith("  /")) <= 110
    figs = sorted((out / "figures").iterdir())
    names = {p.name for p in figs}
    for stem in ("latency_vs_tokens_atlas-a2_float16", "latency_vs_tokens_atlas-a2_bfloat16", "roofline_atlas-a2",
                 "pipes_atlas-a2_float16"):
        assert {stem + ".png", stem + ".svg"} <= names
    assert all(nonempty(p) for p in figs)
    for p in figs:                                  # every output path is printed
        assert str(p) in text
    assert str(out / "sweep.csv") in text


def test_cli_sweep_toml(fake_model, tmp_path):
    cfg = tmp_path / "s.toml"
    cfg.write_text('ops = ["add", "moe_init_routing_quant"]\nproducts = ["ascend-950pr"]\ntokens = [2, 4]\n'
                   'hidden = [256]\n[op.moe_init_routing_quant]\ntopk = [2, 4]\ntokens = [8]\n')
    rc = cli.main(["sweep", "--config", str(cfg), "--out", str(tmp_path), "--no-plots", "--quiet", "--dtypes", "fp16"])
    assert rc == 0
    df = pd.read_csv(tmp_path / "sweep.csv")
    assert sorted(zip(df["op"], df["tokens"], df["topk"].fillna(0))) == [
        ("add", 2, 0), ("add", 4, 0), ("moe_init_routing_quant", 8, 2), ("moe_init_routing_quant", 8, 4)]
    assert set(df["dtype"]) == {"float16"}
    bad = tmp_path / "bad.toml"
    bad.write_text("opps = []\n")
    assert cli.main(["sweep", "--config", str(bad), "--out", str(tmp_path)]) == 2


def test_cli_compare_profiles_and_published(fake_model, tmp_path, capsys):
    pub = tmp_path / "pub.csv"
    pub.write_text("kernel,product,soc,shape,dtype,config,task_duration_us,aiv_or_aic_time_us,vec_or_mac_time_us,"
                   "mte2_time_us,mte3_or_fixpipe_time_us,source\n"
                   'add,atlas-a2,x,"1000x1000",fp16,"48 AIV",5.0,,1.5,3.0,1.0,s\n'
                   'add,atlas-a2,x,"1000x1000",fp16,"48 AIV",12.0,,,,,s\n')
    rc = cli.main(["compare", "--published", str(pub), "--profiles", str(DATA), "--product", "atlas-a2",
                   "--out", str(tmp_path)])
    assert rc == 0
    text = capsys.readouterr().out
    summary = pd.read_csv(tmp_path / "compare_summary.csv")
    add = summary[summary["op"] == "add"].iloc[0]
    # published: the same call twice, one launch at its median (6 us predicted vs 5 and 12: 8.5); profile Add
    # 4096x4096 fp16: 2+33.554432 vs 70
    prof = abs(2 + 4096 * 4096 * 4 / 1e6 - 70) / 70 * 100
    pub_ape = abs(6 - 8.5) / 8.5 * 100
    assert (add["launches"], add["rows"]) == (2, 3) and add["mape_pct"] == pytest.approx((pub_ape + prof) / 2)
    assert "MAPE per operator and product" in text and "per row" in text
    for f in ("pred_vs_measured.png", "pred_vs_measured.svg", "pipes_pred_vs_measured.png"):
        assert nonempty(tmp_path / "figures" / f) and str(tmp_path / "figures" / f) in text
    assert "unusable profile rows" in text


def test_cli_published_takes_either_packaged_format(tmp_path, capsys):
    """--help names both packaged files: a measured-timings CSV is read as one (it once failed row by row with
    "kernel '' has no perfmodel operator"); a file of neither format says which columns each has."""
    from perfmodel.published import default_measured_path, read_measured
    assert cli.main(["compare", "--published", str(default_measured_path()), "--no-plots", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"{len(read_measured())} usable rows" in out and "has no perfmodel operator" not in out
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\n")
    assert cli.main(["compare", "--published", str(bad), "--no-plots", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "neither timings format" in err and "kernel, config, task_duration_us" in err and "measured_us" in err


def test_cli_compare_lists_the_worst_launches_asked_for_even_when_it_prints_every_row(tmp_path, capsys):
    pub = tmp_path / "pub.csv"
    pub.write_text("kernel,product,soc,shape,dtype,config,task_duration_us,aiv_or_aic_time_us,vec_or_mac_time_us,"
                   "mte2_time_us,mte3_or_fixpipe_time_us,source\n"
                   'add,atlas-a2,x,"1000x1000",fp16,"48 AIV",5.0,,,,,s\n'
                   'add,atlas-a2,x,"2000x1000",fp16,"48 AIV",50.0,,,,,s\n')
    base = ["compare", "--published", str(pub), "--no-plots", "--out", str(tmp_path)]
    assert cli.main(base) == 0
    assert "per row" in (text := capsys.readouterr().out) and "worst" not in text
    assert cli.main(base + ["--worst", "1"]) == 0
    text = capsys.readouterr().out
    assert "per row" in text and "worst 1 launches" in text


def test_cli_calibrate_then_use(fake_model, tmp_path, capsys, monkeypatch):
    pub = tmp_path / "pub.csv"
    pub.write_text("kernel,product,soc,shape,dtype,config,task_duration_us,aiv_or_aic_time_us,vec_or_mac_time_us,"
                   "mte2_time_us,mte3_or_fixpipe_time_us,source\n"
                   'add,atlas-a2,x,"1000x1000",fp16,"48 AIV",12.0,,,,,s\n')
    cal = tmp_path / "cal.json"
    assert cli.main(["calibrate", "--published", str(pub), "--output", str(cal), "--out", str(tmp_path),
                     "--only-given-rows"]) == 0
    assert json.loads(cal.read_text())["factor"] == pytest.approx(2.0)     # 12 us measured / 6 us predicted
    assert str(cal) in capsys.readouterr().out
    assert cli.main(["compare", "--published", str(pub), "--calibration", str(cal), "--out", str(tmp_path)]) == 0
    assert pd.read_csv(tmp_path / "compare.csv")["predicted_us"][0] == pytest.approx(12.0)
    # by default your rows are fitted together with the packaged set's 'measured' rows (and only those)
    fitted = []
    monkeypatch.setattr(perfmodel.fitting, "calibrate",
                        lambda measured, **kw: fitted.append(measured) or fake_fit(measured, None))
    assert cli.main(["calibrate", "--published", str(pub), "--output", str(cal), "--out", str(tmp_path)]) == 0
    packaged = cmp.calibration_set()
    assert len(fitted[0]) == 1 + (packaged["trust"] == "measured").sum()
    assert "together with the packaged set" in capsys.readouterr().out
    # the packaged set alone: its held-out, doubtful and analogue rows are never fitted
    assert cli.main(["calibrate", "--output", str(cal), "--out", str(tmp_path)]) == 0
    assert len(fitted[1]) and set(fitted[1]["trust"]) == {"measured"}
    # --out names a directory: a .json there is a mistake, not a directory named cal.json
    assert cli.main(["calibrate", "--out", str(tmp_path / "x.json")]) == 2
    assert not (tmp_path / "x.json").exists()


def test_cli_plot_every_kind(fake_model, tmp_path, capsys):
    assert cli.main(["sweep", "--ops", "add", "matmul", "--products", "atlas-a2", "--tokens", "1,8,64",
                     "--dtypes", "float16", "--out", str(tmp_path), "--no-plots", "--quiet"]) == 0
    for kind, stem in (("latency", "latency_vs_tokens_atlas-a2_float16"), ("roofline", "roofline_atlas-a2"),
                       ("pipes", "pipes_atlas-a2_float16")):
        figdir = tmp_path / kind
        assert cli.main(["plot", "--sweep", str(tmp_path / "sweep.csv"), "--kind", kind, "--out", str(figdir)]) == 0
        assert nonempty(figdir / "figures" / f"{stem}.png") and nonempty(figdir / "figures" / f"{stem}.svg")
    assert cli.main(["plot", "--sweep", str(tmp_path / "missing.csv"), "--out", str(tmp_path)]) == 2


def test_cli_plot_of_a_given_csv_writes_beside_it(fake_model, tmp_path, capsys, monkeypatch):
    """`npusim plot --sweep other/sweep.csv` (no --out) writes other/figures/, as `npusim sweep --out other` lays
    it out, and leaves the default npusim-out/ alone (new-user trial finding 11); --out still wins; --help says so."""
    monkeypatch.chdir(tmp_path)
    other = tmp_path / "other"
    assert cli.main(["sweep", "--ops", "add", "--products", "atlas-a2", "--tokens", "1,8", "--dtypes", "float16",
                     "--out", str(other), "--no-plots", "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main(["plot", "--sweep", str(other / "sweep.csv"), "--kind", "roofline"]) == 0
    assert nonempty(other / "figures" / "roofline_atlas-a2.png")
    assert str(other / "figures" / "roofline_atlas-a2.png") in capsys.readouterr().out
    assert not (tmp_path / cli.DEFAULT_OUT).exists()
    assert cli.main(["plot", "--sweep", "other/sweep.csv", "--kind", "roofline", "--out", "elsewhere"]) == 0
    assert nonempty(tmp_path / "elsewhere" / "figures" / "roofline_atlas-a2.png")
    with pytest.raises(SystemExit):
        cli.main(["plot", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "<out>/figures/" in text and "the --sweep CSV's directory" in text


def test_real_model_tiny_sweep(tmp_path):
    """With the real perfmodel (when it is there): the sweep runs, every row is ok or explained."""
    if not hasattr(perfmodel, "predict"):
        pytest.skip("perfmodel.predict not available yet")
    pts = sweep.grid(products=["atlas-a2"], tokens=[1, 256])
    df = sweep.run_sweep(pts, progress=False)
    assert len(df) == len(pts)
    assert ((df["status"] == "ok") | (df["reason"].str.len() > 0)).all()
    ok = df[df["status"] == "ok"]
    assert (ok["latency_us"] > 0).all()


def test_compare_and_fit_report_agree_on_the_calibration_set(capsys):
    """`npusim compare` and `python -m perfmodel.fit_report` map every packaged measured row to the same
    launch: the same predictions under the shipped calibration."""
    from perfmodel import fit_report
    from perfmodel.published import calibration_set
    rows = calibration_set()
    joined = cmp.compare(rows)
    assert len(joined) == len(rows) and (joined["status"] == "ok").all()
    _cal, per_row = fit_report.evaluate(rows)
    assert list(joined["predicted_us"].round(6)) == list(per_row["predicted_us"].round(6))
    # the published configuration reaches the model: 1-core and 48-core Add differ ~25x
    add = joined[(joined["op"] == "add") & (joined["product"] == "atlas-a2")
                 & joined["config"].str.contains("DataCopy")].set_index("config")["predicted_us"]
    assert add["1 AIV, 8 KB DataCopy"] / add["48 AIV, 8 KB DataCopy"] > 15


def test_fit_report_figure_and_table(tmp_path, monkeypatch, capsys):
    """fit_report --figure draws the validation figure and writes the per-row table it shows (here on a
    small slice of the calibration set, without cross-validation, so that it stays quick)."""
    from perfmodel import fit_report
    from perfmodel.published import calibration_set
    rows = calibration_set()
    small = rows[rows["op"].isin(["add", "moe_init_routing_quant"])
                 | ((rows["op"] == "sigmoid") & (rows["trust"] == "holdout"))].reset_index(drop=True)
    monkeypatch.setattr(fit_report, "calibration_set", lambda: small)
    stem = tmp_path / "validation"
    assert fit_report.main(["--no-write", "--figure", str(stem)]) == 0
    assert nonempty(stem.with_suffix(".png")) and nonempty(stem.with_suffix(".svg"))
    out = capsys.readouterr().out
    assert "held out of the fit on purpose" in out and "sigmoid Ascend950PR_9589" in out
    table = pd.read_csv(stem.with_suffix(".csv"))
    assert len(table) == len(small) and set(table["trust"]) == {"measured", "doubtful", "analogue", "holdout"}
    err = 100 * (table["predicted_us"] - table["measured_us"]) / table["measured_us"]
    # the table rounds to 3 decimals: predicted_us's rounding moves the error by up to 0.05 / measured_us points
    assert (abs(err - table["error_pct"]) <= 0.05 / table["measured_us"] + 0.001).all()


def test_fit_report_explains_its_columns_and_rewrites_only_a_changed_calibration(tmp_path, monkeypatch, capsys):
    import json
    from perfmodel import fit_report
    from perfmodel.published import calibration_set
    rows = calibration_set()
    monkeypatch.setattr(fit_report, "calibration_set", lambda: rows[rows["op"] == "add"].reset_index(drop=True))
    out = tmp_path / "cal.json"
    assert fit_report.main(["--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "error_pct = 100 x (predicted -" in text and "worst_pct" in text and f"wrote {out}" in text
    assert "fitted calibration parameters per kernel family" in text
    fitted = json.loads(out.read_text())["params"]
    assert fit_report.main(["--out", str(out)]) == 0
    assert "already holds this fit" in capsys.readouterr().out
    fitted["a2a3"]["launch_us"] *= 1.01             # a calibration that differs is rewritten
    out.write_text(json.dumps({"source": "s", "params": fitted, "report": []}))
    assert fit_report.main(["--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert json.loads(out.read_text())["params"]["a2a3"]["launch_us"] != fitted["a2a3"]["launch_us"]


def test_published_config_mapping():
    from perfmodel.published import config_args, published_args
    assert config_args("add", "48 AIV, L2 bypass, UB bank-conflict fix") == dict(
        block_dim=48, tile_bytes=32512, double_buffer=True, l2_bypass=True, bank_conflict_free=True)
    assert config_args("add", "1 AIV, 8 KB DataCopy")["double_buffer"] is False
    # the 950 table of the same sample: dataCopyLen 21760 fp16 elements, cases 3-4 single- then double-buffered
    assert config_args("add", "64 AIV, 43520 B DataCopy") == dict(block_dim=64, tile_bytes=43520, double_buffer=False)
    assert config_args("add", "64 AIV, 43520 B, double buffer, L2 bypass") == dict(
        block_dim=64, tile_bytes=43520, double_buffer=True, l2_bypass=True)
    # rows outside the samples: what the text states
    assert config_args("add", "16 AIV, 64 KB, double buffer, L2 bypass") == dict(
        block_dim=16, tile_bytes=65536, double_buffer=True, l2_bypass=True)
    assert config_args("matmul", "20 AIC, naive split") == dict(block_dim=20, tiling="naive")
    a = published_args("matmul", "M=16,N=32,K=64", "fp16", "8 AIC")
    assert a["a"].shape == (16, 64) and a["b"].shape == (64, 32) and a["block_dim"] == 8


def test_a_skipped_quant_matmul_names_the_epilogue_whose_scale_the_sweep_built():
    """The user passed no scale: a refused point says which epilogue (and so which scale) the sweep built."""
    df = sweep.run_sweep(sweep.grid(ops=["npu_quant_matmul"], products=["atlas-a2"], dtypes=["bfloat16"],
                                    epilogues=["fixpipe"], tokens=[16]), progress=False)
    assert (df["status"] == "skipped").all()
    assert df["reason"].iloc[0].startswith("fixpipe epilogue, int64 per-channel scale") and "'scale'" in df["reason"].iloc[0]


def test_sweep_l2_warm_from_the_flag_and_the_file(tmp_path, capsys):
    """`npusim sweep --l2 warm` (or `l2 = "warm"` in the TOML file) predicts with inputs read from L2, as
    `npusim predict --l2 warm` does, and the CSV says which it was: never slower than cold, faster where the
    inputs fit in L2 and the kernel waits on them."""
    base = ["sweep", "--ops", "npu_dynamic_quant", "--products", "atlas-a2", "--tokens", "64", "1024",
            "--dtypes", "bf16", "--no-plots", "--quiet"]
    assert cli.main(base + ["--out", str(tmp_path / "cold")]) == 0
    assert cli.main(base + ["--l2", "warm", "--out", str(tmp_path / "warm")]) == 0
    cold, warm = (pd.read_csv(tmp_path / d / "sweep.csv") for d in ("cold", "warm"))
    assert set(cold["l2"]) == {"cold"} and set(warm["l2"]) == {"warm"}
    assert (warm["latency_us"] <= cold["latency_us"]).all() and (warm["latency_us"] < cold["latency_us"]).any()
    for t in (64, 1024):             # the same as predict's
        args = dict(x=TensorSpec((t, 7168), "bfloat16"))
        assert warm.set_index("tokens").loc[t, "latency_us"] == pytest.approx(
            perfmodel.predict("npu_dynamic_quant", "atlas-a2", l2="warm", **args).latency_us)
    cfg = tmp_path / "s.toml"
    cfg.write_text('ops = ["npu_dynamic_quant"]\nproducts = ["atlas-a2"]\ntokens = [64, 1024]\ndtypes = ["bf16"]\n'
                   'l2 = "warm"\n')
    assert cli.main(["sweep", "--config", str(cfg), "--out", str(tmp_path / "file"), "--no-plots", "--quiet"]) == 0
    assert pd.read_csv(tmp_path / "file" / "sweep.csv")["latency_us"].tolist() == warm["latency_us"].tolist()
    cfg.write_text('ops = ["npu_dynamic_quant"]\nl2 = "hot"\n')
    capsys.readouterr()
    assert cli.main(["sweep", "--config", str(cfg), "--out", str(tmp_path / "bad")]) == 2
    assert "l2 must be one of cold, warm" in capsys.readouterr().err


def test_token_ranges_double_from_their_start():
    assert cli._sizes("1:64") == [1, 2, 4, 8, 16, 32, 64]
    assert cli._sizes("3:100") == [3, 6, 12, 24, 48, 96]
    assert cli._sizes("1,4,5:20") == [1, 4, 5, 10, 20]


def test_a_second_sweep_removes_the_figures_the_first_left(fake_model, tmp_path):
    """The figures folder shows the sweep in sweep.csv: a product or dtype the new sweep dropped loses its
    figures; what is not a sweep figure (compare's, the user's own) stays."""
    out = tmp_path / "out"
    base = ["sweep", "--ops", "npu_dynamic_quant", "--tokens", "1:8", "--out", str(out), "--quiet"]
    assert cli.main(base + ["--products", "atlas-a2", "ascend-950pr"]) == 0
    figs = out / "figures"
    assert (figs / "roofline_ascend-950pr.png").exists() and (figs / "latency_vs_tokens_atlas-a2_float16.svg").exists()
    for keep in ("pipes_pred_vs_measured.png", "my_notes.png", "roofline_atlas-a2_old.txt"):
        (figs / keep).write_text("not a sweep figure")
    assert cli.main(base + ["--products", "atlas-a2", "--dtypes", "bf16"]) == 0
    names = {p.name for p in figs.iterdir()}
    assert not any("950" in n for n in names) and not any(n.endswith(("_float16.png", "_float16.svg")) for n in names)
    assert {"roofline_atlas-a2.png", "latency_vs_tokens_atlas-a2_bfloat16.png", "pipes_atlas-a2_bfloat16.svg",
            "pipes_pred_vs_measured.png", "my_notes.png", "roofline_atlas-a2_old.txt"} <= names


def test_pipe_tokens_not_swept_says_which_are_drawn(tmp_path, capsys):
    args = ["sweep", "--ops", "add", "--products", "atlas-a2", "--tokens", "4", "--dtypes", "fp16", "--quiet",
            "--out", str(tmp_path)]
    assert cli.main(args + ["--pipe-tokens", "3"]) == 0
    assert "--pipe-tokens 3 is not a swept token count" in capsys.readouterr().out
    assert cli.main(args + ["--pipe-tokens", "4"]) == 0
    assert "is not a swept token count" not in capsys.readouterr().out
    assert cli.main(["plot", "--sweep", str(tmp_path / "sweep.csv"), "--kind", "pipes", "--pipe-tokens", "5"]) == 0
    assert "--pipe-tokens 5 is not a swept token count" in capsys.readouterr().out
