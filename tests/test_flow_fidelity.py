"""The classifier test of ``analyses/flow_fidelity.py`` against toys with a known density ratio."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "analyses"))
flow_fidelity = pytest.importorskip("flow_fidelity")


def test_weighted_generated_events_with_the_true_density_ratio_close():
    """Generated N(0.15, 1) against data N(0, 1): unweighted the data pass the tail cuts too often; weighted by
    the exact ratio N(0, 1) / N(0.15, 1) = exp(-0.15 x + 0.15^2 / 2) they pass at eps within 3 binomial errors."""
    rng = np.random.default_rng(4)
    shift = 0.15
    data = rng.normal(0.0, 1.0, size=(20_000, 1))
    gen = rng.normal(shift, 1.0, size=(80_000, 1))
    plain = flow_fidelity.compare(data, gen, seed=0)
    ratio = np.exp(-shift * gen[:, 0] + shift**2 / 2)
    weighted = flow_fidelity.compare(data, gen, seed=0, weights=ratio)
    excess = [(r["data_pass"] - r["eps"]) / r["error"] for r in plain["pass_fractions"]]
    closed = [(r["data_pass"] - r["eps"]) / r["error"] for r in weighted["pass_fractions"]]
    assert max(excess) > 4, excess  # the shift is found: data pass more than eps
    assert all(abs(z) < 3 for z in closed), closed
    assert plain["auc"] > 0.52 and abs(weighted["auc"] - 0.5) < 0.01
