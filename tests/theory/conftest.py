"""Shared setup for the theory tests: single-threaded BLAS / torch (the matrices are tiny)."""

import pytest

from src.theory import verify


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    verify._limit_threads()
