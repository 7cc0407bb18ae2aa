"""Hypothesis profiles for the property tests (tests/test_robustness*.py).

'ci' (default): few examples, derandomized, so CI is fast and reproducible.
'thorough': select with NPUSIM_HYPOTHESIS=thorough for the large local run
(NPUSIM_HYPOTHESIS_EXAMPLES overrides its example count).
"""
import os

try:
    from hypothesis import HealthCheck, settings
except ImportError:          # hypothesis is in the [test] extra; other tests run without it
    settings = None

if settings is not None:
    _SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
    settings.register_profile("ci", max_examples=50, deadline=None, derandomize=True, database=None,
                              suppress_health_check=_SLOW_OK, print_blob=True)
    settings.register_profile("thorough", max_examples=int(os.environ.get("NPUSIM_HYPOTHESIS_EXAMPLES", "1000")),
                              deadline=None, suppress_health_check=_SLOW_OK, print_blob=True)
    settings.load_profile(os.environ.get("NPUSIM_HYPOTHESIS", "ci"))
