"""Hypothesis profiles of the fuzzing tests: "fuzz-ci", small enough for every CI run, and "fuzz", a long
hunt (``HYPOTHESIS_PROFILE=fuzz pytest tests/fuzz/test_properties.py``). Registered here and applied by
test_properties.py to its own tests only, so the profile of the rest of the suite is left as it is."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# files written per example (path lists, manifests) and Pillow encodes make examples slow-ish: no deadline
settings.register_profile("fuzz-ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=5000, deadline=None, suppress_health_check=list(HealthCheck))
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "fuzz-ci")
