"""predict(): operator name + product + the emulator's own arguments -> Prediction."""
from __future__ import annotations

import difflib
import functools
import gc
import inspect
import numbers
import re

import npusim  # noqa: F401  (importing the package registers every planner)
from npusim.plan import PLANNERS, PRODUCTS_OF, Plan, TensorSpec, spec_of
from npusim.products import PRODUCTS, SOCS, get_product

from perfmodel import ops
from perfmodel.hw import hardware
from perfmodel.model import Prediction, combine, combine_many

ALL_PRODUCTS = list(PRODUCTS)

# Products per operator: the ones each npusim operator registers with its planner (from the seeds),
# in the product registry's order; the generic kernels run everywhere.
SUPPORTED = {op: [p for p in ALL_PRODUCTS if p in PRODUCTS_OF[op]] for op in PLANNERS}
SUPPORTED.update({op: ALL_PRODUCTS for op in (*ops.ELEMENTWISE, "matmul", "grouped_matmul")})
OPERATORS = list(SUPPORTED)


def did_you_mean(name, choices) -> str:
    """' did you mean 'x'?' for the choice `name` most likely meant (ignoring case, '_' vs '-'), or ''.

    A choice that holds `name` as whole '_'/'-'-separated parts is preferred to a merely similar spelling,
    one that ends with it first ('cache' -> 'indexer_compress_cache', not 'scale'); else the closest
    spelling (difflib ratio >= 0.6)."""
    norm = {str(c).lower().replace("_", "-"): c for c in choices}
    key = str(name).strip().lower().replace("_", "-")
    if key in norm:
        return f" did you mean {norm[key]!r}?"
    word = key.strip("-")
    if word:
        ends = [n for n in norm if n.endswith("-" + word)]
        parts = [n for n in norm if f"-{word}-" in f"-{n}-"]
        for found in (ends, parts):
            if found:       # several: the closest spelling (the first of equals)
                best = max(found, key=lambda n: difflib.SequenceMatcher(None, key, n).ratio())
                return f" did you mean {norm[best]!r}?"
    close = difflib.get_close_matches(key, list(norm), n=1, cutoff=0.6)
    return f" did you mean {norm[close[0]]!r}?" if close else ""


# torch_npu modules a user may look for among the operators: what their forward launches
MODULES = {name: ("a torch_npu module, not one launch: its forward launches npu_quant_matmul, after "
                  "npu_trans_quant_param when it packs a float32 scale; predict those, or record the forward "
                  "(`npusim record --torch-npu --meta script.py`)") for name in ("LinearA8W8Quant", "LinearQuant")}


def check_operator(op) -> str:
    """`op` when perfmodel models it, else a ValueError naming it, the closest name and the choices
    (TypeError when it is not a string)."""
    if not isinstance(op, str):
        raise TypeError(f"operator must be a name (str), got {type(op).__name__}")
    if op in MODULES:
        raise ValueError(f"{op!r} is {MODULES[op]}")
    if op not in SUPPORTED:
        raise ValueError(f"unknown operator {op!r};{did_you_mean(op, OPERATORS)} operators: {', '.join(OPERATORS)}")
    return op


def check_product(name):
    """The Soc of a product id or SoC name (as npusim.get_product), else a ValueError naming the value, the
    closest name and the product ids (SoC names are accepted too: `npusim list` shows them)."""
    try:
        return get_product(name)            # (a TypeError for a non-string passes through)
    except ValueError:
        pass
    near = did_you_mean(name, list(PRODUCTS) + list(SOCS))
    if not near:        # a chip named as people say it ('950', '910C'): the products whose id or name has it
        word = str(name).strip().lower()
        hits = [pid for pid, prod in PRODUCTS.items() if word and (
            any(part.startswith(word) for part in pid.split("-"))
            or re.search(rf"\b{re.escape(word)}\b", prod.name.lower()))]
        near = f" did you mean {' or '.join(map(repr, hits))}?" if hits else ""
    raise ValueError(f"unknown product {name!r};{near} products: "
                     f"{', '.join(PRODUCTS)} (or one of their SoC names, see `npusim list`)") from None


def supported_products(op: str) -> list[str]:
    """Product ids on which `op` runs (and can be predicted)."""
    return list(SUPPORTED[check_operator(op)])


