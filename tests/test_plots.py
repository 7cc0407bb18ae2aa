"""perfmodel.plots: what the figures say (drawn on hand-made sweep / compare / validation tables, captured
before they are saved): one colour per operator in every figure, the bar a pipe figure hatches, the multi-kernel
explanation, the roofline's axis, the shapes in the latency legends, trust levels in compare's figure, and the
validation figure's titles and legend."""
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex, to_rgb

from perfmodel import plots
from perfmodel.model import PIPES


@pytest.fixture
def figures(monkeypatch):
    """Every figure a plots function makes, as (stem, Figure), instead of writing files."""
    drawn = []

    def fake_save(fig, stem):
        drawn.append((str(stem), fig))
        return [str(stem)]

    monkeypatch.setattr(plots, "save", fake_save)
    return drawn


def _row(op, product="atlas-a2", dtype="float16", tokens=1024, latency=100.0, bound="vector", pipes=None,
         chip=10.0, kernels=None, **extra):
    pipes = pipes or {"mte2": 40.0, "mte3": 10.0, "vector": 80.0}
    row = {"op": op, "product": product, "tokens": tokens, "hidden": 7168, "dtype": dtype, "n": np.nan,
           "topk": np.nan, "epilogue": "", "weight_format": "", "in_dtype": dtype, "out_dtype": "int8",
           "status": "ok", "reason": "", "soc": "", "latency_us": latency, "head_us": 5.0,
           "core_us": latency - 5.0, "chip_us": chip, "bound": bound, "bytes_read": 4e6 * tokens / 1024,
           "bytes_written": 2e6 * tokens / 1024, "flops": 1e7 * tokens / 1024, "block_dim": 48, "tiling_key": 1,
           "kernels": kernels or f"{op} {latency:.4g} us"}
    row.update({f"pipe_{p}_us": pipes.get(p, 0.0) for p in PIPES})
    row.update(extra)
    return row


def _sweep(ops, dtype="float16", tokens=(1, 64, 1024), **kw):
    return pd.DataFrame([_row(op, dtype=dtype, tokens=t, latency=10.0 + t / 10 + i, **kw)
                         for i, op in enumerate(ops) for t in tokens])


def _is_grey(color) -> bool:
    r, g, b = to_rgb(color)
    return max(r, g, b) - min(r, g, b) < 0.06


def test_operator_colours_are_one_fixed_mapping_without_grey():
    assert len(set(plots.OP_COLORS.values())) == len(plots.OP_COLORS)
    assert not any(_is_grey(c) for c in plots.OP_COLORS.values())
    assert _is_grey(plots.NOT_FITTED_COLOR)
    from perfmodel import sweep
    assert set(sweep.OPERATORS) | set(sweep.EXTRA_OPERATORS) <= set(plots.OP_COLORS)
    # an operator the mapping does not name gets a stable, non-grey colour
    assert plots.op_color("some_new_op") == plots.op_color("some_new_op") and not _is_grey(plots.op_color("x"))


