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