def _torch_format(t):
    """The ACL format npusim's torch face keeps with a torch tensor's storage (npu_format_cast), else None."""
    if type(t).__module__.split(".")[0] != "torch":       # torch.Tensor, torch.nn.Parameter
        return None
    if t.device.type != "cpu":          # e.g. meta tensors, for shapes only: the torch face casts CPU tensors
        return None
    from npusim.torch_npu import get_npu_format            # imports torch, which the caller has already
    return get_npu_format(t)


def _specs(args: dict) -> dict:
    """Arrays and TensorSpecs -> TensorSpecs (only shape, dtype and a transposed layout are read); other
    arguments unchanged, and so is grouped_matmul's group_list, whose values are read."""
    out = {}
    for k, v in args.items():
        # (not a class: np.int8 and ml_dtypes.bfloat16 have shape and dtype attributes too, as dtype options)
        if (k != "group_list" and type(v) is not TensorSpec and not isinstance(v, type) and hasattr(v, "shape")
                and hasattr(v, "dtype")):
            v = spec_of(v)
        out[k] = v
    return out


_PLAN_MEMO: dict = {}
_PLAN_MEMO_MAX = 200_000


def _plan_key(op, soc_name, args):
    """Hashable key of a planner call (TensorSpecs compare by shape and dtype; arguments in any order; by
    type too, since 1 == 1.0 == True and a planner may take one and refuse another), or None when an
    argument is not hashable (then the planner is simply called)."""
    try:
        key = (op, soc_name, frozenset([(k, type(v), v) for k, v in args.items()]))
        hash(key)
    except TypeError:
        return None
    return key


def _plan(op, soc, args):
    """npusim's plan for these shapes/dtypes/attrs, memoised (a plan depends on nothing else; planners
    cost tens of microseconds, which dominates repeated sweeps). Plans are shared: do not mutate them."""
    from npusim.plan import make_plan
    key = _plan_key(op, soc.soc, args)
    plan = _PLAN_MEMO.get(key) if key is not None else None
    if plan is None:
        plan = make_plan(op, product=soc.soc, **args)
        if key is not None:
            if len(_PLAN_MEMO) >= _PLAN_MEMO_MAX:
                _PLAN_MEMO.clear()
            _PLAN_MEMO[key] = plan
    return plan


def clear_memos() -> None:
    """Forget every memoised plan, builder vector-call sequence, matmul core grid and DMA time (what
    `python -m perfmodel.bench` does before timing a cold sweep). Results never depend on these memos, only
    speed does."""
    _PLAN_MEMO.clear()
    ops._CALLS_MEMO.clear()
    ops._least_load_grid.cache_clear()
    hardware.cache_clear()          # Hardware objects hold the DMA and vector-coefficient memos


def _resolve(op: str, product):
    """(Soc, Hardware) of a supported op/product pair, else a clear ValueError."""
    check_operator(op)
    soc = check_product(product)
    if soc.product not in SUPPORTED[op]:
        raise ValueError(f"perfmodel: {op} does not run on {soc.product} ({soc.soc}); "
                         f"supported products: {SUPPORTED[op]}")
    return soc, hardware(soc)


