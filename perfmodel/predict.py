"""predict(): operator name + product + the emulator's own arguments -> Prediction."""
from __future__ import annotations

from npusim.plan import TensorSpec, spec_of
from npusim.products import PRODUCTS, get_product

from perfmodel import ops
from perfmodel.hw import hardware
from perfmodel.model import Prediction, combine

ALL_PRODUCTS = list(PRODUCTS)

# Products per operator, as the seeds (shared/seeds/*.txt) and the operator issues list them.
SUPPORTED = {
    "npu_dynamic_quant": ["atlas-training", "atlas-a2", "atlas-a3", "atlas-inference", "ascend-950pr",
                          "ascend-950dt"],
    "npu_dynamic_quant_asymmetric": ["atlas-a2", "atlas-a3", "ascend-950pr", "ascend-950dt"],
    "indexer_compress_epilog": ["ascend-950pr", "ascend-950dt"],
    "fake_quantize_per_channel_affine_cachemask": ["atlas-training", "atlas-a2"],
    "npu_quant_matmul": ["atlas-inference", "atlas-a2", "atlas-a3"],
    "moe_init_routing_quant": ["atlas-a2"],
    "add": ALL_PRODUCTS,
    "matmul": ALL_PRODUCTS,
}
OPERATORS = list(SUPPORTED)
_TENSOR_ARGS = {"add": ("x", "y"), "matmul": ("a", "b")}


def supported_products(op: str) -> list[str]:
    """Product ids on which `op` runs (and can be predicted)."""
    if op not in SUPPORTED:
        raise ValueError(f"perfmodel: unknown operator {op!r}; supported: {OPERATORS}")
    return list(SUPPORTED[op])


def _specs(args: dict) -> dict:
    """Arrays and TensorSpecs -> TensorSpecs (only shape/dtype are read); other arguments unchanged."""
    out = {}
    for k, v in args.items():
        if isinstance(v, TensorSpec) or (hasattr(v, "shape") and hasattr(v, "dtype")):
            out[k] = spec_of(v)
        else:
            out[k] = v
    return out


def build_work(op: str, product: str = "atlas-a2", **args):
    """The uncalibrated Work of one launch and the product id (used by predict and the calibration fit)."""
    soc = get_product(product)
    if op not in SUPPORTED:
        raise ValueError(f"perfmodel: unknown operator {op!r}; supported: {OPERATORS}")
    if soc.product not in SUPPORTED[op]:
        raise ValueError(f"perfmodel: {op} does not run on {soc.product} ({soc.soc}); "
                         f"supported products: {SUPPORTED[op]}")
    hw = hardware(soc)
    args = _specs(args)
    if op == "add":
        return ops.add_work(hw, **args), soc.product
    if op == "matmul":
        return ops.matmul_work(hw, **args), soc.product
    from npusim.plan import PLANNERS, make_plan
    import npusim  # noqa: F401  (registers the planners)
    if op not in PLANNERS:
        raise NotImplementedError(f"perfmodel: operator {op!r} has no npusim plan yet (npusim.plan.PLANNERS "
                                  f"lacks it), so it cannot be predicted")
    plan = make_plan(op, product=soc.soc, **args)
    return ops.PLAN_BUILDERS[op](plan, hw), soc.product


def predict(op: str, product: str = "atlas-a2", *, calibration=None, **args) -> Prediction:
    """Predicted latency of one launch of `op` on `product`.

    op: an emulator function name ("npu_dynamic_quant", ...) or a generic kernel ("add": x, y;
    "matmul": a [M,K], b [K,N] fp16/bf16, output fp16). args: the emulator's own arguments, tensors
    as TensorSpec or arrays (only shape and dtype are read). product: product id or SoC name.
    calibration: a perfmodel.calibration.Calibration (default: the shipped one).
    Generic kernels take options: add(block_dim, tile_bytes=32768, double_buffer=True, l2_bypass=False,
    bank_conflict_free=False); matmul(block_dim, tiling='best'|'naive').
    """
    from perfmodel.calibration import default_calibration
    work, pid = build_work(op, product, **args)
    cal = calibration or default_calibration()
    return combine(work, cal.params_for(work.hw.family), op, pid)
