"""pytest plugin of npusim (registered through the `pytest11` entry point): run torch_npu tests on the CPU.

* fixture `npusim_torch_npu`: npusim.torch_npu installed as torch_npu for one test (yields the module).
* marker `@pytest.mark.npusim_product("ascend-950pr")` on a test, class or module: the product it emulates;
  a marked test gets the stand-in installed even without the fixture.
* option `--npusim-product NAME`: the product for unmarked tests (else $NPUSIM_PRODUCT, else atlas-a2); an
  unknown name stops pytest with a usage error that lists the valid names.
* option `--npusim-torch-npu` (or the ini setting `npusim_torch_npu = true`): the stand-in is torch_npu for
  the whole session, installed before conftest.py files and test modules are imported, so a module that
  does `import torch_npu` at its top gets the stand-in (pytest imports test modules while collecting,
  before any fixture runs). Without torch the option does nothing (such modules should importorskip torch).
* option `--npusim-npu-device` (or the ini setting `npusim_npu_device = true`): every stand-in the plugin
  installs has npu_device=True, so that tests written for the NPU (x.npu(), device="npu", torch.npu.*) run
  unchanged on the CPU.

Importing this module does not import torch; the fixture skips the test when torch is missing.
"""
from __future__ import annotations

import sys
import warnings

import pytest

_STAND_IN = "npusim.torch_npu"
_SESSION_STAND_IN = pytest.StashKey()          # the stand-in --npusim-torch-npu installed for the session
_SKIP_REASON = "npusim's torch_npu stand-in needs torch (pip install 'npusim[torch]')"


def pytest_addoption(parser):
    group = parser.getgroup("npusim", "npusim torch_npu stand-in")
    group.addoption("--npusim-product", default=None, metavar="NAME",
                    help="product the torch_npu stand-in emulates for unmarked tests (default: $NPUSIM_PRODUCT, "
                         "else atlas-a2)")
    group.addoption("--npusim-torch-npu", action="store_true", default=False,
                    help="make `import torch_npu` give npusim's stand-in for the whole session (for test modules "
                         "that import torch_npu at their top)")
    parser.addini("npusim_torch_npu", type="bool", default=False,
                  help="as --npusim-torch-npu: npusim's torch_npu stand-in for the whole session")
    group.addoption("--npusim-npu-device", action="store_true", default=False,
                    help="the 'npu' device is the CPU in every stand-in the plugin installs (x.npu(), "
                         "device='npu', torch.npu.is_available() work unchanged)")
    parser.addini("npusim_npu_device", type="bool", default=False,
                  help="as --npusim-npu-device: the 'npu' device is the CPU")


def _npu_device(config, known_args=None) -> bool:
    """--npusim-npu-device or the ini setting (known_args: the early parse, before the options are final)."""
    option = known_args.npusim_npu_device if known_args is not None else config.getoption("npusim_npu_device")
    return bool(option or config.getini("npusim_npu_device"))


def _option_product(name):
    """--npusim-product's value, checked: an unknown name ends pytest with a usage error, not a traceback."""
    if name is not None:
        import npusim             # npusim alone does not import torch
        try:
            npusim.get_product(name)
        except ValueError as e:
            raise pytest.UsageError(f"--npusim-product: {e}") from None
    return name


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args):
    """The session-wide stand-in goes in before the first conftest.py or test module imports torch_npu."""
    product = _option_product(early_config.known_args_namespace.npusim_product)
    if not (early_config.known_args_namespace.npusim_torch_npu or early_config.getini("npusim_torch_npu")):
        return
    try:
        import importlib
        stand_in = importlib.import_module(_STAND_IN)
    except ImportError:           # no torch: modules importing torch_npu should pytest.importorskip("torch")
        return
    installed = stand_in.install(product, npu_device=_npu_device(early_config, early_config.known_args_namespace))
    installed.__enter__()
    early_config.add_cleanup(lambda: installed.__exit__(None, None, None))
    early_config.stash[_SESSION_STAND_IN] = stand_in


def pytest_collection_finish(session):
    """With the session-wide stand-in, say so when collection left another torch_npu in sys.modules: a conftest.py
    that stubs torch_npu on machines without an NPU (vllm-ascend's tests/ut/conftest.py does) silently undoes the
    option for every test module that imports torch_npu after it."""
    stand_in = session.config.stash.get(_SESSION_STAND_IN, None)
    found = sys.modules.get("torch_npu")
    if stand_in is not None and found is not stand_in:
        warnings.warn(pytest.PytestWarning(
            f"--npusim-torch-npu installed npusim's torch_npu stand-in, but after collection sys.modules['torch_npu'] "
            f"is {type(found).__module__}.{type(found).__name__} {str(found)[:80]!r}: a conftest.py or test module "
            f"replaced it (e.g. a stub for machines without an NPU), so the tests that import torch_npu got that, "
            f"not the stand-in; remove the stub, or keep it only where npusim is not installed"))


def pytest_configure(config):
    _option_product(config.getoption("npusim_product"))      # also when the plugin came in after the conftests
    config.addinivalue_line("markers", "npusim_product(name): the product npusim's torch_npu stand-in emulates "
                                       "for this test (installs the stand-in for it)")


def _marked_product(request):
    marker = request.node.get_closest_marker("npusim_product")
    if marker is None:
        return None
    if len(marker.args) != 1 or not isinstance(marker.args[0], str) or marker.kwargs:
        raise pytest.UsageError(f"npusim_product takes one product name, e.g. "
                                f"@pytest.mark.npusim_product('atlas-a2'); got {marker}")
    return marker.args[0]


@pytest.fixture
def npusim_torch_npu(request):
    """npusim.torch_npu installed as torch_npu for this test; the product comes from the npusim_product
    marker, else --npusim-product, else $NPUSIM_PRODUCT, else atlas-a2. Yields the stand-in module."""
    stand_in = pytest.importorskip(_STAND_IN, reason=_SKIP_REASON)
    product = _marked_product(request) or request.config.getoption("npusim_product")
    with stand_in.install(product, npu_device=_npu_device(request.config)) as module:
        yield module


@pytest.fixture(autouse=True)
def _npusim_product_marker(request):
    """A test marked npusim_product gets the stand-in with that product even without the fixture."""
    product = _marked_product(request)
    if product is None or "npusim_torch_npu" in request.fixturenames:
        yield
        return
    stand_in = pytest.importorskip(_STAND_IN, reason=_SKIP_REASON)
    with stand_in.install(product, npu_device=_npu_device(request.config)):
        yield
