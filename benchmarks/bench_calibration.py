"""Throughput and accuracy of the per-shower maximum-likelihood calibration: layer likelihood, fast full likelihood and
the dense full-likelihood reference side by side, with their agreement and a global-minimum check.

* **layers** and **full (fast)**: end to end on the embedded fixed-energy test sets (photons-test-10 ... -90, written
  once to a ROOT file): read, fit, intervals, write (``calinfer.cli.calibrate_cmd.calibrate_file``, what
  ``calinfer calibrate`` runs), with 1 and 2 worker threads; showers per wall-clock second and per CPU second of
  this process (the CPU figure does not depend on what else runs on the machine; the load average is printed).
  The fast full likelihood is ``Calibrator(likelihood="full")``: exact flow-I term plus the flow-II term
  interpolated from a few exact evaluations per shower, every result checked against the full likelihood itself.
* **full (dense reference)**: ``Calibrator(likelihood="full", full_method="dense", dtype=torch.float64)``, the full
  likelihood evaluated in float64 at every scan, refinement and polish point, on a subset of the same showers.
  Agreement: the fraction of showers whose E_mle, E_lo and E_hi agree within 1e-3 relative *and* whose status
  words are equal (the issue's target: >= 99%), and the same per quantity.
* **global-minimum check** (layer likelihood, cheap enough to scan densely): ``--dense-check`` freshly simulated
  photons (10-90 GeV, seed ``--seed``) against a dense float64 scan of -ln L (4000 points in ln E, refined locally):
  showers whose found minimum is more than 0.05 above the dense one ("missed") and flagged CONVERGED (target 0), and
  CONVERGED edges whose Delta(-ln L), evaluated in float64, is off 0.5 by more than the calibrator's edge tolerance.

Run: ``python benchmarks/bench_calibration.py [--model DIR] [--per-energy 1000] [--full-per-energy 60]
[--dense-per-energy 4] [--dense-check 1000] [--device cpu|cuda] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from calinfer import Showers, datasets
from calinfer.calibration import CalibrationResult, Calibrator, Status
from calinfer.cli.calibrate_cmd import calibrate_file
from calinfer.io import write_showers
from calinfer.simulation import simulate_showers
from calinfer.surrogate import default_model_path, load_default, load_model

ENERGIES = (10, 20, 30, 40, 50, 60, 70, 80, 90)


def test_showers(per_energy: int) -> Showers:
    """The first ``per_energy`` showers of every embedded fixed-energy test set, in energy order."""
    return Showers.concatenate([datasets.load(f"photons-test-{e}")[:per_energy] for e in ENERGIES])


def end_to_end(path: Path, out: Path, calibrator: Calibrator) -> dict:
    wall, cpu = time.perf_counter(), time.process_time()
    result = calibrate_file(path, out, calibrator)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    n = len(result)
    return {
        "showers": n,
        "wall_s": wall,
        "cpu_s": cpu,
        "showers_per_s": n / wall,
        "showers_per_cpu_s": n / cpu,
        "converged": float(np.mean(result.has(Status.CONVERGED))),
        "result": result,
    }


def agreement(fast: CalibrationResult, reference: CalibrationResult, rtol: float = 1e-3) -> dict:
    """Fractions of showers whose E_mle, E_lo, E_hi agree within ``rtol`` relative, whose status words are equal,
    and both; the largest relative differences among the showers whose status words agree."""
    same_status = fast.status == reference.status
    out: dict = {"showers": len(fast), "status_equal": float(np.mean(same_status))}
    close = same_status.copy()
    for name in ("e_mle", "e_lo", "e_hi"):
        rel = np.abs(getattr(fast, name) / getattr(reference, name) - 1)
        out[f"{name}_within_rtol"] = float(np.mean(rel <= rtol))
        out[f"max_rel_diff_{name}"] = float(rel[same_status].max()) if same_status.any() else None
        close &= rel <= rtol
    out["all_agree"] = float(np.mean(close))
    out["disagreeing"] = [
        {"index": int(i), "fast": [float(fast.e_mle[i]), int(fast.status[i])],
         "reference": [float(reference.e_mle[i]), int(reference.status[i])],
         "nll_fast_minus_reference": float(fast.nll[i] - reference.nll[i])}
        for i in np.flatnonzero(~close)[:20]
    ]
    return out


def dense_check(model, calibrator: Calibrator, showers: Showers, n_grid: int = 4000) -> dict:
    """The layer-likelihood fit against a dense float64 scan of flow I (see module docstring)."""
    from scipy.optimize import minimize_scalar

    result = calibrator.fit(showers)
    x = showers.layer_energies()
    lo, hi = np.log(calibrator.energy_range[0]), np.log(calibrator.energy_range[1])
    grid = np.linspace(lo, hi, n_grid)
    step = grid[1] - grid[0]
    exact = lambda rows, u: -model.log_prob_layers(x[rows], np.exp(u), dtype=torch.float64)  # noqa: E731
    missed = converged_missed = edges_off = 0
    worst_edge = 0.0
    for start in range(0, len(x), 256):
        rows = np.arange(start, min(start + 256, len(x)))
        y = exact(rows, grid[None, :])
        for k, i in enumerate(rows):
            j = int(np.argmin(y[k]))
            f = lambda u, i=i: float(exact(np.array([i]), np.array([[u]]))[0, 0])  # noqa: E731
            u_ref = minimize_scalar(f, bounds=(grid[max(j - 1, 0)], grid[min(j + 1, n_grid - 1)]), method="bounded",
                                    options={"xatol": 1e-3 * step}).x
            f_ref = min(f(u_ref), y[k, j])
            f_hat = f(np.log(result.e_mle[i]))
            if f_hat - f_ref > 0.05:
                missed += 1
                converged_missed += int(result.has(Status.CONVERGED)[i])
            if result.has(Status.CONVERGED)[i]:
                for edge, flag in ((result.e_lo[i], Status.OPEN_LOW), (result.e_hi[i], Status.OPEN_HIGH)):
                    delta = f(np.log(edge)) - f_hat
                    # an open side ends at the range edge, where -ln L must stay below 0.5 (+ tolerance)
                    off = max(delta - 0.5, 0.0) if result.has(flag)[i] else abs(delta - 0.5)
                    worst_edge = max(worst_edge, off)
                    edges_off += int(off > calibrator.edge_tolerance)
    return {
        "showers": len(x),
        "converged": int(result.has(Status.CONVERGED).sum()),
        "multimodal": int(result.has(Status.MULTIMODAL).sum()),
        "missed_minimum": missed,
        "missed_minimum_flagged_converged": converged_missed,
        "converged_edges_off_tolerance": edges_off,
        "worst_converged_edge_abs_delta_minus_half": worst_edge,
        "edge_tolerance": calibrator.edge_tolerance,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="surrogate directory (default: the shipped model)")
    parser.add_argument("--per-energy", type=int, default=1000, help="showers per test energy (layers)")
    parser.add_argument("--full-per-energy", type=int, default=60, help="showers per test energy (full, fast)")
    parser.add_argument("--dense-per-energy", type=int, default=4, help="showers per test energy (dense reference)")
    parser.add_argument("--dense-check", type=int, default=1000, help="simulated photons for the global-minimum check")
    parser.add_argument("--seed", type=int, default=20261201, help="seed of the simulated photons")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker threads to time")
    parser.add_argument("--device", default=None, help="torch device (default: the surrogate's choice, GPU if any)")
    parser.add_argument("--json", default=None, help="write the numbers to this JSON file")
    args = parser.parse_args()

    torch.set_num_threads(1)  # one intra-op thread per worker; parallelism comes from the workers
    model = load_model(args.model) if args.model else load_default()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    report: dict = {
        "model": str(Path(args.model).resolve()) if args.model else str(default_model_path()),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(), "device": device},
        "load_average_before": os.getloadavg(),
        "torch": torch.__version__,
        "runs": [],
    }
    print(f"model {report['model']}; {os.cpu_count()} CPUs; device {device}; load average {os.getloadavg()[0]:.2f}")
    options = {"device": args.device} if args.device else {}
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for likelihood, per_energy in (("layers", args.per_energy), ("full", args.full_per_energy)):
            showers = test_showers(per_energy)
            path = Path(tmp) / f"test-{likelihood}.root"
            write_showers(path, showers)
            for workers in args.workers:
                calibrator = Calibrator(model, likelihood=likelihood, workers=workers, **options)
                run = end_to_end(path, Path(tmp) / f"out-{likelihood}-{workers}.root", calibrator)
                results[likelihood] = run.pop("result")
                run.update(likelihood=likelihood, method="fast", workers=workers, load_average=os.getloadavg()[0])
                report["runs"].append(run)
                print(
                    f"{likelihood:6s} fast, {workers} worker(s): {run['showers']:6d} showers in {run['wall_s']:7.2f} s "
                    f"= {run['showers_per_s']:7.0f} showers/s ({run['showers_per_cpu_s']:6.0f} per CPU-s), "
                    f"converged {100 * run['converged']:.1f}%, load {run['load_average']:.1f}"
                )
        # the dense float64 reference of the full likelihood on a subset of the fast-full showers
        n_full = args.full_per_energy
        subset = np.concatenate([np.arange(k * n_full, k * n_full + min(args.dense_per_energy, n_full))
                                 for k in range(len(ENERGIES))])
        showers = test_showers(n_full)[subset]
        dense = Calibrator(model, likelihood="full", full_method="dense", dtype=torch.float64, **options)
        wall, cpu = time.perf_counter(), time.process_time()
        reference = dense.fit(showers)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        run = {"likelihood": "full", "method": "dense float64 reference", "workers": 1, "showers": len(showers),
               "wall_s": wall, "cpu_s": cpu, "showers_per_s": len(showers) / wall,
               "showers_per_cpu_s": len(showers) / cpu,
               "converged": float(np.mean(reference.has(Status.CONVERGED))), "load_average": os.getloadavg()[0]}
        report["runs"].append(run)
        print(f"full   dense float64 reference: {len(showers):6d} showers in {wall:7.2f} s = "
              f"{run['showers_per_s']:7.2f} showers/s ({run['showers_per_cpu_s']:6.2f} per CPU-s), "
              f"converged {100 * run['converged']:.1f}%")
        agree = agreement(results["full"][subset], reference)
        report["agreement_full_fast_vs_dense"] = agree
        print(f"    fast vs dense on {agree['showers']} showers: E_mle, E_lo, E_hi within 1e-3 and the same status: "
              f"{100 * agree['all_agree']:.1f}% (E_mle {100 * agree['e_mle_within_rtol']:.1f}%, E_lo "
              f"{100 * agree['e_lo_within_rtol']:.1f}%, E_hi {100 * agree['e_hi_within_rtol']:.1f}%, status "
              f"{100 * agree['status_equal']:.1f}%)")
        for d in agree["disagreeing"]:
            print(f"      shower {d['index']}: fast E_mle {d['fast'][0]:.3f} status {d['fast'][1]}, reference "
                  f"{d['reference'][0]:.3f} status {d['reference'][1]}, nll fast - reference "
                  f"{d['nll_fast_minus_reference']:+.3f}")
        best = {m: max(r["showers_per_s"] for r in report["runs"] if r["likelihood"] == "full" and r["method"] == m)
                for m in ("fast", "dense float64 reference")}
        report["speedup_full_fast_over_dense"] = best["fast"] / best["dense float64 reference"]
        print(f"    fast / dense speed: x{report['speedup_full_fast_over_dense']:.0f}")
    if args.dense_check:
        photons = simulate_showers(args.dense_check, energy_range=(10.0, 90.0), seed=args.seed)
        check = dense_check(model, Calibrator(model, **options), photons)
        report["global_minimum_check_layers"] = check
        print(f"layers global-minimum check on {check['showers']} simulated photons (seed {args.seed}): missed minimum "
              f"{check['missed_minimum']} (flagged CONVERGED: {check['missed_minimum_flagged_converged']}), CONVERGED "
              f"edges off Delta = 0.5 by more than {check['edge_tolerance']}: {check['converged_edges_off_tolerance']} "
              f"(worst {check['worst_converged_edge_abs_delta_minus_half']:.4f}), multimodal {check['multimodal']}")
    report["load_average_after"] = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
