"""torch_npu.contrib in npusim's stand-in: only contrib.module.LinearA8W8Quant and LinearQuant are emulated."""
from npusim.torch_npu import _missing_names
from npusim.torch_npu.contrib import module

__all__ = ["module"]

__getattr__ = _missing_names("torch_npu.contrib", "it emulates contrib.module.LinearA8W8Quant and LinearQuant")
