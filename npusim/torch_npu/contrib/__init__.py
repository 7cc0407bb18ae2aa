"""torch_npu.contrib in npusim's stand-in: only contrib.module.LinearA8W8Quant is emulated."""
from npusim.torch_npu.contrib import module

__all__ = ["module"]