def test_an_operator_keeps_its_colour_across_figures_and_panels(figures):
    """npu_dynamic_quant was orange in one latency figure and green in the next (colour by enumeration index)."""
    want = to_hex(plots.op_color("npu_dynamic_quant"))
    one = _sweep(["fake_quantize_per_channel_affine_cachemask", "npu_dynamic_quant"], dtype="float16")
    two = _sweep(["npu_dynamic_quant", "moe_init_routing_quant"], dtype="bfloat16")
    plots.plot_latency_vs_tokens(pd.concat([one, two], ignore_index=True), "out")
    plots.plot_roofline(two, "out")
    seen = []
    for _stem, fig in figures:
        for ax in fig.axes:
            handles, labels = ax.get_legend_handles_labels()
            for h, label in zip(handles, labels):
                if label.startswith("npu_dynamic_quant "):
                    color = h.get_color() if hasattr(h, "get_color") and not hasattr(h, "get_facecolor") \
                        else h.get_facecolor()[0]
                    seen.append(to_hex(color))
    assert len(seen) == 3 and set(seen) == {want}
    # compare's figure and the validation figure use the same colour
    figures.clear()
    joined = pd.DataFrame({"op": ["add", "npu_dynamic_quant"], "product": ["atlas-a2"] * 2, "status": ["ok"] * 2,
                           "measured_us": [10.0, 20.0], "predicted_us": [11.0, 19.0], "trust": ["measured"] * 2})
    plots.plot_pred_vs_measured(joined, "cmp")
    (_, fig), = figures
    lines = [ln for ln in fig.axes[0].lines if ln.get_marker() == "o" and len(ln.get_xdata()) == 1]
    assert {to_hex(ln.get_markerfacecolor()) for ln in lines if ln.get_xdata()[0] == 20.0} == {want}
    figures.clear()
    plots.plot_validation(_validation_rows(), "val")
    (_, fig), = figures
    for ax in fig.axes:
        for coll in ax.collections:
            if coll.get_label().startswith("npu_dynamic_quant "):
                assert to_hex(coll.get_facecolor()[0]) == want


def _pipes_axes(figures, sweep):
    figures.clear()
    plots.plot_pipe_bars(pd.DataFrame(sweep), "out")
    (_, fig), = figures
    return [ax for ax in fig.axes], fig


def _hatched(ax) -> list[str]:
    names = [t.get_text() for t in ax.get_yticklabels()]
    return [name for name, bar in zip(names, ax.containers[0]) if bar.get_hatch()]


def test_pipe_figure_hatches_the_bar_that_sets_a_memory_bound(figures):
    """'bound memory' hatched nothing; it names the largest of mte1/mte2/mte3 and the HBM traffic (chip_us)."""
    mte2 = _row("npu_quant_matmul", bound="memory", chip=27.0,
                pipes={"mte1": 59.0, "mte2": 146.0, "mte3": 9.0, "cube": 97.0}, latency=164.5)
    hbm = _row("npu_dynamic_quant", bound="memory", chip=258.0, pipes={"mte2": 200.0, "vector": 255.0},
               latency=270.0)
    vec = _row("npu_dynamic_quant_asymmetric", bound="vector")
    axes, fig = _pipes_axes(figures, [mte2, hbm, vec])
    by_title = {ax.get_title().split()[0]: ax for ax in axes}
    assert _hatched(by_title["npu_quant_matmul"]) == ["mte2"]
    assert _hatched(by_title["npu_dynamic_quant"]) == [plots.HBM_BAR]
    assert _hatched(by_title["npu_dynamic_quant_asymmetric"]) == ["vector"]
    # the HBM bar is drawn from chip_us and the caption no longer calls 'memory' the chip's HBM bandwidth
    ax = by_title["npu_quant_matmul"]
    names = [t.get_text() for t in ax.get_yticklabels()]
    assert ax.containers[0][names.index(plots.HBM_BAR)].get_width() == pytest.approx(27.0)
    caption = fig._suptitle.get_text()
    assert "chip's HBM/L2 bandwidth" not in caption and "mte1/mte2/mte3/HBM" in caption
    assert plots._bound_bar("launch", {"mte2": 1.0}) is None


def test_pipe_figure_names_the_kernels_of_a_multi_kernel_operator(figures):
    kernels = "FakeQuantAffineCachemask 300.6 us; Transpose 13.8 us; Transpose 13.8 us; Transpose 8.422 us"
    row = _row("fake_quantize_per_channel_affine_cachemask", latency=336.6, kernels=kernels,
               pipes={"mte2": 115.0, "mte3": 35.0, "vector": 180.0})
    axes, fig = _pipes_axes(figures, [row])
    ax, = axes
    title = " ".join(ax.get_title().split())
    # the operator's own kernel is listed first (Prediction.kernels' order), not in launch order: say so
    assert "4 kernels (the operator's own first)" in title and "Transpose 13.8" in title
    assert "FakeQuantAffineCachemask 301" in title
    names = [t.get_text() for t in ax.get_yticklabels()]
    assert names[-1] == "kernels"
    segments = [b for c in ax.containers[1:] for b in c]
    assert sum(b.get_width() for b in segments) == pytest.approx(336.6, abs=0.05)


