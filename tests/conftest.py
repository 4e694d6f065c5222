"""Test-wide settings: a non-interactive plotting backend and deterministic, single-threaded torch."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_configure(config) -> None:
    try:
        import torch
    except ImportError:  # torch is a hard dependency; the import error surfaces in the tests that need it
        return
    torch.set_num_threads(int(os.environ.get("CALINFER_TEST_THREADS", "2")))


@pytest.fixture
def small_calogan_surrogate():
    """Factory: an untrained two-block CaloGAN surrogate fitted on ``showers`` whose flow-II weights are perturbed by
    ``voxel_noise`` (a smooth, non-trivial voxel density, seeded)."""

    def make(showers, voxel_context: str, voxel_noise: float):
        import torch

        from calinfer.surrogate import ShowerSurrogate

        model = ShowerSurrogate.create("calogan", showers.voxels, showers.incident_energy, voxel_context=voxel_context,
                                       layer_flow={"n_blocks": 2, "hidden": 16},
                                       voxel_flow={"n_blocks": 2, "hidden": 16})
        with torch.no_grad():
            gen = torch.Generator().manual_seed(0)
            for p in model.voxel_flow.parameters():
                p.add_(voxel_noise * torch.randn(p.shape, generator=gen))
        return model

    return make
