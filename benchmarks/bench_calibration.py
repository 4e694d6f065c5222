"""Throughput and accuracy of the per-shower maximum-likelihood calibration against the straightforward approach.

End to end on the embedded fixed-energy test sets (photons-test-10 ... -90, written once to a ROOT file):
read, fit, intervals, write (``calinfer.cli.calibrate_cmd.calibrate_file``, what ``calinfer calibrate`` runs),
for the ``layers`` (default) and the ``full`` likelihood, with 1 and 2 worker threads. Reported as showers per
wall-clock second and per CPU second of this process (the CPU figure does not depend on what else runs on the
machine; the load average is printed alongside).

The straightforward approach is one Minuit per shower calling the surrogate at every evaluation
(``Calibrator.fit_direct``): MIGRAD from the logarithmic middle of the range (no truth), HESSE, MINOS, in the
surrogate's float32. It is timed on a subset of the same showers; its failures (MINOS misled by the ~1e-6
round-off noise of a float32 -ln L, a range edge) and the fits that stopped in a local minimum of the flow are
counted, and the largest relative differences of E_mle, E_lo and E_hi are taken on the rest. As an exact
reference, the same fit runs again in float64 with a tight tolerance, started at the fast fit's minimum (MIGRAD
then walks to the surrogate's own minimum): the agreement with it measures the error of the fast method.

Run: ``python benchmarks/bench_calibration.py [--model DIR] [--per-energy 1000] [--full-per-energy 20]
[--direct 90] [--direct-full 18] [--json out.json]`` (default model: ``calinfer.load_default()``).
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
from calinfer.surrogate import default_model_path, load_default, load_model

ENERGIES = (10, 20, 30, 40, 50, 60, 70, 80, 90)


def test_showers(per_energy: int) -> Showers:
    """The first ``per_energy`` showers of every embedded fixed-energy test set, in energy order."""
    return Showers.concatenate([datasets.load(f"photons-test-{e}")[:per_energy] for e in ENERGIES])


def spread_subset(n_total: int, n: int) -> np.ndarray:
    """``n`` indices spread evenly over ``n_total`` showers (all energies represented)."""
    return np.unique(np.linspace(0, n_total - 1, min(n, n_total)).round().astype(int))


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


def agreement(fast: CalibrationResult, other: CalibrationResult, mask: np.ndarray | None = None) -> dict:
    """Largest relative differences of E_mle, E_lo, E_hi on the showers both fits converged on (and ``mask``)."""
    both = (fast.status == int(Status.CONVERGED)) & (other.status == int(Status.CONVERGED))
    if mask is not None:
        both &= mask
    out: dict = {"compared": int(both.sum())}
    for name in ("e_mle", "e_lo", "e_hi"):
        a, b = getattr(fast, name)[both], getattr(other, name)[both]
        out[f"max_rel_diff_{name}"] = float(np.max(np.abs(a / b - 1))) if both.any() else None
    if both.any():
        rel = np.abs(fast.e_mle[both] / other.e_mle[both] - 1)
        out["showers_e_mle_diff_above_1e-3"] = int(np.sum(rel > 1e-3))
        # where E_mle differs, is it a different (near-degenerate) local minimum of a wiggly -ln L?
        out["max_nll_excess_where_e_mle_diff_above_1e-3"] = (
            float(np.max(fast.nll[both][rel > 1e-3] - other.nll[both][rel > 1e-3])) if np.any(rel > 1e-3) else None
        )
    return out


def straightforward(model, likelihood: str, showers: Showers, fast: CalibrationResult) -> dict:
    """Time the straightforward fit (float32, from mid-range) and compare; then a float64 reference fit."""
    plain = Calibrator(model, likelihood=likelihood)
    wall, cpu = time.perf_counter(), time.process_time()
    direct = plain.fit_direct(showers)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    # a converged straightforward fit with a clearly worse -ln L stopped in a local minimum of the flow
    stuck = direct.has(Status.CONVERGED) & (direct.nll > fast.nll + 0.05)
    exact = Calibrator(model, likelihood=likelihood, dtype=torch.float64)
    reference = exact.fit_direct(showers, start=fast.e_mle, tol=1e-4)
    return {
        "showers": len(showers),
        "wall_s": wall,
        "showers_per_s": len(showers) / wall,
        "showers_per_cpu_s": len(showers) / cpu,
        "failed": int(np.sum(~direct.has(Status.CONVERGED))),
        "stuck_in_local_minimum": int(stuck.sum()),
        "agreement_straightforward": agreement(fast, direct, ~stuck),
        "reference_float64_failed": int(np.sum(~reference.has(Status.CONVERGED))),
        "agreement_reference_float64": agreement(fast, reference),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="surrogate directory (default: the shipped model)")
    parser.add_argument("--per-energy", type=int, default=1000, help="showers per test energy (layers)")
    parser.add_argument("--full-per-energy", type=int, default=20, help="showers per test energy (full)")
    parser.add_argument("--direct", type=int, default=90, help="showers for the straightforward fit (layers)")
    parser.add_argument("--direct-full", type=int, default=18, help="showers for the straightforward fit (full)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker threads to time")
    parser.add_argument("--json", default=None, help="write the numbers to this JSON file")
    args = parser.parse_args()

    torch.set_num_threads(1)  # one intra-op thread per worker; parallelism comes from the workers
    model = load_model(args.model) if args.model else load_default()
    report: dict = {
        "model": str(Path(args.model).resolve()) if args.model else str(default_model_path()),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "load_average_before": os.getloadavg(),
        "torch": torch.__version__,
        "runs": [],
    }
    print(f"model {report['model']}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        for likelihood, per_energy, n_direct in (
            ("layers", args.per_energy, args.direct),
            ("full", args.full_per_energy, args.direct_full),
        ):
            showers = test_showers(per_energy)
            path = Path(tmp) / f"test-{likelihood}.root"
            write_showers(path, showers)
            fast = None
            for workers in args.workers:
                calibrator = Calibrator(model, likelihood=likelihood, workers=workers)
                run = end_to_end(path, Path(tmp) / f"out-{likelihood}-{workers}.root", calibrator)
                fast = run.pop("result")
                run.update(likelihood=likelihood, workers=workers, load_average=os.getloadavg()[0])
                report["runs"].append(run)
                print(
                    f"{likelihood:6s} fast, {workers} worker(s): {run['showers']:6d} showers in {run['wall_s']:7.2f} s "
                    f"= {run['showers_per_s']:7.0f} showers/s ({run['showers_per_cpu_s']:6.0f} per CPU-s), "
                    f"converged {100 * run['converged']:.1f}%, load {run['load_average']:.1f}"
                )
            subset = spread_subset(len(showers), n_direct)
            ref = straightforward(model, likelihood, showers[subset], fast[subset])
            best = max(r["showers_per_s"] for r in report["runs"] if r["likelihood"] == likelihood)
            best_cpu = max(r["showers_per_cpu_s"] for r in report["runs"] if r["likelihood"] == likelihood)
            ref.update(
                likelihood=likelihood,
                speedup_wall=best / ref["showers_per_s"],
                speedup_cpu=best_cpu / ref["showers_per_cpu_s"],
            )
            report[f"straightforward_{likelihood}"] = ref
            print(
                f"{likelihood:6s} straightforward: {ref['showers']} showers, {ref['showers_per_s']:.2f} showers/s "
                f"({ref['showers_per_cpu_s']:.2f} per CPU-s); speed-up x{ref['speedup_wall']:.0f} wall, "
                f"x{ref['speedup_cpu']:.0f} CPU; failed {ref['failed']}, stuck in a local minimum "
                f"{ref['stuck_in_local_minimum']}"
            )
            for label in ("agreement_straightforward", "agreement_reference_float64"):
                a = ref[label]
                diffs = ", ".join(
                    f"{k[len('max_rel_diff_') :]} {a[k]:.1e}" if a[k] is not None else f"{k} n/a"
                    for k in a
                    if k.startswith("max_rel_diff")
                )
                print(f"    vs {label[len('agreement_') :]}: {a['compared']} showers compared, max |rel. diff| {diffs}")
                if a.get("showers_e_mle_diff_above_1e-3"):
                    print(
                        f"      E_mle differs by more than 1e-3 on {a['showers_e_mle_diff_above_1e-3']} showers; there "
                        f"-ln L(fast) - -ln L(other) <= {a['max_nll_excess_where_e_mle_diff_above_1e-3']:.4f}"
                    )
    report["load_average_after"] = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