def test_pipe_figure_explains_loops_longer_than_the_busiest_pipe(figures):
    """MoE routing's sort and gather phases run in turn (and single-buffered tiles overlap in part): the loops
    outlast every bar, which the panel says rather than leaving a gap unexplained; where a pipe fills the
    loops, no such line."""
    gap = _row("moe_init_routing_quant", latency=59.8, head_us=6.4, core_us=53.4,
               pipes={"mte2": 25.4, "mte3": 41.0, "vector": 5.5})
    full = _row("npu_dynamic_quant", latency=26.0, head_us=8.0, core_us=18.0, pipes={"mte2": 9.0, "vector": 17.9})
    axes, _ = _pipes_axes(figures, [gap, full])
    titles = {" ".join(ax.get_title().split()).split()[0]: " ".join(ax.get_title().split()) for ax in axes}
    assert "loops 53.4 µs, more than the busiest pipe" in titles["moe_init_routing_quant"]
    assert "more than the busiest pipe" not in titles["npu_dynamic_quant"]


def test_roofline_labels_the_token_ends_of_each_series_once(figures):
    """Every swept point is one token count; the ends of each operator's series say which (1 and 1024 here), and
    two series on the same points (the two dynamic quants) are labelled once."""
    sweep = pd.concat([_sweep(["npu_dynamic_quant"]), _sweep(["npu_dynamic_quant_asymmetric"]),
                       _sweep(["moe_init_routing_quant"])], ignore_index=True)
    sweep.loc[sweep["op"] == "npu_dynamic_quant_asymmetric", "latency_us"] = \
        sweep.loc[sweep["op"] == "npu_dynamic_quant", "latency_us"].to_numpy()
    sweep.loc[sweep["op"] == "moe_init_routing_quant", "bytes_read"] *= 50       # elsewhere on the plot
    plots.plot_roofline(sweep, "out")
    (_, fig), = figures
    texts = [t.get_text() for t in fig.axes[0].texts if t.get_text().endswith(" tok")]
    assert sorted(texts) == ["1 tok", "1 tok", "1024 tok", "1024 tok"]


def test_roofline_axis_says_what_it_counts(figures):
    plots.plot_roofline(_sweep(["npu_dynamic_quant"]), "out")
    (_, fig), = figures
    ax = fig.axes[0]
    assert ax.get_xlabel() == plots.XLABEL_ROOFLINE
    assert "HBM" not in ax.get_xlabel() and "reads and writes" in ax.get_xlabel()
    assert "writes stay in L2" in ax.get_title()


def test_latency_legend_names_the_fixed_shapes(figures):
    rows = _sweep(["npu_dynamic_quant"])
    qmm = _sweep(["npu_quant_matmul"]).assign(n=4096.0, epilogue="fixpipe")
    moe = _sweep(["moe_init_routing_quant"]).assign(topk=8.0)
    plots.plot_latency_vs_tokens(pd.concat([rows, qmm, moe], ignore_index=True), "out")
    (_, fig), = figures
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert any(label.startswith("npu_quant_matmul") and "K=7168, N=4096" in label for label in labels)
    assert any(label.startswith("moe_init_routing_quant") and "topk=8" in label for label in labels)
    assert any(label.startswith("npu_dynamic_quant") and "hidden=7168" in label for label in labels)