@functools.lru_cache(maxsize=None)
def _parameters(op: str) -> tuple[tuple[str, ...], frozenset]:
    """(argument names, required ones) perfmodel.predict takes for `op`: the planner's, or the generic
    kernel's builder's, plus the cost builder's options (ops.BUILDER_OPTIONS)."""
    if op in ops.ELEMENTWISE:
        fn, n_inputs = ops.elementwise_work, ops.ELEMENTWISE[op][0]
    else:
        fn = PLANNERS.get(op) or {"matmul": ops.matmul_work, "grouped_matmul": ops.grouped_matmul_work}[op]
    params = [p for p in inspect.signature(fn).parameters.values()
              if p.name not in ("hw", "op", "product") and not p.name.startswith("_")
              and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    names = [p.name for p in params]
    if op in ops.ELEMENTWISE:           # x (and y for a binary one) are its inputs
        names = [n for n in names if n != "y" or n_inputs == 2]
        required = frozenset(("x", "y")[:n_inputs])
    else:
        required = frozenset(p.name for p in params if p.default is p.empty)
    return tuple(names + [n for n in ops.BUILDER_OPTIONS.get(op, ()) if n not in names]), required


def op_parameters(op: str) -> list[str]:
    """The argument names perfmodel.predict takes for operator `op`, in the planner's order."""
    return list(_parameters(check_operator(op))[0])


OWN_KEYWORDS = ("product", "calibration", "l2")       # predict's keywords besides the operator's arguments


def check_arguments(op: str, args) -> None:
    """A TypeError naming `op`, the unknown (or missing) argument, the closest name and the arguments `op`
    takes, when `args` (names) do not fit it; predict, predict_many, build_work and `npusim predict` check
    their arguments with it."""
    names, required = _parameters(op)
    given = set(args)
    unknown = [a for a in args if a not in names]
    if unknown:
        u = unknown[0]
        near = did_you_mean(u, [n for n in names if n not in given] + list(OWN_KEYWORDS))
        raise TypeError(f"{op}: unknown argument {u!r};{near} its arguments: {', '.join(names)}")
    for name, value in args.items():        # a shape where a tensor belongs: a likely slip, refused plainly
        if name != "group_list" and type(value) is tuple and value and all(
                isinstance(d, numbers.Integral) and not isinstance(d, bool) for d in value):
            raise TypeError(f"{op}: {name}={value!r} is a shape; pass the tensor as TensorSpec({value!r}, dtype) "
                            f"(perfmodel.TensorSpec), an array or a torch tensor")
    missing = [n for n in names if n in required and n not in given]
    if missing:
        raise TypeError(f"{op}: missing argument{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}; "
                        f"its arguments: {', '.join(names)}")


L2_STATES = ("cold", "warm")


def check_l2(l2) -> None:
    if l2 not in L2_STATES:
        raise ValueError(f"perfmodel: l2 must be one of {', '.join(L2_STATES)}, got {l2!r}")


def _in_l2(work, hw, l2):
    """work as it runs with its inputs cold (from HBM) or warm (already in L2 as far as they fit)."""
    if l2 == "warm":
        for w in (work, *work.extra):       # inputs already in L2 (as far as they fit) are read from it
            w.cold_read_fraction = max(0.0, 1.0 - hw.soc.l2_bytes / w.bytes_read) if w.bytes_read else 0.0
            w.hbm_read_fraction *= w.cold_read_fraction
    return work


def _work(op, soc, hw, args, l2="cold"):
    check_l2(l2)
    check_arguments(op, args)
    weight, option = ops.WEIGHT_FORMAT_OPTIONS.get(op, (None, None))
    if option is not None and option not in args:
        fmt = _torch_format(args.get(weight))
        if fmt is not None:
            args = {**args, option: fmt}
    args = _specs(args)
    if op == "add":
        work = ops.add_work(hw, **args)
    elif op in ops.ELEMENTWISE:
        work = ops.elementwise_work(hw, op, **args)
    elif op == "matmul":
        work = ops.matmul_work(hw, **args)
    elif op == "grouped_matmul":
        work = ops.grouped_matmul_work(hw, **args)
    else:
        options = {k: args.pop(k) for k in ops.BUILDER_OPTIONS.get(op, ()) if k in args}   # args: _specs' copy
        work = ops.PLAN_BUILDERS[op](_plan(op, soc, args), hw, **options)
    return _in_l2(work, hw, l2)


def build_work(op: str, product: str = "atlas-a2", *, l2: str = "cold", **args):
    """The uncalibrated Work of one launch and the product id (used by predict and the calibration fit)."""
    soc, hw = _resolve(op, product)
    return _work(op, soc, hw, args, l2), soc.product


def _params(calibration, family):
    from perfmodel.calibration import Calibration, default_calibration, load_calibration
    calibration = load_calibration(calibration)         # a calibration JSON's path, as the CLI's --calibration
    if calibration is not None and not isinstance(calibration, Calibration):
        raise TypeError(f"calibration must be a perfmodel.calibration.Calibration, the path of a calibration JSON "
                        f"or None, got {type(calibration).__name__}")
    return (calibration or default_calibration()).params_for(family)


def predict(op: str, product: str = "atlas-a2", *, calibration=None, l2: str = "cold", **args) -> Prediction:
    """Predicted latency of one launch of `op` on `product`.

    op: an emulator function name ("npu_dynamic_quant", ...) or a generic kernel ("add": x, y;
    "matmul": a [M,K], b [K,N] fp16/bf16, output fp16; "grouped_matmul": x [M,K], weight [E,K,N],
    group_list (E cumulative row counts), bias [E,N] optional, transpose_weight). args: the emulator's own
    arguments, tensors as TensorSpec, arrays or torch tensors (only their shape, dtype and layout are read: whether
    a tensor is the transpose of a contiguous one, as `w.T` or TensorSpec's transposed, and a torch weight's
    format when npusim.torch_npu.npu_format_cast made it FRACTAL_NZ). product: product id or SoC name.
    calibration: a perfmodel.calibration.Calibration or the path of a calibration JSON (`npusim calibrate`
    writes one; default: the shipped calibration).
    l2: 'cold' (inputs come from HBM, as after an L2 flush: the profilers' benchmark setting) or 'warm'
    (inputs already in L2 as far as they fit, e.g. written by the kernel before).
    Generic kernels take options: add(block_dim, tile_bytes=32768, double_buffer=True, l2_bypass=False,
    bank_conflict_free=False); matmul(block_dim, tiling='best'|'naive'); grouped_matmul(block_dim,
    weight_format='ND'|'NZ'). npu_quant_matmul takes x2_format='ND'|'NZ' (a weight cast to FRACTAL_NZ).
    An argument `op` does not take, or a required one missing, is a TypeError naming the operator, the
    argument, the closest name and the arguments `op` takes (op_parameters(op)).
    """
    soc, hw = _resolve(op, product)
    work = _work(op, soc, hw, args, l2)
    return combine(work, _params(calibration, hw.family), op, soc.product)


def predict_plan(plan, *, calibration=None, l2: str = "cold", **options) -> Prediction:
    """Predicted latency of one launch of an npusim Plan (npusim.plan.make_plan's, or the one the emulator ran:
    perfmodel.record) on the plan's own product. options: the cost builder's own (npu_quant_matmul's
    x2_format 'ND' | 'NZ'); calibration and l2 as predict()."""
    if not isinstance(plan, Plan):
        raise TypeError(f"plan must be an npusim.plan.Plan, got {type(plan).__name__}")
    op = check_operator(plan.op)
    if op not in ops.PLAN_BUILDERS:
        raise ValueError(f"perfmodel: no cost builder for plans of {op!r}")
    allowed = ops.BUILDER_OPTIONS.get(op, ())
    for name in options:
        if name not in allowed:
            raise TypeError(f"{op}: unknown option {name!r}; its options: {', '.join(allowed) or 'none'}")
    check_l2(l2)
    hw = hardware(plan.soc)
    work = _in_l2(ops.PLAN_BUILDERS[op](plan, hw, **options), hw, l2)
    return combine(work, _params(calibration, hw.family), op, plan.soc.product)


def predict_many(op: str, product: str = "atlas-a2", args_list=(), *, calibration=None, l2: str = "cold",
                 errors: str = "raise") -> list:
    """predict(op, product, calibration=calibration, **args) for every dict in `args_list`, sharing
    everything shape-independent (SoC data, DMA curves, the calibration looked up once) and what the
    points have in common (memoised plans, vector-call sequences of the same passes, DMA times); each
    point is still planned, built and costed in Python, one after the other. Results equal predict()'s
    exactly.

    errors: 'raise' (the first bad point raises, as predict would) or 'return' (its list entry is the
    exception instead, so that a sweep can record it and go on).
    """
    if errors not in ("raise", "return"):
        raise ValueError(f"errors must be 'raise' or 'return', got {errors!r}")
    soc, hw = _resolve(op, product)
    params = _params(calibration, hw.family)
    works, out = [], []
    # many small objects are created and all stay alive: the cyclic GC would rescan them again and
    # again (a third of the time), and there are no cycles to collect here
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        for args in args_list:
            try:
                works.append(_work(op, soc, hw, args, l2))
                out.append(None)
            except Exception as exc:     # noqa: BLE001 -- recorded per point when asked to
                if errors == "raise":
                    raise
                out.append(exc)
        preds = iter(combine_many(works, params, op, soc.product))
        return [next(preds) if o is None else o for o in out]
    finally:
        if gc_was_on:
            gc.enable()
