"""
Session set-up shared by all tests.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest


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