def test_a_line_drawn_over_another_says_so_and_a_long_legend_goes_below(figures):
    """ND and NZ weights predict the same where HBM sets the time: the later line would hide under the first, so
    its label names the line it lies on. With more than six lines the legend leaves the axes."""
    nd = _sweep(["grouped_matmul"], weight_format="ND", n=4096.0)
    nz = nd.assign(weight_format="NZ")
    nzt = nd.assign(weight_format="ND-T", latency_us=nd["latency_us"] * 1.5)
    plots.plot_latency_vs_tokens(pd.concat([nd, nz, nzt], ignore_index=True), "out")
    (_, fig), = figures
    labels = fig.axes[0].get_legend_handles_labels()[1]
    same = [label for label in labels if "the same as" in label]
    assert len(same) == 1 and "NZ weight" in same[0] and same[0].endswith("the same as grouped_matmul float16→int8")
    assert fig.axes[0].get_legend()._loc == 2                   # upper left, inside the axes
    figures.clear()
    many = pd.concat([_sweep(["npu_dynamic_quant"], hidden=h) for h in (512, 1024, 2048, 4096, 7168, 8192, 16384)],
                     ignore_index=True)
    plots.plot_latency_vs_tokens(many, "out")
    (_, fig), = figures
    legend = fig.axes[0].get_legend()
    assert len(legend.get_texts()) == 7 and legend.get_bbox_to_anchor().y1 < fig.axes[0].get_window_extent().y0


def test_compare_figure_shows_trust_levels_mape_and_the_run_legend(figures):
    joined = pd.DataFrame({
        "op": ["matmul", "matmul", "moe_init_routing_quant", "grouped_matmul", "add"],
        "product": ["atlas-a2", "atlas-a2", "atlas-a2", "ascend-950pr", "atlas-a2"],
        "trust": ["measured", "measured", "analogue", "holdout", "doubtful"], "status": ["ok"] * 5,
        "measured_us": [10.0, 100.0, 20.0, 12.0, 50.0], "predicted_us": [11.0, 90.0, 4.0, 27.72, 40.0],
        "rows": [1, 10, 1, 1, 1], "measured_min_us": [10.0, 80.0, 20.0, 12.0, 50.0],
        "measured_max_us": [10.0, 130.0, 20.0, 12.0, 50.0]})
    plots.plot_pred_vs_measured(joined, "cmp", title="Predicted vs measured latency")
    (_, fig), = figures
    ax = fig.axes[0]
    assert "MAPE 10.0% over the 2 'measured'" in ax.get_title() and "holdout 131.0% (1)" in ax.get_title()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    for trust in ("measured", "holdout", "doubtful", "analogue"):
        assert plots.TRUST_STYLES[trust] in labels
    assert any("fastest to slowest run" in t for t in labels) and any("10 runs" in t for t in labels)
    # hollow = doubtful, light = holdout, half = analogue, filled = measured
    pts = {ln.get_xdata()[0]: ln for ln in ax.lines if len(ln.get_xdata()) == 1}
    assert pts[50.0].get_markerfacecolor() == "none"
    assert pts[20.0].get_fillstyle() == "bottom"
    assert to_hex(pts[10.0].get_markerfacecolor()) == to_hex(plots.op_color("matmul"))
    assert pts[12.0].get_markerfacecolor()[3] < 0.5 and pts[12.0].get_marker() == plots.product_marker("ascend-950pr")


def test_compare_run_legend_shows_the_run_counts_drawn(figures):
    """Every launch seen 3 times: the marker-size legend says 3 runs (it once offered only '1 run')."""
    joined = pd.DataFrame({"op": ["matmul", "add"], "product": ["atlas-a2"] * 2, "status": ["ok"] * 2,
                           "measured_us": [10.0, 50.0], "predicted_us": [11.0, 40.0], "rows": [3, 3],
                           "measured_min_us": [9.0, 45.0], "measured_max_us": [12.0, 55.0]})
    plots.plot_pred_vs_measured(joined, "cmp", title="t")
    (_, fig), = figures
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts() if "marker size" in t.get_text()]
    assert labels == ["3 runs (marker size)"]


