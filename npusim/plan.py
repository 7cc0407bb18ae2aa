"""Plans: the tiling decision of a kernel, made from shapes and dtypes alone (no data).

The emulator records which kernel variant (tiling key) its arithmetic follows; the performance
model (perfmodel/) costs the same plan. Planners register here by operator name so that
perfmodel can find them without npusim importing perfmodel.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from npusim import formats
from npusim.products import Soc


@dataclass(frozen=True)
class TensorSpec:
    """Shape and dtype of a tensor, standing in for the data when only a plan is wanted."""
    shape: tuple
    dtype: Any

    def __post_init__(self):
        shape = tuple(int(d) for d in self.shape)
        if any(d < 0 for d in shape):
            raise ValueError(f"TensorSpec: dimensions must be >= 0, got {shape}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "dtype", formats.as_dtype(self.dtype))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize


def spec_of(x) -> TensorSpec | None:
    """TensorSpec of an array, a TensorSpec, or None."""
    if x is None or isinstance(x, TensorSpec):
        return x
    a = x if hasattr(x, "shape") and hasattr(x, "dtype") else np.asarray(x)
    return TensorSpec(tuple(a.shape), a.dtype)


@dataclass(frozen=True)
class Plan:
    """A kernel launch as the vendor's tiling would make it.

    op: operator name; soc: the SoC; kernel: vendor kernel name; tiling_key: the key that selects
    the kernel variant; block_dim: cores launched; core_type: 'aiv', 'aic', 'mix' or 'aicore'
    (coupled parts); tiles: tile sizes and per-core work in the tiling data's own terms;
    inputs/outputs: TensorSpecs by parameter name; attrs: the attributes that shaped the plan.
    """
    op: str
    soc: Soc
    kernel: str
    tiling_key: int
    block_dim: int
    core_type: str
    tiles: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)
    notes: str = ""

    def as_dict(self) -> dict:
        d = asdict(self)
        d["soc"] = self.soc.soc
        d["product"] = self.soc.product
        d["inputs"] = {k: (v.shape, formats.dtype_name(v.dtype)) for k, v in self.inputs.items() if v is not None}
        d["outputs"] = {k: (v.shape, formats.dtype_name(v.dtype)) for k, v in self.outputs.items() if v is not None}
        return d


PLANNERS: dict[str, Callable[..., Plan]] = {}
PRODUCTS_OF: dict[str, tuple[str, ...]] = {}     # operator -> the product ids it runs on


def planner(op: str, products: tuple[str, ...]):
    """Register `fn(product=..., **emulator_args) -> Plan` as the planner of operator `op`, which runs
    on the product ids `products` (the one list the emulator's validation and perfmodel both use)."""
    def deco(fn):
        PLANNERS[op] = fn
        PRODUCTS_OF[op] = tuple(products)
        return fn
    return deco


def make_plan(op: str, **kwargs) -> Plan:
    """The plan of operator `op` (an emulator function name) for the given shapes/dtypes."""
    import npusim  # noqa: F401  (importing the package registers every planner)
    if op not in PLANNERS:
        raise ValueError(f"no planner for operator {op!r}; known: {sorted(PLANNERS)}")
    return PLANNERS[op](**kwargs)
