"""npusim's pytest plugin (entry point pytest11): the npusim_torch_npu fixture, the npusim_product marker,
--npusim-product, and --npusim-torch-npu for test modules and conftest.py files that import torch_npu
at their top (collection imports them before any fixture could run)."""
import textwrap

import pytest

pytest.importorskip("torch")
pytest_plugins = ["pytester"]


def test_fixture_marker_and_product_option(pytester):
    pytester.makepyfile(test_inner=textwrap.dedent("""
        import sys
        import pytest

        def test_fixture_installs_with_the_option_product(npusim_torch_npu):
            import torch_npu
            assert torch_npu is npusim_torch_npu
            assert npusim_torch_npu.current_product() == "ascend-950pr"

        @pytest.mark.npusim_product("atlas-a3")
        def test_marker_wins(npusim_torch_npu):
            assert npusim_torch_npu.current_product() == "atlas-a3"

        @pytest.mark.npusim_product("atlas-inference")
        def test_marker_alone_installs():
            import npusim.torch_npu as stand_in
            assert sys.modules["torch_npu"] is stand_in
            assert stand_in.current_product() == "atlas-inference"
    """))
    result = pytester.runpytest_inprocess("--npusim-product", "ascend-950pr", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_session_option_serves_modules_importing_torch_npu_at_their_top(pytester):
    """A fresh process: the entry point registers the plugin, --npusim-torch-npu installs the stand-in before
    the conftest.py and the test module are imported, and the fixture still picks the product per test."""
    pytester.makeconftest("import torch_npu\nSEEN_AT_CONFTEST = torch_npu.__name__\n")
    pytester.makepyfile(test_top_import=textwrap.dedent("""
        import pytest
        import torch
        import torch_npu

        from conftest import SEEN_AT_CONFTEST

        @pytest.mark.npusim_product("atlas-a3")
        def test_top_level_import(npusim_torch_npu):
            assert SEEN_AT_CONFTEST == "npusim.torch_npu" and torch_npu is npusim_torch_npu
            assert torch_npu.current_product() == "atlas-a3"
            y, scale = torch_npu.npu_dynamic_quant(torch.ones(2, 64, dtype=torch.bfloat16))
            assert y.dtype == torch.int8 and int(y[0, 0]) == 127
    """))
    result = pytester.runpytest_subprocess("--npusim-torch-npu", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize("session_flag", [[], ["--npusim-torch-npu"]])
def test_bad_product_option_is_a_usage_error(pytester, session_flag):
    """An unknown --npusim-product ends pytest at startup with a usage error naming the option, the value and
    the valid names, with or without the session-wide stand-in (a fresh process, as on the command line)."""
    pytester.makepyfile(test_never_runs="def test_never_runs():\n    raise AssertionError('collected')\n")
    result = pytester.runpytest_subprocess(*session_flag, "--npusim-product", "A2", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "ERROR: --npusim-product: unknown product 'A2'; valid names: " in err
    assert "atlas-a2" in err and "ascend-950pr" in err
    assert "Traceback" not in err + result.stdout.str()


def test_npu_device_option_runs_npu_code_unchanged(pytester):
    """--npusim-npu-device: the stand-ins the plugin installs (session-wide here, then the fixture's) map the 'npu'
    device to the CPU, so a module written for the NPU (.npu() at its top, torch.npu calls) runs as it is."""
    pytester.makepyfile(test_npu_code=textwrap.dedent("""
        import torch
        import torch_npu

        X = torch.ones(2, 64, dtype=torch.bfloat16).npu()           # at import, under the session-wide stand-in

        def test_as_written_for_the_npu(npusim_torch_npu):
            assert torch.npu.is_available() and X.device.type == "cpu"
            y, scale = torch_npu.npu_dynamic_quant(X.to("npu"))
            torch.npu.synchronize()
            assert y.dtype == torch.int8 and int(y[0, 0]) == 127 and y.device == torch.device("npu")
    """))
    result = pytester.runpytest_subprocess("--npusim-torch-npu", "--npusim-npu-device", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    # without the option the same module fails at its first .npu(), with the stand-in's message
    result = pytester.runpytest_subprocess("--npusim-torch-npu", "-p", "no:cacheprovider")
    assert result.ret != 0 and "install(npu_device=True)" in result.stdout.str()
    # the ini setting does what the option does
    pytester.makeini("[pytest]\nnpusim_npu_device = true\n")
    pytester.runpytest_subprocess("--npusim-torch-npu", "-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_session_option_says_when_a_conftest_replaced_torch_npu(pytester):
    """vllm-ascend's tests/ut/conftest.py puts a stub into sys.modules['torch_npu'] on machines without an NPU,
    which silently undoes --npusim-torch-npu: the plugin warns after collection, naming what is there."""
    pytester.makeconftest("import sys\nfrom unittest import mock\nsys.modules['torch_npu'] = mock.MagicMock()\n")
    pytester.makepyfile(test_stubbed="import torch_npu\n\ndef test_stub():\n    assert torch_npu\n")
    result = pytester.runpytest_subprocess("--npusim-torch-npu", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*sys.modules?'torch_npu'? is unittest.mock.MagicMock*replaced it*"])
    # without the stub: no warning
    pytester.makeconftest("")
    result = pytester.runpytest_subprocess("--npusim-torch-npu", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
