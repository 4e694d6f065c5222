"""``calinfer cathode`` end to end on small synthetic LHCO-layout files."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from calinfer.cli import main
from calinfer.io.lhco import load_dijets


def lhco_frame(
    mjj: np.ndarray, m_light: np.ndarray, m_heavy: np.ndarray, tau21: np.ndarray, label: int
) -> pd.DataFrame:
    """Back-to-back jets at rapidity 0 (GeV) with the given dijet mass, jet masses and tau21 of both jets."""
    M, m1, m2 = 1000 * mjj, 1000 * m_light, 1000 * m_heavy
    p = np.sqrt(((M**2 - m1**2 - m2**2) ** 2 - 4 * m1**2 * m2**2) / (4 * M**2))
    n = len(M)
    zero, tau1 = np.zeros(n), np.full(n, 0.5)
    return pd.DataFrame({
        "pxj1": p, "pyj1": zero, "pzj1": zero, "mj1": m1, "tau1j1": tau1, "tau2j1": 0.5 * tau21, "tau3j1": 0.2 * tau1,
        "pxj2": -p, "pyj2": zero, "pzj2": zero, "mj2": m2, "tau1j2": tau1, "tau2j2": 0.5 * tau21, "tau3j2": 0.2 * tau1,
        "label": np.full(n, float(label)),
    })  # fmt: skip


@pytest.mark.parametrize(("classifier", "latent"), [("mlp", False), ("hgb", False), ("hgb", True)])
def test_cathode_command_writes_summary_and_plots(tmp_path, classifier, latent):
    rng = np.random.default_rng(0)
    n = 6000
    mjj = 2.8 + rng.exponential(0.45, n)
    bkg = lhco_frame(
        mjj, rng.uniform(0.05, 0.15, n), rng.uniform(0.2, 0.4, n) + 0.05 * (mjj - 3), rng.uniform(0.3, 0.9, n), 0
    )
    k = 1500
    sig = lhco_frame(
        rng.normal(3.5, 0.05, k), rng.normal(0.1, 0.005, k), rng.normal(0.5, 0.01, k), rng.uniform(0.1, 0.2, k), 1
    )
    bkg.to_hdf(tmp_path / "bkg.h5", key="df", mode="w")
    sig.to_hdf(tmp_path / "sig.h5", key="df", mode="w")
    feats = load_dijets(tmp_path / "bkg.h5")
    np.testing.assert_allclose(feats["mjj"], mjj, rtol=1e-9)
    out = tmp_path / "out"
    args = [
        "cathode", str(tmp_path / "bkg.h5"), "--inject", str(tmp_path / "sig.h5"), "--s-over-b", "0.1",
        "--sidebands", "2.8", "4.6", "--n-flows", "4", "--flow-epochs", "4", "--classifier-epochs", "4",
        "--folds", "2", "--oversample", "2", "--efficiency", "0.2", "--efficiency", "0.05", "--baselines", "cwola",
        "--classifier", classifier, "--out", str(out), *(["--latent", "--calibration", "pooled"] if latent else []),
        *(["--flow-kind", "coupling"] if classifier == "hgb" and not latent else []),
    ]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["s_over_b_sr"] == pytest_approx(0.1)
    assert summary["config"]["classifier_kind"] == classifier
    assert summary["config"]["latent"] is latent
    kind = "coupling" if classifier == "hgb" and not latent else "autoregressive"
    assert summary["config"]["flow"]["kind"] == kind
    assert [c["background_efficiency"] for c in summary["cuts"]] == [0.2, 0.05]
    cut = summary["cuts"][0]
    # the quoted Z is Cowan's closed form for n observed over b +- sigma_b, direct and calibrated estimate alike
    n = cut["n_observed"]
    assert cut["significance"] == pytest_exact(cowan_z(n, cut["background_b"], cut["background_sigma"]))
    calibrated = cut["calibrated"]
    assert calibrated["significance"] == pytest_exact(cowan_z(n, calibrated["b"], calibrated["sigma"]))
    assert cut["n_signal_passing"] > 0.2 * summary["n_signal_in_sr"]  # better than random
    assert set(summary["max_sic"]) == {"CATHODE", "CWoLa"}
    for name in ("mjj_fit.png", "sidebands.png", "sic.png"):
        assert (out / name).stat().st_size > 1000
    assert "Z =" in result.output
    bands = cut["sideband_pass_fractions"]
    assert bands["low"]["n"] + bands["high"]["n"] == summary["n_sidebands"]
    assert 0 <= cut["bump_hunt"]["sideband_p"] <= 1 and "bump hunt after the cut" in result.output
    assert summary["config"]["cross_fit"] and cut["background_sigma_ensemble"] > 0  # two replicas by default
    cal = cut["calibrated"]  # the estimate calibrated on held-out (out-of-bootstrap) sideband events
    assert cal["sigma"] >= cal["sigma_calibration"] > 0 and "calibrated on held-out sideband events" in result.output
    method = "pooled" if latent else "interpolated"  # the latent case also asks for the pooled calibration
    assert summary["config"]["calibration"] == cal["method"] == method and f"({method})" in result.output
    assert cut["headline"]["estimate"] == "calibrated" and cut["headline"]["b"] == pytest_exact(cal["b"])


def pytest_approx(value: float):
    import pytest

    return pytest.approx(value, rel=0.25)


def pytest_exact(value: float):
    import pytest

    return pytest.approx(value, rel=1e-9, abs=1e-9)


def cowan_z(n: float, b: float, s: float) -> float:
    """Cowan's discovery significance (Asimov, background uncertainty s), written out independently of calinfer."""
    first = n * math.log(n * (b + s**2) / (b**2 + n * s**2))
    second = b**2 / s**2 * math.log(1 + s**2 * (n - b) / (b * (b + s**2)))
    return math.copysign(math.sqrt(max(2 * (first - second), 0.0)), n - b)


def test_cowan_z_reference_limits():
    """The test's own formula against limits known independently of it."""
    import pytest

    n, b = 130.0, 100.0
    poisson = math.sqrt(2 * (n * math.log(n / b) - n + b))  # sigma_b -> 0: the Poisson likelihood ratio
    assert cowan_z(n, b, 1e-4) == pytest.approx(poisson, rel=1e-6)
    # large counts: (n - b) / sqrt(b + sigma_b^2) to O(1/sqrt(b))
    assert cowan_z(1.0e6 + 3000, 1.0e6, 1000.0) == pytest.approx(3000 / math.sqrt(1.0e6 + 1000.0**2), rel=2e-3)
    assert cowan_z(80.0, 100.0, 5.0) < 0 < cowan_z(120.0, 100.0, 5.0)


def test_cathode_command_takes_embedded_set_names(tmp_path):
    from calinfer import datasets
    from calinfer.cli.cathode_cmd import _resolve

    assert _resolve("dijets-signal") == str(datasets.dijet_path("dijets-signal"))
    assert _resolve(str(tmp_path)) == str(tmp_path)  # an existing path wins
    result = CliRunner().invoke(main, ["cathode", "dijets-nonexistent", "--out", str(tmp_path / "o")])
    assert result.exit_code != 0
    assert "dijets-qcd-reference" in result.output + str(result.exception)
