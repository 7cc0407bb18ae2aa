"""torch_npu.contrib in npusim's stand-in: only contrib.module.LinearA8W8Quant and LinearQuant are emulated."""
import importlib.abc
import importlib.util
import sys

from npusim.torch_npu import NotEmulatedImportError, _missing_names
from npusim.torch_npu.contrib import module

__all__ = ["module"]

__getattr__ = _missing_names("torch_npu.contrib", "it emulates contrib.module.LinearA8W8Quant and LinearQuant")


class _NotEmulatedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """torch_npu.contrib's modules that code imports and the stand-in lacks: importing one (`from torch_npu.contrib
    import transfer_to_npu`) raises NotEmulatedImportError saying so, not a bare "No module named". It answers
    for this package's own path only, after every other finder."""
    WHY = {"transfer_to_npu": "it maps CUDA device calls to the NPU; for code written for the NPU, "
                              "install(npu_device=True) (pytest --npusim-npu-device) makes the 'npu' device the CPU"}

    def find_spec(self, fullname, path, target=None):
        if path is __path__ and fullname.rpartition(".")[2] in self.WHY:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, mod):
        name = mod.__name__.rpartition(".")[2]
        raise NotEmulatedImportError(f"torch_npu.contrib.{name} is not emulated by npusim's torch_npu stand-in "
                                     f"({self.WHY[name]})")


sys.meta_path.append(_NotEmulatedModules())
