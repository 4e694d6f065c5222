"""Test-wide settings: a non-interactive plotting backend and deterministic, single-threaded torch."""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_configure(config) -> None:
    try:
        import torch
    except ImportError:  # torch is a hard dependency; the import error surfaces in the tests that need it
        return
    torch.set_num_threads(int(os.environ.get("CALINFER_TEST_THREADS", "2")))
