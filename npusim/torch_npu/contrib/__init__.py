"""torch_npu.contrib in npusim's stand-in: only contrib.module.LinearA8W8Quant is emulated."""
from npusim.torch_npu.contrib import module

__all__ = ["module"]


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    from npusim.torch_npu import NotEmulatedAttributeError
    raise NotEmulatedAttributeError(f"torch_npu.contrib.{name} is not emulated by npusim's torch_npu stand-in; it "
                                    "emulates contrib.module.LinearA8W8Quant")
