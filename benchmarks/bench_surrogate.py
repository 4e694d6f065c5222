"""Throughput of the shower surrogate: log-likelihood evaluations and sampled showers per second.

Measures, on the CPU and (when torch sees one) on the GPU:

* flow I, ``log_prob_layers`` (layer energies given E, what calibration evaluates), batch sizes 1 ... 10^5;
* flow II, ``log_prob(..., part="voxels")`` (voxels given layer energies and E; the call also runs flow I
  and the preprocessing, so it costs the same as ``part="full"``), batch sizes 1 ... 10^4 on the CPU
  (10^5 on a GPU);
* sampling: ``sample`` (whole showers) and ``sample_layers`` (flow I only).

Every point repeats the call until ``--min-seconds`` have passed (at least once) after one warm-up call and
reports evaluations per second. Timings do not depend on the weights, so without a trained model the
benchmark uses an untrained surrogate of the package's default architecture.

Run: ``python benchmarks/bench_surrogate.py [--model DIR] [--threads 1] [--out bench_surrogate.json]``
(a few minutes on a 2-core CPU); prints a table and writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from calinfer import datasets
from calinfer.errors import ModelError
from calinfer.io import atomic_output
from calinfer.surrogate import ShowerSurrogate, load_default, load_model

BATCHES = (1, 10, 100, 1_000, 10_000, 100_000)


def rate(call, n: int, min_seconds: float) -> tuple[float, int]:
    """Evaluations per second of ``call`` (which handles ``n`` items) and the number of timed repetitions."""
    call()  # warm-up: first-call allocations, lazy CUDA initialisation
    reps, start = 0, time.perf_counter()
    while True:
        call()
        reps += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return n * reps / elapsed, reps


def get_model(path: str | None) -> tuple[ShowerSurrogate, str]:
    if path:
        return load_model(path), path
    try:
        return load_default(), "pretrained default"
    except ModelError:
        ref = datasets.load("photons-val")[:5000]
        return ShowerSurrogate.create(ref.geometry, ref.voxels, ref.incident_energy), "untrained, default architecture"


def bench_device(model, showers, device: str, args) -> list[dict]:
    rows = []
    n_pool = len(showers)
    layers = showers.layer_energies().astype(np.float64)
    voxel_max = args.voxel_max_batch if device == "cpu" else max(args.voxel_max_batch, 100_000)
    for part in ("layers", "voxels"):
        for batch in BATCHES:
            if (part == "voxels" and batch > voxel_max) or batch > args.max_batch:
                continue
            idx = np.arange(batch) % n_pool
            energies = showers.incident_energy[idx]
            if part == "layers":
                x = layers[idx]

                def call(x=x, energies=energies):
                    return model.log_prob_layers(x, energies, device=device, dtype=args.dtype)
            else:
                sub = showers[idx]

                def call(sub=sub, energies=energies):
                    return model.log_prob(sub, energies, part="voxels", device=device, dtype=args.dtype)

            per_s, reps = rate(call, batch, args.min_seconds)
            rows.append(
                {"device": device, "what": f"log_prob {part}", "batch": batch, "per_second": per_s, "repetitions": reps}
            )
            print(f"{device:5s} {'log_prob ' + part:18s} batch {batch:7d}: {per_s:12.1f} /s  ({reps} reps)", flush=True)
    for what, n in (("sample_layers", min(args.sample_n * 10, args.max_batch)), ("sample", args.sample_n)):
        energies = showers.incident_energy[np.arange(n) % n_pool]
        fn = getattr(model, what)
        per_s, reps = rate(lambda fn=fn, energies=energies: fn(energies, seed=1, device=device), n, args.min_seconds)
        rows.append({"device": device, "what": what, "batch": n, "per_second": per_s, "repetitions": reps})
        print(f"{device:5s} {what:18s} batch {n:7d}: {per_s:12.1f} /s  ({reps} reps)", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    """Markdown table: one line per (device, quantity), one column per batch size."""
    batches = sorted({r["batch"] for r in rows if r["what"].startswith("log_prob")})
    head = "| device | quantity [1/s] | " + " | ".join(f"{b:g}" for b in batches) + " |"
    lines = [head, "|" + "---|" * (len(batches) + 2)]
    keys = dict.fromkeys((r["device"], r["what"]) for r in rows)
    for device, what in keys:
        sel = {r["batch"]: r["per_second"] for r in rows if (r["device"], r["what"]) == (device, what)}
        if what.startswith("log_prob"):
            cells = [f"{sel[b]:.3g}" if b in sel else "-" for b in batches]
        else:
            ((b, v),) = sel.items()
            what = f"{what} (batch {b})"
            cells = [f"{v:.3g}"] + [""] * (len(batches) - 1)
        lines.append(f"| {device} | {what} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="surrogate directory (default: the pretrained default)")
    parser.add_argument("--out", default="bench_surrogate.json", help="JSON file to write")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--devices", default=None, help="comma-separated torch devices (default: cpu[,cuda])")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--max-batch", type=int, default=100_000, help="largest batch of any measurement")
    parser.add_argument("--voxel-max-batch", type=int, default=10_000, help="largest flow II batch on the CPU")
    parser.add_argument("--sample-n", type=int, default=1_000, help="showers per sampling call")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="timed seconds per point (at least one call)")
    args = parser.parse_args()
    args.dtype = getattr(torch, args.dtype)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

    model, described = get_model(args.model)
    showers = datasets.load("photons-val")[:2000]
    print(
        f"model: {described}; geometry {model.geometry.id}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads; dtype {args.dtype}"
    )
    start = time.perf_counter()
    rows = []
    for device in devices:
        rows += bench_device(model, showers, device, args)
    print()
    print(table(rows))
    first = getattr(model, "members", [model])[0]  # an ensemble reports its first member's architecture
    info = {
        "model": described,
        "ensemble_members": len(getattr(model, "members", [model])),
        "flows": {"layers": first.layer_flow.config.to_dict(), "voxels": first.voxel_flow.config.to_dict()},
        "geometry": model.geometry.id,
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name(0) if "cuda" in devices else None,
        "dtype": str(args.dtype),
        "seconds": time.perf_counter() - start,
        "results": rows,
    }
    out = Path(args.out)
    with atomic_output(out) as tmp:
        tmp.write_text(json.dumps(info, indent=1))
    print(f"\nwrote {out} ({info['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
