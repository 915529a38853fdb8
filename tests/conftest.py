"""
Session set-up shared by all tests.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

# Property-based tests run the same examples on every run (CI must not
# flake on a new random input); HYPOTHESIS_PROFILE=fuzz explores at random
# and at length, by hand.
settings.register_profile("ci", max_examples=300, derandomize=True, database=None, deadline=None)
settings.register_profile("fuzz", max_examples=20000, database=None, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session", autouse=True)
def scratchDirectory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """
    Run every test from a scratch directory: trial's C{mktemp} makes paths
    relative to the working directory, which must not be the checkout.
    """
    scratch = tmp_path_factory.mktemp("cwd")
    before = os.getcwd()
    os.chdir(scratch)
    yield scratch
    os.chdir(before)