def test_compare_axes_hold_the_slowest_and_fastest_run(figures):
    """A launch whose warm-up ran 9x its median: its bar ends inside the axes, with its cap (it ran off the
    right edge when the limits followed the medians alone)."""
    joined = pd.DataFrame({"op": ["add", "matmul"], "product": ["atlas-a2"] * 2, "status": ["ok"] * 2,
                           "measured_us": [60.0, 100.0], "predicted_us": [58.0, 104.0], "rows": [20, 20],
                           "measured_min_us": [2.0, 98.0], "measured_max_us": [540.0, 900.0]})
    plots.plot_pred_vs_measured(joined, "cmp", title="t")
    (_, fig), = figures
    lo, hi = fig.axes[0].get_xlim()
    assert lo < 2.0 and hi > 900.0


def _validation_rows() -> pd.DataFrame:
    rows = []
    for i, (op, soc, trust) in enumerate([("npu_dynamic_quant", "Ascend910B2", "measured"),
                                          ("add", "Ascend910B2", "measured"),
                                          ("moe_init_routing_quant", "Ascend910B3", "analogue"),
                                          ("npu_dynamic_quant", "Ascend950PR_9589", "holdout")]):
        for k in range(3):
            m = 10.0 * (i + 1) + k
            rows.append({"op": op, "soc": soc, "label": f"{op} {k}", "measured_us": m, "trust": trust,
                         "group": f"{op} {soc}", "predicted_us": m * 1.05, "error_pct": 5.0,
                         "cv_group_pct": -8.0, "cv_family_pct": 12.0})
    return pd.DataFrame(rows)


def test_validation_figure_titles_legend_and_bands(figures):
    plots.plot_validation(_validation_rows(), "val")
    (_, fig), = figures
    assert len(fig.axes) == 4
    first = fig.axes[0]
    title = " ".join(first.get_title().split())
    assert "over the 6 fitted rows" in title and "3 not fitted" in title
    assert "held-out rows" in " ".join(fig.axes[3].get_title().split())
    assert min(t.get_fontsize() for t in first.get_legend().get_texts()) >= 7
    # the bands' edges are drawn (dashed ±10%, dotted ±25%)
    assert {ln.get_linestyle() for ln in first.lines} >= {"--", ":"}
    # not-fitted crosses are grey; no operator is
    (cross,) = [c for c in first.collections if c.get_label().startswith("not fitted")]
    assert _is_grey(cross.get_facecolor()[0])


def test_measured_vs_predicted_pipes_show_the_two_latencies(figures):
    """Busy times alone do not say which side is slower: each panel gives both latencies (dashed lines and
    the title) and the error."""
    row = {"op": "add", "product": "atlas-a2", "label": "add 8192x8192 fp16", "status": "ok",
           "measured_us": 200.0, "predicted_us": 230.0}
    for p in PIPES:
        row[f"pipe_{p}_us"] = {"mte2": 180.0, "vector": 10.0}.get(p, np.nan)
        row[f"pred_pipe_{p}_us"] = {"mte2": 210.0, "mte3": 20.0, "vector": 9.0}.get(p, 0.0)
    plots.plot_pipe_compare(pd.DataFrame([row]), "out")
    (_, fig), = figures
    ax = fig.axes[0]
    assert "latency (dashed): measured 200 µs, predicted 230 µs (+15.0%)" in ax.get_title()
    dashed = sorted(line.get_ydata()[0] for line in ax.get_lines() if line.get_linestyle() == "--")
    assert dashed == [200.0, 230.0]


def test_a_warm_sweep_says_so_in_its_figures(figures):
    warm = _sweep(["npu_dynamic_quant"]).assign(l2="warm")
    for draw in (plots.plot_latency_vs_tokens, plots.plot_roofline, plots.plot_pipe_bars):
        figures.clear()
        draw(warm, "out")
        draw(warm.assign(l2="cold"), "out")
        (_, w), (_, c) = figures
        titles = [" ".join([f.get_suptitle(), *(ax.get_title() for ax in f.axes)]) for f in (w, c)]
        assert "inputs warm in L2" in titles[0] and "warm" not in titles[1]
